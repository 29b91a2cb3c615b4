//! The results: a terminal summary and the JSON report (fields as the load-test issue specifies, so
//! runs can be compared).

use crate::Options;
use crate::limit::Limit;
use crate::measure::{Second, Window, ms};
use crate::system;
use crate::watches::{Burst, Capacity};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Commands that set up or tear down subscriptions, not per-challenge work.
const NOT_PER_CHALLENGE: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "info",
    "ping",
    "hello",
    "client|setinfo",
    "script|load",
];

/// Percentiles of one latency, ms.
pub fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "count": h.len(),
    })
}

/// One ramp step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RampStep {
    /// Asked rate, per second.
    pub rate: u32,
    /// Achieved measured rate (approved per second).
    pub achieved_per_s: f64,
    /// p99 create → push, ms.
    pub create_to_push_p99_ms: f64,
    /// p99 respond → watch, ms.
    pub respond_to_watch_p99_ms: f64,
    /// Errors in the step.
    pub errors: u64,
    /// Within target and error-free.
    pub passed: bool,
}

/// Everything measured in one run.
pub struct Report {
    scenario: Value,
    /// Latency distributions of the fixed-rate run (kept for the plot).
    pub fixed: Option<Window>,
    fixed_json: Value,
    /// The ramp's steps.
    pub ramp: Vec<RampStep>,
    /// The machine's limit.
    pub limit: Option<Limit>,
    /// The burst check.
    pub burst: Option<Burst>,
    /// The watch-capacity phase.
    pub watch_capacity: Option<Capacity>,
    /// Highest VmHWM of the replicas.
    pub relay_peak_rss_bytes: Option<u64>,
    /// p99 create → push second by second over every run.
    pub timeline: Vec<Second>,
    /// One replica against two.
    scale_out: Value,
}

impl Report {
    /// An empty report for `options`.
    pub fn new(options: &Options) -> Self {
        Self {
            scenario: json!({
                "rate": options.rate,
                "duration": options.duration,
                "warmup": options.warmup,
                "accounts": options.accounts,
                "devices_per_account": options.devices_per_account,
                "replicas": options.relay_pids.len().max(2),
                "think_time_ms": options.think_ms,
                "ramp": { "start": options.ramp_start, "step": options.ramp_step, "max": options.ramp_max,
                          "step_secs": options.ramp_step_secs, "target_p99_ms": options.target_p99_ms },
                "watches": options.watches,
            }),
            fixed: None,
            fixed_json: Value::Null,
            ramp: Vec::new(),
            limit: None,
            burst: None,
            watch_capacity: None,
            relay_peak_rss_bytes: None,
            timeline: Vec::new(),
            scale_out: Value::Null,
        }
    }

    /// Records the fixed-rate run and what Redis and the relays spent on it.
    pub fn record_fixed(
        &mut self,
        w: &Window,
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        cpu_seconds: f64,
    ) {
        let mut per_command = BTreeMap::new();
        let mut total = 0u64;
        for (name, calls) in after {
            let delta = calls.saturating_sub(before.get(name).copied().unwrap_or(0));
            if delta > 0 && !NOT_PER_CHALLENGE.contains(&name.as_str()) {
                per_command.insert(name.clone(), delta);
                total += delta;
            }
        }
        // Redis and the CPU counters cover the warm-up too: divide by every challenge the run sent.
        let sent_total = (w.total_sent as f64).max(1.0);
        let per = |n: u64| n as f64 / sent_total;
        self.fixed_json = json!({
            "create_to_push_ms": summary(&w.create_to_push),
            "respond_to_watch_ms": summary(&w.respond_to_watch),
            "create_to_decision_ms": summary(&w.create_to_decision),
            "create_rpc_ms": summary(&w.create_rpc),
            "fixed_rate": {
                "rate": w.rate,
                "sent": w.sent,
                "approved": w.approved,
                "achieved_per_s": w.approved as f64 / w.measured_secs.max(1e-9),
                "errors": w.errors,
            },
            "redis_commands_per_challenge": per(total),
            "redis_commands_by_name_per_challenge":
                per_command.iter().map(|(k, v)| (k.clone(), json!(per(*v)))).collect::<serde_json::Map<_, _>>(),
            "relay_cpu_seconds_per_1000_challenges": cpu_seconds / sent_total * 1_000.0,
        });
        self.fixed = Some(w.clone());
    }

