//! Protobuf ⇄ domain. Parsing names the offending field on failure ("parse, don't validate"); protobuf
//! types stop here.

use crate::attest::{Assurance, BootState};
use crate::audit::{AuditKind, SecurityEvent, SecurityKind, StoredAudit};
use crate::auth::KeyAlgorithm;
use crate::challenge::{
    self, AccountId, Challenge, ChallengeId, DeliveryState, DenyReason, DeviceId, Event, EventKind,
    LoginContext, NoticeId, NumberMode, State,
};
use crate::device::{Device, DeviceState, Platform};
use crate::error::Error;
use crate::notice::{Notice, NoticeKind};
use crate::pb;
use std::net::IpAddr;

/// Longest free-text login context field accepted, in bytes, by field.
const LOCATION_MAX: usize = 128;
const USER_AGENT_MAX: usize = 256;
const DEVICE_NAME_MAX: usize = 128;
/// Longest push token, in bytes.
pub const PUSH_TOKEN_MAX: usize = 1024;
/// Longest app id, in bytes.
pub const APP_ID_MAX: usize = 256;
/// Longest display name, in bytes.
pub const DISPLAY_NAME_MAX: usize = 64;

/// Parses a required account id.
pub fn account(field: &'static str, value: &str) -> Result<AccountId, Error> {
    AccountId::parse(value).map_err(|e| Error::invalid(field, e))
}

/// Parses a required challenge id.
pub fn challenge_id(field: &'static str, value: &str) -> Result<ChallengeId, Error> {
    ChallengeId::parse(value).map_err(|e| Error::invalid(field, e))
}

/// Parses a required device id.
pub fn device_id(field: &'static str, value: &str) -> Result<DeviceId, Error> {
    DeviceId::parse(value).map_err(|e| Error::invalid(field, e))
}

/// Parses a required notice id.
pub fn notice_id(field: &'static str, value: &str) -> Result<NoticeId, Error> {
    NoticeId::parse(value).map_err(|e| Error::invalid(field, e))
}

/// A notice as the device `viewer` sees it, with the device it is about as that device is now.
pub fn notice_to_pb(n: &Notice, subject: Option<&Device>, viewer: &DeviceId) -> pb::DeviceNotice {
    pb::DeviceNotice {
        notice_id: n.id.to_string(),
        kind: match n.kind {
            NoticeKind::SignIn => pb::NoticeKind::SignIn,
            NoticeKind::NewDevice => pb::NoticeKind::NewDevice,
            NoticeKind::FraudReported => pb::NoticeKind::FraudReported,
            NoticeKind::CloneSuspected => pb::NoticeKind::CloneSuspected,
        }
        .into(),
        created_at_unix_ms: n.created_at_ms,
        expires_at_unix_ms: n.expires_at_ms,
        login_context: (n.kind == NoticeKind::SignIn).then(|| phone_context_to_pb(&n.context)),
        device: subject.map(|d| {
            let info = device_to_pb(d);
            pb::NoticeDevice {
                device_id: info.device_id,
                display_name: info.display_name,
                platform: info.platform,
                state: info.state,
                created_at_unix_ms: info.created_at_unix_ms,
            }
        }),
        challenge_id: n
            .challenge
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        revocable: n.revocable_by(viewer),
    }
}

/// Checks an optional free-text field: bounded and without control characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String, Error> {
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// Checks a required free-text field.
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    text(field, value, max)
}

/// Parses the login context (all fields optional).
pub fn login_context(ctx: Option<pb::LoginContext>) -> Result<LoginContext, Error> {
    let ctx = ctx.unwrap_or_default();
    let ip = match ctx.ip.as_str() {
        "" => None,
        s => Some(
            s.parse::<IpAddr>()
                .map_err(|_| Error::invalid("login_context.ip", "is not an IP address"))?,
        ),
    };
    let signing_in_device_id = match ctx.signing_in_device_id.as_str() {
        "" => None,
        s => Some(device_id("login_context.signing_in_device_id", s)?),
    };
    Ok(LoginContext {
        ip,
        location: text("login_context.location", &ctx.location, LOCATION_MAX)?,
        user_agent: text("login_context.user_agent", &ctx.user_agent, USER_AGENT_MAX)?,
        signing_in_device_name: text(
            "login_context.signing_in_device_name",
            &ctx.signing_in_device_name,
            DEVICE_NAME_MAX,
        )?,
        signing_in_device_id,
        sign_in_device_key: text(
            "login_context.sign_in_device_key",
            &ctx.sign_in_device_key,
            crate::known::DEVICE_KEY_MAX,
        )?,
        familiar: crate::known::Familiar::default(),
    })
}

