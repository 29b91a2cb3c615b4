//! The in-memory store's challenge steps: the push-bombing limits and creation, answers, expiry,
//! cancellation, push outcomes, and the reads of pending and overdue challenges.

use super::state::State;
use crate::audit::{Actor, AuditKind, AuditRecord, SecurityKind};
use crate::challenge::{
    AccountId, Challenge, ChallengeId, Claim, Decision, DeliveryState, DeviceId, ExpireRefusal,
    LEASE_MS, RELAY_LOST, RespondError, State as Phase,
};
use crate::device::Device;
use crate::limits::{Bucket, LimitRefusal};
use crate::store::{
    ClaimOutcome, CreateOutcome, DeviceCall, DeviceRefusal, Due, Ended, ExpireOutcome,
    NewChallenge, PushWork, RespondOutcome,
};
use std::time::Duration;

impl State {
    /// The limit a new challenge of `account` would trip now, with the time to wait.
    fn limit(
        &mut self,
        account: &AccountId,
        source: Option<String>,
        now: i64,
    ) -> Option<(LimitRefusal, Duration)> {
        let policy = self.limits;
        // The source first, as the Redis store checks it in a step of its own before the account's.
        if let (Some(source), true) = (source, policy.source_rate.per_minute > 0) {
            let key = format!("source:{source}");
            match Bucket::take(self.buckets.get(&key).copied(), now, &policy.source_rate) {
                Ok(b) => {
                    self.buckets.insert(key, b);
                }
                Err(wait) => return Some((LimitRefusal::SourceRate, wait)),
            }
        }
        if let Some(wait) = self.cooldowns.get(account).and_then(|c| c.check(now)) {
            return Some(wait);
        }
        let pending: Vec<i64> = self
            .pending_of(account, now)
            .map(|c| c.expires_at_ms)
            .collect();
        if pending.len() >= policy.max_pending && !policy.supersede {
            let first_ends = pending.iter().min().copied().unwrap_or(now);
            return Some((
                LimitRefusal::TooManyPending,
                Duration::from_millis((first_ends - now).unsigned_abs()),
            ));
        }
        if policy.account_rate.per_minute > 0 {
            let key = format!("account:{}", account.as_str());
            match Bucket::take(self.buckets.get(&key).copied(), now, &policy.account_rate) {
                Ok(b) => {
                    self.buckets.insert(key, b);
                }
                Err(wait) => return Some((LimitRefusal::AccountRate, wait)),
            }
        }
        None
    }

