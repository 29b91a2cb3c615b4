//! Registered devices and enrollment tickets: the records behind "only the owner's devices". Pure data
//! and rules; the store keeps them.

use crate::auth::{AuthError, PublicKey, counter_is_fresh};
use crate::challenge::{AccountId, IdError, RoutingTag};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The push service that reaches a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging HTTP v1.
    Fcm,
    /// Xiaomi's Mi Push (MIUI / HyperOS phones without Google services).
    Xiaomi,
    /// Huawei's HMS Push Kit.
    Hms,
    /// No push channel: the phone polls ListPending and ListNotices.
    PollOnly,
}

impl Platform {
    /// Every platform, in proto order.
    pub const ALL: [Self; 5] = [
        Self::Apns,
        Self::Fcm,
        Self::Xiaomi,
        Self::Hms,
        Self::PollOnly,
    ];

    /// Lower-case name for logs, metric labels and the store.
    pub fn name(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
            Self::Xiaomi => "xiaomi",
            Self::Hms => "hms",
            Self::PollOnly => "poll_only",
        }
    }

    /// The platform of a [`Platform::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// False for [`Platform::PollOnly`]: nothing is ever pushed to it.
    pub fn is_pushed(self) -> bool {
        self != Self::PollOnly
    }
}

/// A device's second push channel, tried when the first ends in a delivery failure (a phone that moves
/// between regions: FCM abroad, Mi Push at home). Same app (`Device::app_id`), another provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// Its provider: never the device's own platform, never [`Platform::PollOnly`].
    pub platform: Platform,
    /// Its token; `None` once the provider reported it dead.
    pub push_token: Option<String>,
}

/// Why a push channel cannot be registered as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A pushed platform needs a token.
    #[error("must not be empty")]
    MissingToken,
    /// A poll-only device has nothing to push to.
    #[error("must be empty for PLATFORM_POLL_ONLY")]
    TokenOnPollOnly,
    /// The fallback must be another provider that pushes.
    #[error("must be a pushed platform other than the device's own")]
    BadFallback,
    /// A poll-only device cannot fall back to anything.
    #[error("a PLATFORM_POLL_ONLY device has no push channel to fall back from")]
    FallbackOnPollOnly,
}

/// A token update for a channel the device does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MissingChannel {
    /// A poll-only device has no push token to update.
    #[error("a PLATFORM_POLL_ONLY device has no push token")]
    PollOnly,
    /// The device enrolled without a fallback channel.
    #[error("the device has no fallback channel (it enrolled without one)")]
    NoFallback,
}

impl MissingChannel {
    /// The `google.rpc.ErrorInfo` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::PollOnly => "POLL_ONLY_DEVICE",
            Self::NoFallback => "NO_FALLBACK_CHANNEL",
        }
    }
}

/// Checks a device's channels: a token exactly when its platform pushes, and a fallback (if any) that is
/// another pushed platform with a token. Errors name which part is wrong: (`true` for the fallback).
///
/// # Errors
/// [`ChannelError`], with whether it concerns the fallback.
pub fn check_channels(
    platform: Platform,
    token: &str,
    fallback: Option<(Platform, &str)>,
) -> Result<(), (bool, ChannelError)> {
    match (platform.is_pushed(), token.is_empty()) {
        (true, true) => return Err((false, ChannelError::MissingToken)),
        (false, false) => return Err((false, ChannelError::TokenOnPollOnly)),
        _ => {}
    }
    let Some((other, other_token)) = fallback else {
        return Ok(());
    };
    if !platform.is_pushed() {
        return Err((true, ChannelError::FallbackOnPollOnly));
    }
    if other == platform || !other.is_pushed() {
        return Err((true, ChannelError::BadFallback));
    }
    if other_token.is_empty() {
        return Err((true, ChannelError::MissingToken));
    }
    Ok(())
}

/// Lifecycle of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Pushed and allowed to answer.
    Active,
    /// Its counter went backwards: refused until re-enrolled.
    SuspectedClone,
    /// Revoked by the backend: refused for good.
    Revoked,
}

