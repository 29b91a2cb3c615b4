//! `relay-load`: the identity backend and a fleet of phones against running relay replicas, Redis and
//! mock-push, in open loop. One `standard` run measures, in order: latency at a fixed rate, the highest
//! rate that keeps p99 create → push under target (ramp), the same with one replica, and the cost of idle
//! watch streams; beside them the limit, a run of the same against `relay-reference`. It prints a summary and writes a JSON report
//! and an SVG plot. `load-tests/run.sh` starts everything and runs it.

#![forbid(unsafe_code)]

mod fleet;
mod limit;
mod measure;
mod plot;
mod pushes;
mod report;
mod system;
mod watches;

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line options of a standard run.
#[derive(Debug, Clone, Parser)]
#[command(about = "Open-loop load generator for approval-relay")]
pub struct Options {
    /// Replica A's backend API (creates and watches).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub backend: String,
    /// Replica B's device API (phones answer there).
    #[arg(long, default_value = "127.0.0.1:50062")]
    pub device: String,
    /// Replica A's device API: with it, the scale-out phase runs the ramp again with replica A doing
    /// all the work (creates, watches and the phones' answers), for one replica against two.
    #[arg(long)]
    pub device_a: Option<String>,
    /// mock-push's base URL (h2c).
    #[arg(long, default_value = "http://127.0.0.1:8443")]
    pub mock: String,
    /// mock-push's output folder (its APNs key, for the push-limit probe).
    #[arg(long, default_value = "mock-push")]
    pub mock_dir: PathBuf,
    /// The relays' Redis, for INFO commandstats.
    #[arg(long, default_value = "redis://127.0.0.1:6390")]
    pub redis_url: String,
    /// Admin listeners of the replicas (their `relay_redis_seconds_count` gives round trips).
    #[arg(long, value_delimiter = ',')]
    pub admins: Vec<String>,
    /// Process ids of the relay replicas (CPU seconds and RSS); the first is replica A.
    #[arg(long, value_delimiter = ',')]
    pub relay_pids: Vec<u32>,
    /// Accounts in the fleet.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Devices per account (even: APNs, odd: FCM).
    #[arg(long, default_value_t = 3)]
    pub devices_per_account: usize,
    /// Rate of the fixed-rate run, challenges per second.
    #[arg(long, default_value_t = 300)]
    pub rate: u32,
    /// Seconds measured at the fixed rate (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds of warm-up before each measured run (discarded).
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Milliseconds a phone waits before answering (removed from create → decision).
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// Ramp: first rate, step, highest rate and seconds per step; 0 skips the ramp.
    #[arg(long, default_value_t = 100)]
    pub ramp_start: u32,
    /// Ramp step, challenges per second.
    #[arg(long, default_value_t = 100)]
    pub ramp_step: u32,
    /// Highest ramp rate tried.
    #[arg(long, default_value_t = 15_000)]
    pub ramp_max: u32,
    /// Seconds per ramp step.
    #[arg(long, default_value_t = 6)]
    pub ramp_step_secs: u64,
    /// p99 create → push target for the ramp, milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub target_p99_ms: f64,
    /// Idle watch streams to open on replica A; 0 skips the watch-capacity phase.
    #[arg(long, default_value_t = 100_000)]
    pub watches: usize,
    /// Watch streams per HTTP/2 connection (the relay allows 1,000).
    #[arg(long, default_value_t = 900)]
    pub watches_per_connection: usize,
    /// Watches opened at once in the burst check, over `burst_connections` connections.
    #[arg(long, default_value_t = 5_000)]
    pub burst: usize,
    /// Connections of the burst check.
    #[arg(long, default_value_t = 6)]
    pub burst_connections: usize,
    /// StreamChallenges streams that carry the creates.
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// The report of a run against `relay-reference` (the limit): its sustained rate becomes
    /// `limit.reference_per_s`, and the relay's is reported as a ratio of it.
    #[arg(long)]
    pub reference_report: Option<PathBuf>,
    /// JSON report.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// SVG plot of the latency distributions and the ramp.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

impl Options {
    fn think(&self) -> Duration {
        Duration::from_millis(self.think_ms)
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = Options::parse();
    match run(options).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let _ = rustls_provider();
    let fleet = fleet::Fleet::enroll(&options).await?;
    let mut report = report::Report::new(&options);

    if let Some(path) = &options.reference_report {
        report.limit = Some(limit::read(path)?);
    }
    let pushes = pushes::subscribe(&options.mock).await?;
    let driver = measure::Driver::start(&options, fleet, pushes).await?;

    // Latency at a fixed rate, with Redis commands and CPU counted over exactly this window.
    let redis_before = system::commandstats(&options.redis_url)?;
    let trips_before = system::round_trips(&options.admins).await;
    let cpu_before = system::cpu_seconds(&options.relay_pids);
    let fixed = driver
        .run_rate(options.rate, options.warmup, options.duration, "fixed rate")
        .await;
    let cpu_after = system::cpu_seconds(&options.relay_pids);
    let redis_after = system::commandstats(&options.redis_url)?;
    let trips_after = system::round_trips(&options.admins).await;
    report.record_fixed(&fixed, &redis_before, &redis_after, cpu_after - cpu_before);
    report.record_round_trips(&fixed, &trips_before, &trips_after);

    if options.ramp_start > 0 {
        report.ramp = ramp(&options, &driver, &mut report, "ramp").await;
        let waited = system::settle(&quiet_pids(&options)).await;
        eprintln!("after the ramp: relays and generator quiet after {waited:.0} s");
        if driver.set_one_replica(true) {
            eprintln!("scale-out: the ramp again with replica A alone");
            let one = ramp(&options, &driver, &mut report, "one replica").await;
            driver.set_one_replica(false);
            report.record_scale_out(one);
            let waited = system::settle(&quiet_pids(&options)).await;
            eprintln!("after the one-replica ramp: relays and generator quiet after {waited:.0} s");
        }
    }

    if options.burst > 0 {
        report.burst = Some(watches::burst(&options, &driver).await?);
    }
    if options.watches > 0 {
        report.watch_capacity = Some(watches::capacity(&options, &driver).await?);
    }
    report.relay_peak_rss_bytes = system::peak_rss(&options.relay_pids);
    report.timeline = driver.timeline();
    report.finish(&options)?;
    if let Some(path) = &options.plot {
        plot::draw(path, &report)?;
    }
    Ok(())
}

/// The processes that must be quiet before a phase starts: the replicas and this generator.
fn quiet_pids(options: &Options) -> Vec<u32> {
    let mut pids = options.relay_pids.clone();
    pids.push(std::process::id());
    pids
}

/// Steps up the rate until two steps in a row miss. One slow step can be a hiccup (a scheduler stall on a
/// busy 2-core box): the ramp goes on until two steps in a row miss, and the highest passing step counts.
async fn ramp(
    options: &Options,
    driver: &measure::Driver,
    report: &mut report::Report,
    label: &str,
) -> Vec<report::RampStep> {
    let mut steps = Vec::new();
    let mut rate = options.ramp_start;
    let mut misses = 0;
    while rate <= options.ramp_max && misses < 2 {
        let step = driver
            .run_rate(
                rate,
                2,
                options.ramp_step_secs,
                &format!("{label} {rate}/s"),
            )
            .await;
        let passed = step.passes(options.target_p99_ms);
        steps.push(report.ramp_step(label, rate, &step, passed));
        misses = if passed { 0 } else { misses + 1 };
        rate += options.ramp_step;
    }
    steps
}

/// One rustls provider for the process (the relay library's clients expect one installed).
fn rustls_provider() -> bool {
    approval_relay::tls::install_default_provider()
}
