//! `approval-relay mock-push`: a local stand-in for Apple's APNs, Google's FCM HTTP v1 and its OAuth2
//! token endpoint, Xiaomi's Mi Push and Huawei's HMS Push Kit with its OAuth token endpoint, over HTTP/2
//! or HTTP/1.1 (TLS with a generated CA, or plaintext), faithful enough that pointing the relay at the real service is a change of URL and
//! credentials only. It checks what Apple checks (provider JWT signature and age, topic, push type,
//! priority, payload size), answers with Apple's status codes and JSON reasons, can be told per device
//! token to fail (dead, throttled, unavailable n times, slow, silent), and hands every accepted push to
//! listeners (the tests, the device simulator).
//!
//! Written on hyper directly: no crate provides an APNs server to test against.

mod apns;
pub mod cli;
pub mod control;
mod fcm;
mod hms;
pub mod tls;
mod xiaomi;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use p256::ecdsa::VerifyingKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How the mock treats one device token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// The token reaches no app: APNs 410 Unregistered, FCM 404 UNREGISTERED, Mi Push `bad_regids`,
    /// HMS 80300007.
    Dead,
    /// Throttled `times` times, then normal: APNs 429 TooManyRequests and FCM 429 QUOTA_EXCEEDED with
    /// `retry-after`, Mi Push code 10023 (no header: Xiaomi sends none), HMS 503 with `retry-after`.
    Throttle {
        /// Seconds in the `retry-after` header.
        retry_after_secs: u64,
        /// How many requests are throttled.
        times: u32,
    },
    /// A server failure `times` times, then normal: APNs and FCM 503, Mi Push HTTP 503, HMS 500
    /// 81000001.
    Unavailable {
        /// How many requests fail.
        times: u32,
    },
    /// Answers normally after a delay.
    Slow(Duration),
    /// Never answers.
    Silent,
}

/// How many accepted pushes `accepted()` keeps (the oldest go first).
const MAX_KEPT: usize = 100_000;

/// One push the mock accepted.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Delivery {
    /// `apns`, `fcm`, `xiaomi` or `hms`.
    pub provider: &'static str,
    /// The device token it was sent to.
    pub token: String,
    /// `apns-collapse-id`, FCM collapse key, Mi Push `notify_id`, HMS notification `tag`.
    pub collapse_id: String,
    /// `alert` or `background`.
    pub push_type: String,
    /// The JSON payload (APNs), the `message` (FCM, HMS), the form fields as an object (Mi Push).
    pub payload: serde_json::Value,
    /// When the mock accepted it, microseconds since the Unix epoch (for load tests on the same host).
    pub received_unix_us: u64,
}

/// What the mock accepts.
#[derive(Clone)]
pub struct MockConfig {
    /// APNs provider keys by (team id, key id).
    pub apns_keys: HashMap<(String, String), VerifyingKey>,
    /// Topics (bundle ids) accepted; empty accepts any.
    pub apns_topics: Vec<String>,
    /// Oldest provider token accepted (Apple: one hour).
    pub apns_token_max_age: Duration,
    /// FCM service accounts by client e-mail: the RSA public key (PKCS#1 DER) their assertions verify with.
    pub fcm_accounts: HashMap<String, Vec<u8>>,
    /// FCM project ids accepted; empty accepts any.
    pub fcm_projects: Vec<String>,
    /// Mi Push AppSecrets accepted in `Authorization: key=…`.
    pub xiaomi_secrets: Vec<String>,
    /// Android packages Mi Push accepts as `restricted_package_name`; empty accepts any.
    pub xiaomi_packages: Vec<String>,
    /// HMS apps: app id (OAuth client id) → app secret.
    pub hms_apps: HashMap<String, String>,
    /// How long an HMS access token lives (Huawei: an hour).
    pub hms_token_lifetime: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            apns_keys: HashMap::new(),
            apns_topics: Vec::new(),
            apns_token_max_age: Duration::from_secs(3600),
            fcm_accounts: HashMap::new(),
            fcm_projects: Vec::new(),
            xiaomi_secrets: Vec::new(),
            xiaomi_packages: Vec::new(),
            hms_apps: HashMap::new(),
            hms_token_lifetime: Duration::from_secs(3600),
        }
    }
}

