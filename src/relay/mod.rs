//! The use cases: what each API call does, on domain types. Handlers in `grpc/` parse protobuf into the
//! arguments here and map the results back; this module checks signatures (via `auth`), asks the store
//! for each atomic step, and starts pushes, withdrawals and expiry timers.

use crate::audit::SecurityEvent;
use crate::challenge::{
    AccountId, Challenge, ChallengeId, DeviceId, Event, LoginContext, NumberMatch, NumberMode,
};
use crate::device::{Device, Enrollment, Ticket};
use crate::error::Error;
use crate::expiry::{ExpiryHandle, Timer};
use crate::push::Dispatcher;
use crate::store::{AuditPage, CreateOutcome, DeviceCall, Ended, NewChallenge, Store};
use crate::watch::{Hub, Registration, Sink};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

mod device;
mod device_cache;
mod factors;
mod notice;
mod sweep;

pub use factors::{NewStandalone, SignInVerdict};

pub use device::{EnrollCall, rotate_key_message};
pub use notice::Revoked;

/// The limits and defaults the use cases apply.
#[derive(Debug, Clone)]
pub struct Policy {
    /// TTL when the backend gives none.
    pub default_ttl: Duration,
    /// Shortest TTL accepted.
    pub min_ttl: Duration,
    /// Longest TTL accepted.
    pub max_ttl: Duration,
    /// Accepted difference between a device's signed timestamp and the store clock.
    pub timestamp_window: Duration,
    /// Enrollment ticket lifetime when the backend gives none.
    pub default_enrollment_ttl: Duration,
    /// Address the enrollment URI tells phones to use.
    pub public_device_address: String,
    /// Numbers the owner may type in mode TYPE before a wrong one ends the challenge DENIED.
    pub type_number_attempts: u32,
    /// How long an approved sign-in's device and place stay known after it.
    pub remember_window: Duration,
    /// Issuer in otpauth:// URIs.
    pub totp_issuer: String,
    /// Key attestation at enrollment: roots, allow-lists, requirement.
    pub attestation: crate::attest::Policy,
    /// Devices kept as last read for the next signed request (`device_cache`); 0 keeps none.
    pub device_cache_entries: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(60),
            min_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(600),
            timestamp_window: Duration::from_secs(300),
            default_enrollment_ttl: Duration::from_secs(600),
            public_device_address: "127.0.0.1:50052".into(),
            type_number_attempts: 1,
            remember_window: Duration::from_secs(30 * 86_400),
            totp_issuer: "approval-relay".into(),
            attestation: crate::attest::Policy::default(),
            device_cache_entries: DEVICE_CACHE_ENTRIES,
        }
    }
}

/// Devices a replica keeps as last read, by default: ~1 KB each.
pub const DEVICE_CACHE_ENTRIES: usize = 10_000;

/// Longest enrollment ticket lifetime.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(3600);
/// Shortest enrollment ticket lifetime: time to scan a QR code and send the enrollment.
pub const MIN_ENROLLMENT_TTL: Duration = Duration::from_secs(10);
/// Watcher channel capacity: above the most events one challenge can emit (2 per device, 16 devices).
pub const WATCH_CAPACITY: usize = 40;

/// A backend's request for a challenge, parsed.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Whose devices answer.
    pub account: AccountId,
    /// Who is signing in.
    pub context: LoginContext,
    /// Retry key.
    pub idempotency_key: Option<String>,
    /// Requested lifetime (`None`: the default).
    pub ttl: Option<Duration>,
    /// Number matching.
    pub mode: NumberMode,
    /// Push only devices whose key attestation meets this.
    pub min_assurance: crate::attest::Assurance,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// The state when the watch started.
    Snapshot(Box<Challenge>),
    /// A later event.
    Event(Event),
}

/// A watch: the snapshot, then events, ending after the terminal one.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem, Error>> + Send>>;

/// A signed device request whose signature and timestamp have been checked.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The device as stored before this request (or as this replica last read it: its state and key
    /// are checked again in the store step).
    pub device: Device,
    /// The call to hand to the store's counter rule.
    pub call: DeviceCall,
    /// The peer address it came from, for the failure budgets when the store step refuses it.
    pub source: Option<std::net::IpAddr>,
}

impl Authenticated {
    /// `device`'s call with `counter`, signed by its key, from `source`.
    pub fn new(device: Device, counter: u64, source: Option<std::net::IpAddr>) -> Self {
        let call = DeviceCall {
            device: device.id.clone(),
            counter,
            key: device.key.clone(),
        };
        Self {
            device,
            call,
            source,
        }
    }
}

