//! `relay-faults`: fault injection against real processes, in one command (`load-tests/faults.sh`).
//! Scenarios (each on its own Redis, mock-push and relay replicas):
//! - `outage`: the provider answers 503 to every push for a while under a steady load: every EXPIRED
//!   within a second of its deadline, every DELIVERY_FAILED before it, retries within the budget;
//! - `replica-kill`: the creating replica SIGKILLed while the provider holds its pushes: the survivor
//!   pushes them (or reports DELIVERY_FAILED) before the deadline, and its watchers hear it;
//! - `cluster-failover`: a Cluster master SIGKILLed under load (replicas on, node timeout 2 s): accounts
//!   on the other masters see no error, those on the lost one only until its replica is promoted, and no
//!   client sees a `MOVED` redirect.
//!
//! The figures go to `load-tests/reports/faults.json`; `--short` runs smaller versions (CI).

#![forbid(unsafe_code)]

mod procs;

use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use approval_relay::pb::challenge_service_client::ChallengeServiceClient;
use clap::Parser;
use procs::{channel, cli, cluster, control, counter, fleet, mock, port, redis, relay};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Fault injection against approval-relay")]
struct Options {
    /// The approval-relay binary.
    #[arg(long, default_value = "target/release/approval-relay")]
    relay: PathBuf,
    /// Smaller, shorter scenarios (about a minute in all).
    #[arg(long)]
    short: bool,
    /// Run only these scenarios (outage, replica-kill, cluster-failover).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the figures go.
    #[arg(long, default_value = "load-tests/reports/faults.json")]
    out: PathBuf,
}

fn now_ms() -> i64 {
    approval_relay::clock::now_ms()
}

