//! Wiring: the store, watch hub, dispatcher, expiry timers, the two gRPC listeners and the admin
//! listener, and a bounded graceful shutdown. `App::build` binds everything (port 0 works, for tests);
//! `App::run` serves until the shutdown future resolves.

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::expiry;
use crate::grpc::codec::StatusLayer;
use crate::grpc::{BackendApi, DeviceApi};
use crate::pb;
use crate::push::apns::{ApnsProvider, ApnsSettings};
use crate::push::fcm::FcmProvider;
use crate::push::hms::{HmsProvider, HmsSettings};
use crate::push::router::PlatformRouter;
use crate::push::xiaomi::{XiaomiProvider, XiaomiSettings};
use crate::push::{Dispatcher, PushProvider, SinkProvider};
use crate::relay::Relay;
use crate::store::{MemoryStore, RedisStore, Store};
use crate::telemetry::trace::RpcSpans;
use crate::tls::{self, ReloadingConfig};
use crate::watch::Hub;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};

/// HTTP/2 keep-alive PING interval on gRPC connections: finds dead peers of idle watch streams.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A built relay, listening but not yet serving.
pub struct App {
    config: Config,
    backend: TcpListener,
    device: TcpListener,
    admin: TcpListener,
    relay: Arc<Relay>,
    sink: Arc<SinkProvider>,
    hub: Arc<Hub>,
    expiry: expiry::ExpiryQueue,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    backend_tls: Option<Arc<ReloadingConfig>>,
    device_tls: Option<Arc<ReloadingConfig>>,
}

impl App {
    /// Binds the listeners and wires the parts.
    ///
    /// # Errors
    /// A listener that cannot be bound.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let backend = bind(config.backend_addr, "backend").await?;
        let device = bind(config.device_addr, "device").await?;
        let admin = bind(config.admin_addr, "admin").await?;
        tls::install_default_provider();
        let backend_tls = config
            .backend_tls()
            .map(|files| ReloadingConfig::load("backend", files))
            .transpose()
            .map_err(|e| anyhow::anyhow!("backend mTLS: {e}"))?;
        let device_tls = config
            .device_tls()
            .map(|files| ReloadingConfig::load("device", files))
            .transpose()
            .map_err(|e| anyhow::anyhow!("device TLS: {e}"))?;
        let hub = Hub::new();
        let shutdown = CancellationToken::new();
        // Who owes the pushes this process starts: new on every start, so a restarted replica's old
        // work is seen as abandoned and taken over.
        let replica = format!("r.{:016x}", rand::random::<u64>());
        let store: Arc<dyn Store> = match config.redis_target() {
            None => Arc::new(MemoryStore::new(Arc::clone(&hub), config.limits(), replica)),
            Some(target) => Arc::new(
                RedisStore::connect(
                    &target,
                    Arc::clone(&hub),
                    shutdown.clone(),
                    config.limits(),
                    replica,
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot use the redis store: {e}"))?,
            ),
        };
        let sink = Arc::new(SinkProvider::default());
        let provider = push_provider(&config, &sink)?;
        let tracker = TaskTracker::new();
        let dispatcher = Dispatcher::new(
            provider,
            Arc::clone(&store),
            tracker.clone(),
            config.max_push_in_flight,
        );
        let (expiry_handle, expiry) = expiry::channel();
        let mut policy = config.policy(device.local_addr()?);
        policy.attestation = config.attestation()?;
        let sealer = match (config.sealer()?, config.redis_target().is_some()) {
            (Some(sealer), _) => Some(sealer),
            // One process's memory: a key made now dies with the secrets it seals.
            (None, false) => Some(crate::sealing::Sealer::ephemeral()),
            (None, true) => {
                tracing::warn!(
                    "offline codes are off: set totp_key_file to seal their secrets in Redis"
                );
                None
            }
        };
        let relay = Arc::new(
            Relay::new(store, Arc::clone(&hub), dispatcher, expiry_handle, policy)
                .with_sealer(sealer),
        );
        Ok(Self {
            config,
            backend,
            device,
            admin,
            relay,
            sink,
            hub,
            expiry,
            tracker,
            shutdown,
            backend_tls,
            device_tls,
        })
    }

    /// Where the backend API listens.
    pub fn backend_addr(&self) -> SocketAddr {
        self.backend
            .local_addr()
            .unwrap_or(self.config.backend_addr)
    }

    /// Where the device API listens.
    pub fn device_addr(&self) -> SocketAddr {
        self.device.local_addr().unwrap_or(self.config.device_addr)
    }

