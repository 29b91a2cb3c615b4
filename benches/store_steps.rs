//! Criterion benches of the store steps every challenge takes, against a real `redis-server`: the reads a
//! create starts with (the sign-in's evaluation: one reads.lua call, `Store::sign_in_facts`, beside the
//! four concurrent reads it replaced), and a challenge's whole life in the store (create.lua, one
//! delivery report for its three pushes, respond.lua's approval), the steps whose Redis commands issue
//! 18 cut. `cargo bench --bench store_steps`; needs `redis-server` (Debian package redis-server).
#![allow(missing_docs)]

#[path = "../tests/api/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use approval_relay::auth::PublicKey;
use approval_relay::challenge::{
    AccountId, ChallengeId, Decision, DeliveryState, DeviceId, LoginContext, NumberMatch,
    NumberMode, Via,
};
use approval_relay::device::{Device, Enrollment, Platform, Ticket};
use approval_relay::device_sim::PhoneKey;
use approval_relay::grpc::convert;
use approval_relay::limits::{LimitPolicy, RateLimit};
use approval_relay::store::redis::{Nodes, Target};
use approval_relay::store::{
    CreateOutcome, DeviceCall, NewChallenge, NewDevice, RedisStore, Store,
};
use approval_relay::watch::Hub;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A Redis store with `accounts` accounts of three phones each (their device ids, in enrollment order).
/// The per-account creation rate is off, as in the load test: the bench creates far faster than 20 a
/// minute per account.
async fn store_with_accounts(
    url: String,
    accounts: usize,
) -> (RedisStore, Vec<(AccountId, Vec<Device>)>) {
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
        LimitPolicy {
            account_rate: RateLimit {
                per_minute: 0,
                burst: 0,
            },
            ..LimitPolicy::default()
        },
        "bench".into(),
    )
    .await
    .expect("redis store");
    let mut out = Vec::with_capacity(accounts);
    for n in 0..accounts {
        let account = AccountId::parse(&format!("user{n}@example.com")).expect("account");
        let mut devices = Vec::with_capacity(3);
        for i in 0..3 {
            devices.push(enroll_phone(&store, &account, i).await);
        }
        out.push((account, devices));
    }
    (store, out)
}

/// Enrolls one APNs phone with an Ed25519 key.
async fn enroll_phone(store: &RedisStore, account: &AccountId, i: usize) -> Device {
    let ticket = Ticket::generate(account);
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
        .expect("enrolled")
}

/// Evaluations in flight at once per iteration, as under load (one alone is mostly wake-up latency).
const IN_FLIGHT: usize = 64;

fn sign_in_facts(c: &mut Criterion) {
    let redis = redis_server::RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (store, accounts) = runtime.block_on(store_with_accounts(redis.url(), 1));
    let account = accounts[0].0.clone();
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

/// Signed counters for the approvals: one sequence for every device is enough, each only has to rise.
static COUNTER: AtomicU64 = AtomicU64::new(1);

/// One challenge's life in the store, as the relay drives it on the load test's path: created for the
/// account's three phones, its three pushes reported in one step (the replica's push work finished), and
/// approved by the first phone (no number to match).
async fn lifecycle(store: &RedisStore, account: &AccountId, devices: &[Device]) {
    let new = NewChallenge {
        id: ChallengeId::generate(account),
        account: account.clone(),
        context: LoginContext::default(),
        number: NumberMatch::generate(NumberMode::None, 1, &mut rand::thread_rng()),
        ttl: Duration::from_secs(60),
        idempotency_key: None,
        min_assurance: Default::default(),
    };
    let id = new.id.clone();
    match store.create_challenge(new).await.expect("create") {
        CreateOutcome::Created(_, pushed, _) => assert_eq!(pushed.len(), 3),
        other => panic!("not created: {other:?}"),
    }
    let sent: Vec<_> = devices
        .iter()
        .map(|d| {
            (
                d.id.clone(),
                DeliveryState::Delivered(Via::new(Platform::Apns, false)),
            )
        })
        .collect();
    store
        .record_deliveries(&id, &sent, true)
        .await
        .expect("deliveries");
    let call = DeviceCall {
        device: devices[0].id.clone(),
        counter: COUNTER.fetch_add(1, Ordering::Relaxed),
        key: devices[0].key.clone(),
    };
    store
        .respond(
            &call,
            &id,
            Decision::Approve,
            0,
            Duration::from_secs(86_400),
        )
        .await
        .expect("respond")
        .expect("approved");
}

fn challenge_lifecycle(c: &mut Criterion) {
    let redis = redis_server::RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // One account per challenge in flight: an account may have one pending challenge (the default cap).
    let (store, accounts) = runtime.block_on(store_with_accounts(redis.url(), IN_FLIGHT));
    let mut group = c.benchmark_group("challenge_lifecycle_x64");
    group.throughput(criterion::Throughput::Elements(IN_FLIGHT as u64));
    group.bench_function("create_report_approve", |b| {
        b.iter(|| {
            runtime.block_on(futures::future::join_all(
                accounts
                    .iter()
                    .map(|(account, devices)| lifecycle(&store, account, devices)),
            ))
        });
    });
    group.finish();
}

criterion_group!(benches, sign_in_facts, challenge_lifecycle);
criterion_main!(benches);
