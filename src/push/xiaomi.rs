//! The Mi Push client: `POST {base}/v3/message/regid` with `Authorization: key=<AppSecret>` and a
//! form-encoded body, one registration id per request. Written here because no maintained Rust crate
//! speaks Xiaomi's server API, and the public SDKs (Java, Python, PHP, Node) retry and log in their own
//! way instead of giving the answer's code to a caller that must prune, back off or alert.
//!
//! Answers are HTTP 200 with a JSON `code` (0 success) unless the server fails (5xx). A dead registration
//! id shows as `code` 20301 for a one-id request, or as `data.bad_regids` on an otherwise successful one.

use super::http::{HttpClient, any_version_client, exchange};
use super::{
    ALERT_BODY, ALERT_TITLE, NOTICE_BODY, NOTICE_TITLE, PushKind, PushMessage, PushOutcome,
    PushProvider,
};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use sha2::{Digest, Sha256};

/// Xiaomi's endpoint for mainland China (global regions: `https://sgp-api.xmpush.global.xiaomi.com`,
/// Europe `https://fr-api.xmpush.global.xiaomi.com`, Russia `https://ru-api.xmpush.global.xiaomi.com`,
/// India `https://idmb-api.xmpush.global.xiaomi.com`).
pub const PRODUCTION: &str = "https://api.xmpush.xiaomi.com";
/// The path that sends to registration ids.
pub const SEND_PATH: &str = "/v3/message/regid";
/// Mi Push keeps a message for an offline phone at most this long (ten days, for personal messages).
const MAX_TTL_MS: i64 = 10 * 24 * 3600 * 1000;

/// What a Mi Push client is given.
pub struct XiaomiSettings {
    /// `https://api.xmpush.xiaomi.com` or a regional or mock endpoint.
    pub base_url: String,
    /// The app's AppSecret.
    pub app_secret: String,
    /// Packages the secret may push to; empty allows any.
    pub packages: Vec<String>,
    /// `extra.channel_id`, the notification channel registered with Xiaomi, if any.
    pub channel_id: Option<String>,
    /// Extra root certificate (PEM) to trust.
    pub extra_root_pem: Option<String>,
}

/// Sends pushes through Mi Push.
pub struct XiaomiProvider {
    client: HttpClient,
    settings: XiaomiSettings,
    authorization: String,
}

impl XiaomiProvider {
    /// A client with these settings.
    ///
    /// # Errors
    /// The extra root is not a valid PEM certificate, or the secret is empty.
    pub fn new(mut settings: XiaomiSettings) -> anyhow::Result<Self> {
        settings.base_url = settings.base_url.trim_end_matches('/').to_owned();
        if settings.app_secret.trim().is_empty() {
            anyhow::bail!("xiaomi app secret is empty");
        }
        Ok(Self {
            client: any_version_client(settings.extra_root_pem.as_deref())?,
            authorization: format!("key={}", settings.app_secret.trim()),
            settings,
        })
    }

    fn body(&self, message: &PushMessage, ttl_ms: i64) -> String {
        let notify_id = notify_id(&message.id).to_string();
        let (action, key) = match message.kind {
            PushKind::Challenge => ("challenge", "challenge_id"),
            PushKind::Withdraw => ("withdraw", "challenge_id"),
            PushKind::Notice => ("notice", "notice_id"),
        };
        let payload =
            serde_json::json!({ key: message.id, "action": action, "notify_id": notify_id })
                .to_string();
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("registration_id", &message.token)
            .append_pair("restricted_package_name", &message.app_id)
            .append_pair("payload", &payload)
            .append_pair("time_to_live", &ttl_ms.to_string())
            .append_pair("notify_id", &notify_id);
        match message.kind {
            // A pass-through message: the app removes the notification with this notify_id itself.
            PushKind::Withdraw => {
                form.append_pair("pass_through", "1");
            }
            PushKind::Challenge | PushKind::Notice => {
                let (title, description) = if message.kind == PushKind::Notice {
                    (NOTICE_TITLE, NOTICE_BODY)
                } else {
                    (ALERT_TITLE, ALERT_BODY)
                };
                form.append_pair("pass_through", "0")
                    .append_pair("notify_type", "-1")
                    .append_pair("title", title)
                    .append_pair("description", description)
                    .append_pair("extra.notify_foreground", "1");
                if let Some(channel) = &self.settings.channel_id {
                    form.append_pair("extra.channel_id", channel);
                }
            }
        }
        form.finish()
    }
}

/// The notification id of a challenge or notice: a later message with the same id replaces it in the
/// notification bar, and the withdrawal names it. Derived from the id (31 bits of its SHA-256), so every
/// replica computes the same one.
pub fn notify_id(id: &str) -> u32 {
    let digest = Sha256::digest(id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) & 0x7fff_ffff
}

