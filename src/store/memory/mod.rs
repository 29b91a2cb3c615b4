//! The embedded in-memory store: development mode and single-process tests. One mutex around all state
//! makes every method one atomic step, as a Lua script is in Redis; it is never held across an await.
//! Each step is a synchronous method of [`State`] (in `devices.rs`, `challenges.rs`, `records.rs`);
//! this file takes the lock, runs it, and afterwards hands the step's events to the watch hub and wakes
//! security-event readers. Retention mirrors the Redis TTLs: ended challenges are forgotten an hour
//! after their deadline.

mod challenges;
mod devices;
mod factors;
mod records;
mod state;

use super::*;
use crate::limits::LimitPolicy;
use crate::watch::Hub;
use state::State;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

pub use super::trail::AUDIT_CAP;

/// Security events kept in all.
pub const SECURITY_CAP: usize = 10_000;
/// How long an ended challenge stays readable after its deadline.
pub const RETENTION_MS: i64 = 3_600_000;
/// Most devices per account that are not revoked.
pub const MAX_DEVICES: usize = 16;

/// Everything in one process's memory.
pub struct MemoryStore {
    state: Mutex<State>,
    replica: String,
    hub: Arc<Hub>,
    security_added: Notify,
}

use crate::clock::now_ms;

impl MemoryStore {
    /// An empty store publishing into `hub`, applying `limits`, owing pushes as `replica`.
    pub fn new(hub: Arc<Hub>, limits: LimitPolicy, replica: String) -> Self {
        Self {
            state: Mutex::new(State::new(limits, replica.clone())),
            replica,
            hub,
            security_added: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one atomic step at the store's clock, then publishes what it emitted.
    fn step<T>(&self, f: impl FnOnce(&mut State, i64) -> T) -> Result<T, StoreError> {
        let mut state = self.lock();
        let out = f(&mut state, now_ms());
        let after = std::mem::take(&mut state.after);
        drop(state);
        for event in &after.events {
            self.hub.dispatch(event);
        }
        if after.security {
            self.security_added.notify_waiters();
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn now_ms(&self) -> Result<i64, StoreError> {
        Ok(now_ms())
    }

    fn recent_now_ms(&self) -> Option<i64> {
        Some(now_ms())
    }

    async fn create_enrollment(
        &self,
        ticket: &Ticket,
        enrollment: &Enrollment,
    ) -> Result<(), StoreError> {
        self.step(|s, now| s.create_enrollment(ticket, enrollment, now))
    }

    async fn enroll(
        &self,
        ticket: &Ticket,
        new: NewDevice,
    ) -> Result<Result<Device, EnrollRefusal>, StoreError> {
        self.step(|s, now| s.enroll(ticket, new, now))
    }

    async fn get_device(&self, id: &DeviceId) -> Result<Option<Device>, StoreError> {
        Ok(self.lock().devices.get(id).cloned())
    }

    async fn list_devices(&self, account: &AccountId) -> Result<Vec<Device>, StoreError> {
        Ok(self.lock().list_devices(account))
    }

    async fn revoke_device(
        &self,
        account: &AccountId,
        id: &DeviceId,
        actor: &Actor,
    ) -> Result<Option<Device>, StoreError> {
        self.step(|s, now| s.revoke_device(account, id, actor, now))
    }

    async fn accept_call(
        &self,
        call: &DeviceCall,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        self.step(|s, now| s.accept(call, now).map(|d| d.clone()))
    }

    async fn update_push_token(
        &self,
        call: &DeviceCall,
        token: &str,
        fallback: Option<&str>,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        self.step(|s, now| s.update_push_token(call, token, fallback, now))
    }

    async fn rotate_key(
        &self,
        call: &DeviceCall,
        key: &PublicKey,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        self.step(|s, now| s.rotate_key(call, key, now))
    }

    async fn prune_token(
        &self,
        id: &DeviceId,
        token: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.step(|s, now| s.prune_token(id, token, reason, now))
    }

    async fn create_challenge(&self, new: NewChallenge) -> Result<CreateOutcome, StoreError> {
        self.step(|s, now| s.create_challenge(new, now))
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
        remember: Duration,
    ) -> Result<RespondOutcome, StoreError> {
        self.step(|s, now| s.respond(call, id, decision, number, remember, now))
    }

    async fn expire(&self, id: &ChallengeId) -> Result<ExpireOutcome, StoreError> {
        self.step(|s, now| s.expire(id, now))
    }

    async fn cancel(
        &self,
        id: &ChallengeId,
    ) -> Result<Option<Result<Ended, Challenge>>, StoreError> {
        self.step(|s, now| s.cancel(id, now))
    }

    async fn record_deliveries(
        &self,
        id: &ChallengeId,
        outcomes: &[(DeviceId, crate::challenge::DeliveryState)],
        finished: bool,
    ) -> Result<(), StoreError> {
        self.step(|s, now| s.record_deliveries(id, outcomes, finished, now))
    }

    async fn list_pending(&self, device: &DeviceId) -> Result<Vec<Challenge>, StoreError> {
        Ok(self.lock().list_pending(device, now_ms()))
    }

    async fn due(&self, limit: usize) -> Result<Due, StoreError> {
        self.step(|s, now| s.due(limit, now))
    }

    async fn defer_pushes(&self, work: &[PushWork]) -> Result<(), StoreError> {
        self.step(|s, now| s.defer_pushes(work, now))
    }

    async fn claim_pushes(&self, work: &PushWork) -> Result<ClaimOutcome, StoreError> {
        self.step(|s, now| s.claim_pushes(work, now))
    }

    fn replica(&self) -> &str {
        &self.replica
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        // One process, one replica: it is alive while it answers.
        Ok(())
    }

    async fn replica_alive(&self, replica: &str) -> Result<bool, StoreError> {
        Ok(replica == self.replica)
    }

    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.step(|s, now| s.audit(record, now))
    }

    async fn report(&self, record: AuditRecord, kind: SecurityKind) -> Result<(), StoreError> {
        self.step(|s, now| s.report(record, kind, now))
    }

    async fn auth_failure(&self, failure: &AuthFailure) -> Result<FailureOutcome, StoreError> {
        self.step(|s, now| s.auth_failure(failure, now))
    }

    async fn create_notice(
        &self,
        id: NoticeId,
        draft: NoticeDraft,
    ) -> Result<Option<(Notice, Vec<Device>)>, StoreError> {
        self.step(|s, now| s.create_notice(id, draft, now))
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
        Ok(self.lock().list_notices(account, now_ms()))
    }

    async fn list_audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        self.lock().list_audit(account, before, limit)
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
        // Register interest before reading, so an event added in between still wakes us.
        let notified = self.security_added.notified();
        let events = self.lock().security_after(after, limit);
        if !events.is_empty() || wait.is_zero() {
            return Ok(events);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        Ok(self.lock().security_after(after, limit))
    }

    async fn subscribe(&self, _id: &ChallengeId) -> Result<(), StoreError> {
        // Events are handed to the hub in the same step that changes the state: nothing to subscribe to.
        Ok(())
    }

    async fn known_sign_ins(&self, account: &AccountId) -> Result<Remembered, StoreError> {
        self.step(|s, now| s.known_sign_ins(account, now))
    }

    async fn remember_sign_in(
        &self,
        account: &AccountId,
        keys: &[KnownKey],
        window: Duration,
    ) -> Result<(), StoreError> {
        self.step(|s, now| s.remember_sign_in(account, keys, window, now))
    }

    async fn forget_sign_ins(
        &self,
        account: &AccountId,
        field: Option<&str>,
        actor: &Actor,
        why: &str,
    ) -> Result<usize, StoreError> {
        self.step(|s, now| s.forget_sign_ins(account, field, actor, why, now))
    }

    async fn save_authenticator(
        &self,
        account: &AccountId,
        new: &NewAuthenticator,
    ) -> Result<bool, StoreError> {
        self.step(|s, now| s.save_authenticator(account, new, now))
    }

    async fn authenticators(&self, account: &AccountId) -> Result<Vec<Authenticator>, StoreError> {
        self.step(|s, _| s.authenticators(account))
    }

    async fn remove_authenticator(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<bool, StoreError> {
        self.step(|s, _| s.remove_authenticator(account, id))
    }

    async fn check_code(
        &self,
        account: &AccountId,
        matched: Option<&CodeMatch>,
    ) -> Result<CodeCheck, StoreError> {
        self.step(|s, now| s.check_code(account, matched, now))
    }
}
