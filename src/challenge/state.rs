//! The challenge state machine. A challenge leaves `Pending` exactly once; every transition is a pure
//! function of the challenge and the store's clock, so the in-memory store runs it under a lock and the
//! Redis store runs the same rules inside one script.

use super::ids::{AccountId, ChallengeId, DeviceId};
use super::number::{NumberMatch, NumberVerdict};
use crate::device::Platform;
use std::net::IpAddr;

/// Why the owner declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// "I did not try to sign in."
    NotMe,
    /// "It was me, but I cancelled."
    CancelledByUser,
    /// "The number on the screen was not offered."
    NumberMismatch,
    /// The owner typed or tapped a number that is not on the sign-in screen: set by the relay, never
    /// sent by a phone.
    WrongNumber,
}

impl DenyReason {
    /// Lower-case name, as stored and audited.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotMe => "not_me",
            Self::CancelledByUser => "cancelled_by_user",
            Self::NumberMismatch => "number_mismatch",
            Self::WrongNumber => "wrong_number",
        }
    }
}

/// The owner's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let the sign-in through.
    Approve,
    /// Refuse it, with a reason.
    Deny(DenyReason),
    /// Refuse it and flag the account.
    ReportFraud,
}

/// Where a challenge is; everything but `Pending` is terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for an answer.
    Pending,
    /// Approved by a device.
    Approved(DeviceId),
    /// Declined by a device.
    Denied(DeviceId, DenyReason),
    /// Reported as fraud by a device.
    FraudReported(DeviceId),
    /// The deadline passed unanswered.
    Expired,
    /// The backend cancelled it.
    Cancelled,
}

impl State {
    /// True for every state but `Pending`.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, State::Pending)
    }

    /// Lower-case name, as used in audit details and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved(_) => "approved",
            State::Denied(..) => "denied",
            State::FraudReported(_) => "fraud_reported",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
        }
    }
}

/// Who is signing in; shown only over the signed device API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginContext {
    /// Address of the sign-in attempt.
    pub ip: Option<IpAddr>,
    /// Approximate place.
    pub location: String,
    /// User agent or application.
    pub user_agent: String,
    /// Name of the device signing in.
    pub signing_in_device_name: String,
    /// A registered device that is signing in: never pushed.
    pub signing_in_device_id: Option<DeviceId>,
    /// The backend's stable id of the device signing in (a cookie or device-bound id), for `known`.
    pub sign_in_device_key: String,
    /// What the relay knew of this sign-in's device and place when the challenge was created.
    pub familiar: crate::known::Familiar,
}

/// Where a targeted device's push stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not sent yet, or sent and not answered by the provider yet.
    Pending,
    /// The provider accepted it, through this channel.
    Delivered(Via),
    /// It could not be delivered, with a short reason.
    Failed(String),
    /// The device has no push channel: it sees the challenge when it polls (set at creation).
    PollOnly,
}

/// The channel that delivered a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    /// The provider that accepted it (`None` in records written before channels were recorded).
    pub platform: Option<Platform>,
    /// True when the device's first channel failed and its fallback delivered.
    pub fallback: bool,
}

impl Via {
    /// Delivered through `platform`, the device's own channel unless `fallback`.
    pub fn new(platform: Platform, fallback: bool) -> Self {
        Self {
            platform: Some(platform),
            fallback,
        }
    }

    /// `fcm`, or `xiaomi:fallback` for a fallback channel (empty when unknown): as stored and audited.
    pub fn label(self) -> String {
        match (self.platform, self.fallback) {
            (None, _) => String::new(),
            (Some(p), false) => p.name().to_owned(),
            (Some(p), true) => format!("{}:fallback", p.name()),
        }
    }

    /// The channel of a [`Via::label`]; `None` for a label no relay writes.
    pub fn from_label(label: &str) -> Option<Self> {
        if label.is_empty() {
            return Some(Self {
                platform: None,
                fallback: false,
            });
        }
        let (name, fallback) = match label.strip_suffix(":fallback") {
            Some(name) => (name, true),
            None => (label, false),
        };
        Platform::from_name(name).map(|p| Self::new(p, fallback))
    }
}

impl DeliveryState {
    /// The audit detail of a recorded outcome: the channel that delivered, or the failure reason.
    pub fn audit_detail(&self) -> String {
        match self {
            Self::Delivered(via) => via.label(),
            Self::Failed(reason) => reason.clone(),
            Self::Pending | Self::PollOnly => String::new(),
        }
    }
}

