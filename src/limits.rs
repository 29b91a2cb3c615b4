//! Push-bombing limits (DESIGN.md guarantee 6): at most N pending challenges per account, and a
//! cool-down that grows after every denied or unanswered challenge (10 s doubling to 1 h), resets on
//! approval, and becomes a long mute after a fraud report. Pure rules; each store applies them inside
//! its create and decide steps (the Redis scripts repeat them in Lua).

use crate::challenge::State;
use std::time::Duration;

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Pending challenges an account may have at once.
    pub max_pending: usize,
    /// Cool-down after the first denied or unanswered challenge; doubles with each further one.
    pub cooldown_base: Duration,
    /// Longest cool-down.
    pub cooldown_max: Duration,
    /// How long new challenges are refused after a fraud report.
    pub fraud_mute: Duration,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self {
            max_pending: 1,
            cooldown_base: Duration::from_secs(10),
            cooldown_max: Duration::from_secs(3600),
            fraud_mute: Duration::from_secs(3600),
        }
    }
}

/// An account's cool-down: how many denials or expiries in a row, and until when new challenges wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cooldown {
    /// Denied or unanswered challenges since the last approval.
    pub level: u32,
    /// New challenges are refused before this store time, Unix ms.
    pub until_ms: i64,
    /// The wait comes from a fraud report.
    pub muted: bool,
}

impl Cooldown {
    /// Whether a new challenge must wait at `now_ms`, and for how long.
    pub fn check(&self, now_ms: i64) -> Option<(LimitRefusal, Duration)> {
        (now_ms < self.until_ms).then(|| {
            let reason = if self.muted {
                LimitRefusal::Muted
            } else {
                LimitRefusal::CoolingDown
            };
            (
                reason,
                Duration::from_millis((self.until_ms - now_ms).unsigned_abs()),
            )
        })
    }
}

/// Why a new challenge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    /// The account has as many pending challenges as allowed.
    TooManyPending,
    /// The account is cooling down after denials or expiries.
    CoolingDown,
    /// The account is muted after a fraud report.
    Muted,
}

impl LimitRefusal {
    /// Lower-case name for audit records, metrics and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooManyPending => "too_many_pending",
            Self::CoolingDown => "cooling_down",
            Self::Muted => "muted_after_fraud_report",
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Cooldown {
    /// The cool-down after a challenge ended in `state` at `now_ms`.
    pub fn after(self, state: &State, now_ms: i64, policy: &LimitPolicy) -> Self {
        match state {
            State::Approved(_) => Self::default(),
            State::Denied(..) | State::Expired => {
                let level = self.level.saturating_add(1);
                let wait = ms(policy.cooldown_base)
                    .saturating_mul(1_i64 << (level - 1).min(20))
                    .min(ms(policy.cooldown_max));
                Self {
                    level,
                    until_ms: self.until_ms.max(now_ms.saturating_add(wait)),
                    muted: self.muted,
                }
            }
            State::FraudReported(_) => {
                let until_ms = self
                    .until_ms
                    .max(now_ms.saturating_add(ms(policy.fraud_mute)));
                Self {
                    level: self.level.saturating_add(1),
                    until_ms,
                    muted: true,
                }
            }
            State::Cancelled | State::Pending => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{AccountId, DenyReason, DeviceId};

    #[test]
    fn denials_double_the_cooldown_up_to_the_cap_and_an_approval_resets_it() {
        let policy = LimitPolicy::default();
        let device = DeviceId::generate(&AccountId::parse("a").expect("valid"));
        let denied = State::Denied(device.clone(), DenyReason::NotMe);
        let mut c = Cooldown::default();
        let mut waits = Vec::new();
        for _ in 0..12 {
            c = c.after(&denied, 0, &policy);
            waits.push(c.until_ms);
        }
        assert_eq!(&waits[..4], &[10_000, 20_000, 40_000, 80_000]);
        assert_eq!(waits[11], 3_600_000);
        assert_eq!(
            c.after(&State::Approved(device), 5, &policy),
            Cooldown::default()
        );
        assert_eq!(
            Cooldown::default().after(&State::Cancelled, 5, &policy),
            Cooldown::default()
        );
    }
}
