//! Known sign-ins: which sign-in devices and places an account's owner has approved from, and what a new
//! sign-in looks like against them. Pure: the stores keep the remembered set (`Remembered`) and apply
//! [`remember`]'s caps; this module decides what a key is, what "same place" means, and what the relay
//! recommends.
//!
//! A sign-in device is the backend's own stable id for it (`LoginContext.sign_in_device_key`: a cookie or
//! device-bound id; never the address). A place is two independent signals: the network (the IPv4 /24 or
//! IPv6 /48 around `LoginContext.ip`) and the location text (trimmed, lower-cased, inner whitespace
//! collapsed). The place is KNOWN only when every signal the backend gave is known: a known city on a new
//! network, or a known network with a new city, is a NEW place.

use crate::challenge::LoginContext;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Sign-in devices an account remembers; the least recently seen is forgotten first.
pub const MAX_DEVICES: usize = 32;
/// Places (networks and locations together) an account remembers.
pub const MAX_PLACES: usize = 64;
/// Longest `LoginContext.sign_in_device_key`, bytes.
pub const DEVICE_KEY_MAX: usize = 128;

/// Whether a sign-in's device or place has been seen in an approved sign-in within the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Familiarity {
    /// The backend gave nothing to judge by.
    #[default]
    Unspecified,
    /// Seen in an approved sign-in within the window.
    Known,
    /// Never seen, or not within the window.
    New,
}

impl Familiarity {
    /// Lower-case name for the store and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Known => "known",
            Self::New => "new",
        }
    }

    /// The inverse of [`Familiarity::name`]; anything else is unspecified.
    pub fn parse(s: &str) -> Self {
        match s {
            "known" => Self::Known,
            "new" => Self::New,
            _ => Self::Unspecified,
        }
    }
}

/// What kind of thing a remembered key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// A sign-in device (the backend's id).
    Device,
    /// A network: `203.0.113.0/24`, `2001:db8:1::/48`.
    Network,
    /// A normalised location text.
    Location,
}

impl KeyKind {
    /// The field prefix in the stored set.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Device => "d:",
            Self::Network => "n:",
            Self::Location => "l:",
        }
    }

    /// The kind a stored field belongs to.
    pub fn of_field(field: &str) -> Option<Self> {
        [Self::Device, Self::Network, Self::Location]
            .into_iter()
            .find(|k| field.starts_with(k.prefix()))
    }

    /// How many keys of this kind an account keeps (networks and locations share the places' cap).
    pub fn cap(self) -> usize {
        match self {
            Self::Device => MAX_DEVICES,
            Self::Network | Self::Location => MAX_PLACES,
        }
    }
}

/// One remembered thing: its kind and value, stored as the field `prefix + value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KnownKey {
    /// What it is.
    pub kind: KeyKind,
    /// The device id, network or normalised location.
    pub value: String,
}

impl KnownKey {
    /// The stored field name.
    pub fn field(&self) -> String {
        format!("{}{}", self.kind.prefix(), self.value)
    }

    /// The key a stored field names.
    pub fn from_field(field: &str) -> Option<Self> {
        let kind = KeyKind::of_field(field)?;
        Some(Self {
            kind,
            value: field[kind.prefix().len()..].to_owned(),
        })
    }
}

/// When a key was first and last part of an approved sign-in, store clock, Unix ms. Stored as
/// `"<first>:<last>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// First approval.
    pub first_ms: i64,
    /// Latest approval.
    pub last_ms: i64,
}

impl Seen {
    /// The stored form.
    pub fn encode(self) -> String {
        format!("{}:{}", self.first_ms, self.last_ms)
    }

    /// Reads the stored form; `None` for anything else (treated as never seen).
    pub fn decode(s: &str) -> Option<Self> {
        let (a, b) = s.split_once(':')?;
        Some(Self {
            first_ms: a.parse().ok()?,
            last_ms: b.parse().ok()?,
        })
    }
}

/// An account's remembered keys (field → when seen), as a store holds them.
pub type Remembered = BTreeMap<String, Seen>;

/// The network a sign-in address belongs to for familiarity: its /24 (IPv4) or /48 (IPv6). An
/// IPv4-mapped IPv6 address counts as the IPv4 address.
pub fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    }
}

/// A location text as compared: trimmed, lower-cased, runs of whitespace as one space.
pub fn normalise_location(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The keys a sign-in would make known: its device, network and location, each when given.
pub fn keys_of(ctx: &LoginContext) -> Vec<KnownKey> {
    let mut keys = Vec::with_capacity(3);
    if !ctx.sign_in_device_key.is_empty() {
        keys.push(KnownKey {
            kind: KeyKind::Device,
            value: ctx.sign_in_device_key.clone(),
        });
    }
    if let Some(ip) = ctx.ip {
        keys.push(KnownKey {
            kind: KeyKind::Network,
            value: network(ip),
        });
    }
    let location = normalise_location(&ctx.location);
    if !location.is_empty() {
        keys.push(KnownKey {
            kind: KeyKind::Location,
            value: location,
        });
    }
    keys
}

/// What the relay recommends the backend do with a sign-in. The backend decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommendation {
    /// Known device at a known place within the window: no second factor needed.
    Allow,
    /// Ask the owner's other devices.
    Challenge,
    /// No device can be pushed, but the account has an offline code: ask for it.
    Code,
    /// No device can be pushed and no offline code exists.
    NoFactor,
}

