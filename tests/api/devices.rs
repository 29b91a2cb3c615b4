//! Device lifecycle over the APIs: listing, push-token updates, key rotation, audit paging.

use crate::helpers::*;
use approval_relay::device_sim::PhoneKey;
use approval_relay::pb;
use approval_relay::pb::device_request::Body;
use tonic::Code;

async fn an_enrollment_uri_names_the_ticket_and_the_device_api(app: TestApp) {
    let req = pb::CreateEnrollmentRequest {
        account_id: account(),
        ttl_seconds: 120,
    };
    let e = app
        .registry
        .clone()
        .create_enrollment(req)
        .await
        .expect("enrollment")
        .into_inner();
    assert_eq!(
        e.enrollment_uri,
        format!(
            "approval-relay://enroll?ticket={}&relay={}",
            e.ticket, app.device_addr
        )
    );
}

async fn a_new_push_token_is_used_for_the_next_push(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let req = phone.signed(Body::UpdatePushToken(pb::UpdatePushTokenBody {
        push_token: "fresh-token".into(),
        ..Default::default()
    }));
    let ack = app
        .device
        .clone()
        .update_push_token(req)
        .await
        .expect("update")
        .into_inner();
    assert_eq!(ack.counter, phone.counter);
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let pushes = app.pushes_for(&challenge.challenge_id, 1).await;
    assert_eq!(pushes[0].token, "fresh-token");
}

async fn a_rotated_key_signs_from_then_on_and_the_old_key_is_refused(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    // Same algorithm, so the old key's signature is well-formed and fails only because the key changed.
    let mut old = phone.clone();
    let ack = app.rotate_key(&mut phone, PhoneKey::p256()).await;
    assert_eq!(ack.counter, 0, "the counter starts again with the new key");

    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    assert_code(
        app.approve(&mut old, &challenge).await,
        Code::Unauthenticated,
        "signature",
    );
    // A phone whose counter neared 2^53 starts again from 1 under its new key.
    assert_eq!(
        app.approve(&mut phone, &challenge)
            .await
            .expect("new key works"),
        pb::ChallengeState::Approved
    );
}

async fn a_rotation_without_proof_of_the_new_key_is_refused(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let new_key = PhoneKey::p256();
    let body = pb::RotateKeyBody {
        new_key_algorithm: new_key.algorithm().into(),
        new_public_key: new_key.public_key(),
        new_key_proof: PhoneKey::p256().sign(b"something else"),
    };
    let result = app
        .device
        .clone()
        .rotate_key(phone.signed(Body::RotateKey(body)))
        .await;
    assert_code(
        result,
        Code::InvalidArgument,
        "payload.rotate_key.new_key_proof",
    );
    // Correctly signed by the current key, so it consumed its counter, as every authenticated request.
    assert_eq!(app.devices(&account).await[0].counter, phone.counter);
}

async fn the_audit_trail_pages_newest_first_without_gaps(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    for _ in 0..5 {
        let c = app.create(&account, pb::NumberMatchMode::Type).await;
        app.approve(&mut phone, &c).await.expect("approve");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let full = {
        let req = pb::ListAuditEventsRequest {
            account_id: account.clone(),
            page_size: 500,
            page_token: String::new(),
        };
        app.audit
            .clone()
            .list_audit_events(req)
            .await
            .expect("all")
            .into_inner()
    };
    assert!(full.next_page_token.is_empty());
    assert!(
        full.events.len() >= 17,
        "2 enrollment records and 3 per challenge: {}",
        full.events.len()
    );
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListAuditEventsRequest {
            account_id: account.clone(),
            page_size: 3,
            page_token: token,
        };
        let page = app
            .audit
            .clone()
            .list_audit_events(req)
            .await
            .expect("page")
            .into_inner();
        assert!(page.events.len() <= 3);
        paged.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        paged, full.events,
        "pages put together are the whole trail, newest first"
    );
    assert!(
        paged.windows(2).all(|w| w[0].at_unix_ms >= w[1].at_unix_ms),
        "newest first"
    );
    assert_eq!(
        paged.last().map(|e| e.kind()),
        Some(pb::AuditKind::EnrollmentCreated),
        "down to the first record"
    );
}

async fn a_security_event_consumer_that_reconnects_from_its_last_position_misses_nothing(
    app: TestApp,
) {
    let account = account();
    let mut first = app
        .audit
        .clone()
        .watch_security_events(pb::WatchSecurityEventsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let mut phones = Vec::new();
    for _ in 0..3 {
        phones.push(app.enroll(&account).await);
    }
    let mut last = String::new();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(PATIENCE, first.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        if e.account_id == account {
            seen.push(e.device_id.clone());
            last = e.position.clone();
        }
    }
    drop(first);
    // While disconnected: more events.
    let revoke = pb::RevokeDeviceRequest {
        account_id: account.clone(),
        device_id: phones[0].device_id.clone(),
    };
    app.registry
        .clone()
        .revoke_device(revoke)
        .await
        .expect("revoke");

    let resume = pb::WatchSecurityEventsRequest {
        after_position: last,
    };
    let mut second = app
        .audit
        .clone()
        .watch_security_events(resume)
        .await
        .expect("stream")
        .into_inner();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let e = tokio::time::timeout(PATIENCE, second.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        if e.account_id == account {
            kinds.push((e.kind(), e.device_id));
        }
    }
    assert_eq!(
        kinds[0],
        (
            pb::SecurityEventKind::DeviceEnrolled,
            phones[2].device_id.clone()
        ),
        "the third enrollment, not a repeat"
    );
    assert_eq!(
        kinds[1],
        (
            pb::SecurityEventKind::DeviceRevoked,
            phones[0].device_id.clone()
        )
    );
}

on_every_store!(
    an_enrollment_uri_names_the_ticket_and_the_device_api,
    a_new_push_token_is_used_for_the_next_push,
    a_rotated_key_signs_from_then_on_and_the_old_key_is_refused,
    a_rotation_without_proof_of_the_new_key_is_refused,
    the_audit_trail_pages_newest_first_without_gaps,
    a_security_event_consumer_that_reconnects_from_its_last_position_misses_nothing,
);
