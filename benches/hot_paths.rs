//! Criterion benches of the per-request work that does no I/O: opening and verifying a device envelope
//! (P-256 and Ed25519), a device key as a store read decodes it, validating and building a challenge,
//! deciding it, and encoding the event a watcher receives. `cargo bench --bench hot_paths`.
#![allow(missing_docs)]

use approval_relay::challenge::{
    AccountId, Challenge, ChallengeId, Decision, DeviceId, NumberMatch, NumberMode, State,
};
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::grpc::backend::parse_create;
use approval_relay::grpc::{convert, envelope};
use approval_relay::pb;
use approval_relay::pb::device_request::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;
use std::hint::black_box;

fn signed_respond(
    key: PhoneKey,
    device: &DeviceId,
    challenge: &ChallengeId,
) -> (Phone, pb::SignedRequest) {
    let mut phone = Phone::new(key);
    phone.device_id = device.to_string();
    let request = phone.signed(Body::Respond(pb::RespondBody {
        challenge_id: challenge.to_string(),
        decision: pb::Decision::Approve.into(),
        deny_reason: 0,
        number: 0,
    }));
    (phone, request)
}

fn envelopes(c: &mut Criterion) {
    let account = AccountId::parse("alice@example.com").expect("account");
    let device = DeviceId::generate(&account);
    let challenge = ChallengeId::generate(&account);
    for (name, key) in [("p256", PhoneKey::p256()), ("ed25519", PhoneKey::ed25519())] {
        let algorithm = key.algorithm();
        let (phone, request) = signed_respond(key, &device, &challenge);
        let stored = approval_relay::auth::PublicKey::parse(
            convert::key_algorithm("k", algorithm.into()).expect("algorithm"),
            &phone.key.public_key(),
        )
        .expect("key");
        let wire = request.encode_to_vec();
        let stored_bytes = stored.to_bytes();
        c.bench_function(&format!("envelope_open_and_verify_{name}"), |b| {
            b.iter(|| {
                let signed = pb::SignedRequest::decode(black_box(wire.as_slice())).expect("decode");
                let opened = envelope::open(&signed, "Respond", |b| matches!(b, Body::Respond(_)))
                    .expect("open");
                // The device's key as a store read gives it, then the one verification.
                approval_relay::auth::PublicKey::stored(
                    stored.algorithm(),
                    black_box(&stored_bytes),
                )
                .expect("stored key")
                .verify(&signed.payload, &signed.signature)
                .expect("verify");
                opened
            });
        });
        // A device the replica holds (relay::device_cache): its key decoded by an earlier verification.
        let held = approval_relay::auth::PublicKey::stored(stored.algorithm(), &stored_bytes)
            .expect("stored key");
        let signed = pb::SignedRequest::decode(wire.as_slice()).expect("decode");
        held.verify(&signed.payload, &signed.signature)
            .expect("verify");
        c.bench_function(&format!("envelope_open_and_verify_held_key_{name}"), |b| {
            b.iter(|| {
                let signed = pb::SignedRequest::decode(black_box(wire.as_slice())).expect("decode");
                let opened = envelope::open(&signed, "Respond", |b| matches!(b, Body::Respond(_)))
                    .expect("open");
                held.verify(&signed.payload, &signed.signature)
                    .expect("verify");
                opened
            });
        });
        // What every device read cost before keys were kept encoded (a full parse: for Ed25519 a point
        // decompression), against what it costs now.
        c.bench_function(&format!("device_key_parse_{name}"), |b| {
            b.iter(|| {
                approval_relay::auth::PublicKey::parse(stored.algorithm(), black_box(&stored_bytes))
                    .expect("key")
            });
        });
        c.bench_function(&format!("device_key_from_store_{name}"), |b| {
            b.iter(|| {
                approval_relay::auth::PublicKey::stored(
                    stored.algorithm(),
                    black_box(&stored_bytes),
                )
                .expect("key")
            });
        });
    }
}

fn challenge_creation(c: &mut Criterion) {
    let request = pb::CreateChallengeRequest {
        min_assurance: 0,
        account_id: "alice@example.com".into(),
        login_context: Some(pb::LoginContext {
            ip: "203.0.113.7".into(),
            location: "Lyon, France".into(),
            user_agent: "Firefox on Linux".into(),
            signing_in_device_name: "laptop".into(),
            signing_in_device_id: String::new(),
            sign_in_device_key: "laptop-cookie-1".into(),
        }),
        idempotency_key: "signin-1".into(),
        ttl_seconds: 60,
        number_match_mode: pb::NumberMatchMode::Type.into(),
    };
    c.bench_function("challenge_validate_and_build", |b| {
        b.iter(|| {
            let req = parse_create(black_box(request.clone())).expect("valid");
            let id = ChallengeId::generate(&req.account);
            let number = NumberMatch::generate(NumberMode::Type, 1, &mut rand::thread_rng());
            (req, id, number)
        });
    });

    let account = AccountId::parse("alice@example.com").expect("account");
    let devices: Vec<DeviceId> = (0..3).map(|_| DeviceId::generate(&account)).collect();
    let pending = Challenge {
        id: ChallengeId::generate(&account),
        account: account.clone(),
        context: Default::default(),
        number: NumberMatch::generate(NumberMode::None, 1, &mut rand::thread_rng()),
        targets: devices.clone(),
        created_at_ms: 1_000,
        expires_at_ms: 61_000,
        ended_at_ms: 0,
        state: State::Pending,
        sequence: 0,
        idempotency_key: None,
        wrong_answers: 0,
        deliveries: Vec::new(),
        pusher: String::new(),
        push_claims: 0,
    };
    c.bench_function("challenge_approve_transition", |b| {
        b.iter(|| {
            let mut challenge = pending.clone();
            challenge
                .respond(black_box(&devices[1]), Decision::Approve, 0, 2_000)
                .expect("approved")
        });
    });

    let mut ended = pending.clone();
    let event = ended
        .respond(&devices[1], Decision::Approve, 0, 2_000)
        .expect("approved");
    c.bench_function("event_encode", |b| {
        b.iter(|| convert::event_to_pb(black_box(&event)).encode_to_vec());
    });
}

criterion_group!(benches, envelopes, challenge_creation);
criterion_main!(benches);
