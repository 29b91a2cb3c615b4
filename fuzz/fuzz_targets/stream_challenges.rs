//! StreamChallenges message sequences: the input is split into messages (a length byte, then that many
//! bytes), each decoded by the relay's own codec as the server would, and fed to one stream session.
//! Whatever arrives, the session answers every decoded request or ends with a status that names the
//! bad field; never INTERNAL, never a panic.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use approval_relay::grpc::codec::decode;
use approval_relay::grpc::stream::serve;
use approval_relay::pb;
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use tokio_util::sync::CancellationToken;
use tonic::Code;

fuzz_target!(|data: &[u8]| {
    let mut messages = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        messages.push(decode::<pb::StreamChallengesRequest>(&tail[..len]));
        rest = &tail[len..];
    }
    let h = harness::harness();
    h.runtime.block_on(async {
        let stop = CancellationToken::new();
        let done = stop.clone();
        // Once the session asks for the request after the last one, every earlier one was answered:
        // stop it then (a half-close would wait for the challenges' deadlines).
        let inbound = futures::stream::iter(messages).chain(
            futures::stream::once(async move {
                done.cancel();
                std::future::pending::<Result<pb::StreamChallengesRequest, tonic::Status>>().await
            }),
        );
        let mut out = serve(h.relay.clone(), Box::pin(inbound), stop);
        while let Some(item) = out.next().await {
            match item {
                Ok(response) => {
                    if let Some(pb::stream_challenges_response::Response::Error(e)) = response.response {
                        assert_ne!(e.code, Code::Internal as i32, "{e:?}");
                    }
                }
                Err(status) => {
                    assert!(
                        matches!(status.code(), Code::InvalidArgument | Code::Unavailable),
                        "{status:?}"
                    );
                }
            }
        }
    });
});
