//! The open-loop driver. Challenges are created at fixed intended instants on StreamChallenges streams
//! to replica A (each stream registers before it creates, so no event is missed); every latency is
//! taken from the intended instant, so a stall in the relay, or in this generator, shows instead of
//! silently delaying later sends. Phones answer the first push of each challenge through replica B: they
//! read it (GetChallenge, what a phone shows the owner) and then approve it (Respond).

use crate::Options;
use crate::fleet::{Fleet, channels};
use crate::pushes::Push;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use approval_relay::pb::challenge_service_client::ChallengeServiceClient;
use approval_relay::pb::device_service_client::DeviceServiceClient;
use approval_relay::pb::stream_challenges_request::Request as StreamRequest;
use approval_relay::pb::stream_challenges_response::Response as StreamResponse;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

/// Microseconds since the Unix epoch (the mock stamps pushes on the same clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid bounds")
}

/// What one measured run saw; latencies in microseconds.
#[derive(Clone)]
pub struct Window {
    /// Create intended → push accepted by the mock, per device.
    pub create_to_push: Histogram<u64>,
    /// Respond sent on B → the terminal event on A's stream.
    pub respond_to_watch: Histogram<u64>,
    /// Create intended → terminal event, minus the think time.
    pub create_to_decision: Histogram<u64>,
    /// Create sent → its `created` answer.
    pub create_rpc: Histogram<u64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Challenges sent in the measured part.
    pub sent: u64,
    /// Challenges that ended approved in the measured part.
    pub approved: u64,
    /// The rate asked for.
    pub rate: u32,
    /// Wall time of the measured part.
    pub measured_secs: f64,
    /// Challenges sent, warm-up included.
    pub total_sent: u64,
    /// Create intended → push accepted, per second of the run (warm-up included), keyed by the
    /// intended second since the driver started: a stall shows as one bad second, not a bad step.
    pub seconds: BTreeMap<u64, Histogram<u64>>,
}

