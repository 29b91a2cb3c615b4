//! Offline factors: the TOTP authenticators an account has (one per enrolled device that asked for a
//! code, and standalone ones made by the backend for an authenticator app), and what checking a code
//! decided. Pure data and rules; `totp` computes codes, `sealing` keeps their secrets, the stores keep
//! the records and run [`CodeCheck`]'s step atomically.

use crate::challenge::{AccountId, DeviceId};
use std::time::Duration;

/// Standalone authenticators (not bound to a device) an account may have, pending ones included.
pub const MAX_STANDALONE: usize = 4;
/// How long a standalone authenticator waits for its first correct code.
pub const ACTIVATION_TTL: Duration = Duration::from_secs(600);
/// Every this many wrong or replayed codes in a row (no accepted code between them) raise a
/// LIMIT_TRIPPED security event `code_failures_consecutive`: slow guessing that stays within the budget's
/// refill is still reported.
pub const STREAK_ALERT: u32 = 10;
/// Detail of that security event.
pub const STREAK_DETAIL: &str = "code_failures_consecutive";
/// Prefix of a standalone authenticator's id.
pub const STANDALONE_PREFIX: &str = "au_";

/// A TOTP secret held for an account, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticator {
    /// The device's id when bound to one; `au_…` for a standalone authenticator.
    pub id: String,
    /// The device it lives on; `None` for a standalone authenticator.
    pub device: Option<DeviceId>,
    /// The secret, sealed under the `sealing` context [`seal_context`].
    pub sealed: String,
    /// When made, store clock, Unix ms.
    pub created_ms: i64,
    /// A standalone authenticator not activated yet, and until when it may be (Unix ms).
    pub pending_until_ms: Option<i64>,
    /// The last time step a code was accepted for (-1: none): no step at or before it is accepted again.
    pub used_step: i64,
}

impl Authenticator {
    /// Whether its codes count at `now_ms` (bound authenticators also need their device active, which
    /// the caller checks).
    pub fn usable(&self, now_ms: i64) -> bool {
        self.pending_until_ms.is_none_or(|until| now_ms < until)
    }
}

/// A fresh standalone authenticator id.
pub fn standalone_id() -> String {
    use rand::Rng;
    let bytes: [u8; 10] = rand::thread_rng().r#gen();
    format!(
        "{STANDALONE_PREFIX}{}",
        data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
    )
}

/// What a standalone authenticator's secret is sealed to: the account and the authenticator, so that a
/// sealed value copied onto another record does not open.
pub fn seal_context(account: &AccountId, id: &str) -> String {
    format!("totp|{account}|{id}")
}

/// What a device's secret is sealed to: the device id, which is issued before the enrollment step and
/// belongs to one account (a device's code counts only among its own account's active devices).
pub fn device_seal_context(device: &DeviceId) -> String {
    format!("totp|device|{device}")
}

/// The sealing context of a stored authenticator.
pub fn context_of(account: &AccountId, a: &Authenticator) -> String {
    match &a.device {
        Some(device) => device_seal_context(device),
        None => seal_context(account, &a.id),
    }
}

/// A code the relay found to match, handed to the store's step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeMatch {
    /// The authenticator it matched.
    pub id: String,
    /// Its device, if bound.
    pub device: Option<DeviceId>,
    /// The time step it matched.
    pub step: i64,
}

/// What checking a code decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// Accepted: the authenticator and its device; the step is now used.
    Accepted(CodeMatch),
    /// The code matched a step already used (or older): refused, counted as a wrong code.
    Replayed,
    /// No authenticator of the account has this code now: refused, counted.
    Wrong,
    /// Too many wrong codes: refused without looking, until the budget has room.
    Limited {
        /// Until then.
        wait: Duration,
        /// This attempt tripped the budget (a security event was raised).
        first_trip: bool,
    },
}

impl CodeCheck {
    /// Lower-case name for metrics, audit details and the CLI.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accepted(_) => "accepted",
            Self::Replayed => "replayed",
            Self::Wrong => "wrong",
            Self::Limited { .. } => "limited",
        }
    }
}

/// Whether `m` may be accepted against `stored`'s last used step.
pub fn fresh(m: &CodeMatch, used_step: i64) -> bool {
    m.step > used_step
}
