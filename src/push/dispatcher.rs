//! The dispatcher: pushes a challenge to all its devices at once, acts on each classified answer (retry
//! with backoff and jitter inside the challenge's lifetime, prune dead tokens), and reports each
//! device's outcome to the store, which turns it into a DELIVERED / DELIVERY_FAILED event.

use super::{PushKind, PushMessage, PushOutcome, PushProvider};
use crate::challenge::{Challenge, ChallengeId, DeviceId};
use crate::device::Device;
use crate::notice::Notice;
use crate::store::Store;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a notice's alert is worth delivering: a day.
const NOTICE_ALERT_MS: i64 = 24 * 3600 * 1000;

/// Sends pushes for challenges and records their outcomes.
#[derive(Clone)]
pub struct Dispatcher {
    provider: Arc<dyn PushProvider>,
    store: Arc<dyn Store>,
    tracker: TaskTracker,
    in_flight: Arc<Semaphore>,
}

impl Dispatcher {
    /// A dispatcher with at most `max_in_flight` provider requests at once.
    pub fn new(
        provider: Arc<dyn PushProvider>,
        store: Arc<dyn Store>,
        tracker: TaskTracker,
        max_in_flight: usize,
    ) -> Self {
        Self {
            provider,
            store,
            tracker,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Pushes a new challenge to each device, in the background.
    pub fn push_challenge(&self, challenge: &Challenge, devices: Vec<Device>) {
        let reports = Arc::new(Reports::default());
        for device in devices {
            let this = self.clone();
            let reports = Arc::clone(&reports);
            let challenge_id = challenge.id.clone();
            let expires_at_ms = challenge.expires_at_ms;
            let span =
                tracing::info_span!("push", challenge_id = %challenge_id, device_id = %device.id);
            self.tracker.spawn(
                async move {
                    let Some(token) = device.push_token.clone() else {
                        let failure = Some("no_push_token".to_owned());
                        reports
                            .report(&this.store, &challenge_id, device.id, failure)
                            .await;
                        return;
                    };
                    let message = PushMessage {
                        kind: PushKind::Challenge,
                        id: challenge_id.to_string(),
                        expires_at_ms,
                        platform: device.platform,
                        token,
                        app_id: device.app_id.clone(),
                    };
                    let failure = this.deliver(&message, &device.id).await;
                    reports
                        .report(&this.store, &challenge_id, device.id, failure)
                        .await;
                }
                .instrument(span),
            );
        }
    }

    /// Tells `devices` (those a challenge was pushed to, bar the one that answered) to remove its prompt,
    /// in the background.
    pub fn withdraw(&self, challenge: &Challenge, devices: Vec<Device>) {
        for device in devices {
            if !challenge.is_targeted(&device.id) {
                continue;
            }
            let Some(token) = device.push_token.clone() else {
                continue;
            };
            let message = PushMessage {
                kind: PushKind::Withdraw,
                id: challenge.id.to_string(),
                // A withdrawal is worth delivering a little after the deadline too: the alert may still show.
                expires_at_ms: challenge.expires_at_ms.max(challenge.ended_at_ms) + 60_000,
                platform: device.platform,
                token,
                app_id: device.app_id.clone(),
            };
            let this = self.clone();
            let span = tracing::info_span!("withdraw", challenge_id = %challenge.id, device_id = %device.id);
            self.tracker.spawn(
                async move {
                    let _ = this.deliver(&message, &device.id).await;
                }
                .instrument(span),
            );
        }
    }

    /// Pushes a notice to each of its devices that has a push token, in the background. A notice's
    /// alert is worth showing for a day at most; the notice itself stays fetchable longer.
    pub fn push_notice(&self, notice: &Notice, devices: Vec<Device>) {
        for device in devices {
            let Some(token) = device.push_token.clone() else {
                continue;
            };
            let message = PushMessage {
                kind: PushKind::Notice,
                id: notice.id.to_string(),
                expires_at_ms: notice
                    .expires_at_ms
                    .min(notice.created_at_ms.saturating_add(NOTICE_ALERT_MS)),
                platform: device.platform,
                token,
                app_id: device.app_id.clone(),
            };
            let this = self.clone();
            let span =
                tracing::info_span!("notice", notice_id = %notice.id, device_id = %device.id);
            self.tracker.spawn(
                async move {
                    if let Some(reason) = this.deliver(&message, &device.id).await {
                        tracing::info!(%reason, "notice not delivered");
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Sends until delivered, dead, refused, or out of time; returns the failure reason if any.
    async fn deliver(&self, message: &PushMessage, device: &DeviceId) -> Option<String> {
        let platform = self.provider.name(message.platform);
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            let outcome = {
                let Ok(_permit) = self.in_flight.acquire().await else {
                    return Some("shutting_down".into());
                };
                use tracing::Instrument;
                let span = crate::telemetry::trace::span!(format!("push {platform}"), attempt);
                self.provider.send(message).instrument(span).await
            };
            let label = match &outcome {
                PushOutcome::Delivered => "delivered",
                PushOutcome::TokenDead(_) => "token_dead",
                PushOutcome::Retry(..) => "retry",
                PushOutcome::AuthFailed(_) => "auth_failed",
                PushOutcome::Rejected(_) => "rejected",
            };
            metrics::counter!("relay_pushes_total", "provider" => platform, "outcome" => label)
                .increment(1);
            metrics::histogram!("relay_push_seconds", "provider" => platform, "outcome" => label)
                .record(started.elapsed().as_secs_f64());
            match outcome {
                PushOutcome::Delivered => return None,
                PushOutcome::TokenDead(reason) => {
                    metrics::counter!("relay_push_tokens_pruned_total", "provider" => platform)
                        .increment(1);
                    tracing::info!(provider = platform, %reason, "push token dead; removing it from the device");
                    if let Err(error) = self
                        .store
                        .prune_token(device, &message.token, &reason)
                        .await
                    {
                        tracing::warn!(%error, "could not prune a dead token");
                    }
                    return Some(format!("token_dead: {reason}"));
                }
                PushOutcome::Rejected(reason) => return Some(format!("rejected: {reason}")),
                PushOutcome::AuthFailed(reason) => {
                    tracing::error!(provider = platform, %reason, "push provider refused our credentials");
                    return Some(format!("provider_auth_failed: {reason}"));
                }
                PushOutcome::Retry(after, reason) => {
                    attempt += 1;
                    let wait = after.unwrap_or_else(|| backoff(attempt));
                    let now_ms = self.store.now_ms().await.unwrap_or(i64::MAX);
                    let left = message.expires_at_ms.saturating_sub(now_ms);
                    if i64::try_from(wait.as_millis()).unwrap_or(i64::MAX) >= left {
                        return Some(format!("retries_exhausted: {reason}"));
                    }
                    metrics::counter!("relay_push_retries_total", "provider" => platform)
                        .increment(1);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The push outcomes of one challenge on their way to the store. The first outcome is recorded at once;
/// outcomes that arrive while a record is in flight wait for it and then go together in one store call,
/// so a challenge's devices answering at about the same time cost one round trip, not one each, and no
/// outcome waits longer than one round trip.
#[derive(Default)]
struct Reports {
    queue: std::sync::Mutex<Queue>,
}

/// Outcomes not yet sent, and whether a task is sending.
#[derive(Default)]
struct Queue {
    outcomes: Vec<(DeviceId, Option<String>)>,
    sending: bool,
}

impl Reports {
    async fn report(
        &self,
        store: &Arc<dyn Store>,
        challenge: &ChallengeId,
        device: DeviceId,
        failure: Option<String>,
    ) {
        {
            let mut queue = self.lock();
            queue.outcomes.push((device, failure));
            if queue.sending {
                return; // The sending task takes it on its next turn.
            }
            queue.sending = true;
        }
        loop {
            let batch = {
                let mut queue = self.lock();
                if queue.outcomes.is_empty() {
                    queue.sending = false;
                    return;
                }
                std::mem::take(&mut queue.outcomes)
            };
            if let Err(error) = store.record_deliveries(challenge, &batch).await {
                tracing::warn!(%error, outcomes = batch.len(), "could not record push outcomes");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-written: take it as it is.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Exponential backoff with full jitter.
fn backoff(attempt: u32) -> Duration {
    let cap = BASE_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(400));
        assert!(backoff(1) >= Duration::from_millis(200));
        assert!(backoff(30) <= MAX_BACKOFF);
        assert!(backoff(30) >= MAX_BACKOFF / 2);
    }
}
