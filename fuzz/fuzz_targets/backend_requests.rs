//! Every backend RPC: arbitrary bytes through the relay's own decoder (StrictCodec) and, when they
//! decode, into the handler, as the gRPC server runs them. The first byte picks the RPC.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use approval_relay::grpc::codec::decode;
use approval_relay::pb;
use futures::FutureExt;
use libfuzzer_sys::fuzz_target;
use pb::audit_service_server::AuditService;
use pb::challenge_service_server::ChallengeService;
use pb::device_registry_server::DeviceRegistry;
use tonic::{Code, Request};

/// A decode or handler failure must never be INTERNAL for the client's bytes.
fn check(status: &tonic::Status) {
    assert_ne!(status.code(), Code::Internal, "{status:?}");
    if status.code() == Code::InvalidArgument {
        assert!(status.message().contains(": "), "no field path: {status:?}");
    }
}

macro_rules! call {
    ($api:expr, $method:ident, $ty:ty, $bytes:expr) => {
        match decode::<$ty>($bytes) {
            Err(status) => check(&status),
            Ok(req) => {
                if let Err(status) = $api.$method(Request::new(req)).await {
                    check(&status);
                }
            }
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&rpc, bytes)) = data.split_first() else {
        return;
    };
    let h = harness::harness();
    let api = &h.backend;
    h.runtime.block_on(async {
        match rpc % 10 {
            0 => call!(api, create_challenge, pb::CreateChallengeRequest, bytes),
            1 => call!(api, get_challenge, pb::GetChallengeRequest, bytes),
            2 => call!(api, cancel_challenge, pb::CancelChallengeRequest, bytes),
            3 => call!(api, send_sign_in_notice, pb::SendSignInNoticeRequest, bytes),
            4 => call!(api, create_enrollment, pb::CreateEnrollmentRequest, bytes),
            5 => call!(api, list_devices, pb::ListDevicesRequest, bytes),
            6 => call!(api, revoke_device, pb::RevokeDeviceRequest, bytes),
            7 => call!(api, list_audit_events, pb::ListAuditEventsRequest, bytes),
            8 => match decode::<pb::WatchChallengeRequest>(bytes) {
                Err(status) => check(&status),
                Ok(req) => match api.watch_challenge(Request::new(req)).await {
                    Err(status) => check(&status),
                    Ok(stream) => {
                        use futures::StreamExt;
                        let mut stream = stream.into_inner();
                        let _ = stream.next().now_or_never();
                    }
                },
            },
            _ => match decode::<pb::WatchSecurityEventsRequest>(bytes) {
                Err(status) => check(&status),
                Ok(req) => {
                    // The stream waits for new events; its first answer (or refusal) is enough.
                    if let Err(status) = api.watch_security_events(Request::new(req)).await {
                        check(&status);
                    }
                }
            },
        }
    });
});
