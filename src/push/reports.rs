//! The push outcomes of one challenge on their way to the store. The first outcome waits for the others,
//! at most [`GATHER_FOR`]: a challenge's pushes usually end within a millisecond of each other, and then
//! all of them cost one store call (one round trip, one script, one clock read) instead of two or three.
//! Outcomes that arrive later, while a record is in flight, wait for it and then go together in the next
//! call, so none waits longer than [`GATHER_FOR`] plus one round trip. The call that carries the last
//! outcome says so, and the store drops the challenge's push work with it.

use crate::challenge::{ChallengeId, DeliveryState, DeviceId};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait of a challenge's first push outcome for the others before it is recorded.
pub const GATHER_FOR: Duration = Duration::from_millis(10);
/// Attempts at recording one batch, RETRY_AFTER apart and doubling: a batch holds all of a challenge's
/// outcomes, so one failed call (a failover, a dropped connection) must not lose them all.
const ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// Records `batch`, retried a few times; a batch that still fails is logged and dropped (a sweep that
/// claims the challenge's pushes redoes the devices without a stored outcome).
async fn record(
    store: &Arc<dyn Store>,
    challenge: &ChallengeId,
    batch: &[(DeviceId, DeliveryState)],
    last: bool,
) {
    let mut wait = RETRY_AFTER;
    for attempt in 1..=ATTEMPTS {
        match store.record_deliveries(challenge, batch, last).await {
            Ok(()) => return,
            Err(error) if attempt == ATTEMPTS => {
                tracing::warn!(%error, outcomes = batch.len(), "could not record push outcomes");
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}

/// Outcomes not yet sent, whether a task is sending, and how many are still to come.
struct Queue {
    outcomes: Vec<(DeviceId, DeliveryState)>,
    sending: bool,
    remaining: usize,
}

/// One challenge's outcomes.
pub(super) struct Reports {
    queue: std::sync::Mutex<Queue>,
    /// Signalled when the last outcome is in.
    all_in: tokio::sync::Notify,
}

impl Reports {
    /// Outcomes for `devices` devices.
    pub(super) fn new(devices: usize) -> Self {
        Self {
            queue: std::sync::Mutex::new(Queue {
                outcomes: Vec::new(),
                sending: false,
                remaining: devices,
            }),
            all_in: tokio::sync::Notify::new(),
        }
    }

    /// Records one outcome; true for the call that recorded the last one.
    pub(super) async fn report(
        &self,
        store: &Arc<dyn Store>,
        challenge: &ChallengeId,
        device: DeviceId,
        outcome: DeliveryState,
    ) -> bool {
        let others_due = {
            let mut queue = self.lock();
            queue.outcomes.push((device, outcome));
            queue.remaining = queue.remaining.saturating_sub(1);
            if queue.remaining == 0 {
                // Kept as a permit if the sender is not waiting yet.
                self.all_in.notify_one();
            }
            if queue.sending {
                return false; // The sending task takes it on its next turn.
            }
            queue.sending = true;
            queue.remaining > 0
        };
        if others_due {
            let _ = tokio::time::timeout(GATHER_FOR, self.all_in.notified()).await;
        }
        let mut finished = false;
        loop {
            let (batch, last) = {
                let mut queue = self.lock();
                if queue.outcomes.is_empty() {
                    queue.sending = false;
                    return finished;
                }
                (std::mem::take(&mut queue.outcomes), queue.remaining == 0)
            };
            record(store, challenge, &batch, last).await;
            finished |= last;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-written: take it as it is.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
