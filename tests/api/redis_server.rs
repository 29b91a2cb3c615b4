//! A real `redis-server` per test, on a free port, with its own directory; killed when dropped. Durable
//! (AOF, fsync always) so that a SIGKILL and restart keeps every acknowledged write, as production must.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

/// The `process_id` of an `INFO server` reply.
fn info_pid(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on_free_port(free_port, &[])
    }

    /// A Cluster-enabled node on a port whose bus port (port + 10000) is free too.
    pub fn start_cluster_node() -> Self {
        let port = || loop {
            let candidate: u16 = 20_000 + (rand::random::<u16>() % 35_000);
            let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
            if free(candidate) && free(candidate + 10_000) {
                break candidate;
            }
        };
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        Self::start_on_free_port(port, &extra)
    }

    /// A port seen free can be taken by a parallel test before redis-server binds it (which then exits
    /// at once): up to five ports are tried.
    fn start_on_free_port(port: impl Fn() -> u16, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = Self::prepare(port(), extra.clone());
            match server.try_spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    /// A node that also serves TLS on `tls_port` with the certificate and key files in `certs`
    /// (`server.pem`, `server.key`, `ca.pem`), asking clients for a certificate from that CA when
    /// `client_auth`. Its plaintext port stays for the harness's own checks.
    pub fn start_tls(certs: &std::path::Path, tls_port: u16, client_auth: bool) -> Self {
        let file = |name: &str| certs.join(name).display().to_string();
        let extra = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            if client_auth { "yes" } else { "no" }.into(),
        ];
        Self::start_with(free_port(), extra)
    }

    fn start_with(port: u16, extra: Vec<String>) -> Self {
        let mut server = Self::prepare(port, extra);
        server.spawn();
        server
    }

    fn prepare(port: u16, extra: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "approval-relay-redis-{port}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        Self {
            port,
            dir,
            child: None,
            extra,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Starts redis-server and waits for its PING; an error when it exits first (its port was taken).
    fn try_spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}). The tests need a real Redis: install it with \
                     `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis`, so that \
                     `redis-server` is on PATH. .ci/run installs it automatically."
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited at start ({status}); most likely its port was \
                     taken (by another test's server, say)",
                    self.port
                ));
            }
            // The server that answers must be this one: a parallel test's redis-server on the same port
            // answers too (this one then exits, which the next round sees).
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut c) = client.get_connection()
                && let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut c)
                && info_pid(&info) == self.child.as_ref().map(Child::id)
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("redis connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-master Redis Cluster started for one test (ports at most 55535, as the bus port is port + 10000).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::create((0..3).map(|_| RedisServer::start_cluster_node()).collect())
    }

    /// A Cluster whose nodes also serve TLS (the bus too) with the files in `certs` (see
    /// [`RedisServer::start_tls`]); the TLS port of each node is its plaintext port + 1.
    pub fn start_tls(certs: &std::path::Path) -> Self {
        let file = |name: &str| certs.join(name).display().to_string();
        let nodes = (0..3)
            .map(|_| {
                let port = loop {
                    let candidate: u16 = 20_000 + (rand::random::<u16>() % 35_000);
                    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
                    if [
                        candidate,
                        candidate + 1,
                        candidate + 10_000,
                        candidate + 10_001,
                    ]
                    .into_iter()
                    .all(free)
                    {
                        break candidate;
                    }
                };
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--tls-cluster",
                    "yes",
                    "--tls-auth-clients",
                    "no",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .chain([
                    "--tls-port".to_owned(),
                    (port + 1).to_string(),
                    "--tls-cert-file".to_owned(),
                    file("server.pem"),
                    "--tls-key-file".to_owned(),
                    file("server.key"),
                    "--tls-ca-cert-file".to_owned(),
                    file("ca.pem"),
                ])
                .collect();
                RedisServer::start_with(port, extra)
            })
            .collect();
        Self::create(nodes)
    }

    /// `rediss://` seeds of a Cluster started by [`RedisCluster::start_tls`].
    pub fn tls_seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("rediss://127.0.0.1:{}", n.port + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn create(nodes: Vec<RedisServer>) -> Self {
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-cli ({e}); it comes with Debian's redis-server (redis-tools)"
                )
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Every node reports cluster_state:ok.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.connection())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster not ok on {}: {info}",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Seed list for the relay's --redis-cluster-nodes.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
