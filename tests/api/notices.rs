//! Notices to the owner's other devices: after a fraud report, a clone suspicion, an enrollment, and a
//! sign-in the backend reports; the push carries only the notice id, the phone fetches the rest over the
//! signed device API, and one signed tap revokes what the notice is about. On every store.

use crate::helpers::*;
use approval_relay::device_sim::Phone;
use approval_relay::pb;
use approval_relay::pb::device_request::Body;
use approval_relay::push::{PushKind, PushMessage};
use tonic::Code;

async fn notices(app: &TestApp, phone: &mut Phone) -> Vec<pb::DeviceNotice> {
    let req = phone.signed(Body::ListNotices(pb::ListNoticesBody {}));
    app.device
        .clone()
        .list_notices(req)
        .await
        .expect("list notices")
        .into_inner()
        .notices
}

/// The newest notice of `kind` that `phone` was sent.
async fn notice_of(app: &TestApp, phone: &mut Phone, kind: pb::NoticeKind) -> pb::DeviceNotice {
    notices(app, phone)
        .await
        .into_iter()
        .find(|n| n.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind:?} notice for {}", phone.device_id))
}

async fn get_notice(
    app: &TestApp,
    phone: &mut Phone,
    id: &str,
) -> Result<pb::DeviceNotice, tonic::Status> {
    let req = phone.signed(Body::GetNotice(pb::GetNoticeBody {
        notice_id: id.into(),
    }));
    app.device
        .clone()
        .get_notice(req)
        .await
        .map(tonic::Response::into_inner)
}

async fn revoke_from(
    app: &TestApp,
    phone: &mut Phone,
    id: &str,
) -> Result<pb::RevokeFromNoticeResponse, tonic::Status> {
    let req = phone.signed(Body::RevokeFromNotice(pb::RevokeFromNoticeBody {
        notice_id: id.into(),
    }));
    app.device
        .clone()
        .revoke_from_notice(req)
        .await
        .map(tonic::Response::into_inner)
}

/// The notice pushes the sink recorded for a notice, once there are `n`.
async fn notice_pushes(app: &TestApp, id: &str, n: usize) -> Vec<PushMessage> {
    let pushes = app.pushes_for(id, n).await;
    assert!(
        pushes.iter().all(|m| m.kind == PushKind::Notice),
        "{pushes:?}"
    );
    pushes
}

async fn a_fraud_report_reaches_the_backend_mutes_the_account_and_tells_the_other_devices(
    store: &str,
) {
    let app = spawn_app_on(store, |c| c.fraud_mute_secs = 600).await;
    let account = account();
    let mut reporter = app.enroll(&account).await;
    let mut second = app.enroll(&account).await;
    let mut third = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    app.respond(
        &mut reporter,
        &challenge.challenge_id,
        pb::Decision::ReportFraud,
        pb::DenyReason::Unspecified,
        0,
    )
    .await
    .expect("fraud report");

    let event = security_event(&app, &account, pb::SecurityEventKind::FraudReported).await;
    assert_eq!(event.challenge_id, challenge.challenge_id);
    let muted = app
        .create_with(pb::CreateChallengeRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await
        .expect_err("muted after a fraud report");
    assert_eq!(muted.code(), Code::ResourceExhausted, "{muted:?}");

    let notice = notice_of(&app, &mut second, pb::NoticeKind::FraudReported).await;
    assert_eq!(notice.challenge_id, challenge.challenge_id);
    let about = notice.device.clone().expect("the reporting device");
    assert_eq!(about.device_id, reporter.device_id);
    assert!(!notice.revocable, "a fraud report has nothing to revoke");
    let same = notice_of(&app, &mut third, pb::NoticeKind::FraudReported).await;
    assert_eq!(same.notice_id, notice.notice_id, "one notice for all");
    assert_eq!(
        notice_pushes(&app, &notice.notice_id, 2).await.len(),
        2,
        "both other devices were pushed the notice"
    );
    assert!(
        notices(&app, &mut reporter)
            .await
            .iter()
            .all(|n| n.kind() != pb::NoticeKind::FraudReported),
        "the reporter is not told of its own report"
    );
    assert_code(
        get_notice(&app, &mut reporter, &notice.notice_id).await,
        Code::NotFound,
        "notice",
    );
    assert_code(
        revoke_from(&app, &mut second, &notice.notice_id).await,
        Code::FailedPrecondition,
        "nothing to revoke",
    );
}

async fn a_new_device_is_announced_and_one_tap_revokes_it(app: TestApp) {
    let account = account();
    let mut first = app.enroll(&account).await;
    let mut added = app.enroll(&account).await;
    let enrolled = security_event(&app, &account, pb::SecurityEventKind::DeviceEnrolled).await;
    assert_eq!(enrolled.account_id, account);

    let notice = notice_of(&app, &mut first, pb::NoticeKind::NewDevice).await;
    assert_eq!(
        notice.device.as_ref().map(|d| d.device_id.as_str()),
        Some(added.device_id.as_str())
    );
    assert_eq!(
        notice.device.as_ref().map(|d| d.display_name.as_str()),
        Some("Test phone")
    );
    assert!(notice.revocable);
    assert_eq!(notice_pushes(&app, &notice.notice_id, 1).await.len(), 1);
    let fetched = get_notice(&app, &mut first, &notice.notice_id)
        .await
        .expect("the pushed id fetches the notice");
    assert_eq!(fetched, notice);
    assert_code(
        revoke_from(&app, &mut added, &notice.notice_id).await,
        Code::NotFound,
        "notice",
    );

    let revoked = revoke_from(&app, &mut first, &notice.notice_id)
        .await
        .expect("one-tap revoke");
    assert_eq!(revoked.revoked_device_id, added.device_id);
    let event = security_event(&app, &account, pb::SecurityEventKind::DeviceRevoked).await;
    assert_eq!(event.device_id, added.device_id);
    let states: Vec<_> = app
        .devices(&account)
        .await
        .iter()
        .map(|d| (d.device_id.clone(), d.state()))
        .collect();
    assert!(states.contains(&(added.device_id.clone(), pb::DeviceState::Revoked)));
    assert!(states.contains(&(first.device_id.clone(), pb::DeviceState::Active)));
    assert_code(
        get_notice(&app, &mut added, &notice.notice_id).await,
        Code::PermissionDenied,
        "revoked",
    );
    let audit = app.audit_details(&account).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::NoticeSent && d.starts_with("new_device ")),
        "{audit:?}"
    );
    let again = revoke_from(&app, &mut first, &notice.notice_id)
        .await
        .expect("revoking twice is not an error");
    assert_eq!(again.revoked_device_id, added.device_id);
}

