//! The watch hub: maps each challenge id to the local watchers of this replica and hands every event to
//! them without ever blocking the producer. Stores feed it (in process, or from one Redis subscriber
//! connection per node); gRPC streams read from it.
//!
//! A watcher's channel is bounded. A challenge emits at most one event per targeted device plus one
//! terminal event, so a capacity above that never fills for a single-challenge watch; a watcher that
//! does fill up (a stalled multi-challenge stream) is dropped rather than allowed to stall the hub, and
//! its stream ends with an error telling the client to re-watch.

use crate::challenge::{ChallengeId, Event};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Where a watcher's events go: bounded for single-challenge watches (see the module note), unbounded for
/// multi-challenge streams, whose backlog is bounded by their open challenges because such a stream stops
/// reading new requests while its client does not read answers.
///
/// A single-challenge watch gets its events behind an `Arc`: tokio allocates a channel's first block of
/// 32 slots when the channel is made, and 32 events inline (~3 KB) were half of an idle watch's memory;
/// 32 pointers are 256 bytes, and one event is shared by all the watchers of its challenge.
pub enum Sink {
    /// One challenge's watch.
    Bounded(mpsc::Sender<Arc<Event>>),
    /// A StreamChallenges stream.
    Unbounded(mpsc::UnboundedSender<Event>),
}

impl From<mpsc::Sender<Arc<Event>>> for Sink {
    fn from(tx: mpsc::Sender<Arc<Event>>) -> Self {
        Self::Bounded(tx)
    }
}

impl From<mpsc::UnboundedSender<Event>> for Sink {
    fn from(tx: mpsc::UnboundedSender<Event>) -> Self {
        Self::Unbounded(tx)
    }
}

struct Watcher {
    key: u64,
    tx: Sink,
}

/// Fan-out of challenge events to the watchers on this replica.
#[derive(Default)]
pub struct Hub {
    watchers: Mutex<HashMap<ChallengeId, Vec<Watcher>>>,
    next_key: AtomicU64,
    idle: Mutex<Vec<mpsc::UnboundedSender<ChallengeId>>>,
}

/// Keeps a watcher registered; dropping it (the stream ended or the client left) removes the watcher.
pub struct Registration {
    hub: Arc<Hub>,
    challenge: ChallengeId,
    key: u64,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ChallengeId, Vec<Watcher>>> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is one call),
        // so a poisoned lock is still safe to use.
        self.watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `tx` for the events of one challenge.
    pub fn register(
        self: &Arc<Self>,
        challenge: &ChallengeId,
        tx: impl Into<Sink>,
    ) -> Registration {
        let tx = tx.into();
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(challenge.clone())
            .or_default()
            .push(Watcher { key, tx });
        metrics::gauge!("relay_watchers").increment(1.0);
        Registration {
            hub: Arc::clone(self),
            challenge: challenge.clone(),
            key,
        }
    }

    /// Hands an event to every watcher of its challenge; full or closed watchers are dropped.
    pub fn dispatch(&self, event: &Event) {
        let mut map = self.lock();
        let Some(list) = map.get_mut(&event.challenge_id) else {
            return;
        };
        let before = list.len();
        let mut shared: Option<Arc<Event>> = None;
        list.retain(|w| match &w.tx {
            Sink::Bounded(tx) => match tx.try_send(Arc::clone(
                shared.get_or_insert_with(|| Arc::new(event.clone())),
            )) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("relay_watchers_dropped_total", "reason" => "full")
                        .increment(1);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
            Sink::Unbounded(tx) => tx.send(event.clone()).is_ok(),
        });
        let dropped = before - list.len();
        let idle = list.is_empty();
        if idle {
            forget(&mut map, &event.challenge_id);
        }
        drop(map);
        if idle {
            self.went_idle(&event.challenge_id);
        }
        if dropped > 0 {
            metrics::gauge!("relay_watchers").decrement(dropped as f64);
        }
    }

    /// Asks to be told of every challenge that loses its last local watcher (the subscriber unsubscribes
    /// from it, the timer task drops its timer).
    pub fn notify_idle(&self, tx: mpsc::UnboundedSender<ChallengeId>) {
        self.listeners().push(tx);
    }

    fn listeners(&self) -> MutexGuard<'_, Vec<mpsc::UnboundedSender<ChallengeId>>> {
        // As `lock`: every update is one call, so a poisoned lock is still consistent.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn went_idle(&self, challenge: &ChallengeId) {
        self.listeners()
            .retain(|tx| tx.send(challenge.clone()).is_ok());
    }

    /// True when this replica has a watcher for the challenge.
    pub fn contains(&self, challenge: &ChallengeId) -> bool {
        self.lock().contains_key(challenge)
    }

    /// Challenges with at least one local watcher (for re-subscription and resync).
    pub fn watched(&self) -> Vec<ChallengeId> {
        self.lock().keys().cloned().collect()
    }

    /// Number of registered watchers.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// True when nobody watches anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes a challenge nobody here watches any more, and gives the table's room back once it is mostly
