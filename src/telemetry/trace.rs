//! Traces: a span for every gRPC call (its parent taken from the caller's W3C `traceparent`), with the
//! Redis round trips and provider requests it causes as child spans, exported over OTLP/gRPC when
//! `otlp_endpoint` is set (cargo feature `otel`, on by default). Without an endpoint no span is made at
//! all, so the hot path pays nothing for tracing it does not use.

use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

/// True when spans are exported (so they are worth making).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A span named `name` (its OpenTelemetry name) when tracing is on; a disabled span otherwise.
#[macro_export]
#[doc(hidden)]
macro_rules! trace_span {
    ($name:expr $(, $($field:tt)*)?) => {
        if $crate::telemetry::trace::on() {
            tracing::info_span!("span", otel.name = $name $(, $($field)*)?)
        } else {
            tracing::Span::none()
        }
    };
}

pub use crate::trace_span as span;

/// Keeps the exporter running; flushes what is left when dropped (at exit).
pub struct Guard(#[cfg(feature = "otel")] Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.0.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::propagation::Extractor;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;

    /// The tracing layer exporting spans to `endpoint`, and the provider to flush at exit.
    pub fn layer<S>(
        endpoint: &str,
    ) -> Result<
        (
            tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>,
            opentelemetry_sdk::trace::SdkTracerProvider,
        ),
        String,
    >
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| format!("otlp_endpoint {endpoint}: {e}"))?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("approval-relay")
                    .build(),
            )
            .with_batch_exporter(exporter)
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let tracer = provider.tracer("approval-relay");
        Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
    }

    /// Reads `traceparent` / `tracestate` from request headers.
    struct Headers<'a>(&'a http::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    /// Makes `span` a child of the caller's trace, when the headers carry one.
    pub fn adopt(span: &tracing::Span, headers: &http::HeaderMap) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let parent =
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
        let _ = span.set_parent(parent);
    }
}

/// Installs the log subscriber with, when `otlp_endpoint` is given, the OTLP span exporter beside it.
///
/// # Errors
/// The endpoint cannot be used (a bad URL).
pub fn init(format: &str, otlp_endpoint: Option<&str>) -> Result<Guard, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let registry = tracing_subscriber::registry()
        .with(super::filter())
        .with(super::fmt_layer(format));
    #[cfg(feature = "otel")]
    {
        let Some(endpoint) = otlp_endpoint else {
            let _ = registry.try_init();
            return Ok(Guard(None));
        };
        let (layer, provider) = otel::layer(endpoint)?;
        let _ = registry.with(layer).try_init();
        ON.store(true, Ordering::Relaxed);
        Ok(Guard(Some(provider)))
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = otlp_endpoint;
        let _ = registry.try_init();
        Ok(Guard())
    }
}

/// A tower layer putting every gRPC call in a span named for its method, a child of the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSpans;

/// The service [`RpcSpans`] wraps.
#[derive(Debug, Clone)]
pub struct RpcSpansService<S>(S);

impl<S> tower::Layer<S> for RpcSpans {
    type Service = RpcSpansService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcSpansService(inner)
    }
}

impl<S, B> tower::Service<http::Request<B>> for RpcSpansService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let span = if on() {
            let path = request.uri().path().trim_start_matches('/').to_owned();
            let span = tracing::info_span!("rpc", otel.name = %path, rpc.system = "grpc");
            #[cfg(feature = "otel")]
            otel::adopt(&span, request.headers());
            span
        } else {
            tracing::Span::none()
        };
        self.0.call(request).instrument(span)
    }
}
