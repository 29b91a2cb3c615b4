//! Only the owner's devices: forged, replayed, cross-account, revoked, wrong-number, late and second
//! answers are refused, audited, and change nothing.

use crate::helpers::*;
use approval_relay::device_sim::phone::now_ms;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::pb::device_request::Body;
use tonic::Code;

fn approve_body(challenge: &pb::Challenge) -> Body {
    Body::Respond(pb::RespondBody {
        challenge_id: challenge.challenge_id.clone(),
        decision: pb::Decision::Approve.into(),
        deny_reason: 0,
        number: challenge.number,
    })
}

async fn still_pending(app: &TestApp, challenge: &pb::Challenge) {
    assert_eq!(
        app.get(&challenge.challenge_id).await.state(),
        pb::ChallengeState::Pending,
        "nothing changed"
    );
}

async fn a_bad_signature_is_refused_audited_and_changes_nothing(app: TestApp) {
    let account = account();
    let phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;

    // A well-formed signature by the right key, but over other bytes.
    let mut forged = phone.signed_with(1, now_ms(), approve_body(&challenge));
    forged.signature = phone
        .signed_with(2, now_ms(), approve_body(&challenge))
        .signature;
    assert_code(
        app.device.clone().respond(forged).await,
        Code::Unauthenticated,
        "signature does not verify",
    );

    let mut tampered = phone.signed_with(1, now_ms(), approve_body(&challenge));
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 0x01;
    let result = app.device.clone().respond(tampered).await;
    assert!(result.is_err(), "a tampered payload must not verify");

    still_pending(&app, &challenge).await;
    let audit = app.audit_details(&account).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::RequestRefused && d == "bad_signature"),
        "{audit:?}"
    );
}

async fn a_signature_by_another_devices_key_is_refused(app: TestApp) {
    let account = account();
    let victim = app.enroll(&account).await;
    let attacker_key = PhoneKey::p256();
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;

    let impostor = Phone {
        key: attacker_key,
        device_id: victim.device_id.clone(),
        counter: 0,
    };
    let req = impostor.signed_with(1, now_ms(), approve_body(&challenge));
    assert_code(
        app.device.clone().respond(req).await,
        Code::Unauthenticated,
        "signature does not verify",
    );
    still_pending(&app, &challenge).await;
}

async fn a_device_of_another_account_cannot_see_or_answer_the_challenge(app: TestApp) {
    let (owner, stranger) = (account(), account());
    let _phone = app.enroll(&owner).await;
    let mut other = app.enroll(&stranger).await;
    let challenge = app.create(&owner, pb::NumberMatchMode::Type).await;

    assert_code(
        app.approve(&mut other, &challenge).await,
        Code::NotFound,
        "not found",
    );
    let req = other.signed(Body::GetChallenge(pb::GetChallengeBody {
        challenge_id: challenge.challenge_id.clone(),
    }));
    assert_code(
        app.device.clone().get_challenge(req).await,
        Code::NotFound,
        "not found",
    );
    still_pending(&app, &challenge).await;
    let audit = app.audit_details(&stranger).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::RequestRefused && d == "not_targeted"),
        "{audit:?}"
    );
}

async fn a_replayed_envelope_marks_the_device_a_suspected_clone_and_it_is_refused_from_then_on(
    app: TestApp,
) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;

    let list = phone.signed(Body::ListPending(pb::ListPendingBody {}));
    let pending = app
        .device
        .clone()
        .list_pending(list.clone())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(pending.challenges.len(), 1);
    assert_code(
        app.device.clone().list_pending(list).await,
        Code::PermissionDenied,
        "counter did not increase",
    );

    assert_code(
        app.approve(&mut phone, &challenge).await,
        Code::PermissionDenied,
        "suspected cloned",
    );
    still_pending(&app, &challenge).await;
    let device = app.devices(&account).await.remove(0);
    assert_eq!(device.state(), pb::DeviceState::SuspectedClone);
    assert!(
        app.audit_details(&account)
            .await
            .iter()
            .any(|(k, _)| *k == pb::AuditKind::CloneSuspected)
    );

    clone_reported(&app, &account, &phone.device_id).await;
    // A suspected clone is no longer pushed.
    assert_no_active_device(&app, &account).await;
}

/// Waits for the CLONE_SUSPECTED security event of `device` on `account`.
async fn clone_reported(app: &TestApp, account: &str, device: &str) {
    let clone_event = security_event(app, account, pb::SecurityEventKind::CloneSuspected).await;
    assert_eq!(clone_event.device_id, device);
}

async fn a_key_that_switches_back_to_its_previous_push_token_is_a_suspected_clone(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let update = |phone: &mut approval_relay::device_sim::Phone, token: &str| {
        phone.signed(Body::UpdatePushToken(pb::UpdatePushTokenBody {
            push_token: token.into(),
            ..Default::default()
        }))
    };
    let original = format!("token-original-{}", account);
    for token in [original.as_str(), "token-phone-b", "token-phone-b"] {
        app.device
            .clone()
            .update_push_token(update(&mut phone, token))
            .await
            .expect("a new token, or the same one again, is fine");
    }
    // Back to the token it left minutes ago: a second phone with the same key is taking turns.
    assert_code(
        app.device
            .clone()
            .update_push_token(update(&mut phone, &original))
            .await,
        Code::PermissionDenied,
        "push token switched back",
    );
    let device = app.devices(&account).await.remove(0);
    assert_eq!(device.state(), pb::DeviceState::SuspectedClone);
    assert_code(
        app.device
            .clone()
            .list_pending(phone.signed(Body::ListPending(pb::ListPendingBody {})))
            .await,
        Code::PermissionDenied,
        "suspected cloned",
    );
    assert!(
        app.audit_details(&account)
            .await
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::CloneSuspected && d.contains("push token"))
    );
    clone_reported(&app, &account, &phone.device_id).await;
}