    /// Where the admin HTTP listener listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin_addr)
    }

    /// The development push sink (what "was sent").
    pub fn sink(&self) -> Arc<SinkProvider> {
        Arc::clone(&self.sink)
    }

    /// This replica's watch hub (how many watchers are registered, for tests and diagnostics).
    pub fn hub(&self) -> Arc<Hub> {
        Arc::clone(&self.hub)
    }

    /// Serves until `signal` resolves, then drains within the configured grace period.
    ///
    /// # Errors
    /// A listener that fails while serving.
    pub async fn run(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            backend,
            device,
            admin,
            relay,
            sink: _,
            expiry,
            tracker,
            shutdown,
            hub: _,
            backend_tls,
            device_tls,
        } = self;
        let store_kind = if config.redis_target().is_some() {
            "redis"
        } else {
            "in-memory (state is lost on exit)"
        };
        tracing::info!(
            backend = %backend.local_addr()?, device = %device.local_addr()?, admin = %admin.local_addr()?, store = store_kind,
            backend_transport = if backend_tls.is_some() { "mtls" } else { "plaintext" },
            device_transport = if device_tls.is_some() { "tls" } else { "plaintext" },
            "listening"
        );
        if backend_tls.is_none() || device_tls.is_none() {
            tracing::warn!(
                "development mode: a gRPC listener is plaintext; configure TLS before exposing it"
            );
        }
        let reload_task = tokio::spawn(tls::watch(
            backend_tls
                .iter()
                .chain(device_tls.iter())
                .cloned()
                .collect(),
            Duration::from_secs(config.tls_reload_poll_secs),
            shutdown.clone(),
        ));
        let ready = Arc::new(AtomicBool::new(false));
        let expiry_task = tokio::spawn(expiry::run(expiry, Arc::clone(&relay), shutdown.clone()));

        let (backend_health, backend_health_svc) = tonic_health::server::health_reporter();
        backend_health
            .set_serving::<pb::challenge_service_server::ChallengeServiceServer<BackendApi>>()
            .await;
        backend_health
            .set_serving::<pb::device_registry_server::DeviceRegistryServer<BackendApi>>()
            .await;
        backend_health
            .set_serving::<pb::audit_service_server::AuditServiceServer<BackendApi>>()
            .await;
        let (device_health, device_health_svc) = tonic_health::server::health_reporter();
        device_health
            .set_serving::<pb::device_service_server::DeviceServiceServer<DeviceApi>>()
            .await;

        let backend_api = BackendApi::new(Arc::clone(&relay), shutdown.clone());
        let device_api = DeviceApi::new(Arc::clone(&relay));
        let stopping = shutdown.clone();
        let (reflect_v1, reflect_v1alpha) = reflection(pb::BACKEND_DESCRIPTOR_SET)?;
        let backend_server = grpc_server(&config)
            .add_service(backend_health_svc)
            .add_service(reflect_v1)
            .add_service(reflect_v1alpha)
            .add_service(pb::challenge_service_server::ChallengeServiceServer::new(
                backend_api.clone(),
            ))
            .add_service(pb::device_registry_server::DeviceRegistryServer::new(
                backend_api.clone(),
            ))
            .add_service(pb::audit_service_server::AuditServiceServer::new(
                backend_api,
            ));
        let backend_server = serve(backend_server, backend, backend_tls, stopping.clone());
        let (reflect_v1, reflect_v1alpha) = reflection(pb::DEVICE_DESCRIPTOR_SET)?;
        let device_server = grpc_server(&config)
            .add_service(device_health_svc)
            .add_service(reflect_v1)
            .add_service(reflect_v1alpha)
            .add_service(pb::device_service_server::DeviceServiceServer::new(
                device_api,
            ));
        let device_server = serve(device_server, device, device_tls, stopping.clone());
        let admin_state = AdminState {
            ready: Arc::clone(&ready),
            metrics: crate::telemetry::metrics(),
        };
        let admin_server = axum::serve(admin, admin::router(admin_state))
            .with_graceful_shutdown(stopping.clone().cancelled_owned());

        let backend_task = tokio::spawn(backend_server);
        let device_task = tokio::spawn(device_server);
        let admin_task = tokio::spawn(async move { admin_server.await });
        ready.store(true, Ordering::Relaxed);
        tracing::info!("approval-relay is ready");

        signal.await;
        tracing::info!(grace_secs = config.shutdown_grace_secs, "shutting down");
        ready.store(false, Ordering::Relaxed);
        backend_health
            .set_not_serving::<pb::challenge_service_server::ChallengeServiceServer<BackendApi>>()
            .await;
        device_health
            .set_not_serving::<pb::device_service_server::DeviceServiceServer<DeviceApi>>()
            .await;
        shutdown.cancel();
        tracker.close();
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let drain = async {
            let _ = backend_task.await;
            let _ = device_task.await;
            let _ = admin_task.await;
            let _ = expiry_task.await;
            let _ = reload_task.await;
            tracker.wait().await;
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("shutdown grace period ran out; exiting with work in flight");
        }
        Ok(())
    }
}

