//! The push outcomes of one challenge on their way to the store. The first outcome is recorded at once;
//! outcomes that arrive while a record is in flight wait for it and then go together in one store call,
//! so a challenge's devices answering at about the same time cost one round trip, not one each, and no
//! outcome waits longer than one round trip. The call that carries the last outcome says so, and the
//! store drops the challenge's push work with it.

use crate::challenge::{ChallengeId, DeliveryState, DeviceId};
use crate::store::Store;
use std::sync::Arc;

/// Outcomes not yet sent, whether a task is sending, and how many are still to come.
struct Queue {
    outcomes: Vec<(DeviceId, DeliveryState)>,
    sending: bool,
    remaining: usize,
}

/// One challenge's outcomes.
pub(super) struct Reports {
    queue: std::sync::Mutex<Queue>,
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
        {
            let mut queue = self.lock();
            queue.outcomes.push((device, outcome));
            queue.remaining = queue.remaining.saturating_sub(1);
            if queue.sending {
                return false; // The sending task takes it on its next turn.
            }
            queue.sending = true;
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
            if let Err(error) = store.record_deliveries(challenge, &batch, last).await {
                tracing::warn!(%error, outcomes = batch.len(), "could not record push outcomes");
            }
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
