//! The embedded in-memory store: development mode and single-process tests. One mutex around all state
//! makes every method one atomic step, as a Lua script is in Redis; it is never held across an await.
//! Retention mirrors the Redis TTLs: ended challenges are forgotten an hour after their deadline.

use super::*;
use crate::audit::{Actor, AuditKind, SecurityKind};
use crate::challenge::{EventKind, ExpireRefusal, State};
use crate::device::DeviceState;
use crate::limits::{Bucket, Cooldown, LimitPolicy, LimitRefusal};
use crate::notice::NOTICES_PER_ACCOUNT;
use crate::watch::Hub;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Audit records kept per account (Redis caps its streams the same way).
pub const AUDIT_CAP: usize = 1_000;
/// Security events kept in all.
pub const SECURITY_CAP: usize = 10_000;
/// How long an ended challenge stays readable after its deadline.
pub const RETENTION_MS: i64 = 3_600_000;
/// Most devices per account.
pub const MAX_DEVICES: usize = 16;

#[derive(Default)]
struct Inner {
    devices: HashMap<DeviceId, Device>,
    by_account: HashMap<AccountId, Vec<DeviceId>>,
    enrollments: HashMap<String, Enrollment>,
    challenges: HashMap<ChallengeId, Challenge>,
    challenges_by_account: HashMap<AccountId, Vec<ChallengeId>>,
    idempotency: HashMap<(AccountId, String), ChallengeId>,
    audit: HashMap<AccountId, (u64, VecDeque<StoredAudit>)>,
    security: VecDeque<SecurityEvent>,
    security_seq: u64,
    cooldowns: HashMap<AccountId, Cooldown>,
    /// Each device's previous push token and when it was replaced (token-flip clone detection).
    token_history: HashMap<DeviceId, (Option<String>, i64)>,
    /// Creation-rate buckets by "account:<id>" and "source:<address>" (dev store: never pruned).
    buckets: HashMap<String, Bucket>,
    notices: HashMap<NoticeId, Notice>,
    /// Each account's notice ids, oldest first, capped at `NOTICES_PER_ACCOUNT`.
    notices_by_account: HashMap<AccountId, VecDeque<NoticeId>>,
}

/// Everything in one process's memory.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    hub: Arc<Hub>,
    security_added: Notify,
    limits: LimitPolicy,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl MemoryStore {
    /// An empty store publishing into `hub`, applying `limits` to new challenges.
    pub fn new(hub: Arc<Hub>, limits: LimitPolicy) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            hub,
            security_added: Notify::new(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, event: &Event) {
        self.hub.dispatch(event);
    }
}

impl Inner {
    fn audit(&mut self, record: AuditRecord, at_ms: i64) {
        let (seq, list) = self.audit.entry(record.account.clone()).or_default();
        *seq += 1;
        list.push_back(StoredAudit {
            position: seq.to_string(),
            at_ms,
            record,
        });
        if list.len() > AUDIT_CAP {
            list.pop_front();
        }
    }

    fn security(
        &mut self,
        account: &AccountId,
        kind: SecurityKind,
        device: Option<&DeviceId>,
        challenge: Option<&ChallengeId>,
        detail: &str,
        at_ms: i64,
    ) {
        self.security_seq += 1;
        self.security.push_back(SecurityEvent {
            position: self.security_seq.to_string(),
            at_ms,
            account: account.clone(),
            kind,
            device: device.cloned(),
            challenge: challenge.cloned(),
            detail: detail.to_owned(),
        });
        if self.security.len() > SECURITY_CAP {
            self.security.pop_front();
        }
    }

    /// Counter rule on a call, auditing and reporting a suspected clone.
    fn accept(&mut self, call: &DeviceCall, now: i64) -> Result<&mut Device, AuthError> {
        let device = self
            .devices
            .get_mut(&call.device)
            .ok_or(AuthError::UnknownDevice)?;
        match device.accept_counter(call.counter, now) {
            Ok(()) => {}
            Err(AuthError::CounterNotIncreasing) => {
                let detail = format!("counter {} after {}", call.counter, device.counter);
                self.mark_clone(&call.device, &detail, now);
                return Err(AuthError::CounterNotIncreasing);
            }
            Err(e) => return Err(e),
        }
        self.devices
            .get_mut(&call.device)
            .ok_or(AuthError::UnknownDevice)
    }

