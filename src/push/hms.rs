//! The HMS Push Kit client: an OAuth 2.0 client-credentials token from Huawei's token endpoint, cached
//! for its lifetime and fetched again when Push Kit answers 80200003 (expired) or 80200001 (refused),
//! then `POST {base}/v1/{appId}/messages:send` with the JSON message, one token per request. Written
//! here because the Rust HMS crates are unmaintained demos that hide the result code; the relay needs
//! it to prune, back off and alert.
//!
//! Push Kit puts its result in the JSON `code` (a string) whatever the HTTP status; throttling is HTTP
//! 503, with `Retry-After` when given.

use super::http::{HttpClient, any_version_client, exchange};
use super::{
    ALERT_BODY, ALERT_TITLE, NOTICE_BODY, NOTICE_TITLE, PushKind, PushMessage, PushOutcome,
    PushProvider,
};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use std::time::{Duration, Instant};

/// Huawei's Push Kit endpoint.
pub const PRODUCTION: &str = "https://push-api.cloud.huawei.com";
/// Huawei's OAuth 2.0 token endpoint.
pub const TOKEN_URL: &str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token";
/// A token is fetched again this long before Huawei says it expires (or at half its life if shorter).
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// A failed token fetch is answered from memory this long: pushes queued behind it fail at once instead
/// of each asking again (Huawei allows 1,000 token requests per 5 minutes per app).
const FAILURE_HOLD: Duration = Duration::from_secs(5);
/// Push Kit's result code for success.
pub const SUCCESS: &str = "80000000";

/// What an HMS client is given.
pub struct HmsSettings {
    /// `https://push-api.cloud.huawei.com` or a mock.
    pub base_url: String,
    /// The OAuth token endpoint.
    pub token_url: String,
    /// The app id (OAuth client id) from AppGallery Connect.
    pub app_id: String,
    /// The app secret (OAuth client secret).
    pub app_secret: String,
    /// Extra root certificate (PEM) to trust, for both endpoints.
    pub extra_root_pem: Option<String>,
}

/// An access token and when to stop using it.
#[derive(Clone)]
struct Token {
    value: String,
    until: Instant,
}

/// The current token, or the last fetch's failure while it is held.
#[derive(Default)]
struct Cache {
    token: Option<Token>,
    failed: Option<(PushOutcome, Instant)>,
}

/// Sends pushes through HMS Push Kit.
pub struct HmsProvider {
    client: HttpClient,
    settings: HmsSettings,
    /// One fetch at a time: Huawei allows 1,000 token requests per 5 minutes per app.
    token: tokio::sync::Mutex<Cache>,
}

impl HmsProvider {
    /// A client with these settings.
    ///
    /// # Errors
    /// The extra root is not a valid PEM certificate, or the app id or secret is empty.
    pub fn new(mut settings: HmsSettings) -> anyhow::Result<Self> {
        settings.base_url = settings.base_url.trim_end_matches('/').to_owned();
        settings.app_secret = settings.app_secret.trim().to_owned();
        if settings.app_id.is_empty() || settings.app_secret.is_empty() {
            anyhow::bail!("hms needs an app id and an app secret");
        }
        Ok(Self {
            client: any_version_client(settings.extra_root_pem.as_deref())?,
            settings,
            token: tokio::sync::Mutex::new(Cache::default()),
        })
    }

    /// The cached token, or a new one; `stale` is a token Push Kit refused, never returned again.
    async fn token(&self, stale: Option<&str>, give_up_at: Instant) -> Result<String, PushOutcome> {
        // Another push may be fetching: wait for it no longer than this push may take.
        let Ok(mut cached) = tokio::time::timeout_at(give_up_at.into(), self.token.lock()).await
        else {
            return Err(PushOutcome::Retry(
                None,
                "oauth: token fetch in progress".into(),
            ));
        };
        if let Some(t) = cached.token.as_ref()
            && t.until > Instant::now()
            && Some(t.value.as_str()) != stale
        {
            return Ok(t.value.clone());
        }
        if let Some((outcome, until)) = &cached.failed
            && *until > Instant::now()
        {
            return Err(outcome.clone());
        }
        let fetched = self.fetch(give_up_at).await;
        match &fetched {
            Ok(token) => {
                cached.failed = None;
                cached.token = Some(token.clone());
            }
            Err(outcome) => cached.failed = Some((outcome.clone(), Instant::now() + FAILURE_HOLD)),
        }
        fetched.map(|t| t.value)
    }

