//! The pushes a challenge is owed, as state (STYLE.md point 18): the create step names the replica that
//! owes them (`pusher`), each device's outcome is recorded as it comes (`deliveries`), and any replica
//! that finds them unfinished while their owner is gone (or, for the owner itself, not being sent: its
//! create's answer was lost) may claim them: once, never after the deadline. Pure rules; both stores
//! apply them in one atomic step.

use super::ids::DeviceId;
use super::state::{Challenge, DeliveryState};

/// How long the pushes of a new challenge are left to their owner before another replica looks at them
/// (and how often it looks again while the owner is alive and still sending), in ms.
pub const LEASE_MS: i64 = 3_000;
/// Pushes are given up this long before the deadline, so that DELIVERY_FAILED reaches watchers while
/// the challenge is still pending, in ms.
pub const GIVE_UP_BEFORE_MS: i64 = 1_000;
/// How many times the pushes of one challenge may be claimed again after their first sending: each
/// device is sent at most once more than planned.
pub const MAX_CLAIMS: u32 = 1;

/// What claiming a challenge's unfinished pushes came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The challenge ended: no push is worth sending.
    Ended,
    /// Every device has its outcome.
    Done,
    /// Another replica owns them now (it claimed them first).
    Moved(String),
    /// Claimed: send to these devices.
    Send(Vec<DeviceId>),
    /// Too late, or claimed once already: these devices are recorded DELIVERY_FAILED `relay_lost`.
    GiveUp(Vec<DeviceId>),
}

/// The failure reason of pushes no replica could finish.
pub const RELAY_LOST: &str = "relay_lost";

impl Challenge {
    /// Targets without a recorded push outcome.
    pub fn unpushed(&self) -> Vec<DeviceId> {
        self.targets
            .iter()
            .filter(|d| self.delivery(d) == DeliveryState::Pending)
            .cloned()
            .collect()
    }

    /// Claims the unfinished pushes for `me`, if `expected` still owns them. On [`Claim::GiveUp`] the
    /// caller records [`RELAY_LOST`] for the devices (with `record_delivery`, in the same step).
    pub fn claim_pushes(&mut self, expected: &str, me: &str, now_ms: i64) -> Claim {
        if self.state.is_terminal() {
            return Claim::Ended;
        }
        let left = self.unpushed();
        if left.is_empty() {
            return Claim::Done;
        }
        if self.pusher != expected {
            return Claim::Moved(self.pusher.clone());
        }
        if self.push_claims >= MAX_CLAIMS || now_ms >= self.expires_at_ms - GIVE_UP_BEFORE_MS {
            return Claim::GiveUp(left);
        }
        self.pusher = me.to_owned();
        self.push_claims += 1;
        Claim::Send(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{AccountId, ChallengeId, LoginContext, NumberMatch, NumberMode, State};

    fn challenge() -> Challenge {
        let account = AccountId::parse("a").expect("valid");
        let targets = (0..2).map(|_| DeviceId::generate(&account)).collect();
        Challenge {
            id: ChallengeId::generate(&account),
            account,
            context: LoginContext::default(),
            number: NumberMatch::generate(NumberMode::None, 1, &mut rand::thread_rng()),
            targets,
            created_at_ms: 0,
            expires_at_ms: 60_000,
            ended_at_ms: 0,
            state: State::Pending,
            sequence: 0,
            idempotency_key: None,
            wrong_answers: 0,
            deliveries: Vec::new(),
            pusher: "r.a".into(),
            push_claims: 0,
        }
    }

    #[test]
    fn unfinished_pushes_are_claimed_once_and_only_from_their_owner() {
        let mut c = challenge();
        let first = c.targets[0].clone();
        c.record_delivery(
            &first,
            DeliveryState::Delivered(crate::challenge::Via::new(
                crate::device::Platform::Fcm,
                false,
            )),
            10,
        );
        assert_eq!(
            c.claim_pushes("r.x", "r.b", 5_000),
            Claim::Moved("r.a".into())
        );
        assert_eq!(
            c.claim_pushes("r.a", "r.b", 5_000),
            Claim::Send(vec![c.targets[1].clone()]),
            "only the device without an outcome"
        );
        assert_eq!(c.pusher, "r.b");
        assert_eq!(
            c.claim_pushes("r.b", "r.c", 6_000),
            Claim::GiveUp(vec![c.targets[1].clone()]),
            "a second takeover would push twice more: given up"
        );
    }

    #[test]
    fn nothing_is_claimed_near_the_deadline_after_the_end_or_when_done() {
        let mut c = challenge();
        assert!(matches!(
            c.claim_pushes("r.a", "r.b", 59_000),
            Claim::GiveUp(_)
        ));
        let (a, b) = (c.targets[0].clone(), c.targets[1].clone());
        c.record_delivery(
            &a,
            DeliveryState::Delivered(crate::challenge::Via::new(
                crate::device::Platform::Apns,
                false,
            )),
            1,
        );
        c.record_delivery(&b, DeliveryState::Failed("token_dead".into()), 1);
        assert_eq!(c.claim_pushes("r.a", "r.b", 1_000), Claim::Done);
        c.state = State::Expired;
        assert_eq!(c.claim_pushes("r.a", "r.b", 1_000), Claim::Ended);
    }
}