/// Mi Push status and answer → what the dispatcher must do, for a request to the one id `regid`.
pub fn classify(status: u16, body: &serde_json::Value, regid: &str) -> PushOutcome {
    if status == 429 || status >= 500 || (status == 200 && body.is_null()) {
        return PushOutcome::Retry(None, format!("{status}"));
    }
    if status != 200 {
        // A wrong xiaomi_url (an HTML 404, say): retrying does not help.
        return PushOutcome::Rejected(format!("{status}"));
    }
    let code = body["code"].as_i64().unwrap_or(-1);
    let reason = body["reason"].as_str().unwrap_or_default();
    let detail = if reason.is_empty() {
        code.to_string()
    } else {
        format!("{code} {reason}")
    };
    match code {
        0 => {
            let bad = body["data"]["bad_regids"].as_str().unwrap_or_default();
            if bad.split(',').any(|r| r.trim() == regid) {
                PushOutcome::TokenDead("bad_regids".into())
            } else {
                PushOutcome::Delivered
            }
        }
        // "Send message failed" for a one-id request: the id reaches no device.
        20301 => PushOutcome::TokenDead(detail),
        // Our AppSecret, app or package is refused, or the app is blacklisted.
        21301 | 21302 | 22000..=22008 | 22022 | 10026 | 10031 | 10036 | 27001 => {
            PushOutcome::AuthFailed(detail)
        }
        // Request-rate limits and server-side failures: try again later.
        10022..=10024
        | 10027
        | 10028
        | 26004
        | -1
        | 1
        | 10001..=10003
        | 10009..=10011
        | 26003
        | 65029 => PushOutcome::Retry(None, detail),
        // 200001 and 10034 (today's quota spent) and malformed requests: retrying does not help.
        _ => PushOutcome::Rejected(detail),
    }
}

#[async_trait]
impl PushProvider for XiaomiProvider {
    async fn send(&self, message: &PushMessage) -> PushOutcome {
        let packages = &self.settings.packages;
        if !packages.is_empty() && !packages.contains(&message.app_id) {
            return PushOutcome::Rejected(format!("package_not_allowed: {}", message.app_id));
        }
        let left_ms = message.expires_at_ms.saturating_sub(crate::clock::now_ms());
        let body = self.body(message, left_ms.clamp(1_000, MAX_TTL_MS));
        let request = hyper::Request::post(format!("{}{SEND_PATH}", self.settings.base_url))
            .header("authorization", &self.authorization)
            .header(
                "content-type",
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else {
            return PushOutcome::Rejected("bad request".into());
        };
        match exchange(&self.client, request, message.give_up_at).await {
            Ok(answer) => match classify(answer.status, &answer.body, &message.token) {
                // Xiaomi gives no Retry-After; a 5xx may carry one from a proxy.
                PushOutcome::Retry(None, why) => PushOutcome::Retry(answer.retry_after, why),
                other => other,
            },
            Err(outcome) => outcome,
        }
    }

    fn name(&self, _platform: crate::device::Platform) -> &'static str {
        "xiaomi"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mi_push_answers_are_classified_into_actions() {
        let ok = json!({"result": "ok", "code": 0, "data": {"id": "scm1"}, "trace_id": "X"});
        assert_eq!(classify(200, &ok, "r1"), PushOutcome::Delivered);
        let bad = json!({"result": "ok", "code": 0, "data": {"id": "scm1", "bad_regids": "r0,r1"}});
        assert_eq!(
            classify(200, &bad, "r1"),
            PushOutcome::TokenDead("bad_regids".into())
        );
        assert_eq!(classify(200, &bad, "r2"), PushOutcome::Delivered);
        let failed = json!({"result": "error", "code": 20301, "reason": "No valid targets!"});
        assert!(matches!(
            classify(200, &failed, "r1"),
            PushOutcome::TokenDead(_)
        ));
        let secret =
            json!({"result": "error", "code": 21301, "reason": "Invalid application secret."});
        assert_eq!(
            classify(200, &secret, "r1"),
            PushOutcome::AuthFailed("21301 Invalid application secret.".into())
        );
        let package = json!({"result": "error", "code": 22022, "reason": "invalid package name"});
        assert!(matches!(
            classify(200, &package, "r1"),
            PushOutcome::AuthFailed(_)
        ));
        let busy = json!({"result": "error", "code": 10023});
        assert!(matches!(
            classify(200, &busy, "r1"),
            PushOutcome::Retry(None, _)
        ));
        let quota = json!({"result": "error", "code": 200_001, "reason": "exceed quota"});
        assert!(matches!(
            classify(200, &quota, "r1"),
            PushOutcome::Rejected(_)
        ));
        assert!(matches!(
            classify(503, &serde_json::Value::Null, "r1"),
            PushOutcome::Retry(..)
        ));
        assert!(matches!(
            classify(200, &serde_json::Value::Null, "r1"),
            PushOutcome::Retry(..)
        ));
        assert!(matches!(
            classify(404, &json!({}), "r1"),
            PushOutcome::Rejected(_)
        ));
        assert!(matches!(
            classify(404, &serde_json::Value::Null, "r1"),
            PushOutcome::Rejected(_)
        ));
    }

    #[test]
    fn notify_ids_are_stable_and_positive() {
        assert_eq!(notify_id("c.00.abc"), notify_id("c.00.abc"));
        assert_ne!(notify_id("c.00.abc"), notify_id("c.00.abd"));
        assert!(i32::try_from(notify_id("x")).is_ok());
    }
}
