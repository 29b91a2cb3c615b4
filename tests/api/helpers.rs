//! `spawn_app()` starts the relay in this process on port 0 and returns a `TestApp` with typed helpers.

use approval_relay::app::App;
use approval_relay::config::Config;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::pb::audit_service_client::AuditServiceClient;
use approval_relay::pb::challenge_service_client::ChallengeServiceClient;
use approval_relay::pb::device_registry_client::DeviceRegistryClient;
use approval_relay::pb::device_request::Body;
use approval_relay::pb::device_service_client::DeviceServiceClient;
use approval_relay::push::SinkProvider;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub struct TestApp {
    pub challenges: ChallengeServiceClient<Channel>,
    pub registry: DeviceRegistryClient<Channel>,
    pub audit: AuditServiceClient<Channel>,
    pub device: DeviceServiceClient<Channel>,
    pub sink: Arc<SinkProvider>,
    pub hub: Arc<approval_relay::watch::Hub>,
    pub redis: Option<crate::redis_server::RedisServer>,
    pub cluster: Option<crate::redis_server::RedisCluster>,

    pub backend_addr: SocketAddr,
    pub device_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tune: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::ephemeral();
    config.min_ttl_secs = 1;
    // Most tests open many challenges per account; the limits tests turn the limits back on.
    config.max_pending_per_account = 1_000;
    config.cooldown_base_secs = 0;
    config.fraud_mute_secs = 0;
    config.account_rate_per_minute = 0;
    config.source_rate_per_minute = 0;
    tune(&mut config);
    let app = App::build(config).await.expect("the relay starts");
    let (backend_addr, device_addr, admin_addr) =
        (app.backend_addr(), app.device_addr(), app.admin_addr());
    let sink = app.sink();
    let hub = app.hub();
    let (stop, stopped_rx) = oneshot::channel::<()>();
    let stopped = tokio::spawn(app.run(async move {
        let _ = stopped_rx.await;
    }));
    let mut app = connect_to(backend_addr, device_addr, admin_addr).await;
    app.sink = sink;
    app.hub = hub;
    app.stop = Some(stop);
    app.stopped = Some(stopped);
    app
}

/// Clients of a relay running elsewhere (another process); its sink and hub are not visible.
pub async fn connect_to(
    backend_addr: SocketAddr,
    device_addr: SocketAddr,
    admin_addr: SocketAddr,
) -> TestApp {
    let backend = channel(backend_addr).await;
    let device = channel(device_addr).await;
    TestApp {
        challenges: ChallengeServiceClient::new(backend.clone()),
        registry: DeviceRegistryClient::new(backend.clone()),
        audit: AuditServiceClient::new(backend),
        device: DeviceServiceClient::new(device),
        sink: Arc::new(SinkProvider::default()),
        hub: approval_relay::watch::Hub::new(),
        redis: None,
        cluster: None,
        backend_addr,
        device_addr,
        admin_addr,
        stop: None,
        stopped: None,
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    for _ in 0..50 {
        if let Ok(c) = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {addr}");
}

/// A unique account name per test, so parallel tests never share state.
pub fn account() -> String {
    format!("user-{}@example.com", rand_suffix())
}

pub fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 40)
}

