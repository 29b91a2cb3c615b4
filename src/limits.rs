//! Push-bombing limits (DESIGN.md guarantee 6): at most N pending challenges per account, and a
//! cool-down that grows after every denied or unanswered challenge (10 s doubling to 1 h), resets on
//! approval, and becomes a long mute after a fraud report; token buckets on the creation rate per account
//! and per source address across accounts. Pure rules; each store applies them inside its create and
//! decide steps (the Redis scripts repeat them in Lua).

use crate::challenge::State;
use std::time::Duration;

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Pending challenges an account may have at once.
    pub max_pending: usize,
    /// At the pending cap, cancel the oldest pending challenge (ends CANCELLED) instead of refusing.
    pub supersede: bool,
    /// Cool-down after the first denied or unanswered challenge; doubles with each further one.
    pub cooldown_base: Duration,
    /// Longest cool-down.
    pub cooldown_max: Duration,
    /// How long new challenges are refused after a fraud report.
    pub fraud_mute: Duration,
    /// Challenges an account may be sent per minute, with a burst.
    pub account_rate: RateLimit,
    /// Challenges one sign-in source address (an IPv6 /64) may cause per minute, across accounts.
    pub source_rate: RateLimit,
}

/// A token bucket's settings: `per_minute` tokens refill continuously up to `burst`; 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Refill, tokens per minute.
    pub per_minute: u32,
    /// Capacity.
    pub burst: u32,
}

/// A token bucket's stored state: thousandths of a token, and when it was last taken from. Integer
/// arithmetic, so the Lua copy in create.lua and bucket.lua computes exactly the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Thousandths of a token.
    pub milli: i64,
    /// Store clock of the last take, Unix ms.
    pub at_ms: i64,
}

impl Bucket {
    /// Takes one token from `stored` (a full bucket when none): the new state, or the wait for one.
    pub fn take(stored: Option<Self>, now_ms: i64, limit: &RateLimit) -> Result<Self, Duration> {
        let cap = i64::from(limit.burst) * 1000;
        let per_min = i64::from(limit.per_minute.max(1));
        let milli = stored.map_or(cap, |b| {
            cap.min(b.milli + (now_ms - b.at_ms).max(0).saturating_mul(per_min) / 60)
        });
        if milli < 1000 {
            let wait = ((1000 - milli) * 60 + per_min - 1) / per_min;
            return Err(Duration::from_millis(wait.unsigned_abs()));
        }
        Ok(Self {
            milli: milli - 1000,
            at_ms: now_ms,
        })
    }
}

/// The key a sign-in source is limited under: the address, or its /64 for IPv6 (one subscriber's
/// allocation, which an attacker can rotate through freely).
pub fn source_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self {
            max_pending: 1,
            supersede: false,
            cooldown_base: Duration::from_secs(10),
            cooldown_max: Duration::from_secs(3600),
            fraud_mute: Duration::from_secs(3600),
            account_rate: RateLimit {
                per_minute: 20,
                burst: 10,
            },
            source_rate: RateLimit {
                per_minute: 300,
                burst: 100,
            },
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
    /// The account's creation-rate bucket is empty.
    AccountRate,
    /// The sign-in source's creation-rate bucket is empty.
    SourceRate,
}

impl LimitRefusal {
    /// Lower-case name for audit records, metrics and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooManyPending => "too_many_pending",
            Self::CoolingDown => "cooling_down",
            Self::Muted => "muted_after_fraud_report",
            Self::AccountRate => "account_rate",
            Self::SourceRate => "source_rate",
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

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limit = RateLimit {
            per_minute: 60,
            burst: 3,
        };
        let mut b = None;
        for _ in 0..3 {
            b = Some(Bucket::take(b, 0, &limit).expect("within the burst"));
        }
        assert_eq!(
            Bucket::take(b, 0, &limit),
            Err(Duration::from_millis(1_000))
        );
        assert_eq!(
            Bucket::take(b, 400, &limit),
            Err(Duration::from_millis(600))
        );
        let refilled = Bucket::take(b, 1_000, &limit).expect("one token a second");
        assert_eq!(refilled.milli, 0);
        assert!(Bucket::take(Some(refilled), 1_000, &limit).is_err());
    }

    #[test]
    fn ipv6_sources_are_limited_per_64() {
        let a = source_key("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = source_key("2001:db8:1:2:bbbb::9".parse().expect("ip"));
        assert_eq!(a, b);
        assert_eq!(
            source_key("203.0.113.7".parse().expect("ip")),
            "203.0.113.7"
        );
    }
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