async fn a_suspected_clone_is_announced_and_can_be_revoked_for_good(app: TestApp) {
    let account = account();
    let mut cloned = app.enroll(&account).await;
    let mut other = app.enroll(&account).await;
    let list = cloned.signed(Body::ListPending(pb::ListPendingBody {}));
    app.device
        .clone()
        .list_pending(list.clone())
        .await
        .expect("first use");
    assert_code(
        app.device.clone().list_pending(list).await,
        Code::PermissionDenied,
        "counter",
    );

    let notice = notice_of(&app, &mut other, pb::NoticeKind::CloneSuspected).await;
    let about = notice.device.clone().expect("the suspected device");
    assert_eq!(about.device_id, cloned.device_id);
    assert_eq!(about.state(), pb::DeviceState::SuspectedClone);
    assert!(notice.revocable);
    notice_pushes(&app, &notice.notice_id, 1).await;
    assert_eq!(
        revoke_from(&app, &mut other, &notice.notice_id)
            .await
            .expect("revoke the clone")
            .revoked_device_id,
        cloned.device_id
    );
    let state = app
        .devices(&account)
        .await
        .into_iter()
        .find(|d| d.device_id == cloned.device_id)
        .map(|d| d.state());
    assert_eq!(state, Some(pb::DeviceState::Revoked));
}

async fn a_sign_in_notice_is_private_in_the_push_and_revocable_by_the_owner(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let laptop = app.enroll(&account).await;
    let context = pb::LoginContext {
        ip: "203.0.113.9".into(),
        location: "Lyon, France".into(),
        user_agent: "Firefox 140 on Linux".into(),
        signing_in_device_name: "Work laptop".into(),
        signing_in_device_id: laptop.device_id.clone(),
        ..Default::default()
    };
    // A sign-in approved earlier made this laptop known.
    let known_sign_in = crate::signins::context("laptop-cookie-9", "203.0.113.9", "Lyon, France");
    let earlier = app
        .create_with(pb::CreateChallengeRequest {
            account_id: account.clone(),
            login_context: Some(known_sign_in.clone()),
            number_match_mode: pb::NumberMatchMode::None.into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .challenge
        .expect("challenge");
    app.approve(&mut phone, &earlier).await.expect("approve");
    assert_eq!(
        crate::signins::evaluate(&app, &account, known_sign_in.clone())
            .await
            .recommendation(),
        pb::SignInRecommendation::Allow
    );
    let sent = app
        .challenges
        .clone()
        .send_sign_in_notice(pb::SendSignInNoticeRequest {
            account_id: account.clone(),
            login_context: Some(context.clone()),
            sign_in_id: "session-42".into(),
        })
        .await
        .expect("sign-in notice")
        .into_inner();
    assert_eq!(
        sent.targeted_device_ids,
        vec![phone.device_id.clone()],
        "the device signing in is not notified"
    );
    let pushes = notice_pushes(&app, &sent.notice_id, 1).await;
    assert_eq!(pushes.len(), 1);
    let shown = format!("{pushes:?}");
    for private in [
        "203.0.113.9",
        "Lyon",
        "Firefox",
        "Work laptop",
        account.as_str(),
    ] {
        assert!(!shown.contains(private), "{private} leaked into {shown}");
    }

    let notice = get_notice(&app, &mut phone, &sent.notice_id)
        .await
        .expect("fetch the details");
    assert_eq!(notice.kind(), pb::NoticeKind::SignIn);
    assert_eq!(notice.login_context, Some(context));
    assert_eq!(notice.expires_at_unix_ms, sent.expires_at_unix_ms);
    assert!(notice.revocable);

    let revoked = revoke_from(&app, &mut phone, &sent.notice_id)
        .await
        .expect("this was not me");
    assert_eq!(revoked.revoked_sign_in_id, "session-42");
    // Whatever the revoked sign-in made known is forgotten.
    let known = crate::signins::evaluate(&app, &account, known_sign_in.clone()).await;
    assert_eq!(
        known.device.expect("device").familiarity(),
        pb::Familiarity::New,
        "\"this was not me\" forgets the known sign-ins"
    );
    let event = security_event(&app, &account, pb::SecurityEventKind::SignInRevoked).await;
    assert_eq!(event.detail, "session-42");
    assert_eq!(event.device_id, phone.device_id);
    let audit = app.audit_details(&account).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::SignInRevoked && d == "session-42"),
        "{audit:?}"
    );
}

