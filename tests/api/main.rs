//! Integration tests: the real service on loopback ports, driven by real gRPC clients.

#[macro_use]
mod helpers;
mod attestation;
mod channels;
mod fallback;
mod flood;
mod limits;
mod metrics;
mod notices;
mod numbers;
mod operations;
mod pki;
mod platform;
mod redis_server;
mod redis_tls;

mod cluster;
mod codes;
mod container;
mod deadlines;
mod devices;
mod flow;
mod push;
mod races;
mod refusals;
mod reliability;
mod replicas;
mod shutdown;
mod signins;
mod streams;
mod tls;
mod tools;
mod traces;
mod validation;
mod walkthrough;
mod wire;
