//! The FCM HTTP v1 endpoint (`POST /v1/projects/{project}/messages:send`) and the OAuth2 token endpoint
//! (`POST /token`, JWT-bearer grant signed RS256 by a service account), with the checks and error
//! bodies Google documents.

use super::{Behavior, Delivery, State, json};
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Access tokens the mock issues live this long (Google: one hour).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

fn google_error(
    status: u16,
    code: &str,
    message: &str,
    fcm_code: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut details = Vec::new();
    if let Some(fcm) = fcm_code {
        details.push(serde_json::json!({ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm }));
    }
    json(
        status,
        &serde_json::json!({ "error": { "code": status, "message": message, "status": code, "details": details } }),
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn decode_segment(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .or_else(|| URL_SAFE.decode(s).ok())
}

/// `POST /token`: exchanges a service-account assertion for an access token.
pub(super) async fn token(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let bad = |e: &str| {
        json(
            400,
            &serde_json::json!({ "error": "invalid_grant", "error_description": e }),
        )
    };
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return bad("unreadable body");
    };
    let form: std::collections::HashMap<String, String> = url_form(&body);
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return json(
            400,
            &serde_json::json!({ "error": "unsupported_grant_type" }),
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return bad("missing assertion");
    };
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("malformed assertion");
    };
    let (Some(claims), Some(signature)) = (decode_segment(c), decode_segment(sig)) else {
        return bad("malformed assertion");
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&claims) else {
        return bad("malformed claims");
    };
    let Some(email) = claims["iss"].as_str() else {
        return bad("missing iss");
    };
    let Some(public_key) = state.config.fcm_accounts.get(email) else {
        return bad("unknown service account");
    };
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    );
    if key
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .is_err()
    {
        return bad("Invalid JWT Signature.");
    }
    let now = now_secs();
    if claims["exp"].as_i64().is_none_or(|exp| exp < now)
        || claims["iat"].as_i64().is_none_or(|iat| iat > now + 60)
    {
        return bad("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe");
    }
    if !claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .any(|s| s == "https://www.googleapis.com/auth/firebase.messaging")
    {
        return bad("missing firebase.messaging scope");
    }
    let access: String = format!("ya29.mock-{:032x}", rand::random::<u128>());
    state.issue_token(&access, Instant::now() + TOKEN_LIFETIME);
    json(
        200,
        &serde_json::json!({ "access_token": access, "expires_in": TOKEN_LIFETIME.as_secs() - 1, "token_type": "Bearer" }),
    )
}

fn url_form(body: &[u8]) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

fn unescape(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST /v1/projects/{project}/messages:send`.
pub(super) async fn send(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let Some(project) = path
        .strip_prefix("/v1/projects/")
        .and_then(|p| p.strip_suffix("/messages:send"))
    else {
        return google_error(404, "NOT_FOUND", "Requested entity was not found.", None);
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| state.token_valid(t)) {
        return google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        );
    }
    if !state.config.fcm_projects.is_empty()
        && !state.config.fcm_projects.iter().any(|p| p == project)
    {
        return google_error(
            403,
            "PERMISSION_DENIED",
            "Permission denied on the project.",
            Some("SENDER_ID_MISMATCH"),
        );
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "unreadable body",
            Some("INVALID_ARGUMENT"),
        );
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            Some("INVALID_ARGUMENT"),
        );
    };
    let message = &body["message"];
    let Some(token) = message["token"]
        .as_str()
        .filter(|t| !t.is_empty() && t.len() <= 4096)
    else {
        let mut response = google_error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
        );
        *response.body_mut() = Full::new(Bytes::from(serde_json::json!({ "error": { "code": 400, "status": "INVALID_ARGUMENT",
            "message": "The registration token is not a valid FCM registration token",
            "details": [
                { "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT" },
                { "@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{ "field": "message.token" }] }
            ] } }).to_string()));
        return response;
    };
    let token = token.to_owned();
    state.count_request(&token);
    if message["data"]
        .as_object()
        .is_some_and(|d| d.values().any(|v| !v.is_string()))
    {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "data values must be strings",
            Some("INVALID_ARGUMENT"),
        );
    }
    if body.to_string().len() > 4096 {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "Message is too big",
            Some("INVALID_ARGUMENT"),
        );
    }
    match state.take_behavior(&token) {
        Some(Behavior::Dead) => {
            return google_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
            );
        }
        Some(Behavior::Throttle {
            retry_after_secs, ..
        }) => {
            let mut response = google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded.",
                Some("QUOTA_EXCEEDED"),
            );
            if let Ok(v) = retry_after_secs.to_string().parse() {
                response.headers_mut().insert("retry-after", v);
            }
            return response;
        }
        Some(Behavior::Unavailable { .. }) => {
            return google_error(
                503,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
            );
        }
        Some(Behavior::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Behavior::Silent) => std::future::pending::<()>().await,
        None => {}
    }
    let collapse_id = message["android"]["collapse_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let push_type = if message.get("notification").is_some() {
        "alert"
    } else {
        "background"
    }
    .to_owned();
    state.deliver(Delivery {
        provider: "fcm",
        token,
        collapse_id,
        push_type,
        received_unix_us: 0,
        payload: message.clone(),
    });
    json(
        200,
        &serde_json::json!({ "name": format!("projects/{project}/messages/{}", rand::random::<u64>()) }),
    )
}
