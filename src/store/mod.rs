//! The `Store` seam: everything the relay keeps (devices, enrollments, challenges, counters, audit,
//! security events) and the atomic transitions on it. Each method that changes state is one atomic step
//! that also appends its audit record and publishes its event, so the Redis implementation can run it as
//! a single script. `memory.rs` keeps every guarantee inside one process.

pub mod memory;
pub mod redis;
pub mod trail;

use crate::audit::{Actor, AuditRecord, SecurityEvent, SecurityKind, StoredAudit};
use crate::auth::{AuthError, PublicKey};
use crate::challenge::NoticeId;
use crate::challenge::{
    AccountId, Challenge, ChallengeId, Decision, DeviceId, Event, LoginContext, NumberMatch,
    RespondError,
};
use crate::device::{Device, Enrollment, Platform, Ticket};
use crate::factor::{Authenticator, CodeCheck, CodeMatch};
use crate::known::{KnownKey, Remembered};
use crate::notice::{Notice, NoticeDraft};
use async_trait::async_trait;
use std::time::Duration;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// The store could not do its job (not a refusal: those are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backing store holds data the relay cannot read.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// A position token that this store did not issue.
    #[error("position is not valid")]
    InvalidPosition,
}

/// A correctly signed device request, ready for the counter rule.
#[derive(Debug, Clone)]
pub struct DeviceCall {
    /// The device that signed it.
    pub device: DeviceId,
    /// Its signed counter.
    pub counter: u64,
    /// The key its signature verified with: the step refuses the call (`BadSignature`, nothing changed)
    /// when the device's key is no longer this one.
    pub key: crate::auth::PublicKey,
}

/// Why a device's request was refused inside a store step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceRefusal {
    /// The device itself is refused (unknown, revoked, clone, replayed counter).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The answer is refused.
    #[error(transparent)]
    Respond(#[from] RespondError),
    /// No such challenge.
    #[error("challenge not found")]
    ChallengeNotFound,
}

/// A device to register, as the phone described it.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Its id, issued in the slot of the ticket's tag before the enrollment step (so that its
    /// offline-code secret can be sealed to it beforehand).
    pub id: DeviceId,
    /// Its offline-code secret, sealed (`factor::device_seal_context`), saved in the same step.
    pub offline_code: Option<String>,
    /// Push service.
    pub platform: Platform,
    /// Provider token; empty for a poll-only device.
    pub push_token: String,
    /// Its second channel, if it registered one.
    pub fallback: Option<crate::device::Fallback>,
    /// APNs topic or Android package.
    pub app_id: String,
    /// The device key.
    pub key: PublicKey,
    /// What the owner calls it.
    pub display_name: String,
    /// The verdict on its key attestation (verified before the store step).
    pub attestation: crate::attest::Verdict,
}

/// An authenticator to save; the store sets its clock fields.
#[derive(Debug, Clone)]
pub struct NewAuthenticator {
    /// The device's id, or a standalone id (`factor::standalone_id`).
    pub id: String,
    /// The device it lives on.
    pub device: Option<DeviceId>,
    /// The sealed secret.
    pub sealed: String,
    /// Pending (standalone) until its first correct code, at most this long.
    pub pending: Option<Duration>,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    /// Unknown, already used or expired ticket (not told apart, so tickets cannot be probed).
    #[error("ticket is unknown, used or expired")]
    BadTicket,
    /// The account has as many devices as allowed.
    #[error("account has the maximum number of devices")]
    TooManyDevices,
}

/// A challenge to create; the store picks the targets and the clock.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    /// Pre-generated id (carries the account's tag).
    pub id: ChallengeId,
    /// Whose devices answer.
    pub account: AccountId,
    /// Who is signing in.
    pub context: LoginContext,
    /// The number drawn for it.
    pub number: NumberMatch,
    /// Lifetime from the store's clock.
    pub ttl: Duration,
    /// The backend's idempotency key.
    pub idempotency_key: Option<String>,
    /// Push only devices whose attestation meets this.
    pub min_assurance: crate::attest::Assurance,
}

/// What `create_challenge` did.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// Created; push it to these devices. The last field holds the pending challenges it superseded
    /// (now CANCELLED, their events published), whose prompts must be withdrawn.
    Created(Challenge, Vec<Device>, Vec<Ended>),
    /// The idempotency key matched this challenge; push nothing.
    Existing(Challenge),
    /// The account has no device to push to.
    NoDevices,
    /// The account has active devices, but none meets `min_assurance`.
    NoDeviceMeetsAssurance,
    /// A push-bombing limit refused it; try again after the duration.
    Limited(crate::limits::LimitRefusal, Duration),
}

