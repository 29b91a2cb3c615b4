//! The record cannot be erased by noise (DESIGN.md guarantee 11): anyone who knows a device id can send
//! requests that name it and fail authentication, but no number of them pushes the account's real
//! records out of its trail; they are bounded by per-device and per-address budgets, visible as a
//! bounded number of records, metrics and security events; and the real phone is never locked out.

use crate::helpers::*;
use approval_relay::device_sim::phone::now_ms;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::pb::device_request::Body;
use futures::StreamExt;
use tonic::Code;

/// Every record of an account's trail, newest first, through every page.
async fn whole_trail(app: &TestApp, account: &str) -> Vec<pb::AuditEvent> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .audit
            .clone()
            .list_audit_events(pb::ListAuditEventsRequest {
                account_id: account.into(),
                page_size: 100,
                page_token: token.clone(),
            })
            .await
            .expect("audit page")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// An account whose trail holds an enrollment, a challenge, its delivery and its approval.
async fn account_with_history(app: &TestApp) -> (String, Phone) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let watch = app.watch(&challenge.challenge_id).await;
    app.pushes_for(&challenge.challenge_id, 1).await;
    app.approve(&mut phone, &challenge).await.expect("approve");
    drain(watch).await;
    (account, phone)
}

fn real_records_are_there(trail: &[pb::AuditEvent]) {
    for kind in [
        pb::AuditKind::DeviceEnrolled,
        pb::AuditKind::ChallengeCreated,
        pb::AuditKind::PushDelivered,
        pb::AuditKind::ChallengeApproved,
    ] {
        assert!(
            trail.iter().any(|e| e.kind() == kind),
            "{kind:?} was pushed out of the trail"
        );
    }
}

/// `n` requests naming `victim`'s device, signed by a key that is not its own; the status codes seen.
async fn forge(app: &TestApp, victim: &Phone, n: usize) -> (usize, usize) {
    let forger = Phone {
        key: PhoneKey::p256(),
        device_id: victim.device_id.clone(),
        counter: 0,
    };
    let codes: Vec<Code> = futures::stream::iter(0..n)
        .map(|i| {
            let req = forger.signed_with(
                u64::try_from(i).expect("small") + 1,
                now_ms(),
                Body::ListPending(pb::ListPendingBody {}),
            );
            let mut device = app.device.clone();
            async move {
                match device.list_pending(req).await {
                    Ok(_) => Code::Ok,
                    Err(status) => {
                        if status.code() == Code::ResourceExhausted {
                            assert!(
                                status.metadata().get("retry-after").is_some(),
                                "a limit says when to retry"
                            );
                        }
                        status.code()
                    }
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(!codes.contains(&Code::Ok), "a forged request was accepted");
    let unauthenticated = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    let limited = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert_eq!(
        unauthenticated + limited,
        n,
        "only those two answers: {codes:?}"
    );
    (unauthenticated, limited)
}

async fn ten_thousand_forged_requests_leave_the_real_records_and_a_bounded_trace(app: TestApp) {
    let (account, mut phone) = account_with_history(&app).await;

    let started = std::time::Instant::now();
    let (unauthenticated, limited) = forge(&app, &phone, 10_000).await;
    let elapsed = started.elapsed();

    // Within the budgets (10 per device a minute, 60 per address, bursts of the same) the first are
    // refused UNAUTHENTICATED and recorded; the rest RESOURCE_EXHAUSTED and not recorded one by one.
    // The device budget refills by one every 6 s while the flood lasts.
    let budget = 10 + usize::try_from(elapsed.as_secs() / 6).expect("small") + 1;
    assert!(
        unauthenticated <= budget,
        "{unauthenticated} recorded refusals in {elapsed:?}"
    );
    assert_eq!(limited, 10_000 - unauthenticated);
    let trail = whole_trail(&app, &account).await;
    real_records_are_there(&trail);
    let refused: Vec<_> = trail
        .iter()
        .filter(|e| e.kind() == pb::AuditKind::RequestRefused)
        .collect();
    assert_eq!(
        refused.len(),
        unauthenticated,
        "one record per recorded refusal"
    );
    assert!(
        refused
            .iter()
            .all(|e| e.actor == "unauthenticated" && e.device_id == phone.device_id),
        "refusals are not attributed to the device they name: {refused:?}"
    );
    let trips: Vec<_> = trail
        .iter()
        .filter(|e| e.kind() == pb::AuditKind::RateLimited)
        .map(|e| e.detail.as_str())
        .collect();
    assert!(
        !trips.is_empty() && trips.len() <= 2,
        "one record per tripped budget, not per request: {trips:?}"
    );
    let event = security_event(&app, &account, pb::SecurityEventKind::LimitTripped).await;
    assert_eq!(event.device_id, phone.device_id);
    assert!(event.detail.ends_with("auth_failures"), "{event:?}");

    // The flood costs its owner nothing: the real phone's signed requests still go through.
    let next = app.create(&account, pb::NumberMatchMode::Type).await;
    assert_eq!(
        app.approve(&mut phone, &next)
            .await
            .expect("the owner is not locked out"),
        pb::ChallengeState::Approved
    );
}

async fn unlimited_failures_still_cannot_push_real_records_out(store: &str) {
    let app = spawn_app_on(store, |c| {
        c.auth_failures_per_device_per_minute = 0;
        c.auth_failures_per_source_per_minute = 0;
    })
    .await;
    let (account, phone) = account_with_history(&app).await;
    let (unauthenticated, limited) = forge(&app, &phone, 1_100).await;
    assert_eq!(
        (unauthenticated, limited),
        (1_100, 0),
        "no budgets: all refused UNAUTHENTICATED"
    );
    let trail = whole_trail(&app, &account).await;
    real_records_are_there(&trail);
    let refused = trail
        .iter()
        .filter(|e| e.kind() == pb::AuditKind::RequestRefused)
        .count();
    // Capped apart at 200 (Redis trims approximately, keeping at least that many).
    assert!((200..=400).contains(&refused), "{refused} refusal records");
}

async fn one_address_naming_many_devices_is_limited_but_real_phones_behind_it_are_not(
    app: TestApp,
) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let other = AccountIdFree::new();
    let mut codes = Vec::new();
    for _ in 0..70 {
        // Device ids that exist nowhere: nothing to record, but the address's budget counts them.
        let stranger = Phone {
            key: PhoneKey::p256(),
            device_id: other.device_id(),
            counter: 0,
        };
        let req = stranger.signed_with(1, now_ms(), Body::ListPending(pb::ListPendingBody {}));
        codes.push(match app.device.clone().list_pending(req).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
    }
    let unknown = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    let limited = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert!((60..=61).contains(&unknown), "{codes:?}");
    assert_eq!(unknown + limited, 70);
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    assert_eq!(
        app.approve(&mut phone, &challenge)
            .await
            .expect("a real phone from the same address"),
        pb::ChallengeState::Approved
    );
}

/// Device ids of an account that has no devices.
struct AccountIdFree(approval_relay::challenge::AccountId);

impl AccountIdFree {
    fn new() -> Self {
        Self(approval_relay::challenge::AccountId::parse(&account()).expect("valid"))
    }

    fn device_id(&self) -> String {
        approval_relay::challenge::DeviceId::generate(&self.0).to_string()
    }
}

on_every_store!(
    ten_thousand_forged_requests_leave_the_real_records_and_a_bounded_trace,
    one_address_naming_many_devices_is_limited_but_real_phones_behind_it_are_not,
);

per_store!(unlimited_failures_still_cannot_push_real_records_out);
