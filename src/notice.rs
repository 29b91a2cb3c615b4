//! Notices: pushes that ask no decision. The owner's other devices learn of a fraud report, a suspected
//! clone, a newly enrolled device, or a sign-in the backend let through, and may undo the last three with
//! one signed tap. As with challenges, the push carries only the notice id; the phone fetches the rest
//! over the signed device API (DESIGN.md guarantee 7). Pure data and rules.

use crate::challenge::{AccountId, ChallengeId, DeviceId, LoginContext, NoticeId};
use std::time::Duration;

/// How long a notice can be fetched and acted on.
pub const NOTICE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Notices kept per account for `ListNotices`; older ones drop off.
pub const NOTICES_PER_ACCOUNT: usize = 50;
/// Longest `sign_in_id` a backend may attach, in bytes.
pub const MAX_SIGN_IN_ID_LEN: usize = 128;

/// What a notice tells the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The backend let a sign-in through (SendSignInNotice).
    SignIn,
    /// A device was enrolled on the account.
    NewDevice,
    /// A device of the account reported a sign-in as fraud.
    FraudReported,
    /// A device of the account is suspected cloned and is refused from now on.
    CloneSuspected,
}

impl NoticeKind {
    /// Lower-case name for storage, audit details and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::NewDevice => "new_device",
            Self::FraudReported => "fraud_reported",
            Self::CloneSuspected => "clone_suspected",
        }
    }

    /// The kind a stored name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::SignIn,
            Self::NewDevice,
            Self::FraudReported,
            Self::CloneSuspected,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// A notice as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Opaque id (carries the account's routing tag).
    pub id: NoticeId,
    /// Whose devices it went to.
    pub account: AccountId,
    /// What it tells.
    pub kind: NoticeKind,
    /// Store clock, Unix ms.
    pub created_at_ms: i64,
    /// After this it is gone.
    pub expires_at_ms: i64,
    /// The devices it was pushed to; only they may fetch it or act on it.
    pub targets: Vec<DeviceId>,
    /// The device it is about: the new one, the suspected clone, or the one that reported fraud.
    pub subject: Option<DeviceId>,
    /// The challenge reported as fraud.
    pub challenge: Option<ChallengeId>,
    /// The sign-in (for `SignIn`): who, from where, when, as the backend described it.
    pub context: LoginContext,
    /// The backend's own reference for the sign-in's session, echoed in the revoke security event.
    pub sign_in_id: String,
}

/// A notice to send: what it says and which devices must not get it.
#[derive(Debug, Clone)]
pub struct NoticeDraft {
    /// Whose devices get it.
    pub account: AccountId,
    /// What it tells.
    pub kind: NoticeKind,
    /// The device it is about (never notified of itself).
    pub subject: Option<DeviceId>,
    /// The challenge reported as fraud.
    pub challenge: Option<ChallengeId>,
    /// The sign-in it tells of.
    pub context: LoginContext,
    /// The backend's reference for the sign-in.
    pub sign_in_id: String,
}

impl NoticeDraft {
    /// A notice of `kind` about `subject`.
    pub fn about(account: &AccountId, kind: NoticeKind, subject: &DeviceId) -> Self {
        Self {
            account: account.clone(),
            kind,
            subject: Some(subject.clone()),
            challenge: None,
            context: LoginContext::default(),
            sign_in_id: String::new(),
        }
    }

    /// The notice this draft becomes, sent to `targets` at `now_ms`.
    pub fn into_notice(self, id: NoticeId, targets: Vec<DeviceId>, now_ms: i64) -> Notice {
        Notice {
            id,
            account: self.account,
            kind: self.kind,
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms()),
            targets,
            subject: self.subject,
            challenge: self.challenge,
            context: self.context,
            sign_in_id: self.sign_in_id,
        }
    }

    /// Whether `device` must not be told: it is what the notice is about, or the device signing in.
    pub fn skips(&self, device: &DeviceId) -> bool {
        Some(device) == self.subject.as_ref()
            || Some(device) == self.context.signing_in_device_id.as_ref()
    }
}

/// [`NOTICE_TTL`] in ms.
pub fn ttl_ms() -> i64 {
    i64::try_from(NOTICE_TTL.as_millis()).unwrap_or(i64::MAX)
}

/// What a one-tap revoke on a notice does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Revoke this device of the account (the new device, or the suspected clone).
    Device(DeviceId),
    /// Tell the backend to end this sign-in's session (a security event carrying `sign_in_id`).
    SignIn(String),
}