/// Parses the number-match mode (unset means TYPE).
pub fn number_mode(value: i32) -> Result<NumberMode, Error> {
    match pb::NumberMatchMode::try_from(value) {
        Ok(pb::NumberMatchMode::Unspecified | pb::NumberMatchMode::Type) => Ok(NumberMode::Type),
        Ok(pb::NumberMatchMode::None) => Ok(NumberMode::None),
        Ok(pb::NumberMatchMode::Choose) => Ok(NumberMode::Choose),
        Err(_) => Err(Error::invalid("number_match_mode", "unknown value")),
    }
}

fn mode_to_pb(mode: NumberMode) -> pb::NumberMatchMode {
    match mode {
        NumberMode::None => pb::NumberMatchMode::None,
        NumberMode::Type => pb::NumberMatchMode::Type,
        NumberMode::Choose => pb::NumberMatchMode::Choose,
    }
}

/// Parses a required platform.
pub fn platform(field: &'static str, value: i32) -> Result<Platform, Error> {
    match pb::Platform::try_from(value) {
        Ok(pb::Platform::Apns) => Ok(Platform::Apns),
        Ok(pb::Platform::Fcm) => Ok(Platform::Fcm),
        Ok(pb::Platform::Xiaomi) => Ok(Platform::Xiaomi),
        Ok(pb::Platform::Hms) => Ok(Platform::Hms),
        Ok(pb::Platform::PollOnly) => Ok(Platform::PollOnly),
        _ => Err(Error::invalid(
            field,
            "must be PLATFORM_APNS, PLATFORM_FCM, PLATFORM_XIAOMI, PLATFORM_HMS or PLATFORM_POLL_ONLY",
        )),
    }
}

/// A platform as the protos name it.
pub fn platform_to_pb(p: Platform) -> pb::Platform {
    match p {
        Platform::Apns => pb::Platform::Apns,
        Platform::Fcm => pb::Platform::Fcm,
        Platform::Xiaomi => pb::Platform::Xiaomi,
        Platform::Hms => pb::Platform::Hms,
        Platform::PollOnly => pb::Platform::PollOnly,
    }
}

fn via_to_pb(via: crate::challenge::Via) -> (i32, bool) {
    (
        via.platform
            .map_or(pb::Platform::Unspecified, platform_to_pb)
            .into(),
        via.fallback,
    )
}

/// Parses a required key algorithm.
pub fn key_algorithm(field: &'static str, value: i32) -> Result<KeyAlgorithm, Error> {
    match pb::KeyAlgorithm::try_from(value) {
        Ok(pb::KeyAlgorithm::EcdsaP256Sha256) => Ok(KeyAlgorithm::EcdsaP256),
        Ok(pb::KeyAlgorithm::Ed25519) => Ok(KeyAlgorithm::Ed25519),
        _ => Err(Error::invalid(
            field,
            "must be KEY_ALGORITHM_ECDSA_P256_SHA256 or KEY_ALGORITHM_ED25519",
        )),
    }
}

/// Parses a decision with its deny reason.
pub fn decision(value: i32, reason: i32) -> Result<challenge::Decision, Error> {
    let reason = match pb::DenyReason::try_from(reason) {
        Ok(pb::DenyReason::Unspecified) => None,
        Ok(pb::DenyReason::NotMe) => Some(DenyReason::NotMe),
        Ok(pb::DenyReason::CancelledByUser) => Some(DenyReason::CancelledByUser),
        Ok(pb::DenyReason::NumberMismatch) => Some(DenyReason::NumberMismatch),
        Ok(pb::DenyReason::WrongNumber) => {
            return Err(Error::invalid(
                "payload.respond.deny_reason",
                "DENY_REASON_WRONG_NUMBER is set by the relay, not sent by a phone",
            ));
        }
        Err(_) => {
            return Err(Error::invalid(
                "payload.respond.deny_reason",
                "unknown value",
            ));
        }
    };
    match (pb::Decision::try_from(value), reason) {
        (Ok(pb::Decision::Approve), None) => Ok(challenge::Decision::Approve),
        (Ok(pb::Decision::ReportFraud), None) => Ok(challenge::Decision::ReportFraud),
        (Ok(pb::Decision::Deny), Some(r)) => Ok(challenge::Decision::Deny(r)),
        (Ok(pb::Decision::Deny), None) => Err(Error::invalid(
            "payload.respond.deny_reason",
            "required with DECISION_DENY",
        )),
        (Ok(pb::Decision::Approve | pb::Decision::ReportFraud), Some(_)) => Err(Error::invalid(
            "payload.respond.deny_reason",
            "allowed only with DECISION_DENY",
        )),
        _ => Err(Error::invalid(
            "payload.respond.decision",
            "must be APPROVE, DENY or REPORT_FRAUD",
        )),
    }
}