/// APNs, FCM, Mi Push and HMS where configured, the development sink for a platform that is not.
fn push_provider(
    config: &Config,
    sink: &Arc<SinkProvider>,
) -> anyhow::Result<Arc<dyn PushProvider>> {
    let sink: Arc<dyn PushProvider> = Arc::clone(sink) as Arc<dyn PushProvider>;
    let read_pem = |path: &Option<std::path::PathBuf>| -> anyhow::Result<Option<String>> {
        path.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("ca file {}: {e}", p.display()))
            })
            .transpose()
    };
    let apns: Arc<dyn PushProvider> = match (
        &config.apns_key_file,
        &config.apns_key_id,
        &config.apns_team_id,
    ) {
        (Some(key_file), Some(key_id), Some(team_id)) => {
            tracing::info!(url = %config.apns_url, "pushing APNs devices through APNs");
            Arc::new(ApnsProvider::new(ApnsSettings {
                base_url: config.apns_url.clone(),
                key_id: key_id.clone(),
                team_id: team_id.clone(),
                key: ApnsSettings::read_key(key_file)?,
                extra_root_pem: read_pem(&config.apns_ca_file)?,
            })?)
        }
        _ => Arc::clone(&sink),
    };
    let fcm: Arc<dyn PushProvider> = match &config.fcm_service_account_file {
        Some(key_file) => {
            tracing::info!(url = %config.fcm_url, "pushing FCM devices through FCM");
            let project = config.fcm_project_id.clone().unwrap_or_default();
            let ca = read_pem(&config.fcm_ca_file)?;
            Arc::new(FcmProvider::new(
                &config.fcm_url,
                &project,
                key_file,
                ca.as_deref(),
            )?)
        }
        None => Arc::clone(&sink),
    };
    let secret = |path: &std::path::Path| -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("secret file {}: {e}", path.display()))?
            .trim()
            .to_owned())
    };
    let xiaomi: Arc<dyn PushProvider> = match &config.xiaomi_app_secret_file {
        Some(file) => {
            tracing::info!(url = %config.xiaomi_url, "pushing Xiaomi devices through Mi Push");
            Arc::new(XiaomiProvider::new(XiaomiSettings {
                base_url: config.xiaomi_url.clone(),
                app_secret: secret(file)?,
                packages: crate::config::list(config.xiaomi_package.as_deref())
                    .map(str::to_owned)
                    .collect(),
                channel_id: config.xiaomi_channel_id.clone().filter(|c| !c.is_empty()),
                extra_root_pem: read_pem(&config.xiaomi_ca_file)?,
            })?)
        }
        None => Arc::clone(&sink),
    };
    let hms: Arc<dyn PushProvider> = match (&config.hms_app_secret_file, &config.hms_app_id) {
        (Some(file), Some(app_id)) => {
            tracing::info!(url = %config.hms_url, "pushing HMS devices through Push Kit");
            Arc::new(HmsProvider::new(HmsSettings {
                base_url: config.hms_url.clone(),
                token_url: config.hms_token_url.clone(),
                app_id: app_id.clone(),
                app_secret: secret(file)?,
                extra_root_pem: read_pem(&config.hms_ca_file)?,
            })?)
        }
        _ => sink,
    };
    Ok(Arc::new(PlatformRouter {
        apns,
        fcm,
        xiaomi,
        hms,
    }))
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the {name} listener: {e}"))
}

/// A gRPC server future, whichever transport it serves.
type Serving = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// The layers every gRPC listener has: decode failures as INVALID_ARGUMENT, a span per call.
type Layers = tower::layer::util::Stack<
    RpcSpans,
    tower::layer::util::Stack<StatusLayer, tower::layer::util::Identity>,
>;

fn serve(
    router: Router<Layers>,
    listener: TcpListener,
    tls: Option<Arc<ReloadingConfig>>,
    shutdown: CancellationToken,
) -> Serving {
    let signal = shutdown.clone().cancelled_owned();
    match tls {
        None => Box::pin(router.serve_with_incoming_shutdown(incoming(listener), signal)),
        Some(tls) => Box::pin(
            router.serve_with_incoming_shutdown(tls::incoming(listener, tls, shutdown), signal),
        ),
    }
}

fn incoming(listener: TcpListener) -> TcpIncoming {
    // DESIGN.md §10: without TCP_NODELAY a small gRPC answer waits for the peer's delayed ACK.
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

fn grpc_server(config: &Config) -> Server<Layers> {
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .layer(crate::grpc::codec::status_layer())
        .layer(RpcSpans)
}

/// Reflection for one listener, in both protocol versions: `grpc.reflection.v1` and the older
/// `v1alpha` that grpcurl before 1.8.8, evans, Postman and grpcio-reflection speak. Each listener
/// describes only its own API (and health), so the public device port never shows the backend API.
fn reflection(
    descriptors: &'static [u8],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