async fn notice_requests_are_validated(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let send = |req: pb::SendSignInNoticeRequest| {
        let mut client = app.challenges.clone();
        async move { client.send_sign_in_notice(req).await }
    };
    assert_code(
        send(pb::SendSignInNoticeRequest::default()).await,
        Code::InvalidArgument,
        "account_id",
    );
    assert_code(
        send(pb::SendSignInNoticeRequest {
            account_id: account.clone(),
            sign_in_id: "x".repeat(129),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "sign_in_id",
    );
    assert_code(
        send(pb::SendSignInNoticeRequest {
            account_id: account.clone(),
            login_context: Some(pb::LoginContext {
                ip: "not an ip".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "login_context.ip",
    );
    assert_code(
        send(pb::SendSignInNoticeRequest {
            account_id: crate::helpers::account(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "no active device",
    );
    assert!(
        notices(&app, &mut phone).await.is_empty(),
        "refused requests left no notice"
    );
    assert_code(
        get_notice(&app, &mut phone, "n.nope").await,
        Code::InvalidArgument,
        "payload.get_notice.notice_id",
    );
    assert_code(
        revoke_from(&app, &mut phone, "").await,
        Code::InvalidArgument,
        "payload.revoke_from_notice.notice_id",
    );

    // Another account's notice is not found, whoever asks.
    let stranger_account = crate::helpers::account();
    let _stranger = app.enroll(&stranger_account).await;
    let theirs = send(pb::SendSignInNoticeRequest {
        account_id: stranger_account,
        ..Default::default()
    })
    .await
    .expect("notice on the other account")
    .into_inner();
    assert_code(
        get_notice(&app, &mut phone, &theirs.notice_id).await,
        Code::NotFound,
        "notice",
    );
    assert_code(
        revoke_from(&app, &mut phone, &theirs.notice_id).await,
        Code::NotFound,
        "notice",
    );
}

async fn an_account_lists_its_fifty_newest_notices_and_older_ones_stay_fetchable(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let mut ids = Vec::new();
    for i in 0..51 {
        let sent = app
            .challenges
            .clone()
            .send_sign_in_notice(pb::SendSignInNoticeRequest {
                account_id: account.clone(),
                sign_in_id: format!("session-{i}"),
                ..Default::default()
            })
            .await
            .expect("notice")
            .into_inner();
        ids.push(sent.notice_id);
    }
    let listed = notices(&app, &mut phone).await;
    assert_eq!(listed.len(), 50);
    assert_eq!(listed[0].notice_id, ids[50], "newest first");
    assert_eq!(listed[49].notice_id, ids[1]);
    // Off the list, but fetchable (and revocable) for its 7 days as the contract says.
    let oldest = get_notice(&app, &mut phone, &ids[0])
        .await
        .expect("a notice is fetchable for 7 days, listed or not");
    assert_eq!(oldest.notice_id, ids[0]);
    assert!(oldest.revocable);
}

per_store!(a_fraud_report_reaches_the_backend_mutes_the_account_and_tells_the_other_devices);

on_every_store!(
    a_new_device_is_announced_and_one_tap_revokes_it,
    a_suspected_clone_is_announced_and_can_be_revoked_for_good,
    a_sign_in_notice_is_private_in_the_push_and_revocable_by_the_owner,
    notice_requests_are_validated,
    an_account_lists_its_fifty_newest_notices_and_older_ones_stay_fetchable,
);