    /// Marks a device suspected cloned (refused from now on), audits it and reports it.
    fn mark_clone(&mut self, id: &DeviceId, detail: &str, now: i64) {
        let Some(device) = self.devices.get_mut(id) else {
            return;
        };
        device.state = crate::device::DeviceState::SuspectedClone;
        let account = device.account.clone();
        self.audit(
            AuditRecord::new(
                &account,
                AuditKind::CloneSuspected,
                Actor::Device(id.clone()),
            )
            .device(id)
            .detail(detail),
            now,
        );
        self.security(
            &account,
            SecurityKind::CloneSuspected,
            Some(id),
            None,
            detail,
            now,
        );
    }

    fn ended_audit(challenge: &Challenge, event: &Event) -> AuditRecord {
        let (kind, actor, detail) = match &challenge.state {
            State::Approved(d) => (
                AuditKind::ChallengeApproved,
                Actor::Device(d.clone()),
                String::new(),
            ),
            State::Denied(d, r) => (
                AuditKind::ChallengeDenied,
                Actor::Device(d.clone()),
                r.name().to_owned(),
            ),
            State::FraudReported(d) => (
                AuditKind::FraudReported,
                Actor::Device(d.clone()),
                String::new(),
            ),
            State::Expired => (AuditKind::ChallengeExpired, Actor::Relay, String::new()),
            State::Cancelled | State::Pending => {
                (AuditKind::ChallengeCancelled, Actor::Backend, String::new())
            }
        };
        let mut record = AuditRecord::new(&challenge.account, kind, actor)
            .challenge(&challenge.id)
            .detail(detail);
        if let EventKind::Ended(
            State::Approved(d) | State::Denied(d, _) | State::FraudReported(d),
        ) = &event.kind
        {
            record = record.device(d);
        }
        record
    }

