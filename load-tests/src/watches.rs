//! Idle watch streams: a burst of WatchChallenge calls opened at once over a few connections (each must
//! get its snapshot), and the capacity phase: K idle streams on replica A, its RSS per stream, the
//! latency of live traffic meanwhile, and the RSS once they close.

use crate::Options;
use crate::fleet::channels;
use crate::measure::{Driver, Window, ms};
use crate::system;
use approval_relay::pb;
use approval_relay::pb::challenge_service_client::ChallengeServiceClient;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The burst check's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Burst {
    /// Watches asked for.
    pub requested: usize,
    /// Over how many connections.
    pub connections: usize,
    /// How many got their snapshot.
    pub succeeded: usize,
    /// Time until the last snapshot, ms.
    pub elapsed_ms: f64,
}

/// The capacity phase's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Capacity {
    /// Streams held open.
    pub streams: usize,
    /// Streams that got their snapshot.
    pub opened: usize,
    /// Replica A's RSS before the streams opened.
    pub rss_before_bytes: u64,
    /// Replica A's RSS with the streams open.
    pub rss_open_bytes: u64,
    /// Replica A's RSS once it came back within 25% of `rss_before_bytes`, or 60 s after the streams
    /// closed if it never did.
    pub rss_after_close_bytes: u64,
    /// Seconds from the last stream closing to RSS within 25% of before; `None`: not within 60 s.
    pub rss_recovered_after_s: Option<f64>,
    /// (open − before) / streams.
    pub bytes_per_watch: f64,
    /// p99 create → push with the streams open, at the fixed rate, ms.
    pub create_to_push_p99_ms: f64,
    /// p99 respond → watch with the streams open, ms.
    pub respond_to_watch_p99_ms: f64,
    /// Errors during that run.
    pub errors: u64,
}

/// Long-lived challenges whose pushes the phones ignore, to be watched.
async fn idle_challenges(driver: &Driver, n: usize) -> anyhow::Result<Vec<String>> {
    let mut client = ChallengeServiceClient::new(driver.backend()[0].clone());
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let created = client
            .create_challenge(pb::CreateChallengeRequest {
                account_id: driver.account(i).to_owned(),
                ttl_seconds: 600,
                number_match_mode: pb::NumberMatchMode::None.into(),
                idempotency_key: format!("idle-{}-{i}", std::process::id()),
                ..Default::default()
            })
            .await?
            .into_inner();
        let id = created
            .challenge
            .map(|c| c.challenge_id)
            .unwrap_or_default();
        driver.ignore(&id);
        ids.push(id);
    }
    Ok(ids)
}

async fn cancel(driver: &Driver, ids: &[String]) {
    let mut client = ChallengeServiceClient::new(driver.backend()[0].clone());
    for id in ids {
        let _ = client
            .cancel_challenge(pb::CancelChallengeRequest {
                challenge_id: id.clone(),
            })
            .await;
    }
}

/// Opens `n` watches over `conns`, at most `at_once` in progress at a time; returns the open streams and
/// how many got a snapshot.
async fn open_watches(
    conns: &[Channel],
    ids: &[String],
    n: usize,
    at_once: usize,
) -> (Vec<tonic::Streaming<pb::ChallengeEvent>>, usize) {
    let opened = futures::stream::iter(0..n)
        .map(|i| {
            let mut client = ChallengeServiceClient::new(conns[i % conns.len()].clone());
            let id = ids[i % ids.len()].clone();
            async move {
                let mut stream = client
                    .watch_challenge(pb::WatchChallengeRequest { challenge_id: id })
                    .await
                    .ok()?
                    .into_inner();
                let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
                    .await
                    .ok()?
                    .ok()??;
                first.kind.is_some().then_some(stream)
            }
        })
        .buffer_unordered(at_once.max(1))
        .collect::<Vec<_>>()
        .await;
    let streams: Vec<_> = opened.into_iter().flatten().collect();
    let ok = streams.len();
    (streams, ok)
}

/// The burst check.
pub async fn burst(options: &Options, driver: &Driver) -> anyhow::Result<Burst> {
    eprintln!(
        "burst: {} WatchChallenge calls at once over {} connections",
        options.burst, options.burst_connections
    );
    let ids = idle_challenges(driver, 50).await?;
    let conns = channels(&options.backend, options.burst_connections.max(1)).await?;
    let started = Instant::now();
    // All at once: the point is a burst.
    let (streams, succeeded) = open_watches(&conns, &ids, options.burst, options.burst).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1_000.0;
    drop(streams);
    cancel(driver, &ids).await;
    Ok(Burst {
        requested: options.burst,
        connections: conns.len(),
        succeeded,
        elapsed_ms,
    })
}

/// The capacity phase.
pub async fn capacity(options: &Options, driver: &Driver) -> anyhow::Result<Capacity> {
    let pid = options
        .relay_pids
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("--relay-pids is needed for the watch phase"))?;
    let per = options.watches_per_connection.max(1);
    let n_conns = options.watches.div_ceil(per);
    eprintln!(
        "watch capacity: {} idle streams over {n_conns} connections",
        options.watches
    );
    let ids = idle_challenges(driver, 200).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_bytes = system::rss(pid).unwrap_or(0);
    let conns = channels(&options.backend, n_conns).await?;
    // Opened steadily (2,000 in progress at a time): this phase measures holding streams, not a burst.
    let (streams, opened) = open_watches(&conns, &ids, options.watches, 2_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_open_bytes = system::rss(pid).unwrap_or(0);
    let live: Window = driver
        .run_rate(options.rate, 1, 10, "with idle watches")
        .await;
    drop(streams);
    drop(conns);
    cancel(driver, &ids).await;
    // Wait until the replica has let go of every stream (its gauge), then a little for the allocator.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let open = system::open_watch_streams(options.admins.first().map(String::as_str)).await;
        if open.is_none_or(|n| n < 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The goal: back within 25% of before within 60 s of the last stream closing.
    let closed = Instant::now();
    let back = rss_before_bytes + rss_before_bytes / 4;
    let (rss_after_close_bytes, rss_recovered_after_s) = loop {
        let now = system::rss(pid).unwrap_or(0);
        if now <= back {
            break (now, Some(closed.elapsed().as_secs_f64()));
        }
        if closed.elapsed() >= Duration::from_secs(60) {
            break (now, None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    Ok(Capacity {
        streams: options.watches,
        opened,
        rss_before_bytes,
        rss_open_bytes,
        rss_after_close_bytes,
        rss_recovered_after_s,
        bytes_per_watch: rss_open_bytes.saturating_sub(rss_before_bytes) as f64
            / opened.max(1) as f64,
        create_to_push_p99_ms: ms(live.create_to_push.value_at_quantile(0.99)),
        respond_to_watch_p99_ms: ms(live.respond_to_watch.value_at_quantile(0.99)),
        errors: live.error_count(),
    })
}
