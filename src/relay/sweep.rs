//! The periodic work every replica shares: expiring overdue challenges (whichever replica created
//! them), taking over pushes whose owner is gone or whose create's answer was lost (challenge::pushes),
//! and saying this replica is alive. Each item runs concurrently with a bound, so that expiries never
//! wait behind each other or behind push work, and one slow Redis call delays nothing else.

use super::Relay;
use crate::challenge::{Challenge, ChallengeId};
use crate::expiry::Timer;
use crate::store::{ClaimOutcome, ExpireOutcome, PushWork};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Runs `f` on every item, at most [`CONCURRENCY`] at once, each in a task of its own.
async fn bounded<T, F, Fut>(items: Vec<T>, f: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for item in items {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let work = f(item);
        tasks.spawn(async move {
            work.await;
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Items of one kind handled at once.
const CONCURRENCY: usize = 32;
/// Items the sweep takes from the store per round.
const BATCH: usize = 512;

impl Relay {
    /// Expires a challenge whose timer fired; returns the time still left when it fired early.
    pub async fn expire(&self, id: &ChallengeId) -> Option<Duration> {
        match self.store.expire(id).await {
            Ok(ExpireOutcome::Expired(ended)) => {
                self.ended(*ended);
                None
            }
            Ok(ExpireOutcome::NotDue(left)) => Some(left),
            Ok(ExpireOutcome::Ended) => None,
            Err(error) => {
                tracing::warn!(%error, challenge_id = %id, "expiry failed; retrying");
                Some(Duration::from_millis(250))
            }
        }
    }

    /// One round of the shared periodic work.
    pub async fn sweep(self: Arc<Self>) {
        let due = match self.store.due(BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::debug!(%error, "sweep could not read the store");
                return;
            }
        };
        let relay = Arc::clone(&self);
        let expiries = bounded(due.overdue, move |id| {
            let relay = Arc::clone(&relay);
            async move { relay.expire_or_reschedule(id, Timer::Backstop).await }
        });
        tokio::join!(expiries, self.take_over(due.pushes));
    }

    /// Expires `id`, or sets a timer of the same kind for when it is due.
    pub async fn expire_or_reschedule(&self, id: ChallengeId, timer: Timer) {
        if let Some(left) = self.expire(&id).await {
            self.expiry.schedule(id, left, timer);
        }
    }

    /// Says this replica is alive.
    pub async fn heartbeat(&self) -> Result<(), crate::store::StoreError> {
        self.store.heartbeat().await
    }

    /// Push work that came due: deferred while its owner is alive and sending, claimed otherwise.
    async fn take_over(self: &Arc<Self>, work: Vec<PushWork>) {
        let me = self.store.replica().to_owned();
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut defer = Vec::new();
        let mut claim = Vec::new();
        for w in work {
            let keep = if w.owner == me {
                self.dispatcher.owns(&w.challenge)
            } else {
                match alive.get(&w.owner) {
                    Some(a) => *a,
                    None => {
                        let a = self.store.replica_alive(&w.owner).await.unwrap_or(true);
                        alive.insert(w.owner.clone(), a);
                        a
                    }
                }
            };
            if keep { defer.push(w) } else { claim.push(w) }
        }
        if let Err(error) = self.store.defer_pushes(&defer).await {
            tracing::debug!(%error, "could not defer push work");
        }
        let relay = Arc::clone(self);
        bounded(claim, move |w| {
            let relay = Arc::clone(&relay);
            async move { relay.claim(&w).await }
        })
        .await;
    }

    /// Claims and sends unfinished pushes, unless this replica is sending them already.
    async fn claim(&self, work: &PushWork) {
        if !self.dispatcher.own(&work.challenge) {
            return;
        }
        match self.store.claim_pushes(work).await {
            Ok(ClaimOutcome::Send(challenge, devices)) => {
                tracing::info!(
                    challenge_id = %challenge.id,
                    from = %work.owner,
                    devices = devices.len(),
                    "took over the pushes of a challenge nobody was sending"
                );
                metrics::counter!("relay_push_takeovers_total").increment(1);
                self.dispatcher
                    .push_challenge(&challenge, devices, crate::clock::now_ms());
            }
            Ok(ClaimOutcome::GaveUp(devices)) => {
                self.dispatcher.disown(&work.challenge);
                tracing::info!(challenge_id = %work.challenge, devices, "pushes nobody sent in time: reported relay_lost");
            }
            Ok(ClaimOutcome::Nothing) => self.dispatcher.disown(&work.challenge),
            Err(error) => {
                self.dispatcher.disown(&work.challenge);
                tracing::debug!(%error, "could not claim push work");
            }
        }
    }

    /// After an idempotent retry found `challenge`: if its pushes are unfinished and nobody is sending
    /// them (this replica's create lost its answer, or the creating replica is gone), claim them now.
    pub(super) async fn resume_pushes(&self, challenge: &Challenge) {
        if challenge.state.is_terminal() || challenge.unpushed().is_empty() {
            return;
        }
        let me = self.store.replica();
        let orphaned = if challenge.pusher == me {
            !self.dispatcher.owns(&challenge.id)
        } else {
            !self
                .store
                .replica_alive(&challenge.pusher)
                .await
                .unwrap_or(true)
        };
        if orphaned {
            self.claim(&PushWork {
                challenge: challenge.id.clone(),
                owner: challenge.pusher.clone(),
            })
            .await;
        }
    }
}