impl Recommendation {
    /// Upper-case name, as the CLI prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Challenge => "CHALLENGE",
            Self::Code => "CODE",
            Self::NoFactor => "NO_FACTOR",
        }
    }
}

/// How one signal compares with the remembered set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    /// Known, new, or not given.
    pub familiarity: Familiarity,
    /// When seen, if known.
    pub seen: Option<Seen>,
}

/// A sign-in compared with the remembered set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// The sign-in device.
    pub device: Signal,
    /// The place: known only when every given signal of it is.
    pub place: Signal,
    /// The network alone.
    pub network: Signal,
    /// The location alone.
    pub location: Signal,
}

/// What the relay knew of a sign-in when it created its challenge, for the phone's prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Familiar {
    /// The sign-in device.
    pub device: Familiarity,
    /// The place.
    pub place: Familiarity,
}

impl Evaluation {
    /// Compares a sign-in with `set` at `now_ms`; keys last seen before the window count as new.
    pub fn of(ctx: &LoginContext, set: &Remembered, now_ms: i64, window: Duration) -> Self {
        let since = now_ms.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        let mut eval = Self::default();
        for key in keys_of(ctx) {
            let seen = set
                .get(&key.field())
                .copied()
                .filter(|s| s.last_ms >= since);
            let signal = Signal {
                familiarity: if seen.is_some() {
                    Familiarity::Known
                } else {
                    Familiarity::New
                },
                seen,
            };
            match key.kind {
                KeyKind::Device => eval.device = signal,
                KeyKind::Network => eval.network = signal,
                KeyKind::Location => eval.location = signal,
            }
        }
        eval.place = place(eval.network, eval.location);
        eval
    }

    /// The device and place familiarity alone.
    pub fn familiar(&self) -> Familiar {
        Familiar {
            device: self.device.familiarity,
            place: self.place.familiarity,
        }
    }

    /// The recommendation, given whether a device can be pushed and an offline code exists.
    pub fn recommend(&self, pushable: bool, offline_code: bool) -> Recommendation {
        if self.device.familiarity == Familiarity::Known
            && self.place.familiarity == Familiarity::Known
        {
            Recommendation::Allow
        } else if pushable {
            Recommendation::Challenge
        } else if offline_code {
            Recommendation::Code
        } else {
            Recommendation::NoFactor
        }
    }
}

/// Known only when every given signal is known; the first-seen is the later of the two (the place as a
/// whole was not known before both were), the last-seen the earlier.
fn place(network: Signal, location: Signal) -> Signal {
    let given: Vec<Signal> = [network, location]
        .into_iter()
        .filter(|s| s.familiarity != Familiarity::Unspecified)
        .collect();
    if given.is_empty() {
        return Signal::default();
    }
    if given.iter().any(|s| s.familiarity == Familiarity::New) {
        return Signal {
            familiarity: Familiarity::New,
            seen: None,
        };
    }
    let seen: Vec<Seen> = given.iter().filter_map(|s| s.seen).collect();
    Signal {
        familiarity: Familiarity::Known,
        seen: Some(Seen {
            first_ms: seen.iter().map(|s| s.first_ms).max().unwrap_or(0),
            last_ms: seen.iter().map(|s| s.last_ms).min().unwrap_or(0),
        }),
    }
}

