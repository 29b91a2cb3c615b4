//! Several replicas on one Redis behave as one service: watch on one, answer on another; Redis killed
//! and restarted; a replica killed.

use crate::helpers::*;
use crate::redis_server::RedisServer;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use std::time::{Duration, Instant};
use tonic::Code;

async fn two_replicas(redis: &RedisServer) -> (TestApp, TestApp) {
    let url = redis.url();
    let a = spawn_app_with(|c| c.redis_url = Some(url.clone())).await;
    let b = spawn_app_with(|c| c.redis_url = Some(url)).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_replica_sees_every_ending_made_on_another() {
    let redis = RedisServer::start();
    let (a, b) = two_replicas(&redis).await;
    let account = account();
    let mut phone = b.enroll(&account).await;

    let approved = a.create(&account, pb::NumberMatchMode::Type).await;
    let watch = a.watch(&approved.challenge_id).await;
    b.approve(&mut phone, &approved)
        .await
        .expect("approve on B");
    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::Approved(_)]
    ));

    let denied = a.create(&account, pb::NumberMatchMode::Type).await;
    let watch = a.watch(&denied.challenge_id).await;
    b.respond(
        &mut phone,
        &denied.challenge_id,
        pb::Decision::Deny,
        pb::DenyReason::NotMe,
        0,
    )
    .await
    .expect("deny on B");
    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::Denied(_)]
    ));

    let fraud = a.create(&account, pb::NumberMatchMode::Type).await;
    let watch = a.watch(&fraud.challenge_id).await;
    b.respond(
        &mut phone,
        &fraud.challenge_id,
        pb::Decision::ReportFraud,
        pb::DenyReason::Unspecified,
        0,
    )
    .await
    .expect("fraud");
    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::FraudReported(_)]
    ));

    let cancelled = a.create(&account, pb::NumberMatchMode::Type).await;
    let watch = a.watch(&cancelled.challenge_id).await;
    let req = pb::CancelChallengeRequest {
        challenge_id: cancelled.challenge_id.clone(),
    };
    b.challenges
        .clone()
        .cancel_challenge(req)
        .await
        .expect("cancel on B");
    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::Cancelled(_)]
    ));

    let expiring = b.create_short(&account, 1).await;
    let watch = a.watch(&expiring.challenge_id).await;
    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::Expired(_)]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_answering_through_two_replicas_yield_one_terminal_state_every_time() {
    let redis = RedisServer::start();
    let (a, b) = two_replicas(&redis).await;
    let account = account();
    let mut phones = [
        a.enroll(&account).await,
        a.enroll(&account).await,
        a.enroll(&account).await,
    ];
    for round in 0..40 {
        let challenge = a.create(&account, pb::NumberMatchMode::Type).await;
        let watch = b.watch(&challenge.challenge_id).await;
        let [p1, p2, p3] = &mut phones;
        let id = challenge.challenge_id.as_str();
        let (r1, r2, r3) = tokio::join!(
            a.approve(p1, &challenge),
            b.respond(p2, id, pb::Decision::Deny, pb::DenyReason::NotMe, 0),
            b.respond(
                p3,
                id,
                pb::Decision::ReportFraud,
                pb::DenyReason::Unspecified,
                0
            ),
        );
        let winners: Vec<_> = [r1, r2, r3].into_iter().filter_map(Result::ok).collect();
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(a.get(id).await.state(), winners[0], "round {round}");
        let terminals = decisive(&drain(watch).await).len() - 1;
        assert_eq!(terminals, 1, "round {round}: one terminal event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_or_a_device_revoked_through_one_replica_counts_at_once_on_another() {
    use approval_relay::challenge::DeviceId;
    use approval_relay::device_sim::PhoneKey;
    use approval_relay::pb::device_request::Body;
    use approval_relay::relay::rotate_key_message;
    let redis = RedisServer::start();
    let (a, b) = two_replicas(&redis).await;
    let account = account();
    let mut phone = a.enroll(&account).await;
    let _other = a.enroll(&account).await;

    // Each round: B verifies a request of the phone, so it holds the device (and its key) as it read
    // them; the key is rotated through A; a copy of the old key then signs a well-formed request that
    // B's copy of the device verifies, and the store step refuses it (the key is no longer the
    // device's), changes nothing, and counts and records it as a failed authentication.
    let challenge = a.create(&account, pb::NumberMatchMode::Type).await;
    let probes = ["respond", "get_challenge", "rotate_key"];
    for probe in probes {
        assert_eq!(b.list_pending(&mut phone).await.len(), 1);
        let mut old = phone.clone();
        a.rotate_key(&mut phone, PhoneKey::p256()).await;
        let refused = match probe {
            "respond" => b.approve(&mut old, &challenge).await.map(|_| ()),
            "get_challenge" => {
                let get = old.signed(Body::GetChallenge(pb::GetChallengeBody {
                    challenge_id: challenge.challenge_id.clone(),
                }));
                b.device.clone().get_challenge(get).await.map(|_| ())
            }
            _ => {
                // Whoever holds the old key tries to take the device over with a key of their own.
                let theirs = PhoneKey::p256();
                let device = DeviceId::parse(&old.device_id).expect("issued id");
                let body = pb::RotateKeyBody {
                    new_key_algorithm: theirs.algorithm().into(),
                    new_public_key: theirs.public_key(),
                    new_key_proof: theirs
                        .sign(rotate_key_message(&device, old.counter + 1).as_bytes()),
                };
                let req = old.signed(Body::RotateKey(body));
                b.device.clone().rotate_key(req).await.map(|_| ())
            }
        };
        assert_code(refused, Code::Unauthenticated, "signature");
        assert_eq!(
            a.get(&challenge.challenge_id).await.state(),
            pb::ChallengeState::Pending,
            "{probe}: the old key's request changed nothing"
        );
    }
    let recorded = a
        .audit_details(&account)
        .await
        .iter()
        .filter(|(k, d)| *k == pb::AuditKind::RequestRefused && d == "bad_signature")
        .count();
    assert_eq!(recorded, probes.len(), "each refusal is in the trail");
    // The key the phone holds now works on B, and so does the next one, rotated through A while B held
    // this one.
    assert_eq!(b.list_pending(&mut phone).await.len(), 1);
    a.rotate_key(&mut phone, PhoneKey::p256()).await;
    assert_eq!(b.list_pending(&mut phone).await.len(), 1);

    // Revoked through A while B holds the device with the new key: refused on B.
    a.registry
        .clone()
        .revoke_device(pb::RevokeDeviceRequest {
            account_id: account.clone(),
            device_id: phone.device_id.clone(),
        })
        .await
        .expect("revoke on A");
    assert_code(
        b.approve(&mut phone, &challenge).await,
        Code::PermissionDenied,
        "revoked",
    );
    assert_eq!(
        a.get(&challenge.challenge_id).await.state(),
        pb::ChallengeState::Pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_survive_a_redis_kill_and_restart_and_no_acknowledged_decision_is_lost() {
    let mut redis = RedisServer::start();
    let (a, b) = two_replicas(&redis).await;
    let account = account();
    let mut phone = b.enroll(&account).await;
    let _second = b.enroll(&account).await;

    // Decided before the crash: must survive it.
    let decided = a.create(&account, pb::NumberMatchMode::Type).await;
    b.approve(&mut phone, &decided)
        .await
        .expect("acknowledged approval");
    // Pending across the crash, watched on A: one approved after the restart, one left to expire.
    let to_approve = a.create(&account, pb::NumberMatchMode::Type).await;
    let to_expire = a.create_short(&account, 4).await;
    let watch_approve = a.watch(&to_approve.challenge_id).await;
    let watch_expire = a.watch(&to_expire.challenge_id).await;

    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down = a
        .create_with(pb::CreateChallengeRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await;
    assert_code(down, Code::Unavailable, "store unavailable");
    redis.restart();

    // New challenges work again within a few seconds.
    let started = Instant::now();
    loop {
        let req = pb::CreateChallengeRequest {
            account_id: account.clone(),
            ..Default::default()
        };
        match a.create_with(req).await {
            Ok(_) => break,
            Err(status) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "still failing after restart: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // B's first call after the restart may meet its dropped connection (UNAVAILABLE, retried as a
    // client would); what matters is that the acknowledged decision is still there.
    let mut kept = None;
    for _ in 0..20 {
        let req = pb::GetChallengeRequest {
            challenge_id: decided.challenge_id.clone(),
        };
        if let Ok(c) = b.challenges.clone().get_challenge(req).await {
            kept = Some(c.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        kept.expect("readable after restart").state(),
        pb::ChallengeState::Approved,
        "acknowledged decision kept"
    );

    let mut retry = 0;
    while let Err(status) = b.approve(&mut phone, &to_approve).await {
        retry += 1;
        assert!(
            retry < 20,
            "approval after restart keeps failing: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        decisive(&drain(watch_approve).await).last(),
        Some(Kind::Approved(_))
    ));
    assert!(matches!(
        decisive(&drain(watch_expire).await).last(),
        Some(Kind::Expired(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_creating_replica_is_killed_watchers_elsewhere_still_get_expired_on_time() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut creator = RelayProcess::start(&url);
    let watcher = spawn_app_with(|c| c.redis_url = Some(url.clone())).await;
    let account = account();
    let _phone = watcher.enroll(&account).await;

    let mut backend =
        pb::challenge_service_client::ChallengeServiceClient::new(channel(creator.backend).await);
    let req = pb::CreateChallengeRequest {
        account_id: account.clone(),
        ttl_seconds: 2,
        ..Default::default()
    };
    let challenge = backend
        .create_challenge(req)
        .await
        .expect("create on the doomed replica")
        .into_inner()
        .challenge
        .expect("c");
    let watch = watcher.watch(&challenge.challenge_id).await;
    creator.kill();

    let events = drain(watch).await;
    assert!(
        matches!(decisive(&events).last(), Some(Kind::Expired(_))),
        "{events:?}"
    );
    let ended = watcher.get(&challenge.challenge_id).await;
    let late_by = ended.ended_at_unix_ms - ended.expires_at_unix_ms;
    assert!(
        (0..1_000).contains(&late_by),
        "expired {late_by} ms after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_left_after_a_run_has_a_ttl_or_a_cap() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|c| c.redis_url = Some(redis.url())).await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    for _ in 0..3 {
        let c = app.create(&account, pb::NumberMatchMode::Type).await;
        app.approve(&mut phone, &c).await.expect("approve");
    }
    let idem = pb::CreateChallengeRequest {
        account_id: account.clone(),
        idempotency_key: "k".into(),
        ..Default::default()
    };
    app.create_with(idem).await.expect("idempotent create");
    let _unused_ticket = app.ticket(&account).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("keys");
    assert!(keys.len() >= 8, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).expect("ttl");
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).expect("type");
        let capped_stream = kind == "stream"; // capped with MAXLEN ~ on every append
        assert!(ttl > 0 || capped_stream, "{key} ({kind}) has no TTL");
    }
}

/// A device's hash and its account's device list keep their 400-day TTL while the device is in use:
/// the first accepted call of a day renews both, later ones that day leave them (one PEXPIRE a day).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_in_use_renews_its_ttls_once_a_day() {
    const HOUR_MS: i64 = 3_600_000;
    const DAYS_399_MS: i64 = 399 * 86_400_000;
    let redis = RedisServer::start();
    let app = spawn_app_with(|c| c.redis_url = Some(redis.url())).await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    let mut conn = redis.connection();
    let only = |pattern: &str, conn: &mut redis::Connection| -> String {
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(conn).expect("keys");
        assert_eq!(keys.len(), 1, "{pattern}: {keys:?}");
        keys.into_iter().next().expect("one key")
    };
    let (device, list) = (only("*:dev:*", &mut conn), only("*:devs:*", &mut conn));
    let ttl = |key: &str, conn: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL").arg(key).query(conn).expect("pttl")
    };
    for key in [&device, &list] {
        assert!(
            ttl(key, &mut conn) > DAYS_399_MS,
            "{key} starts with 400 days"
        );
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(key)
            .arg(HOUR_MS)
            .query(&mut conn)
            .expect("pexpire");
    }

    // Renewed at enrollment, under a day ago: an accepted call leaves the TTLs.
    app.list_pending(&mut phone).await;
    for key in [&device, &list] {
        assert!(
            ttl(key, &mut conn) <= HOUR_MS,
            "{key} was renewed again within the day"
        );
    }

    // A day later (its mark set back), the next accepted call renews both.
    let _: i64 = redis::cmd("HSET")
        .arg(&device)
        .arg("renewed")
        .arg(0)
        .query(&mut conn)
        .expect("hset");
    app.list_pending(&mut phone).await;
    for key in [&device, &list] {
        assert!(
            ttl(key, &mut conn) > DAYS_399_MS,
            "{key} was not renewed after a day"
        );
    }
}

/// The relay binary as a separate process, so that it can be killed for real.
pub(crate) struct RelayProcess {
    pub child: std::process::Child,
    pub backend: std::net::SocketAddr,
    pub device: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

impl RelayProcess {
    pub fn start(redis_url: &str) -> Self {
        Self::start_with(redis_url, &[], &[], std::process::Stdio::null())
    }

    /// Starts with `extra` flags and `env` variables; its logs (stderr) go to `logs`.
    pub fn start_with(
        redis_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        logs: std::process::Stdio,
    ) -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("port")
        };
        let (backend, device, admin) = (port(), port(), port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_approval-relay"))
            .arg("serve")
            .args(["--redis-url", redis_url, "--min-ttl-secs", "1"])
            .args([
                "--backend-addr",
                &backend.to_string(),
                "--device-addr",
                &device.to_string(),
            ])
            .args(["--admin-addr", &admin.to_string()])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(logs)
            .spawn()
            .expect("the relay binary starts");
        Self {
            child,
            backend,
            device,
            admin,
        }
    }

    /// SIGTERM, as an orchestrator stops a replica.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "SIGTERM delivered");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