/// What happened to a challenge, as watchers see it (the snapshot is built from [`Challenge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The provider accepted the push for a device, through this channel.
    Delivered(DeviceId, Via),
    /// The push to a device failed, with a short reason.
    DeliveryFailed(DeviceId, String),
    /// Terminal: the challenge reached this state.
    Ended(State),
}

/// One event of one challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The challenge it belongs to.
    pub challenge_id: ChallengeId,
    /// 1, 2, 3… per challenge; lets a watcher drop what its snapshot already showed.
    pub sequence: u64,
    /// Store clock, Unix milliseconds.
    pub at_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// True for the one event that ends a challenge.
    pub fn is_terminal(&self) -> bool {
        matches!(self.kind, EventKind::Ended(_))
    }
}

/// A challenge and everything needed to decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Opaque id carrying the account's routing tag.
    pub id: ChallengeId,
    /// Whose devices must answer.
    pub account: AccountId,
    /// Who is signing in.
    pub context: LoginContext,
    /// Number matching for this challenge.
    pub number: NumberMatch,
    /// Devices the challenge was pushed to; only they may answer.
    pub targets: Vec<DeviceId>,
    /// Store clock at creation, Unix ms.
    pub created_at_ms: i64,
    /// No answer is accepted at or after this instant.
    pub expires_at_ms: i64,
    /// When it left `Pending`; 0 while pending.
    pub ended_at_ms: i64,
    /// Current state.
    pub state: State,
    /// Sequence of the latest event.
    pub sequence: u64,
    /// The backend's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Wrong numbers answered so far (see [`NumberMatch::attempts`]).
    pub wrong_answers: u32,
    /// Push outcomes recorded while the challenge was pending; a target absent here is pending.
    pub deliveries: Vec<(DeviceId, DeliveryState)>,
    /// The replica that owes the pushes (see `pushes.rs`).
    pub pusher: String,
    /// Times another sending of the pushes was claimed after the first.
    pub push_claims: u32,
}

/// Why an answer was refused. Nothing changes on refusal but the count of wrong numbers (see
/// [`RespondError::WrongNumber`]); and see [`RespondError::Late`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    /// The device was not pushed this challenge.
    #[error("challenge not found for this device")]
    NotTargeted,
    /// The challenge already ended.
    #[error("challenge already ended ({})", .0.name())]
    Ended(State),
    /// The deadline passed; the caller should expire the challenge in the same step.
    #[error("challenge deadline has passed")]
    Late,
    /// Approval without the number the screen shows.
    #[error("payload.respond.number: required for this challenge")]
    MissingNumber,
    /// A wrong number in mode TYPE while attempts are left: counted, and the challenge stays pending.
    #[error("payload.respond.number: does not match ({attempts_left} attempt(s) left)")]
    WrongNumber {
        /// Wrong numbers still allowed before one ends the challenge DENIED.
        attempts_left: u32,
    },
    /// A number in mode NONE.
    #[error("payload.respond.number: must be 0: this challenge asks no number")]
    UnexpectedNumber,
}

/// Why a challenge could not be expired now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpireRefusal {
    /// The deadline is still this many ms away (a timer fired early or clocks differ).
    NotDue(i64),
    /// It already ended.
    Ended,
}

impl Challenge {
    fn end(&mut self, state: State, now_ms: i64) -> Event {
        self.state = state.clone();
        self.ended_at_ms = now_ms;
        self.next_event(EventKind::Ended(state), now_ms)
    }

    fn next_event(&mut self, kind: EventKind, now_ms: i64) -> Event {
        self.sequence += 1;
        Event {
            challenge_id: self.id.clone(),
            sequence: self.sequence,
            at_ms: now_ms,
            kind,
        }
    }

    /// The terminal event of an ended challenge, rebuilt from its state (for snapshots and resyncs).
    pub fn terminal_event(&self) -> Option<Event> {
        self.state.is_terminal().then(|| Event {
            challenge_id: self.id.clone(),
            sequence: self.sequence,
            at_ms: self.ended_at_ms,
            kind: EventKind::Ended(self.state.clone()),
        })
    }

    /// Checks that a device may see this challenge.
    pub fn is_targeted(&self, device: &DeviceId) -> bool {
        self.targets.contains(device)
    }