/// The relay's use cases.
pub struct Relay {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    dispatcher: Dispatcher,
    expiry: ExpiryHandle,
    policy: Policy,
    sealer: Option<Arc<crate::sealing::Sealer>>,
    devices: device_cache::DeviceCache,
}

impl Relay {
    /// Wires the use cases to their store, hub, dispatcher and timers.
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        dispatcher: Dispatcher,
        expiry: ExpiryHandle,
        policy: Policy,
    ) -> Self {
        Self {
            store,
            hub,
            dispatcher,
            expiry,
            devices: device_cache::DeviceCache::new(policy.device_cache_entries),
            policy,
            sealer: None,
        }
    }

    /// Seals offline-code secrets with `sealer`; without one, offline codes are refused
    /// (FAILED_PRECONDITION).
    #[must_use]
    pub fn with_sealer(mut self, sealer: Option<crate::sealing::Sealer>) -> Self {
        self.sealer = sealer.map(Arc::new);
        self
    }

    /// This replica's watchers.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The limits in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Creates (or, for a repeated idempotency key, returns) a challenge and pushes it.
    ///
    /// # Errors
    /// `InvalidArgument` for a TTL out of bounds, `NoDevices`, or a store failure.
    /// The sign-in is evaluated first (EvaluateSignIn's answer is returned with it, and its device and
    /// place familiarity is stored with the challenge for the phone's prompt).
    pub async fn create_challenge(
        &self,
        req: CreateRequest,
    ) -> Result<(Challenge, bool, SignInVerdict), Error> {
        let (challenge, created, _, verdict) = self.create(req, None).await?;
        Ok((challenge, created, verdict))
    }

    /// As [`Relay::create_challenge`], with `sink` registered for the challenge's events before it
    /// exists, so not even the first delivery event can be missed.
    ///
    /// # Errors
    /// As [`Relay::create_challenge`].
    pub async fn create_watched(
        &self,
        req: CreateRequest,
        sink: impl Into<Sink>,
    ) -> Result<(Challenge, bool, Registration, SignInVerdict), Error> {
        let (challenge, created, registration, verdict) =
            self.create(req, Some(sink.into())).await?;
        registration
            .map(|r| (challenge, created, r, verdict))
            .ok_or(Error::NotFound("challenge"))
    }

    async fn create(
        &self,
        mut req: CreateRequest,
        sink: Option<Sink>,
    ) -> Result<(Challenge, bool, Option<Registration>, SignInVerdict), Error> {
        let ttl = match req.ttl {
            None => self.policy.default_ttl,
            Some(ttl) if ttl < self.policy.min_ttl || ttl > self.policy.max_ttl => {
                return Err(Error::invalid(
                    "ttl_seconds",
                    format!(
                        "must be between {} and {}",
                        self.policy.min_ttl.as_secs(),
                        self.policy.max_ttl.as_secs()
                    ),
                ));
            }
            Some(ttl) => ttl,
        };
        let verdict = self.evaluate_sign_in(&req.account, &req.context).await?;
        req.context.familiar = verdict.evaluation.familiar();
        let id = ChallengeId::generate(&req.account);
        // Owned before the store can hold it, so this replica's own sweep never takes its pushes for
        // abandoned while they are about to start (challenge::pushes).
        self.dispatcher.own(&id);
        let result = self
            .create_owned(&id, req, ttl, sink, verdict.offline_code)
            .await;
        if !matches!(result, Ok((_, true, _))) {
            // Nothing to push after all. If the create did commit and only its answer was lost, the
            // pushes are owed to no running task: the sweep (or a retry) claims them.
            self.dispatcher.disown(&id);
        }
        let (challenge, created, registration) = result?;
        Ok((challenge, created, registration, verdict))
    }

    async fn create_owned(
        &self,
        id: &ChallengeId,
        req: CreateRequest,
        ttl: Duration,
        sink: Option<Sink>,
        verdict_code: bool,
    ) -> Result<(Challenge, bool, Option<Registration>), Error> {
        let id = id.clone();
        let new_min_assurance = req.min_assurance;
        let mut registration = match sink {
            Some(sink) => {
                let registration = self.hub.register(&id, sink);
                self.store.subscribe(&id).await?;
                Some(registration)
            }
            None => None,
        };
        let new = NewChallenge {
            id,
            number: NumberMatch::generate(
                req.mode,
                self.policy.type_number_attempts,
                &mut rand::thread_rng(),
            ),
            account: req.account,
            context: req.context,
            ttl,
            idempotency_key: req.idempotency_key,
            min_assurance: req.min_assurance,
        };
        match self.store.create_challenge(new).await? {
            CreateOutcome::Created(challenge, devices, superseded) => {
                metrics::counter!("relay_challenges_created_total").increment(1);
                for old in superseded {
                    metrics::counter!("relay_challenges_superseded_total").increment(1);
                    tracing::info!(challenge_id = %old.challenge.id, by = %challenge.id, "challenge superseded");
                    self.ended(old);
                }
                // A timer only for a watcher here; an unwatched challenge is the sweep's (crate::expiry).
                if registration.is_some() {
                    let left = challenge
                        .expires_at_ms
                        .saturating_sub(challenge.created_at_ms);
                    self.expiry.schedule(
                        challenge.id.clone(),
                        Duration::from_millis(left.unsigned_abs()),
                        Timer::Watch,
                    );
                }
                self.dispatcher
                    .push_challenge(&challenge, devices, challenge.created_at_ms);
                tracing::info!(challenge_id = %challenge.id, devices = challenge.targets.len(), "challenge created");
                Ok((challenge, true, registration))
            }
            CreateOutcome::Existing(challenge) => {
                if let Some(registration) = registration.as_mut() {
                    *registration = registration.moved_to(&challenge.id);
                    self.store.subscribe(&challenge.id).await?;
                }
                let challenge = self.get_challenge(&challenge.id).await?;
                if registration.is_some() {
                    self.watch_deadline(&challenge);
                }
                // A retry of a create whose answer was lost: its pushes may be owed to nobody.
                self.resume_pushes(&challenge).await;
                Ok((challenge, false, registration))
            }
            CreateOutcome::NoDeviceMeetsAssurance => {
                Err(Error::NoDeviceMeetsAssurance(new_min_assurance))
            }
            CreateOutcome::NoDevices => Err(if verdict_code {
                Error::NoDevicesCodeAvailable
            } else {
                Error::NoDevices
            }),
            CreateOutcome::Limited(reason, after) => {
                metrics::counter!("relay_limit_refusals_total", "limit" => reason.name())
                    .increment(1);
                tracing::info!(
                    limit = reason.name(),
                    retry_after_secs = crate::limits::retry_after_secs(after),
                    "challenge refused by a limit"
                );
                Err(Error::Limited(reason, after))
            }
        }
    }

    /// Reads a challenge.
    ///
    /// # Errors
    /// `NotFound` or a store failure.
    pub async fn get_challenge(&self, id: &ChallengeId) -> Result<Challenge, Error> {
        self.store
            .get_challenge(id)
            .await?
            .ok_or(Error::NotFound("challenge"))
    }

    /// Cancels a challenge; returns its state and whether this call ended it.
    ///
    /// # Errors
    /// `NotFound` or a store failure.
    pub async fn cancel(&self, id: &ChallengeId) -> Result<(Challenge, bool), Error> {
        match self.store.cancel(id).await? {
            None => Err(Error::NotFound("challenge")),
            Some(Err(challenge)) => Ok((challenge, false)),
            Some(Ok(ended)) => Ok((self.ended(ended), true)),
        }
    }

    /// Watches a challenge: subscribe first, then read the state, so no event falls in between.
    ///
    /// # Errors
    /// `NotFound` or a store failure.
    pub async fn watch(&self, id: &ChallengeId) -> Result<WatchStream, Error> {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let registration = self.hub.register(id, tx);
        self.store.subscribe(id).await?;
        let snapshot = self.get_challenge(id).await?;
        self.watch_deadline(&snapshot);
        Ok(watch_stream(snapshot, rx, registration))
    }

    /// Registers `tx` for a challenge's events (for multi-challenge streams); subscribe-then-read as
    /// [`Relay::watch`], returning the snapshot.
    ///
    /// # Errors
    /// A store failure.
    pub async fn attach(
        &self,
        id: &ChallengeId,
        tx: impl Into<Sink>,
    ) -> Result<(Registration, Challenge), Error> {
        let registration = self.hub.register(id, tx);
        self.store.subscribe(id).await?;
        let snapshot = self.get_challenge(id).await?;
        self.watch_deadline(&snapshot);
        Ok((registration, snapshot))
    }

    /// After a challenge ended: metrics, and withdrawing the prompt from the other devices in the
    /// background (the caller's answer does not wait for it). Gives the challenge back.
    pub(super) fn ended(&self, ended: Ended) -> Challenge {
        let challenge = ended.challenge;
        metrics::counter!("relay_challenges_ended_total", "outcome" => challenge.state.name())
            .increment(1);
        let decision_ms = challenge
            .ended_at_ms
            .saturating_sub(challenge.created_at_ms);
        metrics::histogram!("relay_decision_seconds", "outcome" => challenge.state.name())
            .record(decision_ms as f64 / 1000.0);
        self.dispatcher.withdraw(&challenge, ended.withdraw);
        challenge
    }

    /// Every replica that holds a watcher also holds a timer, so EXPIRED arrives on time even when the
    /// replica that created the challenge is gone.
    fn watch_deadline(&self, c: &Challenge) {
        if !c.state.is_terminal() {
            let left = c
                .expires_at_ms
                .saturating_sub(crate::clock::now_ms())
                .max(0);
            self.expiry.schedule(
                c.id.clone(),
                Duration::from_millis(left.unsigned_abs()),
                Timer::Watch,
            );
        }
    }

    /// Issues a one-time enrollment ticket.
    ///
    /// # Errors
    /// `InvalidArgument` for a TTL out of range, or a store failure.
    pub async fn create_enrollment(
        &self,
        account: AccountId,
        ttl: Option<Duration>,
    ) -> Result<(Ticket, i64, String), Error> {
        let ttl = ttl.unwrap_or(self.policy.default_enrollment_ttl);
        if !(MIN_ENROLLMENT_TTL..=MAX_ENROLLMENT_TTL).contains(&ttl) {
            return Err(Error::invalid(
                "ttl_seconds",
                format!(
                    "must be between {} and {} (or 0 for the default)",
                    MIN_ENROLLMENT_TTL.as_secs(),
                    MAX_ENROLLMENT_TTL.as_secs()
                ),
            ));
        }
        let ticket = Ticket::generate(&account);
        let now = self.store.now_ms().await?;
        let expires_at_ms = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.store
            .create_enrollment(
                &ticket,
                &Enrollment {
                    account,
                    expires_at_ms,
                },
            )
            .await?;
        let uri = format!(
            "approval-relay://enroll?ticket={}&relay={}",
            ticket.as_str(),
            self.policy.public_device_address
        );
        Ok((ticket, expires_at_ms, uri))
    }

    /// Lists an account's devices.
    ///
    /// # Errors
    /// A store failure.
    pub async fn list_devices(&self, account: &AccountId) -> Result<Vec<Device>, Error> {
        Ok(self.store.list_devices(account).await?)
    }

    /// Revokes a device.
    ///
    /// # Errors
    /// `NotFound` or a store failure.
    pub async fn revoke_device(&self, account: &AccountId, id: &DeviceId) -> Result<Device, Error> {
        let device = self
            .store
            .revoke_device(account, id, &crate::audit::Actor::Backend)
            .await?
            .ok_or(Error::NotFound("device"))?;
        self.drop_device_code(&device).await;
        Ok(device)
    }

    /// Pages an account's audit trail.
    ///
    /// # Errors
    /// A store failure or an invalid page token.
    pub async fn list_audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, Error> {
        Ok(self.store.list_audit(account, before, limit).await?)
    }

    /// Security events after `after`, waiting a while for new ones.
    ///
    /// # Errors
    /// A store failure or an invalid position.
    pub async fn security_events(
        &self,
        after: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<SecurityEvent>, Error> {
        Ok(self.store.security_events(after, 256, wait).await?)
    }
}

