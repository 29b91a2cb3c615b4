//! The whole approval flow and each way a challenge can end.

use crate::helpers::*;
use approval_relay::device_sim::PhoneKey;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use approval_relay::pb::device_request::Body;
use approval_relay::push::PushKind;
use std::time::Duration;
use tonic::Code;

async fn an_enrolled_phone_approves_with_the_right_number_and_the_watcher_sees_snapshot_then_approved(
    app: TestApp,
) {
    let account = account();
    let mut phone = app.enroll(&account).await;

    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    assert!((10..100).contains(&challenge.number));
    assert_eq!(challenge.targeted_device_ids, vec![phone.device_id.clone()]);
    let watch = app.watch(&challenge.challenge_id).await;

    // The phone got a push with the challenge id only, then fetches the details over the signed API.
    let pushes = app.pushes_for(&challenge.challenge_id, 1).await;
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].kind, PushKind::Challenge);
    let req = phone.signed(Body::GetChallenge(pb::GetChallengeBody {
        challenge_id: challenge.challenge_id.clone(),
    }));
    let seen = app
        .device
        .clone()
        .get_challenge(req)
        .await
        .expect("details")
        .into_inner();
    let ctx = seen.login_context.expect("context");
    assert_eq!(
        (ctx.ip.as_str(), ctx.location.as_str()),
        ("203.0.113.7", "Lyon, France")
    );
    assert!(
        seen.number_choices.is_empty(),
        "in TYPE mode the phone is never told the number"
    );

    assert_eq!(
        app.approve(&mut phone, &challenge).await.expect("approved"),
        pb::ChallengeState::Approved
    );

    let events = drain(watch).await;
    let Kind::Snapshot(snapshot) = &events[0] else {
        panic!("first event must be the snapshot: {events:?}")
    };
    assert_eq!(snapshot.challenge_id, challenge.challenge_id);
    match decisive(&events).as_slice() {
        [Kind::Snapshot(_), Kind::Approved(a)] => assert_eq!(a.device_id, phone.device_id),
        other => panic!("expected snapshot then approved, got {other:?}"),
    }
    let after = app.get(&challenge.challenge_id).await;
    assert_eq!(after.state(), pb::ChallengeState::Approved);
    assert_eq!(after.decided_by_device_id, phone.device_id);
}

async fn choose_mode_offers_three_numbers_one_of_which_approves(app: TestApp) {
    let account = account();
    let mut phone = app
        .enroll_with(&account, PhoneKey::ed25519(), pb::Platform::Apns)
        .await;
    let challenge = app.create(&account, pb::NumberMatchMode::Choose).await;
    let req = phone.signed(Body::GetChallenge(pb::GetChallengeBody {
        challenge_id: challenge.challenge_id.clone(),
    }));
    let seen = app
        .device
        .clone()
        .get_challenge(req)
        .await
        .expect("details")
        .into_inner();
    assert_eq!(seen.number_choices.len(), 3);
    assert!(seen.number_choices.contains(&challenge.number));
    assert_eq!(
        app.approve(&mut phone, &challenge).await.expect("approved"),
        pb::ChallengeState::Approved
    );
}

async fn a_denial_carries_its_reason_to_the_watcher_and_the_audit_trail(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let watch = app.watch(&challenge.challenge_id).await;

    let state = app
        .respond(
            &mut phone,
            &challenge.challenge_id,
            pb::Decision::Deny,
            pb::DenyReason::NotMe,
            0,
        )
        .await;
    assert_eq!(state.expect("denied"), pb::ChallengeState::Denied);

    match decisive(&drain(watch).await).as_slice() {
        [Kind::Snapshot(_), Kind::Denied(d)] => {
            assert_eq!(d.device_id, phone.device_id);
            assert_eq!(d.reason(), pb::DenyReason::NotMe);
        }
        other => panic!("expected snapshot then denied, got {other:?}"),
    }
    assert!(
        app.audit_details(&account)
            .await
            .contains(&(pb::AuditKind::ChallengeDenied, "not_me".into()))
    );
}

async fn a_fraud_report_ends_the_challenge_and_reaches_the_security_event_stream(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let watch = app.watch(&challenge.challenge_id).await;

    let state = app.respond(
        &mut phone,
        &challenge.challenge_id,
        pb::Decision::ReportFraud,
        pb::DenyReason::Unspecified,
        0,
    );
    assert_eq!(
        state.await.expect("reported"),
        pb::ChallengeState::FraudReported
    );

    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::FraudReported(_)]
    ));
    let found = security_event(&app, &account, pb::SecurityEventKind::FraudReported).await;
    assert_eq!(found.challenge_id, challenge.challenge_id);
    assert_eq!(found.device_id, phone.device_id);
}

async fn an_unanswered_challenge_expires_at_its_deadline_and_late_answers_are_refused(
    app: TestApp,
) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create_short(&account, 1).await;
    let watch = app.watch(&challenge.challenge_id).await;

    let events = drain(watch).await;
    assert!(
        matches!(
            decisive(&events).as_slice(),
            [Kind::Snapshot(_), Kind::Expired(_)]
        ),
        "{events:?}"
    );
    let ended = app.get(&challenge.challenge_id).await;
    assert_eq!(ended.state(), pb::ChallengeState::Expired);
    assert!(ended.ended_at_unix_ms >= ended.expires_at_unix_ms);
    assert!(
        ended.ended_at_unix_ms - ended.expires_at_unix_ms < 1_000,
        "expired within a second of the deadline"
    );

    let late = app.approve(&mut phone, &challenge).await;
    assert_code(late, Code::FailedPrecondition, "already ended (expired)");
    let expiries = app
        .audit_details(&account)
        .await
        .iter()
        .filter(|(k, _)| *k == pb::AuditKind::ChallengeExpired)
        .count();
    assert_eq!(expiries, 1, "exactly one terminal audit record");
}