/// What remembering `keys` at `now_ms` changes in `set`: fields to write, and fields to drop (those last
/// seen before the window, then the least recently seen of a kind past its cap). The stores apply exactly
/// this; the Redis script computes the same in Lua (remember.lua).
pub fn remember(
    set: &Remembered,
    keys: &[KnownKey],
    now_ms: i64,
    window: Duration,
) -> (Vec<(String, Seen)>, Vec<String>) {
    let since = now_ms.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let mut next: Remembered = set
        .iter()
        .filter(|(_, s)| s.last_ms >= since)
        .map(|(f, s)| (f.clone(), *s))
        .collect();
    let mut writes = Vec::new();
    for key in keys {
        let field = key.field();
        let first_ms = next.get(&field).map_or(now_ms, |s| s.first_ms);
        let seen = Seen {
            first_ms,
            last_ms: now_ms,
        };
        next.insert(field.clone(), seen);
        writes.push((field, seen));
    }
    for kind in [KeyKind::Device, KeyKind::Network] {
        let mut of_kind: Vec<(&String, &Seen)> = next
            .iter()
            .filter(|(f, _)| match kind {
                KeyKind::Device => KeyKind::of_field(f) == Some(KeyKind::Device),
                _ => KeyKind::of_field(f).is_some_and(|k| k != KeyKind::Device),
            })
            .collect();
        // Oldest last-seen first; ties by field, so both stores drop the same one.
        of_kind.sort_by(|a, b| a.1.last_ms.cmp(&b.1.last_ms).then(a.0.cmp(b.0)));
        let excess = of_kind.len().saturating_sub(kind.cap());
        let dropped: Vec<String> = of_kind[..excess]
            .iter()
            .map(|(f, _)| (*f).clone())
            .collect();
        for f in dropped {
            next.remove(&f);
        }
    }
    let drops = set
        .keys()
        .filter(|f| !next.contains_key(*f))
        .cloned()
        .collect();
    (writes, drops)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn ctx(device: &str, ip: &str, location: &str) -> LoginContext {
        LoginContext {
            sign_in_device_key: device.into(),
            ip: (!ip.is_empty()).then(|| ip.parse().expect("test value")),
            location: location.into(),
            ..LoginContext::default()
        }
    }

    fn approve(set: &mut Remembered, c: &LoginContext, now: i64) {
        let (writes, drops) = remember(set, &keys_of(c), now, DAY * 30);
        for f in drops {
            set.remove(&f);
        }
        set.extend(writes);
    }

    #[test]
    fn networks_are_slash_24_and_slash_48() {
        assert_eq!(
            network("203.0.113.77".parse().expect("test value")),
            "203.0.113.0/24"
        );
        assert_eq!(
            network("2001:db8:1:2::5".parse().expect("test value")),
            "2001:db8:1::/48"
        );
        assert_eq!(
            network("::ffff:198.51.100.9".parse().expect("test value")),
            "198.51.100.0/24"
        );
        assert_eq!(normalise_location("  Lyon,\t FRANCE "), "lyon, france");
    }

    #[test]
    fn first_sign_in_is_new_and_approval_makes_it_known() {
        let mut set = Remembered::new();
        let c = ctx("laptop-1", "203.0.113.7", "Lyon, France");
        let e = Evaluation::of(&c, &set, 1_000, DAY);
        assert_eq!(e.device.familiarity, Familiarity::New);
        assert_eq!(e.place.familiarity, Familiarity::New);
        assert_eq!(e.recommend(true, false), Recommendation::Challenge);
        approve(&mut set, &c, 1_000);
        let again = ctx("laptop-1", "203.0.113.200", " lyon,  france");
        let e = Evaluation::of(&again, &set, 2_000, DAY);
        assert_eq!(e.familiar().device, Familiarity::Known);
        assert_eq!(e.familiar().place, Familiarity::Known);
        assert_eq!(e.device.seen.expect("test value").first_ms, 1_000);
        assert_eq!(e.recommend(true, true), Recommendation::Allow);
    }

    #[test]
    fn a_place_is_known_only_when_every_given_signal_is() {
        let mut set = Remembered::new();
        approve(&mut set, &ctx("a", "203.0.113.7", "Lyon"), 0);
        let other_net = Evaluation::of(&ctx("a", "198.51.100.1", "Lyon"), &set, 1, DAY);
        assert_eq!(other_net.location.familiarity, Familiarity::Known);
        assert_eq!(other_net.place.familiarity, Familiarity::New);
        let net_only = Evaluation::of(&ctx("a", "203.0.113.9", ""), &set, 1, DAY);
        assert_eq!(net_only.place.familiarity, Familiarity::Known);
        let nothing = Evaluation::of(&ctx("", "", ""), &set, 1, DAY);
        assert_eq!(nothing.place.familiarity, Familiarity::Unspecified);
        assert_eq!(nothing.recommend(false, true), Recommendation::Code);
        assert_eq!(nothing.recommend(false, false), Recommendation::NoFactor);
    }

    #[test]
    fn the_window_forgets_and_caps_drop_the_least_recent() {
        let mut set = Remembered::new();
        approve(&mut set, &ctx("old", "", ""), 0);
        let late = i64::try_from((DAY * 31).as_millis()).expect("test value");
        let e = Evaluation::of(&ctx("old", "", ""), &set, late, DAY * 30);
        assert_eq!(e.device.familiarity, Familiarity::New);
        for i in 0..=MAX_DEVICES {
            approve(
                &mut set,
                &ctx(&format!("dev-{i:02}"), "", ""),
                late + i as i64,
            );
        }
        assert!(!set.contains_key("d:old"), "outside the window: dropped");
        assert!(!set.contains_key("d:dev-00"), "least recent past the cap");
        assert_eq!(
            set.keys().filter(|f| f.starts_with("d:")).count(),
            MAX_DEVICES
        );
    }
}
