//! The dispatcher: pushes a challenge to all its devices at once (`delivery.rs` sends each one and acts
//! on the answer), withdraws ended challenges and sends notices, and keeps the set of challenges whose
//! pushes this replica owes and is sending, so that the takeover sweep never claims work this replica
//! is still doing (challenge::pushes).

use super::budget::Budgets;
use super::reports::Reports;
use super::{PushKind, PushProvider};
use crate::challenge::{Challenge, ChallengeId, DeliveryState, GIVE_UP_BEFORE_MS};
use crate::device::{Device, Platform};
use crate::notice::Notice;
use crate::store::Store;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long a notice's alert is worth delivering: a day.
const NOTICE_ALERT_MS: i64 = 24 * 3600 * 1000;

/// Sends pushes for challenges and records their outcomes.
#[derive(Clone)]
pub struct Dispatcher {
    pub(super) provider: Arc<dyn PushProvider>,
    pub(super) store: Arc<dyn Store>,
    tracker: TaskTracker,
    /// Provider requests in flight, limited per platform: one slow provider cannot hold the permits
    /// the others need.
    pub(super) in_flight: Arc<HashMap<Platform, Semaphore>>,
    pub(super) budgets: Arc<Budgets>,
    owned: Arc<Mutex<HashSet<ChallengeId>>>,
}

/// The local instant `ms_before` the deadline `deadline_ms`, both measured by a clock that reads
/// `clock_now_ms` now (the store's time a challenge carries, or this replica's): no clock is read again
/// while the push retries.
pub fn instant_before(deadline_ms: i64, ms_before: i64, clock_now_ms: i64) -> Instant {
    let left = deadline_ms
        .saturating_sub(ms_before)
        .saturating_sub(clock_now_ms);
    Instant::now() + Duration::from_millis(left.max(0).unsigned_abs())
}

impl Dispatcher {
    /// A dispatcher with at most `max_in_flight` provider requests at once per platform.
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
            in_flight: Arc::new(
                Platform::ALL
                    .into_iter()
                    .filter(|p| p.is_pushed())
                    .map(|p| (p, Semaphore::new(max_in_flight.max(1))))
                    .collect(),
            ),
            budgets: Arc::new(Budgets::default()),
            owned: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, HashSet<ChallengeId>> {
        self.owned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks a challenge's pushes as this replica's to send (before its creation is even asked for, so a
    /// sweep never takes them for abandoned); false when they already are.
    pub fn own(&self, id: &ChallengeId) -> bool {
        self.owned().insert(id.clone())
    }

    /// Gives up a challenge's pushes (nothing to send after all, or all sent).
    pub fn disown(&self, id: &ChallengeId) {
        self.owned().remove(id);
    }

    /// Whether this replica is sending a challenge's pushes.
    pub fn owns(&self, id: &ChallengeId) -> bool {
        self.owned().contains(id)
    }

    /// Pushes a challenge to each device in the background; the store's clock read `store_now_ms` a
    /// moment ago. The challenge is owned until every outcome is recorded.
    pub fn push_challenge(&self, challenge: &Challenge, devices: Vec<Device>, store_now_ms: i64) {
        self.own(&challenge.id);
        // Poll-only devices have their outcome from the create step; nothing is sent to them.
        let devices: Vec<Device> = devices
            .into_iter()
            .filter(|d| d.platform.is_pushed())
            .collect();
        if devices.is_empty() {
            self.disown(&challenge.id);
            return;
        }
        let reports = Arc::new(Reports::new(devices.len()));
        // DELIVERY_FAILED must reach watchers while the challenge is pending: give up a second early.
        let give_up_at = instant_before(challenge.expires_at_ms, GIVE_UP_BEFORE_MS, store_now_ms);
        for device in devices {
            let this = self.clone();
            let reports = Arc::clone(&reports);
            let challenge_id = challenge.id.clone();
            let expires_at_ms = challenge.expires_at_ms;
            let span =
                tracing::info_span!("push", challenge_id = %challenge_id, device_id = %device.id);
            self.tracker.spawn(
                async move {
                    let outcome = match this
                        .deliver_device(
                            PushKind::Challenge,
                            &challenge_id.to_string(),
                            &device,
                            expires_at_ms,
                            give_up_at,
                        )
                        .await
                    {
                        Ok(via) => DeliveryState::Delivered(via),
                        Err(reason) => DeliveryState::Failed(reason),
                    };
                    if reports
                        .report(&this.store, &challenge_id, device.id, outcome)
                        .await
                    {
                        this.disown(&challenge_id);
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Tells `devices` (those a challenge was pushed to, bar the one that answered) to remove its prompt,
    /// in the background.
    pub fn withdraw(&self, challenge: &Challenge, devices: Vec<Device>) {
        // A withdrawal is worth delivering a little after the deadline too: the alert may still show.
        let expires_at_ms = challenge.expires_at_ms.max(challenge.ended_at_ms) + 60_000;
        let give_up_at = instant_before(expires_at_ms, 0, crate::clock::now_ms());
        for device in devices {
            if !challenge.is_targeted(&device.id) {
                continue;
            }
            // Through the channel that showed the alert: a withdrawal elsewhere would not remove it. While
            // the outcome is unknown (still sending, or not recorded yet) the alert may be on either.
            let channels = device.channels();
            let through: Vec<_> = match challenge.delivery(&device.id) {
                DeliveryState::Delivered(via) => channels
                    .into_iter()
                    .filter(|c| c.fallback == via.fallback)
                    .collect(),
                DeliveryState::PollOnly => continue,
                DeliveryState::Pending => channels,
                DeliveryState::Failed(_) => channels.into_iter().take(1).collect(),
            };
            for channel in through {
                let message = Self::message(
                    PushKind::Withdraw,
                    &challenge.id.to_string(),
                    &device,
                    channel,
                    expires_at_ms,
                    give_up_at,
                );
                let this = self.clone();
                let device_id = device.id.clone();
                let span = tracing::info_span!("withdraw", challenge_id = %challenge.id, device_id = %device.id);
                self.tracker.spawn(
                    async move {
                        let _ = this.deliver(&message, &device_id).await;
                    }
                    .instrument(span),
                );
            }
        }
    }

    /// Pushes a notice to each of its devices that has a push token, in the background. A notice's
    /// alert is worth showing for a day at most; the notice itself stays fetchable longer.
    pub fn push_notice(&self, notice: &Notice, devices: Vec<Device>) {
        let expires_at_ms = notice
            .expires_at_ms
            .min(notice.created_at_ms.saturating_add(NOTICE_ALERT_MS));
        let give_up_at = instant_before(expires_at_ms, 0, crate::clock::now_ms());
        for device in devices {
            if device.channels().is_empty() {
                continue;
            }
            let this = self.clone();
            let id = notice.id.to_string();
            let span =
                tracing::info_span!("notice", notice_id = %notice.id, device_id = %device.id);
            self.tracker.spawn(
                async move {
                    if let Err(reason) = this
                        .deliver_device(PushKind::Notice, &id, &device, expires_at_ms, give_up_at)
                        .await
                    {
                        tracing::info!(%reason, "notice not delivered");
                    }
                }
                .instrument(span),
            );
        }
    }
}
