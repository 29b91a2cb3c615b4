//! Redis values ⇄ domain records: device and challenge hashes, event payloads on the channels, and
//! script replies.

use crate::auth::{KeyAlgorithm, PublicKey};
use crate::challenge::NoticeId;
use crate::challenge::{
    AccountId, Challenge, ChallengeId, DeliveryState, DenyReason, DeviceId, Event, EventKind,
    LoginContext, NumberMatch, NumberMode, State,
};
use crate::device::{Device, DeviceState, Platform};
use crate::notice::{Notice, NoticeDraft, NoticeKind};
use crate::store::StoreError;
use ::redis::Value;
use std::collections::HashMap;

/// A hash as read with HGETALL.
pub type Hash = HashMap<String, Vec<u8>>;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Text of a script reply element.
pub fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(corrupt),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(corrupt(format!("expected text, got {other:?}"))),
    }
}

/// Integer of a script reply element.
pub fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other)?.parse().map_err(corrupt),
    }
}

/// Elements of an array reply.
pub fn array(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(corrupt(format!("expected an array, got {other:?}"))),
    }
}

/// The `i`-th element of a script reply, or a corrupt-data error (never a panic).
pub fn at(items: &[Value], i: usize) -> Result<&Value, StoreError> {
    items
        .get(i)
        .ok_or_else(|| corrupt(format!("script reply too short: no element {i}")))
}

/// A flat field/value array (HGETALL inside a script) as a hash.
pub fn hash(v: &Value) -> Result<Hash, StoreError> {
    let items = array(v)?;
    let mut out = Hash::new();
    for pair in items.chunks(2) {
        if let [Value::BulkString(k), Value::BulkString(val)] = pair {
            out.insert(String::from_utf8_lossy(k).into_owned(), val.clone());
        }
    }
    Ok(out)
}

fn field<'a>(h: &'a Hash, name: &str) -> Result<&'a str, StoreError> {
    h.get(name)
        .map(|v| std::str::from_utf8(v).map_err(corrupt))
        .transpose()?
        .ok_or_else(|| corrupt(format!("missing field {name}")))
}

fn opt_field<'a>(h: &'a Hash, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or_default()
}

fn num<T: std::str::FromStr>(h: &Hash, name: &str) -> Result<T, StoreError> {
    field(h, name)?
        .parse()
        .map_err(|_| corrupt(format!("field {name} is not a number")))
}

/// Name of a platform in a device hash.
pub fn platform_name(p: Platform) -> &'static str {
    p.name()
}

/// Name of a key algorithm in a device hash.
pub fn algorithm_name(a: KeyAlgorithm) -> &'static str {
    match a {
        KeyAlgorithm::EcdsaP256 => "p256",
        KeyAlgorithm::Ed25519 => "ed25519",
    }
}

/// A device from its hash.
pub fn device(id: &DeviceId, h: &Hash) -> Result<Device, StoreError> {
    let algorithm = match field(h, "alg")? {
        "p256" => KeyAlgorithm::EcdsaP256,
        "ed25519" => KeyAlgorithm::Ed25519,
        other => return Err(corrupt(format!("unknown key algorithm {other}"))),
    };
    let key_bytes = h.get("key").ok_or_else(|| corrupt("missing key"))?;
    Ok(Device {
        id: id.clone(),
        account: AccountId::parse(field(h, "account")?).map_err(corrupt)?,
        platform: platform(field(h, "platform")?)?,
        push_token: h
            .get("token")
            .map(|t| String::from_utf8_lossy(t).into_owned()),
        fallback: match opt_field(h, "fb_platform") {
            "" => None,
            name => Some(crate::device::Fallback {
                platform: platform(name)?,
                push_token: h
                    .get("fb_token")
                    .map(|t| String::from_utf8_lossy(t).into_owned()),
            }),
        },
        app_id: opt_field(h, "app").to_owned(),
        key: PublicKey::stored(algorithm, key_bytes).map_err(corrupt)?,
        display_name: opt_field(h, "name").to_owned(),
        created_at_ms: num(h, "created")?,
        last_seen_ms: num(h, "seen")?,
        counter: num(h, "counter")?,
        state: match field(h, "state")? {
            "active" => DeviceState::Active,
            "clone" => DeviceState::SuspectedClone,
            "revoked" => DeviceState::Revoked,
            other => return Err(corrupt(format!("unknown device state {other}"))),
        },
        attestation: attestation(h)?,
    })
}

