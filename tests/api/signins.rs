//! Known sign-in devices and places: what EvaluateSignIn, CreateChallenge and the phone's prompt say of a
//! sign-in, and what makes one known (an approval) or forgotten (a fraud report, the window, the
//! backend).

use crate::helpers::*;
use approval_relay::pb;
use approval_relay::pb::device_request::Body;
use std::time::Duration;
use tonic::Code;

pub fn context(device: &str, ip: &str, location: &str) -> pb::LoginContext {
    pb::LoginContext {
        ip: ip.into(),
        location: location.into(),
        sign_in_device_key: device.into(),
        ..Default::default()
    }
}

pub async fn evaluate(app: &TestApp, account: &str, ctx: pb::LoginContext) -> pb::SignInEvaluation {
    app.challenges
        .clone()
        .evaluate_sign_in(pb::EvaluateSignInRequest {
            account_id: account.into(),
            login_context: Some(ctx),
        })
        .await
        .expect("evaluate")
        .into_inner()
        .evaluation
        .expect("evaluation")
}

/// The account's known sign-ins as ListKnownSignIns gives them, as (kind, value), sorted.
async fn known_listed(app: &TestApp, account: &str) -> Vec<(pb::KnownSignInKind, String)> {
    let list = app
        .challenges
        .clone()
        .list_known_sign_ins(pb::ListKnownSignInsRequest {
            account_id: account.to_owned(),
        })
        .await
        .expect("list")
        .into_inner()
        .known;
    let mut listed: Vec<_> = list.iter().map(|k| (k.kind(), k.value.clone())).collect();
    listed.sort();
    listed
}

fn familiarity(s: &Option<pb::SignInSignal>) -> pb::Familiarity {
    s.as_ref().expect("signal").familiarity()
}

/// Creates a challenge for this sign-in: its response, and the challenge as the phone is shown it.
async fn create_seen(
    app: &TestApp,
    phone: &mut approval_relay::device_sim::Phone,
    account: &str,
    ctx: pb::LoginContext,
) -> (pb::CreateChallengeResponse, pb::DeviceChallenge) {
    let created = app
        .create_with(pb::CreateChallengeRequest {
            account_id: account.into(),
            login_context: Some(ctx),
            number_match_mode: pb::NumberMatchMode::None.into(),
            ..Default::default()
        })
        .await
        .expect("create");
    let id = created
        .challenge
        .as_ref()
        .expect("challenge")
        .challenge_id
        .clone();
    let req = phone.signed(Body::GetChallenge(pb::GetChallengeBody {
        challenge_id: id,
    }));
    let seen = app
        .device
        .clone()
        .get_challenge(req)
        .await
        .expect("phone view")
        .into_inner();
    (created, seen)
}

async fn decide(
    app: &TestApp,
    phone: &mut approval_relay::device_sim::Phone,
    c: &pb::Challenge,
    decision: pb::Decision,
) -> pb::ChallengeState {
    let reason = match decision {
        pb::Decision::Deny => pb::DenyReason::NotMe,
        _ => pb::DenyReason::Unspecified,
    };
    app.respond(phone, &c.challenge_id, decision, reason, 0)
        .await
        .expect("decision")
}

/// Creates a challenge for this sign-in and approves it from `phone`: the sign-in becomes known.
pub async fn approve_sign_in(
    app: &TestApp,
    phone: &mut approval_relay::device_sim::Phone,
    account: &str,
    ctx: pb::LoginContext,
) {
    let (created, _) = create_seen(app, phone, account, ctx).await;
    let state = decide(
        app,
        phone,
        &created.challenge.expect("challenge"),
        pb::Decision::Approve,
    )
    .await;
    assert_eq!(state, pb::ChallengeState::Approved);
}