    /// Asks the token endpoint for a new access token.
    async fn fetch(&self, give_up_at: Instant) -> Result<Token, PushOutcome> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.settings.app_id)
            .append_pair("client_secret", &self.settings.app_secret)
            .finish();
        let request = hyper::Request::post(&self.settings.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| PushOutcome::Rejected("bad token request".into()))?;
        let answer = exchange(&self.client, request, give_up_at).await?;
        let body = &answer.body;
        match (answer.status, body["access_token"].as_str()) {
            (200, Some(value)) if !value.is_empty() => {
                let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3600));
                metrics::counter!("relay_push_oauth_tokens_total", "provider" => "hms")
                    .increment(1);
                Ok(Token {
                    value: value.to_owned(),
                    until: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN).max(lifetime / 2),
                })
            }
            (429 | 500..=599, _) => Err(PushOutcome::Retry(
                answer.retry_after,
                format!("oauth {}", answer.status),
            )),
            (status, _) => Err(PushOutcome::AuthFailed(format!(
                "oauth {status} {} {}",
                body["error"], body["sub_error"]
            ))),
        }
    }

    fn body(message: &PushMessage, ttl_secs: i64) -> serde_json::Value {
        let (action, key) = match message.kind {
            PushKind::Challenge => ("challenge", "challenge_id"),
            PushKind::Withdraw => ("withdraw", "challenge_id"),
            PushKind::Notice => ("notice", "notice_id"),
        };
        let data = serde_json::json!({ key: message.id, "action": action }).to_string();
        let mut android = serde_json::json!({
            // Keep every message for an offline phone; the notification's tag collapses a challenge's.
            "collapse_key": -1,
            "urgency": if message.kind == PushKind::Withdraw { "NORMAL" } else { "HIGH" },
            "ttl": format!("{ttl_secs}s"),
        });
        let alert = match message.kind {
            PushKind::Challenge => Some((ALERT_TITLE, ALERT_BODY)),
            PushKind::Notice => Some((NOTICE_TITLE, NOTICE_BODY)),
            PushKind::Withdraw => None,
        };
        if let Some((title, body)) = alert {
            android["notification"] = serde_json::json!({
                "title": title,
                "body": body,
                "tag": message.id,
                "click_action": { "type": 3 },
            });
        }
        serde_json::json!({
            "validate_only": false,
            "message": { "data": data, "token": [message.token], "android": android },
        })
    }

    async fn send_once(&self, message: &PushMessage, access: &str) -> Result<Answer, PushOutcome> {
        let left_ms = message.expires_at_ms.saturating_sub(crate::clock::now_ms());
        let body = Self::body(message, (left_ms / 1000).max(1));
        let request = hyper::Request::post(format!(
            "{}/v1/{}/messages:send",
            self.settings.base_url, self.settings.app_id
        ))
        .header("authorization", format!("Bearer {access}"))
        .header("content-type", "application/json;charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|_| PushOutcome::Rejected("bad request".into()))?;
        let answer = exchange(&self.client, request, message.give_up_at).await?;
        Ok(Answer {
            code: answer.body["code"].as_str().unwrap_or_default().to_owned(),
            outcome: classify(
                answer.status,
                &answer.body,
                answer.retry_after,
                &message.token,
            ),
        })
    }
}

/// A classified answer and its raw code (to recognise a refused token).
struct Answer {
    code: String,
    outcome: PushOutcome,
}

/// Whether Push Kit refused the access token itself (expired, or not accepted).
fn token_refused(code: &str) -> bool {
    matches!(code, "80200003" | "80200001")
}

