//! Xiaomi's Mi Push send endpoint (`POST /v3/message/regid`, and `/v2/…`): the AppSecret in
//! `Authorization: key=…`, a form-encoded body checked as Xiaomi documents it (registration id, package,
//! pass-through, title and description for notifications, numeric TTL and notify id, payload size), and
//! Xiaomi's answers: HTTP 200 with a JSON `code` for everything but a server failure.

use super::{Behavior, Delivery, State, json};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use std::collections::HashMap;

/// Xiaomi's error answer: `result` "error", a `code`, its `reason` and a trace id.
fn error(code: i64, reason: &str, description: &str) -> Response<Full<Bytes>> {
    json(
        200,
        &serde_json::json!({ "result": "error", "code": code, "reason": reason,
            "description": description, "trace_id": trace_id() }),
    )
}

fn trace_id() -> String {
    format!("Xcm{:016x}", rand::random::<u64>())
}

/// `POST /v3/message/regid`.
pub(super) async fn send(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let secret = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("key="))
        .unwrap_or_default()
        .to_owned();
    if !state.config.xiaomi_secrets.contains(&secret) {
        return error(21301, "Invalid application secret.", "认证失败");
    }
    let form_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return error(10008, "unreadable body", "参数错误");
    };
    if !form_type {
        return error(
            10008,
            "content type must be application/x-www-form-urlencoded",
            "参数错误",
        );
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let missing = |name: &str| error(10016, &format!("{name} is required"), "缺少必选参数");
    let bad = |name: &str| error(10017, &format!("{name} is invalid"), "非法的参数值");
    let regid = field("registration_id");
    if regid.is_empty() {
        return missing("registration_id");
    }
    if regid.contains(',') {
        // The mock stands in for a one-id sender; several ids would need per-id behaviours.
        return bad("registration_id (one id per request in this mock)");
    }
    let package = field("restricted_package_name");
    if package.is_empty() {
        return missing("restricted_package_name");
    }
    let packages = &state.config.xiaomi_packages;
    if !packages.is_empty() && !packages.iter().any(|p| p == package) {
        return error(22022, "Invalid package name", "非法的包名");
    }
    let payload = field("payload");
    if payload.is_empty() {
        return missing("payload");
    }
    if payload.len() > 4096 {
        return error(65009, "message content too long", "消息内容太长");
    }
    let pass_through = field("pass_through");
    if !matches!(pass_through, "0" | "1") {
        return bad("pass_through");
    }
    if pass_through == "0" {
        for (name, max) in [("title", 50), ("description", 128)] {
            let value = field(name);
            if value.is_empty() {
                return missing(name);
            }
            if value.chars().count() >= max {
                return bad(name);
            }
        }
    }
    for name in ["time_to_live", "notify_id", "notify_type"] {
        let value = field(name);
        if !value.is_empty() && value.parse::<i64>().is_err() {
            return bad(name);
        }
    }
    state.count_request(regid);
    match state.take_behavior(regid) {
        // A registration id that reaches no device: accepted, and named in bad_regids.
        Some(Behavior::Dead) => {
            return json(
                200,
                &serde_json::json!({ "result": "ok", "code": 0, "trace_id": trace_id(),
                    "data": { "id": message_id(), "bad_regids": regid },
                    "description": "成功", "info": "Received push messages for 0 REGID" }),
            );
        }
        Some(Behavior::Throttle { .. }) => {
            return error(
                10023,
                "user request rate over limit",
                "用户请求频次超过上限",
            );
        }
        Some(Behavior::Unavailable { .. }) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
            return response;
        }
        Some(Behavior::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Behavior::Silent) => std::future::pending::<()>().await,
        None => {}
    }
    state.deliver(Delivery {
        provider: "xiaomi",
        token: regid.to_owned(),
        collapse_id: field("notify_id").to_owned(),
        push_type: if pass_through == "0" {
            "alert"
        } else {
            "background"
        }
        .to_owned(),
        payload: serde_json::to_value(&form).unwrap_or_default(),
        received_unix_us: 0,
    });
    json(
        200,
        &serde_json::json!({ "result": "ok", "code": 0, "trace_id": trace_id(),
            "data": { "id": message_id() }, "description": "成功",
            "info": "Received push messages for 1 REGID" }),
    )
}

fn message_id() -> String {
    format!("scm{:020}", rand::random::<u64>())
}
