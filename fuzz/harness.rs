//! One relay per fuzzing process, as `serve` builds it but with the in-memory store and the development
#![allow(dead_code)] // each target uses part of the harness
//! push sink, and an account with one enrolled phone so that creates can succeed. The targets hand it
//! bytes exactly as the gRPC server would: decoded by the relay's own codec, then to the handler.

use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::grpc::{BackendApi, DeviceApi};
use approval_relay::pb;
use approval_relay::push::{Dispatcher, SinkProvider};
use approval_relay::relay::{Policy, Relay};
use approval_relay::store::MemoryStore;
use approval_relay::watch::Hub;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The account whose phone is enrolled.
pub const ACCOUNT: &str = "fuzz@example.com";

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub relay: Arc<Relay>,
    pub backend: BackendApi,
}

pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let hub = Hub::new();
        let store = Arc::new(MemoryStore::new(Arc::clone(&hub), Default::default(), "r.fuzz".into()));
        let dispatcher = Dispatcher::new(
            Arc::new(SinkProvider::default()),
            store.clone(),
            TaskTracker::new(),
            64,
        );
        let (expiry, _queue) = approval_relay::expiry::channel();
        let relay = Arc::new(Relay::new(store, hub, dispatcher, expiry, Policy::default()));
        let backend = BackendApi::new(Arc::clone(&relay), CancellationToken::new());
        let device = DeviceApi::new(Arc::clone(&relay));
        runtime.block_on(async {
            use pb::device_registry_server::DeviceRegistry;
            use pb::device_service_server::DeviceService;
            let ticket = backend
                .create_enrollment(tonic::Request::new(pb::CreateEnrollmentRequest {
                    account_id: ACCOUNT.into(),
                    ttl_seconds: 0,
                }))
                .await
                .expect("ticket")
                .into_inner()
                .ticket;
            let phone = Phone::new(PhoneKey::ed25519());
            let enroll = phone.enroll_request(&ticket, pb::Platform::Fcm, "fuzz-token", "com.example", "Fuzz");
            device.enroll(tonic::Request::new(enroll)).await.expect("enroll");
        });
        Harness {
            runtime,
            relay,
            backend,
        }
    })
}