pub(crate) struct State {
    config: MockConfig,
    behaviors: Mutex<HashMap<String, Behavior>>,
    deliveries: broadcast::Sender<Delivery>,
    accepted: Mutex<std::collections::VecDeque<Delivery>>,
    requests: Mutex<HashMap<String, u32>>,
    verified_jwts: Mutex<std::collections::HashSet<String>>,
    access_tokens: Mutex<HashMap<String, std::time::Instant>>,
    /// Until then every push is answered 503 ServiceUnavailable, whatever its token.
    outage_until: Mutex<Option<std::time::Instant>>,
}

impl State {
    fn issue_token(&self, token: &str, until: std::time::Instant) {
        self.access_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.to_owned(), until);
    }

    /// Whether the mock ever issued `token` (expired or not).
    fn token_issued(&self, token: &str) -> bool {
        self.access_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(token)
    }

    /// Ends the life of every access token issued so far (FCM's and HMS's), as if an hour had passed.
    fn expire_tokens(&self) {
        let now = std::time::Instant::now();
        for until in self
            .access_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values_mut()
        {
            *until = now;
        }
    }

    fn token_valid(&self, token: &str) -> bool {
        let tokens = self
            .access_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens
            .get(token)
            .is_some_and(|until| *until > std::time::Instant::now())
    }

    fn count_request(&self, token: &str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(token.to_owned())
            .or_default() += 1;
    }

    fn start_outage(&self, duration: Duration) {
        *self
            .outage_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(std::time::Instant::now() + duration);
    }

    /// The behavior for a token, consuming one of its counted failures; during an outage, 503 for all.
    fn take_behavior(&self, token: &str) -> Option<Behavior> {
        let outage = *self
            .outage_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if outage.is_some_and(|until| std::time::Instant::now() < until) {
            return Some(Behavior::Unavailable { times: 1 });
        }
        let mut map = self
            .behaviors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let behavior = map.get_mut(token)?;
        let current = behavior.clone();
        match behavior {
            Behavior::Throttle { times, .. } | Behavior::Unavailable { times } => {
                if *times <= 1 {
                    map.remove(token);
                } else {
                    *times -= 1;
                }
            }
            _ => {}
        }
        Some(current)
    }

    /// True when `token` verified before, or `verify` says it does now (then it is remembered).
    fn verified_token(&self, token: &str, verify: impl FnOnce() -> bool) -> bool {
        let mut verified = self
            .verified_jwts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.contains(token) {
            return true;
        }
        if !verify() {
            return false;
        }
        // Providers rotate their token about hourly: a small set never grows far.
        if verified.len() > 1_000 {
            verified.clear();
        }
        verified.insert(token.to_owned());
        true
    }

    fn deliver(&self, mut delivery: Delivery) {
        delivery.received_unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut accepted = self
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded, so that a long load test does not grow the mock without end.
        if accepted.len() >= MAX_KEPT {
            accepted.pop_front();
        }
        accepted.push_back(delivery.clone());
        drop(accepted);
        let _ = self.deliveries.send(delivery);
    }
}

/// A running mock.
pub struct MockPush {
    state: Arc<State>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    stop: CancellationToken,
}