    /// The limit a new challenge of `account` would trip now, with the time to wait.
    fn limit(
        &mut self,
        account: &AccountId,
        source: Option<String>,
        now: i64,
        policy: &LimitPolicy,
    ) -> Option<(LimitRefusal, Duration)> {
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
        let ids = self
            .challenges_by_account
            .get(account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let pending: Vec<i64> = ids
            .iter()
            .filter_map(|id| self.challenges.get(id))
            .filter(|c| c.state == State::Pending && c.expires_at_ms > now)
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

    /// Moves the account's cool-down after one of its challenges ended.
    /// The devices a challenge was pushed to, but `except`, as stored now: whom to withdraw it from.
    fn ended(&self, challenge: Challenge, event: Event, except: Option<&DeviceId>) -> Ended {
        let withdraw = challenge
            .targets
            .iter()
            .filter(|id| Some(*id) != except)
            .filter_map(|id| self.devices.get(id))
            .cloned()
            .collect();
        Ended {
            challenge,
            event,
            withdraw,
        }
    }

    /// With `supersede` on, cancels the oldest pending challenges so that a new one fits under the cap.
    fn supersede(&mut self, account: &AccountId, now: i64, policy: &LimitPolicy) -> Vec<Ended> {
        if !policy.supersede {
            return Vec::new();
        }
        let mut pending: Vec<(i64, ChallengeId)> = self
            .challenges_by_account
            .get(account)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|id| self.challenges.get(id))
            .filter(|c| c.state == State::Pending && c.expires_at_ms > now)
            .map(|c| (c.created_at_ms, c.id.clone()))
            .collect();
        pending.sort();
        let excess = (pending.len() + 1).saturating_sub(policy.max_pending);
        let mut ended = Vec::new();
        for (_, id) in pending.into_iter().take(excess) {
            let Some(c) = self.challenges.get_mut(&id) else {
                continue;
            };
            let Some(event) = c.cancel(now) else {
                continue;
            };
            let challenge = c.clone();
            self.audit(
                Self::ended_audit(&challenge, &event)
                    .actor(Actor::Relay)
                    .detail("superseded"),
                now,
            );
            ended.push(self.ended(challenge, event, None));
        }
        ended
    }

    fn cool(&mut self, challenge: &Challenge, now: i64, policy: &LimitPolicy) {
        let current = self
            .cooldowns
            .get(&challenge.account)
            .copied()
            .unwrap_or_default();
        self.cooldowns.insert(
            challenge.account.clone(),
            current.after(&challenge.state, now, policy),
        );
    }

    fn purge(&mut self, now: i64) {
        let old: Vec<ChallengeId> = self
            .challenges
            .values()
            .filter(|c| c.state.is_terminal() && c.expires_at_ms + RETENTION_MS < now)
            .map(|c| c.id.clone())
            .collect();
        for id in old {
            if let Some(c) = self.challenges.remove(&id) {
                if let Some(list) = self.challenges_by_account.get_mut(&c.account) {
                    list.retain(|x| x != &id);
                }
                if let Some(key) = c.idempotency_key {
                    self.idempotency.remove(&(c.account, key));
                }
            }
        }
        self.enrollments.retain(|_, e| e.expires_at_ms > now);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn now_ms(&self) -> Result<i64, StoreError> {
        Ok(now_ms())
    }

    async fn create_enrollment(
        &self,
        ticket: &Ticket,
        enrollment: &Enrollment,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        inner
            .enrollments
            .insert(ticket.digest(), enrollment.clone());
        inner.audit(
            AuditRecord::new(
                &enrollment.account,
                AuditKind::EnrollmentCreated,
                Actor::Backend,
            ),
            now,
        );
        Ok(())
    }

    async fn enroll(
        &self,
        ticket: &Ticket,
        new: NewDevice,
    ) -> Result<Result<Device, EnrollRefusal>, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let digest = ticket.digest();
        let Some(enrollment) = inner
            .enrollments
            .get(&digest)
            .filter(|e| e.expires_at_ms > now)
            .cloned()
        else {
            return Ok(Err(EnrollRefusal::BadTicket));
        };
        let account = enrollment.account;
        let count = inner.by_account.get(&account).map_or(0, |l| {
            l.iter()
                .filter(|d| {
                    inner
                        .devices
                        .get(*d)
                        .is_some_and(|d| d.state != DeviceState::Revoked)
                })
                .count()
        });
        if count >= MAX_DEVICES {
            return Ok(Err(EnrollRefusal::TooManyDevices));
        }
        inner.enrollments.remove(&digest);
        let device = Device {
            id: DeviceId::generate(&account),
            account: account.clone(),
            platform: new.platform,
            push_token: Some(new.push_token),
            app_id: new.app_id,
            key: new.key,
            display_name: new.display_name,
            created_at_ms: now,
            last_seen_ms: now,
            counter: 0,
            state: DeviceState::Active,
        };
        inner
            .by_account
            .entry(account.clone())
            .or_default()
            .push(device.id.clone());
        inner.devices.insert(device.id.clone(), device.clone());
        let actor = Actor::Device(device.id.clone());
        inner.audit(
            AuditRecord::new(&account, AuditKind::DeviceEnrolled, actor).device(&device.id),
            now,
        );
        inner.security(
            &account,
            SecurityKind::DeviceEnrolled,
            Some(&device.id),
            None,
            "",
            now,
        );
        drop(inner);
        self.security_added.notify_waiters();
        Ok(Ok(device))
    }

    async fn get_device(&self, id: &DeviceId) -> Result<Option<Device>, StoreError> {
        Ok(self.lock().devices.get(id).cloned())
    }

    async fn list_devices(&self, account: &AccountId) -> Result<Vec<Device>, StoreError> {
        let inner = self.lock();
        let ids = inner
            .by_account
            .get(account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(ids
            .iter()
            .filter_map(|id| inner.devices.get(id).cloned())
            .collect())
    }

    async fn revoke_device(
        &self,
        account: &AccountId,
        id: &DeviceId,
        actor: &Actor,
    ) -> Result<Option<Device>, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let Some(device) = inner.devices.get_mut(id).filter(|d| &d.account == account) else {
            return Ok(None);
        };
        if device.state == DeviceState::Revoked {
            return Ok(Some(device.clone()));
        }
        device.state = DeviceState::Revoked;
        let device = device.clone();
        inner.audit(
            AuditRecord::new(account, AuditKind::DeviceRevoked, actor.clone()).device(id),
            now,
        );
        inner.security(
            account,
            SecurityKind::DeviceRevoked,
            Some(id),
            None,
            "",
            now,
        );
        drop(inner);
        self.security_added.notify_waiters();
        Ok(Some(device))
    }

    async fn accept_call(
        &self,
        call: &DeviceCall,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let result = inner.accept(call, now).map(|d| d.clone());
        drop(inner);
        if result == Err(AuthError::CounterNotIncreasing) {
            self.security_added.notify_waiters();
        }
        Ok(result)
    }

    async fn update_push_token(
        &self,
        call: &DeviceCall,
        token: &str,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let (current, flipped) = match inner.accept(call, now) {
            Ok(d) => (d.push_token.clone(), d.push_token.as_deref() != Some(token)),
            Err(e) => return Ok(Err(e)),
        };
        if flipped {
            let (previous, changed_at) = inner
                .token_history
                .get(&call.device)
                .cloned()
                .unwrap_or_default();
            if crate::auth::is_token_flip(previous.as_deref(), changed_at, token, now) {
                inner.mark_clone(&call.device, "push token switched back within a day", now);
                return Ok(Err(AuthError::TokenFlip));
            }
            inner
                .token_history
                .insert(call.device.clone(), (current, now));
        }
        let Some(device) = inner.devices.get_mut(&call.device) else {
            return Ok(Err(AuthError::UnknownDevice));
        };
        device.push_token = Some(token.to_owned());
        let device = device.clone();
        let actor = Actor::Device(device.id.clone());
        inner.audit(
            AuditRecord::new(&device.account, AuditKind::PushTokenUpdated, actor)
                .device(&device.id),
            now,
        );
        Ok(Ok(device))
    }

    async fn rotate_key(
        &self,
        call: &DeviceCall,
        key: &PublicKey,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let device = match inner.accept(call, now) {
            Ok(d) => {
                d.key = key.clone();
                d.clone()
            }
            Err(e) => return Ok(Err(e)),
        };
        let actor = Actor::Device(device.id.clone());
        inner.audit(
            AuditRecord::new(&device.account, AuditKind::KeyRotated, actor).device(&device.id),
            now,
        );
        Ok(Ok(device))
    }

    async fn prune_token(
        &self,
        id: &DeviceId,
        token: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let Some(device) = inner.devices.get_mut(id) else {
            return Ok(());
        };
        // Only the token that failed: the phone may have sent a fresh one meanwhile.
        if device.push_token.as_deref() != Some(token) {
            return Ok(());
        }
        device.push_token = None;
        let account = device.account.clone();
        inner.audit(
            AuditRecord::new(&account, AuditKind::PushTokenPruned, Actor::Relay)
                .device(id)
                .detail(reason),
            now,
        );
        Ok(())
    }

    async fn create_challenge(&self, new: NewChallenge) -> Result<CreateOutcome, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        if let Some(key) = &new.idempotency_key {
            let existing = inner.idempotency.get(&(new.account.clone(), key.clone()));
            if let Some(c) = existing.and_then(|id| inner.challenges.get(id)) {
                return Ok(CreateOutcome::Existing(c.clone()));
            }
        }
        let source = new.context.ip.map(crate::limits::source_key);
        if let Some((reason, after)) = inner.limit(&new.account, source, now, &self.limits) {
            let record = AuditRecord::new(&new.account, AuditKind::RateLimited, Actor::Backend)
                .detail(reason.name());
            inner.audit(record, now);
            inner.security(
                &new.account,
                SecurityKind::LimitTripped,
                None,
                None,
                reason.name(),
                now,
            );
            drop(inner);
            self.security_added.notify_waiters();
            return Ok(CreateOutcome::Limited(reason, after));
        }
        let ids = inner
            .by_account
            .get(&new.account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let excluded = new.context.signing_in_device_id.as_ref();
        let targets: Vec<Device> = ids
            .iter()
            .filter_map(|id| inner.devices.get(id))
            .filter(|d| d.is_pushable() && Some(&d.id) != excluded)
            .cloned()
            .collect();
        if targets.is_empty() {
            return Ok(CreateOutcome::NoDevices);
        }
        let superseded = inner.supersede(&new.account, now, &self.limits);
        let ttl_ms = i64::try_from(new.ttl.as_millis()).unwrap_or(i64::MAX);
        let challenge = Challenge {
            id: new.id,
            account: new.account,
            context: new.context,
            number: new.number,
            targets: targets.iter().map(|d| d.id.clone()).collect(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            ended_at_ms: 0,
            state: State::Pending,
            sequence: 0,
            idempotency_key: new.idempotency_key,
            wrong_answers: 0,
            deliveries: Vec::new(),
        };
        if let Some(key) = &challenge.idempotency_key {
            inner.idempotency.insert(
                (challenge.account.clone(), key.clone()),
                challenge.id.clone(),
            );
        }
        inner
            .challenges_by_account
            .entry(challenge.account.clone())
            .or_default()
            .push(challenge.id.clone());
        inner
            .challenges
            .insert(challenge.id.clone(), challenge.clone());
        inner.audit(
            AuditRecord::new(
                &challenge.account,
                AuditKind::ChallengeCreated,
                Actor::Backend,
            )
            .challenge(&challenge.id)
            .detail(format!("devices={}", challenge.targets.len())),
            now,
        );
        drop(inner);
        for old in &superseded {
            self.publish(&old.event);
        }
        Ok(CreateOutcome::Created(challenge, targets, superseded))
    }

    async fn get_challenge(&self, id: &ChallengeId) -> Result<Option<Challenge>, StoreError> {
        Ok(self.lock().challenges.get(id).cloned())
    }

    async fn respond(
        &self,
        call: &DeviceCall,
        id: &ChallengeId,
        decision: Decision,
        number: u32,
    ) -> Result<RespondOutcome, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let device = match inner.accept(call, now) {
            Ok(d) => d.clone(),
            Err(e) => {
                drop(inner);
                self.security_added.notify_waiters();
                return Ok(Err(e.into()));
            }
        };
        let actor = Actor::Device(device.id.clone());
        let result = match inner
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
        let result = result.map(|(c, e)| inner.ended(c, e, Some(&device.id)));
        match &result {
            Ok(Ended {
                challenge, event, ..
            }) => {
                inner.cool(challenge, now, &self.limits);
                let record = Inner::ended_audit(challenge, event);
                inner.audit(record, now);
                if matches!(challenge.state, State::FraudReported(_)) {
                    inner.security(
                        &device.account,
                        SecurityKind::FraudReported,
                        Some(&device.id),
                        Some(id),
                        "",
                        now,
                    );
                }
            }
            Err(refusal) => {
                let detail = match refusal {
                    DeviceRefusal::Respond(RespondError::WrongNumber { .. }) => {
                        "wrong_number".to_owned()
                    }
                    DeviceRefusal::Respond(RespondError::MissingNumber) => {
                        "missing_number".to_owned()
                    }
                    DeviceRefusal::Respond(RespondError::UnexpectedNumber) => {
                        "unexpected_number".to_owned()
                    }
                    DeviceRefusal::Respond(RespondError::Late) => "late".to_owned(),
                    DeviceRefusal::Respond(RespondError::Ended(s)) => {
                        format!("already_{}", s.name())
                    }
                    DeviceRefusal::Respond(RespondError::NotTargeted)
                    | DeviceRefusal::ChallengeNotFound => "not_targeted".to_owned(),
                    DeviceRefusal::Auth(e) => e.reason().to_owned(),
                };
                let record = AuditRecord::new(&device.account, AuditKind::RequestRefused, actor)
                    .challenge(id)
                    .device(&device.id)
                    .detail(detail);
                inner.audit(record, now);
            }
        }
        drop(inner);
        if let Ok(Ended {
            challenge, event, ..
        }) = &result
        {
            self.publish(event);
            if matches!(challenge.state, State::FraudReported(_)) {
                self.security_added.notify_waiters();
            }
        }
        Ok(result)
    }

    async fn expire(&self, id: &ChallengeId) -> Result<ExpireOutcome, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let Some(c) = inner.challenges.get_mut(id) else {
            return Ok(ExpireOutcome::Ended);
        };
        let mut published = None;
        let outcome = match c.expire(now) {
            Ok(event) => {
                let challenge = c.clone();
                inner.cool(&challenge, now, &self.limits);
                let record = Inner::ended_audit(&challenge, &event);
                inner.audit(record, now);
                published = Some(event.clone());
                ExpireOutcome::Expired(Box::new(inner.ended(challenge, event, None)))
            }
            Err(ExpireRefusal::NotDue(ms)) => {
                ExpireOutcome::NotDue(Duration::from_millis(ms.unsigned_abs()))
            }
            Err(ExpireRefusal::Ended) => ExpireOutcome::Ended,
        };
        drop(inner);
        if let Some(event) = &published {
            self.publish(event);
        }
        Ok(outcome)
    }

