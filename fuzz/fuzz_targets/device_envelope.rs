//! Every signed device call: the wire bytes of a SignedRequest through the same parsing the device API
//! runs, for each RPC's expected body, then the key a RotateKey body carries.
#![no_main]

use approval_relay::auth::{KeyAlgorithm, PublicKey};
use approval_relay::grpc::{convert, envelope};
use approval_relay::pb::{self, device_request::Body};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const RPCS: [(&str, fn(&Body) -> bool); 8] = [
    ("GetChallenge", |b| matches!(b, Body::GetChallenge(_))),
    ("Respond", |b| matches!(b, Body::Respond(_))),
    ("ListPending", |b| matches!(b, Body::ListPending(_))),
    ("UpdatePushToken", |b| matches!(b, Body::UpdatePushToken(_))),
    ("RotateKey", |b| matches!(b, Body::RotateKey(_))),
    ("GetNotice", |b| matches!(b, Body::GetNotice(_))),
    ("ListNotices", |b| matches!(b, Body::ListNotices(_))),
    ("RevokeFromNotice", |b| matches!(b, Body::RevokeFromNotice(_))),
];

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = pb::SignedRequest::decode(data) else {
        return;
    };
    for (rpc, expected) in RPCS {
        if let Ok(opened) = envelope::open(&signed, rpc, expected) {
            if let Body::GetNotice(pb::GetNoticeBody { notice_id })
            | Body::RevokeFromNotice(pb::RevokeFromNoticeBody { notice_id }) = &opened.body
            {
                let _ = convert::notice_id("notice_id", notice_id);
            }
            if let Body::RotateKey(rotate) = &opened.body {
                for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
                    if let Ok(key) = PublicKey::parse(algorithm, &rotate.new_public_key) {
                        let _ = key.verify(&signed.payload, &rotate.new_key_proof);
                    }
                }
            }
        }
    }
});
