//! Writes a seed corpus of valid inputs for each fuzz target into `corpus/<target>/`, so the fuzzer
//! starts past the id and protobuf checks and reaches key parsing and verification.
//!   cargo +nightly run --manifest-path fuzz/Cargo.toml --bin seed

use approval_relay::challenge::{AccountId, ChallengeId, DeviceId, NoticeId};
use approval_relay::device::Ticket;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb::{self, device_request::Body};
use prost::Message;
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed");
}

fn main() {
    let account = AccountId::parse("alice@example.com").expect("account");
    let challenge = ChallengeId::generate(&account);
    let device = DeviceId::generate(&account);
    let notice = NoticeId::generate(&account);
    let ticket = Ticket::generate(&account);
    for (alg, key) in [("p256", PhoneKey::p256()), ("ed25519", PhoneKey::ed25519())] {
        let mut phone = Phone::new(key);
        phone.device_id = device.to_string();
        let enroll = phone.enroll_request(
            ticket.as_str(),
            pb::Platform::Apns,
            "00aa11bb22cc33dd44ee55ff66778899",
            "com.example.authenticator",
            "Seed phone",
        );
        write("enrollment", alg, &enroll.encode_to_vec());
        let bodies = [
            Body::GetChallenge(pb::GetChallengeBody {
                challenge_id: challenge.to_string(),
            }),
            Body::Respond(pb::RespondBody {
                challenge_id: challenge.to_string(),
                decision: pb::Decision::Approve.into(),
                deny_reason: 0,
                number: 42,
            }),
            Body::ListPending(pb::ListPendingBody {}),
            Body::UpdatePushToken(pb::UpdatePushTokenBody {
                push_token: "ffee".into(),
            }),
            Body::RotateKey(pb::RotateKeyBody {
                new_key_algorithm: phone.key.algorithm().into(),
                new_public_key: phone.key.public_key(),
                new_key_proof: phone.key.sign(b"proof"),
            }),
            Body::GetNotice(pb::GetNoticeBody {
                notice_id: notice.to_string(),
            }),
            Body::ListNotices(pb::ListNoticesBody {}),
            Body::RevokeFromNotice(pb::RevokeFromNoticeBody {
                notice_id: notice.to_string(),
            }),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let signed = phone.signed(body);
            write("device_envelope", &format!("{alg}-{i}"), &signed.encode_to_vec());
        }
        let key = phone.key.public_key();
        let signature = phone.key.sign(b"message");
        let mut raw = vec![u8::from(alg == "ed25519"), u8::try_from(key.len()).unwrap_or(0)];
        raw.extend(&key);
        raw.extend(&signature);
        raw.extend(b"message");
        write("signature", alg, &raw);
    }
    for (name, text) in [
        ("account", account.as_str().to_owned()),
        ("challenge", challenge.to_string()),
        ("device", device.to_string()),
        ("notice", notice.to_string()),
        ("ticket", ticket.as_str().to_owned()),
    ] {
        write("ids", name, text.as_bytes());
    }
    let create = pb::CreateChallengeRequest {
        account_id: account.as_str().to_owned(),
        login_context: Some(pb::LoginContext {
            ip: "203.0.113.7".into(),
            location: "Lyon, France".into(),
            user_agent: "Firefox on Linux".into(),
            signing_in_device_name: "laptop".into(),
            signing_in_device_id: "dev-1".into(),
            sign_in_device_key: "laptop-cookie-1".into(),
        }),
        idempotency_key: "signin-1".into(),
        ttl_seconds: 60,
        number_match_mode: pb::NumberMatchMode::Type.into(),
        min_assurance: pb::Assurance::AndroidTee.into(),
    };
    write("backend_create", "full", &create.encode_to_vec());

    // backend_requests: the RPC's number, then a valid request of it (harness.rs enrolls a phone for
    // fuzz@example.com, so its creates succeed).
    let fuzz_create = pb::CreateChallengeRequest {
        account_id: "fuzz@example.com".into(),
        ..create.clone()
    };
    let id = pb::GetChallengeRequest {
        challenge_id: challenge.to_string(),
    };
    let requests: [(u8, Vec<u8>); 10] = [
        (0, fuzz_create.encode_to_vec()),
        (1, id.encode_to_vec()),
        (2, id.encode_to_vec()),
        (
            3,
            pb::SendSignInNoticeRequest {
                account_id: "fuzz@example.com".into(),
                login_context: create.login_context.clone(),
                sign_in_id: "session-1".into(),
            }
            .encode_to_vec(),
        ),
        (
            4,
            pb::CreateEnrollmentRequest {
                account_id: "fuzz@example.com".into(),
                ttl_seconds: 60,
            }
            .encode_to_vec(),
        ),
        (
            5,
            pb::ListDevicesRequest {
                account_id: "fuzz@example.com".into(),
            }
            .encode_to_vec(),
        ),
        (
            6,
            pb::RevokeDeviceRequest {
                account_id: "fuzz@example.com".into(),
                device_id: device.to_string(),
            }
            .encode_to_vec(),
        ),
        (
            7,
            pb::ListAuditEventsRequest {
                account_id: "fuzz@example.com".into(),
                page_size: 10,
                page_token: "5-0~".into(),
            }
            .encode_to_vec(),
        ),
        (8, id.encode_to_vec()),
        (
            9,
            pb::WatchSecurityEventsRequest {
                after_position: "1".into(),
            }
            .encode_to_vec(),
        ),
    ];
    for (rpc, bytes) in &requests {
        let mut seed = vec![*rpc];
        seed.extend(bytes);
        write("backend_requests", &format!("rpc-{rpc}"), &seed);
    }

    // stream_challenges: length-prefixed messages, a create and a cancel.
    let stream = [
        pb::StreamChallengesRequest {
            request_id: "r1".into(),
            request: Some(pb::stream_challenges_request::Request::Create(fuzz_create)),
        },
        pb::StreamChallengesRequest {
            request_id: "r2".into(),
            request: Some(pb::stream_challenges_request::Request::Cancel(
                pb::CancelChallengeRequest {
                    challenge_id: challenge.to_string(),
                },
            )),
        },
    ];
    let mut seed = Vec::new();
    for message in &stream {
        let bytes = message.encode_to_vec();
        seed.push(u8::try_from(bytes.len()).expect("short"));
        seed.extend(bytes);
    }
    write("stream_challenges", "create-cancel", &seed);

    // attestation_*: software-made attestations in the real structures, under a test root.
    use approval_relay::device_sim::attest::{AndroidSpec, AppleSpec, TestRoot};
    let root = TestRoot::generate("seed root").expect("root");
    let phone = PhoneKey::p256();
    let chain = AndroidSpec::new(ticket.as_str(), "com.example.approve")
        .chain(&root, &phone.spki_der())
        .expect("chain");
    let mut seed = vec![u8::try_from(chain.len()).expect("short")];
    for cert in &chain {
        seed.extend(u16::try_from(cert.len()).expect("short").to_be_bytes());
        seed.extend(cert);
    }
    write("attestation_android", "tee-chain", &seed);
    write(
        "attestation_android",
        "key-description",
        &AndroidSpec::new(ticket.as_str(), "com.example.approve").key_description(),
    );
    let (object, key_id) = AppleSpec::new("TEAMID1234.com.example.approve", b"client data".to_vec())
        .object(&root)
        .expect("object");
    let mut seed = key_id;
    seed.extend(object);
    write("attestation_apple", "object", &seed);
    println!("seeds written under fuzz/corpus/");
}
