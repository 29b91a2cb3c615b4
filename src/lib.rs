//! approval-relay: gets a yes or no from an account owner's trusted phones before a sign-in goes through.
//!
//! # Layout
//! Data walks one way: `grpc` → `relay` → domain (`challenge`, `auth`, `device`, `audit`) → I/O edges
//! (`store`, `push`, `watch`, `expiry`).
//!
//! - [`grpc`]: the two gRPC APIs (backend and device), envelope parsing (pure, fuzzed), protobuf
//!   conversions, the one error→status map.
//! - [`relay`]: the use cases, on domain types.
//! - [`challenge`]: ids, number matching, the challenge state machine. Pure.
//! - [`auth`]: device keys, signatures, counter and timestamp rules. Pure.
//! - [`device`], [`audit`], [`notice`]: device records, tickets, audit and security records, notices to
//!   the owner's devices and what a one-tap revoke on them does. Pure.
//! - [`known`]: known sign-in devices and places, and what the relay recommends for a sign-in. Pure.
//! - [`factor`], [`totp`], [`sealing`]: offline-code authenticators, RFC 6238 codes, their secrets
//!   sealed at rest. Pure.
//! - [`attest`]: Android Key Attestation and Apple App Attest verdicts at enrollment. Pure.
//! - [`limits`]: push-bombing limits (pending cap, cool-down, fraud mute, rate buckets). Pure.
//! - [`store`]: the `Store` trait, the in-memory store and the Redis store.
//! - [`tls`]: mTLS and TLS for the listeners, reloaded on SIGHUP or file change.
//! - [`watch`]: fan-out of events to the watchers on this replica.
//! - [`push`]: the `PushProvider` trait, the dispatcher and the development sink.
//! - [`expiry`]: deadline timers and the overdue sweep.
//! - [`cli`], [`app`], [`config`], [`telemetry`], [`admin`]: the command line, wiring, configuration,
//!   logs and metrics, the admin HTTP listener.
//! - [`mock_push`]: a local APNs stand-in speaking Apple's protocol, for tests and demos.
//! - [`device_sim`]: the phone simulator behind `approval-relay device`.
//! - [`backend_cli`]: the backend's side on the command line, `approval-relay backend`.
//! - [`health_cli`]: `approval-relay health`, the container health check.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod attest;
pub mod audit;
pub mod auth;
pub mod backend_cli;
pub mod challenge;
pub mod cli;
pub mod clock;
pub mod config;
pub mod device;
pub mod device_sim;
pub mod error;
pub mod expiry;
pub mod factor;
pub mod grpc;
pub mod health_cli;
pub mod known;
pub mod limits;
pub mod mock_push;
pub mod notice;
pub mod push;
pub mod relay;
pub mod sealing;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod totp;
pub mod watch;

/// Generated protobuf and gRPC code for `approval.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("approval.v1");

    /// The backend API's descriptor set (backend.proto and what it imports), for reflection on the
    /// backend listener.
    pub const BACKEND_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/backend_descriptor.bin"));

    /// The device API's descriptor set (device.proto and what it imports), for reflection on the device
    /// listener.
    pub const DEVICE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/device_descriptor.bin"));
}