impl Window {
    fn new(rate: u32) -> Self {
        Self {
            create_to_push: histogram(),
            respond_to_watch: histogram(),
            create_to_decision: histogram(),
            create_rpc: histogram(),
            errors: BTreeMap::new(),
            sent: 0,
            approved: 0,
            rate,
            measured_secs: 0.0,
            total_sent: 0,
            seconds: BTreeMap::new(),
        }
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// No error, and p99 create → push within `target_ms`.
    pub fn passes(&self, target_ms: f64) -> bool {
        self.error_count() == 0
            && !self.create_to_push.is_empty()
            && ms(self.create_to_push.value_at_quantile(0.99)) <= target_ms
    }
}

/// Microseconds to milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

struct Flight {
    intended_us: u64,
    sent_us: u64,
    measured: bool,
    responded_us: Option<u64>,
    answered: bool,
    done: bool,
}

#[derive(Default)]
struct State {
    flights: HashMap<u64, Flight>,
    by_challenge: HashMap<String, u64>,
    early: HashMap<String, Vec<Push>>,
    ignore: HashSet<String>,
    window: Option<Window>,
}

struct Shared {
    state: Mutex<State>,
    /// When the driver started (µs since the epoch): second 0 of the timeline.
    epoch_us: u64,
    fleet: Fleet,
    device: Vec<Channel>,
    /// Replica A's device API, for the one-replica runs (`--device-a`); empty when not given.
    device_a: Vec<Channel>,
    /// Phones answer through replica A instead of B (scale-out: one replica does all the work).
    one_replica: std::sync::atomic::AtomicBool,
    next_device: AtomicUsize,
    think: Duration,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One second of the run's timeline: p99 create → push of the challenges intended in it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Second {
    /// Seconds since the driver started.
    pub t_s: u64,
    /// The run it belongs to (`fixed rate`, `ramp 400/s`, …).
    pub phase: String,
    /// The rate asked for.
    pub rate: u32,
    /// Pushes accepted at the mock for challenges intended in this second.
    pub pushes: u64,
    /// p99 create → push, ms.
    pub p99_ms: f64,
    /// Slowest create → push, ms.
    pub max_ms: f64,
}

/// Drives challenges and phones; one per process.
pub struct Driver {
    shared: Arc<Shared>,
    timeline: Mutex<Vec<Second>>,
    senders: Vec<mpsc::UnboundedSender<pb::StreamChallengesRequest>>,
    backend: Vec<Channel>,
    next_request: AtomicU64,
    accounts: usize,
}

impl Driver {
    /// Opens the create streams, the phones' connections and the push subscription.
    pub async fn start(
        options: &Options,
        fleet: Fleet,
        pushes: mpsc::UnboundedReceiver<Push>,
    ) -> anyhow::Result<Self> {
        let backend = channels(&options.backend, 4).await?;
        let device = channels(&options.device, 4).await?;
        let device_a = match &options.device_a {
            Some(addr) => channels(addr, 4).await?,
            None => Vec::new(),
        };
        let accounts = fleet.accounts.len();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            epoch_us: now_us(),
            fleet,
            device,
            device_a,
            one_replica: std::sync::atomic::AtomicBool::new(false),
            next_device: AtomicUsize::new(0),
            think: options.think(),
        });
        let mut senders = Vec::new();
        for i in 0..options.streams.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut client = ChallengeServiceClient::new(backend[i % backend.len()].clone());
            let responses = client
                .stream_challenges(UnboundedReceiverStream::new(rx))
                .await?
                .into_inner();
            tokio::spawn(read_stream(Arc::clone(&shared), responses));
            senders.push(tx);
        }
        tokio::spawn(handle_pushes(Arc::clone(&shared), pushes));
        Ok(Self {
            shared,
            timeline: Mutex::new(Vec::new()),
            senders,
            backend,
            next_request: AtomicU64::new(1),
            accounts,
        })
    }

    /// From now on phones answer through replica A (true) or B (false). False when `--device-a` was
    /// not given.
    pub fn set_one_replica(&self, one: bool) -> bool {
        let one = one && !self.shared.device_a.is_empty();
        self.shared.one_replica.store(one, Ordering::Relaxed);
        one
    }

    /// Replica A's backend connections.
    pub fn backend(&self) -> &[Channel] {
        &self.backend
    }

    /// An account of the fleet (its phones would answer: mark its challenges with `ignore`).
    pub fn account(&self, i: usize) -> &str {
        &self.shared.fleet.accounts[i % self.accounts]
    }

    /// Pushes of this challenge are not answered (idle challenges of the watch phase).
    pub fn ignore(&self, challenge_id: &str) {
        self.shared.lock().ignore.insert(challenge_id.to_owned());
    }

    /// Sends `rate` challenges per second for `warmup + duration` seconds; measures the last `duration`.
    pub async fn run_rate(&self, rate: u32, warmup: u64, duration: u64, label: &str) -> Window {
        self.shared.lock().window = Some(Window::new(rate));
        let total = u64::from(rate) * (warmup + duration);
        let first_measured = u64::from(rate) * warmup;
        let interval_ns = 1_000_000_000 / u64::from(rate.max(1));
        let progress = indicatif::ProgressBar::new(total).with_message(label.to_owned());
        progress.set_style(
            indicatif::ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let start = Instant::now();
        let start_us = now_us();
        let mut sent_ids = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        let mut measured_start = None;
        for i in 0..total {
            let offset = Duration::from_nanos(i * interval_ns);
            tokio::time::sleep_until((start + offset).into()).await;
            let measured = i >= first_measured;
            if measured && measured_start.is_none() {
                measured_start = Some(Instant::now());
            }
            let id = self.next_request.fetch_add(1, Ordering::Relaxed);
            let intended_us = start_us + u64::try_from(offset.as_micros()).unwrap_or(0);
            {
                let mut state = self.shared.lock();
                state.flights.insert(
                    id,
                    Flight {
                        intended_us,
                        sent_us: now_us(),
                        measured,
                        responded_us: None,
                        answered: false,
                        done: false,
                    },
                );
                if measured && let Some(w) = state.window.as_mut() {
                    w.sent += 1;
                }
            }
            let account = self.account(usize::try_from(id).unwrap_or(0)).to_owned();
            let request = pb::StreamChallengesRequest {
                request_id: id.to_string(),
                request: Some(StreamRequest::Create(pb::CreateChallengeRequest {
                    account_id: account,
                    number_match_mode: pb::NumberMatchMode::None.into(),
                    ttl_seconds: 30,
                    ..Default::default()
                })),
            };
            let stream = usize::try_from(id).unwrap_or(0) % self.senders.len();
            if self.senders[stream].send(request).is_err() {
                self.finish(id, Some("stream closed"));
            }
            sent_ids.push(id);
            if i % 256 == 0 {
                progress.set_position(i);
            }
        }
        let measured_secs = measured_start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        progress.finish_and_clear();
        // Let the last challenges finish (bounded), then count what never did.
        let deadline = Instant::now() + Duration::from_secs(5) + self.shared.think;
        loop {
            let pending = {
                let state = self.shared.lock();
                sent_ids
                    .iter()
                    .filter(|id| state.flights.get(id).is_some_and(|f| !f.done))
                    .count()
            };
            if pending == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut state = self.shared.lock();
        let mut window = state.window.take().unwrap_or_else(|| Window::new(rate));
        for id in &sent_ids {
            if let Some(flight) = state.flights.remove(id)
                && !flight.done
                && flight.measured
            {
                window.error("unfinished after 5 s");
            }
        }
        let sent: HashSet<u64> = sent_ids.into_iter().collect();
        state.by_challenge.retain(|_, id| !sent.contains(id));
        state.early.clear();
        window.measured_secs = measured_secs;
        window.total_sent = total;
        drop(state);
        self.timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(window.seconds.iter().map(|(t, h)| Second {
                t_s: *t,
                phase: label.to_owned(),
                rate,
                pushes: h.len(),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
            }));
        window
    }

    /// Every second of every run so far, in order.
    pub fn timeline(&self) -> Vec<Second> {
        self.timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn finish(&self, id: u64, error: Option<&str>) {
        finish(&self.shared, id, error);
    }
}

fn finish(shared: &Shared, id: u64, error: Option<&str>) {
    let mut state = shared.lock();
    let measured = match state.flights.get_mut(&id) {
        Some(f) if !f.done => {
            f.done = true;
            f.measured
        }
        _ => return,
    };
    if let (Some(kind), true, Some(w)) = (error, measured, state.window.as_mut()) {
        w.error(kind);
    }
}

async fn read_stream(
    shared: Arc<Shared>,
    mut responses: tonic::Streaming<pb::StreamChallengesResponse>,
) {
    loop {
        let message = match responses.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(status) => {
                eprintln!("relay-load: a create stream ended: {status}");
                return;
            }
        };
        let Ok(id) = message.request_id.parse::<u64>() else {
            continue;
        };
        match message.response {
            Some(StreamResponse::Created(created)) => {
                let now = now_us();
                let challenge = created
                    .challenge
                    .map(|c| c.challenge_id)
                    .unwrap_or_default();
                let early = {
                    let mut state = shared.lock();
                    let Some(flight) = state.flights.get(&id) else {
                        continue;
                    };
                    let (measured, sent) = (flight.measured, flight.sent_us);
                    if measured && let Some(w) = state.window.as_mut() {
                        let _ = w.create_rpc.record(now.saturating_sub(sent).max(1));
                    }
                    state.by_challenge.insert(challenge.clone(), id);
                    state.early.remove(&challenge).unwrap_or_default()
                };
                for push in early {
                    on_push(&shared, push);
                }
            }
            Some(StreamResponse::Event(event)) => on_event(&shared, id, event),
            Some(StreamResponse::Error(e)) => {
                finish(
                    &shared,
                    id,
                    Some(&format!("create refused (code {})", e.code)),
                );
            }
            _ => {}
        }
    }
}

fn on_event(shared: &Shared, id: u64, event: pb::ChallengeEvent) {
    let now = now_us();
    let outcome = match event.kind {
        Some(Kind::Approved(_)) => None,
        Some(Kind::Denied(_)) => Some("ended denied"),
        Some(Kind::FraudReported(_)) => Some("ended fraud"),
        Some(Kind::Expired(_)) => Some("ended expired"),
        Some(Kind::Cancelled(_)) => Some("ended cancelled"),
        Some(Kind::DeliveryFailed(_)) => {
            let mut state = shared.lock();
            if let Some(w) = state.window.as_mut() {
                w.error("delivery failed");
            }
            return;
        }
        _ => return,
    };
    if outcome.is_none() {
        let mut state = shared.lock();
        let think = u64::try_from(shared.think.as_micros()).unwrap_or(0);
        let Some(flight) = state.flights.get(&id) else {
            return;
        };
        let (measured, intended, responded) =
            (flight.measured, flight.intended_us, flight.responded_us);
        if measured && let Some(w) = state.window.as_mut() {
            w.approved += 1;
            let _ = w
                .create_to_decision
                .record(now.saturating_sub(intended).saturating_sub(think).max(1));
            if let Some(sent) = responded {
                let _ = w.respond_to_watch.record(now.saturating_sub(sent).max(1));
            }
        }
    }
    finish(shared, id, outcome);
}

async fn handle_pushes(shared: Arc<Shared>, mut pushes: mpsc::UnboundedReceiver<Push>) {
    while let Some(push) = pushes.recv().await {
        if push.push_type == "alert" {
            on_push(&shared, push);
        }
    }
}

fn on_push(shared: &Arc<Shared>, push: Push) {
    let answer = {
        let mut state = shared.lock();
        let Some(&id) = state.by_challenge.get(&push.collapse_id) else {
            if !state.ignore.contains(&push.collapse_id) {
                state
                    .early
                    .entry(push.collapse_id.clone())
                    .or_default()
                    .push(push);
            }
            return;
        };
        let Some(flight) = state.flights.get_mut(&id) else {
            return;
        };
        let first = !flight.answered;
        flight.answered = true;
        let (measured, intended) = (flight.measured, flight.intended_us);
        let latency = push.received_unix_us.saturating_sub(intended).max(1);
        if let Some(w) = state.window.as_mut() {
            if measured {
                let _ = w.create_to_push.record(latency);
            }
            let second = intended.saturating_sub(shared.epoch_us) / 1_000_000;
            let _ = w
                .seconds
                .entry(second)
                .or_insert_with(histogram)
                .record(latency);
        }
        first.then_some(id)
    };
    if let Some(id) = answer {
        let Some(phone) = shared.fleet.by_token.get(&push.token).cloned() else {
            finish(shared, id, Some("push to an unknown token"));
            return;
        };
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            if !shared.think.is_zero() {
                tokio::time::sleep(shared.think).await;
            }
            let channel = {
                let i = shared.next_device.fetch_add(1, Ordering::Relaxed);
                let pool = if shared.one_replica.load(Ordering::Relaxed) {
                    &shared.device_a
                } else {
                    &shared.device
                };
                pool[i % pool.len()].clone()
            };
            let mut phone = phone.lock().await;
            let view = phone.signed(pb::device_request::Body::GetChallenge(
                pb::GetChallengeBody {
                    challenge_id: push.collapse_id.clone(),
                },
            ));
            let mut client = DeviceServiceClient::new(channel);
            if let Err(status) = client.get_challenge(view).await {
                drop(phone);
                finish(
                    &shared,
                    id,
                    Some(&format!("get challenge {:?}", status.code())),
                );
                return;
            }
            let request = phone.signed(pb::device_request::Body::Respond(pb::RespondBody {
                challenge_id: push.collapse_id.clone(),
                decision: pb::Decision::Approve.into(),
                deny_reason: 0,
                number: 0,
            }));
            if let Some(flight) = shared.lock().flights.get_mut(&id) {
                flight.responded_us = Some(now_us());
            }
            let answer = client.respond(request).await;
            drop(phone);
            if let Err(status) = answer {
                finish(&shared, id, Some(&format!("respond {:?}", status.code())));
            }
        });
    }
}