async fn a_cancelled_challenge_tells_its_watcher_and_a_second_cancel_changes_nothing(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let watch = app.watch(&challenge.challenge_id).await;

    let req = pb::CancelChallengeRequest {
        challenge_id: challenge.challenge_id.clone(),
    };
    let first = app
        .challenges
        .clone()
        .cancel_challenge(req.clone())
        .await
        .expect("cancel")
        .into_inner();
    assert!(first.cancelled);
    let second = app
        .challenges
        .clone()
        .cancel_challenge(req)
        .await
        .expect("cancel again")
        .into_inner();
    assert!(!second.cancelled);
    assert_eq!(
        second.challenge.expect("challenge").state(),
        pb::ChallengeState::Cancelled
    );

    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::Cancelled(_)]
    ));
    assert_code(
        app.approve(&mut phone, &challenge).await,
        Code::FailedPrecondition,
        "cancelled",
    );
}

async fn a_watch_started_after_the_decision_gets_it_from_the_snapshot(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    app.approve(&mut phone, &challenge).await.expect("approved");

    let events = drain(app.watch(&challenge.challenge_id).await).await;
    match events.as_slice() {
        [Kind::Snapshot(s), Kind::Approved(a)] => {
            assert_eq!(s.state(), pb::ChallengeState::Approved);
            assert_eq!(a.device_id, phone.device_id);
        }
        other => panic!("expected snapshot then approved, got {other:?}"),
    }
}

async fn the_signing_in_device_is_never_pushed_and_an_account_without_devices_gets_failed_precondition(
    app: TestApp,
) {
    let account = account();
    assert_no_active_device(&app, &account).await;

    let laptop = app.enroll(&account).await;
    let phone = app.enroll(&account).await;
    let req = pb::CreateChallengeRequest {
        account_id: account.clone(),
        login_context: Some(pb::LoginContext {
            signing_in_device_id: laptop.device_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let challenge = app
        .create_with(req.clone())
        .await
        .expect("create")
        .challenge
        .expect("challenge");
    assert_eq!(challenge.targeted_device_ids, vec![phone.device_id.clone()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pushes = app.pushes_for(&challenge.challenge_id, 1).await;
    assert_eq!(pushes.len(), 1, "only the other phone is pushed");

    // With the other phone revoked, only the signing-in device is left: nobody to ask.
    let revoke = pb::RevokeDeviceRequest {
        account_id: account.clone(),
        device_id: phone.device_id.clone(),
    };
    app.registry
        .clone()
        .revoke_device(revoke)
        .await
        .expect("revoke");
    assert_code(
        app.create_with(req).await,
        Code::FailedPrecondition,
        "no active device",
    );
}

async fn the_same_idempotency_key_twice_gives_one_challenge_and_one_push_per_device(app: TestApp) {
    let account = account();
    let _one = app.enroll(&account).await;
    let _two = app
        .enroll_with(&account, PhoneKey::ed25519(), pb::Platform::Apns)
        .await;
    let req = pb::CreateChallengeRequest {
        account_id: account.clone(),
        idempotency_key: "login-42".into(),
        ..Default::default()
    };

    let first = app.create_with(req.clone()).await.expect("first");
    let second = app.create_with(req).await.expect("retry");
    assert!(first.created);
    assert!(!second.created);
    let (a, b) = (
        first.challenge.expect("challenge"),
        second.challenge.expect("challenge"),
    );
    assert_eq!(a.challenge_id, b.challenge_id);
    assert_eq!(a.number, b.number);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushes = app.pushes_for(&a.challenge_id, 2).await;
    assert_eq!(pushes.len(), 2, "one push per device, none for the retry");
    assert_ne!(pushes[0].token, pushes[1].token);
}

async fn after_an_approval_every_other_device_gets_a_withdraw_push_for_the_same_challenge(
    app: TestApp,
) {
    let account = account();
    let mut first = app.enroll(&account).await;
    let _second = app.enroll(&account).await;
    let _third = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    app.approve(&mut first, &challenge).await.expect("approved");

    let pushes = app.pushes_for(&challenge.challenge_id, 5).await;
    let withdraws = pushes
        .iter()
        .filter(|p| p.kind == PushKind::Withdraw)
        .count();
    assert_eq!(
        withdraws, 2,
        "the two devices that did not answer: {pushes:?}"
    );
}

on_every_store!(
    an_enrolled_phone_approves_with_the_right_number_and_the_watcher_sees_snapshot_then_approved,
    the_signing_in_device_is_never_pushed_and_an_account_without_devices_gets_failed_precondition,
    choose_mode_offers_three_numbers_one_of_which_approves,
    a_denial_carries_its_reason_to_the_watcher_and_the_audit_trail,
    a_fraud_report_ends_the_challenge_and_reaches_the_security_event_stream,
    an_unanswered_challenge_expires_at_its_deadline_and_late_answers_are_refused,
    a_cancelled_challenge_tells_its_watcher_and_a_second_cancel_changes_nothing,
    a_watch_started_after_the_decision_gets_it_from_the_snapshot,
    the_same_idempotency_key_twice_gives_one_challenge_and_one_push_per_device,
    after_an_approval_every_other_device_gets_a_withdraw_push_for_the_same_challenge,
);
