//! The HTTP client shared by the provider clients, and the one exchange they all make: send, wait no
//! longer than the challenge allows, read status, `Retry-After` and the JSON body.

use super::PushOutcome;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// Longest wait for one provider answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer's body that is read: every provider answers in well under 1 KB, and a body
/// past this is read as no JSON at all (a hostile or broken endpoint cannot make the relay buffer it).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// An HTTP/2 client to a push provider.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A hyper HTTP/2 client over rustls (ring) with Mozilla's roots plus an optional extra root, for APNs
/// and FCM, which speak HTTP/2.
///
/// # Errors
/// The extra root is not a valid PEM certificate.
pub fn http2_client(extra_root_pem: Option<&str>) -> anyhow::Result<HttpClient> {
    client(extra_root_pem, true)
}

/// As [`http2_client`], but HTTP/2 only where the server offers it in ALPN and HTTP/1.1 otherwise (and
/// over plain `http://`): Xiaomi's and Huawei's endpoints do not promise HTTP/2.
///
/// # Errors
/// The extra root is not a valid PEM certificate.
pub fn any_version_client(extra_root_pem: Option<&str>) -> anyhow::Result<HttpClient> {
    client(extra_root_pem, false)
}

fn client(extra_root_pem: Option<&str>, http2_only: bool) -> anyhow::Result<HttpClient> {
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
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = if http2_only {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_all_versions().wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .build(connector))
}

/// A provider's answer.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<Duration>,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: serde_json::Value,
}

/// Sends `request` and reads the answer, giving up at `give_up_at`: an answer that could only come
/// after it is useless, and the watcher should still hear DELIVERY_FAILED while the challenge is pending.
///
/// # Errors
/// `Retry` for a timeout, a connection error, or no time left. The body is `Null` when it is not JSON or
/// longer than 64 KiB.
pub async fn exchange(
    client: &HttpClient,
    request: hyper::Request<Full<Bytes>>,
    give_up_at: std::time::Instant,
) -> Result<Answer, PushOutcome> {
    let limit = give_up_at.saturating_duration_since(std::time::Instant::now());
    if limit.is_zero() {
        return Err(PushOutcome::Retry(None, "deadline".into()));
    }
    let response =
        match tokio::time::timeout(REQUEST_TIMEOUT.min(limit), client.request(request)).await {
            Err(_) => return Err(PushOutcome::Retry(None, "timeout".into())),
            Ok(Err(e)) => return Err(PushOutcome::Retry(None, format!("connection: {e}"))),
            Ok(Ok(r)) => r,
        };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    // The body is waited for no longer than the headers were: a provider trickling it cannot hold a push.
    let left = give_up_at.saturating_duration_since(std::time::Instant::now());
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect();
    let Ok(collected) = tokio::time::timeout(REQUEST_TIMEOUT.min(left), body).await else {
        return Err(PushOutcome::Retry(
            None,
            "timeout reading the answer".into(),
        ));
    };
    let bytes = collected.map(|b| b.to_bytes()).unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}