/// A registered phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Issued at enrollment; carries the account's routing tag.
    pub id: crate::challenge::DeviceId,
    /// The owner.
    pub account: AccountId,
    /// How it is pushed.
    pub platform: Platform,
    /// Provider token; `None` once a provider reported it dead, and always for [`Platform::PollOnly`].
    pub push_token: Option<String>,
    /// The second channel, if it registered one.
    pub fallback: Option<Fallback>,
    /// APNs topic or Android package.
    pub app_id: String,
    /// The key every request must be signed with.
    pub key: PublicKey,
    /// What the owner calls it.
    pub display_name: String,
    /// Store clock at enrollment, Unix ms.
    pub created_at_ms: i64,
    /// Store clock at the last accepted request, Unix ms.
    pub last_seen_ms: i64,
    /// Highest accepted signature counter.
    pub counter: u64,
    /// Lifecycle state.
    pub state: DeviceState,
    /// The verdict on its key attestation at enrollment.
    pub attestation: crate::attest::Verdict,
}

impl Device {
    /// Applies the counter rule to a request whose signature verified with `key`, advancing the counter
    /// or marking the device a suspected clone.
    ///
    /// # Errors
    /// [`AuthError::Revoked`] / [`AuthError::SuspectedClone`] for a device already refused, and
    /// [`AuthError::BadSignature`] when `key` is no longer the device's (rotated since it was read), all
    /// unchanged; [`AuthError::CounterNotIncreasing`] after marking the device `SuspectedClone`.
    pub fn accept_counter(
        &mut self,
        key: &PublicKey,
        counter: u64,
        now_ms: i64,
    ) -> Result<(), AuthError> {
        match self.state {
            DeviceState::Revoked => return Err(AuthError::Revoked),
            DeviceState::SuspectedClone => return Err(AuthError::SuspectedClone),
            DeviceState::Active => {}
        }
        // Checked here, in the same step as the counter: a key read before the step (or cached) may have
        // been rotated away meanwhile, and a signature by the old key must not count.
        if *key != self.key {
            return Err(AuthError::BadSignature);
        }
        if !counter_is_fresh(self.counter, counter) {
            self.state = DeviceState::SuspectedClone;
            return Err(AuthError::CounterNotIncreasing);
        }
        self.counter = counter;
        self.last_seen_ms = now_ms;
        Ok(())
    }

    /// True when the device should be sent new challenges (pushed, or polling for them).
    pub fn is_pushable(&self) -> bool {
        self.state == DeviceState::Active
    }

    /// The channels a push to this device tries, in order: its own while it has a token, then its
    /// fallback while that has one. Empty for a poll-only device or one whose tokens all died.
    pub fn channels(&self) -> Vec<Channel<'_>> {
        let own = self.push_token.as_deref().map(|token| Channel {
            platform: self.platform,
            token,
            fallback: false,
        });
        let other = self.fallback.as_ref().and_then(|f| {
            f.push_token.as_deref().map(|token| Channel {
                platform: f.platform,
                token,
                fallback: true,
            })
        });
        own.into_iter().chain(other).collect()
    }
}

/// One way to push a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel<'a> {
    /// The provider.
    pub platform: Platform,
    /// The device's token there.
    pub token: &'a str,
    /// True for the device's fallback channel.
    pub fallback: bool,
}

/// A one-time enrollment ticket as handed to the owner: `t.<routing tag>.<43 base64url characters>`.
/// Only its SHA-256 is stored, so a store dump does not hold usable tickets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    text: String,
    tag: RoutingTag,
}