async fn a_revoked_device_is_refused(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let _other = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    // A signed request first: the replica now holds the device as it read it (device_cache), and the
    // revocation must count all the same.
    assert_eq!(app.list_pending(&mut phone).await.len(), 1);
    let revoke = pb::RevokeDeviceRequest {
        account_id: account.clone(),
        device_id: phone.device_id.clone(),
    };
    let revoked = app
        .registry
        .clone()
        .revoke_device(revoke)
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(
        revoked.device.expect("device").state(),
        pb::DeviceState::Revoked
    );

    assert_code(
        app.approve(&mut phone, &challenge).await,
        Code::PermissionDenied,
        "revoked",
    );
    // Reading it is refused the same way (the counter rule and the read are one store step on Redis).
    let get = phone.signed(Body::GetChallenge(pb::GetChallengeBody {
        challenge_id: challenge.challenge_id.clone(),
    }));
    assert_code(
        app.device.clone().get_challenge(get).await,
        Code::PermissionDenied,
        "revoked",
    );
    still_pending(&app, &challenge).await;
}

async fn a_replayed_get_challenge_marks_a_suspected_clone_that_is_shown_nothing_more(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let get = |phone: &mut approval_relay::device_sim::Phone| {
        phone.signed(Body::GetChallenge(pb::GetChallengeBody {
            challenge_id: challenge.challenge_id.clone(),
        }))
    };
    let first = get(&mut phone);
    let seen = app
        .device
        .clone()
        .get_challenge(first.clone())
        .await
        .expect("the first read")
        .into_inner();
    assert_eq!(seen.challenge_id, challenge.challenge_id);
    assert_code(
        app.device.clone().get_challenge(first).await,
        Code::PermissionDenied,
        "counter did not increase",
    );
    assert_code(
        app.device.clone().get_challenge(get(&mut phone)).await,
        Code::PermissionDenied,
        "suspected cloned",
    );
    let device = app.devices(&account).await.remove(0);
    assert_eq!(device.state(), pb::DeviceState::SuspectedClone);
    clone_reported(&app, &account, &phone.device_id).await;
    still_pending(&app, &challenge).await;
}

async fn a_second_decision_after_the_first_is_refused(app: TestApp) {
    let account = account();
    let mut first = app.enroll(&account).await;
    let mut second = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    app.approve(&mut first, &challenge).await.expect("approved");

    let result = app.respond(
        &mut second,
        &challenge.challenge_id,
        pb::Decision::ReportFraud,
        pb::DenyReason::Unspecified,
        0,
    );
    assert_code(
        result.await,
        Code::FailedPrecondition,
        "already ended (approved)",
    );
    let after = app.get(&challenge.challenge_id).await;
    assert_eq!(after.state(), pb::ChallengeState::Approved);
    assert_eq!(after.decided_by_device_id, first.device_id);
}

async fn a_timestamp_outside_the_window_is_refused(app: TestApp) {
    let account = account();
    let phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let req = phone.signed_with(1, now_ms() - 3_600_000, approve_body(&challenge));
    assert_code(
        app.device.clone().respond(req).await,
        Code::Unauthenticated,
        "timestamp",
    );
    still_pending(&app, &challenge).await;
}

async fn an_enrollment_ticket_works_once(app: TestApp) {
    let account = account();
    let ticket = app.ticket(&account).await;
    let phone = Phone::new(PhoneKey::p256());
    let req = phone.enroll_request(&ticket, pb::Platform::Fcm, "tok", "com.example.a", "A");
    app.device.clone().enroll(req).await.expect("first use");
    let again = Phone::new(PhoneKey::ed25519()).enroll_request(
        &ticket,
        pb::Platform::Fcm,
        "tok2",
        "com.example.a",
        "B",
    );
    assert_code(
        app.device.clone().enroll(again).await,
        Code::PermissionDenied,
        "ticket is unknown, used or expired",
    );
    assert_eq!(app.devices(&account).await.len(), 1);
}

async fn an_enrollment_whose_proof_is_not_signed_by_the_enrolled_key_is_refused(app: TestApp) {
    let account = account();
    let ticket = app.ticket(&account).await;
    let phone = Phone::new(PhoneKey::p256());
    let mut req = phone.enroll_request(&ticket, pb::Platform::Fcm, "tok", "com.example.a", "A");
    req.signature = PhoneKey::p256().sign(&req.payload);
    assert_code(
        app.device.clone().enroll(req).await,
        Code::Unauthenticated,
        "signature does not verify",
    );
    assert!(app.devices(&account).await.is_empty());
}

on_every_store!(
    a_bad_signature_is_refused_audited_and_changes_nothing,
    a_signature_by_another_devices_key_is_refused,
    a_device_of_another_account_cannot_see_or_answer_the_challenge,
    a_replayed_envelope_marks_the_device_a_suspected_clone_and_it_is_refused_from_then_on,
    a_revoked_device_is_refused,
    a_replayed_get_challenge_marks_a_suspected_clone_that_is_shown_nothing_more,
    a_key_that_switches_back_to_its_previous_push_token_is_a_suspected_clone,
    a_second_decision_after_the_first_is_refused,
    a_timestamp_outside_the_window_is_refused,
    an_enrollment_ticket_works_once,
    an_enrollment_whose_proof_is_not_signed_by_the_enrolled_key_is_refused,
);
