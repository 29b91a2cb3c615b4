//! CreateChallenge: the wire bytes of a request through the backend API's validation.
#![no_main]

use approval_relay::grpc::backend::parse_create;
use approval_relay::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = pb::CreateChallengeRequest::decode(data) {
        let _ = parse_create(req);
    }
});