fn reason_to_pb(reason: DenyReason) -> pb::DenyReason {
    match reason {
        DenyReason::NotMe => pb::DenyReason::NotMe,
        DenyReason::CancelledByUser => pb::DenyReason::CancelledByUser,
        DenyReason::NumberMismatch => pb::DenyReason::NumberMismatch,
        DenyReason::WrongNumber => pb::DenyReason::WrongNumber,
    }
}

/// The wire form of a state.
pub fn state_to_pb(state: &State) -> pb::ChallengeState {
    match state {
        State::Pending => pb::ChallengeState::Pending,
        State::Approved(_) => pb::ChallengeState::Approved,
        State::Denied(..) => pb::ChallengeState::Denied,
        State::FraudReported(_) => pb::ChallengeState::FraudReported,
        State::Expired => pb::ChallengeState::Expired,
        State::Cancelled => pb::ChallengeState::Cancelled,
    }
}

/// A login context as a phone may see it: without the backend's sign-in device key (a cookie id).
pub fn phone_context_to_pb(ctx: &LoginContext) -> pb::LoginContext {
    pb::LoginContext {
        sign_in_device_key: String::new(),
        ..context_to_pb(ctx)
    }
}

/// Known, new or unspecified on the wire.
pub fn familiarity_to_pb(f: crate::known::Familiarity) -> pb::Familiarity {
    match f {
        crate::known::Familiarity::Unspecified => pb::Familiarity::Unspecified,
        crate::known::Familiarity::Known => pb::Familiarity::Known,
        crate::known::Familiarity::New => pb::Familiarity::New,
    }
}

fn context_to_pb(ctx: &LoginContext) -> pb::LoginContext {
    pb::LoginContext {
        ip: ctx.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        location: ctx.location.clone(),
        user_agent: ctx.user_agent.clone(),
        signing_in_device_name: ctx.signing_in_device_name.clone(),
        signing_in_device_id: ctx
            .signing_in_device_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        sign_in_device_key: ctx.sign_in_device_key.clone(),
    }
}

/// The backend's view of a challenge.
pub fn challenge_to_pb(c: &Challenge) -> pb::Challenge {
    let (decided_by, deny_reason) = match &c.state {
        State::Approved(d) | State::FraudReported(d) => {
            (d.to_string(), pb::DenyReason::Unspecified)
        }
        State::Denied(d, r) => (d.to_string(), reason_to_pb(*r)),
        _ => (String::new(), pb::DenyReason::Unspecified),
    };
    pb::Challenge {
        challenge_id: c.id.to_string(),
        account_id: c.account.to_string(),
        state: state_to_pb(&c.state).into(),
        login_context: Some(context_to_pb(&c.context)),
        number_match_mode: mode_to_pb(c.number.mode).into(),
        number: c.number.number,
        targeted_device_ids: c.targets.iter().map(ToString::to_string).collect(),
        created_at_unix_ms: c.created_at_ms,
        expires_at_unix_ms: c.expires_at_ms,
        ended_at_unix_ms: c.ended_at_ms,
        decided_by_device_id: decided_by,
        deny_reason: deny_reason.into(),
        sequence: c.sequence,
        deliveries: c
            .targets
            .iter()
            .map(|d| {
                let none = (pb::Platform::Unspecified.into(), false);
                let (state, reason, (platform, fallback)) = match c.delivery(d) {
                    DeliveryState::Pending => (pb::DeliveryState::Pending, String::new(), none),
                    DeliveryState::Delivered(via) => {
                        (pb::DeliveryState::Delivered, String::new(), via_to_pb(via))
                    }
                    DeliveryState::Failed(reason) => (pb::DeliveryState::Failed, reason, none),
                    DeliveryState::PollOnly => (pb::DeliveryState::PollOnly, String::new(), none),
                };
                pb::DeviceDelivery {
                    device_id: d.to_string(),
                    state: state.into(),
                    reason,
                    platform,
                    fallback,
                }
            })
            .collect(),
    }
}

