//! The APNs client: HTTP/2 over rustls to `POST {base}/3/device/<token>`, with a cached ES256 provider
//! token. Our own on hyper because `a2` hard-codes Apple's hosts and so can never reach a local mock
//! (DESIGN.md §9). One multiplexed connection per host (hyper's pool), keep-alive PINGs, reconnection
//! after GOAWAY or a dropped connection by the pool.

use super::http::{HttpClient, exchange, http2_client};
use super::{
    ALERT_BODY, ALERT_TITLE, NOTICE_BODY, NOTICE_TITLE, PushKind, PushMessage, PushOutcome,
    PushProvider, jwt,
};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Apple's production endpoint.
pub const PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's development endpoint.
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// Provider tokens are renewed after this long: Apple refuses tokens older than an hour and asks that
/// they be renewed no more often than every 20 minutes.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(40 * 60);

/// APNs credentials and endpoint.
#[derive(Clone)]
pub struct ApnsSettings {
    /// `https://api.push.apple.com`, the sandbox, or a mock (`http://` for h2c).
    pub base_url: String,
    /// The 10-character key id of the `.p8` key.
    pub key_id: String,
    /// The 10-character team id.
    pub team_id: String,
    /// The provider key.
    pub key: SigningKey,
    /// Extra trusted root (PEM), e.g. the mock's CA; Mozilla's roots are always trusted.
    pub extra_root_pem: Option<String>,
}

impl ApnsSettings {
    /// Reads the `.p8` key file (PKCS#8 PEM) as Apple issues it.
    ///
    /// # Errors
    /// A readable reason when the file is missing or is not a P-256 PKCS#8 key.
    pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("apns key file {}: {e}", path.display()))?;
        SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "apns key file {}: not a P-256 PKCS#8 key: {e}",
                path.display()
            )
        })
    }
}

/// Sends pushes to APNs.
pub struct ApnsProvider {
    client: HttpClient,
    settings: ApnsSettings,
    token: Mutex<Option<(String, Instant)>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl ApnsProvider {
    /// A client for the given endpoint and credentials.
    ///
    /// # Errors
    /// The extra root certificate is invalid.
    pub fn new(settings: ApnsSettings) -> anyhow::Result<Self> {
        Ok(Self {
            client: http2_client(settings.extra_root_pem.as_deref())?,
            settings,
            token: Mutex::new(None),
        })
    }

    /// The cached provider token, renewed when older than [`TOKEN_LIFETIME`] or when `renew`.
    fn provider_token(&self, renew: bool) -> String {
        let mut cached = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cached.as_ref() {
            Some((token, made)) if !renew && made.elapsed() < TOKEN_LIFETIME => token.clone(),
            _ => {
                let token = jwt::sign_es256(
                    &self.settings.key,
                    &self.settings.key_id,
                    &self.settings.team_id,
                    now_secs(),
                );
                *cached = Some((token.clone(), Instant::now()));
                token
            }
        }
    }

    fn request(
        &self,
        message: &PushMessage,
        token: &str,
    ) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
        let (push_type, priority, payload) = match message.kind {
            PushKind::Challenge => (
                "alert",
                "10",
                serde_json::json!({
                    "aps": {
                        "alert": { "title": ALERT_TITLE, "body": ALERT_BODY },
                        "sound": "default",
                        "category": "APPROVAL_REQUEST",
                        "mutable-content": 1
                    },
                    "challenge_id": message.id,
                }),
            ),
            PushKind::Withdraw => (
                "background",
                "5",
                serde_json::json!({
                    "aps": { "content-available": 1 },
                    "challenge_id": message.id,
                    "action": "withdraw",
                }),
            ),
            PushKind::Notice => (
                "alert",
                "10",
                serde_json::json!({
                    "aps": {
                        "alert": { "title": NOTICE_TITLE, "body": NOTICE_BODY },
                        "sound": "default",
                        "category": "ACCOUNT_NOTICE",
                        "mutable-content": 1
                    },
                    "notice_id": message.id,
                    "action": "notice",
                }),
            ),
        };
        hyper::Request::post(format!(
            "{}/3/device/{}",
            self.settings.base_url.trim_end_matches('/'),
            message.token
        ))
        .header("authorization", format!("bearer {token}"))
        .header("apns-topic", &message.app_id)
        .header("apns-push-type", push_type)
        .header("apns-priority", priority)
        .header(
            "apns-expiration",
            (message.expires_at_ms / 1000).to_string(),
        )
        .header("apns-collapse-id", &message.id)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload.to_string())))
    }

    async fn send_once(&self, message: &PushMessage, renew: bool) -> (PushOutcome, bool) {
        let token = self.provider_token(renew);
        let request = match self.request(message, &token) {
            Ok(r) => r,
            Err(e) => return (PushOutcome::Rejected(format!("bad request: {e}")), false),
        };
        let answer = match exchange(&self.client, request, message.give_up_at).await {
            Ok(answer) => answer,
            Err(outcome) => return (outcome, false),
        };
        let reason = answer.body["reason"].as_str().unwrap_or_default();
        (
            classify(answer.status, reason, answer.retry_after),
            reason == "ExpiredProviderToken",
        )
    }
}

/// APNs status and reason → what the dispatcher must do.
pub fn classify(status: u16, reason: &str, retry_after: Option<Duration>) -> PushOutcome {
    match (status, reason) {
        (200, _) => PushOutcome::Delivered,
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            PushOutcome::TokenDead(reason.to_owned())
        }
        (403, _) => PushOutcome::AuthFailed(reason.to_owned()),
        (429 | 500..=599, _) => PushOutcome::Retry(retry_after, format!("{status} {reason}")),
        _ => PushOutcome::Rejected(format!("{status} {reason}")),
    }
}

#[async_trait]
impl PushProvider for ApnsProvider {
    async fn send(&self, message: &PushMessage) -> PushOutcome {
        let (outcome, expired) = self.send_once(message, false).await;
        if expired {
            // The token aged out (clock skew, a long pause): renew it once and try again.
            tracing::info!("apns provider token expired; renewing it");
            return self.send_once(message, true).await.0;
        }
        outcome
    }

    fn name(&self, _platform: crate::device::Platform) -> &'static str {
        "apns"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_answers_are_classified_into_actions() {
        assert_eq!(classify(200, "", None), PushOutcome::Delivered);
        assert_eq!(
            classify(410, "Unregistered", None),
            PushOutcome::TokenDead("Unregistered".into())
        );
        assert_eq!(
            classify(400, "BadDeviceToken", None),
            PushOutcome::TokenDead("BadDeviceToken".into())
        );
        assert!(matches!(
            classify(403, "InvalidProviderToken", None),
            PushOutcome::AuthFailed(_)
        ));
        assert!(matches!(
            classify(429, "TooManyRequests", Some(Duration::from_secs(3))),
            PushOutcome::Retry(Some(_), _)
        ));
        assert!(matches!(
            classify(503, "ServiceUnavailable", None),
            PushOutcome::Retry(None, _)
        ));
        assert!(matches!(
            classify(413, "PayloadTooLarge", None),
            PushOutcome::Rejected(_)
        ));
    }
}