fn platform(name: &str) -> Result<Platform, StoreError> {
    Platform::from_name(name).ok_or_else(|| corrupt(format!("unknown platform {name}")))
}

/// A push outcome as stored in a challenge's `dl:<device>` field and passed to delivery.lua:
/// `delivered:<channel>` (challenge::Via::label), `failed:<reason>` (tabs, which separate event fields,
/// become spaces) or `poll`; `None` for `Pending`, which is not stored.
pub fn delivery_value(state: &DeliveryState) -> Option<String> {
    match state {
        DeliveryState::Pending => None,
        DeliveryState::Delivered(via) => Some(format!("delivered:{}", via.label())),
        DeliveryState::Failed(reason) => Some(format!("failed:{}", reason.replace('\t', " "))),
        DeliveryState::PollOnly => Some("poll".to_owned()),
    }
}

/// The outcome in a `dl:<device>` field ([`delivery_value`]; `delivered` alone from older relays).
fn delivery_state(value: &str) -> Result<DeliveryState, StoreError> {
    if let Some(reason) = value.strip_prefix("failed:") {
        return Ok(DeliveryState::Failed(reason.to_owned()));
    }
    if value == "poll" {
        return Ok(DeliveryState::PollOnly);
    }
    let label = match value.strip_prefix("delivered") {
        Some("") => "",
        Some(rest) => rest.strip_prefix(':').unwrap_or(rest),
        None => return Err(corrupt(format!("unknown delivery {value}"))),
    };
    Ok(DeliveryState::Delivered(via(label)?))
}

fn via(label: &str) -> Result<crate::challenge::Via, StoreError> {
    crate::challenge::Via::from_label(label)
        .ok_or_else(|| corrupt(format!("unknown channel {label}")))
}

/// A device's attestation verdict; devices enrolled before attestation existed have none.
fn attestation(h: &Hash) -> Result<crate::attest::Verdict, StoreError> {
    use crate::attest::{Assurance, BootState, Verdict};
    let assurance = match opt_field(h, "assurance") {
        "" => Assurance::None,
        name => Assurance::from_name(name)
            .ok_or_else(|| corrupt(format!("unknown assurance {name}")))?,
    };
    let boot = match opt_field(h, "boot") {
        "" => None,
        name => Some(
            BootState::from_name(name)
                .ok_or_else(|| corrupt(format!("unknown boot state {name}")))?,
        ),
    };
    Ok(Verdict {
        assurance,
        app: opt_field(h, "attested_app").to_owned(),
        boot,
    })
}

/// Devices from a script's array of `{id, HGETALL}` pairs.
pub fn devices(v: &Value) -> Result<Vec<Device>, StoreError> {
    let mut out = Vec::new();
    for pair in array(v)? {
        let pair = array(pair)?;
        let id = DeviceId::parse(&text(at(pair, 0)?)?).map_err(corrupt)?;
        out.push(device(&id, &hash(at(pair, 1)?)?)?);
    }
    Ok(out)
}

/// A challenge that a script just ended, from its hash and the devices to withdraw it from.
pub fn ended(
    id: &ChallengeId,
    h: &Value,
    withdraw: &Value,
) -> Result<crate::store::Ended, StoreError> {
    let challenge = challenge(id, &hash(h)?)?;
    let event = challenge
        .terminal_event()
        .ok_or_else(|| corrupt("ended challenge reads as pending"))?;
    Ok(crate::store::Ended {
        challenge,
        event,
        withdraw: devices(withdraw)?,
    })
}