impl Ticket {
    /// Issues a fresh ticket for an account.
    pub fn generate(account: &AccountId) -> Self {
        let mut random = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut random);
        let tag = account.tag();
        Self {
            text: format!("t.{tag}.{}", URL_SAFE_NO_PAD.encode(random)),
            tag,
        }
    }

    /// Parses a ticket a phone sent.
    ///
    /// # Errors
    /// [`IdError`] when it is not of the issued shape.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        if value.is_empty() {
            return Err(IdError::Empty);
        }
        let mut parts = value.split('.');
        match (
            parts.next(),
            parts.next().and_then(RoutingTag::from_hex),
            parts.next(),
            parts.next(),
        ) {
            (Some("t"), Some(tag), Some(random), None)
                if random.len() == 43
                    && random
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(Self {
                    text: value.to_owned(),
                    tag,
                })
            }
            _ => Err(IdError::Malformed),
        }
    }

    /// The ticket text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Lower-case hex SHA-256 of the ticket: the stored form.
    pub fn digest(&self) -> String {
        Sha256::digest(self.text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The routing tag of the account it enrolls into.
    pub fn tag(&self) -> RoutingTag {
        self.tag
    }
}

/// A pending enrollment: which account a ticket enrolls into, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The account the device will belong to.
    pub account: AccountId,
    /// The ticket expires at this store time, Unix ms.
    pub expires_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KeyAlgorithm;
    use crate::challenge::DeviceId;

    fn device() -> Device {
        let account = AccountId::parse("a").expect("valid");
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Device {
            id: DeviceId::generate(&account),
            account,
            platform: Platform::Fcm,
            push_token: Some("tok".into()),
            fallback: None,
            app_id: "app".into(),
            key: PublicKey::parse(KeyAlgorithm::Ed25519, sk.verifying_key().as_bytes())
                .expect("key"),
            display_name: String::new(),
            created_at_ms: 0,
            last_seen_ms: 0,
            counter: 0,
            state: DeviceState::Active,
            attestation: crate::attest::Verdict::default(),
        }
    }

    #[test]
    fn channels_are_checked_and_tried_own_first() {
        use ChannelError as E;
        assert_eq!(check_channels(Platform::Fcm, "t", None), Ok(()));
        assert_eq!(check_channels(Platform::PollOnly, "", None), Ok(()));
        assert_eq!(
            check_channels(Platform::Hms, "", None),
            Err((false, E::MissingToken))
        );
        assert_eq!(
            check_channels(Platform::PollOnly, "t", None),
            Err((false, E::TokenOnPollOnly))
        );
        assert_eq!(
            check_channels(Platform::Fcm, "t", Some((Platform::Xiaomi, "x"))),
            Ok(())
        );
        assert_eq!(
            check_channels(Platform::Fcm, "t", Some((Platform::Fcm, "x"))),
            Err((true, E::BadFallback))
        );
        assert_eq!(
            check_channels(Platform::Fcm, "t", Some((Platform::PollOnly, "x"))),
            Err((true, E::BadFallback))
        );
        assert_eq!(
            check_channels(Platform::Fcm, "t", Some((Platform::Hms, ""))),
            Err((true, E::MissingToken))
        );
        assert_eq!(
            check_channels(Platform::PollOnly, "", Some((Platform::Hms, "h"))),
            Err((true, E::FallbackOnPollOnly))
        );
        let mut d = device();
        d.fallback = Some(Fallback {
            platform: Platform::Xiaomi,
            push_token: Some("x".into()),
        });
        let order: Vec<_> = d
            .channels()
            .iter()
            .map(|c| (c.platform, c.fallback))
            .collect();
        assert_eq!(order, [(Platform::Fcm, false), (Platform::Xiaomi, true)]);
        d.push_token = None;
        assert_eq!(d.channels()[0].token, "x");
        d.fallback = None;
        assert!(d.channels().is_empty());
        for p in Platform::ALL {
            assert_eq!(Platform::from_name(p.name()), Some(p));
        }
    }

    #[test]
    fn a_repeated_counter_marks_the_device_a_suspected_clone_for_good() {
        let mut d = device();
        let key = d.key.clone();
        assert_eq!(d.accept_counter(&key, 3, 10), Ok(()));
        assert_eq!(
            d.accept_counter(&key, 3, 11),
            Err(AuthError::CounterNotIncreasing)
        );
        assert_eq!(d.state, DeviceState::SuspectedClone);
        assert_eq!(
            d.accept_counter(&key, 9, 12),
            Err(AuthError::SuspectedClone)
        );
        assert_eq!(d.counter, 3);
    }

    #[test]
    fn a_call_verified_with_a_key_rotated_away_changes_nothing() {
        let mut d = device();
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let old =
            PublicKey::parse(KeyAlgorithm::Ed25519, other.verifying_key().as_bytes()).expect("key");
        assert_eq!(d.accept_counter(&old, 3, 10), Err(AuthError::BadSignature));
        assert_eq!(
            (d.counter, d.state, d.last_seen_ms),
            (0, DeviceState::Active, 0)
        );
    }

    #[test]
    fn tickets_round_trip_and_carry_the_tag() {
        let account = AccountId::parse("bob").expect("valid");
        let t = Ticket::generate(&account);
        assert_eq!(Ticket::parse(t.as_str()), Ok(t.clone()));
        assert_eq!(t.tag(), account.tag());
        assert_eq!(Ticket::parse("t.1234.abc"), Err(IdError::Malformed));
    }
}