impl MockPush {
    /// Starts serving on `addr` (port 0 picks one), with TLS from a fresh CA or as h2c.
    ///
    /// # Errors
    /// The address cannot be bound or TLS cannot be set up.
    pub async fn start(
        addr: SocketAddr,
        use_tls: bool,
        config: MockConfig,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let tls = if use_tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let acceptor = tls.map(|t| t.acceptor);
        let state = Arc::new(State {
            config,
            behaviors: Mutex::new(HashMap::new()),
            // Room for a second of pushes at load-test rates before a slow reader loses any.
            deliveries: broadcast::channel(16_384).0,
            // Room for all it keeps from the start: growing it doubles and copies under the lock that
            // every push handler takes, a stall of several ms at 65,536 pushes that load tests saw.
            accepted: Mutex::new(std::collections::VecDeque::with_capacity(MAX_KEPT)),
            requests: Mutex::new(HashMap::new()),
            verified_jwts: Mutex::new(std::collections::HashSet::new()),
            access_tokens: Mutex::new(HashMap::new()),
            outage_until: Mutex::new(None),
        });
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, acceptor, Arc::clone(&state), stop.clone()));
        Ok(Self {
            state,
            addr,
            ca_pem,
            stop,
        })
    }

    /// The base URL to give the relay (`https://127.0.0.1:port` or `http://…`).
    pub fn base_url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate (PEM) to trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Sets how a token is treated from now on.
    pub fn set_behavior(&self, token: &str, behavior: Behavior) {
        self.state
            .behaviors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.to_owned(), behavior);
    }

    /// Answers every push 503 for `duration` from now.
    pub fn outage(&self, duration: Duration) {
        self.state.start_outage(duration);
    }

    /// Expires every OAuth access token issued so far: the next push with one is refused as expired.
    pub fn expire_access_tokens(&self) {
        self.state.expire_tokens();
    }

    /// Every push accepted from now on.
    pub fn listen(&self) -> broadcast::Receiver<Delivery> {
        self.state.deliveries.subscribe()
    }

    /// How many requests for a token reached the mock, whatever the answer (`oauth:<client id>` counts an
    /// HMS app's token requests).
    pub fn requests_for(&self, token: &str) -> u32 {
        self.state
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .copied()
            .unwrap_or(0)
    }

    /// The pushes accepted so far (the latest 100,000).
    pub fn accepted(&self) -> Vec<Delivery> {
        self.state
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

impl Drop for MockPush {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let (state, tls, stop) = (Arc::clone(&state), tls.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(route(&state, req).await) }
            });
            // HTTP/2 for the push endpoints (TLS or h2c); HTTP/1.1 too, as OAuth clients use it.
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        tokio::select! {
                            r = builder.serve_connection(TokioIo::new(stream), service) => r,
                            () = stop.cancelled() => Ok(()),
                        }
                    }
                    Err(_) => return,
                },
                None => tokio::select! {
                    r = builder.serve_connection(TokioIo::new(tcp), service) => r,
                    () = stop.cancelled() => Ok(()),
                },
            };
            if let Err(error) = result {
                tracing::debug!(%error, "mock-push connection ended");
            }
        });
    }
}

async fn route(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<control::Body> {
    use http_body_util::BodyExt;
    let path = req.uri().path();
    let post = req.method() == hyper::Method::POST;
    let full = if path.starts_with("/3/device/") {
        apns::handle(state, req).await
    } else if path == "/token" && post {
        fcm::token(state, req).await
    } else if path.starts_with("/v1/projects/") && post {
        fcm::send(state, req).await
    } else if (path == "/v3/message/regid" || path == "/v2/message/regid") && post {
        xiaomi::send(state, req).await
    } else if path == "/oauth2/v3/token" && post {
        hms::token(state, req).await
    } else if path.starts_with("/v1/") && path.ends_with("/messages:send") && post {
        hms::send(state, req).await
    } else if path == "/mock/expire-tokens" && post {
        state.expire_tokens();
        hyper::Response::builder()
            .status(204)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    } else if path.starts_with("/mock/tokens/") && post {
        return control::set_behavior(state, req).await;
    } else if path == "/mock/outage" && post {
        return control::outage(state, req).await;
    } else if path == "/mock/pushes" {
        return control::pushes(state, &req);
    } else {
        json(404, &serde_json::json!({ "reason": "BadPath" }))
    };
    full.map(BodyExt::boxed)
}

pub(crate) fn json(status: u16, body: &serde_json::Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}
