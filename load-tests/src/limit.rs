//! The honest limit beside the relay's figures: what `relay-reference` (the same flow with none of the
//! relay's checks, audit or metrics, on the same crates, Redis, mock and box) sustained in the same ramp.
//! `run.sh` runs the generator against it first and hands that report over with `--reference-report`;
//! the relay's sustained rate is then reported as a ratio of the reference's.

use serde_json::Value;
use std::path::Path;

/// The reference's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Limit {
    /// The reference's highest passing ramp step, challenges per second.
    pub reference_per_s: f64,
    /// The reference's CPU (both of its replicas) per 1,000 challenges of its fixed-rate run.
    pub reference_cpu_seconds_per_1000_challenges: Option<f64>,
    /// Redis commands per challenge the reference spent in its fixed-rate run.
    pub reference_redis_commands_per_challenge: Option<f64>,
    /// The reference's ramp.
    pub reference_ramp: Value,
    /// How it was measured.
    pub method: String,
    /// approval-relay's sustained rate / the reference's (filled in at the end).
    pub ratio: Option<f64>,
}

/// Reads the reference run's report.
pub fn read(path: &Path) -> anyhow::Result<Limit> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--reference-report {}: {e}", path.display()))?;
    let report: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("--reference-report {}: {e}", path.display()))?;
    let results = &report["results"];
    let reference_per_s = results["sustained_rate_per_s"].as_f64().ok_or_else(|| {
        anyhow::anyhow!(
            "--reference-report {}: the reference passed no ramp step",
            path.display()
        )
    })?;
    Ok(Limit {
        reference_per_s,
        reference_cpu_seconds_per_1000_challenges: results["relay_cpu_seconds_per_1000_challenges"]
            .as_f64(),
        reference_redis_commands_per_challenge: results["redis_commands_per_challenge"].as_f64(),
        reference_ramp: results["ramp"].clone(),
        method: "relay-reference (load-tests/src/reference: one Redis script per create and per answer, \
                 one pub/sub channel, the relay's APNs and FCM clients; no validation, signature check, \
                 limits, audit, metrics or expiry events), two replicas on the same Redis, mock and box, \
                 the same generator and ramp"
            .into(),
        ratio: None,
    })
}
