//! Logs and metrics. Logs go through `tracing`: text (colour only on a terminal, never with `NO_COLOR`)
//! or one JSON object per line with `timestamp`, `level`, `target` and `message` at the top level, as
//! log shippers expect; filtered by `RUST_LOG` (default `info`). Metrics go through the `metrics` facade
//! into one process-wide Prometheus recorder that the admin listener renders (`catalog.rs` names and
//! describes every series).

pub mod catalog;
pub mod trace;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit it was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("APPROVAL_RELAY_COMMIT");
/// `--version`'s text.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("APPROVAL_RELAY_COMMIT"),
    ")"
);

/// Installs the log subscriber once (without trace export); later calls are no-ops.
pub fn init_logs(format: &str) {
    let _ = trace::init(format, None);
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The log lines on stderr, as `format` says.
fn fmt_layer<S>(format: &str) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if format == "json" {
        layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed()
    } else {
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        layer.with_ansi(colour).boxed()
    }
}

/// Histogram buckets in seconds: from Redis round trips (sub-millisecond) to a challenge's whole life.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0,
];

/// The process-wide Prometheus recorder, installed on first use with every series described and the
/// ones dashboards and alerts use registered at zero.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Buckets, not the exporter's default summaries: quantiles of summaries cannot be added up
            // across replicas, histogram buckets can.
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; ours then simply stays empty.
            let _ = metrics::set_global_recorder(recorder);
            catalog::register();
            handle
        })
        .clone()
}

/// The metrics text for a scrape: the process series are sampled first.
pub fn render(handle: &PrometheusHandle) -> String {
    catalog::sample_process();
    handle.render()
}