    /// Applies a device's answer.
    ///
    /// # Errors
    /// [`RespondError`]; the challenge is unchanged.
    pub fn respond(
        &mut self,
        device: &DeviceId,
        decision: Decision,
        number: u32,
        now_ms: i64,
    ) -> Result<Event, RespondError> {
        if !self.is_targeted(device) {
            return Err(RespondError::NotTargeted);
        }
        if self.state.is_terminal() {
            return Err(RespondError::Ended(self.state.clone()));
        }
        if now_ms >= self.expires_at_ms {
            return Err(RespondError::Late);
        }
        let state = match decision {
            Decision::Approve => match self.number.check(number) {
                NumberVerdict::Match => State::Approved(device.clone()),
                NumberVerdict::Missing => return Err(RespondError::MissingNumber),
                NumberVerdict::Unexpected => return Err(RespondError::UnexpectedNumber),
                NumberVerdict::Wrong => {
                    // Number matching is there to be failed once: a wrong number ends the challenge
                    // (after the attempts the relay allows in mode TYPE), so trying every number fails.
                    self.wrong_answers = self.wrong_answers.saturating_add(1);
                    let attempts_left = self.number.attempts.saturating_sub(self.wrong_answers);
                    if attempts_left > 0 {
                        return Err(RespondError::WrongNumber { attempts_left });
                    }
                    State::Denied(device.clone(), DenyReason::WrongNumber)
                }
            },
            Decision::Deny(reason) => State::Denied(device.clone(), reason),
            Decision::ReportFraud => State::FraudReported(device.clone()),
        };
        Ok(self.end(state, now_ms))
    }

    /// Ends the challenge `Expired` if its deadline has passed.
    ///
    /// # Errors
    /// [`ExpireRefusal`]; the challenge is unchanged.
    pub fn expire(&mut self, now_ms: i64) -> Result<Event, ExpireRefusal> {
        if self.state.is_terminal() {
            return Err(ExpireRefusal::Ended);
        }
        if now_ms < self.expires_at_ms {
            return Err(ExpireRefusal::NotDue(self.expires_at_ms - now_ms));
        }
        Ok(self.end(State::Expired, self.expires_at_ms.max(now_ms)))
    }

    /// Ends the challenge `Cancelled` (or `Expired`, if its deadline has already passed: nothing but
    /// expiry happens after the deadline), or returns `None` if it had already ended.
    pub fn cancel(&mut self, now_ms: i64) -> Option<Event> {
        if self.state.is_terminal() {
            return None;
        }
        let state = if now_ms >= self.expires_at_ms {
            State::Expired
        } else {
            State::Cancelled
        };
        Some(self.end(state, now_ms))
    }

    /// Records a push outcome; ignored (`None`) once the challenge ended, since its watchers are gone,
    /// and for `Pending` (not an outcome). `PollOnly` is recorded without an event: nothing was sent.
    pub fn record_delivery(
        &mut self,
        device: &DeviceId,
        outcome: DeliveryState,
        now_ms: i64,
    ) -> Option<Event> {
        if self.state.is_terminal() || !self.is_targeted(device) {
            return None;
        }
        let kind = match &outcome {
            DeliveryState::Pending => return None,
            DeliveryState::Delivered(via) => Some(EventKind::Delivered(device.clone(), *via)),
            DeliveryState::Failed(reason) => {
                Some(EventKind::DeliveryFailed(device.clone(), reason.clone()))
            }
            DeliveryState::PollOnly => None,
        };
        self.deliveries.retain(|(d, _)| d != device);
        self.deliveries.push((device.clone(), outcome));
        kind.map(|kind| self.next_event(kind, now_ms))
    }

