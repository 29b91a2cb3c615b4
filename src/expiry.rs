//! Deadlines and the shared periodic work: one timer task per replica (a `DelayQueue`, not a task per
//! challenge) that expires each challenge watched here at its deadline, and once a second the sweep
//! (`relay::sweep`: overdue challenges whatever replica created them, push work nobody is doing) and
//! the heartbeat. Both only ask the store; the store judges the deadline by its own clock, so a timer
//! that fires early or twice changes nothing. Nothing here waits for the store inline: every expiry
//! runs in its own task, bounded, so deadlines never queue behind each other or behind a slow call.
//!
//! A timer exists so that a watcher here sees EXPIRED on time, one per challenge however many watch it;
//! when the watchers are gone (the challenge ended and they got its terminal event, or they hung up) the
//! hub says so and the timer is dropped (one that fires anyway, a watch started meanwhile having been
//! dropped again, does nothing): a decided challenge costs no store call and no timer at its deadline.
//! Challenges nobody watches here are the sweep's, which finds them in the overdue index within a second
//! of their deadline.

use crate::challenge::ChallengeId;
use crate::relay::Relay;
use crate::watch::Hub;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

/// How often the store is swept and the heartbeat sent.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Expiries in flight at once from the timers.
const EXPIRIES_AT_ONCE: usize = 64;

/// Why a timer was set, which decides whether it still matters when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// For the watchers of the challenge on this replica: skipped when none is left.
    Watch,
    /// For the sweep, which handed the challenge out early (its index score was an estimate): always run,
    /// since the index no longer holds it.
    Backstop,
}

/// Schedules expiries on this replica's timer task.
#[derive(Clone)]
pub struct ExpiryHandle(mpsc::UnboundedSender<(ChallengeId, Duration, Timer)>);

/// The receiving end, run by [`run`].
pub struct ExpiryQueue(mpsc::UnboundedReceiver<(ChallengeId, Duration, Timer)>);

/// A connected handle and queue.
pub fn channel() -> (ExpiryHandle, ExpiryQueue) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ExpiryHandle(tx), ExpiryQueue(rx))
}

impl ExpiryHandle {
    /// Expire `id` after `delay` (the time left until its deadline).
    pub fn schedule(&self, id: ChallengeId, delay: Duration, timer: Timer) {
        // Fails only after shutdown, when the sweep of the next replica takes over.
        let _ = self.0.send((id, delay, timer));
    }
}

/// True when a timer that fired still has a reason to ask the store.
pub fn still_needed(timer: Timer, id: &ChallengeId, hub: &Hub) -> bool {
    timer == Timer::Backstop || hub.contains(id)
}

