//! Transport security: mTLS on the backend listener (CA and name allow-list), TLS on the device
//! listener, the device port serving only the device API, and certificates replaced without a restart.

use crate::helpers::*;
use crate::pki::{Issued, Pki};
use approval_relay::app::App;
use approval_relay::config::Config;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::pb::challenge_service_client::ChallengeServiceClient;
use approval_relay::pb::device_registry_client::DeviceRegistryClient;
use approval_relay::pb::device_service_client::DeviceServiceClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("approval-relay-tls-{}", account()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Writes through a temporary file and a rename, as a Secret update does, so a poll never reads half.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write pem");
    std::fs::rename(&tmp, path).expect("rename pem");
}

struct TlsApp {
    backend: SocketAddr,
    device: SocketAddr,
    dir: PathBuf,
    server_ca: Pki,
    client_ca: Pki,
    _stop: oneshot::Sender<()>,
}

async fn spawn_tls_app(allowed: Option<&str>, poll_secs: u64) -> TlsApp {
    let dir = scratch_dir();
    let server_ca = Pki::new("relay server CA");
    let client_ca = Pki::new("backend client CA");
    let server = server_ca.issue(&["localhost"]);
    write(&dir.join("server.pem"), &server.cert);
    write(&dir.join("server.key"), &server.key);
    write(&dir.join("clients-ca.pem"), &client_ca.ca_pem);
    let mut config = Config::ephemeral();
    config.backend_tls_cert_file = Some(dir.join("server.pem"));
    config.backend_tls_key_file = Some(dir.join("server.key"));
    config.backend_client_ca_file = Some(dir.join("clients-ca.pem"));
    config.backend_allowed_client_names = allowed.map(str::to_owned);
    config.device_tls_cert_file = Some(dir.join("server.pem"));
    config.device_tls_key_file = Some(dir.join("server.key"));
    config.tls_reload_poll_secs = poll_secs;
    let app = App::build(config).await.expect("the relay starts with TLS");
    let (backend, device) = (app.backend_addr(), app.device_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    TlsApp {
        backend,
        device,
        dir,
        server_ca,
        client_ca,
        _stop: stop,
    }
}

/// A TLS channel trusting `ca_pem`, presenting `identity` when given.
async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(PATIENCE)
        .connect()
        .await
}