/// The device fields the relay writes at enrollment (the script adds account, state, counter, times).
pub fn new_device_fields(d: &crate::store::NewDevice) -> Vec<(&'static str, Vec<u8>)> {
    let mut fields = Vec::with_capacity(12);
    // A poll-only device has no token field at all, as a device whose token was pruned.
    if !d.push_token.is_empty() {
        fields.push(("token", d.push_token.as_bytes().to_vec()));
    }
    if let Some(fallback) = &d.fallback {
        fields.push((
            "fb_platform",
            platform_name(fallback.platform).as_bytes().to_vec(),
        ));
        if let Some(token) = &fallback.push_token {
            fields.push(("fb_token", token.as_bytes().to_vec()));
        }
    }
    fields.extend([
        ("platform", platform_name(d.platform).as_bytes().to_vec()),
        ("app", d.app_id.as_bytes().to_vec()),
        ("alg", algorithm_name(d.key.algorithm()).as_bytes().to_vec()),
        ("key", d.key.to_bytes()),
        ("name", d.display_name.as_bytes().to_vec()),
        (
            "assurance",
            d.attestation.assurance.name().as_bytes().to_vec(),
        ),
        // The rank create.lua compares `min_assurance` with (attest::Assurance::rank).
        (
            "rank",
            d.attestation.assurance.rank().to_string().into_bytes(),
        ),
        ("attested_app", d.attestation.app.as_bytes().to_vec()),
        (
            "boot",
            d.attestation
                .boot
                .map_or("", |b| b.name())
                .as_bytes()
                .to_vec(),
        ),
    ]);
    fields
}

fn mode_name(m: NumberMode) -> &'static str {
    match m {
        NumberMode::None => "none",
        NumberMode::Type => "type",
        NumberMode::Choose => "choose",
    }
}