/// Runs the timers, the sweep and the heartbeat until `shutdown`.
pub async fn run(queue: ExpiryQueue, relay: Arc<Relay>, shutdown: CancellationToken) {
    let ExpiryQueue(mut rx) = queue;
    let mut timers = Timers::default();
    // A challenge nobody here watches any more needs no watch timer: dropped now, not skipped at its
    // deadline (a decided challenge with a 10-minute TTL would otherwise keep it for 10 minutes).
    let (idle_tx, mut idle) = mpsc::unbounded_channel();
    relay.hub().notify_idle(idle_tx);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(EXPIRIES_AT_ONCE));
    let sweeping = Arc::new(AtomicBool::new(false));
    let beating = Arc::new(AtomicBool::new(true));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some((id, delay, timer)) = rx.recv() => {
                timers.insert(id, delay, timer);
            }
            Some(id) = idle.recv() => {
                // Watched again meanwhile (the two channels are not ordered): its timer is needed.
                if !relay.hub().contains(&id) {
                    timers.forget(&id);
                }
            }
            Some((id, timer)) = timers.next(), if !timers.is_empty() => {
                if !still_needed(timer, &id, relay.hub()) {
                    metrics::counter!("relay_expiry_timers_skipped_total").increment(1);
                    continue;
                }
                let (relay, permits) = (Arc::clone(&relay), Arc::clone(&permits));
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    relay.expire_or_reschedule(id, timer).await;
                });
            }
            _ = tick.tick() => {
                timers.compact();
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

/// The timers of one replica: one watch timer per challenge however many watches asked for it, and every
/// backstop as given. (A timer per watch kept 100,000 timers for 200 challenges, and their slab, for the
/// challenges' whole TTL after the streams closed.)
#[derive(Default)]
struct Timers {
    queue: DelayQueue<(ChallengeId, Timer)>,
    watched: HashMap<ChallengeId, delay_queue::Key>,
}

impl Timers {
    /// Adds a timer; a watch timer for a challenge that has one moves it earlier if this one is earlier.
    fn insert(&mut self, id: ChallengeId, delay: Duration, timer: Timer) {
        if timer == Timer::Backstop {
            self.queue.insert((id, timer), delay);
            return;
        }
        match self.watched.get(&id) {
            Some(key) => {
                let when = tokio::time::Instant::now() + delay;
                if when < self.queue.deadline(key) {
                    self.queue.reset_at(key, when);
                }
            }
            None => {
                let key = self.queue.insert((id.clone(), timer), delay);
                self.watched.insert(id, key);
            }
        }
    }

    /// Drops a challenge's watch timer, if it has one (backstops stay: the sweep handed those out).
    fn forget(&mut self, id: &ChallengeId) {
        if let Some(key) = self.watched.remove(id) {
            self.queue.try_remove(&key);
        }
    }

    /// The next timer to fire.
    async fn next(&mut self) -> Option<(ChallengeId, Timer)> {
        let (id, timer) = self.queue.next().await?.into_inner();
        if timer == Timer::Watch {
            self.watched.remove(&id);
        }
        Some((id, timer))
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Gives back the room of timers that fired, once it is mostly empty (neither the slab nor the map
    /// shrinks by itself after a burst of watches).
    fn compact(&mut self) {
        let len = self.queue.len();
        if self.queue.capacity() > 4 * len + 1024 {
            self.queue.compact();
        }
        if self.watched.capacity() > 4 * self.watched.len() + 1024 {
            self.watched.shrink_to(2 * self.watched.len());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::AccountId;

    fn ids(n: usize) -> Vec<ChallengeId> {
        let account = AccountId::parse("a").expect("valid");
        (0..n).map(|_| ChallengeId::generate(&account)).collect()
    }

    #[tokio::test]
    async fn a_challenge_watched_many_times_has_one_timer_that_fires_once() {
        let ids = ids(2);
        let id = |n: usize| ids[n - 1].clone();
        let mut timers = Timers::default();
        for _ in 0..1_000 {
            timers.insert(id(1), Duration::from_secs(600), Timer::Watch);
        }
        timers.insert(id(2), Duration::from_millis(40), Timer::Watch);
        assert_eq!(timers.len(), 2);
        // An earlier deadline for the same challenge moves its one timer.
        timers.insert(id(1), Duration::from_millis(10), Timer::Watch);
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next().await, Some((id(1), Timer::Watch)));
        assert_eq!(timers.next().await, Some((id(2), Timer::Watch)));
        assert!(timers.is_empty());
        // Fired, it can be set again (a watch after a reschedule).
        timers.insert(id(1), Duration::from_millis(10), Timer::Watch);
        assert_eq!(timers.len(), 1);
    }

    #[tokio::test]
    async fn a_forgotten_challenge_loses_its_watch_timer_but_not_its_backstop() {
        let ids = ids(2);
        let mut timers = Timers::default();
        timers.insert(ids[0].clone(), Duration::from_secs(600), Timer::Watch);
        timers.insert(ids[0].clone(), Duration::from_millis(10), Timer::Backstop);
        timers.insert(ids[1].clone(), Duration::from_millis(20), Timer::Watch);
        timers.forget(&ids[0]);
        timers.forget(&ids[0]);
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next().await, Some((ids[0].clone(), Timer::Backstop)));
        assert_eq!(timers.next().await, Some((ids[1].clone(), Timer::Watch)));
        assert!(timers.is_empty());
    }

    #[tokio::test]
    async fn backstops_are_kept_apart_from_watch_timers() {
        let ids = ids(1);
        let id = |_: usize| ids[0].clone();
        let mut timers = Timers::default();
        timers.insert(id(1), Duration::from_millis(20), Timer::Watch);
        timers.insert(id(1), Duration::from_millis(10), Timer::Backstop);
        timers.insert(id(1), Duration::from_millis(30), Timer::Backstop);
        assert_eq!(timers.len(), 3);
        assert_eq!(timers.next().await, Some((id(1), Timer::Backstop)));
        assert_eq!(timers.next().await, Some((id(1), Timer::Watch)));
        assert_eq!(timers.next().await, Some((id(1), Timer::Backstop)));
    }

    #[tokio::test]
    async fn room_comes_back_after_a_burst_fired() {
        let mut timers = Timers::default();
        for id in ids(20_000) {
            timers.insert(id, Duration::ZERO, Timer::Watch);
        }
        for _ in 0..20_000 {
            timers.next().await;
        }
        timers.compact();
        assert!(
            timers.queue.capacity() < 1_024,
            "{}",
            timers.queue.capacity()
        );
        assert!(
            timers.watched.capacity() < 1_024,
            "{}",
            timers.watched.capacity()
        );
    }
}
