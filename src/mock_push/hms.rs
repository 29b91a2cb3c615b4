//! Huawei's OAuth 2.0 token endpoint (`POST /oauth2/v3/token`, client credentials) and HMS Push Kit's
//! send endpoint (`POST /v1/{appId}/messages:send`), with the checks and answers Huawei documents: OAuth
//! errors as HTTP 400 `{"error", "sub_error", "error_description"}`; Push Kit's result in a string `code`
//! (80000000 success, 80200003 token expired, 80200001 token refused, 80300007 invalid token, 801000xx
//! malformed message, 80300008 too large) and throttling as HTTP 503 with `Retry-After`.

use super::{Behavior, Delivery, State, json};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use std::collections::HashMap;
use std::time::Instant;

/// Every access token the mock issues starts so, which keeps them apart from its FCM tokens.
const TOKEN_PREFIX: &str = "DAEDAmock";

fn oauth_error(error: u32, sub_error: u32, description: &str) -> Response<Full<Bytes>> {
    json(
        400,
        &serde_json::json!({ "error": error, "sub_error": sub_error, "error_description": description }),
    )
}

fn push_error(status: u16, code: &str, msg: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "code": code, "msg": msg, "requestId": request_id() }),
    )
}

fn request_id() -> String {
    format!("{:024}", rand::random::<u64>())
}

/// `POST /oauth2/v3/token`: client credentials for an app the mock knows.
pub(super) async fn token(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return oauth_error(1102, 20001, "unreadable body");
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    match field("grant_type") {
        "" => return oauth_error(1102, 20181, "grant_type is empty"),
        "client_credentials" => {}
        _ => return oauth_error(1101, 20182, "invalid grant_type"),
    }
    let client_id = field("client_id");
    if client_id.is_empty() {
        return oauth_error(1102, 20001, "client_id is empty");
    }
    // Counted under `oauth:<client id>`, for tests of token reuse.
    state.count_request(&format!("oauth:{client_id}"));
    let Some(secret) = state.config.hms_apps.get(client_id) else {
        return oauth_error(1203, 12303, "client_id does not exist");
    };
    match field("client_secret") {
        "" => return oauth_error(1101, 20171, "client_secret is empty"),
        given if given != secret => return oauth_error(1101, 12304, "invalid client_secret"),
        _ => {}
    }
    let access = format!("{TOKEN_PREFIX}{:032x}", rand::random::<u128>());
    let lifetime = state.config.hms_token_lifetime;
    state.issue_token(&format!("{client_id}/{access}"), Instant::now() + lifetime);
    json(
        200,
        &serde_json::json!({ "access_token": access, "expires_in": lifetime.as_secs(), "token_type": "Bearer" }),
    )
}

/// `POST /v1/{appId}/messages:send`.
pub(super) async fn send(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let Some(app_id) = path
        .strip_prefix("/v1/")
        .and_then(|p| p.strip_suffix("/messages:send"))
    else {
        return push_error(404, "80100001", "Bad path");
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let key = format!("{app_id}/{bearer}");
    if !bearer.starts_with(TOKEN_PREFIX) || !state.token_issued(&key) {
        return push_error(401, "80200001", "Oauth authentication error");
    }
    if !state.token_valid(&key) {
        return push_error(401, "80200003", "Oauth token expired");
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return push_error(400, "80100003", "Incorrect message structure");
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return push_error(400, "80100003", "Incorrect message structure");
    };
    let message = &body["message"];
    let tokens: Vec<&str> = message["token"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    if tokens.is_empty() || tokens.iter().any(|t| t.is_empty()) {
        return push_error(
            400,
            "80100001",
            "Some request parameters are incorrect: token",
        );
    }
    if tokens.len() > 1 {
        // The mock stands in for a one-token sender; several would need per-token behaviours.
        return push_error(
            400,
            "80300010",
            "The number of tokens exceeds the limit of this mock: 1",
        );
    }
    let token = tokens[0].to_owned();
    if let Some(refusal) = check_message(message) {
        return refusal;
    }
    if body.to_string().len() > 4096 {
        return push_error(
            413,
            "80300008",
            "The message body size exceeds the default value",
        );
    }
    state.count_request(&token);
    match state.take_behavior(&token) {
        Some(Behavior::Dead) => return push_error(404, "80300007", "All the tokens are invalid"),
        Some(Behavior::Throttle {
            retry_after_secs, ..
        }) => {
            let mut response = push_error(503, "", "Traffic control, try again later");
            if let Ok(v) = retry_after_secs.to_string().parse() {
                response.headers_mut().insert("retry-after", v);
            }
            return response;
        }
        Some(Behavior::Unavailable { .. }) => {
            return push_error(500, "81000001", "System internal error");
        }
        Some(Behavior::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Behavior::Silent) => std::future::pending::<()>().await,
        None => {}
    }
    let notification = &message["android"]["notification"];
    state.deliver(Delivery {
        provider: "hms",
        token,
        collapse_id: notification["tag"].as_str().unwrap_or_default().to_owned(),
        push_type: if notification.is_object() {
            "alert"
        } else {
            "background"
        }
        .to_owned(),
        payload: message.clone(),
        received_unix_us: 0,
    });
    push_error(200, "80000000", "Success")
}

/// A refusal for a message Push Kit would not take: `data` not a string, an unknown urgency, a
/// malformed TTL, a collapse key outside -1..=100.
fn check_message(message: &serde_json::Value) -> Option<Response<Full<Bytes>>> {
    let bad = |what: &str| {
        Some(push_error(
            400,
            "80100001",
            &format!("Some request parameters are incorrect: {what}"),
        ))
    };
    if !message["data"].is_null() && !message["data"].is_string() {
        return Some(push_error(
            400,
            "80100003",
            "Incorrect message structure: data",
        ));
    }
    let android = &message["android"];
    if !android.is_null() && !android.is_object() {
        return Some(push_error(
            400,
            "80100003",
            "Incorrect message structure: android",
        ));
    }
    if let Some(urgency) = android.get("urgency")
        && !matches!(urgency.as_str(), Some("HIGH" | "NORMAL"))
    {
        return bad("urgency");
    }
    if let Some(ttl) = android.get("ttl")
        && !ttl.as_str().is_some_and(ttl_is_valid)
    {
        return bad("ttl");
    }
    if let Some(key) = android.get("collapse_key")
        && !key.as_i64().is_some_and(|k| (-1..=100).contains(&k))
    {
        return Some(push_error(400, "80100013", "Collapse_key is illegal"));
    }
    None
}

/// Push Kit's TTL format: seconds, optionally with up to nine decimals, optionally ending in `s`.
fn ttl_is_valid(ttl: &str) -> bool {
    let number = ttl.strip_suffix(['s', 'S']).unwrap_or(ttl);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && (!number.contains('.') || !fraction.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttls_are_checked_as_push_kit_does() {
        for good in ["86400s", "86400", "1.5s", "10.123456789S"] {
            assert!(super::ttl_is_valid(good), "{good}");
        }
        for bad in ["", "s", "-1s", "1.s", "1.1234567890s", "1h", "abc"] {
            assert!(!super::ttl_is_valid(bad), "{bad}");
        }
    }
}
