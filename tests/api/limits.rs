//! No bombing (DESIGN.md guarantee 6): a bounded number of pending challenges, a cool-down after denials
//! and expiries that an approval resets, a mute after a fraud report; refusals are RESOURCE_EXHAUSTED with
//! a retry-after, audited, and reported to the security stream. On every store.

use crate::helpers::*;
use approval_relay::pb;
use std::time::Duration;
use tonic::Code;

fn retry_after(status: &tonic::Status) -> u64 {
    status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after")
}

async fn refused(app: &TestApp, account: &str, reason: &str) -> u64 {
    let req = pb::CreateChallengeRequest {
        account_id: account.into(),
        ..Default::default()
    };
    match app.create_with(req).await {
        Ok(c) => panic!("expected a refusal ({reason}), got {c:?}"),
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains(reason), "{status:?}");
            retry_after(&status)
        }
    }
}

async fn eleven_in_a_row_the_second_is_refused(store: &str) {
    let app = spawn_app_on(store, |c| {
        c.max_pending_per_account = 1;
    })
    .await;
    let account = account();
    let _phone = app.enroll(&account).await;
    let first = app.create(&account, pb::NumberMatchMode::Type).await;
    for _ in 0..10 {
        let wait = refused(&app, &account, "too_many_pending").await;
        assert!(
            (1..=60).contains(&wait),
            "retry after the first one's deadline: {wait}"
        );
    }
    let audit = app.audit_details(&account).await;
    assert_eq!(
        audit
            .iter()
            .filter(|(k, d)| *k == pb::AuditKind::RateLimited && d == "too_many_pending")
            .count(),
        10
    );
    let tripped = security_event(&app, &account, pb::SecurityEventKind::LimitTripped).await;
    assert_eq!(tripped.detail, "too_many_pending");

    let cancel = pb::CancelChallengeRequest {
        challenge_id: first.challenge_id,
    };
    app.challenges
        .clone()
        .cancel_challenge(cancel)
        .await
        .expect("cancel");
    app.create(&account, pb::NumberMatchMode::Type).await;
}

async fn denials_grow_the_cooldown_and_an_approval_resets_it(store: &str) {
    let app = spawn_app_on(store, |c| {
        c.max_pending_per_account = 1;
        c.cooldown_base_secs = 1;
        c.cooldown_max_secs = 60;
    })
    .await;
    let account = account();
    let mut phone = app.enroll(&account).await;

    let c = app.create(&account, pb::NumberMatchMode::Type).await;
    app.respond(
        &mut phone,
        &c.challenge_id,
        pb::Decision::Deny,
        pb::DenyReason::NotMe,
        0,
    )
    .await
    .expect("deny");
    assert_eq!(refused(&app, &account, "cooling_down").await, 1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let c = app.create(&account, pb::NumberMatchMode::Type).await;
    app.respond(
        &mut phone,
        &c.challenge_id,
        pb::Decision::Deny,
        pb::DenyReason::NotMe,
        0,
    )
    .await
    .expect("deny");
    assert_eq!(
        refused(&app, &account, "cooling_down").await,
        2,
        "the cool-down doubled"
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let c = app.create(&account, pb::NumberMatchMode::Type).await;
    app.approve(&mut phone, &c).await.expect("approve");
    let again = app.create(&account, pb::NumberMatchMode::Type).await;
    app.approve(&mut phone, &again)
        .await
        .expect("no cool-down after an approval");
}

async fn a_fraud_report_mutes_the_account(store: &str) {
    let app = spawn_app_on(store, |c| c.fraud_mute_secs = 600).await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    let c = app.create(&account, pb::NumberMatchMode::Type).await;
    app.respond(
        &mut phone,
        &c.challenge_id,
        pb::Decision::ReportFraud,
        pb::DenyReason::Unspecified,
        0,
    )
    .await
    .expect("fraud");
    let wait = refused(&app, &account, "muted_after_fraud_report").await;
    assert!(
        (590..=600).contains(&wait),
        "muted for the configured time: {wait}"
    );
}

async fn supersede_cancels_the_oldest_pending_challenge(store: &str) {
    let app = spawn_app_on(store, |c| {
        c.max_pending_per_account = 2;
        c.supersede_pending = true;
    })
    .await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    let first = app.create(&account, pb::NumberMatchMode::Type).await;
    let second = app.create(&account, pb::NumberMatchMode::Type).await;
    let first_watch = app.watch(&first.challenge_id).await;
    let third = app.create(&account, pb::NumberMatchMode::Type).await;

    let events = drain(first_watch).await;
    assert!(
        matches!(events.last(), Some(pb::challenge_event::Kind::Cancelled(_))),
        "the oldest ends CANCELLED: {events:?}"
    );
    assert_eq!(
        app.get(&second.challenge_id).await.state(),
        pb::ChallengeState::Pending
    );
    assert_eq!(
        app.get(&third.challenge_id).await.state(),
        pb::ChallengeState::Pending
    );
    let pushes = app.pushes_for(&first.challenge_id, 2).await;
    assert!(
        pushes
            .iter()
            .any(|m| m.kind == approval_relay::push::PushKind::Withdraw),
        "the superseded prompt is withdrawn: {pushes:?}"
    );
    let audit = app.audit_details(&account).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::ChallengeCancelled && d == "superseded"),
        "{audit:?}"
    );
    assert_code(
        app.respond(
            &mut phone,
            &first.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            first.number,
        )
        .await,
        Code::FailedPrecondition,
        "",
    );
    app.approve(&mut phone, &third)
        .await
        .expect("the newest is answerable");
}

