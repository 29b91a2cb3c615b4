//! One push to one device, until it is delivered, dead, refused, or out of time: the classified answer
//! decides (prune a dead token; retry a throttle, 5xx or connection error with exponential backoff and
//! full jitter, or after `Retry-After`, within the provider's retry budget), and nothing is tried at or
//! after the push's give-up instant, the retry's sleep included.

use super::dispatcher::Dispatcher;
use super::{PushMessage, PushOutcome};
use crate::challenge::DeviceId;
use rand::Rng;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Dispatcher {
    /// Sends until delivered, dead, refused, or out of time; returns the failure reason if any.
    pub(super) async fn deliver(&self, message: &PushMessage, device: &DeviceId) -> Option<String> {
        let platform = self.provider.name(message.platform);
        self.budgets.first(platform);
        let mut attempt: u32 = 0;
        loop {
            if Instant::now() >= message.give_up_at {
                return Some("retries_exhausted: deadline".into());
            }
            let started = Instant::now();
            let outcome = {
                let Ok(_permit) = self.in_flight.acquire().await else {
                    return Some("shutting_down".into());
                };
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
                    // The retry must be sent, and answered, before the push is given up.
                    if Instant::now() + wait >= message.give_up_at {
                        return Some(format!("retries_exhausted: {reason}"));
                    }
                    if !self.budgets.retry(platform) {
                        return Some("retries_exhausted: budget".into());
                    }
                    metrics::counter!("relay_push_retries_total", "provider" => platform)
                        .increment(1);
                    tokio::time::sleep(wait).await;
                }
            }
        }
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
