//! The admin HTTP listener: `/healthz` (the process is up), `/readyz` (it accepts new calls; turns 503
//! during shutdown so load balancers stop sending) and `/metrics` (Prometheus text).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// False before start-up finished and after shutdown began.
    pub ready: Arc<AtomicBool>,
    /// Renders the metrics.
    pub metrics: PrometheusHandle,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move { crate::telemetry::render(&s.metrics) }),
        )
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
