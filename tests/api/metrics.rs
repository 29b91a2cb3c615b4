//! `/metrics` as Prometheus and its operators read it: every series described (HELP) with its unit in
//! its name, the series dashboards and alerts select there at zero before anything happened, build and
//! process series, `promtool check metrics` clean on a real scrape after traffic, and every query of the
//! operations guide naming series and label values that exist.

use crate::helpers::*;
use crate::operations::scrape;
use approval_relay::pb;
use std::io::Write;
use std::process::{Command, Stdio};

/// A relay binary of its own (so that its metrics are its alone), on a Redis of its own.
struct Fresh {
    child: std::process::Child,
    app: TestApp,
    _redis: crate::redis_server::RedisServer,
}

impl Fresh {
    async fn start() -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("port")
        };
        let (backend, device, admin) = (port(), port(), port());
        let redis = crate::redis_server::RedisServer::start();
        let child = Command::new(env!("CARGO_BIN_EXE_approval-relay"))
            .arg("serve")
            .args(["--redis-url", &redis.url()])
            .args([
                "--backend-addr",
                &backend.to_string(),
                "--device-addr",
                &device.to_string(),
            ])
            .args([
                "--admin-addr",
                &admin.to_string(),
                "--min-ttl-secs",
                "1",
                "--cooldown-base-secs",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        let app = connect_to(backend, device, admin).await;
        Self {
            child,
            app,
            _redis: redis,
        }
    }

    /// Some of everything: an approval, an expiry, a refusal.
    async fn traffic(&self) {
        let app = &self.app;
        let account = account();
        let mut phone = app.enroll(&account).await;
        let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
        let watch = app.watch(&challenge.challenge_id).await;
        app.approve(&mut phone, &challenge).await.expect("approve");
        drain(watch).await;
        let short = app.create_short(&account, 1).await;
        drain(app.watch(&short.challenge_id).await).await;
        let _ =
            app.device
                .clone()
                .list_pending(
                    approval_relay::device_sim::Phone::new(
                        approval_relay::device_sim::PhoneKey::p256(),
                    )
                    .signed(pb::device_request::Body::ListPending(
                        pb::ListPendingBody {},
                    )),
                )
                .await;
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a raw HTTP scrape.
fn body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or(raw, |(_, b)| b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_relay_exports_the_selected_series_at_zero_with_help_build_and_process_series() {
    let fresh = Fresh::start().await;
    let raw = scrape(&fresh.app).await;
    let text = body(&raw);
    for series in [
        "relay_pushes_total{provider=\"apns\",outcome=\"delivered\"}",
        "relay_pushes_total{provider=\"sink\",outcome=\"retry\"}",
        "relay_challenges_ended_total{outcome=\"expired\"}",
        "relay_limit_refusals_total{limit=\"device_auth_failures\"}",
        "relay_device_requests_refused_total{reason=\"counter_replayed\"}",
        "relay_redis_errors_total",
        "relay_tls_handshake_failures_total{listener=\"backend\"}",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(series)),
            "{series} is not registered at start:\n{text}"
        );
    }
    let build = text
        .lines()
        .find(|l| l.starts_with("relay_build_info{"))
        .expect("relay_build_info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.ends_with(" 1"),
        "{build}"
    );
    assert!(build.contains("commit=\""), "{build}");
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("\n{process} ")),
            "{process} missing:\n{text}"
        );
    }
    // Every series has its HELP.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).expect("name");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_scrape_taken_after_traffic() {
    let promtool = crate::tools::tool(
        "promtool",
        "apt-get install --no-install-recommends prometheus (promtool ships in Debian's prometheus package)",
    );
    let fresh = Fresh::start().await;
    fresh.traffic().await;
    let raw = scrape(&fresh.app).await;
    let text = body(&raw).to_owned();
    assert!(
        text.lines().any(|l| l
            .starts_with("relay_pushes_total{provider=\"sink\",outcome=\"delivered\"}")
            && !l.ends_with(" 0")),
        "the development sink's pushes are labelled provider=\"sink\":\n{text}"
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        child.wait_with_output().expect("promtool finishes")
    })
    .await
    .expect("joined");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A series name and its label matchers (label, operator, value).
type Selector = (String, Vec<(String, String, String)>);

/// The PromQL of the operations guide's ```promql blocks.
fn guide_queries() -> Vec<String> {
    let guide = include_str!("../../docs/operations.md");
    let mut queries = Vec::new();
    let mut inside = false;
    for line in guide.lines() {
        match (inside, line.trim()) {
            (false, "```promql") => inside = true,
            (true, "```") => inside = false,
            (true, q) if !q.is_empty() && !q.starts_with('#') => queries.push(q.to_owned()),
            _ => {}
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_of_the_operations_guide_selects_series_that_exist() {
    let queries = guide_queries();
    assert!(
        queries.len() >= 5,
        "the guide has its alert queries: {queries:?}"
    );
    let fresh = Fresh::start().await;
    fresh.traffic().await;
    let raw = scrape(&fresh.app).await;
    let text = body(&raw);
    let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let name_re = |q: &str| -> Vec<Selector> {
        // metric{label op "value", ...}
        let mut out = Vec::new();
        let mut rest = q;
        while let Some(start) = rest.find(|c: char| c.is_ascii_lowercase()) {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let after = &tail[end..];
            let mut matchers = Vec::new();
            let mut consumed = end;
            if (name.starts_with("relay_") || name.starts_with("process_"))
                && after.starts_with('{')
            {
                let close = after.find('}').expect("closed selector");
                for m in after[1..close].split(',').filter(|m| !m.trim().is_empty()) {
                    let (op, at) = ["!~", "=~", "!=", "="]
                        .iter()
                        .find_map(|op| m.find(op).map(|i| (*op, i)))
                        .expect("a matcher");
                    matchers.push((
                        m[..at].trim().to_owned(),
                        op.to_owned(),
                        m[at + op.len()..].trim().trim_matches('"').to_owned(),
                    ));
                }
                consumed += close + 1;
            }
            if name.starts_with("relay_") || name.starts_with("process_") {
                out.push((name.to_owned(), matchers));
            }
            rest = &tail[consumed..];
        }
        out
    };
    for query in &queries {
        let selectors = name_re(query);
        assert!(!selectors.is_empty(), "no series in {query}");
        for (name, matchers) in selectors {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                text.contains(&format!("# HELP {base} ")),
                "{query}: {name} is not exported"
            );
            for (label, op, value) in matchers {
                let values: Vec<&str> = match op.as_str() {
                    "=" => vec![value.as_str()],
                    "=~" => value.split('|').collect(),
                    _ => continue,
                };
                for v in values {
                    let wanted = format!("{label}=\"{v}\"");
                    assert!(
                        series
                            .iter()
                            .any(|l| l.starts_with(&name) && l.contains(&wanted)),
                        "{query}: no {name} series with {wanted}"
                    );
                }
            }
        }
    }
}
