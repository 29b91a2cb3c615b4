//! `relay-reference`: the least a relay must do for the load test's flow, as the honest limit beside the
//! relay's figures. Same crates (tonic, redis-rs, the relay's own APNs and FCM clients over hyper's
//! HTTP/2), same Redis, same mock, same generator; none of the relay's validation, signature checks,
//! limits, audit, metrics, tracing, expiry events or delivery reports. A create is one Redis script
//! (store the challenge, read the devices) and a push per device; the phone's view is one HGET of the
//! challenge's state; an answer is one script (decide if pending, publish, read the devices) and a
//! withdrawal per other device; a replica learns of a decision made on another through one pub/sub
//! channel. `load-tests/run.sh` runs two of these (A creates and watches, B takes the answers, as for
//! the relay) and reports the relay's sustained rate as a ratio of this one's (`limit.ratio`).
//!
//! It serves CreateEnrollment, StreamChallenges (creates only), Enroll, GetChallenge (id and state
//! only) and Respond (approve only); every other RPC answers UNIMPLEMENTED. It trusts its callers
//! entirely: never expose it.

#![forbid(unsafe_code)]

mod service;
mod store;

/// The code generated from the relay's protos (server side, default stubs).
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("approval.v1");
}

use approval_relay::push::apns::{ApnsProvider, ApnsSettings};
use approval_relay::push::fcm::FcmProvider;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Where to listen and what to talk to.
#[derive(Debug, Parser)]
#[command(
    about = "Minimal reference implementation of the load test's flow (no checks: never expose it)"
)]
struct Options {
    /// Backend API (CreateEnrollment, StreamChallenges).
    #[arg(long)]
    backend_addr: SocketAddr,
    /// Device API (Enroll, Respond).
    #[arg(long)]
    device_addr: SocketAddr,
    /// Redis (keys under `ref:`; shared by the replicas).
    #[arg(long)]
    redis_url: String,
    /// APNs base URL (mock-push).
    #[arg(long)]
    apns_url: String,
    /// APNs signing key (.p8).
    #[arg(long)]
    apns_key_file: PathBuf,
    /// APNs key id.
    #[arg(long)]
    apns_key_id: String,
    /// APNs team id.
    #[arg(long)]
    apns_team_id: String,
    /// FCM base URL (mock-push).
    #[arg(long)]
    fcm_url: String,
    /// FCM service-account key file.
    #[arg(long)]
    fcm_service_account_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    approval_relay::tls::install_default_provider();
    let apns = ApnsProvider::new(ApnsSettings {
        base_url: options.apns_url.clone(),
        key_id: options.apns_key_id.clone(),
        team_id: options.apns_team_id.clone(),
        key: ApnsSettings::read_key(&options.apns_key_file)?,
        extra_root_pem: None,
    })?;
    let fcm = FcmProvider::new(
        &options.fcm_url,
        "",
        &options.fcm_service_account_file,
        None,
    )?;
    let client = redis::Client::open(options.redis_url.as_str())?;
    let store = store::Store::connect(&client).await?;
    let relay = Arc::new(service::Reference::new(store, apns, fcm));
    tokio::spawn(service::listen_for_decisions(Arc::clone(&relay), client));

    use tonic::transport::Server;
    let backend = Server::builder()
        .add_service(
            pb::challenge_service_server::ChallengeServiceServer::from_arc(Arc::clone(&relay)),
        )
        .add_service(pb::device_registry_server::DeviceRegistryServer::from_arc(
            Arc::clone(&relay),
        ))
        .serve(options.backend_addr);
    let device = Server::builder()
        .add_service(pb::device_service_server::DeviceServiceServer::from_arc(
            relay,
        ))
        .serve(options.device_addr);
    eprintln!(
        "relay-reference: backend {} device {}",
        options.backend_addr, options.device_addr
    );
    tokio::try_join!(backend, device)?;
    Ok(())
}
