//! What the machine itself allows for the minimum work per challenge, measured before the relay is
//! loaded: Redis round trips (redis-benchmark running a script the size of a transition, the work the
//! relay cannot avoid) and pushes (the relay's own APNs client against the mock over HTTP/2). The
//! relay's sustained rate is then reported as a ratio of the smaller of the two.

use crate::Options;
use approval_relay::challenge::{AccountId, ChallengeId};
use approval_relay::device::Platform;
use approval_relay::push::apns::{ApnsProvider, ApnsSettings};
use approval_relay::push::{PushKind, PushMessage, PushOutcome, PushProvider};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Redis round trips the relay needs per challenge at best: 2 to create, 2 to decide.
pub const REDIS_ROUND_TRIPS_PER_CHALLENGE: f64 = 4.0;

/// The measured limit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Limit {
    /// Script calls per second redis-benchmark reached (50 clients).
    pub redis_scripts_per_s: f64,
    /// Challenges per second those allow at 4 round trips each.
    pub redis_challenges_per_s: f64,
    /// Pushes per second through the APNs client to the mock.
    pub pushes_per_s: f64,
    /// Challenges per second those allow (D prompts + D−1 withdrawals each).
    pub push_challenges_per_s: f64,
    /// The smaller of the two: the machine's limit for this scenario.
    pub challenges_per_s: f64,
    /// How it was measured.
    pub method: String,
    /// approval-relay's sustained rate / the limit (filled in at the end).
    pub ratio: Option<f64>,
}

/// Runs both probes.
pub async fn measure(options: &Options) -> anyhow::Result<Limit> {
    eprintln!("measuring the machine's limit (redis-benchmark, HTTP/2 pushes to the mock)...");
    let probe = options
        .probe_redis_url
        .as_deref()
        .unwrap_or(&options.redis_url);
    let redis_scripts_per_s = redis_benchmark(probe).await?;
    if options.probe_redis_url.is_some() {
        // Its ~260,000 keys would all expire 60 s from now, a burst of Redis's active expiry on the cores
        // the measured run shares: the ramp's isolated slow second ~50 s in was exactly that.
        flush(probe)?;
    }
    let pushes_per_s = push_probe(options).await?;
    let d = options.devices_per_account.max(1) as f64;
    let redis_challenges_per_s = redis_scripts_per_s / REDIS_ROUND_TRIPS_PER_CHALLENGE;
    let push_challenges_per_s = pushes_per_s / (2.0 * d - 1.0);
    Ok(Limit {
        redis_scripts_per_s,
        redis_challenges_per_s,
        pushes_per_s,
        push_challenges_per_s,
        challenges_per_s: redis_challenges_per_s.min(push_challenges_per_s),
        method: format!(
            "redis-benchmark -c 50 EVAL of a 3-command script (HSET, PEXPIRE, PUBLISH) / {REDIS_ROUND_TRIPS_PER_CHALLENGE} round trips; \
             approval-relay's APNs client, 256 in flight, to mock-push for 5 s / {} pushes per challenge",
            2.0 * d - 1.0
        ),
        ratio: None,
    })
}

/// Empties the probe's own Redis.
fn flush(url: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    redis::cmd("FLUSHALL").arg("SYNC").query::<()>(&mut conn)?;
    Ok(())
}

async fn redis_benchmark(url: &str) -> anyhow::Result<f64> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| anyhow::anyhow!("--redis-url must be redis://host:port"))?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--redis-url needs a port"))?;
    let script = "redis.call('HSET', KEYS[1], 's', ARGV[1]); redis.call('PEXPIRE', KEYS[1], 60000); \
                  redis.call('PUBLISH', KEYS[1], ARGV[1]); return 1";
    let out = tokio::process::Command::new("redis-benchmark")
        .args([
            "-h", host, "-p", port, "-c", "50", "-n", "300000", "-r", "1000000", "--csv",
        ])
        .args(["EVAL", script, "1", "limit:__rand_int__", "pending"])
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("redis-benchmark (Debian package redis-tools): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // CSV: "test","rps",avg,min,p50,p95,p99,max; the test name holds commas, so count from the end.
    text.lines()
        .filter_map(|l| l.rsplit(',').nth(6))
        .filter_map(|v| v.trim_matches('"').parse::<f64>().ok())
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("no figure in redis-benchmark's output: {text}"))
}

async fn push_probe(options: &Options) -> anyhow::Result<f64> {
    let key = ApnsSettings::read_key(&options.mock_dir.join("apns-key.p8"))?;
    let provider = Arc::new(ApnsProvider::new(ApnsSettings {
        base_url: options.mock.clone(),
        key_id: approval_relay::mock_push::cli::KEY_ID.into(),
        team_id: approval_relay::mock_push::cli::TEAM_ID.into(),
        key,
        extra_root_pem: None,
    })?);
    let account =
        AccountId::parse("limit-probe@example.com").map_err(|e| anyhow::anyhow!("{e}"))?;
    let delivered = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for worker in 0..256u32 {
        let provider = Arc::clone(&provider);
        let delivered = Arc::clone(&delivered);
        let account = account.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let message = PushMessage {
                    kind: PushKind::Challenge,
                    id: ChallengeId::generate(&account).to_string(),
                    expires_at_ms: i64::MAX / 2,
                    give_up_at: Instant::now() + Duration::from_secs(60),
                    platform: Platform::Apns,
                    token: format!("{:064x}", worker),
                    app_id: "com.example.authenticator".into(),
                };
                if provider.send(&message).await == PushOutcome::Delivered {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    Ok(delivered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
