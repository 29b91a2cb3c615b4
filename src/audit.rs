//! Audit records and security events: what happened to an account, who did it, and what the backend must
//! react to. Pure data; the store appends them in the same step as the change they describe.

use crate::challenge::{AccountId, ChallengeId, DeviceId};

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names say it; the proto documents each.
pub enum AuditKind {
    EnrollmentCreated,
    DeviceEnrolled,
    DeviceRevoked,
    PushTokenUpdated,
    KeyRotated,
    PushTokenPruned,
    ChallengeCreated,
    PushDelivered,
    PushFailed,
    ChallengeApproved,
    ChallengeDenied,
    FraudReported,
    ChallengeExpired,
    ChallengeCancelled,
    RequestRefused,
    RateLimited,
    CloneSuspected,
    NoticeSent,
    SignInRevoked,
    CodeVerified,
    CodeRefused,
    AuthenticatorCreated,
    KnownSignInsForgotten,
    AuthenticatorDeleted,
}

/// Who caused a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The identity backend, through the backend API.
    Backend,
    /// The relay itself (expiry, push outcomes).
    Relay,
    /// A device, through a signed request.
    Device(DeviceId),
    /// A request that named a device but failed authentication: nobody the relay can vouch for.
    Unauthenticated,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backend => f.write_str("backend"),
            Self::Relay => f.write_str("relay"),
            Self::Device(id) => write!(f, "device:{id}"),
            Self::Unauthenticated => f.write_str("unauthenticated"),
        }
    }
}

/// One audit record (its position and time are assigned by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The account it belongs to.
    pub account: AccountId,
    /// What happened.
    pub kind: AuditKind,
    /// Who did it.
    pub actor: Actor,
    /// The challenge concerned, if any.
    pub challenge: Option<ChallengeId>,
    /// The device concerned, if any.
    pub device: Option<DeviceId>,
    /// Short machine-readable detail.
    pub detail: String,
}

impl AuditRecord {
    /// A record with no challenge, device or detail yet.
    pub fn new(account: &AccountId, kind: AuditKind, actor: Actor) -> Self {
        Self {
            account: account.clone(),
            kind,
            actor,
            challenge: None,
            device: None,
            detail: String::new(),
        }
    }

    /// Names the challenge.
    pub fn challenge(mut self, id: &ChallengeId) -> Self {
        self.challenge = Some(id.clone());
        self
    }

    /// Names the device.
    pub fn device(mut self, id: &DeviceId) -> Self {
        self.device = Some(id.clone());
        self
    }

    /// Replaces the actor.
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    /// Adds the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// An audit record as stored: with its position and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAudit {
    /// Opaque, increasing per account.
    pub position: String,
    /// Store clock, Unix ms.
    pub at_ms: i64,
    /// The record.
    pub record: AuditRecord,
}

/// What the backend's security-event stream reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names say it; the proto documents each.
pub enum SecurityKind {
    FraudReported,
    CloneSuspected,
    DeviceEnrolled,
    DeviceRevoked,
    LimitTripped,
    SignInRevoked,
}

/// A security event as stored, with its global position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    /// Opaque, increasing across all accounts.
    pub position: String,
    /// Store clock, Unix ms.
    pub at_ms: i64,
    /// The account concerned.
    pub account: AccountId,
    /// What happened.
    pub kind: SecurityKind,
    /// The device concerned, if any.
    pub device: Option<DeviceId>,
    /// The challenge concerned, if any.
    pub challenge: Option<ChallengeId>,
    /// Short machine-readable detail.
    pub detail: String,
}