/// empty: a `HashMap` never shrinks by itself, so a burst of watched challenges would keep its table.
fn forget(map: &mut HashMap<ChallengeId, Vec<Watcher>>, challenge: &ChallengeId) {
    map.remove(challenge);
    if map.capacity() > 4 * map.len() + 1024 {
        map.shrink_to(2 * map.len());
    }
}

impl Registration {
    /// Moves this watcher to another challenge (an idempotent create answered with an older id).
    pub fn moved_to(&self, challenge: &ChallengeId) -> Registration {
        let mut map = self.hub.lock();
        let mut moved = None;
        let mut idle = false;
        if let Some(list) = map.get_mut(&self.challenge) {
            if let Some(i) = list.iter().position(|w| w.key == self.key) {
                moved = Some(list.swap_remove(i));
            }
            if list.is_empty() {
                forget(&mut map, &self.challenge);
                idle = true;
            }
        }
        let key = self.hub.next_key.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = moved {
            map.entry(challenge.clone())
                .or_default()
                .push(Watcher { key, tx: w.tx });
        }
        drop(map);
        // As when the last watcher leaves: the subscriber unsubscribes from the id given up (the caller
        // subscribed to it before its create), or its channel would stay subscribed for good.
        if idle {
            self.hub.went_idle(&self.challenge);
        }
        Registration {
            hub: Arc::clone(&self.hub),
            challenge: challenge.clone(),
            key,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.hub.lock();
        let Some(list) = map.get_mut(&self.challenge) else {
            return;
        };
        let before = list.len();
        list.retain(|w| w.key != self.key);
        let removed = before - list.len();
        let idle = list.is_empty();
        if idle {
            forget(&mut map, &self.challenge);
        }
        drop(map);
        if idle {
            self.hub.went_idle(&self.challenge);
        }
        if removed > 0 {
            metrics::gauge!("relay_watchers").decrement(removed as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{AccountId, EventKind, State};

    fn event(id: &ChallengeId, sequence: u64) -> Event {
        Event {
            challenge_id: id.clone(),
            sequence,
            at_ms: 0,
            kind: EventKind::Ended(State::Expired),
        }
    }

    #[test]
    fn events_reach_only_the_watchers_of_their_challenge_and_dropped_registrations_leave() {
        let hub = Hub::new();
        let account = AccountId::parse("a").expect("valid");
        let (one, two) = (
            ChallengeId::generate(&account),
            ChallengeId::generate(&account),
        );
        let (tx1, mut rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        let r1 = hub.register(&one, tx1);
        let _r2 = hub.register(&two, tx2);
        hub.dispatch(&event(&one, 1));
        assert_eq!(rx1.try_recv().map(|e| e.sequence), Ok(1));
        assert!(rx2.try_recv().is_err());
        drop(r1);
        assert_eq!(hub.watched(), vec![two]);
    }

    #[test]
    fn a_full_watcher_is_dropped_instead_of_blocking() {
        let hub = Hub::new();
        let id = ChallengeId::generate(&AccountId::parse("a").expect("valid"));
        let (tx, _rx) = mpsc::channel(1);
        let _r = hub.register(&id, tx);
        hub.dispatch(&event(&id, 1));
        hub.dispatch(&event(&id, 2));
        assert!(hub.is_empty());
    }

    #[test]
    fn a_watcher_moved_to_another_challenge_leaves_the_first_idle_and_gets_the_second_s_events() {
        let hub = Hub::new();
        let account = AccountId::parse("a").expect("valid");
        let (fresh, existing) = (
            ChallengeId::generate(&account),
            ChallengeId::generate(&account),
        );
        let (idle_tx, mut idle_rx) = mpsc::unbounded_channel();
        hub.notify_idle(idle_tx);
        let (tx, mut rx) = mpsc::channel(4);
        let first = hub.register(&fresh, tx);
        let moved = first.moved_to(&existing);
        drop(first);
        assert_eq!(idle_rx.try_recv().ok(), Some(fresh.clone()));
        assert!(idle_rx.try_recv().is_err(), "told once");
        assert_eq!(hub.watched(), vec![existing.clone()]);
        hub.dispatch(&event(&existing, 1));
        assert_eq!(rx.try_recv().map(|e| e.sequence), Ok(1));
        drop(moved);
        assert!(hub.is_empty());
    }

    #[test]
    fn the_table_shrinks_once_its_watchers_are_gone() {
        let hub = Hub::new();
        let account = AccountId::parse("a").expect("valid");
        let (tx, _rx) = mpsc::channel(1);
        let registrations: Vec<_> = (0..20_000)
            .map(|_| hub.register(&ChallengeId::generate(&account), tx.clone()))
            .collect();
        assert!(hub.lock().capacity() >= 20_000);
        drop(registrations);
        assert!(hub.is_empty());
        assert!(hub.lock().capacity() < 2_048, "{}", hub.lock().capacity());
    }
}
