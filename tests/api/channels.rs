//! Mi Push and HMS Push Kit beside APNs and FCM, on every store, through mock-push over h2c: each
//! provider's format with nothing private in it, its dead-token answer pruning exactly that token once,
//! its throttle retried, its credential refusal reported `provider_auth_failed`, and an expired HMS
//! access token fetched again once.

use crate::helpers::*;
use crate::push::{TOPIC, deliveries_for, enroll_apns, hex_token, trusting};
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::mock_push::{Behavior, MockConfig, MockPush};
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand::rngs::OsRng;
use std::collections::HashMap;
use std::time::Duration;

/// The Mi Push AppSecret and the HMS app the mock accepts.
pub(crate) const XIAOMI_SECRET: &str = "mi-app-secret-0123456789abcdef";
pub(crate) const HMS_APP_ID: &str = "107654321";
pub(crate) const HMS_SECRET: &str = "hms-app-secret-fedcba9876543210";

/// A relay whose four providers all point at one mock.
pub(crate) struct Env {
    pub app: TestApp,
    pub mock: MockPush,
    dir: std::path::PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The mock with APNs and FCM trusted, and Mi Push and HMS credentials.
fn mock_config(key: &SigningKey) -> MockConfig {
    MockConfig {
        xiaomi_secrets: vec![XIAOMI_SECRET.to_owned()],
        xiaomi_packages: vec![TOPIC.to_owned()],
        hms_apps: HashMap::from([(HMS_APP_ID.to_owned(), HMS_SECRET.to_owned())]),
        ..trusting(key)
    }
}

/// A relay on `store` pushing through a fresh mock; the relay is given `xiaomi_secret` and
/// `hms_secret` (the mock accepts [`XIAOMI_SECRET`] and [`HMS_SECRET`]).
pub(crate) async fn env_with(store: &str, xiaomi_secret: &str, hms_secret: &str) -> Env {
    let key = SigningKey::random(&mut OsRng);
    let mock = MockPush::start(
        "127.0.0.1:0".parse().expect("addr"),
        false,
        mock_config(&key),
    )
    .await
    .expect("mock starts");
    let dir = std::env::temp_dir().join(format!("approval-relay-channels-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let apns_key = write(
        "AuthKey.p8",
        key.to_pkcs8_pem(LineEnding::LF).expect("pem").as_str(),
    );
    let url = mock.base_url();
    let mut sa: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/fcm-service-account.json")).expect("sa");
    sa["token_uri"] = format!("{url}/token").into();
    let service_account = write("service-account.json", &sa.to_string());
    let xiaomi = write("xiaomi-app-secret", &format!("{xiaomi_secret}\n"));
    let hms = write("hms-app-secret", hms_secret);
    let app = spawn_app_on(store, |c| {
        c.apns_url = url.clone();
        c.apns_key_file = Some(apns_key);
        c.apns_key_id = Some("KEYID12345".into());
        c.apns_team_id = Some("TEAMID1234".into());
        c.fcm_url = url.clone();
        c.fcm_service_account_file = Some(service_account);
        c.xiaomi_url = url.clone();
        c.xiaomi_app_secret_file = Some(xiaomi);
        c.xiaomi_package = Some(TOPIC.to_owned());
        c.hms_url = url.clone();
        c.hms_token_url = format!("{url}/oauth2/v3/token");
        c.hms_app_id = Some(HMS_APP_ID.to_owned());
        c.hms_app_secret_file = Some(hms);
        // Several challenges in a row for one account.
        c.max_pending_per_account = 20;
    })
    .await;
    Env { app, mock, dir }
}

/// [`env_with`] the right credentials.
pub(crate) async fn env(store: &str) -> Env {
    env_with(store, XIAOMI_SECRET, HMS_SECRET).await
}

/// Enrolls a phone on `platform` with `token`, and a fallback channel if given.
pub(crate) async fn enroll_on(
    app: &TestApp,
    account: &str,
    platform: pb::Platform,
    token: &str,
    fallback: Option<(pb::Platform, &str)>,
) -> Phone {
    let ticket = app.ticket(account).await;
    let mut phone = Phone::new(PhoneKey::p256());
    let mut payload = phone.enroll_payload(&ticket, platform, token, TOPIC, "Phone");
    payload.fallback = fallback.map(|(platform, token)| pb::PushChannel {
        platform: platform.into(),
        push_token: token.to_owned(),
    });
    let request = phone.sign_enrollment(prost::Message::encode_to_vec(&payload));
    phone.device_id = app
        .device
        .clone()
        .enroll(request)
        .await
        .expect("enroll")
        .into_inner()
        .device_id;
    phone
}

/// A fresh token for a provider.
pub(crate) fn token(provider: &str) -> String {
    format!("{provider}-token-{}", rand_suffix())
}

/// The events of a new challenge for `account` up to the first push outcome.
pub(crate) async fn first_outcome(app: &TestApp, account: &str) -> (pb::Challenge, Kind) {
    let challenge = app.create(account, pb::NumberMatchMode::None).await;
    let mut watch = app.watch(&challenge.challenge_id).await;
    let kind = crate::reliability::outcome(&mut watch, PATIENCE).await;
    (challenge, kind)
}

async fn four_providers_each_receive_the_challenge_in_their_own_format(store: &str) {
    let env = env(store).await;
    let account = account();
    let tokens = [hex_token(), token("fcm"), token("xiaomi"), token("hms")];
    let _iphone = enroll_apns(&env.app, &account, &tokens[0]).await;
    for (platform, token) in [
        (pb::Platform::Fcm, &tokens[1]),
        (pb::Platform::Xiaomi, &tokens[2]),
        (pb::Platform::Hms, &tokens[3]),
    ] {
        enroll_on(&env.app, &account, platform, token, None).await;
    }
    let challenge = env.app.create(&account, pb::NumberMatchMode::Type).await;
    let id = challenge.challenge_id.as_str();
    let got: Vec<_> =
        futures::future::join_all(tokens.iter().map(|t| deliveries_for(&env.mock, t, 1))).await;
    let [apns, fcm, xiaomi, hms] = [&got[0], &got[1], &got[2], &got[3]].map(|d| {
        assert_eq!(d.len(), 1, "one push each: {got:?}");
        &d[0]
    });
    assert_eq!((apns.provider, fcm.provider), ("apns", "fcm"));

    let form = &xiaomi.payload;
    assert_eq!(xiaomi.provider, "xiaomi");
    assert_eq!(form["restricted_package_name"], TOPIC);
    assert_eq!(form["pass_through"], "0");
    assert_eq!(form["title"], "Sign-in request");
    let notify_id = approval_relay::push::xiaomi::notify_id(id).to_string();
    assert_eq!(form["notify_id"], notify_id.as_str());
    assert_eq!(xiaomi.collapse_id, notify_id);
    let inner: serde_json::Value =
        serde_json::from_str(form["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(
        (inner["challenge_id"].as_str(), inner["action"].as_str()),
        (Some(id), Some("challenge"))
    );
    let ttl_ms: i64 = form["time_to_live"]
        .as_str()
        .expect("ttl")
        .parse()
        .expect("ms");
    assert!(
        (55_000..=60_000).contains(&ttl_ms),
        "ttl is the time left: {ttl_ms}"
    );

    assert_eq!(hms.provider, "hms");
    let android = &hms.payload["android"];
    assert_eq!(
        (
            android["urgency"].as_str(),
            android["collapse_key"].as_i64()
        ),
        (Some("HIGH"), Some(-1))
    );
    assert_eq!(android["notification"]["tag"], id);
    assert_eq!(hms.collapse_id, id);
    let secs: u64 = android["ttl"]
        .as_str()
        .expect("ttl")
        .trim_end_matches('s')
        .parse()
        .expect("s");
    assert!((55..=60).contains(&secs), "ttl is the time left: {secs}");
    let data: serde_json::Value =
        serde_json::from_str(hms.payload["data"].as_str().expect("data string")).expect("json");
    assert_eq!(data["challenge_id"], id);

    for push in [apns, fcm, xiaomi, hms] {
        let text = push.payload.to_string();
        for secret in [
            "203.0.113.7",
            "Lyon",
            account.as_str(),
            "Firefox",
            "Work laptop",
        ] {
            assert!(
                !text.contains(secret),
                "{} push leaks {secret}: {text}",
                push.provider
            );
        }
    }
    // Each device's snapshot entry names the provider that accepted its push.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let c = env.app.get(id).await;
        let mut platforms: Vec<_> = c
            .deliveries
            .iter()
            .filter(|d| d.state() == pb::DeliveryState::Delivered && !d.fallback)
            .map(pb::DeviceDelivery::platform)
            .collect();
        platforms.sort_by_key(|p| *p as i32);
        if platforms.len() == 4 {
            assert_eq!(
                platforms,
                [
                    pb::Platform::Apns,
                    pb::Platform::Fcm,
                    pb::Platform::Xiaomi,
                    pb::Platform::Hms
                ]
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn each_providers_dead_token_is_pruned_once_and_never_pushed_again(store: &str) {
    let env = env(store).await;
    for (platform, detail) in [
        (pb::Platform::Xiaomi, "token_dead: bad_regids"),
        (pb::Platform::Hms, "token_dead: 80300007"),
    ] {
        let account = account();
        let token = token(platform.as_str_name());
        enroll_on(&env.app, &account, platform, &token, None).await;
        env.mock.set_behavior(&token, Behavior::Dead);
        let (_, outcome) = first_outcome(&env.app, &account).await;
        assert!(
            matches!(&outcome, Kind::DeliveryFailed(f) if f.reason.starts_with(detail)),
            "{platform:?}: {outcome:?}"
        );
        assert!(!env.app.devices(&account).await[0].has_push_token);
        let (_, again) = first_outcome(&env.app, &account).await;
        assert!(
            matches!(&again, Kind::DeliveryFailed(f) if f.reason == "no_push_token"),
            "{again:?}"
        );
        assert_eq!(env.mock.requests_for(&token), 1, "{platform:?}: asked once");
        let pruned = env
            .app
            .audit_details(&account)
            .await
            .into_iter()
            .filter(|(k, _)| *k == pb::AuditKind::PushTokenPruned)
            .count();
        assert_eq!(pruned, 1, "{platform:?}: pruned once");
    }
}

async fn each_providers_throttle_is_retried_with_backoff(store: &str) {
    let env = env(store).await;
    for platform in [pb::Platform::Xiaomi, pb::Platform::Hms] {
        let account = account();
        let token = token(platform.as_str_name());
        enroll_on(&env.app, &account, platform, &token, None).await;
        env.mock.set_behavior(
            &token,
            Behavior::Throttle {
                retry_after_secs: 1,
                times: 1,
            },
        );
        let started = std::time::Instant::now();
        let (_, outcome) = first_outcome(&env.app, &account).await;
        assert!(
            matches!(outcome, Kind::Delivered(_)),
            "{platform:?}: {outcome:?}"
        );
        assert_eq!(env.mock.requests_for(&token), 2, "{platform:?}: one retry");
        // Mi Push gives no Retry-After (the relay's backoff starts at 100-200 ms); HMS's says 1 s.
        let least = if platform == pb::Platform::Hms {
            900
        } else {
            90
        };
        assert!(
            started.elapsed() >= Duration::from_millis(least),
            "{platform:?} backed off"
        );
    }
}

async fn refused_credentials_are_provider_auth_failed(store: &str) {
    let env = env_with(store, "not-the-app-secret", "not-the-hms-secret").await;
    for (platform, detail) in [
        (pb::Platform::Xiaomi, "provider_auth_failed: 21301"),
        (
            pb::Platform::Hms,
            "provider_auth_failed: oauth 400 1101 12304",
        ),
    ] {
        let account = account();
        let token = token(platform.as_str_name());
        enroll_on(&env.app, &account, platform, &token, None).await;
        let (_, outcome) = first_outcome(&env.app, &account).await;
        assert!(
            matches!(&outcome, Kind::DeliveryFailed(f) if f.reason.starts_with(detail)),
            "{platform:?}: {outcome:?}"
        );
        // The token is fine; our credentials are not.
        assert!(env.app.devices(&account).await[0].has_push_token);
    }
}

async fn an_expired_hms_token_is_fetched_again_once_and_the_push_goes_through(store: &str) {
    let env = env(store).await;
    let account = account();
    let token = token("hms");
    enroll_on(&env.app, &account, pb::Platform::Hms, &token, None).await;
    let (_, first) = first_outcome(&env.app, &account).await;
    assert!(matches!(first, Kind::Delivered(_)), "{first:?}");
    env.mock.expire_access_tokens();
    let (_, second) = first_outcome(&env.app, &account).await;
    assert!(matches!(second, Kind::Delivered(_)), "{second:?}");
    // One access token for the first push, one more after the refusal; each push accepted once.
    let oauth = format!("oauth:{HMS_APP_ID}");
    assert_eq!(env.mock.requests_for(&oauth), 2);
    assert_eq!(env.mock.requests_for(&token), 2);
    assert_eq!(deliveries_for(&env.mock, &token, 2).await.len(), 2);
    // A third push reuses the new token.
    let (_, third) = first_outcome(&env.app, &account).await;
    assert!(matches!(third, Kind::Delivered(_)), "{third:?}");
    assert_eq!(env.mock.requests_for(&oauth), 2);
}

per_store!(
    four_providers_each_receive_the_challenge_in_their_own_format,
    each_providers_dead_token_is_pruned_once_and_never_pushed_again,
    each_providers_throttle_is_retried_with_backoff,
    refused_credentials_are_provider_auth_failed,
    an_expired_hms_token_is_fetched_again_once_and_the_push_goes_through
);
