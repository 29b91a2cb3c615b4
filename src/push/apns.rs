//! The APNs client: HTTP/2 over rustls to `POST {base}/3/device/<token>`, with a cached ES256 provider
//! token. Our own on hyper because `a2` hard-codes Apple's hosts and so can never reach a local mock
//! (DESIGN.md §9). One multiplexed connection per host (hyper's pool), keep-alive PINGs, reconnection
//! after GOAWAY or a dropped connection by the pool.

use super::{ALERT_BODY, ALERT_TITLE, PushKind, PushMessage, PushOutcome, PushProvider, jwt};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// Apple's production endpoint.
pub const PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's development endpoint.
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// Provider tokens are renewed after this long: Apple refuses tokens older than an hour and asks that
/// they be renewed no more often than every 20 minutes.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(40 * 60);
/// Longest wait for one APNs answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    settings: ApnsSettings,
    token: Mutex<Option<(String, Instant)>>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A hyper HTTP/2 client over rustls (ring) with Mozilla's roots plus an optional extra root, shared
/// by the APNs and FCM clients.
///
/// # Errors
/// The extra root is not a valid PEM certificate.
pub fn http2_client(
    extra_root_pem: Option<&str>,
) -> anyhow::Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_root_pem {
        for cert in tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        {
            roots.add(cert.map_err(|e| anyhow::anyhow!("extra root: {e}"))?)?;
        }
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    // DESIGN.md §10: hyper-util leaves TCP_NODELAY off.
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .http2_only(true)
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .build(connector))
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
                    "challenge_id": message.challenge_id.as_str(),
                }),
            ),
            PushKind::Withdraw => (
                "background",
                "5",
                serde_json::json!({
                    "aps": { "content-available": 1 },
                    "challenge_id": message.challenge_id.as_str(),
                    "action": "withdraw",
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
        .header("apns-collapse-id", message.challenge_id.as_str())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload.to_string())))
    }

    async fn send_once(&self, message: &PushMessage, renew: bool) -> (PushOutcome, bool) {
        let token = self.provider_token(renew);
        let request = match self.request(message, &token) {
            Ok(r) => r,
            Err(e) => return (PushOutcome::Rejected(format!("bad request: {e}")), false),
        };
        // An answer that could only come after the deadline is useless: give up a second before it, so
        // the watcher still hears DELIVERY_FAILED while the challenge is pending.
        let left_ms = message
            .expires_at_ms
            .saturating_sub(crate::device_sim::phone::now_ms())
            .saturating_sub(1_000);
        let Some(limit) = u64::try_from(left_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
        else {
            return (PushOutcome::Retry(None, "deadline".into()), false);
        };
        let response =
            match tokio::time::timeout(REQUEST_TIMEOUT.min(limit), self.client.request(request))
                .await
            {
                Err(_) => return (PushOutcome::Retry(None, "timeout".into()), false),
                Ok(Err(e)) => return (PushOutcome::Retry(None, format!("connection: {e}")), false),
                Ok(Ok(r)) => r,
            };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let reason = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str().map(str::to_owned)))
            .unwrap_or_default();
        (
            classify(status, &reason, retry_after),
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