    /// Marks the targets that are never pushed (poll-only devices) as such, in the create step, so that
    /// no replica ever takes their pushes for unfinished.
    pub fn mark_poll_only<'a>(&mut self, poll_only: impl IntoIterator<Item = &'a DeviceId>) {
        for device in poll_only {
            if self.is_targeted(device) {
                self.deliveries.retain(|(d, _)| d != device);
                self.deliveries
                    .push((device.clone(), DeliveryState::PollOnly));
            }
        }
    }

    /// Where the push to `device` stands.
    pub fn delivery(&self, device: &DeviceId) -> DeliveryState {
        self.deliveries
            .iter()
            .find(|(d, _)| d == device)
            .map_or(DeliveryState::Pending, |(_, s)| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::number::NumberMode;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn challenge(mode: NumberMode) -> (Challenge, Vec<DeviceId>) {
        let account = AccountId::parse("acct").expect("valid");
        let devices: Vec<_> = (0..3).map(|_| DeviceId::generate(&account)).collect();
        let c = Challenge {
            id: ChallengeId::generate(&account),
            account,
            context: LoginContext::default(),
            number: NumberMatch::generate(mode, 1, &mut StdRng::seed_from_u64(3)),
            targets: devices.clone(),
            created_at_ms: 1_000,
            expires_at_ms: 61_000,
            ended_at_ms: 0,
            state: State::Pending,
            sequence: 0,
            idempotency_key: None,
            wrong_answers: 0,
            deliveries: Vec::new(),
            pusher: "r.test".into(),
            push_claims: 0,
        };
        (c, devices)
    }

    #[test]
    fn the_first_answer_wins_and_later_ones_are_refused() {
        let (mut c, d) = challenge(NumberMode::None);
        let e = c
            .respond(&d[0], Decision::Approve, 0, 2_000)
            .expect("first answer");
        assert_eq!(e.kind, EventKind::Ended(State::Approved(d[0].clone())));
        assert_eq!(e.sequence, 1);
        let before = c.clone();
        assert_eq!(
            c.respond(&d[1], Decision::Deny(DenyReason::NotMe), 0, 2_001),
            Err(RespondError::Ended(State::Approved(d[0].clone())))
        );
        assert_eq!(c.expire(70_000), Err(ExpireRefusal::Ended));
        assert_eq!(c.cancel(2_002), None);
        assert_eq!(c, before);
    }

    #[test]
    fn an_answer_at_the_deadline_is_late() {
        let (mut c, d) = challenge(NumberMode::None);
        assert_eq!(
            c.respond(&d[0], Decision::Approve, 0, 61_000),
            Err(RespondError::Late)
        );
        assert_eq!(c.state, State::Pending);
        assert_eq!(c.expire(60_999), Err(ExpireRefusal::NotDue(1)));
        assert_eq!(
            c.expire(61_000).map(|e| e.kind),
            Ok(EventKind::Ended(State::Expired))
        );
    }

    fn wrong(n: u32) -> u32 {
        if n == 99 { 98 } else { n + 1 }
    }

    #[test]
    fn approval_needs_the_right_number_but_denial_does_not() {
        let (mut c, d) = challenge(NumberMode::Type);
        assert_eq!(
            c.respond(&d[0], Decision::Approve, 0, 2_000),
            Err(RespondError::MissingNumber)
        );
        assert_eq!(c.sequence, 0);
        let n = c.number.number;
        assert!(
            c.clone()
                .respond(&d[0], Decision::Approve, n, 2_000)
                .is_ok()
        );
        assert!(c.respond(&d[1], Decision::ReportFraud, 0, 2_000).is_ok());
    }

    #[test]
    fn a_wrong_number_ends_the_challenge_denied() {
        let (mut c, d) = challenge(NumberMode::Type);
        let e = c
            .respond(&d[0], Decision::Approve, wrong(c.number.number), 2_000)
            .expect("a wrong number decides");
        assert_eq!(
            e.kind,
            EventKind::Ended(State::Denied(d[0].clone(), DenyReason::WrongNumber))
        );
        let n = c.number.number;
        assert_eq!(
            c.respond(&d[1], Decision::Approve, n, 2_001),
            Err(RespondError::Ended(State::Denied(
                d[0].clone(),
                DenyReason::WrongNumber
            ))),
            "the right number afterwards is too late"
        );
    }

    #[test]
    fn tapping_every_choice_cannot_approve() {
        let (mut c, d) = challenge(NumberMode::Choose);
        let first_wrong = c
            .number
            .choices
            .iter()
            .copied()
            .find(|n| *n != c.number.number)
            .expect("a decoy");
        assert!(
            c.respond(&d[0], Decision::Approve, first_wrong, 2_000)
                .is_ok()
        );
        let n = c.number.number;
        assert!(matches!(
            c.respond(&d[0], Decision::Approve, n, 2_001),
            Err(RespondError::Ended(_))
        ));
    }

    #[test]
    fn type_mode_counts_wrong_numbers_up_to_its_attempts() {
        let (mut c, d) = challenge(NumberMode::Type);
        c.number.attempts = 2;
        let bad = wrong(c.number.number);
        assert_eq!(
            c.respond(&d[0], Decision::Approve, bad, 2_000),
            Err(RespondError::WrongNumber { attempts_left: 1 })
        );
        assert_eq!((c.state.clone(), c.wrong_answers), (State::Pending, 1));
        assert!(matches!(
            c.respond(&d[1], Decision::Approve, bad, 2_001)
                .map(|e| e.kind),
            Ok(EventKind::Ended(State::Denied(_, DenyReason::WrongNumber)))
        ));
    }

    #[test]
    fn a_number_where_none_is_asked_is_refused() {
        let (mut c, d) = challenge(NumberMode::None);
        assert_eq!(
            c.respond(&d[0], Decision::Approve, 42, 2_000),
            Err(RespondError::UnexpectedNumber)
        );
        assert!(c.respond(&d[0], Decision::Approve, 0, 2_000).is_ok());
    }

    #[test]
    fn only_targeted_devices_may_answer() {
        let (mut c, _) = challenge(NumberMode::None);
        let stranger = DeviceId::generate(&c.account);
        assert_eq!(
            c.respond(&stranger, Decision::Approve, 0, 2_000),
            Err(RespondError::NotTargeted)
        );
        assert_eq!(
            c.record_delivery(
                &stranger,
                DeliveryState::Delivered(Via::new(Platform::Fcm, false)),
                2_000
            ),
            None
        );
    }
}

#[cfg(test)]
mod properties {
    //! The state machine under random interleavings of answers, expiry, cancellation and delivery
    //! reports from random devices at random times: exactly one terminal state, never left again.
    use super::*;
    use crate::challenge::number::NumberMode;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[derive(Debug, Clone)]
    enum Op {
        Respond {
            device: usize,
            decision: u8,
            right_number: bool,
        },
        Expire,
        Cancel,
        Delivery {
            device: usize,
            failed: bool,
        },
    }

    fn op() -> impl Strategy<Value = (Op, i64)> {
        let op = prop_oneof![
            (0..4usize, 0..3u8, any::<bool>()).prop_map(|(device, decision, right_number)| {
                Op::Respond {
                    device,
                    decision,
                    right_number,
                }
            }),
            Just(Op::Expire),
            Just(Op::Cancel),
            (0..4usize, any::<bool>()).prop_map(|(device, failed)| Op::Delivery { device, failed }),
        ];
        (op, 0..120_000i64)
    }

    proptest! {
        #[test]
        fn any_interleaving_ends_in_at_most_one_terminal_state(mut ops in proptest::collection::vec(op(), 1..40)) {
            ops.sort_by_key(|(_, t)| *t);
            let account = AccountId::parse("acct").expect("valid");
            let devices: Vec<DeviceId> = (0..4).map(|_| DeviceId::generate(&account)).collect();
            let mut c = Challenge {
                id: ChallengeId::generate(&account),
                account,
                context: LoginContext::default(),
                number: NumberMatch::generate(NumberMode::Type, 2, &mut StdRng::seed_from_u64(9)),
                targets: devices[..3].to_vec(),
                created_at_ms: 0,
                expires_at_ms: 60_000,
                ended_at_ms: 0,
                state: State::Pending,
                sequence: 0,
                idempotency_key: None,
                wrong_answers: 0,
                deliveries: Vec::new(),
                pusher: "r.test".into(),
                push_claims: 0,
            };
            let mut terminal_events = 0;
            let mut ended: Option<State> = None;
            for (op, now) in ops {
                let before = c.clone();
                let event = match op {
                    Op::Respond { device, decision, right_number } => {
                        let number = if right_number { c.number.number } else { c.number.number + 100 };
                        let decision = match decision {
                            0 => Decision::Approve,
                            1 => Decision::Deny(DenyReason::NotMe),
                            _ => Decision::ReportFraud,
                        };
                        match c.respond(&devices[device], decision, number, now) {
                            Ok(e) => Some(e),
                            Err(RespondError::WrongNumber { attempts_left }) => {
                                // The one refusal that changes something: the count of wrong numbers.
                                prop_assert_eq!(c.wrong_answers, before.wrong_answers + 1);
                                prop_assert!(attempts_left > 0);
                                let mut counted = before.clone();
                                counted.wrong_answers += 1;
                                prop_assert_eq!(&c, &counted);
                                continue;
                            }
                            Err(_) => None,
                        }
                    }
                    Op::Expire => c.expire(now).ok(),
                    Op::Cancel => c.cancel(now),
                    Op::Delivery { device, failed } => c.record_delivery(&devices[device], if failed { DeliveryState::Failed("x".to_owned()) } else { DeliveryState::Delivered(Via::new(Platform::Hms, true)) }, now),
                };
                match &event {
                    None => prop_assert_eq!(&c, &before, "a refused step changes nothing"),
                    Some(e) => {
                        prop_assert_eq!(e.sequence, before.sequence + 1);
                        prop_assert!(ended.is_none(), "nothing happens after the end: {:?}", e);
                        if e.is_terminal() {
                            terminal_events += 1;
                            ended = Some(c.state.clone());
                            prop_assert!(now < 60_000 || c.state == State::Expired, "no decision at or after the deadline");
                        }
                    }
                }
            }
            prop_assert!(terminal_events <= 1);
            if let Some(state) = ended {
                prop_assert_eq!(c.state, state);
            }
        }
    }
}
