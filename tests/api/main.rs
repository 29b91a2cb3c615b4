//! Integration tests: the real service on loopback ports, driven by real gRPC clients.

mod helpers;

mod devices;
mod flow;
mod races;
mod refusals;
mod shutdown;
mod streams;
mod validation;