async fn supersede_changes_nothing_when_a_limit_refuses(store: &str) {
    let app = spawn_app_on(store, |c| {
        c.max_pending_per_account = 1;
        c.supersede_pending = true;
        c.account_rate_per_minute = 1;
        c.account_rate_burst = 1;
    })
    .await;
    let account = account();
    let _phone = app.enroll(&account).await;
    let first = app.create(&account, pb::NumberMatchMode::Type).await;
    refused(&app, &account, "account_rate").await;
    assert_eq!(
        app.get(&first.challenge_id).await.state(),
        pb::ChallengeState::Pending,
        "a refused create supersedes nothing"
    );
}

/// A create from `ip` for `account`.
fn from_ip(account: &str, ip: &str) -> pb::CreateChallengeRequest {
    pb::CreateChallengeRequest {
        account_id: account.into(),
        login_context: Some(pb::LoginContext {
            ip: ip.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn the_account_bucket_allows_its_burst_then_refuses(store: &str) {
    let app = spawn_app_on(store, |c| {
        c.account_rate_per_minute = 6;
        c.account_rate_burst = 3;
    })
    .await;
    let account = account();
    let _phone = app.enroll(&account).await;
    for _ in 0..3 {
        app.create_with(from_ip(&account, "203.0.113.7"))
            .await
            .expect("within the burst");
    }
    // 6 per minute: the next token is 10 s away.
    let wait = refused(&app, &account, "account_rate").await;
    assert!((9..=10).contains(&wait), "retry after {wait} s");
    let audit = app.audit_details(&account).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::RateLimited && d == "account_rate"),
        "{audit:?}"
    );
    // Another account is not affected.
    let other = crate::helpers::account();
    let _other_phone = app.enroll(&other).await;
    app.create_with(from_ip(&other, "203.0.113.7"))
        .await
        .expect("another account has its own bucket");
}

async fn one_source_address_is_limited_across_accounts(store: &str) {
    let app = spawn_app_on(store, |c| {
        c.source_rate_per_minute = 1;
        c.source_rate_burst = 2;
    })
    .await;
    // A unique documentation-range address per run, so parallel runs do not share the bucket.
    let ip = format!(
        "2001:db8:{:x}:{:x}::7",
        rand::random::<u16>(),
        rand::random::<u16>()
    );
    let mut accounts = Vec::new();
    for _ in 0..3 {
        let account = account();
        let _phone = app.enroll(&account).await;
        accounts.push(account);
    }
    for account in &accounts[..2] {
        app.create_with(from_ip(account, &ip))
            .await
            .expect("within the source's burst");
    }
    let refusal = app
        .create_with(from_ip(&accounts[2], &ip))
        .await
        .expect_err("a third account from the same address");
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert!(refusal.message().contains("source_rate"), "{refusal:?}");
    assert!((59..=60).contains(&retry_after(&refusal)), "{refusal:?}");
    let audit = app.audit_details(&accounts[2]).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::RateLimited && d == "source_rate"),
        "{audit:?}"
    );
    // The same /64 is the same source; another address is not.
    let neighbour = ip.replace("::7", "::8");
    assert!(
        app.create_with(from_ip(&accounts[2], &neighbour))
            .await
            .is_err()
    );
    app.create_with(from_ip(&accounts[2], "198.51.100.77"))
        .await
        .expect("another source has its own bucket");
}

per_store!(
    eleven_in_a_row_the_second_is_refused,
    denials_grow_the_cooldown_and_an_approval_resets_it,
    a_fraud_report_mutes_the_account,
    the_account_bucket_allows_its_burst_then_refuses,
    one_source_address_is_limited_across_accounts,
    supersede_cancels_the_oldest_pending_challenge,
    supersede_changes_nothing_when_a_limit_refuses
);
