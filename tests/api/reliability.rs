//! An acknowledged challenge is pushed, or reported undeliverable, whatever dies (DESIGN.md guarantee 3
//! and STYLE.md point 18): a creating replica killed with its pushes in flight, and a create whose
//! answer was lost on the way back from Redis, on real processes and real Redis (node and Cluster).

use crate::helpers::*;
use crate::operations::{ApnsMock, relaxed_limits};
use crate::push::{enroll_apns, hex_token};
use crate::redis_server::{RedisCluster, RedisServer};
use approval_relay::mock_push::Behavior;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The relay binary on `store` flags, so that it can be killed with SIGKILL.
struct Replica {
    child: std::process::Child,
    app: TestApp,
}

impl Replica {
    async fn start(store: &[&str], extra: &[&str]) -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("port")
        };
        let (backend, device, admin) = (port(), port(), port());
        let child = Command::new(env!("CARGO_BIN_EXE_approval-relay"))
            .arg("serve")
            .args(store)
            .args([
                "--backend-addr",
                &backend.to_string(),
                "--device-addr",
                &device.to_string(),
            ])
            .args(["--admin-addr", &admin.to_string()])
            .args(relaxed_limits())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the relay binary starts");
        let app = connect_to(backend, device, admin).await;
        Self { child, app }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a watch until its push outcome for one device, or fails after `within`.
