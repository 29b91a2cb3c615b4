//! The development push sink: records what would be sent instead of sending it, and lets listeners (the
//! tests, the logs) see every push. Used when no APNs or FCM credentials are configured.

use super::{PushMessage, PushOutcome, PushProvider};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Pushes kept for inspection.
const KEEP: usize = 10_000;

/// A provider that accepts every push and remembers the last ones.
pub struct SinkProvider {
    sent: Mutex<VecDeque<PushMessage>>,
    listeners: broadcast::Sender<PushMessage>,
}

impl Default for SinkProvider {
    fn default() -> Self {
        Self {
            sent: Mutex::new(VecDeque::new()),
            listeners: broadcast::channel(1024).0,
        }
    }
}

impl SinkProvider {
    /// Everything "sent" so far (the last 10,000), oldest first.
    pub fn sent(&self) -> Vec<PushMessage> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Receives every push from now on.
    pub fn listen(&self) -> broadcast::Receiver<PushMessage> {
        self.listeners.subscribe()
    }
}

#[async_trait]
impl PushProvider for SinkProvider {
    async fn send(&self, message: &PushMessage) -> PushOutcome {
        tracing::info!(
            id = %message.id,
            platform = message.platform.name(),
            kind = ?message.kind,
            "push recorded by the development sink (nothing leaves this machine)"
        );
        {
            let mut sent = self
                .sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            sent.push_back(message.clone());
            if sent.len() > KEEP {
                sent.pop_front();
            }
        }
        let _ = self.listeners.send(message.clone());
        PushOutcome::Delivered
    }

    fn name(&self, _platform: crate::device::Platform) -> &'static str {
        "sink"
    }
}
