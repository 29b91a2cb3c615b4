//! Sends each push through the provider of its device's platform.

use super::{PushMessage, PushOutcome, PushProvider};
use crate::device::Platform;
use async_trait::async_trait;
use std::sync::Arc;

/// APNs pushes to one provider, FCM pushes to another.
pub struct PlatformRouter {
    /// For `Platform::Apns`.
    pub apns: Arc<dyn PushProvider>,
    /// For `Platform::Fcm`.
    pub fcm: Arc<dyn PushProvider>,
}

#[async_trait]
impl PushProvider for PlatformRouter {
    async fn send(&self, message: &PushMessage) -> PushOutcome {
        match message.platform {
            Platform::Apns => self.apns.send(message).await,
            Platform::Fcm => self.fcm.send(message).await,
        }
    }

    fn name(&self, platform: Platform) -> &'static str {
        match platform {
            Platform::Apns => self.apns.name(platform),
            Platform::Fcm => self.fcm.name(platform),
        }
    }
}
