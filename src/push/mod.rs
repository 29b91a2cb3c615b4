//! Push delivery: the `PushProvider` seam (APNs, FCM, Mi Push, HMS, the development sink), what a push
//! carries, and how
//! a provider's answer is classified so that the dispatcher acts on it in one place.
//!
//! A push carries the challenge (or notice) id and a generic alert only (DESIGN.md guarantee 7): never the
//! IP, place or account. The phone fetches details over the signed device API.

pub mod apns;
pub mod budget;
mod delivery;
pub mod dispatcher;
pub mod fcm;
pub mod hms;
pub mod http;
pub mod jwt;
mod reports;
pub mod router;
pub mod sink;
pub mod xiaomi;

use crate::device::Platform;
use async_trait::async_trait;
use std::time::Duration;

pub use dispatcher::Dispatcher;
pub use sink::SinkProvider;

/// The generic alert text shown on the lock screen.
pub const ALERT_TITLE: &str = "Sign-in request";
/// The generic alert body.
pub const ALERT_BODY: &str = "Open the app to approve or deny a sign-in to your account.";
/// The generic title of a notice (new sign-in, new device, fraud report, suspected clone).
pub const NOTICE_TITLE: &str = "Account activity";
/// The generic body of a notice.
pub const NOTICE_BODY: &str = "Open the app to review recent activity on your account.";

/// Why a push is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// Visible alert: a challenge awaits an answer.
    Challenge,
    /// Silent: the challenge ended; remove its prompt (same collapse id).
    Withdraw,
    /// Visible alert asking nothing: a notice to fetch and read.
    Notice,
}

/// One push to one device. Holds nothing private beyond the provider token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// Alert or withdrawal.
    pub kind: PushKind,
    /// The only payload, a challenge id (or a notice id for [`PushKind::Notice`]): the phone fetches
    /// the rest.
    pub id: String,
    /// The push is useless after this instant (APNs `apns-expiration`, FCM `ttl`).
    pub expires_at_ms: i64,
    /// No request is sent, and none is waited for, at or after this local instant (a second before a
    /// challenge's deadline, so DELIVERY_FAILED still reaches its watchers).
    pub give_up_at: std::time::Instant,
    /// Which provider.
    pub platform: Platform,
    /// The provider's device token.
    pub token: String,
    /// APNs topic or Android package.
    pub app_id: String,
}

/// A provider's answer, classified into what the dispatcher must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Accepted by the provider.
    Delivered,
    /// The token will never work again: remove it.
    TokenDead(String),
    /// Try again later (after the given time if the provider said so).
    Retry(Option<Duration>, String),
    /// Our credentials were refused.
    AuthFailed(String),
    /// The provider refused this push for good.
    Rejected(String),
}

/// Sends pushes through one provider.
#[async_trait]
pub trait PushProvider: Send + Sync + 'static {
    /// Sends one push and classifies the answer; never panics, never retries by itself.
    async fn send(&self, message: &PushMessage) -> PushOutcome;

    /// The provider that pushes to `platform`, as metrics label it (`apns`, `fcm`, `sink`, ...).
    fn name(&self, platform: Platform) -> &'static str;
}