pub(crate) async fn outcome(
    watch: &mut tonic::Streaming<pb::ChallengeEvent>,
    within: Duration,
) -> Kind {
    tokio::time::timeout(within, async {
        loop {
            let event = watch
                .message()
                .await
                .expect("the watch goes on")
                .expect("open");
            match event.kind.expect("kind") {
                k @ (Kind::Delivered(_) | Kind::DeliveryFailed(_)) => return k,
                Kind::Snapshot(c) => {
                    // A late watch learns an outcome from the snapshot.
                    if let Some(d) = c
                        .deliveries
                        .iter()
                        .find(|d| d.state() != pb::DeliveryState::Pending)
                    {
                        return if d.state() == pb::DeliveryState::Delivered {
                            Kind::Delivered(pb::Delivered {
                                device_id: d.device_id.clone(),
                                platform: d.platform,
                                fallback: d.fallback,
                            })
                        } else {
                            Kind::DeliveryFailed(pb::DeliveryFailed {
                                device_id: d.device_id.clone(),
                                reason: d.reason.clone(),
                            })
                        };
                    }
                }
                other => panic!("the challenge ended before its push outcome: {other:?}"),
            }
        }
    })
    .await
    .expect("a push outcome in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_creating_replicas_pushes_are_sent_by_the_survivor_on_redis() {
    let redis = RedisServer::start();
    let apns = ApnsMock::start().await;
    let url = redis.url();
    let survivor = spawn_app_with(|c| {
        c.redis_url = Some(url.clone());
        apns.tune(c);
    })
    .await;
    pushes_of_a_killed_replica_are_taken_over_with(vec!["--redis-url".into(), url], survivor, apns)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_creating_replicas_pushes_are_sent_by_the_survivor_on_a_cluster() {
    let cluster = RedisCluster::start();
    let apns = ApnsMock::start().await;
    let seeds = cluster.seeds();
    let survivor = spawn_app_with(|c| {
        c.redis_cluster_nodes = Some(seeds.clone());
        apns.tune(c);
    })
    .await;
    pushes_of_a_killed_replica_are_taken_over_with(
        vec!["--redis-cluster-nodes".into(), seeds],
        survivor,
        apns,
    )
    .await;
}

/// Kill -9 the creating replica while the provider holds its pushes: the surviving replica takes them
/// over, every watcher (re-attached there) hears DELIVERED or DELIVERY_FAILED, before the deadline.
async fn pushes_of_a_killed_replica_are_taken_over_with(
    store: Vec<String>,
    survivor: TestApp,
    apns: ApnsMock,
) {
    let mut flags: Vec<&str> = apns.flags.iter().map(String::as_str).collect();
    flags.extend(["--min-ttl-secs", "1"]);
    let store_flags: Vec<&str> = store.iter().map(String::as_str).collect();
    let mut creator = Replica::start(&store_flags, &flags).await;
    let mut fleet = Vec::new();
    for _ in 0..5 {
        let account = account();
        let token = hex_token();
        let _phone = enroll_apns(&creator.app, &account, &token).await;
        fleet.push((account, token));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, token) in &fleet {
        // Held long enough that the creator is dead before any answer.
        apns.mock
            .set_behavior(token, Behavior::Slow(Duration::from_millis(1_500)));
    }
    let mut watches = Vec::new();
    for (account, _) in &fleet {
        let challenge = creator
            .app
            .create_with(pb::CreateChallengeRequest {
                account_id: account.clone(),
                ttl_seconds: 30,
                number_match_mode: pb::NumberMatchMode::None.into(),
                ..Default::default()
            })
            .await
            .expect("acknowledged")
            .challenge
            .expect("challenge");
        let watch = survivor.watch(&challenge.challenge_id).await;
        watches.push((challenge, watch));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    creator.kill();
    for (challenge, watch) in &mut watches {
        let seen = outcome(watch, Duration::from_secs(15)).await;
        assert!(
            matches!(seen, Kind::Delivered(_) | Kind::DeliveryFailed(_)),
            "{seen:?}"
        );
        assert!(
            approval_relay::clock::now_ms() < challenge.expires_at_unix_ms,
            "before the deadline"
        );
    }
    for (_, token) in &fleet {
        assert!(
            apns.mock.requests_for(token) >= 2,
            "the survivor sent {token} again"
        );
    }
}

/// A TCP proxy in front of Redis that, once armed, drops the connection right after forwarding the
/// first request that names `needle`: Redis runs it, the relay never sees the answer.
struct LossyProxy {
    addr: std::net::SocketAddr,
    armed: Arc<AtomicBool>,
}

impl LossyProxy {
    async fn start(upstream: u16, needle: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let armed = Arc::new(AtomicBool::new(false));
        let trap = Arc::clone(&armed);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (trap, needle) = (Arc::clone(&trap), needle.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let lost = AtomicBool::new(false);
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut until: Option<tokio::time::Instant> = None;
                        loop {
                            let read = match until {
                                None => cr.read(&mut buf).await,
                                Some(t) => {
                                    match tokio::time::timeout_at(t, cr.read(&mut buf)).await {
                                        Ok(r) => r,
                                        // Redis had the whole request and ran it: now lose the connection.
                                        Err(_) => return,
                                    }
                                }
                            };
                            let n = match read {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            let hit = buf[..n]
                                .windows(needle.len())
                                .any(|w| w == needle.as_bytes());
                            if until.is_none() && hit && trap.swap(false, Ordering::SeqCst) {
                                // The rest of the request still goes through; no answer comes back.
                                lost.store(true, Ordering::SeqCst);
                                until =
                                    Some(tokio::time::Instant::now() + Duration::from_millis(150));
                            }
                        }
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if lost.load(Ordering::SeqCst) {
                                continue;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! { () = up => {}, () = down => {} }
                });
            }
        });
        Self { addr, armed }
    }
}

/// A create whose answer was lost: with and without the backend's idempotent retry, the phone is pushed
/// exactly once.
async fn a_create_whose_answer_was_lost_is_pushed_exactly_once(retry: bool) {
    let redis = RedisServer::start();
    let account = account();
    // The idempotency key names the create step alone (the reads that evaluate the sign-in before it
    // name only the account).
    let proxy = LossyProxy::start(redis.port, "sign-in-7".into()).await;
    let url = format!("redis://{}", proxy.addr);
    let app = spawn_app_with(|c| c.redis_url = Some(url)).await;
    let _phone = app.enroll(&account).await;
    // One create first, so that Redis has the script and the trapped call is the script itself (a
    // first EVALSHA answers NOSCRIPT and runs nothing).
    let warm = app.create(&account, pb::NumberMatchMode::None).await;
    app.challenges
        .clone()
        .cancel_challenge(pb::CancelChallengeRequest {
            challenge_id: warm.challenge_id.clone(),
        })
        .await
        .expect("cancel");
    app.pushes_for(&warm.challenge_id, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = pb::CreateChallengeRequest {
        account_id: account.clone(),
        idempotency_key: "sign-in-7".into(),
        number_match_mode: pb::NumberMatchMode::None.into(),
        ttl_seconds: 30,
        ..Default::default()
    };
    proxy.armed.store(true, Ordering::SeqCst);
    let first = app.create_with(request.clone()).await;
    let status = first.expect_err("the answer was lost on the way back");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("broken pipe"), "{status:?}");
    let deadline = Instant::now() + Duration::from_secs(8);
    let challenge = if retry {
        let again = app.create_with(request).await.expect("the retry");
        assert!(!again.created, "the first create had committed");
        again.challenge.expect("challenge")
    } else {
        loop {
            // Find it without the backend's help: the account's one pending challenge.
            let pending: Vec<_> = app
                .sink
                .sent()
                .into_iter()
                .filter(|m| {
                    m.kind == approval_relay::push::PushKind::Challenge && m.id != warm.challenge_id
                })
                .collect();
            if let Some(m) = pending.first() {
                break app.get(&m.id).await;
            }
            assert!(
                Instant::now() < deadline,
                "the sweep never found the orphaned pushes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    while app.pushes_for(&challenge.challenge_id, 1).await.is_empty() {
        assert!(Instant::now() < deadline, "never pushed");
    }
    // Another lease and sweep later, still exactly one push.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let pushes: Vec<_> = app
        .sink
        .sent()
        .into_iter()
        .filter(|m| {
            m.id == challenge.challenge_id && m.kind == approval_relay::push::PushKind::Challenge
        })
        .collect();
    assert_eq!(pushes.len(), 1, "pushed exactly once: {pushes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_pushed_once_when_the_backend_retries() {
    a_create_whose_answer_was_lost_is_pushed_exactly_once(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_pushed_once_by_the_sweep_alone() {
    a_create_whose_answer_was_lost_is_pushed_exactly_once(false).await;
}
