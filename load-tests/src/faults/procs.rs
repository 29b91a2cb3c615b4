//! The processes a fault run starts and kills: redis-server (a node, or a Cluster with replicas),
//! mock-push, relay replicas; and the fleet of phones enrolled through them.

use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::pb::device_registry_client::DeviceRegistryClient;
use approval_relay::pb::device_service_client::DeviceServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A child killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// SIGKILL now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (below 55535, so a Cluster bus port fits).
pub fn port() -> u16 {
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let bus_free = std::net::TcpListener::bind(("127.0.0.1", p.wrapping_add(10_000))).is_ok();
        if p > 0 && p < 55_535 && bus_free {
            return p;
        }
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server on `port` in `dir`, with `extra` arguments.
pub fn redis(dir: &Path, port: u16, extra: &[&str]) -> Proc {
    let dir = dir.join(format!("redis-{port}"));
    std::fs::create_dir_all(&dir).expect("redis dir");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    wait_port(port);
    Proc(child)
}

/// A Cluster of `masters` masters with one replica each; the node processes and their ports
/// (masters first as redis-cli assigns them).
pub fn cluster(dir: &Path, masters: usize) -> (Vec<Proc>, Vec<u16>) {
    let ports: Vec<u16> = (0..masters * 2).map(|_| port()).collect();
    let nodes = ports
        .iter()
        .map(|p| {
            redis(
                dir,
                *p,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in &ports {
        loop {
            let info = cli(*p, &["CLUSTER", "INFO"]);
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    (nodes, ports)
}

/// `redis-cli -p port args…`'s output.
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// mock-push (h2c) on `port`, writing its APNs key into `dir/mock`.
pub fn mock(bin: &Path, dir: &Path, port: u16) -> (Proc, PathBuf) {
    let out = dir.join("mock");
    let child = Command::new(bin)
        .args([
            "mock-push",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--plaintext",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mock-push");
    wait_port(port);
    let key = out.join("apns-key.p8");
    while !key.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), key)
}

/// A relay replica: its process and its ports (backend, device, admin).
pub struct Relay {
    pub proc: Proc,
    pub backend: u16,
    pub device: u16,
    pub admin: u16,
}

/// A relay on `store` (flags) pushing APNs to the mock, limits relaxed for load.
pub fn relay(bin: &Path, store: &[String], mock_port: u16, key: &Path, log: &Path) -> Relay {
    let (backend, device, admin) = (port(), port(), port());
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(bin)
        .arg("serve")
        .args(store)
        .args(["--backend-addr", &format!("127.0.0.1:{backend}")])
        .args(["--device-addr", &format!("127.0.0.1:{device}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args([
            "--apns-url",
            &format!("http://127.0.0.1:{mock_port}"),
            "--apns-key-file",
        ])
        .arg(key)
        .args([
            "--apns-key-id",
            "MOCKKEY001",
            "--apns-team-id",
            "MOCKTEAM01",
        ])
        .args([
            "--max-pending-per-account",
            "100000",
            "--cooldown-base-secs",
            "0",
        ])
        .args(["--fraud-mute-secs", "0", "--account-rate-per-minute", "0"])
        .args(["--source-rate-per-minute", "0", "--min-ttl-secs", "1"])
        .args(["--max-push-in-flight", "2048"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("relay");
    for p in [backend, device, admin] {
        wait_port(p);
    }
    Relay {
        proc: Proc(child),
        backend,
        device,
        admin,
    }
}

/// A gRPC channel to a loopback port.
pub async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect")
}

/// Enrolls one APNs phone per account (tokens `<n>` in hex); the accounts and their tokens.
pub async fn fleet(backend: u16, device: u16, accounts: usize) -> Vec<(String, String)> {
    let mut registry = DeviceRegistryClient::new(channel(backend).await);
    let mut api = DeviceServiceClient::new(channel(device).await);
    let run = std::process::id();
    let mut out = Vec::new();
    for n in 0..accounts {
        let account = format!("faults-{run}-{n}@example.com");
        let token = format!("{run:032x}{n:032x}");
        let ticket = registry
            .create_enrollment(pb::CreateEnrollmentRequest {
                account_id: account.clone(),
                ttl_seconds: 0,
            })
            .await
            .expect("ticket")
            .into_inner()
            .ticket;
        let phone = Phone::new(PhoneKey::ed25519());
        let request = phone.enroll_request(
            &ticket,
            pb::Platform::Apns,
            &token,
            "com.example.authenticator",
            "phone",
        );
        api.enroll(request).await.expect("enroll");
        out.push((account, token));
    }
    out
}

/// POSTs JSON to the mock's control surface.
pub async fn control(mock_port: u16, path: &str, body: &str) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", mock_port))
        .await
        .expect("mock");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::post(path)
        .header("host", "mock")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .expect("request");
    let answer = sender.send_request(request).await.expect("answer");
    assert!(answer.status().is_success(), "{path}: {}", answer.status());
}

/// The sum of every series of a counter on a replica's /metrics.
pub async fn counter(admin: u16, name: &str) -> f64 {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", admin))
        .await
        .expect("admin");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::get("/metrics")
        .header("host", "admin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let answer = sender.send_request(request).await.expect("answer");
    use http_body_util::BodyExt;
    let text = answer.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
