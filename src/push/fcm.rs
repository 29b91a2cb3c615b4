//! The FCM HTTP v1 client: `POST {base}/v1/projects/{project}/messages:send` with an OAuth2 bearer token
//! that `gcp_auth` gets from the service-account key (its `token_uri` honoured, tokens cached). The
//! request itself is ours, on the shared HTTP/2 client, because the FCM crates either speak the legacy
//! API or lose the status and error code that pruning and backoff need (DESIGN.md §9).

use super::http::{HttpClient, exchange, http2_client};
use super::{
    ALERT_BODY, ALERT_TITLE, NOTICE_BODY, NOTICE_TITLE, PushKind, PushMessage, PushOutcome,
    PushProvider,
};
use async_trait::async_trait;
use bytes::Bytes;
use gcp_auth::TokenProvider;
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;

/// Google's endpoint.
pub const PRODUCTION: &str = "https://fcm.googleapis.com";
/// The OAuth2 scope FCM wants.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Sends pushes through FCM HTTP v1.
pub struct FcmProvider {
    client: HttpClient,
    auth: Arc<dyn TokenProvider>,
    base_url: String,
    project: String,
}

impl FcmProvider {
    /// A client for `project` at `base_url` with the service account in `key_file`.
    ///
    /// # Errors
    /// The key file is unreadable or not a service-account key, or the extra root is invalid.
    pub fn new(
        base_url: &str,
        project: &str,
        key_file: &std::path::Path,
        extra_root_pem: Option<&str>,
    ) -> anyhow::Result<Self> {
        let account = gcp_auth::CustomServiceAccount::from_file(key_file)
            .map_err(|e| anyhow::anyhow!("fcm service account {}: {e}", key_file.display()))?;
        let project = if project.is_empty() {
            account.project_id().unwrap_or_default().to_owned()
        } else {
            project.to_owned()
        };
        if project.is_empty() {
            anyhow::bail!("fcm project id: not given and not in the service-account key");
        }
        Ok(Self {
            client: http2_client(extra_root_pem)?,
            auth: Arc::new(account),
            base_url: base_url.trim_end_matches('/').to_owned(),
            project,
        })
    }

    fn body(message: &PushMessage, ttl_secs: i64) -> serde_json::Value {
        match message.kind {
            PushKind::Challenge => serde_json::json!({ "message": {
                "token": message.token,
                "data": { "challenge_id": message.id, "action": "challenge" },
                "notification": { "title": ALERT_TITLE, "body": ALERT_BODY },
                "android": { "priority": "HIGH", "ttl": format!("{ttl_secs}s"), "collapse_key": message.id },
            }}),
            PushKind::Withdraw => serde_json::json!({ "message": {
                "token": message.token,
                "data": { "challenge_id": message.id, "action": "withdraw" },
                "android": { "priority": "NORMAL", "ttl": format!("{ttl_secs}s"), "collapse_key": message.id },
            }}),
            PushKind::Notice => serde_json::json!({ "message": {
                "token": message.token,
                "data": { "notice_id": message.id, "action": "notice" },
                "notification": { "title": NOTICE_TITLE, "body": NOTICE_BODY },
                "android": { "priority": "HIGH", "ttl": format!("{ttl_secs}s"), "collapse_key": message.id },
            }}),
        }
    }
}

/// FCM status and error → what the dispatcher must do.
pub fn classify(
    status: u16,
    body: &serde_json::Value,
    retry_after: Option<Duration>,
) -> PushOutcome {
    let error = &body["error"];
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let code = details
        .iter()
        .find_map(|d| d["errorCode"].as_str())
        .unwrap_or_else(|| error["status"].as_str().unwrap_or(""));
    let about_token = details.iter().any(|d| {
        d["fieldViolations"].as_array().is_some_and(|v| {
            v.iter()
                .any(|f| f["field"].as_str() == Some("message.token"))
        })
    });
    match (status, code) {
        (200, _) => PushOutcome::Delivered,
        (_, "UNREGISTERED" | "SENDER_ID_MISMATCH") => PushOutcome::TokenDead(code.to_owned()),
        (400, "INVALID_ARGUMENT") if about_token => {
            PushOutcome::TokenDead("INVALID_ARGUMENT(token)".to_owned())
        }
        (401, _) | (_, "THIRD_PARTY_AUTH_ERROR" | "UNAUTHENTICATED") => {
            PushOutcome::AuthFailed(code.to_owned())
        }
        (429 | 500..=599, _) => PushOutcome::Retry(retry_after, format!("{status} {code}")),
        _ => PushOutcome::Rejected(format!("{status} {code}")),
    }
}

#[async_trait]
impl PushProvider for FcmProvider {
    async fn send(&self, message: &PushMessage) -> PushOutcome {
        let left_ms = message.expires_at_ms.saturating_sub(crate::clock::now_ms());
        let token = match self.auth.token(&[SCOPE]).await {
            Ok(t) => t,
            Err(e) => return PushOutcome::Retry(None, format!("oauth token: {e}")),
        };
        let body = Self::body(message, (left_ms / 1000).max(1));
        let request = hyper::Request::post(format!(
            "{}/v1/projects/{}/messages:send",
            self.base_url, self.project
        ))
        .header("authorization", format!("Bearer {}", token.as_str()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())));
        let Ok(request) = request else {
            return PushOutcome::Rejected("bad request".into());
        };
        match exchange(&self.client, request, message.give_up_at).await {
            Ok(answer) => classify(answer.status, &answer.body, answer.retry_after),
            Err(outcome) => outcome,
        }
    }

    fn name(&self, _platform: crate::device::Platform) -> &'static str {
        "fcm"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fcm_answers_are_classified_into_actions() {
        assert_eq!(
            classify(200, &json!({"name": "projects/p/messages/1"}), None),
            PushOutcome::Delivered
        );
        let unregistered = json!({"error": {"code": 404, "status": "NOT_FOUND", "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}});
        assert_eq!(
            classify(404, &unregistered, None),
            PushOutcome::TokenDead("UNREGISTERED".into())
        );
        let bad_token = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.token"}]}]}});
        assert!(matches!(
            classify(400, &bad_token, None),
            PushOutcome::TokenDead(_)
        ));
        let bad_other = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]}});
        assert!(matches!(
            classify(400, &bad_other, None),
            PushOutcome::Rejected(_)
        ));
        assert!(matches!(
            classify(429, &json!({}), Some(Duration::from_secs(5))),
            PushOutcome::Retry(Some(_), _)
        ));
        assert!(matches!(
            classify(401, &json!({}), None),
            PushOutcome::AuthFailed(_)
        ));
    }
}
