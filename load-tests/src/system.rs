//! What the machine says: Redis `INFO commandstats`, a process's CPU seconds and RSS from `/proc`, the
//! CPU model.

use std::collections::BTreeMap;

/// Calls per Redis command since the server started.
pub fn commandstats(url: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection()?;
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut conn)?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect())
}

/// User + system CPU seconds of the processes, summed (Linux clock ticks of 1/100 s).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may hold spaces: fields are counted after its closing parenthesis.
            let after = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .sum()
}

/// Waits until the processes are quiet (under 5% of a core over a second), at most 30 s; returns the
/// seconds waited. A ramp ends past saturation, and the next phase must not start on its backlog.
pub async fn settle(pids: &[u32]) -> f64 {
    let started = std::time::Instant::now();
    let mut before = cpu_seconds(pids);
    while started.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = cpu_seconds(pids);
        if now - before < 0.05 {
            break;
        }
        before = now;
    }
    started.elapsed().as_secs_f64()
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Current resident memory of one process, bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|k| k * 1024)
}

/// The highest peak resident memory among the processes, bytes.
pub fn peak_rss(pids: &[u32]) -> Option<u64> {
    pids.iter()
        .filter_map(|pid| status_kib(*pid, "VmHWM:"))
        .max()
        .map(|k| k * 1024)
}

/// The CPU model, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The `relay_open_watch_streams` gauge of one replica.
pub async fn open_watch_streams(admin: Option<&str>) -> Option<f64> {
    let text = metrics_text(admin?).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("relay_open_watch_streams "))
        .and_then(|v| v.trim().parse().ok())
}

async fn metrics_text(admin: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    Some(text)
}

/// Redis round trips each replica made so far, by kind (`command` or `pipeline`), summed over replicas:
/// the `relay_redis_seconds_count` series of their `/metrics`.
pub async fn round_trips(admins: &[String]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for admin in admins {
        let Some(text) = metrics_text(admin).await else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("relay_redis_seconds_count{") else {
                continue;
            };
            let kind = rest
                .split("kind=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("other")
                .to_owned();
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *out.entry(kind).or_default() += v;
            }
        }
    }
    out
}