    /// The account's challenges that are pending and not yet due at `now`.
    fn pending_of<'a>(
        &'a self,
        account: &AccountId,
        now: i64,
    ) -> impl Iterator<Item = &'a Challenge> + 'a {
        self.challenges_by_account
            .get(account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.challenges.get(id))
            .filter(move |c| c.state == Phase::Pending && c.expires_at_ms > now)
    }

    /// With `supersede` on, cancels the oldest pending challenges so that a new one fits under the cap.
    fn supersede(&mut self, account: &AccountId, now: i64) -> Vec<Ended> {
        if !self.limits.supersede {
            return Vec::new();
        }
        let mut pending: Vec<(i64, ChallengeId)> = self
            .pending_of(account, now)
            .map(|c| (c.created_at_ms, c.id.clone()))
            .collect();
        pending.sort();
        let excess = (pending.len() + 1).saturating_sub(self.limits.max_pending);
        let mut ended = Vec::new();
        for (_, id) in pending.into_iter().take(excess) {
            let Some(c) = self.challenges.get_mut(&id) else {
                continue;
            };
            let Some(event) = c.cancel(now) else {
                continue;
            };
            let challenge = c.clone();
            let record = State::ended_audit(&challenge, &event)
                .actor(Actor::Relay)
                .detail("superseded");
            self.audit(record, now);
            ended.push(self.ended(challenge, event, None));
        }
        ended
    }

    pub fn create_challenge(&mut self, new: NewChallenge, now: i64) -> CreateOutcome {
        if let Some(key) = &new.idempotency_key {
            let existing = self.idempotency.get(&(new.account.clone(), key.clone()));
            if let Some(c) = existing.and_then(|id| self.challenges.get(id)) {
                return CreateOutcome::Existing(c.clone());
            }
        }
        let source = new.context.ip.map(crate::limits::source_key);
        if let Some((reason, after)) = self.limit(&new.account, source, now) {
            let record = AuditRecord::new(&new.account, AuditKind::RateLimited, Actor::Backend)
                .detail(reason.name());
            self.audit(record, now);
            self.security(
                &new.account,
                SecurityKind::LimitTripped,
                None,
                None,
                reason.name(),
                now,
            );
            return CreateOutcome::Limited(reason, after);
        }
        let excluded = new.context.signing_in_device_id.as_ref();
        let targets: Vec<Device> = self
            .by_account
            .get(&new.account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.devices.get(id))
            .filter(|d| d.is_pushable() && Some(&d.id) != excluded)
            .cloned()
            .collect();
        if targets.is_empty() {
            return CreateOutcome::NoDevices;
        }
        let targets: Vec<Device> = targets
            .into_iter()
            .filter(|d| d.attestation.assurance.meets(new.min_assurance))
            .collect();
        if targets.is_empty() {
            return CreateOutcome::NoDeviceMeetsAssurance;
        }
        let superseded = self.supersede(&new.account, now);
        let ttl_ms = i64::try_from(new.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut challenge = Challenge {
            id: new.id,
            account: new.account,
            context: new.context,
            number: new.number,
            targets: targets.iter().map(|d| d.id.clone()).collect(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            ended_at_ms: 0,
            state: Phase::Pending,
            sequence: 0,
            idempotency_key: new.idempotency_key,
            wrong_answers: 0,
            deliveries: Vec::new(),
            pusher: self.replica.clone(),
            push_claims: 0,
        };
        challenge.mark_poll_only(
            targets
                .iter()
                .filter(|d| !d.platform.is_pushed())
                .map(|d| &d.id),
        );
        if let Some(key) = &challenge.idempotency_key {
            self.idempotency.insert(
                (challenge.account.clone(), key.clone()),
                challenge.id.clone(),
            );
        }
        self.challenges_by_account
            .entry(challenge.account.clone())
            .or_default()
            .push(challenge.id.clone());
        self.challenges
            .insert(challenge.id.clone(), challenge.clone());
        self.push_work.insert(
            challenge.id.clone(),
            (self.replica.clone(), now.saturating_add(LEASE_MS)),
        );
        let record = AuditRecord::new(
            &challenge.account,
            AuditKind::ChallengeCreated,
            Actor::Backend,
        )
        .challenge(&challenge.id)
        .detail(format!("devices={}", challenge.targets.len()));
        self.audit(record, now);
        CreateOutcome::Created(challenge, targets, superseded)
    }

    pub fn respond(
        &mut self,
        call: &DeviceCall,
        id: &ChallengeId,
        decision: Decision,
        number: u32,
        remember: Duration,
        now: i64,
    ) -> RespondOutcome {
        let device = self.accept(call, now).map_err(DeviceRefusal::Auth)?.clone();
        let result = match self
            .challenges
            .get_mut(id)
            .filter(|c| c.account == device.account)
        {
            None => Err(DeviceRefusal::ChallengeNotFound),
            Some(c) => c
                .respond(&device.id, decision, number, now)
                .map(|e| (c.clone(), e))
                .map_err(Into::into),
        };
        match result {
            Ok((challenge, event)) => {
                self.cool(&challenge, now);
                if matches!(challenge.state, Phase::Approved(_)) {
                    let keys = crate::known::keys_of(&challenge.context);
                    if !keys.is_empty() {
                        self.remember_sign_in(&device.account, &keys, remember, now);
                    }
                }
                self.audit(State::ended_audit(&challenge, &event), now);
                if matches!(challenge.state, Phase::FraudReported(_)) {
                    self.security(
                        &device.account,
                        SecurityKind::FraudReported,
                        Some(&device.id),
                        Some(id),
                        "",
                        now,
                    );
                }
                Ok(self.ended(challenge, event, Some(&device.id)))
            }
            Err(refusal) => {
                let record = AuditRecord::new(
                    &device.account,
                    AuditKind::RequestRefused,
                    Actor::Device(device.id.clone()),
                )
                .challenge(id)
                .device(&device.id)
                .detail(refusal_detail(&refusal));
                self.audit(record, now);
                Err(refusal)
            }
        }
    }

    pub fn expire(&mut self, id: &ChallengeId, now: i64) -> ExpireOutcome {
        let Some(c) = self.challenges.get_mut(id) else {
            return ExpireOutcome::Ended;
        };
        match c.expire(now) {
            Ok(event) => {
                let challenge = c.clone();
                self.cool(&challenge, now);
                self.audit(State::ended_audit(&challenge, &event), now);
                ExpireOutcome::Expired(Box::new(self.ended(challenge, event, None)))
            }
            Err(ExpireRefusal::NotDue(ms)) => {
                ExpireOutcome::NotDue(Duration::from_millis(ms.unsigned_abs()))
            }
            Err(ExpireRefusal::Ended) => ExpireOutcome::Ended,
        }
    }

    pub fn cancel(&mut self, id: &ChallengeId, now: i64) -> Option<Result<Ended, Challenge>> {
        let c = self.challenges.get_mut(id)?;
        let Some(event) = c.cancel(now) else {
            return Some(Err(c.clone()));
        };
        let challenge = c.clone();
        self.audit(State::ended_audit(&challenge, &event), now);
        Some(Ok(self.ended(challenge, event, None)))
    }

    pub fn record_deliveries(
        &mut self,
        id: &ChallengeId,
        outcomes: &[(DeviceId, DeliveryState)],
        finished: bool,
        now: i64,
    ) {
        if finished
            && self
                .push_work
                .get(id)
                .is_some_and(|(o, _)| *o == self.replica)
        {
            self.push_work.remove(id);
        }
        for (device, outcome) in outcomes {
            let Some(c) = self.challenges.get_mut(id) else {
                return;
            };
            let event = c.record_delivery(device, outcome.clone(), now);
            let kind = match outcome {
                DeliveryState::Delivered(_) => AuditKind::PushDelivered,
                DeliveryState::Failed(_) => AuditKind::PushFailed,
                DeliveryState::Pending | DeliveryState::PollOnly => continue,
            };
            let record = AuditRecord::new(&c.account, kind, Actor::Relay)
                .challenge(id)
                .device(device)
                .detail(outcome.audit_detail());
            self.audit(record, now);
            self.after.events.extend(event);
        }
    }

    pub fn list_pending(&self, device: &DeviceId, now: i64) -> Vec<Challenge> {
        let Some(account) = self.devices.get(device).map(|d| &d.account) else {
            return Vec::new();
        };
        self.pending_of(account, now)
            .filter(|c| c.is_targeted(device))
            .cloned()
            .collect()
    }

    pub fn due(&mut self, limit: usize, now: i64) -> Due {
        self.purge(now);
        let overdue = self
            .challenges
            .values()
            .filter(|c| c.state == Phase::Pending && c.expires_at_ms <= now)
            .take(limit)
            .map(|c| c.id.clone())
            .collect();
        let pushes = self
            .push_work
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .take(limit)
            .map(|(id, (owner, _))| PushWork {
                challenge: id.clone(),
                owner: owner.clone(),
            })
            .collect();
        Due {
            overdue,
            pushes,
            unreachable: 0,
        }
    }

    pub fn defer_pushes(&mut self, work: &[PushWork], now: i64) {
        for w in work {
            if let Some((owner, at)) = self.push_work.get_mut(&w.challenge)
                && *owner == w.owner
            {
                *at = now.saturating_add(LEASE_MS);
            }
        }
    }

    pub fn claim_pushes(&mut self, work: &PushWork, now: i64) -> ClaimOutcome {
        let me = self.replica.clone();
        let Some(c) = self.challenges.get_mut(&work.challenge) else {
            self.push_work.remove(&work.challenge);
            return ClaimOutcome::Nothing;
        };
        match c.claim_pushes(&work.owner, &me, now) {
            Claim::Send(devices) => {
                let challenge = c.clone();
                self.push_work
                    .insert(work.challenge.clone(), (me, now.saturating_add(LEASE_MS)));
                let devices = devices
                    .iter()
                    .filter_map(|d| self.devices.get(d))
                    .cloned()
                    .collect();
                ClaimOutcome::Send(Box::new(challenge), devices)
            }
            Claim::GiveUp(devices) => {
                self.push_work.remove(&work.challenge);
                let lost: Vec<_> = devices
                    .into_iter()
                    .map(|d| (d, DeliveryState::Failed(RELAY_LOST.to_owned())))
                    .collect();
                self.record_deliveries(&work.challenge, &lost, false, now);
                ClaimOutcome::GaveUp(lost.len())
            }
            Claim::Ended | Claim::Done | Claim::Moved(_) => {
                if self
                    .push_work
                    .get(&work.challenge)
                    .is_some_and(|(o, _)| *o == work.owner)
                {
                    self.push_work.remove(&work.challenge);
                }
                ClaimOutcome::Nothing
            }
        }
    }
}

/// The audit detail of a refused answer (the Redis scripts write the same words).
fn refusal_detail(refusal: &DeviceRefusal) -> String {
    match refusal {
        DeviceRefusal::Respond(RespondError::WrongNumber { .. }) => "wrong_number".to_owned(),
        DeviceRefusal::Respond(RespondError::MissingNumber) => "missing_number".to_owned(),
        DeviceRefusal::Respond(RespondError::UnexpectedNumber) => "unexpected_number".to_owned(),
        DeviceRefusal::Respond(RespondError::Late) => "late".to_owned(),
        DeviceRefusal::Respond(RespondError::Ended(s)) => format!("already_{}", s.name()),
        DeviceRefusal::Respond(RespondError::NotTargeted) | DeviceRefusal::ChallengeNotFound => {
            "not_targeted".to_owned()
        }
        DeviceRefusal::Auth(e) => e.reason().to_owned(),
    }
}
