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
    /// Device requests that fail authentication and are recorded, per claimed device id.
    pub device_auth_failures: RateLimit,
    /// Device requests that fail authentication and are recorded, per peer address (an IPv6 /64).
    pub source_auth_failures: RateLimit,
    /// Wrong or replayed offline codes per account, before codes are refused unseen.
    pub code_failures: RateLimit,
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
    /// Thousandths of a token in `stored` (a full bucket when none) at `now_ms`.
    pub fn level(stored: Option<Self>, now_ms: i64, limit: &RateLimit) -> i64 {
        let cap = i64::from(limit.burst) * 1000;
        let per_min = i64::from(limit.per_minute.max(1));
        stored.map_or(cap, |b| {
            cap.min(b.milli + (now_ms - b.at_ms).max(0).saturating_mul(per_min) / 60)
        })
    }

    /// Takes one token from `stored` (a full bucket when none): the new state, or the wait for one.
    pub fn take(stored: Option<Self>, now_ms: i64, limit: &RateLimit) -> Result<Self, Duration> {
        let per_min = i64::from(limit.per_minute.max(1));
        let milli = Self::level(stored, now_ms, limit);
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
            device_auth_failures: RateLimit {
                per_minute: 10,
                burst: 10,
            },
            source_auth_failures: RateLimit {
                per_minute: 60,
                burst: 60,
            },
            code_failures: RateLimit {
                per_minute: 1,
                burst: 5,
            },
        }
    }
}

/// The budget of recorded authentication failures of one claimed device id or one peer address: a
/// token bucket ([`Bucket`]'s arithmetic) and whether it has tripped since it was last full.
///
/// Why a budget and not a record per failure: device ids are not secrets, so anyone can send requests
/// that name a real device and fail its signature check. Each recorded failure costs the account a
/// record; the budget bounds their rate, and they go to a trail of their own (capped apart from the
/// account's real records) so no number of them can push a real record out. It never refuses a request
/// that authenticates: it only decides what a failed one costs the record, so an attacker who knows a
/// device id cannot lock its owner out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureBudget {
    /// The bucket's state.
    pub bucket: Bucket,
    /// The budget ran out since the bucket was last full: one trip per burst, not per request.
    pub tripped: bool,
}

/// What a budget says of one more authentication failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Within the budget: record it.
    Record,
    /// Over the budget: refuse it RESOURCE_EXHAUSTED, record nothing but the trip (`first_trip`).
    Limited {
        /// Until the budget has room for one more.
        wait: Duration,
        /// The budget just ran out (it had not tripped since it was last full).
        first_trip: bool,
    },
}

impl FailureBudget {
    /// One more failure at `now_ms`: the budget's new state (`None`: unchanged) and the verdict. A
    /// refusal keeps the bucket as it is (its refill is computed from the last take) and only marks the
    /// trip; the trip is forgotten once the bucket is full again.
    pub fn take(
        stored: Option<Self>,
        now_ms: i64,
        limit: &RateLimit,
    ) -> (Option<Self>, FailureVerdict) {
        let full =
            Bucket::level(stored.map(|s| s.bucket), now_ms, limit) >= i64::from(limit.burst) * 1000;
        let tripped = stored.is_some_and(|s| s.tripped) && !full;
        match Bucket::take(stored.map(|s| s.bucket), now_ms, limit) {
            Ok(bucket) => (Some(Self { bucket, tripped }), FailureVerdict::Record),
            Err(wait) => {
                let state = stored.map(|s| Self {
                    bucket: s.bucket,
                    tripped: true,
                });
                (
                    state,
                    FailureVerdict::Limited {
                        wait,
                        first_trip: !tripped,
                    },
                )
            }
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
    /// Too many requests naming one device failed authentication.
    DeviceAuthFailures,
    /// Too many device requests from one peer address failed authentication.
    SourceAuthFailures,
    /// Too many wrong offline codes for the account.
    CodeFailures,
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
            Self::DeviceAuthFailures => "device_auth_failures",
            Self::SourceAuthFailures => "source_auth_failures",
            Self::CodeFailures => "code_failures",
        }
    }
}

/// Whole seconds to wait before retrying, rounded up and never 0: the `retry-after` header, the
/// message and `StreamError.retry_after_seconds` all say this number.
pub fn retry_after_secs(after: Duration) -> u64 {
    after
        .as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
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
    fn a_failure_budget_trips_once_per_burst_and_forgets_once_full_again() {
        let limit = RateLimit {
            per_minute: 60,
            burst: 2,
        };
        let (mut state, mut trips) = (None, 0);
        let mut recorded = 0;
        // A flood: 100 failures in the same second.
        for _ in 0..100 {
            let (next, verdict) = FailureBudget::take(state, 0, &limit);
            state = next.or(state);
            match verdict {
                FailureVerdict::Record => recorded += 1,
                FailureVerdict::Limited { first_trip, wait } => {
                    trips += u32::from(first_trip);
                    assert_eq!(wait, Duration::from_millis(1_000));
                }
            }
        }
        assert_eq!((recorded, trips), (2, 1));
        // Still flooding a second later: one more is recorded, no new trip.
        let (next, verdict) = FailureBudget::take(state, 1_000, &limit);
        assert_eq!(verdict, FailureVerdict::Record);
        state = next;
        let (_, verdict) = FailureBudget::take(state, 1_000, &limit);
        assert!(matches!(
            verdict,
            FailureVerdict::Limited {
                first_trip: false,
                ..
            }
        ));
        // Once full again (2 s of quiet), the next burst trips anew.
        let (mut s2, _) = (state, ());
        for _ in 0..3 {
            let (next, verdict) = FailureBudget::take(s2, 10_000, &limit);
            s2 = next.or(s2);
            if let FailureVerdict::Limited { first_trip, .. } = verdict {
                assert!(first_trip);
            }
        }
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