/// A phone's view of a challenge: never the number itself in mode TYPE.
pub fn device_challenge_to_pb(c: &Challenge) -> pb::DeviceChallenge {
    pb::DeviceChallenge {
        challenge_id: c.id.to_string(),
        state: state_to_pb(&c.state).into(),
        login_context: Some(phone_context_to_pb(&c.context)),
        number_match_mode: mode_to_pb(c.number.mode).into(),
        number_choices: c.number.choices.clone(),
        created_at_unix_ms: c.created_at_ms,
        expires_at_unix_ms: c.expires_at_ms,
        sign_in_device: familiarity_to_pb(c.context.familiar.device).into(),
        sign_in_place: familiarity_to_pb(c.context.familiar.place).into(),
    }
}

/// A snapshot event.
pub fn snapshot_to_pb(c: &Challenge, at_ms: i64) -> pb::ChallengeEvent {
    pb::ChallengeEvent {
        challenge_id: c.id.to_string(),
        sequence: c.sequence,
        at_unix_ms: at_ms,
        kind: Some(pb::challenge_event::Kind::Snapshot(challenge_to_pb(c))),
    }
}

/// Any other event.
pub fn event_to_pb(e: &Event) -> pb::ChallengeEvent {
    use pb::challenge_event::Kind;
    let kind = match &e.kind {
        EventKind::Delivered(d, via) => {
            let (platform, fallback) = via_to_pb(*via);
            Kind::Delivered(pb::Delivered {
                device_id: d.to_string(),
                platform,
                fallback,
            })
        }
        EventKind::DeliveryFailed(d, reason) => Kind::DeliveryFailed(pb::DeliveryFailed {
            device_id: d.to_string(),
            reason: reason.clone(),
        }),
        EventKind::Ended(State::Approved(d)) => Kind::Approved(pb::Approved {
            device_id: d.to_string(),
        }),
        EventKind::Ended(State::Denied(d, r)) => Kind::Denied(pb::Denied {
            device_id: d.to_string(),
            reason: reason_to_pb(*r).into(),
        }),
        EventKind::Ended(State::FraudReported(d)) => Kind::FraudReported(pb::FraudReported {
            device_id: d.to_string(),
        }),
        EventKind::Ended(State::Expired) => Kind::Expired(pb::Expired {}),
        EventKind::Ended(State::Cancelled | State::Pending) => Kind::Cancelled(pb::Cancelled {}),
    };
    pb::ChallengeEvent {
        challenge_id: e.challenge_id.to_string(),
        sequence: e.sequence,
        at_unix_ms: e.at_ms,
        kind: Some(kind),
    }
}

/// An assurance level as the proto names it.
pub fn assurance_to_pb(a: Assurance) -> pb::Assurance {
    match a {
        Assurance::None => pb::Assurance::None,
        Assurance::Software => pb::Assurance::Software,
        Assurance::AndroidTee => pb::Assurance::AndroidTee,
        Assurance::AndroidStrongBox => pb::Assurance::AndroidStrongbox,
        Assurance::AppleAppAttest => pb::Assurance::AppleAppAttest,
    }
}

/// `min_assurance`: unset is no requirement.
///
/// # Errors
/// `InvalidArgument` for a value the proto does not define.
pub fn min_assurance(field: &'static str, value: i32) -> Result<Assurance, Error> {
    match pb::Assurance::try_from(value) {
        Ok(pb::Assurance::Unspecified | pb::Assurance::None) => Ok(Assurance::None),
        Ok(pb::Assurance::Software) => Ok(Assurance::Software),
        Ok(pb::Assurance::AndroidTee) => Ok(Assurance::AndroidTee),
        Ok(pb::Assurance::AndroidStrongbox) => Ok(Assurance::AndroidStrongBox),
        Ok(pb::Assurance::AppleAppAttest) => Ok(Assurance::AppleAppAttest),
        Err(_) => Err(Error::invalid(field, format!("unknown value {value}"))),
    }
}