/// Creates one NONE-mode challenge; the answer or the status message.
async fn create(
    client: &mut ChallengeServiceClient<tonic::transport::Channel>,
    account: &str,
    ttl: u32,
) -> Result<pb::Challenge, String> {
    client
        .create_challenge(pb::CreateChallengeRequest {
            account_id: account.to_owned(),
            ttl_seconds: ttl,
            number_match_mode: pb::NumberMatchMode::None.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().challenge.unwrap_or_default())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// What a watcher saw of one challenge, by its own clock.
#[derive(Debug, Default, Clone)]
struct Seen {
    expires_at_ms: i64,
    failed_at_ms: Vec<i64>,
    delivered_at_ms: Vec<i64>,
    expired_at_ms: Option<i64>,
}

async fn watch(channel: tonic::transport::Channel, challenge: pb::Challenge) -> Seen {
    let mut seen = Seen {
        expires_at_ms: challenge.expires_at_unix_ms,
        ..Seen::default()
    };
    let Ok(stream) = ChallengeServiceClient::new(channel)
        .watch_challenge(pb::WatchChallengeRequest {
            challenge_id: challenge.challenge_id,
        })
        .await
    else {
        return seen;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(event)) = stream.message().await {
        let at = now_ms();
        match event.kind {
            Some(Kind::DeliveryFailed(_)) => seen.failed_at_ms.push(at),
            Some(Kind::Delivered(_)) => seen.delivered_at_ms.push(at),
            Some(Kind::Expired(_)) => seen.expired_at_ms = Some(at),
            Some(Kind::Snapshot(c)) => {
                for d in c.deliveries {
                    match d.state() {
                        pb::DeliveryState::Delivered => seen.delivered_at_ms.push(at),
                        pb::DeliveryState::Failed => seen.failed_at_ms.push(at),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    seen
}

fn percentile(mut v: Vec<i64>, p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

async fn outage(bin: &Path, dir: &Path, short: bool) -> Value {
    let (rate, secs, outage_secs, ttl) = if short {
        (50, 8, 5, 10)
    } else {
        (150, 30, 20, 10)
    };
    let redis_port = port();
    let _redis = redis(dir, redis_port, &[]);
    let mock_port = port();
    let (_mock, key) = mock(bin, dir, mock_port);
    let store = vec![
        "--redis-url".to_owned(),
        format!("redis://127.0.0.1:{redis_port}"),
    ];
    let a = relay(bin, &store, mock_port, &key, &dir.join("outage-a.log"));
    let b = relay(bin, &store, mock_port, &key, &dir.join("outage-b.log"));
    let accounts = fleet(a.backend, b.device, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    control(
        mock_port,
        "/mock/outage",
        &format!("{{\"secs\": {outage_secs}}}"),
    )
    .await;
    let backend = channel(a.backend).await;
    let mut client = ChallengeServiceClient::new(backend.clone());
    let mut watchers = Vec::new();
    let mut errors = 0;
    let started = Instant::now();
    let total = rate * secs;
    for n in 0..total {
        // Open loop: each create at its own instant.
        let at = started + Duration::from_secs_f64(f64::from(n) / f64::from(rate));
        tokio::time::sleep_until(at.into()).await;
        let account = &accounts[n as usize % accounts.len()].0;
        match create(&mut client, account, ttl).await {
            Ok(c) => watchers.push(tokio::spawn(watch(backend.clone(), c))),
            Err(_) => errors += 1,
        }
    }
    let mut seen = Vec::new();
    for w in watchers {
        seen.extend(w.await.ok());
    }
    let lateness: Vec<i64> = seen
        .iter()
        .filter_map(|s| s.expired_at_ms.map(|e| e - s.expires_at_ms))
        .collect();
    let failed: Vec<&i64> = seen.iter().flat_map(|s| s.failed_at_ms.iter()).collect();
    let failed_late = seen
        .iter()
        .map(|s| {
            s.failed_at_ms
                .iter()
                .filter(|f| **f >= s.expires_at_ms)
                .count()
        })
        .sum::<usize>();
    let (mut requests, mut retries, mut spent) = (0.0, 0.0, 0.0);
    for admin in [a.admin, b.admin] {
        requests += counter(admin, "relay_pushes_total").await;
        retries += counter(admin, "relay_push_retries_total").await;
        spent += counter(admin, "relay_push_retry_budget_exhausted_total").await;
    }
    let firsts = requests - retries;
    let over_a_second = lateness.iter().filter(|l| **l > 1_000).count();
    // The budget: a fifth of first attempts plus 10 a second over the run (both replicas).
    let allowed = 0.2 * firsts + 10.0 * 2.0 * f64::from(secs + ttl);
    json!({
        "rate_per_s": rate, "seconds": secs, "outage_seconds": outage_secs, "ttl_seconds": ttl,
        "created": seen.len(), "create_errors": errors,
        "expired": lateness.len(),
        "expired_late_ms": { "p50": percentile(lateness.clone(), 0.5), "p99": percentile(lateness.clone(), 0.99),
                              "max": lateness.iter().max().copied().unwrap_or(0) },
        "expired_more_than_1s_late": over_a_second,
        "delivery_failed": failed.len(), "delivery_failed_at_or_after_deadline": failed_late,
        "provider_requests": requests, "first_attempts": firsts, "retries": retries,
        "retries_per_first_attempt": if firsts > 0.0 { retries / firsts } else { 0.0 },
        "retry_budget_refusals": spent,
        "passed": over_a_second == 0 && failed_late == 0 && errors == 0 && retries <= allowed
            && lateness.len() == seen.len(),
    })
}

async fn replica_kill(bin: &Path, dir: &Path, short: bool) -> Value {
    let n = if short { 10 } else { 20 };
    let redis_port = port();
    let _redis = redis(dir, redis_port, &[]);
    let mock_port = port();
    let (_mock, key) = mock(bin, dir, mock_port);
    let store = vec![
        "--redis-url".to_owned(),
        format!("redis://127.0.0.1:{redis_port}"),
    ];
    let mut a = relay(bin, &store, mock_port, &key, &dir.join("kill-a.log"));
    let b = relay(bin, &store, mock_port, &key, &dir.join("kill-b.log"));
    let accounts = fleet(a.backend, b.device, n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, token) in &accounts {
        control(
            mock_port,
            &format!("/mock/tokens/{token}"),
            r#"{"behavior": "slow", "delay_ms": 2000}"#,
        )
        .await;
    }
    let mut client = ChallengeServiceClient::new(channel(a.backend).await);
    let survivor = channel(b.backend).await;
    let mut watchers = Vec::new();
    for (account, _) in &accounts {
        let challenge = create(&mut client, account, 30)
            .await
            .expect("acknowledged");
        watchers.push(tokio::spawn(watch(survivor.clone(), challenge)));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed_at = now_ms();
    a.proc.kill();
    // Give every watcher its outcome (and the challenges their end: cancel them).
    tokio::time::sleep(Duration::from_secs(12)).await;
    drop(b);
    let mut outcomes = (0, 0, 0, 0);
    let mut heard_ms = Vec::new();
    for w in watchers {
        let Ok(s) = w.await else { continue };
        match (s.delivered_at_ms.first(), s.failed_at_ms.first()) {
            (Some(at), _) | (None, Some(at)) if *at < s.expires_at_ms => {
                heard_ms.push(at - killed_at);
                if s.delivered_at_ms.is_empty() {
                    outcomes.1 += 1;
                } else {
                    outcomes.0 += 1;
                }
            }
            (Some(_), _) | (None, Some(_)) => outcomes.2 += 1,
            (None, None) => outcomes.3 += 1,
        }
    }
    json!({
        "acknowledged": n, "delivered_by_survivor": outcomes.0, "delivery_failed": outcomes.1,
        "after_deadline": outcomes.2, "never_heard": outcomes.3,
        "outcome_after_kill_ms": { "p50": percentile(heard_ms.clone(), 0.5), "max": heard_ms.iter().max().copied().unwrap_or(0) },
        "passed": outcomes.2 == 0 && outcomes.3 == 0,
    })
}

/// The master port that serves `slot`, from `CLUSTER NODES`.
fn master_of(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
            return None;
        }
        let port: u16 = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
        fields[8..].iter().any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
        })
        .then_some(port)
    })
}

async fn cluster_failover(bin: &Path, dir: &Path, short: bool) -> Value {
    let (rate, secs) = if short { (20, 15) } else { (50, 30) };
    let (mut nodes, ports) = cluster(dir, 3);
    let mock_port = port();
    let (_mock, key) = mock(bin, dir, mock_port);
    let seeds = ports[..3]
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let store = vec!["--redis-cluster-nodes".to_owned(), seeds];
    let a = relay(bin, &store, mock_port, &key, &dir.join("cluster-a.log"));
    let b = relay(bin, &store, mock_port, &key, &dir.join("cluster-b.log"));
    let accounts = fleet(a.backend, b.device, 60).await;
    let topology = cli(ports[0], &["CLUSTER", "NODES"]);
    let slots: Vec<u16> = accounts
        .iter()
        .map(|(account, _)| {
            let tag = approval_relay::challenge::AccountId::parse(account)
                .expect("account")
                .tag()
                .to_string();
            cli(ports[0], &["CLUSTER", "KEYSLOT", &format!("x{{{tag}}}")])
                .trim()
                .parse()
                .expect("slot")
        })
        .collect();
    let owner: Vec<u16> = slots
        .iter()
        .map(|slot| master_of(&topology, *slot).expect("a master serves it"))
        .collect();
    // Kill the master that serves most accounts.
    let victim = *owner
        .iter()
        .max_by_key(|p| owner.iter().filter(|q| q == p).count())
        .expect("accounts");
    let victim_index = ports.iter().position(|p| *p == victim).expect("victim");
    let victim_slot = slots[owner
        .iter()
        .position(|p| *p == victim)
        .expect("an account there")];
    // (when, on the lost master, the error if any): the creates are sequential, so no lock is needed.
    let mut results: Vec<(i64, bool, Option<String>)> = Vec::new();
    let mut clients = [
        ChallengeServiceClient::new(channel(a.backend).await),
        ChallengeServiceClient::new(channel(b.backend).await),
    ];
    let started = Instant::now();
    let mut killed_at = None;
    let survivor = ports[..3]
        .iter()
        .copied()
        .find(|p| *p != victim)
        .expect("another master");
    let mut promoted_at = None;
    for n in 0..rate * secs {
        let at = started + Duration::from_secs_f64(f64::from(n) / f64::from(rate));
        tokio::time::sleep_until(at.into()).await;
        if killed_at.is_none() && started.elapsed() >= Duration::from_secs(5) {
            nodes[victim_index].kill();
            killed_at = Some(now_ms());
        }
        if killed_at.is_some() && promoted_at.is_none() && n % 5 == 0 {
            // Promoted once a healthy master serves the lost master's slots.
            let now = cli(survivor, &["CLUSTER", "NODES"]);
            if master_of(&now, victim_slot).is_some_and(|p| p != victim) {
                promoted_at = Some(now_ms());
            }
        }
        let i = n as usize % accounts.len();
        let result = create(&mut clients[i % 2], &accounts[i].0, 30).await;
        results.push((now_ms(), owner[i] == victim, result.err()));
    }
    let healthy_errors = results
        .iter()
        .filter(|(_, lost, e)| !lost && e.is_some())
        .count();
    let lost_errors: Vec<i64> = results
        .iter()
        .filter(|(_, lost, e)| *lost && e.is_some())
        .map(|(t, _, _)| *t)
        .collect();
    let moved = results
        .iter()
        .filter(|(_, _, e)| {
            e.as_ref()
                .is_some_and(|e| e.to_ascii_lowercase().contains("moved"))
        })
        .count();
    let last_error_after_promotion_ms = match (lost_errors.iter().max(), promoted_at) {
        (Some(last), Some(p)) => last - p,
        _ => 0,
    };
    let healthy_seen: std::collections::BTreeSet<String> = results
        .iter()
        .filter_map(|(_, lost, e)| (!lost).then_some(e.clone()).flatten())
        .collect();
    json!({
        "rate_per_s": rate, "seconds": secs, "creates": results.len(),
        "accounts_on_the_lost_master": owner.iter().filter(|p| **p == victim).count(),
        "errors_on_healthy_masters": healthy_errors,
        "errors_on_healthy_masters_messages": healthy_seen,
        "errors_on_the_lost_master": lost_errors.len(),
        "promotion_after_kill_ms": match (killed_at, promoted_at) { (Some(k), Some(p)) => p - k, _ => -1 },
        "last_error_after_promotion_ms": last_error_after_promotion_ms,
        "moved_in_a_client_message": moved,
        "passed": healthy_errors == 0 && moved == 0 && last_error_after_promotion_ms <= 1_000,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    anyhow::ensure!(
        options.relay.is_file(),
        "{} not found: cargo build --release --bin approval-relay",
        options.relay.display()
    );
    let dir = std::env::temp_dir().join(format!("relay-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let wanted = |name: &str| options.only.is_empty() || options.only.iter().any(|o| o == name);
    let mut report = serde_json::Map::new();
    report.insert("short".into(), options.short.into());
    report.insert("date".into(), now_ms().into());
    if wanted("outage") {
        eprintln!("outage…");
        report.insert(
            "outage".into(),
            outage(&options.relay, &dir, options.short).await,
        );
    }
    if wanted("replica-kill") {
        eprintln!("replica-kill…");
        report.insert(
            "replica_kill".into(),
            replica_kill(&options.relay, &dir, options.short).await,
        );
    }
    if wanted("cluster-failover") {
        eprintln!("cluster-failover…");
        report.insert(
            "cluster_failover".into(),
            cluster_failover(&options.relay, &dir, options.short).await,
        );
    }
    let passed = report
        .values()
        .filter_map(|v| v.get("passed"))
        .all(|p| p.as_bool() == Some(true));
    report.insert("passed".into(), passed.into());
    let text = serde_json::to_string_pretty(&Value::Object(report))?;
    if let Some(parent) = options.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&options.out, &text)?;
    println!("{text}");
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        passed,
        "a fault scenario failed its goals; see {}",
        options.out.display()
    );
    Ok(())
}
