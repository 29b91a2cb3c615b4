//! OpenTelemetry: the relay built with the `otel` feature, pointed at a small OTLP/gRPC collector of the
//! test's own, exports a span for CreateChallenge in the backend's trace (W3C `traceparent` from the
//! request metadata) with its Redis round trips and provider requests as child spans.

use crate::helpers::*;
use crate::redis_server::RedisServer;
use approval_relay::pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collects every span exported to it.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().expect("lock").extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_challenge_is_traced_in_the_backends_trace_with_redis_and_push_child_spans() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = listener.local_addr().expect("addr");
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    let redis = RedisServer::start();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
    };
    let (backend, device, admin) = (port(), port(), port());
    let mut relay = Command::new(env!("CARGO_BIN_EXE_approval-relay"))
        .arg("serve")
        .args([
            "--redis-url",
            &redis.url(),
            "--otlp-endpoint",
            &format!("http://{otlp}"),
        ])
        .args([
            "--backend-addr",
            &backend.to_string(),
            "--device-addr",
            &device.to_string(),
        ])
        .args(["--admin-addr", &admin.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let app = connect_to(backend, device, admin).await;
    let account = account();
    let _phone = app.enroll(&account).await;

    let (trace_id, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut request = tonic::Request::new(pb::CreateChallengeRequest {
        account_id: account.clone(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().expect("ascii"),
    );
    app.challenges
        .clone()
        .create_challenge(request)
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGTERM: the relay flushes its last spans as it exits.
    let status = Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(relay.wait().expect("exits").success());

    let deadline = Instant::now() + Duration::from_secs(10);
    let (rpc, spans) = loop {
        let spans = collector.0.lock().expect("lock").clone();
        if let Some(rpc) = spans
            .iter()
            .find(|s| s.name == "approval.v1.ChallengeService/CreateChallenge")
        {
            break (rpc.clone(), spans);
        }
        assert!(
            Instant::now() < deadline,
            "no CreateChallenge span: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hex(&rpc.trace_id), trace_id, "the backend's trace");
    assert_eq!(
        hex(&rpc.parent_span_id),
        parent,
        "the backend's span is the parent"
    );
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == rpc.trace_id && s.parent_span_id == rpc.span_id)
        .collect();
    assert!(
        children.iter().any(|s| s.name.starts_with("redis ")),
        "a Redis round trip is a child span: {children:?}"
    );
    let in_trace: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == rpc.trace_id)
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        in_trace.iter().any(|n| n.starts_with("push ")),
        "the provider request is in the trace: {in_trace:?}"
    );
}