async fn a_first_sign_in_is_new_and_an_approval_makes_its_device_and_place_known(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let laptop = context("laptop-cookie-1", "203.0.113.7", "Lyon, France");

    let first = evaluate(&app, &account, laptop.clone()).await;
    assert_eq!(familiarity(&first.device), pb::Familiarity::New);
    assert_eq!(familiarity(&first.place), pb::Familiarity::New);
    assert_eq!(first.recommendation(), pb::SignInRecommendation::Challenge);
    assert_eq!(first.pushable_devices, 1);
    assert!(!first.offline_code_available);

    let (created, seen) = create_seen(&app, &mut phone, &account, laptop.clone()).await;
    let evaluation = created.evaluation.expect("create carries the evaluation");
    assert_eq!(familiarity(&evaluation.device), pb::Familiarity::New);
    assert_eq!(
        seen.sign_in_device(),
        pb::Familiarity::New,
        "first sign-in from this device"
    );
    assert_eq!(
        seen.sign_in_place(),
        pb::Familiarity::New,
        "unfamiliar location"
    );
    let shown = seen.login_context.expect("context");
    assert!(
        shown.sign_in_device_key.is_empty(),
        "the backend's cookie id is never shown to phones"
    );
    let challenge = created.challenge.expect("challenge");
    assert_eq!(
        decide(&app, &mut phone, &challenge, pb::Decision::Approve).await,
        pb::ChallengeState::Approved
    );

    // Same device, another address in the same /24, the location typed differently.
    let again = context("laptop-cookie-1", "203.0.113.200", "  lyon,   FRANCE ");
    let known = evaluate(&app, &account, again.clone()).await;
    assert_eq!(familiarity(&known.device), pb::Familiarity::Known);
    assert_eq!(familiarity(&known.place), pb::Familiarity::Known);
    assert_eq!(known.recommendation(), pb::SignInRecommendation::Allow);
    let device = known.device.expect("device");
    assert!(device.first_seen_unix_ms > 0 && device.last_seen_unix_ms >= device.first_seen_unix_ms);
    let (_, seen) = create_seen(&app, &mut phone, &account, again).await;
    assert_eq!(seen.sign_in_device(), pb::Familiarity::Known);
    assert_eq!(seen.sign_in_place(), pb::Familiarity::Known);

    // Another network in the same city is a new place; the device stays known.
    let elsewhere = evaluate(
        &app,
        &account,
        context("laptop-cookie-1", "198.51.100.4", "Lyon, France"),
    )
    .await;
    assert_eq!(familiarity(&elsewhere.device), pb::Familiarity::Known);
    assert_eq!(familiarity(&elsewhere.network), pb::Familiarity::New);
    assert_eq!(familiarity(&elsewhere.location), pb::Familiarity::Known);
    assert_eq!(familiarity(&elsewhere.place), pb::Familiarity::New);
    assert_eq!(
        elsewhere.recommendation(),
        pb::SignInRecommendation::Challenge
    );

    let listed = known_listed(&app, &account).await;
    assert_eq!(
        listed,
        vec![
            (pb::KnownSignInKind::Device, "laptop-cookie-1".to_owned()),
            (pb::KnownSignInKind::Network, "203.0.113.0/24".to_owned()),
            (pb::KnownSignInKind::Location, "lyon, france".to_owned()),
        ]
    );
}

async fn denials_never_make_a_sign_in_known_and_a_fraud_report_forgets_them_all(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let home = context("tablet-7", "2001:db8:1:2::9", "Paris");
    approve_sign_in(&app, &mut phone, &account, home.clone()).await;
    assert_eq!(
        evaluate(
            &app,
            &account,
            context("tablet-7", "2001:db8:1:ffff::1", "paris")
        )
        .await
        .recommendation(),
        pb::SignInRecommendation::Allow,
        "the same IPv6 /48"
    );

    let stranger = context("stranger-1", "192.0.2.1", "Lagos");
    let (created, _) = create_seen(&app, &mut phone, &account, stranger.clone()).await;
    decide(
        &app,
        &mut phone,
        &created.challenge.expect("c"),
        pb::Decision::Deny,
    )
    .await;
    let after_denial = evaluate(&app, &account, stranger.clone()).await;
    assert_eq!(familiarity(&after_denial.device), pb::Familiarity::New);
    assert_eq!(familiarity(&after_denial.place), pb::Familiarity::New);

    // A cancelled one does not either.
    let (created, _) = create_seen(&app, &mut phone, &account, stranger.clone()).await;
    app.challenges
        .clone()
        .cancel_challenge(pb::CancelChallengeRequest {
            challenge_id: created.challenge.expect("c").challenge_id,
        })
        .await
        .expect("cancel");
    assert_eq!(
        familiarity(&evaluate(&app, &account, stranger.clone()).await.device),
        pb::Familiarity::New
    );

    let (created, _) = create_seen(&app, &mut phone, &account, stranger).await;
    decide(
        &app,
        &mut phone,
        &created.challenge.expect("c"),
        pb::Decision::ReportFraud,
    )
    .await;
    let forgotten = evaluate(&app, &account, home).await;
    assert_eq!(
        familiarity(&forgotten.device),
        pb::Familiarity::New,
        "a fraud report forgets every device"
    );
    assert_eq!(familiarity(&forgotten.place), pb::Familiarity::New);
    let audit = app.audit_details(&account).await;
    assert!(
        audit.contains(&(
            pb::AuditKind::KnownSignInsForgotten,
            "fraud_reported".to_owned()
        )),
        "{audit:?}"
    );
}

