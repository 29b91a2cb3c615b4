//! Deadlines: one timer task per replica (a `DelayQueue`, not a task per challenge) that expires each
//! challenge it knows of at its deadline, plus a once-a-second sweep of overdue pending challenges in the
//! store that catches those whose creating replica is gone. Both only ask the store to expire; the store
//! judges the deadline by its own clock, so a timer that fires early or twice changes nothing.

use crate::challenge::ChallengeId;
use crate::relay::Relay;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

/// How often the store is swept for overdue challenges.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Schedules expiries on this replica's timer task.
#[derive(Clone)]
pub struct ExpiryHandle(mpsc::UnboundedSender<(ChallengeId, Duration)>);

/// The receiving end, run by [`run`].
pub struct ExpiryQueue(mpsc::UnboundedReceiver<(ChallengeId, Duration)>);

/// A connected handle and queue.
pub fn channel() -> (ExpiryHandle, ExpiryQueue) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ExpiryHandle(tx), ExpiryQueue(rx))
}

impl ExpiryHandle {
    /// Expire `id` after `delay` (the time left until its deadline).
    pub fn schedule(&self, id: ChallengeId, delay: Duration) {
        // Fails only after shutdown, when the sweep of the next replica takes over.
        let _ = self.0.send((id, delay));
    }
}

/// Runs the timers and the sweep until `shutdown`.
pub async fn run(queue: ExpiryQueue, relay: Arc<Relay>, shutdown: CancellationToken) {
    let ExpiryQueue(mut rx) = queue;
    let mut timers: DelayQueue<ChallengeId> = DelayQueue::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some((id, delay)) = rx.recv() => {
                timers.insert(id, delay);
            }
            Some(expired) = timers.next(), if !timers.is_empty() => {
                let id = expired.into_inner();
                if let Some(again) = relay.expire(&id).await {
                    timers.insert(id, again);
                }
            }
            _ = sweep.tick() => relay.sweep().await,
        }
    }
}
