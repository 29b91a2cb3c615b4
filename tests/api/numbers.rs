//! Number matching cannot be brute-forced (DESIGN.md guarantee 12): a wrong number ends the challenge
//! DENIED (after the configured attempts in TYPE mode, at once in CHOOSE mode), audited, cooled down,
//! withdrawn from the other phones and told to the watcher.

use crate::helpers::*;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::pb::device_request::Body;
use tonic::Code;

fn wrong_denial(events: &[pb::challenge_event::Kind]) -> bool {
    events.iter().any(|k| {
        matches!(k, pb::challenge_event::Kind::Denied(d) if d.reason() == pb::DenyReason::WrongNumber)
    })
}

async fn a_wrong_typed_number_ends_the_challenge_denied_and_withdraws_it(store: &str) {
    let app = spawn_app_on(store, |c| c.cooldown_base_secs = 30).await;
    let account = account();
    let mut phone = enroll_as(&app, &account, "token-answering").await;
    let _other = enroll_as(&app, &account, "token-other").await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let watch = app.watch(&challenge.challenge_id).await;

    let state = app
        .respond(
            &mut phone,
            &challenge.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            wrong(challenge.number),
        )
        .await
        .expect("a wrong number is an answer");
    assert_eq!(state, pb::ChallengeState::Denied);

    let events = drain(watch).await;
    assert!(wrong_denial(&events), "{events:?}");
    let ended = app.get(&challenge.challenge_id).await;
    assert_eq!(ended.deny_reason(), pb::DenyReason::WrongNumber);
    assert_eq!(ended.decided_by_device_id, phone.device_id);
    assert!(
        app.audit_details(&account)
            .await
            .contains(&(pb::AuditKind::ChallengeDenied, "wrong_number".into())),
        "audited as a denial for a wrong number"
    );
    // The prompt is withdrawn from the other phone only.
    let pushes = app.pushes_for(&challenge.challenge_id, 3).await;
    let withdrawn: Vec<&str> = pushes
        .iter()
        .filter(|p| p.kind == approval_relay::push::PushKind::Withdraw)
        .map(|p| p.token.as_str())
        .collect();
    assert_eq!(withdrawn, ["token-other"], "{pushes:?}");
    // And the account cools down as after any denial.
    let again = app
        .create_with(pb::CreateChallengeRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await;
    assert_code(again, Code::ResourceExhausted, "cooling_down");
}

/// A phone of `account` registered with a known push token.
async fn enroll_as(app: &TestApp, account: &str, token: &str) -> Phone {
    let ticket = app.ticket(account).await;
    let mut phone = Phone::new(PhoneKey::p256());
    let req = phone.enroll_request(
        &ticket,
        pb::Platform::Fcm,
        token,
        "com.example.app",
        "Phone",
    );
    phone.device_id = app
        .device
        .clone()
        .enroll(req)
        .await
        .expect("enroll")
        .into_inner()
        .device_id;
    phone
}

async fn tapping_a_wrong_choice_ends_the_challenge_so_tapping_every_choice_cannot_approve(
    app: TestApp,
) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Choose).await;
    let seen = app
        .device
        .clone()
        .get_challenge(phone.signed(Body::GetChallenge(pb::GetChallengeBody {
            challenge_id: challenge.challenge_id.clone(),
        })))
        .await
        .expect("details")
        .into_inner();
    let mut outcomes = Vec::new();
    for choice in &seen.number_choices {
        // A fatigued owner taps each choice in turn, the right one last.
        if *choice == challenge.number {
            continue;
        }
        outcomes.push(
            app.respond(
                &mut phone,
                &challenge.challenge_id,
                pb::Decision::Approve,
                pb::DenyReason::Unspecified,
                *choice,
            )
            .await,
        );
    }
    outcomes.push(app.approve(&mut phone, &challenge).await);
    assert_eq!(
        outcomes[0].as_ref().expect("the first wrong tap decides"),
        &pb::ChallengeState::Denied
    );
    for later in &outcomes[1..] {
        let status = later.as_ref().expect_err("nothing after the end");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    assert_eq!(
        app.get(&challenge.challenge_id).await.state(),
        pb::ChallengeState::Denied
    );
}

async fn type_mode_allows_the_configured_attempts_then_denies(store: &str) {
    let app = spawn_app_on(store, |c| c.type_number_attempts = 2).await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let bad = wrong(challenge.number);
    let first = app
        .respond(
            &mut phone,
            &challenge.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            bad,
        )
        .await;
    assert_code(first, Code::InvalidArgument, "1 attempt(s) left");
    assert_eq!(
        app.get(&challenge.challenge_id).await.state(),
        pb::ChallengeState::Pending
    );
    assert!(
        app.audit_details(&account)
            .await
            .contains(&(pb::AuditKind::RequestRefused, "wrong_number".into()))
    );
    let second = app
        .respond(
            &mut phone,
            &challenge.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            bad,
        )
        .await
        .expect("the last attempt decides");
    assert_eq!(second, pb::ChallengeState::Denied);

    // With attempts left, the right number still approves.
    let next = app.create(&account, pb::NumberMatchMode::Type).await;
    let _ = app
        .respond(
            &mut phone,
            &next.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            wrong(next.number),
        )
        .await;
    assert_eq!(
        app.approve(&mut phone, &next).await.expect("approve"),
        pb::ChallengeState::Approved
    );
}

async fn a_missing_number_or_one_where_none_is_asked_is_refused_and_changes_nothing(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let typed = app.create(&account, pb::NumberMatchMode::Type).await;
    let result = app
        .respond(
            &mut phone,
            &typed.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            0,
        )
        .await;
    assert_code(
        result,
        Code::InvalidArgument,
        "payload.respond.number: required",
    );
    assert_eq!(
        app.get(&typed.challenge_id).await.state(),
        pb::ChallengeState::Pending
    );

    let none = app.create(&account, pb::NumberMatchMode::None).await;
    let result = app
        .respond(
            &mut phone,
            &none.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            42,
        )
        .await;
    assert_code(
        result,
        Code::InvalidArgument,
        "payload.respond.number: must be 0",
    );
    assert_eq!(
        app.get(&none.challenge_id).await.state(),
        pb::ChallengeState::Pending
    );
    // A phone may not claim the relay's own reason.
    let result = app
        .respond(
            &mut phone,
            &none.challenge_id,
            pb::Decision::Deny,
            pb::DenyReason::WrongNumber,
            0,
        )
        .await;
    assert_code(result, Code::InvalidArgument, "payload.respond.deny_reason");
    assert_eq!(
        app.approve(&mut phone, &none).await.expect("approve"),
        pb::ChallengeState::Approved
    );
}

on_every_store!(
    tapping_a_wrong_choice_ends_the_challenge_so_tapping_every_choice_cannot_approve,
    a_missing_number_or_one_where_none_is_asked_is_refused_and_changes_nothing,
);

per_store!(
    a_wrong_typed_number_ends_the_challenge_denied_and_withdraws_it,
    type_mode_allows_the_configured_attempts_then_denies
);
