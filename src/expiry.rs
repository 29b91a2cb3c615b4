//! Deadlines and the shared periodic work: one timer task per replica (a `DelayQueue`, not a task per
//! challenge) that expires each challenge it knows of at its deadline, and once a second the sweep
//! (`relay::sweep`: overdue challenges whose creating replica is gone, push work nobody is doing) and
//! the heartbeat. Both only ask the store; the store judges the deadline by its own clock, so a timer
//! that fires early or twice changes nothing. Nothing here waits for the store inline: every expiry
//! runs in its own task, bounded, so deadlines never queue behind each other or behind a slow call.

use crate::challenge::ChallengeId;
use crate::relay::Relay;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

/// How often the store is swept and the heartbeat sent.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Expiries in flight at once from the timers.
const EXPIRIES_AT_ONCE: usize = 64;

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

/// Runs the timers, the sweep and the heartbeat until `shutdown`.
pub async fn run(queue: ExpiryQueue, relay: Arc<Relay>, shutdown: CancellationToken) {
    let ExpiryQueue(mut rx) = queue;
    let mut timers: DelayQueue<ChallengeId> = DelayQueue::new();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(EXPIRIES_AT_ONCE));
    let sweeping = Arc::new(AtomicBool::new(false));
    let beating = Arc::new(AtomicBool::new(true));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some((id, delay)) = rx.recv() => {
                timers.insert(id, delay);
            }
            Some(expired) = timers.next(), if !timers.is_empty() => {
                let (relay, permits) = (Arc::clone(&relay), Arc::clone(&permits));
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    relay.expire_or_reschedule(expired.into_inner()).await;
                });
            }
            _ = tick.tick() => {
                let (beat, beating) = (Arc::clone(&relay), Arc::clone(&beating));
                tokio::spawn(async move { heartbeat(&beat, &beating).await });
                // One sweep at a time: a slow one is not stacked on.
                if !sweeping.swap(true, Ordering::AcqRel) {
                    let (relay, sweeping) = (Arc::clone(&relay), Arc::clone(&sweeping));
                    tokio::spawn(async move {
                        Arc::clone(&relay).sweep().await;
                        sweeping.store(false, Ordering::Release);
                    });
                }
            }
        }
    }
}

/// Says this replica is alive; logs when that starts or stops working, not on every beat.
async fn heartbeat(relay: &Relay, beating: &AtomicBool) {
    match relay.heartbeat().await {
        Ok(()) => {
            if !beating.swap(true, Ordering::Relaxed) {
                tracing::info!("heartbeat reaches the store again");
            }
        }
        Err(error) => {
            if beating.swap(false, Ordering::Relaxed) {
                tracing::warn!(%error, "heartbeat failed: other replicas may take over this one's pushes");
            }
        }
    }
}