/// The backend's view of a device: no token, no key.
pub fn device_to_pb(d: &Device) -> pb::DeviceInfo {
    pb::DeviceInfo {
        device_id: d.id.to_string(),
        account_id: d.account.to_string(),
        platform: platform_to_pb(d.platform).into(),
        fallback_platform: d
            .fallback
            .as_ref()
            .map_or(pb::Platform::Unspecified, |f| platform_to_pb(f.platform))
            .into(),
        has_fallback_push_token: d.fallback.as_ref().is_some_and(|f| f.push_token.is_some()),
        app_id: d.app_id.clone(),
        display_name: d.display_name.clone(),
        key_algorithm: match d.key.algorithm() {
            KeyAlgorithm::EcdsaP256 => pb::KeyAlgorithm::EcdsaP256Sha256,
            KeyAlgorithm::Ed25519 => pb::KeyAlgorithm::Ed25519,
        }
        .into(),
        state: match d.state {
            DeviceState::Active => pb::DeviceState::Active,
            DeviceState::SuspectedClone => pb::DeviceState::SuspectedClone,
            DeviceState::Revoked => pb::DeviceState::Revoked,
        }
        .into(),
        created_at_unix_ms: d.created_at_ms,
        last_seen_at_unix_ms: d.last_seen_ms,
        counter: d.counter,
        has_push_token: d.push_token.is_some(),
        assurance: assurance_to_pb(d.attestation.assurance).into(),
        attested_app_id: d.attestation.app.clone(),
        verified_boot_state: d
            .attestation
            .boot
            .map_or(pb::VerifiedBootState::Unspecified, |b| match b {
                BootState::Verified => pb::VerifiedBootState::Verified,
                BootState::SelfSigned => pb::VerifiedBootState::SelfSigned,
                BootState::Unverified => pb::VerifiedBootState::Unverified,
                BootState::Failed => pb::VerifiedBootState::Failed,
            })
            .into(),
        // Set by ListDevices, which reads the account's authenticators.
        has_offline_code: false,
    }
}

/// An audit record on the wire.
pub fn audit_to_pb(a: &StoredAudit) -> pb::AuditEvent {
    use pb::AuditKind as K;
    let kind = match a.record.kind {
        AuditKind::EnrollmentCreated => K::EnrollmentCreated,
        AuditKind::DeviceEnrolled => K::DeviceEnrolled,
        AuditKind::DeviceRevoked => K::DeviceRevoked,
        AuditKind::PushTokenUpdated => K::PushTokenUpdated,
        AuditKind::KeyRotated => K::KeyRotated,
        AuditKind::PushTokenPruned => K::PushTokenPruned,
        AuditKind::ChallengeCreated => K::ChallengeCreated,
        AuditKind::PushDelivered => K::PushDelivered,
        AuditKind::PushFailed => K::PushFailed,
        AuditKind::ChallengeApproved => K::ChallengeApproved,
        AuditKind::ChallengeDenied => K::ChallengeDenied,
        AuditKind::FraudReported => K::FraudReported,
        AuditKind::ChallengeExpired => K::ChallengeExpired,
        AuditKind::ChallengeCancelled => K::ChallengeCancelled,
        AuditKind::RequestRefused => K::RequestRefused,
        AuditKind::RateLimited => K::RateLimited,
        AuditKind::CloneSuspected => K::CloneSuspected,
        AuditKind::NoticeSent => K::NoticeSent,
        AuditKind::SignInRevoked => K::SignInRevoked,
        AuditKind::CodeVerified => K::CodeVerified,
        AuditKind::CodeRefused => K::CodeRefused,
        AuditKind::AuthenticatorCreated => K::AuthenticatorCreated,
        AuditKind::KnownSignInsForgotten => K::KnownSignInsForgotten,
        AuditKind::AuthenticatorDeleted => K::AuthenticatorDeleted,
    };
    pb::AuditEvent {
        position: a.position.clone(),
        at_unix_ms: a.at_ms,
        account_id: a.record.account.to_string(),
        kind: kind.into(),
        actor: a.record.actor.to_string(),
        challenge_id: a
            .record
            .challenge
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        device_id: a
            .record
            .device
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        detail: a.record.detail.clone(),
    }
}

/// A security event on the wire.
pub fn security_to_pb(e: &SecurityEvent) -> pb::SecurityEvent {
    use pb::SecurityEventKind as K;
    pb::SecurityEvent {
        position: e.position.clone(),
        at_unix_ms: e.at_ms,
        account_id: e.account.to_string(),
        kind: match e.kind {
            SecurityKind::FraudReported => K::FraudReported,
            SecurityKind::CloneSuspected => K::CloneSuspected,
            SecurityKind::DeviceEnrolled => K::DeviceEnrolled,
            SecurityKind::DeviceRevoked => K::DeviceRevoked,
            SecurityKind::LimitTripped => K::LimitTripped,
            SecurityKind::SignInRevoked => K::SignInRevoked,
        }
        .into(),
        device_id: e
            .device
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        challenge_id: e
            .challenge
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        detail: e.detail.clone(),
    }
}
