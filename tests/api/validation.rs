//! Bad input on every RPC: INVALID_ARGUMENT naming the field, no panic, nothing changed.

use crate::helpers::*;
use approval_relay::device_sim::phone::now_ms;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::pb::device_request::Body;
use tonic::Code;

async fn bad_create_challenge_requests_name_the_field(app: TestApp) {
    let account = account();
    let _phone = app.enroll(&account).await;
    let ok = || pb::CreateChallengeRequest {
        account_id: account.clone(),
        ..Default::default()
    };
    let long = "x".repeat(300);
    let cases: Vec<(pb::CreateChallengeRequest, &str)> = vec![
        (
            pb::CreateChallengeRequest {
                account_id: String::new(),
                ..ok()
            },
            "account_id",
        ),
        (
            pb::CreateChallengeRequest {
                account_id: long.clone(),
                ..ok()
            },
            "account_id",
        ),
        (
            pb::CreateChallengeRequest {
                account_id: "a\u{0}b".into(),
                ..ok()
            },
            "account_id",
        ),
        (
            pb::CreateChallengeRequest {
                ttl_seconds: 100_000,
                ..ok()
            },
            "ttl_seconds",
        ),
        (
            pb::CreateChallengeRequest {
                number_match_mode: 42,
                ..ok()
            },
            "number_match_mode",
        ),
        (
            pb::CreateChallengeRequest {
                idempotency_key: long.clone(),
                ..ok()
            },
            "idempotency_key",
        ),
        (
            pb::CreateChallengeRequest {
                login_context: Some(pb::LoginContext {
                    ip: "999.1.1.1".into(),
                    ..Default::default()
                }),
                ..ok()
            },
            "login_context.ip",
        ),
        (
            pb::CreateChallengeRequest {
                login_context: Some(pb::LoginContext {
                    user_agent: long.clone(),
                    ..Default::default()
                }),
                ..ok()
            },
            "login_context.user_agent",
        ),
        (
            pb::CreateChallengeRequest {
                login_context: Some(pb::LoginContext {
                    location: long.clone(),
                    ..Default::default()
                }),
                ..ok()
            },
            "login_context.location",
        ),
        (
            pb::CreateChallengeRequest {
                login_context: Some(pb::LoginContext {
                    signing_in_device_id: "nope".into(),
                    ..Default::default()
                }),
                ..ok()
            },
            "login_context.signing_in_device_id",
        ),
    ];
    for (req, field) in cases {
        assert_code(app.create_with(req).await, Code::InvalidArgument, field);
    }
    assert!(app.sink.sent().is_empty(), "nothing was pushed");
    let audit = app.audit_details(&account).await;
    assert!(
        !audit
            .iter()
            .any(|(k, _)| *k == pb::AuditKind::ChallengeCreated),
        "nothing was created"
    );
}

