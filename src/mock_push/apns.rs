//! The APNs endpoint: `POST /3/device/<token>`, with the checks and answers Apple documents
//! ("Handling notification responses from APNs").

use super::{Behavior, Delivery, State, json};
use crate::push::jwt;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use std::time::{SystemTime, UNIX_EPOCH};

/// Apple's payload limit for regular remote notifications.
const MAX_PAYLOAD: usize = 4096;

fn reason(status: u16, reason: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "reason": reason }))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(super) async fn handle(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::POST {
        return reason(405, "MethodNotAllowed");
    }
    let token = req.uri().path().trim_start_matches("/3/device/").to_owned();
    state.count_request(&token);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    // Provider authentication.
    let Some(bearer) =
        header("authorization").and_then(|a| a.strip_prefix("bearer ").map(str::to_owned))
    else {
        return reason(403, "MissingProviderToken");
    };
    let Some(claims) = jwt::peek(&bearer) else {
        return reason(403, "InvalidProviderToken");
    };
    let Some(key) = state
        .config
        .apns_keys
        .get(&(claims.team_id.clone(), claims.key_id.clone()))
    else {
        return reason(403, "InvalidProviderToken");
    };
    // A provider token is the same string for up to an hour: verify each distinct one once, as the
    // signature check would otherwise dominate the mock's CPU under load.
    if !state.verified_token(&bearer, || jwt::verify_es256(key, &bearer)) {
        return reason(403, "InvalidProviderToken");
    }
    let age = now_secs() - claims.issued_at;
    if age > i64::try_from(state.config.apns_token_max_age.as_secs()).unwrap_or(i64::MAX) {
        return reason(403, "ExpiredProviderToken");
    }

    // Headers.
    let Some(topic) = header("apns-topic") else {
        return reason(400, "MissingTopic");
    };
    if !state.config.apns_topics.is_empty() && !state.config.apns_topics.contains(&topic) {
        return reason(400, "TopicDisallowed");
    }
    let push_type = header("apns-push-type").unwrap_or_default();
    if !matches!(push_type.as_str(), "alert" | "background") {
        return reason(400, "InvalidPushType");
    }
    match (push_type.as_str(), header("apns-priority").as_deref()) {
        ("alert", Some("10" | "5") | None) | ("background", Some("5")) => {}
        _ => return reason(400, "BadPriority"),
    }
    if header("apns-expiration").is_some_and(|e| e.parse::<i64>().is_err()) {
        return reason(400, "BadExpirationDate");
    }
    let collapse_id = header("apns-collapse-id").unwrap_or_default();
    if collapse_id.len() > 64 {
        return reason(400, "BadCollapseId");
    }
    if token.is_empty() || token.len() > 200 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return reason(400, "BadDeviceToken");
    }

    // Body.
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reason(400, "BadMessage");
    };
    if body.is_empty() {
        return reason(400, "PayloadEmpty");
    }
    if body.len() > MAX_PAYLOAD {
        return reason(413, "PayloadTooLarge");
    }
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return reason(400, "BadMessage");
    };
    if payload.get("aps").is_none() {
        return reason(400, "BadMessage");
    }

    match state.take_behavior(&token) {
        Some(Behavior::Dead) => {
            return json(
                410,
                &serde_json::json!({ "reason": "Unregistered", "timestamp": now_secs() * 1000 }),
            );
        }
        Some(Behavior::Throttle {
            retry_after_secs, ..
        }) => {
            let mut response = reason(429, "TooManyRequests");
            if let Ok(v) = retry_after_secs.to_string().parse() {
                response.headers_mut().insert("retry-after", v);
            }
            return response;
        }
        Some(Behavior::Unavailable { .. }) => return reason(503, "ServiceUnavailable"),
        Some(Behavior::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Behavior::Silent) => std::future::pending::<()>().await,
        None => {}
    }
    state.deliver(Delivery {
        provider: "apns",
        token,
        collapse_id,
        push_type,
        received_unix_us: 0,
        payload,
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    if let Ok(id) = uuid_like().parse() {
        response.headers_mut().insert("apns-id", id);
    }
    response
}

fn uuid_like() -> String {
    let r: u128 = rand::random();
    let h = format!("{r:032X}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