    async fn cancel(
        &self,
        id: &ChallengeId,
    ) -> Result<Option<Result<Ended, Challenge>>, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let Some(c) = inner.challenges.get_mut(id) else {
            return Ok(None);
        };
        let Some(event) = c.cancel(now) else {
            return Ok(Some(Err(c.clone())));
        };
        let challenge = c.clone();
        let record = Inner::ended_audit(&challenge, &event);
        inner.audit(record, now);
        let ended = inner.ended(challenge, event, None);
        drop(inner);
        self.publish(&ended.event);
        Ok(Some(Ok(ended)))
    }

    async fn record_deliveries(
        &self,
        id: &ChallengeId,
        outcomes: &[(DeviceId, Option<String>)],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let mut events = Vec::new();
        for (device, failure) in outcomes {
            let Some(c) = inner.challenges.get_mut(id) else {
                return Ok(());
            };
            events.extend(c.record_delivery(device, failure.clone(), now));
            let kind = if failure.is_some() {
                AuditKind::PushFailed
            } else {
                AuditKind::PushDelivered
            };
            let record = AuditRecord::new(&c.account, kind, Actor::Relay)
                .challenge(id)
                .device(device)
                .detail(failure.clone().unwrap_or_default());
            inner.audit(record, now);
        }
        drop(inner);
        for event in &events {
            self.publish(event);
        }
        Ok(())
    }

    async fn list_pending(&self, device: &DeviceId) -> Result<Vec<Challenge>, StoreError> {
        let now = now_ms();
        let inner = self.lock();
        let Some(account) = inner.devices.get(device).map(|d| &d.account) else {
            return Ok(Vec::new());
        };
        let ids = inner
            .challenges_by_account
            .get(account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(ids
            .iter()
            .filter_map(|id| inner.challenges.get(id))
            .filter(|c| c.state == State::Pending && c.expires_at_ms > now && c.is_targeted(device))
            .cloned()
            .collect())
    }

    async fn overdue(&self, limit: usize) -> Result<Vec<ChallengeId>, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        inner.purge(now);
        Ok(inner
            .challenges
            .values()
            .filter(|c| c.state == State::Pending && c.expires_at_ms <= now)
            .take(limit)
            .map(|c| c.id.clone())
            .collect())
    }

    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        let now = now_ms();
        self.lock().audit(record, now);
        Ok(())
    }

    async fn report(&self, record: AuditRecord, kind: SecurityKind) -> Result<(), StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        inner.security(
            &record.account,
            kind,
            record.device.as_ref(),
            record.challenge.as_ref(),
            &record.detail,
            now,
        );
        inner.audit(record, now);
        drop(inner);
        self.security_added.notify_waiters();
        Ok(())
    }

    async fn create_notice(
        &self,
        id: NoticeId,
        draft: NoticeDraft,
    ) -> Result<Option<(Notice, Vec<Device>)>, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let devices: Vec<Device> = inner
            .by_account
            .get(&draft.account)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.devices.get(id))
            .filter(|d| d.state == DeviceState::Active && !draft.skips(&d.id))
            .cloned()
            .collect();
        if devices.is_empty() {
            return Ok(None);
        }
        let notice = draft.into_notice(id, devices.iter().map(|d| d.id.clone()).collect(), now);
        let ids = inner
            .notices_by_account
            .entry(notice.account.clone())
            .or_default();
        ids.push_back(notice.id.clone());
        let dropped = (ids.len() > NOTICES_PER_ACCOUNT)
            .then(|| ids.pop_front())
            .flatten();
        if let Some(old) = dropped {
            inner.notices.remove(&old);
        }
        inner.notices.insert(notice.id.clone(), notice.clone());
        let mut record = AuditRecord::new(&notice.account, AuditKind::NoticeSent, Actor::Relay)
            .detail(format!("{} {}", notice.kind.name(), notice.id));
        if let Some(device) = &notice.subject {
            record = record.device(device);
        }
        if let Some(challenge) = &notice.challenge {
            record = record.challenge(challenge);
        }
        inner.audit(record, now);
        Ok(Some((notice, devices)))
    }

    async fn get_notice(&self, id: &NoticeId) -> Result<Option<Notice>, StoreError> {
        let now = now_ms();
        Ok(self
            .lock()
            .notices
            .get(id)
            .filter(|n| n.expires_at_ms > now)
            .cloned())
    }

    async fn list_notices(&self, account: &AccountId) -> Result<Vec<Notice>, StoreError> {
        let now = now_ms();
        let inner = self.lock();
        Ok(inner
            .notices_by_account
            .get(account)
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|id| inner.notices.get(id))
            .filter(|n| n.expires_at_ms > now)
            .cloned()
            .collect())
    }

    async fn list_audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let before = match before {
            None => u64::MAX,
            Some(p) => p.parse::<u64>().map_err(|_| StoreError::InvalidPosition)?,
        };
        let inner = self.lock();
        let Some((_, list)) = inner.audit.get(account) else {
            return Ok(AuditPage {
                records: Vec::new(),
                next: None,
            });
        };
        let mut older = list
            .iter()
            .rev()
            .filter(|r| r.position.parse::<u64>().is_ok_and(|p| p < before));
        let records: Vec<StoredAudit> = older.by_ref().take(limit).cloned().collect();
        let next = if older.next().is_some() {
            records.last().map(|r| r.position.clone())
        } else {
            None
        };
        Ok(AuditPage { records, next })
    }

    async fn security_events(
        &self,
        after: Option<&str>,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<SecurityEvent>, StoreError> {
        let after = match after {
            None => 0,
            Some(p) => p.parse::<u64>().map_err(|_| StoreError::InvalidPosition)?,
        };
        let read = || -> Vec<SecurityEvent> {
            self.lock()
                .security
                .iter()
                .filter(|e| e.position.parse::<u64>().is_ok_and(|p| p > after))
                .take(limit)
                .cloned()
                .collect()
        };
        // Register interest before reading, so an event added in between still wakes us.
        let notified = self.security_added.notified();
        let events = read();
        if !events.is_empty() || wait.is_zero() {
            return Ok(events);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        Ok(read())
    }

    async fn subscribe(&self, _id: &ChallengeId) -> Result<(), StoreError> {
        // Events are handed to the hub in the same step that changes the state: nothing to subscribe to.
        Ok(())
    }
}
