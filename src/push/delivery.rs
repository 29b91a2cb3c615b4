//! One push to one device, until it is delivered, dead, refused, or out of time: the classified answer
//! decides (prune a dead token; retry a throttle, 5xx or connection error with exponential backoff and
//! full jitter, or after `Retry-After`, within the provider's retry budget), and nothing is tried at or
//! after the push's give-up instant, the retry's sleep included. A device with a fallback channel is tried
//! there when its own channel fails.

use super::dispatcher::Dispatcher;
use super::{PushKind, PushMessage, PushOutcome};
use crate::challenge::{DeviceId, Via};
use crate::device::{Channel, Device};
use rand::Rng;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The failure of a push the relay stopped for its shutdown: no fallback is tried.
const SHUTTING_DOWN: &str = "shutting_down";

impl Dispatcher {
    /// The push of `kind` about `id` to `device` through `channel`.
    pub(super) fn message(
        kind: PushKind,
        id: &str,
        device: &Device,
        channel: Channel<'_>,
        expires_at_ms: i64,
        give_up_at: Instant,
    ) -> PushMessage {
        PushMessage {
            kind,
            id: id.to_owned(),
            expires_at_ms,
            give_up_at,
            platform: channel.platform,
            token: channel.token.to_owned(),
            app_id: device.app_id.clone(),
        }
    }

    /// Pushes through the device's own channel, then through its fallback if that failed: the channel
    /// that delivered, or the failure reason (both channels' when both were tried). A fallback whose
    /// provider is the development sink while the device's own is real is not tried: the sink would
    /// report DELIVERED for a push that never left (`not_configured`).
    pub(super) async fn deliver_device(
        &self,
        kind: PushKind,
        id: &str,
        device: &Device,
        expires_at_ms: i64,
        give_up_at: Instant,
    ) -> Result<Via, String> {
        let channels = device.channels();
        let Some(&first) = channels.first() else {
            return Err("no_push_token".into());
        };
        if first.fallback {
            // The device's own token had died before: its fallback is all there is.
            let name = first.platform.name();
            if !self.fallback_configured(device, first) {
                return Err(format!("no_push_token; fallback {name}: not_configured"));
            }
            self.count_fallback(first);
            let message = Self::message(kind, id, device, first, expires_at_ms, give_up_at);
            return match self.deliver(&message, &device.id).await {
                None => Ok(Via::new(first.platform, true)),
                Some(reason) => Err(format!("no_push_token; fallback {name}: {reason}")),
            };
        }
        let second = channels.get(1).copied();
        // With a fallback waiting, the first channel may spend half the time left, the fallback the rest.
        let first_give_up = match second {
            Some(_) => {
                let now = Instant::now();
                now + give_up_at.saturating_duration_since(now) / 2
            }
            None => give_up_at,
        };
        let message = Self::message(kind, id, device, first, expires_at_ms, first_give_up);
        let Some(reason) = self.deliver(&message, &device.id).await else {
            return Ok(Via::new(first.platform, false));
        };
        let Some(second) = second.filter(|_| reason != SHUTTING_DOWN) else {
            return Err(reason);
        };
        let name = second.platform.name();
        if !self.fallback_configured(device, second) {
            return Err(format!("{reason}; fallback {name}: not_configured"));
        }
        self.count_fallback(second);
        tracing::info!(%reason, fallback = name, "push failed; trying the fallback channel");
        let message = Self::message(kind, id, device, second, expires_at_ms, give_up_at);
        match self.deliver(&message, &device.id).await {
            None => Ok(Via::new(second.platform, true)),
            Some(other) => Err(format!("{reason}; fallback {name}: {other}")),
        }
    }

    /// False for a fallback the development sink stands in for while the device's own provider is
    /// real (in development, with every provider the sink, the fallback is "delivered" like the rest).
    fn fallback_configured(&self, device: &Device, fallback: Channel<'_>) -> bool {
        self.provider.name(fallback.platform) != "sink"
            || self.provider.name(device.platform) == "sink"
    }

    fn count_fallback(&self, fallback: Channel<'_>) {
        metrics::counter!("relay_push_fallbacks_total", "provider" => self.provider.name(fallback.platform))
            .increment(1);
    }

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
                let Some(limit) = self.in_flight.get(&message.platform) else {
                    return Some("rejected: poll_only".into());
                };
                let Ok(_permit) = limit.acquire().await else {
                    return Some(SHUTTING_DOWN.into());
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