async fn the_backend_forgets_one_known_sign_in_or_all_and_bad_requests_change_nothing(
    app: TestApp,
) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    approve_sign_in(
        &app,
        &mut phone,
        &account,
        context("pc-1", "203.0.113.7", "Lyon"),
    )
    .await;
    let forget = |req: pb::ForgetKnownSignInRequest| {
        let mut client = app.challenges.clone();
        async move {
            client
                .forget_known_sign_in(req)
                .await
                .map(|r| r.into_inner().forgotten)
        }
    };
    for (req, field) in [
        (
            pb::ForgetKnownSignInRequest {
                account_id: account.clone(),
                ..Default::default()
            },
            "kind:",
        ),
        (
            pb::ForgetKnownSignInRequest {
                account_id: account.clone(),
                kind: pb::KnownSignInKind::Device.into(),
                all: true,
                ..Default::default()
            },
            "all:",
        ),
        (
            pb::ForgetKnownSignInRequest {
                account_id: account.clone(),
                kind: 9,
                value: "x".into(),
                ..Default::default()
            },
            "kind:",
        ),
        (
            pb::ForgetKnownSignInRequest {
                account_id: account.clone(),
                kind: pb::KnownSignInKind::Device.into(),
                ..Default::default()
            },
            "value:",
        ),
    ] {
        assert_code(forget(req).await, Code::InvalidArgument, field);
    }
    assert_eq!(
        familiarity(
            &evaluate(&app, &account, context("pc-1", "", ""))
                .await
                .device
        ),
        pb::Familiarity::Known
    );
    let one = pb::ForgetKnownSignInRequest {
        account_id: account.clone(),
        kind: pb::KnownSignInKind::Location.into(),
        value: " LYON ".into(),
        ..Default::default()
    };
    assert_eq!(forget(one.clone()).await.expect("forget"), 1);
    assert_eq!(forget(one).await.expect("forget again"), 0);
    let e = evaluate(&app, &account, context("pc-1", "203.0.113.7", "Lyon")).await;
    assert_eq!(familiarity(&e.device), pb::Familiarity::Known);
    assert_eq!(familiarity(&e.location), pb::Familiarity::New);
    let all = pb::ForgetKnownSignInRequest {
        account_id: account.clone(),
        all: true,
        ..Default::default()
    };
    assert_eq!(forget(all).await.expect("forget all"), 2);
    assert_eq!(
        familiarity(
            &evaluate(&app, &account, context("pc-1", "", ""))
                .await
                .device
        ),
        pb::Familiarity::New
    );
    assert_code(
        app.challenges
            .clone()
            .evaluate_sign_in(pb::EvaluateSignInRequest {
                account_id: account.clone(),
                login_context: Some(context(&"k".repeat(129), "", "")),
            })
            .await,
        Code::InvalidArgument,
        "login_context.sign_in_device_key:",
    );
}

/// The remember window forgets a sign-in that was not approved again within it.
async fn a_known_sign_in_is_new_again_after_the_window(store: &str) {
    let app = spawn_app_on(store, |c| c.remember_sign_ins_secs = 2).await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    let ctx = context("short-1", "203.0.113.7", "Lyon");
    approve_sign_in(&app, &mut phone, &account, ctx.clone()).await;
    assert_eq!(
        evaluate(&app, &account, ctx.clone()).await.recommendation(),
        pb::SignInRecommendation::Allow
    );
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let later = evaluate(&app, &account, ctx).await;
    assert_eq!(familiarity(&later.device), pb::Familiarity::New);
    assert_eq!(familiarity(&later.place), pb::Familiarity::New);
    if let Some(redis) = &app.redis {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*known:{account}"))
            .query(&mut redis.connection())
            .expect("KEYS");
        assert!(keys.is_empty(), "the set expired with the window: {keys:?}");
    }
}

/// The caps of `known::remember` hold on every store: past 32 devices and 64 places (networks and
/// locations together) the least recently approved are dropped, and the key an approval marks stays.
async fn the_known_set_keeps_the_most_recent_devices_and_places_up_to_its_caps(store: &str) {
    let app = spawn_app_on(store, |c| c.account_rate_per_minute = 0).await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    // 66 approvals, each from a new device key and location on one network: 66 devices and 67 places
    // were seen, so 34 devices and 3 places (the oldest locations) are dropped.
    for i in 0..66 {
        let ctx = context(
            &format!("cap-dev-{i:02}"),
            "203.0.113.7",
            &format!("Town {i:02}"),
        );
        approve_sign_in(&app, &mut phone, &account, ctx).await;
        // Distinct last-seen times, so that "least recently seen" has no ties to break.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let listed = known_listed(&app, &account).await;
    let mut expected: Vec<(pb::KnownSignInKind, String)> = (34..66)
        .map(|i| (pb::KnownSignInKind::Device, format!("cap-dev-{i:02}")))
        .chain(std::iter::once((
            pb::KnownSignInKind::Network,
            "203.0.113.0/24".to_owned(),
        )))
        .chain((3..66).map(|i| (pb::KnownSignInKind::Location, format!("town {i:02}"))))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
}

on_every_store!(
    a_first_sign_in_is_new_and_an_approval_makes_its_device_and_place_known,
    denials_never_make_a_sign_in_known_and_a_fraud_report_forgets_them_all,
    the_backend_forgets_one_known_sign_in_or_all_and_bad_requests_change_nothing,
);

mod windows {
    use super::*;
    per_store!(
        a_known_sign_in_is_new_again_after_the_window,
        the_known_set_keeps_the_most_recent_devices_and_places_up_to_its_caps
    );
}
