//! Sends each push through the provider of its channel's platform.

use super::{PushMessage, PushOutcome, PushProvider};
use crate::device::Platform;
use async_trait::async_trait;
use std::sync::Arc;

/// One provider per pushed platform (the development sink for those without credentials).
pub struct PlatformRouter {
    /// For `Platform::Apns`.
    pub apns: Arc<dyn PushProvider>,
    /// For `Platform::Fcm`.
    pub fcm: Arc<dyn PushProvider>,
    /// For `Platform::Xiaomi`.
    pub xiaomi: Arc<dyn PushProvider>,
    /// For `Platform::Hms`.
    pub hms: Arc<dyn PushProvider>,
}

impl PlatformRouter {
    fn route(&self, platform: Platform) -> Option<&Arc<dyn PushProvider>> {
        match platform {
            Platform::Apns => Some(&self.apns),
            Platform::Fcm => Some(&self.fcm),
            Platform::Xiaomi => Some(&self.xiaomi),
            Platform::Hms => Some(&self.hms),
            Platform::PollOnly => None,
        }
    }
}

#[async_trait]
impl PushProvider for PlatformRouter {
    async fn send(&self, message: &PushMessage) -> PushOutcome {
        match self.route(message.platform) {
            Some(provider) => provider.send(message).await,
            // The dispatcher never pushes a poll-only device; refuse rather than guess.
            None => PushOutcome::Rejected("poll_only".into()),
        }
    }

    fn name(&self, platform: Platform) -> &'static str {
        self.route(platform).map_or("none", |p| p.name(platform))
    }
}
