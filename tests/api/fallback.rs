//! A device's second push channel and poll-only devices, on every store: a dead first channel is
//! delivered through the fallback (the watcher is told so) and withdrawn there; both channels' tokens can
//! be replaced; a poll-only phone is never pushed, polls, and approves; and the shapes the relay refuses.

use crate::channels::{enroll_on, env, first_outcome, token};
use crate::helpers::*;
use crate::push::{TOPIC, deliveries_for};
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::mock_push::Behavior;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use approval_relay::pb::device_request::Body;
use std::time::Duration;
use tonic::Code;

async fn a_dead_first_channel_is_delivered_through_the_fallback_and_withdrawn_there(store: &str) {
    let env = env(store).await;
    let account = account();
    let (fcm, xiaomi) = (token("fcm"), token("xiaomi"));
    let traveller = enroll_on(
        &env.app,
        &account,
        pb::Platform::Fcm,
        &fcm,
        Some((pb::Platform::Xiaomi, &xiaomi)),
    )
    .await;
    env.mock.set_behavior(&fcm, Behavior::Dead);
    let (challenge, outcome) = first_outcome(&env.app, &account).await;
    let Kind::Delivered(delivered) = outcome else {
        panic!("the fallback delivers: {outcome:?}");
    };
    assert_eq!(delivered.device_id, traveller.device_id);
    assert_eq!(
        (delivered.platform(), delivered.fallback),
        (pb::Platform::Xiaomi, true)
    );
    let info = &env.app.devices(&account).await[0];
    assert_eq!(info.fallback_platform(), pb::Platform::Xiaomi);
    assert!(
        !info.has_push_token && info.has_fallback_push_token,
        "{info:?}"
    );
    assert_eq!(deliveries_for(&env.mock, &xiaomi, 1).await.len(), 1);

    // The next one goes straight to the fallback; the dead token is not asked again.
    let mut other = enroll_on(&env.app, &account, pb::Platform::Hms, &token("hms"), None).await;
    let (second, outcome) = first_outcome(&env.app, &account).await;
    let _ = challenge;
    assert!(
        matches!(&outcome, Kind::Delivered(d) if d.fallback || d.device_id == other.device_id),
        "{outcome:?}"
    );
    assert_eq!(env.mock.requests_for(&fcm), 1);
    // Approved on the other phone: the traveller's prompt is withdrawn through Mi Push, where it showed.
    let shown = deliveries_for(&env.mock, &xiaomi, 2).await;
    assert_eq!(shown.len(), 2, "{shown:?}");
    env.app.approve(&mut other, &second).await.expect("approve");
    let deadline = std::time::Instant::now() + PATIENCE;
    let withdraw = loop {
        let found = env.mock.accepted().into_iter().find(|d| {
            d.token == xiaomi
                && d.push_type == "background"
                && d.payload["payload"]
                    .as_str()
                    .is_some_and(|p| p.contains(&second.challenge_id) && p.contains("withdraw"))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no withdrawal through the fallback"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(withdraw.payload["pass_through"], "1");
    assert_eq!(
        withdraw.collapse_id,
        approval_relay::push::xiaomi::notify_id(&second.challenge_id).to_string()
    );
}

async fn both_channels_failing_names_both_and_new_tokens_revive_them(store: &str) {
    let env = env(store).await;
    let account = account();
    let (fcm, hms) = (token("fcm"), token("hms"));
    let mut phone = enroll_on(
        &env.app,
        &account,
        pb::Platform::Fcm,
        &fcm,
        Some((pb::Platform::Hms, &hms)),
    )
    .await;
    env.mock.set_behavior(&fcm, Behavior::Dead);
    env.mock.set_behavior(&hms, Behavior::Dead);
    let (_, outcome) = first_outcome(&env.app, &account).await;
    assert!(
        matches!(&outcome, Kind::DeliveryFailed(f)
            if f.reason.starts_with("token_dead: UNREGISTERED; fallback hms: token_dead: 80300007")),
        "{outcome:?}"
    );
    let info = &env.app.devices(&account).await[0];
    assert!(
        !info.has_push_token && !info.has_fallback_push_token,
        "{info:?}"
    );
    let details = env.app.audit_details(&account).await;
    let pruned: Vec<_> = details
        .iter()
        .filter(|(k, _)| *k == pb::AuditKind::PushTokenPruned)
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(pruned.len(), 2, "{pruned:?}");
    assert!(
        pruned.iter().any(|d| d.starts_with("fallback: ")),
        "{pruned:?}"
    );

    let (new_fcm, new_hms) = (token("fcm"), token("hms"));
    env.mock.set_behavior(&new_fcm, Behavior::Dead);
    let update = phone.signed(Body::UpdatePushToken(pb::UpdatePushTokenBody {
        push_token: new_fcm.clone(),
        fallback_push_token: new_hms.clone(),
    }));
    env.app
        .device
        .clone()
        .update_push_token(update)
        .await
        .expect("both tokens replaced");
    let info = &env.app.devices(&account).await[0];
    assert!(
        info.has_push_token && info.has_fallback_push_token,
        "{info:?}"
    );
    let (_, outcome) = first_outcome(&env.app, &account).await;
    assert!(
        matches!(&outcome, Kind::Delivered(d) if d.platform() == pb::Platform::Hms && d.fallback),
        "{outcome:?}"
    );
    assert_eq!(deliveries_for(&env.mock, &new_hms, 1).await.len(), 1);
}

async fn a_poll_only_phone_is_never_pushed_polls_and_approves(store: &str) {
    let env = env(store).await;
    let account = account();
    let mut phone = enroll_on(&env.app, &account, pb::Platform::PollOnly, "", None).await;
    let info = &env.app.devices(&account).await[0];
    assert_eq!(info.platform(), pb::Platform::PollOnly);
    assert!(!info.has_push_token);
    let challenge = env.app.create(&account, pb::NumberMatchMode::Choose).await;
    // The create answer already says so, on every store.
    assert_eq!(challenge.deliveries.len(), 1);
    assert_eq!(challenge.deliveries[0].state(), pb::DeliveryState::PollOnly);
    // Past the push lease: no replica takes its pushes for unfinished (nor reports it lost).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let seen = env.app.get(&challenge.challenge_id).await;
    assert_eq!(seen.deliveries.len(), 1);
    assert_eq!(seen.deliveries[0].state(), pb::DeliveryState::PollOnly);

    let pending = env.app.list_pending(&mut phone).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].challenge_id, challenge.challenge_id);
    let watch = env.app.watch(&challenge.challenge_id).await;
    let state = env
        .app
        .approve(&mut phone, &challenge)
        .await
        .expect("approve");
    assert_eq!(state, pb::ChallengeState::Approved);
    let events = drain(watch).await;
    assert!(
        !events
            .iter()
            .any(|k| matches!(k, Kind::Delivered(_) | Kind::DeliveryFailed(_))),
        "no delivery event for a device that is never pushed: {events:?}"
    );
    assert!(env.mock.accepted().is_empty(), "nothing was pushed");
    let details = env.app.audit_details(&account).await;
    assert!(
        !details
            .iter()
            .any(|(k, _)| matches!(k, pb::AuditKind::PushFailed | pb::AuditKind::PushDelivered)),
        "{details:?}"
    );
}

per_store!(
    a_dead_first_channel_is_delivered_through_the_fallback_and_withdrawn_there,
    both_channels_failing_names_both_and_new_tokens_revive_them,
    a_poll_only_phone_is_never_pushed_polls_and_approves
);

/// Enrollment payloads whose channels the relay refuses, each naming the field at fault.
#[tokio::test]
async fn channel_shapes_are_refused_with_the_field_at_fault() {
    let app = spawn_app().await;
    // Platform, push token, fallback channel, the field the refusal names.
    type Case<'a> = (
        pb::Platform,
        &'a str,
        Option<(pb::Platform, &'a str)>,
        &'a str,
    );
    let cases: [Case; 6] = [
        (pb::Platform::PollOnly, "tok", None, "payload.push_token"),
        (pb::Platform::Xiaomi, "", None, "payload.push_token"),
        (
            pb::Platform::Fcm,
            "t",
            Some((pb::Platform::Fcm, "u")),
            "payload.fallback.platform",
        ),
        (
            pb::Platform::Fcm,
            "t",
            Some((pb::Platform::PollOnly, "u")),
            "payload.fallback.platform",
        ),
        (
            pb::Platform::Fcm,
            "t",
            Some((pb::Platform::Hms, "")),
            "payload.fallback.push_token",
        ),
        (
            pb::Platform::PollOnly,
            "",
            Some((pb::Platform::Hms, "u")),
            "payload.fallback.platform",
        ),
    ];
    let account = account();
    for (platform, push_token, fallback, field) in cases {
        let ticket = app.ticket(&account).await;
        let phone = Phone::new(PhoneKey::ed25519());
        let mut payload = phone.enroll_payload(&ticket, platform, push_token, TOPIC, "x");
        payload.fallback = fallback.map(|(platform, token)| pb::PushChannel {
            platform: platform.into(),
            push_token: token.into(),
        });
        let request = phone.sign_enrollment(prost::Message::encode_to_vec(&payload));
        assert_code(
            app.device.clone().enroll(request).await,
            Code::InvalidArgument,
            field,
        );
    }
    assert!(app.devices(&account).await.is_empty(), "nothing enrolled");
}

/// Token updates for a channel the device does not have: FAILED_PRECONDITION with the reason.
#[tokio::test]
async fn token_updates_for_a_missing_channel_are_refused() {
    let app = spawn_app().await;
    let account = account();
    let mut poller = enroll_on(&app, &account, pb::Platform::PollOnly, "", None).await;
    let mut plain = enroll_on(&app, &account, pb::Platform::Fcm, "fcm-1", None).await;
    for (phone, body, reason) in [
        (
            &mut poller,
            pb::UpdatePushTokenBody {
                push_token: "new".into(),
                ..Default::default()
            },
            "POLL_ONLY_DEVICE",
        ),
        (
            &mut plain,
            pb::UpdatePushTokenBody {
                push_token: "fcm-2".into(),
                fallback_push_token: "mi-1".into(),
            },
            "NO_FALLBACK_CHANNEL",
        ),
    ] {
        let status = app
            .device
            .clone()
            .update_push_token(phone.signed(Body::UpdatePushToken(body)))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        let info = <tonic::Status as tonic_types::StatusExt>::get_details_error_info(&status)
            .expect("error info");
        assert_eq!(info.reason, reason);
    }
    // Each request's counter was consumed, as any signed request's is; nothing else changed.
    let devices = app.devices(&account).await;
    assert!(devices.iter().all(|d| d.counter == 1), "{devices:?}");
    assert!(
        devices
            .iter()
            .all(|d| d.fallback_platform() == pb::Platform::Unspecified)
    );
}
