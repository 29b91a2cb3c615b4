//! The audit and security-event streams: per-account audit trails (capped with MAXLEN ~) and the one
//! global security stream, with their opaque positions (stream ids).

use super::conn::Conn;
use super::{keys, unavailable};
use crate::audit::{Actor, AuditKind, AuditRecord, SecurityEvent, SecurityKind, StoredAudit};
use crate::challenge::{AccountId, ChallengeId, DeviceId};
use crate::store::{AuditPage, StoreError, memory, trail};
use ::redis::{AsyncCommands, Value};

/// Security events kept in the global stream.
const SECURITY_CAP: usize = memory::SECURITY_CAP;

pub async fn append_security(
    conn: &mut Conn,
    account: &AccountId,
    kind: SecurityKind,
    device: Option<&DeviceId>,
    challenge: Option<&ChallengeId>,
    detail: &str,
) {
    let kind = match kind {
        SecurityKind::FraudReported => "fraud_reported",
        SecurityKind::CloneSuspected => "clone_suspected",
        SecurityKind::DeviceEnrolled => "device_enrolled",
        SecurityKind::DeviceRevoked => "device_revoked",
        SecurityKind::LimitTripped => "limit_tripped",
        SecurityKind::SignInRevoked => "sign_in_revoked",
    };
    let device = device.map(ToString::to_string).unwrap_or_default();
    let challenge = challenge.map(ToString::to_string).unwrap_or_default();
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(keys::SECURITY)
        .arg("MAXLEN")
        .arg("~")
        .arg(SECURITY_CAP)
        .arg("*");
    cmd.arg("account")
        .arg(account.as_str())
        .arg("kind")
        .arg(kind)
        .arg("device")
        .arg(device);
    cmd.arg("challenge")
        .arg(challenge)
        .arg("detail")
        .arg(detail);
    if let Err(error) = cmd.query_async::<Value>(conn).await {
        tracing::error!(%error, "could not append a security event");
    }
}

pub async fn append_audit(
    conn: &mut Conn,
    record: AuditRecord,
    now: i64,
) -> Result<(), StoreError> {
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(keys::audit(&record.account))
        .arg("MAXLEN")
        .arg("~")
        .arg(memory::AUDIT_CAP)
        .arg("*");
    cmd.arg("at")
        .arg(now)
        .arg("kind")
        .arg(audit_kind_name(record.kind))
        .arg("actor")
        .arg(record.actor.to_string());
    cmd.arg("challenge").arg(
        record
            .challenge
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    cmd.arg("device").arg(
        record
            .device
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    cmd.arg("detail").arg(&record.detail);
    let _: Value = cmd.query_async(conn).await.map_err(unavailable)?;
    Ok(())
}

/// A page of the account's real records and refusal trail merged (store/trail.rs): both read in one
/// round trip (same slot).
pub async fn list_audit(
    conn: &mut Conn,
    account: &AccountId,
    before: Option<&str>,
    limit: usize,
) -> Result<AuditPage, StoreError> {
    let cursor = trail::Cursor::parse(before, is_stream_id)?;
    let end = |p: &Option<String>| {
        p.as_ref()
            .map_or_else(|| "+".to_owned(), |p| format!("({p}"))
    };
    let mut pipe = ::redis::pipe();
    pipe.xrevrange_count(keys::audit(account), end(&cursor.main), "-", limit + 1)
        .xrevrange_count(keys::refused(account), end(&cursor.refused), "-", limit + 1);
    let (main, refused): (
        ::redis::streams::StreamRangeReply,
        ::redis::streams::StreamRangeReply,
    ) = pipe.query_async(conn).await.map_err(unavailable)?;
    Ok(trail::merge(
        records(account, &main)?,
        records(account, &refused)?,
        limit,
        cursor,
    ))
}

fn records(
    account: &AccountId,
    reply: &::redis::streams::StreamRangeReply,
) -> Result<Vec<StoredAudit>, StoreError> {
    let mut records = Vec::new();
    for entry in &reply.ids {
        let get = |f: &str| entry.get::<String>(f).unwrap_or_default();
        let actor = get("actor");
        let actor = match actor.strip_prefix("device:") {
            Some(id) => DeviceId::parse(id)
                .map(Actor::Device)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None if actor == "relay" => Actor::Relay,
            None if actor == "unauthenticated" => Actor::Unauthenticated,
            None => Actor::Backend,
        };
        let record = AuditRecord {
            account: account.clone(),
            kind: audit_kind(&get("kind"))?,
            actor,
            challenge: ChallengeId::parse(&get("challenge")).ok(),
            device: DeviceId::parse(&get("device")).ok(),
            detail: get("detail"),
        };
        records.push(StoredAudit {
            position: entry.id.clone(),
            at_ms: get("at").parse().unwrap_or_default(),
            record,
        });
    }
    Ok(records)
}

pub async fn read_security(
    conn: &mut Conn,
    after: Option<&str>,
    limit: usize,
    wait: std::time::Duration,
) -> Result<Vec<SecurityEvent>, StoreError> {
    let after = match after {
        None => "0-0".to_owned(),
        Some(p) if is_stream_id(p) => p.to_owned(),
        Some(_) => return Err(StoreError::InvalidPosition),
    };
    // Polling instead of XREAD BLOCK: a blocking read would stall the shared multiplexed connection.
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let opts = ::redis::streams::StreamReadOptions::default().count(limit);
        let reply: Option<::redis::streams::StreamReadReply> = conn
            .xread_options(&[keys::SECURITY], &[&after], &opts)
            .await
            .map_err(unavailable)?;
        let events = reply.map(security_entries).transpose()?.unwrap_or_default();
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(events);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100).min(wait)).await;
    }
}