impl TestApp {
    /// Sends the shutdown signal.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn ticket(&self, account: &str) -> String {
        let req = pb::CreateEnrollmentRequest {
            account_id: account.into(),
            ttl_seconds: 0,
        };
        self.registry
            .clone()
            .create_enrollment(req)
            .await
            .expect("enrollment")
            .into_inner()
            .ticket
    }

    pub async fn enroll_with(&self, account: &str, key: PhoneKey, platform: pb::Platform) -> Phone {
        let ticket = self.ticket(account).await;
        let mut phone = Phone::new(key);
        let token = format!("token-{}", rand_suffix());
        let req = phone.enroll_request(
            &ticket,
            platform,
            &token,
            "com.example.authenticator",
            "Test phone",
        );
        phone.device_id = self
            .device
            .clone()
            .enroll(req)
            .await
            .expect("enroll")
            .into_inner()
            .device_id;
        phone
    }

    pub async fn enroll(&self, account: &str) -> Phone {
        self.enroll_with(account, PhoneKey::p256(), pb::Platform::Fcm)
            .await
    }

    /// Rotates the phone's key to `new_key` (RotateKey, with its proof of possession); the phone signs
    /// with it from then on, its counter started again.
    pub async fn rotate_key(&self, phone: &mut Phone, new_key: PhoneKey) -> pb::DeviceAck {
        let device =
            approval_relay::challenge::DeviceId::parse(&phone.device_id).expect("issued id");
        let next = phone.counter + 1;
        let body = pb::RotateKeyBody {
            new_key_algorithm: new_key.algorithm().into(),
            new_public_key: new_key.public_key(),
            new_key_proof: new_key
                .sign(approval_relay::relay::rotate_key_message(&device, next).as_bytes()),
        };
        let ack = self
            .device
            .clone()
            .rotate_key(phone.signed(Body::RotateKey(body)))
            .await
            .expect("rotated")
            .into_inner();
        phone.key = new_key;
        phone.counter = 0;
        ack
    }

    pub async fn create_with(
        &self,
        req: pb::CreateChallengeRequest,
    ) -> Result<pb::CreateChallengeResponse, Status> {
        self.challenges
            .clone()
            .create_challenge(req)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn create(&self, account: &str, mode: pb::NumberMatchMode) -> pb::Challenge {
        let req = pb::CreateChallengeRequest {
            account_id: account.into(),
            login_context: Some(pb::LoginContext {
                ip: "203.0.113.7".into(),
                location: "Lyon, France".into(),
                user_agent: "Firefox 140 on Linux".into(),
                signing_in_device_name: "Work laptop".into(),
                signing_in_device_id: String::new(),
                ..Default::default()
            }),
            number_match_mode: mode.into(),
            ..Default::default()
        };
        self.create_with(req)
            .await
            .expect("create")
            .challenge
            .expect("challenge")
    }

    pub async fn create_short(&self, account: &str, ttl_seconds: u32) -> pb::Challenge {
        let req = pb::CreateChallengeRequest {
            account_id: account.into(),
            ttl_seconds,
            number_match_mode: pb::NumberMatchMode::None.into(),
            ..Default::default()
        };
        self.create_with(req)
            .await
            .expect("create")
            .challenge
            .expect("challenge")
    }

    pub async fn watch(&self, id: &str) -> Streaming<pb::ChallengeEvent> {
        let req = pb::WatchChallengeRequest {
            challenge_id: id.into(),
        };
        self.challenges
            .clone()
            .watch_challenge(req)
            .await
            .expect("watch")
            .into_inner()
    }

    /// The phone's ListPending answer.
    pub async fn list_pending(&self, phone: &mut Phone) -> Vec<pb::DeviceChallenge> {
        self.device
            .clone()
            .list_pending(phone.signed(Body::ListPending(pb::ListPendingBody {})))
            .await
            .expect("list pending")
            .into_inner()
            .challenges
    }

    pub async fn get(&self, id: &str) -> pb::Challenge {
        let req = pb::GetChallengeRequest {
            challenge_id: id.into(),
        };
        self.challenges
            .clone()
            .get_challenge(req)
            .await
            .expect("get")
            .into_inner()
    }

    pub async fn respond(
        &self,
        phone: &mut Phone,
        id: &str,
        decision: pb::Decision,
        reason: pb::DenyReason,
        number: u32,
    ) -> Result<pb::ChallengeState, Status> {
        let body = pb::RespondBody {
            challenge_id: id.into(),
            decision: decision.into(),
            deny_reason: reason.into(),
            number,
        };
        let req = phone.signed(Body::Respond(body));
        self.device
            .clone()
            .respond(req)
            .await
            .map(|r| r.into_inner().state())
    }

    pub async fn approve(
        &self,
        phone: &mut Phone,
        challenge: &pb::Challenge,
    ) -> Result<pb::ChallengeState, Status> {
        self.respond(
            phone,
            &challenge.challenge_id,
            pb::Decision::Approve,
            pb::DenyReason::Unspecified,
            challenge.number,
        )
        .await
    }

    pub async fn audit_details(&self, account: &str) -> Vec<(pb::AuditKind, String)> {
        let req = pb::ListAuditEventsRequest {
            account_id: account.into(),
            page_size: 500,
            page_token: String::new(),
        };
        let page = self
            .audit
            .clone()
            .list_audit_events(req)
            .await
            .expect("audit")
            .into_inner();
        page.events
            .iter()
            .map(|e| (e.kind(), e.detail.clone()))
            .collect()
    }

    pub async fn devices(&self, account: &str) -> Vec<pb::DeviceInfo> {
        let req = pb::ListDevicesRequest {
            account_id: account.into(),
        };
        self.registry
            .clone()
            .list_devices(req)
            .await
            .expect("devices")
            .into_inner()
            .devices
    }

    /// Waits until the sink has recorded `n` pushes for a challenge.
    pub async fn pushes_for(&self, id: &str, n: usize) -> Vec<approval_relay::push::PushMessage> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let pushes: Vec<_> = self
                .sink
                .sent()
                .into_iter()
                .filter(|m| m.id == id)
                .collect();
            if pushes.len() >= n || tokio::time::Instant::now() > deadline {
                return pushes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a watch to its end (or fails the test after `PATIENCE`).
pub async fn drain(mut stream: Streaming<pb::ChallengeEvent>) -> Vec<pb::challenge_event::Kind> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, stream.message()).await {
            Err(_) => panic!("watch did not end in time; got {out:?}"),
            Ok(Err(status)) => panic!("watch failed: {status:?} after {out:?}"),
            Ok(Ok(None)) => return out,
            Ok(Ok(Some(event))) => out.push(event.kind.expect("event kind")),
        }
    }
}

