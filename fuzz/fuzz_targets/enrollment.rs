//! Enroll: the wire bytes of an EnrollRequest through the device API's parsing, then the proof of
//! possession with the key the payload carries.
#![no_main]

use approval_relay::grpc::envelope;
use approval_relay::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::EnrollRequest::decode(data) else {
        return;
    };
    if let Ok(enrollment) = envelope::open_enrollment(&req) {
        let _ = enrollment.device.key.verify(&req.payload, &req.signature);
    }
});