fn is_stream_id(p: &str) -> bool {
    let mut parts = p.split('-');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()))
}

fn security_entries(
    reply: ::redis::streams::StreamReadReply,
) -> Result<Vec<SecurityEvent>, StoreError> {
    let mut out = Vec::new();
    for key in reply.keys {
        for entry in key.ids {
            let get = |f: &str| entry.get::<String>(f).unwrap_or_default();
            let kind = match get("kind").as_str() {
                "fraud_reported" => SecurityKind::FraudReported,
                "clone_suspected" => SecurityKind::CloneSuspected,
                "device_enrolled" => SecurityKind::DeviceEnrolled,
                "device_revoked" => SecurityKind::DeviceRevoked,
                "sign_in_revoked" => SecurityKind::SignInRevoked,
                _ => SecurityKind::LimitTripped,
            };
            let at_ms = entry
                .id
                .split('-')
                .next()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_default();
            out.push(SecurityEvent {
                position: entry.id.clone(),
                at_ms,
                account: AccountId::parse(&get("account"))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                kind,
                device: DeviceId::parse(&get("device")).ok(),
                challenge: ChallengeId::parse(&get("challenge")).ok(),
                detail: get("detail"),
            });
        }
    }
    Ok(out)
}

const AUDIT_KINDS: [(AuditKind, &str); 24] = [
    (AuditKind::EnrollmentCreated, "enrollment_created"),
    (AuditKind::DeviceEnrolled, "device_enrolled"),
    (AuditKind::DeviceRevoked, "device_revoked"),
    (AuditKind::PushTokenUpdated, "push_token_updated"),
    (AuditKind::KeyRotated, "key_rotated"),
    (AuditKind::PushTokenPruned, "push_token_pruned"),
    (AuditKind::ChallengeCreated, "challenge_created"),
    (AuditKind::PushDelivered, "push_delivered"),
    (AuditKind::PushFailed, "push_failed"),
    (AuditKind::ChallengeApproved, "challenge_approved"),
    (AuditKind::ChallengeDenied, "challenge_denied"),
    (AuditKind::FraudReported, "fraud_reported"),
    (AuditKind::ChallengeExpired, "challenge_expired"),
    (AuditKind::ChallengeCancelled, "challenge_cancelled"),
    (AuditKind::RequestRefused, "request_refused"),
    (AuditKind::RateLimited, "rate_limited"),
    (AuditKind::CloneSuspected, "clone_suspected"),
    (AuditKind::NoticeSent, "notice_sent"),
    (AuditKind::SignInRevoked, "sign_in_revoked"),
    (AuditKind::CodeVerified, "code_verified"),
    (AuditKind::CodeRefused, "code_refused"),
    (AuditKind::AuthenticatorCreated, "authenticator_created"),
    (AuditKind::KnownSignInsForgotten, "known_sign_ins_forgotten"),
    (AuditKind::AuthenticatorDeleted, "authenticator_deleted"),
];

fn audit_kind_name(kind: AuditKind) -> &'static str {
    AUDIT_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("unknown", |(_, n)| n)
}

fn audit_kind(name: &str) -> Result<AuditKind, StoreError> {
    AUDIT_KINDS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(k, _)| *k)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown audit kind {name}")))
}