/// A challenge that has just ended: its terminal event, and the devices to withdraw its prompt from
/// (every targeted device but the one that decided, as stored at that instant, so withdrawing reads
/// nothing more).
#[derive(Debug, Clone)]
pub struct Ended {
    /// The challenge in its terminal state.
    pub challenge: Challenge,
    /// Its terminal event (already published).
    pub event: Event,
    /// Whom to tell to remove the prompt.
    pub withdraw: Vec<Device>,
}

/// What `respond` did.
pub type RespondOutcome = Result<Ended, DeviceRefusal>;

/// What `expire` did.
#[derive(Debug, Clone)]
pub enum ExpireOutcome {
    /// Ended `Expired` now (its event was published).
    Expired(Box<Ended>),
    /// Not due for this many ms.
    NotDue(Duration),
    /// Already ended or gone.
    Ended,
}

/// A device request that failed authentication (unknown device, bad or malformed signature, device id
/// mismatch, stale timestamp), to count against the budgets of `limits::FailureBudget`.
#[derive(Debug, Clone)]
pub struct AuthFailure {
    /// The device the request named and its account, when such a device exists.
    pub device: Option<(DeviceId, AccountId)>,
    /// The peer address's budget key (`limits::source_key`), when the transport knows it.
    pub source: Option<String>,
    /// Why it failed (`AuthError::reason`).
    pub reason: &'static str,
}

/// What counting an authentication failure decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Within both budgets: recorded in the account's refusal trail (when the device is known).
    Counted,
    /// A budget is spent: refuse RESOURCE_EXHAUSTED; only a first trip was recorded (and reported as a
    /// LIMIT_TRIPPED security event when the device is known).
    Limited {
        /// Which budget.
        limit: crate::limits::LimitRefusal,
        /// Until it has room again.
        wait: Duration,
        /// This failure tripped it.
        first_trip: bool,
    },
}

/// The pushes of a challenge owed by `owner`, whose check came due (see `challenge::pushes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PushWork {
    /// The challenge.
    pub challenge: ChallengeId,
    /// The replica that owes them.
    pub owner: String,
}

/// What the periodic sweep found due.
#[derive(Debug, Clone, Default)]
pub struct Due {
    /// Pending challenges whose deadline passed (each handed out once).
    pub overdue: Vec<ChallengeId>,
    /// Pushes whose owner should have finished by now.
    pub pushes: Vec<PushWork>,
    /// Parts of the index that could not be read (a Cluster node down); the rest was swept.
    pub unreachable: usize,
}

/// What claiming a challenge's unfinished pushes did.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// Nothing to send (the challenge ended or is gone, every device has its outcome, or another replica
    /// owns the pushes now); the work is forgotten.
    Nothing,
    /// Claimed by this replica: send the challenge to these devices.
    Send(Box<Challenge>, Vec<Device>),
    /// Too late or claimed once already: this many devices were recorded DELIVERY_FAILED `relay_lost`.
    GaveUp(usize),
}

/// A page of an account's audit trail.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// Newest first.
    pub records: Vec<StoredAudit>,
    /// Position to pass for the next (older) page.
    pub next: Option<String>,
}

/// An account's state a sign-in is evaluated against ([`Store::sign_in_facts`]).
#[derive(Debug, Clone)]
pub struct SignInFacts {
    /// Remembered sign-in devices and places, expired ones included.
    pub known: Remembered,
    /// Devices, oldest first.
    pub devices: Vec<Device>,
    /// Authenticators, unusable ones included.
    pub authenticators: Vec<Authenticator>,
    /// The store's clock, Unix ms.
    pub now_ms: i64,
}