    /// Records the relays' own count of Redis round trips over the fixed-rate run.
    pub fn record_round_trips(
        &mut self,
        w: &Window,
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
    ) {
        let sent = (w.total_sent as f64).max(1.0);
        let by_kind: serde_json::Map<String, Value> = after
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!((v - before.get(k).copied().unwrap_or(0.0)) / sent),
                )
            })
            .collect();
        let total: f64 = by_kind.values().filter_map(Value::as_f64).sum();
        if let Value::Object(map) = &mut self.fixed_json {
            map.insert("redis_round_trips_per_challenge".into(), json!(total));
            map.insert(
                "redis_round_trips_by_kind_per_challenge".into(),
                Value::Object(by_kind),
            );
        }
    }

    /// One ramp step, printed.
    pub fn ramp_step(&self, label: &str, rate: u32, w: &Window, passed: bool) -> RampStep {
        let step = RampStep {
            rate,
            achieved_per_s: w.approved as f64 / w.measured_secs.max(1e-9),
            create_to_push_p99_ms: ms(w.create_to_push.value_at_quantile(0.99)),
            respond_to_watch_p99_ms: ms(w.respond_to_watch.value_at_quantile(0.99)),
            errors: w.error_count(),
            passed,
        };
        eprintln!(
            "  {label} {:>6}/s: achieved {:>8.0}/s  p99 create→push {:>7.2} ms  p99 respond→watch {:>6.2} ms  errors {}  {}",
            step.rate,
            step.achieved_per_s,
            step.create_to_push_p99_ms,
            step.respond_to_watch_p99_ms,
            step.errors,
            if passed { "ok" } else { "over target" }
        );
        step
    }

    /// Records the one-replica ramp beside the two-replica one.
    pub fn record_scale_out(&mut self, one_replica: Vec<RampStep>) {
        let best = |steps: &[RampStep]| steps.iter().filter(|s| s.passed).map(|s| s.rate).max();
        self.scale_out = json!({
            "two_replicas_sustained_per_s": best(&self.ramp),
            "one_replica_sustained_per_s": best(&one_replica),
            "one_replica_ramp": one_replica,
            "cluster_vs_single_node": Value::Null,
            "note": "one replica: replica A takes the creates, the watches and the phones' answers while B idles; \
                     cluster_vs_single_node is filled in by run.sh's Cluster phase (null when SKIP_CLUSTER is set)",
        });
    }

    /// The highest passing ramp rate.
    pub fn sustained_rate(&self) -> Option<u32> {
        self.ramp.iter().filter(|s| s.passed).map(|s| s.rate).max()
    }

    /// Prints the summary and writes the JSON report.
    pub fn finish(&mut self, options: &Options) -> anyhow::Result<()> {
        let sustained = self.sustained_rate();
        if let (Some(limit), Some(rate)) = (self.limit.as_mut(), sustained) {
            limit.ratio = Some(f64::from(rate) / limit.reference_per_s);
        }
        let mut results = self.fixed_json.clone();
        if let Value::Object(map) = &mut results {
            map.insert("sustained_rate_per_s".into(), json!(sustained));
            map.insert(
                "errors".into(),
                json!(self.fixed.as_ref().map_or(0, Window::error_count)),
            );
            map.insert(
                "relay_peak_rss_bytes".into(),
                json!(self.relay_peak_rss_bytes),
            );
            map.insert(
                "bytes_per_watch".into(),
                json!(self.watch_capacity.as_ref().map(|c| c.bytes_per_watch)),
            );
            map.insert("limit".into(), json!(self.limit));
            map.insert("ramp".into(), json!(self.ramp));
            map.insert("burst".into(), json!(self.burst));
            map.insert("watch_capacity".into(), json!(self.watch_capacity));
            let capacity = self.watch_capacity.as_ref();
            map.insert(
                "relay_rss_before_bytes".into(),
                json!(capacity.map(|c| c.rss_before_bytes)),
            );
            map.insert(
                "relay_rss_after_close_bytes".into(),
                json!(capacity.map(|c| c.rss_after_close_bytes)),
            );
            map.insert("timeline".into(), json!(self.timeline));
            map.insert("scale_out".into(), self.scale_out.clone());
        }
        let report = json!({
            "scenario": self.scenario,
            "machine": {
                "cores": std::thread::available_parallelism().map_or(0, usize::from),
                "cpu_model": system::cpu_model(),
            },
            "results": results,
        });
        println!("{}", human(&report));
        if let Some(path) = &options.out {
            std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
            eprintln!("report written to {}", path.display());
        }
        Ok(())
    }
}

