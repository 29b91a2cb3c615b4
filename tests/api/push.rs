//! Real pushes over HTTP/2 to the APNs mock, with TLS (the mock's CA) and with h2c: delivery, token
//! pruning, retries, deadlines, withdrawal, provider-token renewal and refusal.

use crate::helpers::*;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::mock_push::{Behavior, Delivery, MockConfig, MockPush};
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand::rngs::OsRng;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(crate) const TOPIC: &str = "com.example.authenticator";

struct PushEnv {
    app: TestApp,
    mock: MockPush,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The relay pushing APNs devices to a fresh mock; `relay_key` signs its provider tokens and
/// `mock_config` decides what the mock accepts.
async fn push_env(tls: bool, relay_key: &SigningKey, mock_config: MockConfig) -> PushEnv {
    push_env_on(tls, relay_key, mock_config, None).await
}

/// As [`push_env`], on a Redis store when `redis_url` is given.
async fn push_env_on(
    tls: bool,
    relay_key: &SigningKey,
    mock_config: MockConfig,
    redis_url: Option<String>,
) -> PushEnv {
    let mock = MockPush::start("127.0.0.1:0".parse().expect("addr"), tls, mock_config)
        .await
        .expect("mock starts");
    let dir = std::env::temp_dir().join(format!("approval-relay-push-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key_file = dir.join("AuthKey.p8");
    std::fs::write(
        &key_file,
        relay_key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pem")
            .as_bytes(),
    )
    .expect("write key");
    let ca_file = mock.ca_pem().map(|pem| {
        let path = dir.join("mock-ca.pem");
        std::fs::write(&path, pem).expect("write ca");
        path
    });
    let url = mock.base_url();
    // The OAuth token endpoint is reached by gcp_auth, which trusts only public roots: over TLS the mock's
    // CA is unknown to it, so FCM is wired only when the mock serves h2c.
    let service_account = (!tls).then(|| {
        let mut sa: serde_json::Value =
            serde_json::from_str(include_str!("../fixtures/fcm-service-account.json"))
                .expect("fixture");
        sa["token_uri"] = format!("{url}/token").into();
        let path = dir.join("service-account.json");
        std::fs::write(&path, sa.to_string()).expect("write service account");
        path
    });
    let app = spawn_app_with(|c| {
        c.apns_url = url.clone();
        c.apns_key_file = Some(key_file);
        c.apns_key_id = Some("KEYID12345".into());
        c.apns_team_id = Some("TEAMID1234".into());
        c.apns_ca_file = ca_file;
        c.fcm_url = url;
        c.fcm_service_account_file = service_account;
        c.redis_url = redis_url;
    })
    .await;
    PushEnv {
        app,
        mock,
        _dir: tempdir::Dir(dir),
    }
}

pub(crate) fn trusting(key: &SigningKey) -> MockConfig {
    let sa: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/fcm-service-account.json"))
            .expect("fixture");
    let pem = sa["private_key"].as_str().expect("private key");
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&pem_der(pem)).expect("rsa key");
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    MockConfig {
        apns_keys: HashMap::from([(
            ("TEAMID1234".to_owned(), "KEYID12345".to_owned()),
            *key.verifying_key(),
        )]),
        apns_topics: vec![TOPIC.to_owned()],
        fcm_accounts: HashMap::from([(
            sa["client_email"].as_str().expect("email").to_owned(),
            public,
        )]),
        fcm_projects: vec!["approval-relay-test".to_owned()],
        ..MockConfig::default()
    }
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("pem body")
}

async fn enroll_fcm(app: &TestApp, account: &str, token: &str) -> Phone {
    let ticket = app.ticket(account).await;
    let mut phone = Phone::new(PhoneKey::ed25519());
    let req = phone.enroll_request(
        &ticket,
        pb::Platform::Fcm,
        token,
        "com.example.authenticator",
        "Pixel",
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

/// A mock-push environment with one account holding an iPhone (APNs) and a Pixel (FCM): the account and
/// both tokens.
async fn iphone_and_pixel() -> (PushEnv, String, String, String) {
    let key = SigningKey::random(&mut OsRng);
    let env = push_env(false, &key, trusting(&key)).await;
    let account = account();
    let (apns_token, fcm_token) = (hex_token(), format!("fcm-token-{}", rand::random::<u64>()));
    let _iphone = enroll_apns(&env.app, &account, &apns_token).await;
    let _pixel = enroll_fcm(&env.app, &account, &fcm_token).await;
    (env, account, apns_token, fcm_token)
}

#[tokio::test]
async fn apns_and_fcm_devices_of_one_account_both_receive_the_challenge() {
    let (env, account, apns_token, fcm_token) = iphone_and_pixel().await;
    let challenge = env.app.create(&account, pb::NumberMatchMode::Type).await;

    let apns = deliveries_for(&env.mock, &apns_token, 1).await;
    let fcm = deliveries_for(&env.mock, &fcm_token, 1).await;
    assert_eq!((apns.len(), fcm.len()), (1, 1));
    let f = &fcm[0];
    assert_eq!(f.provider, "fcm");
    assert_eq!(f.collapse_id, challenge.challenge_id);
    assert_eq!(
        f.payload["data"]["challenge_id"],
        challenge.challenge_id.as_str()
    );
    assert_eq!(f.payload["android"]["priority"], "HIGH");
    let ttl = f.payload["android"]["ttl"].as_str().expect("ttl");
    let secs: u64 = ttl.trim_end_matches('s').parse().expect("seconds");
    assert!((55..=60).contains(&secs), "ttl is the time left: {ttl}");
    for d in [&apns[0], f] {
        let text = d.payload.to_string();
        for secret in ["203.0.113.7", "Lyon", account.as_str(), "Firefox"] {
            assert!(!text.contains(secret), "the push leaks {secret}: {text}");
        }
    }
}

#[tokio::test]
async fn an_unregistered_fcm_token_is_pruned_and_reported() {
    let key = SigningKey::random(&mut OsRng);
    let env = push_env(false, &key, trusting(&key)).await;
    let account = account();
    let token = format!("fcm-token-{}", rand::random::<u64>());
    let _pixel = enroll_fcm(&env.app, &account, &token).await;
    env.mock.set_behavior(&token, Behavior::Dead);
    let (_, events) = create_streamed(&env.app, &account).await;
    assert!(
        matches!(events.last(), Some(Kind::DeliveryFailed(f)) if f.reason.contains("UNREGISTERED")),
        "{events:?}"
    );
    assert!(!env.app.devices(&account).await[0].has_push_token);
    let (_, events) = create_streamed(&env.app, &account).await;
    assert!(
        matches!(events.last(), Some(Kind::DeliveryFailed(f)) if f.reason == "no_push_token"),
        "{events:?}"
    );
    assert_eq!(env.mock.requests_for(&token), 1);
}

pub(crate) fn hex_token() -> String {
    format!("{:064x}", rand::random::<u128>())
}

/// A relay pushing to a fresh mock that trusts it, and an account with one APNs device.
async fn one_apns_device(tls: bool) -> (PushEnv, String, String) {
    let key = SigningKey::random(&mut OsRng);
    let env = push_env(tls, &key, trusting(&key)).await;
    let account = account();
    let token = hex_token();
    let _phone = enroll_apns(&env.app, &account, &token).await;
    (env, account, token)
}

pub(crate) async fn enroll_apns(app: &TestApp, account: &str, token: &str) -> Phone {
    let ticket = app.ticket(account).await;
    let mut phone = Phone::new(PhoneKey::p256());
    let req = phone.enroll_request(&ticket, pb::Platform::Apns, token, TOPIC, "iPhone");
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

pub(crate) async fn deliveries_for(mock: &MockPush, token: &str, n: usize) -> Vec<Delivery> {
    deliveries_of(mock, token, n, false).await
}

/// Whether a push is a notice's: its action at the top (APNs), in FCM's data object, or in HMS's data
/// or Mi Push's payload string.
fn is_notice(d: &Delivery) -> bool {
    let embedded = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .is_some_and(|inner| inner["action"] == "notice")
    };
    d.payload["action"] == "notice"
        || d.payload["data"]["action"] == "notice"
        || embedded(&d.payload["data"])
        || embedded(&d.payload["payload"])
}

/// The challenge pushes (or, with `notices`, the notice pushes) a token received, once there are `n`.
async fn deliveries_of(mock: &MockPush, token: &str, n: usize, notices: bool) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got: Vec<_> = mock
            .accepted()
            .into_iter()
            .filter(|d| d.token == token && is_notice(d) == notices)
            .collect();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn apns_devices_receive_the_challenge_over_tls_and_h2c_with_nothing_private_in_it() {
    for tls in [true, false] {
        let key = SigningKey::random(&mut OsRng);
        let env = push_env(tls, &key, trusting(&key)).await;
        let account = account();
        let token = hex_token();
        let _phone = enroll_apns(&env.app, &account, &token).await;
        let challenge = env.app.create(&account, pb::NumberMatchMode::Type).await;

        let got = deliveries_for(&env.mock, &token, 1).await;
        assert_eq!(got.len(), 1, "tls={tls}");
        let d = &got[0];
        assert_eq!(d.push_type, "alert");
        assert_eq!(d.collapse_id, challenge.challenge_id);
        assert_eq!(d.payload["challenge_id"], challenge.challenge_id.as_str());
        let text = d.payload.to_string();
        for secret in ["203.0.113.7", "Lyon", account.as_str(), "Firefox"] {
            assert!(!text.contains(secret), "the push leaks {secret}: {text}");
        }
    }
}

#[tokio::test]
async fn a_sign_in_notice_reaches_apns_and_fcm_with_only_its_id() {
    let (env, account, apns_token, fcm_token) = iphone_and_pixel().await;
    let sent = env
        .app
        .challenges
        .clone()
        .send_sign_in_notice(pb::SendSignInNoticeRequest {
            account_id: account.clone(),
            login_context: Some(pb::LoginContext {
                ip: "203.0.113.7".into(),
                location: "Lyon, France".into(),
                user_agent: "Firefox 140".into(),
                ..Default::default()
            }),
            sign_in_id: "session-secret-ref".into(),
        })
        .await
        .expect("notice")
        .into_inner();
    // The iPhone was also told of the Pixel's enrollment: pick this notice's push by its collapse id.
    let apns: Vec<_> = deliveries_of(&env.mock, &apns_token, 2, true)
        .await
        .into_iter()
        .filter(|d| d.collapse_id == sent.notice_id)
        .collect();
    let fcm = deliveries_of(&env.mock, &fcm_token, 1, true).await;
    assert_eq!((apns.len(), fcm.len()), (1, 1));
    assert_eq!(apns[0].push_type, "alert");
    assert_eq!(apns[0].payload["notice_id"], sent.notice_id.as_str());
    assert_eq!(apns[0].payload["action"], "notice");
    assert_eq!(fcm[0].payload["data"]["notice_id"], sent.notice_id.as_str());
    assert_eq!(fcm[0].payload["data"]["action"], "notice");
    for d in [&apns[0], &fcm[0]] {
        let text = d.payload.to_string();
        for secret in [
            "203.0.113.7",
            "Lyon",
            account.as_str(),
            "Firefox",
            "session-secret-ref",
        ] {
            assert!(
                !text.contains(secret),
                "the notice push leaks {secret}: {text}"
            );
        }
    }
}

/// Creates a challenge on a StreamChallenges stream (registered before the challenge exists, so no
/// delivery report can be missed) and returns it with its events up to the first delivery report.
async fn create_streamed(app: &TestApp, account: &str) -> (pb::Challenge, Vec<Kind>) {
    use pb::stream_challenges_response::Response as R;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut responses = app
        .challenges
        .clone()
        .stream_challenges(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let create = pb::CreateChallengeRequest {
        account_id: account.into(),
        ..Default::default()
    };
    let request = pb::StreamChallengesRequest {
        request_id: "r".into(),
        request: Some(pb::stream_challenges_request::Request::Create(create)),
    };
    tx.send(request).await.expect("send");
    let mut challenge = None;
    let mut events = Vec::new();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(15), responses.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        match r.response.expect("response") {
            R::Created(c) => challenge = c.challenge,
            R::Event(e) => {
                let kind = e.kind.expect("kind");
                let done = matches!(kind, Kind::Delivered(_) | Kind::DeliveryFailed(_));
                events.push(kind);
                if done {
                    return (challenge.expect("created first"), events);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dead_token_is_removed_after_its_first_failure_and_never_pushed_again() {
    let key = SigningKey::random(&mut OsRng);
    dead_token_is_pruned(push_env(false, &key, trusting(&key)).await).await;
}

#[tokio::test]
async fn a_dead_token_is_pruned_on_redis_too() {
    let redis = crate::redis_server::RedisServer::start();
    let key = SigningKey::random(&mut OsRng);
    dead_token_is_pruned(push_env_on(false, &key, trusting(&key), Some(redis.url())).await).await;
}

async fn dead_token_is_pruned(env: PushEnv) {
    let account = account();
    let token = hex_token();
    let _phone = enroll_apns(&env.app, &account, &token).await;
    env.mock.set_behavior(&token, Behavior::Dead);

    let (_, events) = create_streamed(&env.app, &account).await;
    assert!(
        matches!(events.last(), Some(Kind::DeliveryFailed(f)) if f.reason.contains("token_dead")),
        "{events:?}"
    );
    assert!(!env.app.devices(&account).await[0].has_push_token);
    let audit = env.app.audit_details(&account).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| *k == pb::AuditKind::PushTokenPruned && d == "Unregistered"),
        "{audit:?}"
    );

    let (_, events) = create_streamed(&env.app, &account).await;
    assert!(
        matches!(events.last(), Some(Kind::DeliveryFailed(f)) if f.reason == "no_push_token"),
        "{events:?}"
    );
    assert_eq!(
        env.mock.requests_for(&token),
        1,
        "the dead token was tried once, never again"
    );
}

#[tokio::test]
async fn unavailable_twice_then_success_is_delivered_once() {
    let (env, account, token) = one_apns_device(true).await;
    env.mock
        .set_behavior(&token, Behavior::Unavailable { times: 2 });
    let (_, events) = create_streamed(&env.app, &account).await;
    assert!(
        matches!(events.last(), Some(Kind::Delivered(_))),
        "{events:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        deliveries_for(&env.mock, &token, 1).await.len(),
        1,
        "delivered exactly once"
    );
    assert_eq!(
        env.mock.requests_for(&token),
        3,
        "two refusals, one delivery"
    );
}

#[tokio::test]
async fn a_retry_after_from_the_provider_is_honoured() {
    let (env, account, token) = one_apns_device(false).await;
    env.mock.set_behavior(
        &token,
        Behavior::Throttle {
            retry_after_secs: 2,
            times: 1,
        },
    );
    let started = Instant::now();
    let _challenge = env.app.create(&account, pb::NumberMatchMode::Type).await;
    let got = deliveries_for(&env.mock, &token, 1).await;
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_provider_that_never_answers_gives_delivery_failed_before_the_deadline() {
    let (env, account, token) = one_apns_device(false).await;
    env.mock.set_behavior(&token, Behavior::Silent);
    let challenge = env.app.create_short(&account, 4).await;
    let events = drain(env.app.watch(&challenge.challenge_id).await).await;
    let failed = events
        .iter()
        .position(|k| matches!(k, Kind::DeliveryFailed(_)));
    let expired = events.iter().position(|k| matches!(k, Kind::Expired(_)));
    assert!(
        matches!((failed, expired), (Some(f), Some(e)) if f < e),
        "DELIVERY_FAILED, then EXPIRED: {events:?}"
    );
}

#[tokio::test]
async fn after_an_approval_the_other_apns_devices_get_a_silent_withdraw_with_the_same_collapse_id()
{
    let key = SigningKey::random(&mut OsRng);
    let env = push_env(true, &key, trusting(&key)).await;
    let account = account();
    let (t1, t2) = (hex_token(), hex_token());
    let mut first = enroll_apns(&env.app, &account, &t1).await;
    let _second = enroll_apns(&env.app, &account, &t2).await;
    let challenge = env.app.create(&account, pb::NumberMatchMode::Type).await;
    deliveries_for(&env.mock, &t2, 1).await;
    env.app
        .approve(&mut first, &challenge)
        .await
        .expect("approve");

    let got = deliveries_for(&env.mock, &t2, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].push_type, "background");
    assert_eq!(got[1].collapse_id, challenge.challenge_id);
    assert_eq!(got[1].payload["action"], "withdraw");
    assert_eq!(
        deliveries_for(&env.mock, &t1, 1).await.len(),
        1,
        "the device that answered gets no withdraw"
    );
}

#[tokio::test]
async fn an_expired_provider_token_is_renewed_and_the_push_goes_through() {
    let key = SigningKey::random(&mut OsRng);
    let config = MockConfig {
        apns_token_max_age: Duration::from_secs(1),
        ..trusting(&key)
    };
    let env = push_env(false, &key, config).await;
    let account = account();
    let token = hex_token();
    let _phone = enroll_apns(&env.app, &account, &token).await;
    env.app.create(&account, pb::NumberMatchMode::Type).await;
    assert_eq!(deliveries_for(&env.mock, &token, 1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    env.app.create(&account, pb::NumberMatchMode::Type).await;
    assert_eq!(
        deliveries_for(&env.mock, &token, 2).await.len(),
        2,
        "the second push went through with a new token"
    );
}

#[tokio::test]
async fn a_provider_token_the_mock_cannot_verify_is_refused_and_reported() {
    let relay_key = SigningKey::random(&mut OsRng);
    let other = SigningKey::random(&mut OsRng);
    let env = push_env(true, &relay_key, trusting(&other)).await;
    let account = account();
    let token = hex_token();
    let _phone = enroll_apns(&env.app, &account, &token).await;
    let (_, events) = create_streamed(&env.app, &account).await;
    assert!(
        matches!(events.last(), Some(Kind::DeliveryFailed(f)) if f.reason.contains("InvalidProviderToken")),
        "{events:?}"
    );
    assert!(env.mock.accepted().is_empty());
}

/// A watch started after every push was answered still learns each device's outcome, from its snapshot.
async fn a_late_watcher_sees_each_devices_delivery_in_the_snapshot(env: PushEnv) {
    let account = account();
    let (dead, alive) = (hex_token(), format!("fcm-token-{}", rand::random::<u64>()));
    let iphone = enroll_apns(&env.app, &account, &dead).await;
    let pixel = enroll_fcm(&env.app, &account, &alive).await;
    // The iPhone hears of the Pixel's enrollment first; only then does its token die.
    assert_eq!(deliveries_of(&env.mock, &dead, 1, true).await.len(), 1);
    env.mock.set_behavior(&dead, Behavior::Dead);
    let challenge = env.app.create(&account, pb::NumberMatchMode::Type).await;
    let deadline = Instant::now() + PATIENCE;
    let settled = loop {
        let c = env.app.get(&challenge.challenge_id).await;
        if c.deliveries
            .iter()
            .all(|d| d.state() != pb::DeliveryState::Pending)
        {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "pushes never settled: {:?}",
            c.deliveries
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(settled.deliveries.len(), 2);

    let mut watch = env.app.watch(&challenge.challenge_id).await;
    let first = watch.message().await.expect("snapshot").expect("open");
    let Some(Kind::Snapshot(snapshot)) = first.kind else {
        panic!("the first event is the snapshot: {first:?}");
    };
    let of = |device: &str| {
        snapshot
            .deliveries
            .iter()
            .find(|d| d.device_id == device)
            .cloned()
            .expect("every target has an entry")
    };
    let failed = of(&iphone.device_id);
    assert_eq!(failed.state(), pb::DeliveryState::Failed);
    assert!(failed.reason.starts_with("token_dead"), "{failed:?}");
    let delivered = of(&pixel.device_id);
    assert_eq!(delivered.state(), pb::DeliveryState::Delivered);
    assert!(delivered.reason.is_empty());
}

#[tokio::test]
async fn a_late_watcher_learns_every_delivery_from_the_snapshot() {
    let key = SigningKey::random(&mut OsRng);
    a_late_watcher_sees_each_devices_delivery_in_the_snapshot(
        push_env(false, &key, trusting(&key)).await,
    )
    .await;
}

#[tokio::test]
async fn a_late_watcher_learns_every_delivery_from_the_snapshot_on_redis() {
    let redis = crate::redis_server::RedisServer::start();
    let key = SigningKey::random(&mut OsRng);
    a_late_watcher_sees_each_devices_delivery_in_the_snapshot(
        push_env_on(false, &key, trusting(&key), Some(redis.url())).await,
    )
    .await;
}