/// The snapshot, then events newer than it, ending after the terminal one. No task per watch: the
/// stream is polled by the gRPC response and drops its hub registration when the client goes away.
fn watch_stream(
    snapshot: Challenge,
    rx: mpsc::Receiver<Arc<Event>>,
    registration: Registration,
) -> WatchStream {
    enum Step {
        Snapshot(Box<Challenge>, mpsc::Receiver<Arc<Event>>, Registration),
        Live(u64, mpsc::Receiver<Arc<Event>>, Registration),
        Terminal(Event),
        Done,
    }
    let first = Step::Snapshot(Box::new(snapshot), rx, registration);
    Box::pin(futures::stream::unfold(first, |step| async move {
        match step {
            Step::Snapshot(c, rx, reg) => {
                let next = match c.terminal_event() {
                    Some(event) => Step::Terminal(event),
                    None => Step::Live(c.sequence, rx, reg),
                };
                Some((Ok(WatchItem::Snapshot(c)), next))
            }
            Step::Terminal(event) => Some((Ok(WatchItem::Event(event)), Step::Done)),
            Step::Live(seen, mut rx, reg) => loop {
                match rx.recv().await {
                    None => return Some((Err(Error::Lagged), Step::Done)),
                    Some(e) if e.sequence <= seen => {}
                    Some(e) if e.is_terminal() => {
                        return Some((Ok(WatchItem::Event(Arc::unwrap_or_clone(e))), Step::Done));
                    }
                    Some(e) => {
                        let seen = e.sequence;
                        return Some((
                            Ok(WatchItem::Event(Arc::unwrap_or_clone(e))),
                            Step::Live(seen, rx, reg),
                        ));
                    }
                }
            },
            Step::Done => None,
        }
    }))
}