/// Asks the backend API for an enrollment ticket; the error says where the call failed.
async fn backend_call(channel: Result<Channel, tonic::transport::Error>) -> Result<(), String> {
    let channel = channel.map_err(|e| format!("connect: {e}"))?;
    DeviceRegistryClient::new(channel)
        .create_enrollment(pb::CreateEnrollmentRequest {
            account_id: account(),
            ttl_seconds: 0,
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("call: {s}"))
}

#[tokio::test]
async fn backend_api_needs_a_client_certificate_from_the_configured_ca() {
    let app = spawn_tls_app(None, 5).await;
    let ca = app.server_ca.ca_pem.clone();
    let good = app.client_ca.issue(&["backend.internal"]);
    backend_call(tls_channel(app.backend, &ca, Some(&good)).await)
        .await
        .expect("a client with a certificate from the configured CA is served");

    let without = backend_call(tls_channel(app.backend, &ca, None).await).await;
    assert!(
        without.is_err(),
        "a client without a certificate was served"
    );

    let stranger = Pki::new("some other CA").issue(&["backend.internal"]);
    let other_ca = backend_call(tls_channel(app.backend, &ca, Some(&stranger)).await).await;
    assert!(
        other_ca.is_err(),
        "a certificate from another CA was accepted"
    );

    let plaintext = DeviceRegistryClient::new(
        Channel::from_shared(format!("http://{}", app.backend))
            .expect("uri")
            .connect_lazy(),
    )
    .create_enrollment(pb::CreateEnrollmentRequest {
        account_id: account(),
        ttl_seconds: 0,
    })
    .await;
    assert!(plaintext.is_err(), "plaintext reached the mTLS listener");
}

#[tokio::test]
async fn backend_allow_list_refuses_certificates_for_other_names() {
    let app = spawn_tls_app(Some("idp.internal, backend.internal"), 5).await;
    let ca = app.server_ca.ca_pem.clone();
    let allowed = app.client_ca.issue(&["backend.internal"]);
    backend_call(tls_channel(app.backend, &ca, Some(&allowed)).await)
        .await
        .expect("an allow-listed name is served");
    let other = app.client_ca.issue(&["reporting.internal"]);
    let refused = backend_call(tls_channel(app.backend, &ca, Some(&other)).await).await;
    assert!(
        refused.is_err(),
        "a name outside the allow-list was served, though the CA signed it"
    );
}

#[tokio::test]
async fn device_port_serves_the_device_api_over_tls_and_nothing_of_the_backend() {
    let app = spawn_tls_app(None, 5).await;
    let ca = app.server_ca.ca_pem.clone();
    let backend_id = app.client_ca.issue(&["backend.internal"]);
    let backend = tls_channel(app.backend, &ca, Some(&backend_id))
        .await
        .expect("backend channel");
    let account = account();
    let ticket = DeviceRegistryClient::new(backend)
        .create_enrollment(pb::CreateEnrollmentRequest {
            account_id: account.clone(),
            ttl_seconds: 0,
        })
        .await
        .expect("ticket")
        .into_inner()
        .ticket;

    // Phones have no client certificate: the device listener is TLS without client auth.
    let device = tls_channel(app.device, &ca, None)
        .await
        .expect("a phone connects without a client certificate");
    let mut phone = Phone::new(PhoneKey::ed25519());
    let req = phone.enroll_request(
        &ticket,
        pb::Platform::Apns,
        "token-tls",
        "com.example.authenticator",
        "TLS phone",
    );
    phone.device_id = DeviceServiceClient::new(device.clone())
        .enroll(req)
        .await
        .expect("enroll over TLS")
        .into_inner()
        .device_id;
    assert!(!phone.device_id.is_empty());

    let on_device_port = ChallengeServiceClient::new(device.clone())
        .create_challenge(pb::CreateChallengeRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await;
    assert_code(on_device_port, Code::Unimplemented, "");
    let registry_on_device_port = DeviceRegistryClient::new(device)
        .create_enrollment(pb::CreateEnrollmentRequest {
            account_id: account,
            ttl_seconds: 0,
        })
        .await;
    assert_code(registry_on_device_port, Code::Unimplemented, "");
}

/// Waits until `connects` succeeds, for at most `limit`.
async fn eventually(limit: Duration, mut connects: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if connects().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn device_tls_works(addr: SocketAddr, ca: &str) -> bool {
    match tls_channel(addr, ca, None).await {
        Ok(channel) => tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn certificates_are_reloaded_when_their_files_change() {
    let app = spawn_tls_app(None, 1).await;
    assert!(device_tls_works(app.device, &app.server_ca.ca_pem).await);
    let renewed_ca = Pki::new("renewed server CA");
    let renewed = renewed_ca.issue(&["localhost"]);
    write(&app.dir.join("server.key"), &renewed.key);
    write(&app.dir.join("server.pem"), &renewed.cert);
    let reloaded = eventually(Duration::from_secs(10), async || {
        device_tls_works(app.device, &renewed_ca.ca_pem).await
    })
    .await;
    assert!(reloaded, "the new certificate was not served within 10 s");
    assert!(
        !device_tls_works(app.device, &app.server_ca.ca_pem).await,
        "the old certificate is still served"
    );
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_previous_certificate() {
    let app = spawn_tls_app(None, 1).await;
    write(&app.dir.join("server.pem"), "not a certificate");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        device_tls_works(app.device, &app.server_ca.ca_pem).await,
        "a failed reload dropped the working certificate"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_certificates_at_once() {
    // Polling is slowed to an hour so that only the signal can explain the reload. The handler is
    // installed here first: it stays for the process, so the signal can never kill the test binary.
    let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("a SIGHUP handler");
    let app = spawn_tls_app(None, 3600).await;
    let renewed_ca = Pki::new("renewed server CA");
    let renewed = renewed_ca.issue(&["localhost"]);
    write(&app.dir.join("server.key"), &renewed.key);
    write(&app.dir.join("server.pem"), &renewed.cert);
    // Sent again on every try: a signal that arrives before the relay's handler exists is not queued.
    let reloaded = eventually(Duration::from_secs(5), async || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success());
        device_tls_works(app.device, &renewed_ca.ca_pem).await
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload the certificate");
}
