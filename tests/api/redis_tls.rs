//! Redis over TLS with a private CA (`redis_ca_file`), then with a client certificate
//! (`redis_client_cert_file` / `redis_client_key_file`), against a real `redis-server --tls-port`; and an
//! untrusted server refused with an error that names the host and port, never the password.

use crate::helpers::*;
use crate::pki::Pki;
use crate::redis_server::{RedisCluster, RedisServer, free_port};
use approval_relay::app::App;
use approval_relay::config::Config;
use approval_relay::pb;
use std::path::PathBuf;

/// Certificates for a Redis on 127.0.0.1: the server's from one CA, a client's from the same CA.
struct RedisPki {
    dir: PathBuf,
}

impl RedisPki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("approval-relay-redis-tls-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = Pki::new("redis test CA");
        let server = ca.issue(&["127.0.0.1", "localhost"]);
        let client = ca.issue(&["relay"]);
        for (name, pem) in [
            ("ca.pem", &ca.ca_pem),
            ("server.pem", &server.cert),
            ("server.key", &server.key),
            ("client.pem", &client.cert),
            ("client.key", &client.key),
        ] {
            std::fs::write(dir.join(name), pem).expect("write pem");
        }
        Self { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for RedisPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A relay on `rediss://127.0.0.1:<port>` with `tune`, and one approval through it.
async fn works_over(url: String, tune: impl FnOnce(&mut Config)) {
    let app = spawn_app_with(|c| {
        c.redis_url = Some(url);
        tune(c);
    })
    .await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    assert_eq!(
        app.approve(&mut phone, &challenge).await.expect("approve"),
        pb::ChallengeState::Approved
    );
}

async fn start_error(url: String, tune: impl FnOnce(&mut Config)) -> String {
    let mut config = Config::ephemeral();
    config.redis_url = Some(url);
    tune(&mut config);
    match App::build(config).await {
        Ok(_) => panic!("the relay must not start against that Redis"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_trusts_a_private_ca_from_redis_ca_file() {
    let pki = RedisPki::new();
    let tls_port = free_port();
    let _redis = RedisServer::start_tls(&pki.dir, tls_port, false);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    works_over(url.clone(), |c| c.redis_ca_file = Some(pki.file("ca.pem"))).await;

    // Without the CA the server is not trusted: refused, naming the server, not the password.
    let secret = format!("rediss://relay:hunter2@127.0.0.1:{tls_port}");
    let error = start_error(secret, |_| {}).await;
    assert!(
        error.contains(&format!("127.0.0.1:{tls_port}")),
        "the error names the server: {error}"
    );
    assert!(!error.contains("hunter2"), "never the password: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_mutual_tls_needs_the_client_certificate() {
    let pki = RedisPki::new();
    let tls_port = free_port();
    let _redis = RedisServer::start_tls(&pki.dir, tls_port, true);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    works_over(url.clone(), |c| {
        c.redis_ca_file = Some(pki.file("ca.pem"));
        c.redis_client_cert_file = Some(pki.file("client.pem"));
        c.redis_client_key_file = Some(pki.file("client.key"));
    })
    .await;
    let error = start_error(url, |c| c.redis_ca_file = Some(pki.file("ca.pem"))).await;
    assert!(
        error.contains(&format!("127.0.0.1:{tls_port}")),
        "a relay without a client certificate is refused, and told where: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_over_tls_trusts_a_private_ca() {
    let pki = RedisPki::new();
    let cluster = RedisCluster::start_tls(&pki.dir);
    let seeds = cluster.tls_seeds();
    let app = spawn_app_with(|c| {
        c.redis_cluster_nodes = Some(seeds);
        c.redis_ca_file = Some(pki.file("ca.pem"));
    })
    .await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let watch = app.watch(&challenge.challenge_id).await;
    assert_eq!(
        app.approve(&mut phone, &challenge).await.expect("approve"),
        pb::ChallengeState::Approved
    );
    assert!(
        drain(watch)
            .await
            .iter()
            .any(|k| matches!(k, pb::challenge_event::Kind::Approved(_))),
        "events travel over the TLS subscriber connections too"
    );
}
