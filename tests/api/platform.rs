//! The real binary started the way platforms start it: with every variable Kubernetes injects for the
//! shipped Services and the CLI tools' own variables in its environment; configuration mistakes as one
//! line and exit 64; `check-config`; and its logs as log shippers read them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_approval-relay");

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Flags that put every listener on a free loopback port.
fn loopback_ports() -> (Vec<String>, String) {
    let admin = format!("127.0.0.1:{}", port());
    let flags = vec![
        "--backend-addr".into(),
        format!("127.0.0.1:{}", port()),
        "--device-addr".into(),
        format!("127.0.0.1:{}", port()),
        "--admin-addr".into(),
        admin.clone(),
    ];
    (flags, admin)
}

/// A Service's name, whether it is headless, and its ports (name, port, protocol).
type Service = (String, bool, Vec<(String, u16, String)>);

/// The Services of a rendered kustomization: name, cluster IP (None for headless) and ports as (name,
/// port, protocol). kustomize writes canonical YAML (two-space indent, sorted keys), so a line reader
/// suffices.
fn services(rendered: &str) -> Vec<Service> {
    let mut out = Vec::new();
    for doc in rendered.split("\n---\n") {
        if !doc.lines().any(|l| l == "kind: Service") {
            continue;
        }
        let lines: Vec<&str> = doc.lines().collect();
        let meta = lines
            .iter()
            .position(|l| *l == "metadata:")
            .expect("metadata");
        let name = lines[meta + 1..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .find_map(|l| l.strip_prefix("  name: "))
            .expect("a Service has a name")
            .to_owned();
        let headless = lines.iter().any(|l| l.trim() == "clusterIP: None");
        let mut ports = Vec::new();
        if let Some(start) = lines.iter().position(|l| *l == "  ports:") {
            let mut current: Option<(String, u16, String)> = None;
            for l in &lines[start + 1..] {
                if !l.starts_with("  - ") && !l.starts_with("    ") {
                    break;
                }
                if l.starts_with("  - ") {
                    ports.extend(current.take());
                    current = Some((String::new(), 0, "TCP".into()));
                }
                let field = l.trim_start_matches(['-', ' ']);
                if let Some(p) = current.as_mut() {
                    if let Some(v) = field.strip_prefix("name: ") {
                        p.0 = v.to_owned();
                    } else if let Some(v) = field.strip_prefix("port: ") {
                        p.1 = v.parse().expect("port number");
                    } else if let Some(v) = field.strip_prefix("protocol: ") {
                        p.2 = v.to_owned();
                    }
                }
            }
            ports.extend(current);
        }
        out.push((name, headless, ports));
    }
    out
}

/// The variables the kubelet puts into every container of the namespace for one Service (docker-link
/// style, `enableServiceLinks`), with `ip` as its cluster IP.
fn service_links(name: &str, ip: &str, ports: &[(String, u16, String)]) -> Vec<(String, String)> {
    let s = name.to_ascii_uppercase().replace('-', "_");
    let mut env = Vec::new();
    let Some((_, first, first_proto)) = ports.first() else {
        return env;
    };
    env.push((format!("{s}_SERVICE_HOST"), ip.to_owned()));
    env.push((format!("{s}_SERVICE_PORT"), first.to_string()));
    env.push((
        format!("{s}_PORT"),
        format!("{}://{ip}:{first}", first_proto.to_ascii_lowercase()),
    ));
    for (port_name, port, proto) in ports {
        if !port_name.is_empty() {
            env.push((
                format!(
                    "{s}_SERVICE_PORT_{}",
                    port_name.to_ascii_uppercase().replace('-', "_")
                ),
                port.to_string(),
            ));
        }
        let p = format!("{s}_PORT_{port}_{}", proto.to_ascii_uppercase());
        let lower = proto.to_ascii_lowercase();
        env.push((p.clone(), format!("{lower}://{ip}:{port}")));
        env.push((format!("{p}_PROTO"), lower));
        env.push((format!("{p}_PORT"), port.to_string()));
        env.push((format!("{p}_ADDR"), ip.to_owned()));
    }
    env
}

/// The CLI tools' own documented variables, as a shell that followed the walkthrough has them.
const TOOL_VARIABLES: &[(&str, &str)] = &[
    ("APPROVAL_RELAY_BACKEND", "http://127.0.0.1:50051"),
    ("APPROVAL_RELAY_BACKEND_CA_FILE", "/nonexistent/ca.pem"),
    ("APPROVAL_RELAY_BACKEND_CERT_FILE", "/nonexistent/cert.pem"),
    ("APPROVAL_RELAY_BACKEND_KEY_FILE", "/nonexistent/key.pem"),
    ("APPROVAL_RELAY_DEVICE_KEYS", "device-keys.json"),
    ("APPROVAL_RELAY_HEALTH_ADDR", "127.0.0.1:9090"),
];

fn wait_ready(admin: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the relay exited with {status} instead of becoming ready");
        }
        let ready = Command::new(BIN)
            .args(["health", "--ready", "--admin", admin])
            .env_remove("APPROVAL_RELAY_HEALTH_ADDR")
            .output()
            .is_ok_and(|o| o.status.success());
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "the relay never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_relay_starts_with_every_variable_kubernetes_injects_for_the_shipped_services() {
    let kubectl = crate::tools::tool("kubectl", "https://kubernetes.io/docs/tasks/tools/");
    for overlay in ["redis-single", "redis-cluster"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/k8s/overlays")
            .join(overlay);
        let rendered = crate::tools::run(&kubectl, &["kustomize", &dir.display().to_string()]);
        assert!(
            rendered.contains("enableServiceLinks: false"),
            "{overlay}: the manifests turn the Service variables off"
        );
        let mut env = Vec::new();
        let found = services(&rendered);
        assert!(found.iter().any(|(n, _, _)| n == "approval-relay-backend"));
        for (i, (name, headless, ports)) in found.iter().enumerate() {
            if !headless {
                env.extend(service_links(name, &format!("10.96.0.{}", i + 10), ports));
            }
        }
        assert!(
            env.iter().any(|(k, _)| k == "APPROVAL_RELAY_BACKEND_PORT"),
            "{overlay}: the project's own Services inject APPROVAL_RELAY_* variables: {env:?}"
        );
        env.extend(
            TOOL_VARIABLES
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let (flags, admin) = loopback_ports();
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(&flags)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        wait_ready(&admin, &mut child);
        let _ = child.kill();
        let output = child.wait_with_output().expect("exits");
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(
            logs.contains("APPROVAL_RELAY_BACKEND_PORT") && logs.contains("names no setting"),
            "an ignored variable is named at debug level:\n{logs}"
        );
    }
}

fn relay(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("runs")
}

fn one_line_64(out: &Output, contains: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "exit 64: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.len() < 300, "a short line: {stderr}");
    assert!(
        stderr.contains(contains),
        "{stderr:?} should name {contains:?}"
    );
}

#[test]
fn every_unusable_configuration_is_one_line_and_exit_64() {
    let dir = std::env::temp_dir().join(format!("approval-relay-config-{}", port()));
    std::fs::create_dir_all(&dir).expect("dir");
    let toml = dir.join("relay.toml");
    std::fs::write(&toml, "bogus_key = 1\n").expect("toml");
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "redis_ulr = \"redis://x\"\n").expect("toml");
    let bad_type = dir.join("types.toml");
    std::fs::write(&bad_type, "max_pending_per_account = \"many\"\n").expect("toml");
    let toml = toml.display().to_string();
    let bad_type = bad_type.display().to_string();
    for command in ["serve", "check-config"] {
        one_line_64(&relay(&[command, "--no-such-flag"], &[]), "--no-such-flag");
        one_line_64(
            &relay(&[command, "--max-pending-per-account", "x"], &[]),
            "x",
        );
        one_line_64(&relay(&[command, "--config", &toml], &[]), "bogus_key");
        one_line_64(
            &relay(&[command, "--config", &bad_type], &[]),
            "max_pending_per_account",
        );
        one_line_64(
            &relay(
                &[
                    command,
                    "--apns-key-file",
                    "/nonexistent/key.p8",
                    "--apns-key-id",
                    "K",
                    "--apns-team-id",
                    "T",
                ],
                &[],
            ),
            "apns_key_file",
        );
        one_line_64(
            &relay(
                &[
                    command,
                    "--fcm-service-account-file",
                    "/nonexistent/sa.json",
                ],
                &[],
            ),
            "fcm_service_account_file",
        );
        one_line_64(
            &relay(&[command, "--account-rate-burst", "0"], &[]),
            "account_rate_burst must be at least 1 when account_rate_per_minute",
        );
        one_line_64(
            &relay(
                &[command],
                &[("APPROVAL_RELAY_MAX_PENDING_PER_ACCOUNT", "lots")],
            ),
            "APPROVAL_RELAY_MAX_PENDING_PER_ACCOUNT",
        );
        one_line_64(
            &relay(&[command], &[("APPROVAL_RELAY_DEVICE_CACHE_ENTRIES", "-1")]),
            "APPROVAL_RELAY_DEVICE_CACHE_ENTRIES",
        );
        one_line_64(
            &relay(
                &[
                    command,
                    "--backend-addr",
                    "0.0.0.0:50051",
                    "--insecure-plaintext-backend=false",
                ],
                &[],
            ),
            "--insecure-plaintext-backend",
        );
        one_line_64(
            &relay(
                &[
                    command,
                    "--redis-url",
                    "redis://relay:hunter2@127.0.0.1:1",
                    "--redis-ca-file",
                    "/x",
                ],
                &[],
            ),
            "redis_ca_file",
        );
    }
    // The suggestion names the setting that was meant.
    let out = relay(
        &["check-config", "--config", &typo.display().to_string()],
        &[],
    );
    one_line_64(
        &out,
        "unknown setting \"redis_ulr\"; did you mean redis_url?",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_redacted() {
    let out = relay(
        &[
            "check-config",
            "--redis-url",
            "redis://relay:hunter2@10.0.0.5:6379",
            "--supersede-pending",
            "--insecure-plaintext-device=false",
        ],
        &[
            ("APPROVAL_RELAY_COOLDOWN_BASE_SECS", "7"),
            ("APPROVAL_RELAY_DEVICE_CACHE_ENTRIES", "0"),
            ("APPROVAL_RELAY_BACKEND_PORT", "tcp://10.96.0.1:50051"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !stdout.contains("hunter2"),
        "the password is redacted:\n{stdout}"
    );
    assert!(
        stdout.contains("redis://relay:***@10.0.0.5:6379"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cooldown_base_secs = 7"),
        "the environment is read:\n{stdout}"
    );
    assert!(stdout.contains("supersede_pending = true"), "{stdout}");
    assert!(stdout.contains("device_cache_entries = 0"), "{stdout}");
    assert!(
        stdout.contains("insecure_plaintext_device = false"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# ignored (not a setting): APPROVAL_RELAY_BACKEND_PORT"),
        "{stdout}"
    );
}

/// Starts the relay with `args` and `env`, waits until it is ready, stops it with SIGTERM, and returns
/// its stderr.
fn run_to_completion(args: &[&str], env: &[(&str, &str)]) -> String {
    let (flags, admin) = loopback_ports();
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(&flags)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    });
    wait_ready(&admin, &mut child);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = child.wait().expect("exits");
    assert!(exited.success(), "a SIGTERM'd relay exits 0: {exited}");
    reader.join().expect("read logs")
}

#[test]
fn json_logs_carry_timestamp_level_target_and_message_at_the_top_level() {
    let logs = run_to_completion(&["--log-format", "json"], &[]);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line[field].is_string(), "{field} at the top level: {line}");
        }
        assert!(line.get("fields").is_none(), "{line}");
    }
    let first = &lines[0];
    assert_eq!(first["message"], "approval-relay starting");
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert!(first["commit"].is_string());
    assert_eq!(
        lines.last().expect("lines")["message"],
        "approval-relay stopped",
        "a line at exit"
    );
}

#[test]
fn text_logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let logs = run_to_completion(&[], &[]);
    assert!(!logs.contains('\u{1b}'), "ANSI codes in a pipe:\n{logs}");
    assert!(logs.contains("approval-relay starting"), "{logs}");
    assert!(logs.contains(env!("CARGO_PKG_VERSION")), "{logs}");
    assert!(
        logs.lines()
            .last()
            .is_some_and(|l| l.contains("approval-relay stopped")),
        "{logs}"
    );
}

/// `rust-version` in Cargo.toml says what the locked dependencies truly need: the highest
/// `rust-version` among them, no lower (a false claim) and no higher (needlessly holding users back).
#[test]
fn rust_version_is_the_highest_the_locked_dependencies_declare() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let mut needed: Option<(Vec<u64>, String)> = None;
    let mut ours = None;
    for p in meta["packages"].as_array().expect("packages") {
        let Some(rv) = p["rust_version"].as_str() else {
            continue;
        };
        let id = p["id"].as_str().unwrap_or_default();
        if members.contains(&id) {
            if p["name"] == "approval-relay" {
                ours = Some(parse(rv));
            }
            continue;
        }
        let v = parse(rv);
        if needed.as_ref().is_none_or(|(n, _)| v > *n) {
            needed = Some((v, format!("{} {}", p["name"], p["version"])));
        }
    }
    let (needed, by) = needed.expect("dependencies declare rust-version");
    let ours = ours.expect("approval-relay declares rust-version");
    let pad = |mut v: Vec<u64>| {
        v.resize(3, 0);
        v
    };
    assert_eq!(
        pad(ours),
        pad(needed.clone()),
        "Cargo.toml's rust-version must be {needed:?}, what {by} needs"
    );
}