/// The events of a drained watch with delivery reports removed.
pub fn decisive(events: &[pb::challenge_event::Kind]) -> Vec<&pb::challenge_event::Kind> {
    use pb::challenge_event::Kind;
    events
        .iter()
        .filter(|k| !matches!(k, Kind::Delivered(_) | Kind::DeliveryFailed(_)))
        .collect()
}

/// Reads `watch` until it ends with an error status (what a draining replica sends) and returns it.
pub async fn ending_status(watch: &mut Streaming<pb::ChallengeEvent>) -> Status {
    loop {
        match tokio::time::timeout(PATIENCE, watch.message())
            .await
            .expect("the watch ends in time")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watch must end with a status telling the client to reconnect"),
            Err(status) => return status,
        }
    }
}

/// Creating a challenge for `account` fails: it has no device that may be pushed.
pub async fn assert_no_active_device(app: &TestApp, account: &str) {
    assert_code(
        app.create_with(pb::CreateChallengeRequest {
            account_id: account.into(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "no active device",
    );
}

pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, contains: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} ({contains}), got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "wrong code: {s:?}");
            assert!(
                s.message().contains(contains),
                "message {:?} should contain {contains:?}",
                s.message()
            );
        }
    }
}

pub fn wrong(number: u32) -> u32 {
    if number == 99 { 98 } else { number + 1 }
}

/// A relay on the named store (`memory`, `redis` or `cluster`), configured by `tune`; the Redis servers
/// live as long as the app.
pub async fn spawn_app_on(
    store: &str,
    tune: impl FnOnce(&mut approval_relay::config::Config),
) -> TestApp {
    match store {
        "memory" => spawn_app_with(tune).await,
        "redis" => {
            let redis = crate::redis_server::RedisServer::start();
            let url = redis.url();
            let mut app = spawn_app_with(|c| {
                tune(c);
                c.redis_url = Some(url);
            })
            .await;
            app.redis = Some(redis);
            app
        }
        _ => {
            let cluster = crate::redis_server::RedisCluster::start();
            let seeds = cluster.seeds();
            let mut app = spawn_app_with(|c| {
                tune(c);
                c.redis_cluster_nodes = Some(seeds);
            })
            .await;
            app.cluster = Some(cluster);
            app
        }
    }
}

/// Runs each named `async fn(TestApp)` on the in-memory store, a real Redis node and a real Redis
/// Cluster, so that the stores cannot drift apart (the conformance suite of the `Store` contract,
/// through the API).
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::helpers::spawn_app_on("memory", |_| {}).await).await
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::helpers::spawn_app_on("redis", |_| {}).await).await
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::helpers::spawn_app_on("cluster", |_| {}).await).await
                }
            )*
        }
    };
}

/// Runs each named `async fn(&str)` once per store ("memory", "redis", "cluster"), for tests that tune
/// the configuration themselves through [`spawn_app_on`].
macro_rules! per_store {
    ($($name:ident),*) => {
        mod memory_store_tuned { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("memory").await } )* }
        mod redis_store_tuned { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("redis").await } )* }
        mod redis_cluster_tuned { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("cluster").await } )* }
    };
}

/// Waits for the next security event of `kind` on `account` (from the oldest retained one).
pub async fn security_event(
    app: &TestApp,
    account: &str,
    kind: pb::SecurityEventKind,
) -> pb::SecurityEvent {
    let mut security = app
        .audit
        .clone()
        .watch_security_events(pb::WatchSecurityEventsRequest::default())
        .await
        .expect("security stream")
        .into_inner();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let e = security.message().await.expect("event").expect("open");
            if e.kind() == kind && e.account_id == account {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} security event for {account}"))
}

/// Plain connections to every Redis node behind `app` (none for the memory store).
pub fn redis_nodes(app: &TestApp) -> Vec<redis::Connection> {
    match (&app.redis, &app.cluster) {
        (Some(node), _) => vec![node.connection()],
        (None, Some(cluster)) => cluster.nodes.iter().map(|n| n.connection()).collect(),
        (None, None) => Vec::new(),
    }
}