/// Why a notice cannot be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// Unknown, expired, or not sent to this device (not told apart, so ids cannot be probed).
    #[error("notice not found")]
    NotFound,
    /// This kind of notice has nothing to revoke (a fraud report already stopped its sign-in).
    #[error("this notice has nothing to revoke")]
    NothingToRevoke,
    /// A device may not revoke itself through a notice about itself.
    #[error("a device cannot revoke itself from a notice")]
    SelfRevoke,
}

impl Notice {
    /// Whether `device` of `account` may see this notice.
    pub fn visible_to(&self, account: &AccountId, device: &DeviceId) -> bool {
        &self.account == account && self.targets.contains(device)
    }

    /// Whether a revoke by `device` (which may see the notice) would do something.
    pub fn revocable_by(&self, device: &DeviceId) -> bool {
        match self.kind {
            NoticeKind::SignIn => true,
            NoticeKind::NewDevice | NoticeKind::CloneSuspected => {
                self.subject.as_ref().is_some_and(|s| s != device)
            }
            NoticeKind::FraudReported => false,
        }
    }

    /// What a tap on "revoke" by `device` does, or why it cannot.
    ///
    /// # Errors
    /// [`NoticeError`] for a notice the device may not see, one with nothing to revoke, or a device
    /// revoking itself.
    pub fn revocation(
        &self,
        account: &AccountId,
        device: &DeviceId,
        now_ms: i64,
    ) -> Result<Revocation, NoticeError> {
        if !self.visible_to(account, device) || now_ms >= self.expires_at_ms {
            return Err(NoticeError::NotFound);
        }
        match (self.kind, &self.subject) {
            (NoticeKind::SignIn, _) => Ok(Revocation::SignIn(self.sign_in_id.clone())),
            (NoticeKind::NewDevice | NoticeKind::CloneSuspected, Some(subject)) => {
                if subject == device {
                    Err(NoticeError::SelfRevoke)
                } else {
                    Ok(Revocation::Device(subject.clone()))
                }
            }
            _ => Err(NoticeError::NothingToRevoke),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: NoticeKind, subject: Option<DeviceId>, targets: Vec<DeviceId>) -> Notice {
        let account = AccountId::parse("a").expect("valid");
        Notice {
            id: NoticeId::generate(&account),
            account,
            kind,
            created_at_ms: 0,
            expires_at_ms: 1_000,
            targets,
            subject,
            challenge: None,
            context: LoginContext::default(),
            sign_in_id: "session-7".into(),
        }
    }

    #[test]
    fn only_targeted_devices_may_revoke_and_only_what_the_notice_is_about() {
        let account = AccountId::parse("a").expect("valid");
        let (old, new) = (DeviceId::generate(&account), DeviceId::generate(&account));
        let enrolled = notice(NoticeKind::NewDevice, Some(new.clone()), vec![old.clone()]);
        assert_eq!(
            enrolled.revocation(&account, &old, 10),
            Ok(Revocation::Device(new.clone()))
        );
        assert_eq!(
            enrolled.revocation(&account, &new, 10),
            Err(NoticeError::NotFound)
        );
        assert_eq!(
            enrolled.revocation(&account, &old, 1_000),
            Err(NoticeError::NotFound),
            "expired"
        );
        let other = AccountId::parse("b").expect("valid");
        assert_eq!(
            enrolled.revocation(&other, &old, 10),
            Err(NoticeError::NotFound)
        );
        let fraud = notice(
            NoticeKind::FraudReported,
            Some(new.clone()),
            vec![old.clone()],
        );
        assert_eq!(
            fraud.revocation(&account, &old, 10),
            Err(NoticeError::NothingToRevoke)
        );
        let sign_in = notice(NoticeKind::SignIn, None, vec![old.clone()]);
        assert_eq!(
            sign_in.revocation(&account, &old, 10),
            Ok(Revocation::SignIn("session-7".into()))
        );
        let own = notice(
            NoticeKind::CloneSuspected,
            Some(old.clone()),
            vec![old.clone()],
        );
        assert_eq!(
            own.revocation(&account, &old, 10),
            Err(NoticeError::SelfRevoke)
        );
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [
            NoticeKind::SignIn,
            NoticeKind::NewDevice,
            NoticeKind::FraudReported,
            NoticeKind::CloneSuspected,
        ] {
            assert_eq!(NoticeKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(NoticeKind::from_name("other"), None);
    }
}
