//! The mock's own control surface (not part of Apple's or Google's API): tell it how to treat a token,
//! and stream the pushes it accepts as JSON lines, so that a simulated phone "receives" its pushes.
//!
//! - `POST /mock/tokens/<token>` with `{"behavior": "dead" | "normal" | "silent"}`,
//!   `{"behavior": "throttle", "retry_after_secs": 5, "times": 2}`, `{"behavior": "unavailable",
//!   "times": 2}` or `{"behavior": "slow", "delay_ms": 500}` → 204.
//! - `POST /mock/expire-tokens` → 204: every OAuth access token issued so far (FCM, HMS) is expired, so
//!   the next push with one is refused as Google or Huawei refuse an expired token.
//! - `POST /mock/outage` with `{"secs": 20}` → 204: every push of every token is answered 503
//!   ServiceUnavailable for that long (HMS: 500 81000001, Mi Push: an empty 503) (a provider outage, for
//!   the fault-injection runs).
//! - `GET /mock/pushes[?token=<token>]` → `application/x-ndjson`, one accepted push per line, until the
//!   client leaves.

use super::{Behavior, State};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;

/// A response body that may stream.
pub type Body = BoxBody<Bytes, Infallible>;

fn text(status: u16, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    r
}

pub(super) async fn set_behavior(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let token = req
        .uri()
        .path()
        .trim_start_matches("/mock/tokens/")
        .to_owned();
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return text(400, "unreadable body\n");
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return text(400, "body must be JSON\n");
    };
    let times = u32::try_from(v["times"].as_u64().unwrap_or(1)).unwrap_or(u32::MAX);
    let behavior = match v["behavior"].as_str() {
        Some("normal") => None,
        Some("dead") => Some(Behavior::Dead),
        Some("silent") => Some(Behavior::Silent),
        Some("throttle") => Some(Behavior::Throttle {
            retry_after_secs: v["retry_after_secs"].as_u64().unwrap_or(1),
            times,
        }),
        Some("unavailable") => Some(Behavior::Unavailable { times }),
        Some("slow") => Some(Behavior::Slow(Duration::from_millis(
            v["delay_ms"].as_u64().unwrap_or(1_000),
        ))),
        _ => {
            return text(
                400,
                "behavior: one of normal, dead, silent, throttle, unavailable, slow\n",
            );
        }
    };
    let mut map = state
        .behaviors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match behavior {
        Some(b) => map.insert(token, b),
        None => map.remove(&token),
    };
    text(204, "")
}

pub(super) async fn outage(
    state: &State,
    req: hyper::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return text(400, "unreadable body\n");
    };
    let Some(secs) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["secs"].as_u64())
    else {
        return text(400, "body must be {\"secs\": N}\n");
    };
    state.start_outage(Duration::from_secs(secs));
    text(204, "")
}

pub(super) fn pushes(state: &State, req: &hyper::Request<hyper::body::Incoming>) -> Response<Body> {
    let wanted = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("token=")))
        .map(str::to_owned);
    let stream = BroadcastStream::new(state.deliveries.subscribe()).filter_map(move |item| {
        let wanted = wanted.clone();
        async move {
            let delivery = item.ok()?;
            if wanted.as_ref().is_some_and(|t| *t != delivery.token) {
                return None;
            }
            let mut line = serde_json::to_vec(&delivery).ok()?;
            line.push(b'\n');
            Some(Ok::<_, Infallible>(Frame::data(Bytes::from(line))))
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}