async fn bad_ids_on_backend_rpcs_name_the_field(app: TestApp) {
    let mut c = app.challenges.clone();
    let mut r = app.registry.clone();
    let mut a = app.audit.clone();
    assert_code(
        c.get_challenge(pb::GetChallengeRequest {
            challenge_id: "x".into(),
        })
        .await,
        Code::InvalidArgument,
        "challenge_id",
    );
    assert_code(
        c.watch_challenge(pb::WatchChallengeRequest {
            challenge_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "challenge_id",
    );
    assert_code(
        c.cancel_challenge(pb::CancelChallengeRequest {
            challenge_id: "c.zz.zz".into(),
        })
        .await,
        Code::InvalidArgument,
        "challenge_id",
    );
    let unknown = "c.00000000.AAAAAAAAAAAAAAAAAAAAAA".to_owned();
    assert_code(
        c.get_challenge(pb::GetChallengeRequest {
            challenge_id: unknown,
        })
        .await,
        Code::NotFound,
        "challenge",
    );
    assert_code(
        r.create_enrollment(pb::CreateEnrollmentRequest {
            account_id: String::new(),
            ttl_seconds: 0,
        })
        .await,
        Code::InvalidArgument,
        "account_id",
    );
    assert_code(
        r.create_enrollment(pb::CreateEnrollmentRequest {
            account_id: "a".into(),
            ttl_seconds: 999_999,
        })
        .await,
        Code::InvalidArgument,
        "ttl_seconds",
    );
    assert_code(
        r.create_enrollment(pb::CreateEnrollmentRequest {
            account_id: "a".into(),
            ttl_seconds: 9,
        })
        .await,
        Code::InvalidArgument,
        "ttl_seconds: must be between 10 and 3600",
    );
    assert_code(
        r.list_devices(pb::ListDevicesRequest {
            account_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "account_id",
    );
    assert_code(
        r.revoke_device(pb::RevokeDeviceRequest {
            account_id: "a".into(),
            device_id: "d.1".into(),
        })
        .await,
        Code::InvalidArgument,
        "device_id",
    );
    assert_code(
        a.list_audit_events(pb::ListAuditEventsRequest {
            account_id: "a".into(),
            page_size: 501,
            page_token: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_code(
        a.list_audit_events(pb::ListAuditEventsRequest {
            account_id: "a".into(),
            page_size: 0,
            page_token: "zz".into(),
        })
        .await,
        Code::InvalidArgument,
        "page_token",
    );
    assert_code(
        a.watch_security_events(pb::WatchSecurityEventsRequest {
            after_position: "not-a-position".into(),
        })
        .await,
        Code::InvalidArgument,
        "after_position",
    );
}

async fn malformed_envelopes_keys_and_signatures_name_the_field(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let mut d = app.device.clone();
    let body = || {
        Body::Respond(pb::RespondBody {
            challenge_id: challenge.challenge_id.clone(),
            decision: 1,
            deny_reason: 0,
            number: challenge.number,
        })
    };

    let mut req = phone.signed(body());
    req.device_id = String::new();
    assert_code(d.respond(req).await, Code::InvalidArgument, "device_id");
    let mut req = phone.signed(body());
    req.payload = vec![0xff; 8];
    assert_code(d.respond(req).await, Code::InvalidArgument, "payload");
    let mut req = phone.signed(body());
    req.payload = vec![0; 20_000];
    assert_code(
        d.respond(req).await,
        Code::InvalidArgument,
        "payload: must be at most",
    );
    let mut req = phone.signed(body());
    req.signature = vec![1, 2, 3];
    assert_code(d.respond(req).await, Code::InvalidArgument, "signature");
    let mut req = phone.signed(body());
    req.signature.clear();
    assert_code(d.respond(req).await, Code::InvalidArgument, "signature");
    // The body must be the one of the RPC.
    let req = phone.signed(Body::ListPending(pb::ListPendingBody {}));
    assert_code(d.respond(req).await, Code::InvalidArgument, "payload.body");
    // Unknown enum values and a deny without a reason.
    let bad = |decision, deny_reason| {
        Body::Respond(pb::RespondBody {
            challenge_id: challenge.challenge_id.clone(),
            decision,
            deny_reason,
            number: 0,
        })
    };
    assert_code(
        d.respond(phone.signed(bad(9, 0))).await,
        Code::InvalidArgument,
        "respond.decision",
    );
    assert_code(
        d.respond(phone.signed(bad(2, 0))).await,
        Code::InvalidArgument,
        "respond.deny_reason",
    );
    assert_code(
        d.respond(phone.signed(bad(2, 77))).await,
        Code::InvalidArgument,
        "respond.deny_reason",
    );
    assert_code(
        d.respond(phone.signed(bad(1, 1))).await,
        Code::InvalidArgument,
        "respond.deny_reason",
    );
    let req = phone.signed(Body::Respond(pb::RespondBody {
        challenge_id: "bogus".into(),
        decision: 1,
        deny_reason: 0,
        number: 1,
    }));
    assert_code(
        d.respond(req).await,
        Code::InvalidArgument,
        "payload.respond.challenge_id",
    );
    // A zero counter is malformed, not a replay; so is one no store can compare exactly.
    assert_code(
        d.respond(phone.signed_with(0, now_ms(), body())).await,
        Code::InvalidArgument,
        "payload.counter",
    );
    assert_code(
        d.respond(phone.signed_with(1 << 53, now_ms(), body()))
            .await,
        Code::InvalidArgument,
        "payload.counter",
    );

    assert_eq!(
        app.get(&challenge.challenge_id).await.state(),
        pb::ChallengeState::Pending
    );
    assert_eq!(
        app.devices(&account).await[0].state(),
        pb::DeviceState::Active,
        "malformed input does not mark a clone"
    );
}

async fn malformed_enrollments_name_the_field_and_register_nothing(app: TestApp) {
    let account = account();
    let ticket = app.ticket(&account).await;
    let phone = Phone::new(PhoneKey::p256());
    let mut d = app.device.clone();
    let valid = || phone.enroll_request(&ticket, pb::Platform::Fcm, "tok", "com.example.a", "A");
    let with = |edit: &dyn Fn(&mut pb::EnrollPayload)| {
        let mut payload: pb::EnrollPayload =
            prost::Message::decode(valid().payload.as_slice()).expect("decode");
        edit(&mut payload);
        let payload = prost::Message::encode_to_vec(&payload);
        pb::EnrollRequest {
            signature: phone.key.sign(&payload),
            payload,
        }
    };
    let cases: Vec<(pb::EnrollRequest, &str)> = vec![
        (with(&|p| p.ticket = "t.bad".into()), "payload.ticket"),
        (with(&|p| p.key_algorithm = 0), "payload.key_algorithm"),
        (with(&|p| p.public_key = vec![4; 65]), "payload.public_key"),
        (with(&|p| p.public_key.truncate(10)), "payload.public_key"),
        (with(&|p| p.platform = 7), "payload.platform"),
        (
            with(&|p| p.push_token = String::new()),
            "payload.push_token",
        ),
        (
            with(&|p| p.push_token = "x".repeat(2000)),
            "payload.push_token",
        ),
        (with(&|p| p.app_id = String::new()), "payload.app_id"),
        (
            with(&|p| p.display_name = "y".repeat(65)),
            "payload.display_name",
        ),
        (
            with(&|p| p.timestamp_unix_ms = 0),
            "payload.timestamp_unix_ms",
        ),
        (
            pb::EnrollRequest {
                payload: vec![0xff, 0xff],
                signature: vec![1],
            },
            "payload",
        ),
        (
            pb::EnrollRequest {
                payload: valid().payload,
                signature: Vec::new(),
            },
            "signature",
        ),
    ];
    for (req, field) in cases {
        assert_code(d.enroll(req).await, Code::InvalidArgument, field);
    }
    assert!(app.devices(&account).await.is_empty());
    d.enroll(valid())
        .await
        .expect("the ticket is still usable after refused attempts");
}

on_every_store!(
    bad_create_challenge_requests_name_the_field,
    bad_ids_on_backend_rpcs_name_the_field,
    malformed_envelopes_keys_and_signatures_name_the_field,
    malformed_enrollments_name_the_field_and_register_nothing,
);