/// The relay's persistence and atomic transitions. Every mutating method is one atomic step.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store's clock in Unix ms: the one clock deadlines are judged by.
    async fn now_ms(&self) -> Result<i64, StoreError>;
    /// The store's clock as last read plus the time since, when that reading is a few seconds old at
    /// most; `None` when it must be read. For checks with seconds of tolerance (a signed timestamp's
    /// window), never for deadlines.
    fn recent_now_ms(&self) -> Option<i64> {
        None
    }

    /// Saves an enrollment ticket (by digest) and audits it.
    async fn create_enrollment(
        &self,
        ticket: &Ticket,
        enrollment: &Enrollment,
    ) -> Result<(), StoreError>;
    /// Consumes a ticket and registers the device, audited and reported as a security event.
    async fn enroll(
        &self,
        ticket: &Ticket,
        device: NewDevice,
    ) -> Result<Result<Device, EnrollRefusal>, StoreError>;
    /// Reads a device.
    async fn get_device(&self, id: &DeviceId) -> Result<Option<Device>, StoreError>;
    /// Reads a device and the store clock together (one round trip where the store can).
    async fn device_and_time(&self, id: &DeviceId) -> Result<(Option<Device>, i64), StoreError> {
        Ok((self.get_device(id).await?, self.now_ms().await?))
    }
    /// Lists an account's devices, oldest first.
    async fn list_devices(&self, account: &AccountId) -> Result<Vec<Device>, StoreError>;
    /// Revokes a device of an account on `actor`'s word, audited and reported as a security event;
    /// `None` when the account has no such device.
    async fn revoke_device(
        &self,
        account: &AccountId,
        id: &DeviceId,
        actor: &Actor,
    ) -> Result<Option<Device>, StoreError>;
    /// Applies the counter rule to a signed call (marking, auditing and reporting a clone).
    async fn accept_call(&self, call: &DeviceCall)
    -> Result<Result<Device, AuthError>, StoreError>;
    /// Counter rule, then replaces the push token (and the fallback's, when given and the device has a
    /// fallback channel).
    async fn update_push_token(
        &self,
        call: &DeviceCall,
        token: &str,
        fallback: Option<&str>,
    ) -> Result<Result<Device, AuthError>, StoreError>;
    /// Counter rule, then replaces the key.
    async fn rotate_key(
        &self,
        call: &DeviceCall,
        key: &PublicKey,
    ) -> Result<Result<Device, AuthError>, StoreError>;
    /// Removes a token a provider reported dead, and audits it.
    async fn prune_token(&self, id: &DeviceId, token: &str, reason: &str)
    -> Result<(), StoreError>;

    /// Creates a challenge for every active device of the account except the signing-in one,
    /// or returns the one with the same idempotency key.
    async fn create_challenge(&self, new: NewChallenge) -> Result<CreateOutcome, StoreError>;
    /// Reads a challenge.
    async fn get_challenge(&self, id: &ChallengeId) -> Result<Option<Challenge>, StoreError>;
    /// The counter rule for a signed call, then the challenge it asks about (nothing is read for a
    /// refused call); one round trip where the store can.
    async fn accept_and_get_challenge(
        &self,
        call: &DeviceCall,
        id: &ChallengeId,
    ) -> Result<Result<Option<Challenge>, AuthError>, StoreError> {
        match self.accept_call(call).await? {
            Ok(_) => Ok(Ok(self.get_challenge(id).await?)),
            Err(refused) => Ok(Err(refused)),
        }
    }
    /// Counter rule, then the device's answer; audited (refusals too) and published. An approval makes
    /// the sign-in's keys (`known::keys_of` of the challenge's context) known in the same step, as
    /// [`Store::remember_sign_in`] does with `remember` as its window.
    async fn respond(
        &self,
        call: &DeviceCall,
        id: &ChallengeId,
        decision: Decision,
        number: u32,
        remember: Duration,
    ) -> Result<RespondOutcome, StoreError>;
    /// Ends a challenge `Expired` if its deadline passed by the store's clock.
    async fn expire(&self, id: &ChallengeId) -> Result<ExpireOutcome, StoreError>;
    /// Ends a challenge `Cancelled`; `Err` inside when it had already ended (its state attached).
    async fn cancel(
        &self,
        id: &ChallengeId,
    ) -> Result<Option<Result<Ended, Challenge>>, StoreError>;
    /// Records push outcomes, in order, as events (while the challenge is pending) and audit records, in
    /// one atomic step. Each outcome is a device and its delivery state (`Pending` is skipped). With
    /// `finished`, these are the last outcomes this replica owes: its push work is done.
    async fn record_deliveries(
        &self,
        id: &ChallengeId,
        outcomes: &[(DeviceId, crate::challenge::DeliveryState)],
        finished: bool,
    ) -> Result<(), StoreError>;
    /// Pending challenges pushed to a device, oldest first.
    async fn list_pending(&self, device: &DeviceId) -> Result<Vec<Challenge>, StoreError>;
    /// Overdue challenges and due push work, at most `limit` of each: for the periodic sweep.
    async fn due(&self, limit: usize) -> Result<Due, StoreError>;
    /// Looks at these pushes again after another lease (their owner is alive and still sending).
    async fn defer_pushes(&self, work: &[PushWork]) -> Result<(), StoreError>;
    /// Claims unfinished pushes for this replica if `work.owner` still owes them (one atomic step).
    async fn claim_pushes(&self, work: &PushWork) -> Result<ClaimOutcome, StoreError>;
    /// The id this replica owes pushes under.
    fn replica(&self) -> &str;
    /// Says this replica is alive (for a few seconds).
    async fn heartbeat(&self) -> Result<(), StoreError>;
    /// Whether `replica` said it is alive lately.
    async fn replica_alive(&self, replica: &str) -> Result<bool, StoreError>;

    /// Appends an audit record on its own (for refusals decided outside a store step).
    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError>;
    /// Appends an audit record and reports it as a security event of `kind` (same device, challenge
    /// and detail).
    async fn report(&self, record: AuditRecord, kind: SecurityKind) -> Result<(), StoreError>;
    /// Counts a device request that failed authentication against the budgets of the device it named
    /// and of its peer address; while both have room it is recorded in the account's refusal trail,
    /// which is capped apart from the real records (DESIGN.md guarantee 11).
    async fn auth_failure(&self, failure: &AuthFailure) -> Result<FailureOutcome, StoreError>;

    /// Sends a notice to every active device of the account the draft does not skip: saves it until it
    /// expires, lists it among the account's newest (older ones are dropped), and audits it, in one
    /// atomic step. `None` when no device is left to tell.
    async fn create_notice(
        &self,
        id: NoticeId,
        draft: NoticeDraft,
    ) -> Result<Option<(Notice, Vec<Device>)>, StoreError>;
    /// Reads a notice that has not expired.
    async fn get_notice(&self, id: &NoticeId) -> Result<Option<Notice>, StoreError>;
    /// An account's unexpired notices, newest first, at most `notice::NOTICES_PER_ACCOUNT`.
    async fn list_notices(&self, account: &AccountId) -> Result<Vec<Notice>, StoreError>;
    /// Pages an account's audit trail (its real records and its refusal trail merged, see `trail.rs`),
    /// newest first, starting at the page token `before`.
    async fn list_audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, StoreError>;
    /// Security events after `after`, waiting up to `wait` for one if there is none yet.
    async fn security_events(
        &self,
        after: Option<&str>,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<SecurityEvent>, StoreError>;

    /// Starts receiving a challenge's events into the watch hub. Call before reading its state.
    async fn subscribe(&self, id: &ChallengeId) -> Result<(), StoreError>;

    /// An account's remembered sign-in devices and places (`known`), expired ones included.
    async fn known_sign_ins(&self, account: &AccountId) -> Result<Remembered, StoreError>;
    /// Remembers the keys of an approved sign-in: applies `known::remember` (window and caps) in one
    /// atomic step, and keeps the set for `window` after this approval.
    async fn remember_sign_in(
        &self,
        account: &AccountId,
        keys: &[KnownKey],
        window: Duration,
    ) -> Result<(), StoreError>;
    /// Forgets one remembered key (`Some(field)`) or all of them, audited KNOWN_SIGN_INS_FORGOTTEN with
    /// `why` when anything was forgotten; returns how many.
    async fn forget_sign_ins(
        &self,
        account: &AccountId,
        field: Option<&str>,
        actor: &Actor,
        why: &str,
    ) -> Result<usize, StoreError>;

    /// Saves a new authenticator (audited AUTHENTICATOR_CREATED), pending for `pending` when given;
    /// `false` when it is standalone and the account has `factor::MAX_STANDALONE` usable ones already.
    async fn save_authenticator(
        &self,
        account: &AccountId,
        new: &NewAuthenticator,
    ) -> Result<bool, StoreError>;
    /// An account's authenticators, unusable ones included.
    async fn authenticators(&self, account: &AccountId) -> Result<Vec<Authenticator>, StoreError>;
    /// What evaluating a sign-in reads (known sign-ins, devices, authenticators, the store clock), in
    /// one round trip where the store can. Reads only: no atomicity is promised or needed.
    async fn sign_in_facts(&self, account: &AccountId) -> Result<SignInFacts, StoreError> {
        let (known, devices, authenticators, now_ms) = tokio::try_join!(
            self.known_sign_ins(account),
            self.list_devices(account),
            self.authenticators(account),
            self.now_ms(),
        )?;
        Ok(SignInFacts {
            known,
            devices,
            authenticators,
            now_ms,
        })
    }
    /// Deletes an authenticator (with its device, or a pending one that expired); whether it existed.
    async fn remove_authenticator(&self, account: &AccountId, id: &str)
    -> Result<bool, StoreError>;
    /// One code check as one atomic step: refused while the account's budget of wrong codes is spent
    /// (LIMIT_TRIPPED on its first trip); else accepts `matched` if its step is fresh (marking it used,
    /// activating a pending authenticator, auditing CODE_VERIFIED), or counts a wrong or replayed code
    /// (CODE_REFUSED in the refusal trail).
    async fn check_code(
        &self,
        account: &AccountId,
        matched: Option<&CodeMatch>,
    ) -> Result<CodeCheck, StoreError>;
}
