//! Criterion bench of the reads every create starts with (the sign-in's evaluation: known sign-ins,
//! devices, authenticators and the store clock), against a real `redis-server`: one reads.lua call
//! (`Store::sign_in_facts`, what the relay does) beside the four concurrent reads it replaced.
//! `cargo bench --bench store_reads`; needs `redis-server` (Debian package redis-server).
#![allow(missing_docs)]

#[path = "../tests/api/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use approval_relay::auth::PublicKey;
use approval_relay::challenge::{AccountId, DeviceId};
use approval_relay::device::{Enrollment, Platform, Ticket};
use approval_relay::device_sim::PhoneKey;
use approval_relay::grpc::convert;
use approval_relay::limits::LimitPolicy;
use approval_relay::store::redis::{Nodes, Target};
use approval_relay::store::{NewDevice, RedisStore, Store};
use approval_relay::watch::Hub;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tokio_util::sync::CancellationToken;

/// A Redis store with one account of three phones.
async fn store_with_account(url: String) -> (RedisStore, AccountId) {
    let target = Target {
        nodes: Nodes::Single(url),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
    };
    let store = RedisStore::connect(
        &target,
        Hub::new(),
        CancellationToken::new(),
        LimitPolicy::default(),
        "bench".into(),
    )
    .await
    .expect("redis store");
    let account = AccountId::parse("alice@example.com").expect("account");
    for i in 0..3 {
        let ticket = Ticket::generate(&account);
        let now = store.now_ms().await.expect("time");
        store
            .create_enrollment(
                &ticket,
                &Enrollment {
                    account: account.clone(),
                    expires_at_ms: now + 60_000,
                },
            )
            .await
            .expect("ticket");
        let phone = PhoneKey::ed25519();
        let key = PublicKey::parse(
            convert::key_algorithm("k", phone.algorithm().into()).expect("algorithm"),
            &phone.public_key(),
        )
        .expect("key");
        store
            .enroll(
                &ticket,
                NewDevice {
                    id: DeviceId::generate_in(ticket.tag()),
                    offline_code: None,
                    platform: Platform::Apns,
                    push_token: format!("{i:064x}"),
                    fallback: None,
                    app_id: "com.example.authenticator".into(),
                    key,
                    display_name: format!("phone {i}"),
                    attestation: Default::default(),
                },
            )
            .await
            .expect("store")
            .expect("enrolled");
    }
    (store, account)
}

/// Evaluations in flight at once per iteration, as under load (one alone is mostly wake-up latency).
const IN_FLIGHT: usize = 64;

fn sign_in_facts(c: &mut Criterion) {
    let redis = redis_server::RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (store, account) = runtime.block_on(store_with_account(redis.url()));
    let mut group = c.benchmark_group("sign_in_facts_x64");
    group.throughput(criterion::Throughput::Elements(IN_FLIGHT as u64));
    group.bench_function("one_script", |b| {
        b.iter(|| {
            runtime.block_on(futures::future::join_all((0..IN_FLIGHT).map(|_| async {
                let facts = store
                    .sign_in_facts(black_box(&account))
                    .await
                    .expect("facts");
                assert_eq!(facts.devices.len(), 3);
            })))
        });
    });
    group.bench_function("four_reads", |b| {
        b.iter(|| {
            runtime.block_on(futures::future::join_all((0..IN_FLIGHT).map(|_| async {
                let account = black_box(&account);
                let facts = tokio::try_join!(
                    store.known_sign_ins(account),
                    store.list_devices(account),
                    store.authenticators(account),
                    store.now_ms(),
                )
                .expect("facts");
                assert_eq!(facts.1.len(), 3);
            })))
        });
    });
    group.finish();
}

criterion_group!(benches, sign_in_facts);
criterion_main!(benches);