fn human(report: &Value) -> String {
    let r = &report["results"];
    let line = |name: &str, key: &str| {
        let h = &r[key];
        format!(
            "  {name:<28} p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  p99.9 {:>7.3}  max {:>8.3} ms  (n={})",
            h["p50"].as_f64().unwrap_or(0.0),
            h["p90"].as_f64().unwrap_or(0.0),
            h["p99"].as_f64().unwrap_or(0.0),
            h["p999"].as_f64().unwrap_or(0.0),
            h["max"].as_f64().unwrap_or(0.0),
            h["count"].as_u64().unwrap_or(0),
        )
    };
    let mut out = vec![
        format!(
            "approval-relay load test on {} × {}",
            report["machine"]["cores"], report["machine"]["cpu_model"]
        ),
        format!(
            "fixed rate {}/s, {} accounts × {} devices:",
            report["scenario"]["rate"],
            report["scenario"]["accounts"],
            report["scenario"]["devices_per_account"]
        ),
        line("create → push at mock", "create_to_push_ms"),
        line("respond (B) → watcher (A)", "respond_to_watch_ms"),
        line("create → decision", "create_to_decision_ms"),
        line("CreateChallenge RPC", "create_rpc_ms"),
        format!(
            "  errors {}   redis commands/challenge {:.2}   relay CPU s/1000 challenges {:.3}",
            r["errors"],
            r["redis_commands_per_challenge"].as_f64().unwrap_or(0.0),
            r["relay_cpu_seconds_per_1000_challenges"]
                .as_f64()
                .unwrap_or(0.0)
        ),
        format!(
            "sustained rate (p99 create→push within target, no errors): {}/s",
            r["sustained_rate_per_s"]
        ),
    ];
    if let Some(scale) = r["scale_out"].as_object() {
        out.push(format!(
            "scale-out: sustained {}/s with two replicas, {}/s with replica A alone",
            scale["two_replicas_sustained_per_s"], scale["one_replica_sustained_per_s"]
        ));
    }
    if let Some(limit) = r["limit"].as_object() {
        out.push(format!(
            "limit: relay-reference sustained {:.0} challenges/s ({:.3} s CPU per 1,000, {:.1} Redis commands each); ratio {}",
            limit["reference_per_s"].as_f64().unwrap_or(0.0),
            limit["reference_cpu_seconds_per_1000_challenges"].as_f64().unwrap_or(0.0),
            limit["reference_redis_commands_per_challenge"].as_f64().unwrap_or(0.0),
            limit["ratio"]
                .as_f64()
                .map_or("n/a".into(), |x| format!("{x:.2}"))
        ));
    }
    if let Some(b) = r["burst"].as_object() {
        out.push(format!(
            "burst: {}/{} watches opened over {} connections in {:.0} ms",
            b["succeeded"],
            b["requested"],
            b["connections"],
            b["elapsed_ms"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(c) = r["watch_capacity"].as_object() {
        out.push(format!(
            "watches: {} open, {:.0} bytes each; RSS {:.1} → {:.1} → {:.1} MiB after close ({}); p99 create→push {:.2} ms, respond→watch {:.2} ms meanwhile",
            c["opened"],
            c["bytes_per_watch"].as_f64().unwrap_or(0.0),
            c["rss_before_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            c["rss_open_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            c["rss_after_close_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            c["rss_recovered_after_s"]
                .as_f64()
                .map_or("not within 25% in 60 s".into(), |s| format!("within 25% after {s:.1} s")),
            c["create_to_push_p99_ms"].as_f64().unwrap_or(0.0),
            c["respond_to_watch_p99_ms"].as_f64().unwrap_or(0.0),
        ));
    }
    let target = report["scenario"]["ramp"]["target_p99_ms"]
        .as_f64()
        .unwrap_or(f64::MAX);
    let slow: Vec<String> = r["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["p99_ms"].as_f64().unwrap_or(0.0) > target)
        .map(|s| {
            format!(
                "t={}s ({}) {:.1} ms",
                s["t_s"],
                s["phase"].as_str().unwrap_or(""),
                s["p99_ms"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    out.push(if slow.is_empty() {
        format!("timeline: no second with p99 create→push over {target} ms")
    } else {
        format!("timeline: seconds over {target} ms: {}", slow.join(", "))
    });
    out.join("\n")
}