/// The challenge fields the relay writes at creation (the script adds state, times, targets).
pub fn new_challenge_fields(c: &crate::store::NewChallenge) -> Vec<(&'static str, String)> {
    let mut fields = context_fields(&c.context);
    fields.extend([
        ("mode", mode_name(c.number.mode).to_owned()),
        ("number", c.number.number.to_string()),
        (
            "choices",
            c.number
                .choices
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("idem", c.idempotency_key.clone().unwrap_or_default()),
        ("tries", c.number.attempts.to_string()),
    ]);
    fields.extend(remember_fields(&c.context));
    fields
}

/// The known-set fields an approval of this sign-in marks (`known::keys_of`), one per kind (`kd`, `kn`,
/// `kl`; '' when the context has none): respond.lua remembers them in the approval's own step.
fn remember_fields(ctx: &LoginContext) -> [(&'static str, String); 3] {
    let mut out = [
        ("kd", String::new()),
        ("kn", String::new()),
        ("kl", String::new()),
    ];
    for key in crate::known::keys_of(ctx) {
        let slot = match key.kind {
            crate::known::KeyKind::Device => 0,
            crate::known::KeyKind::Network => 1,
            crate::known::KeyKind::Location => 2,
        };
        out[slot].1 = key.field();
    }
    out
}

/// A login context's fields, shared by challenge and notice hashes.
fn context_fields(ctx: &LoginContext) -> Vec<(&'static str, String)> {
    vec![
        ("ip", ctx.ip.map(|ip| ip.to_string()).unwrap_or_default()),
        ("loc", ctx.location.clone()),
        ("ua", ctx.user_agent.clone()),
        ("sname", ctx.signing_in_device_name.clone()),
        (
            "sdev",
            ctx.signing_in_device_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        ("skey", ctx.sign_in_device_key.clone()),
        ("fdev", ctx.familiar.device.name().to_owned()),
        ("fplace", ctx.familiar.place.name().to_owned()),
    ]
}

fn context(h: &Hash) -> Result<LoginContext, StoreError> {
    let ip = opt_field(h, "ip");
    let sdev = opt_field(h, "sdev");
    Ok(LoginContext {
        ip: if ip.is_empty() {
            None
        } else {
            Some(ip.parse().map_err(corrupt)?)
        },
        location: opt_field(h, "loc").to_owned(),
        user_agent: opt_field(h, "ua").to_owned(),
        signing_in_device_name: opt_field(h, "sname").to_owned(),
        signing_in_device_id: if sdev.is_empty() {
            None
        } else {
            Some(DeviceId::parse(sdev).map_err(corrupt)?)
        },
        sign_in_device_key: opt_field(h, "skey").to_owned(),
        familiar: crate::known::Familiar {
            device: crate::known::Familiarity::parse(opt_field(h, "fdev")),
            place: crate::known::Familiarity::parse(opt_field(h, "fplace")),
        },
    })
}

fn id_list(h: &Hash, name: &str) -> Result<Vec<DeviceId>, StoreError> {
    opt_field(h, name)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(DeviceId::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(corrupt)
}

/// A notice's fields beyond those the script writes itself: the login context and the sign-in reference.
pub fn notice_extra_fields(d: &NoticeDraft) -> Vec<(&'static str, String)> {
    let mut fields = context_fields(&d.context);
    fields.push(("ref", d.sign_in_id.clone()));
    fields
}

/// A notice from its hash.
pub fn notice(id: &NoticeId, h: &Hash) -> Result<Notice, StoreError> {
    let subject = opt_field(h, "subject");
    let challenge = opt_field(h, "challenge");
    Ok(Notice {
        id: id.clone(),
        account: AccountId::parse(field(h, "account")?).map_err(corrupt)?,
        kind: NoticeKind::from_name(field(h, "kind")?)
            .ok_or_else(|| corrupt("unknown notice kind"))?,
        created_at_ms: num(h, "created")?,
        expires_at_ms: num(h, "expires")?,
        targets: id_list(h, "targets")?,
        subject: if subject.is_empty() {
            None
        } else {
            Some(DeviceId::parse(subject).map_err(corrupt)?)
        },
        challenge: if challenge.is_empty() {
            None
        } else {
            Some(ChallengeId::parse(challenge).map_err(corrupt)?)
        },
        context: context(h)?,
        sign_in_id: opt_field(h, "ref").to_owned(),
    })
}

fn state(name: &str, by: &str, reason: &str) -> Result<State, StoreError> {
    let device = || DeviceId::parse(by).map_err(corrupt);
    Ok(match name {
        "pending" => State::Pending,
        "approved" => State::Approved(device()?),
        "denied" => State::Denied(device()?, deny_reason(reason)?),
        "fraud_reported" => State::FraudReported(device()?),
        "expired" => State::Expired,
        "cancelled" => State::Cancelled,
        other => return Err(corrupt(format!("unknown challenge state {other}"))),
    })
}

fn deny_reason(name: &str) -> Result<DenyReason, StoreError> {
    [
        DenyReason::NotMe,
        DenyReason::CancelledByUser,
        DenyReason::NumberMismatch,
        DenyReason::WrongNumber,
    ]
    .into_iter()
    .find(|r| r.name() == name)
    .ok_or_else(|| corrupt(format!("unknown deny reason {name}")))
}

/// A challenge from its hash.
pub fn challenge(id: &ChallengeId, h: &Hash) -> Result<Challenge, StoreError> {
    let mode = match field(h, "mode")? {
        "none" => NumberMode::None,
        "type" => NumberMode::Type,
        "choose" => NumberMode::Choose,
        other => return Err(corrupt(format!("unknown number mode {other}"))),
    };
    let choices = opt_field(h, "choices")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>();
    let idem = opt_field(h, "idem");
    let targets = id_list(h, "targets")?;
    // Push outcomes: `dl:<device id>` (delivery_value).
    let deliveries = targets
        .iter()
        .filter_map(|d| match opt_field(h, &format!("dl:{d}")) {
            "" => None,
            value => Some(delivery_state(value).map(|state| (d.clone(), state))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Challenge {
        id: id.clone(),
        account: AccountId::parse(field(h, "account")?).map_err(corrupt)?,
        context: context(h)?,
        number: NumberMatch {
            mode,
            number: num(h, "number")?,
            choices: choices.map_err(corrupt)?,
            // Challenges created before wrong numbers were counted allowed one.
            attempts: opt_field(h, "tries").parse().unwrap_or(match mode {
                NumberMode::None => 0,
                _ => 1,
            }),
        },
        targets,
        created_at_ms: num(h, "created")?,
        expires_at_ms: num(h, "expires")?,
        ended_at_ms: num(h, "ended")?,
        state: state(
            field(h, "state")?,
            opt_field(h, "by"),
            opt_field(h, "reason"),
        )?,
        sequence: num(h, "seq")?,
        idempotency_key: if idem.is_empty() {
            None
        } else {
            Some(idem.to_owned())
        },
        wrong_answers: opt_field(h, "wrong").parse().unwrap_or(0),
        deliveries,
        pusher: opt_field(h, "pusher").to_owned(),
        push_claims: opt_field(h, "claims").parse().unwrap_or(0),
    })
}

/// An event from its channel payload: `seq \t at \t kind \t device \t extra`.
pub fn event(id: &ChallengeId, payload: &[u8]) -> Result<Event, StoreError> {
    let text = std::str::from_utf8(payload).map_err(corrupt)?;
    let mut parts = text.splitn(5, '\t');
    let mut next = || parts.next().unwrap_or_default();
    let (seq, at, kind, device, extra) = (next(), next(), next(), next(), next());
    let sequence = seq.parse().map_err(corrupt)?;
    let at_ms = at.parse().map_err(corrupt)?;
    let kind = match kind {
        "delivered" => EventKind::Delivered(DeviceId::parse(device).map_err(corrupt)?, via(extra)?),
        "failed" => {
            EventKind::DeliveryFailed(DeviceId::parse(device).map_err(corrupt)?, extra.to_owned())
        }
        terminal => EventKind::Ended(state(terminal, device, extra)?),
    };
    Ok(Event {
        challenge_id: id.clone(),
        sequence,
        at_ms,
        kind,
    })
}

/// What failure.lua said of one budget (`limit` names it).
pub fn failure_outcome(
    reply: &Value,
    limit: crate::limits::LimitRefusal,
) -> Result<crate::store::FailureOutcome, StoreError> {
    let items = array(reply)?;
    Ok(match text(at(items, 0)?)?.as_str() {
        "limited" => crate::store::FailureOutcome::Limited {
            limit,
            wait: std::time::Duration::from_millis(int(at(items, 1)?)?.unsigned_abs()),
            first_trip: int(at(items, 2)?)? == 1,
        },
        _ => crate::store::FailureOutcome::Counted,
    })
}

/// An authenticator from its field in the account's set (authenticator.lua) and its `:p`/`:u` fields.
pub fn authenticator(
    id: &str,
    record: &[u8],
    h: &Hash,
) -> Result<crate::factor::Authenticator, StoreError> {
    let record = std::str::from_utf8(record).map_err(corrupt)?;
    let mut parts = record.splitn(3, '\t');
    let (Some(device), Some(created), Some(sealed)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt(format!("authenticator {id} is malformed")));
    };
    let number = |name: String| -> Result<Option<i64>, StoreError> {
        match opt_field(h, &name) {
            "" => Ok(None),
            v => v.parse().map(Some).map_err(corrupt),
        }
    };
    Ok(crate::factor::Authenticator {
        id: id.to_owned(),
        device: match device {
            "" => None,
            d => Some(DeviceId::parse(d).map_err(corrupt)?),
        },
        sealed: sealed.to_owned(),
        created_ms: created.parse().map_err(corrupt)?,
        pending_until_ms: number(format!("{id}:p"))?,
        used_step: number(format!("{id}:u"))?.unwrap_or(-1),
    })
}
