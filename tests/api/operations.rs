//! What operations depend on: a rolling restart loses no watcher and no push, `/metrics` carries the
//! documented metrics and they move with traffic, and the logs of a full run hold no secret and no
//! client address.

use crate::helpers::*;
use crate::push::{TOPIC, deliveries_for, enroll_apns, hex_token, trusting};
use crate::redis_server::RedisServer;
use crate::replicas::RelayProcess;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::mock_push::{Behavior, MockPush};
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand::rngs::OsRng;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tonic::Code;

/// An h2c APNs mock trusting a fresh provider key, and the relay flags that point at it.
pub(crate) struct ApnsMock {
    pub mock: MockPush,
    dir: PathBuf,
    pub flags: Vec<String>,
}

impl ApnsMock {
    pub async fn start() -> Self {
        let key = SigningKey::random(&mut OsRng);
        let mock = MockPush::start("127.0.0.1:0".parse().expect("addr"), false, trusting(&key))
            .await
            .expect("mock starts");
        let dir = std::env::temp_dir().join(format!("approval-relay-ops-{}", account()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key_file = dir.join("AuthKey.p8");
        let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem");
        std::fs::write(&key_file, pem.as_bytes()).expect("write key");
        let flags = vec![
            "--apns-url".into(),
            mock.base_url(),
            "--apns-key-file".into(),
            key_file.display().to_string(),
            "--apns-key-id".into(),
            "KEYID12345".into(),
            "--apns-team-id".into(),
            "TEAMID1234".into(),
        ];
        Self { mock, dir, flags }
    }

    pub fn tune(&self, c: &mut approval_relay::config::Config) {
        c.apns_url = self.mock.base_url();
        c.apns_key_file = Some(self.dir.join("AuthKey.p8"));
        c.apns_key_id = Some("KEYID12345".into());
        c.apns_team_id = Some("TEAMID1234".into());
    }
}

impl Drop for ApnsMock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn relaxed_limits() -> [&'static str; 10] {
    [
        "--max-pending-per-account",
        "1000",
        "--cooldown-base-secs",
        "0",
        "--fraud-mute-secs",
        "0",
        "--account-rate-per-minute",
        "0",
        "--source-rate-per-minute",
        "0",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_no_watcher_and_sends_no_push_twice() {
    let redis = RedisServer::start();
    let apns = ApnsMock::start().await;
    let mut flags: Vec<&str> = apns.flags.iter().map(String::as_str).collect();
    flags.extend(relaxed_limits());
    flags.extend(["--shutdown-grace-secs", "8"]);
    let mut leaving = RelayProcess::start_with(&redis.url(), &flags, &[], Stdio::null());
    let a = connect_to(leaving.backend, leaving.device, leaving.admin).await;
    let url = redis.url();
    let b = spawn_app_with(|c| {
        c.redis_url = Some(url);
        apns.tune(c);
    })
    .await;

    // Eight accounts with one iPhone each; the last four answer slowly, so their pushes are still in
    // flight when the replica is told to stop.
    let mut fleet = Vec::new();
    for i in 0..8 {
        let account = account();
        let token = hex_token();
        let phone = enroll_apns(&b, &account, &token).await;
        if i >= 4 {
            apns.mock
                .set_behavior(&token, Behavior::Slow(Duration::from_millis(1_500)));
        }
        fleet.push((account, token, phone));
    }
    let mut open = Vec::new();
    for (account, _, _) in &fleet {
        let challenge = a.create(account, pb::NumberMatchMode::None).await;
        let watch = a.watch(&challenge.challenge_id).await;
        open.push((challenge, watch));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    leaving.terminate();

    // Every watcher is told to reconnect, and does, on the other replica.
    let mut moved = Vec::new();
    for (challenge, mut watch) in open {
        let status = ending_status(&mut watch).await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("reconnect"), "{status:?}");
        let again = b.watch(&challenge.challenge_id).await;
        moved.push((challenge, again));
    }

    // The replica finished its in-flight pushes and exited cleanly within its grace period.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = leaving.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the replica outlived its grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "the replica exited with {exit}");
    for (_, token, _) in &fleet {
        let pushes = deliveries_for(&apns.mock, token, 1).await;
        assert_eq!(pushes.len(), 1, "push to {token}: {pushes:?}");
        assert_eq!(pushes[0].push_type, "alert");
    }

    // The owners answer through the remaining replica; each re-opened watch gets its ending.
    for ((challenge, watch), (_, _, phone)) in moved.into_iter().zip(fleet.iter_mut()) {
        b.approve(phone, &challenge).await.expect("approve on B");
        let events = drain(watch).await;
        assert!(
            matches!(decisive(&events).last(), Some(Kind::Approved(_))),
            "{events:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, token, _) in &fleet {
        assert_eq!(
            apns.mock.requests_for(token),
            1,
            "{token} was pushed more than once"
        );
    }
}

/// The admin listener's `/metrics` text.
pub(crate) async fn scrape(app: &TestApp) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.admin_addr)
        .await
        .expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// The sum of every series of `name` (any labels).
fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_named_in_the_readme_are_exposed_and_move_with_traffic() {
    let redis = RedisServer::start();
    let apns = ApnsMock::start().await;
    let url = redis.url();
    let app = spawn_app_with(|c| {
        c.redis_url = Some(url);
        c.max_pending_per_account = 1;
        apns.tune(c);
    })
    .await;
    let before = scrape(&app).await;
    let account = account();
    let mut phone = enroll_apns(&app, &account, &hex_token()).await;
    let _second = enroll_apns(&app, &account, &hex_token()).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let watch = app.watch(&challenge.challenge_id).await;
    let during = scrape(&app).await;
    let refused = app
        .create_with(pb::CreateChallengeRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await;
    assert_code(refused, Code::ResourceExhausted, "");
    app.approve(&mut phone, &challenge).await.expect("approve");
    drain(watch).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = scrape(&app).await;

    for (name, moved) in [
        ("relay_challenges_created_total", 1.0),
        ("relay_challenges_ended_total", 1.0),
        ("relay_decision_seconds_count", 1.0),
        ("relay_pushes_total", 1.0),
        ("relay_push_seconds_count", 1.0),
        ("relay_redis_seconds_count", 4.0),
        ("relay_limit_refusals_total", 1.0),
        ("relay_device_requests_refused_total", 0.0),
        ("relay_notices_total", 1.0),
    ] {
        let grew = total(&after, name) - total(&before, name);
        assert!(
            grew >= moved,
            "{name} grew by {grew}, expected at least {moved}\n{after}"
        );
    }
    assert!(
        total(&during, "relay_open_watch_streams") >= 1.0,
        "{during}"
    );
    for series in [
        "relay_challenges_ended_total{outcome=\"approved\"}",
        "relay_push_seconds_bucket{provider=\"apns\"",
        "relay_redis_seconds_bucket{kind=\"command\",outcome=\"ok\"",
        "relay_decision_seconds_bucket{",
        "relay_notices_total{kind=\"new_device\"}",
    ] {
        assert!(after.contains(series), "{series} missing\n{after}");
    }
    // Histograms, not summaries: quantiles cannot be summed across replicas, buckets can.
    assert!(!after.contains("relay_push_seconds{quantile"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_full_run_hold_no_token_key_signature_or_client_address() {
    let redis = RedisServer::start();
    let apns = ApnsMock::start().await;
    let log_path = apns.dir.join("relay.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut flags: Vec<&str> = apns.flags.iter().map(String::as_str).collect();
    flags.extend(relaxed_limits());
    flags.extend(["--log-format", "json"]);
    // Most verbose for our own code; other crates at info (their traces are frames and bytes).
    let relay = RelayProcess::start_with(
        &redis.url(),
        &flags,
        &[("RUST_LOG", "approval_relay=trace,info")],
        Stdio::from(log),
    );
    let app = connect_to(relay.backend, relay.device, relay.admin).await;

    let account = account();
    let token = hex_token();
    let ticket = app.ticket(&account).await;
    let key = PhoneKey::p256();
    let public_key = key.public_key();
    let mut phone = Phone::new(key);
    let enroll = phone.enroll_request(&ticket, pb::Platform::Apns, &token, TOPIC, "iPhone");
    let enroll_signature = enroll.signature.clone();
    phone.device_id = app
        .device
        .clone()
        .enroll(enroll)
        .await
        .expect("enroll")
        .into_inner()
        .device_id;
    let mut phone2 = enroll_apns(&app, &account, &hex_token()).await;
    let client_ip = "198.51.100.23";
    let create = |mode: pb::NumberMatchMode| pb::CreateChallengeRequest {
        account_id: account.clone(),
        number_match_mode: mode.into(),
        login_context: Some(pb::LoginContext {
            ip: client_ip.into(),
            location: "Lyon, France".into(),
            user_agent: "Firefox on Linux".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let first = app
        .create_with(create(pb::NumberMatchMode::Type))
        .await
        .expect("create")
        .challenge
        .expect("challenge");
    let watch = app.watch(&first.challenge_id).await;
    let no_number = app
        .respond(
            &mut phone,
            &first.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            0,
        )
        .await;
    assert_code(no_number, Code::InvalidArgument, "number");
    app.approve(&mut phone, &first).await.expect("approve");
    drain(watch).await;
    let second = app
        .create_with(create(pb::NumberMatchMode::None))
        .await
        .expect("create")
        .challenge
        .expect("challenge");
    let signed = phone2.signed(pb::device_request::Body::Respond(pb::RespondBody {
        challenge_id: second.challenge_id.clone(),
        decision: pb::Decision::ReportFraud.into(),
        deny_reason: pb::DenyReason::Unspecified.into(),
        number: 0,
    }));
    let fraud_signature = signed.signature.clone();
    app.device.clone().respond(signed).await.expect("fraud");
    // A replayed envelope: refused, suspected clone; logged without the bytes.
    let replay = phone2.signed(pb::device_request::Body::ListPending(
        pb::ListPendingBody {},
    ));
    let mut replayed = replay.clone();
    app.device.clone().list_pending(replay).await.expect("list");
    replayed.device_id = phone2.device_id.clone();
    let _ = app.device.clone().list_pending(replayed).await;
    // A sign-in notice with the same address: its details are not logged either.
    let sign_in = pb::SendSignInNoticeRequest {
        account_id: account.clone(),
        login_context: create(pb::NumberMatchMode::None).login_context,
        sign_in_id: "session-1".into(),
    };
    let notice = app
        .challenges
        .clone()
        .send_sign_in_notice(sign_in)
        .await
        .expect("sign-in notice")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(relay);

    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(
        logs.lines().count() >= 5
            && logs.contains(&first.challenge_id)
            && logs.contains(&notice.notice_id),
        "the run was not logged as expected:\n{logs}"
    );
    let b64 = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let secrets = [
        ("push token", token.clone()),
        ("enrollment ticket", ticket.clone()),
        ("public key (base64)", b64(&public_key)),
        ("public key (hex)", hex(&public_key)),
        ("signature (base64)", b64(&enroll_signature)),
        ("signature (hex)", hex(&fraud_signature)),
        ("client address", client_ip.to_owned()),
    ];
    for line in logs.lines() {
        for (what, secret) in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a log line holds a {what}: {line}"
            );
        }
    }
}
