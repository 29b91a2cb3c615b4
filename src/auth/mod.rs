//! Device authentication: signature checks over the exact payload bytes, the counter rule that exposes
//! cloned keys, and the timestamp window. Pure: the caller supplies the stored key, counter and clock.

pub mod key;

pub use key::{KeyAlgorithm, PublicKey};

/// Why a device request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The public key bytes are not a key of the stated algorithm.
    #[error("public key is malformed")]
    MalformedKey,
    /// The signature bytes cannot be decoded.
    #[error("signature is malformed")]
    MalformedSignature,
    /// The signature does not verify with the registered key.
    #[error("signature does not verify")]
    BadSignature,
    /// No such device.
    #[error("unknown device")]
    UnknownDevice,
    /// The envelope names one device and the signed payload another.
    #[error("device id does not match the signed payload")]
    DeviceMismatch,
    /// The signed timestamp is outside the accepted window.
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    /// The device was revoked.
    #[error("device is revoked")]
    Revoked,
    /// The device is suspected to be cloned.
    #[error("device is suspected cloned")]
    SuspectedClone,
    /// The counter did not increase: the device is now suspected cloned.
    #[error("counter did not increase; device is suspected cloned")]
    CounterNotIncreasing,
    /// The key asked to switch back to the push token it just left: two phones share one key, and the
    /// device is now suspected cloned.
    #[error("push token switched back; device is suspected cloned")]
    TokenFlip,
}

impl AuthError {
    /// Short machine-readable reason for audit records and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedKey => "malformed_key",
            Self::MalformedSignature => "malformed_signature",
            Self::BadSignature => "bad_signature",
            Self::UnknownDevice => "unknown_device",
            Self::DeviceMismatch => "device_mismatch",
            Self::StaleTimestamp => "stale_timestamp",
            Self::Revoked => "revoked",
            Self::SuspectedClone => "suspected_clone",
            Self::CounterNotIncreasing => "counter_replayed",
            Self::TokenFlip => "token_flip",
        }
    }
}

/// How long after a push-token change a switch back to the previous token counts as two phones.
pub const TOKEN_FLIP_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// True when a device asks for `new` while it left that very token (`previous`, at `changed_at_ms`)
/// less than a day ago. Providers never hand a token back, so this is two phones with one key taking
/// turns at registering their own token.
pub fn is_token_flip(previous: Option<&str>, changed_at_ms: i64, new: &str, now_ms: i64) -> bool {
    previous.is_some_and(|p| !p.is_empty() && p == new)
        && now_ms.saturating_sub(changed_at_ms) < TOKEN_FLIP_WINDOW_MS
}

/// True when `presented` may be accepted after `last` (strictly greater, as WebAuthn's signCount).
pub fn counter_is_fresh(last: u64, presented: u64) -> bool {
    presented > last
}

/// Checks the signed timestamp against the relay's clock.
///
/// # Errors
/// [`AuthError::StaleTimestamp`] when they differ by more than `window_ms`.
pub fn check_timestamp(signed_ms: i64, now_ms: i64, window_ms: i64) -> Result<(), AuthError> {
    if signed_ms.abs_diff(now_ms) > window_ms.unsigned_abs() {
        return Err(AuthError::StaleTimestamp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_back_to_the_token_just_left_is_a_flip_only_within_a_day() {
        assert!(is_token_flip(Some("a"), 1_000, "a", 2_000));
        assert!(!is_token_flip(Some("a"), 1_000, "b", 2_000));
        assert!(!is_token_flip(None, 1_000, "a", 2_000));
        assert!(!is_token_flip(Some(""), 1_000, "", 2_000));
        assert!(!is_token_flip(Some("a"), 0, "a", TOKEN_FLIP_WINDOW_MS));
    }

    #[test]
    fn counters_must_strictly_increase() {
        assert!(counter_is_fresh(0, 1));
        assert!(counter_is_fresh(5, 100));
        assert!(!counter_is_fresh(5, 5));
        assert!(!counter_is_fresh(5, 4));
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        assert_eq!(check_timestamp(1_000, 1_000, 300_000), Ok(()));
        assert_eq!(check_timestamp(301_000, 1_000, 300_000), Ok(()));
        assert_eq!(
            check_timestamp(301_001, 1_000, 300_000),
            Err(AuthError::StaleTimestamp)
        );
        assert_eq!(
            check_timestamp(i64::MIN, 1_000, 300_000),
            Err(AuthError::StaleTimestamp)
        );
    }
}