/// Push Kit status and result → what the dispatcher must do, for a request to the one token `token`.
pub fn classify(
    status: u16,
    body: &serde_json::Value,
    retry_after: Option<Duration>,
    token: &str,
) -> PushOutcome {
    let code = body["code"].as_str().unwrap_or_default();
    let detail = format!("{code} {}", body["msg"].as_str().unwrap_or_default())
        .trim()
        .to_owned();
    match code {
        SUCCESS => PushOutcome::Delivered,
        // Partly sent: `msg` is a JSON string naming the tokens that were not.
        "80100000" if illegal_tokens(body).iter().any(|t| t == token) => {
            PushOutcome::TokenDead("80100000 illegal token".into())
        }
        "80100000" => PushOutcome::Delivered,
        "80300007" => PushOutcome::TokenDead(detail),
        "80200001" | "80200003" | "80300002" | "80300011" | "80600003" => {
            PushOutcome::AuthFailed(detail)
        }
        "81000001" => PushOutcome::Retry(retry_after, detail),
        _ if status == 429 || status >= 500 => {
            PushOutcome::Retry(retry_after, format!("{status} {detail}").trim().to_owned())
        }
        _ => PushOutcome::Rejected(format!("{status} {detail}").trim().to_owned()),
    }
}

/// The tokens an 80100000 answer's `msg` lists as not sent: `illegal_tokens` (an array), or
/// `illegalTokens` (arrays grouped by reason) as newer Push Kit versions write it.
fn illegal_tokens(body: &serde_json::Value) -> Vec<String> {
    let Some(msg) = body["msg"]
        .as_str()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
    else {
        return Vec::new();
    };
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect()
    };
    let mut out = strings(&msg["illegal_tokens"]);
    if let Some(groups) = msg["illegalTokens"].as_object() {
        out.extend(groups.values().flat_map(strings));
    }
    out
}

#[async_trait]
impl PushProvider for HmsProvider {
    async fn send(&self, message: &PushMessage) -> PushOutcome {
        let access = match self.token(None, message.give_up_at).await {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let answer = match self.send_once(message, &access).await {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        if !token_refused(&answer.code) {
            return answer.outcome;
        }
        // Once with a fresh token (Huawei's own demos do the same); refused again, it is our credentials.
        tracing::info!(code = %answer.code, "hms refused the access token; fetching a new one");
        let access = match self.token(Some(&access), message.give_up_at).await {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        match self.send_once(message, &access).await {
            Ok(a) => a.outcome,
            Err(outcome) => outcome,
        }
    }

    fn name(&self, _platform: crate::device::Platform) -> &'static str {
        "hms"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn push_kit_answers_are_classified_into_actions() {
        let ok = json!({"code": "80000000", "msg": "Success", "requestId": "1"});
        assert_eq!(classify(200, &ok, None, "t"), PushOutcome::Delivered);
        let partial = json!({"code": "80100000",
            "msg": "{\"success\":0,\"failure\":1,\"illegal_tokens\":[\"t\"]}"});
        assert!(matches!(
            classify(200, &partial, None, "t"),
            PushOutcome::TokenDead(_)
        ));
        assert_eq!(classify(200, &partial, None, "u"), PushOutcome::Delivered);
        let grouped = json!({"code": "80100000",
            "msg": "{\"illegalTokens\":{\"tokenFormatError\":[\"t\"]},\"success\":0,\"failure\":1}"});
        assert!(matches!(
            classify(200, &grouped, None, "t"),
            PushOutcome::TokenDead(_)
        ));
        let dead = json!({"code": "80300007", "msg": "All the tokens are invalid"});
        assert!(matches!(
            classify(404, &dead, None, "t"),
            PushOutcome::TokenDead(_)
        ));
        let expired = json!({"code": "80200003", "msg": "OAuth token expired"});
        assert!(matches!(
            classify(401, &expired, None, "t"),
            PushOutcome::AuthFailed(_)
        ));
        assert!(token_refused("80200003") && token_refused("80200001") && !token_refused(SUCCESS));
        let busy = json!({"code": "", "msg": "traffic control"});
        assert_eq!(
            classify(503, &busy, Some(Duration::from_secs(2)), "t"),
            PushOutcome::Retry(Some(Duration::from_secs(2)), "503 traffic control".into())
        );
        let internal = json!({"code": "81000001", "msg": "internal error"});
        assert!(matches!(
            classify(500, &internal, None, "t"),
            PushOutcome::Retry(..)
        ));
        let big = json!({"code": "80300008", "msg": "message body size exceeds"});
        assert!(matches!(
            classify(413, &big, None, "t"),
            PushOutcome::Rejected(_)
        ));
        assert!(matches!(
            classify(502, &serde_json::Value::Null, None, "t"),
            PushOutcome::Retry(..)
        ));
    }
}
