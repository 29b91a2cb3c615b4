//! The README walkthrough with real processes: mock-push, the relay pushing to it, a simulated phone
//! that enrolls, receives its push from the mock and answers it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_approval-relay");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must succeed and returns what it printed.
fn stdout(dir: &std::path::Path, args: &[&str]) -> String {
    String::from_utf8(run(dir, args).stdout).expect("utf8")
}

fn wait_for(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_simulated_phone_receives_its_push_from_mock_push_and_approves() {
    let dir = std::env::temp_dir().join(format!(
        "approval-relay-walkthrough-{}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let mock_addr = format!("127.0.0.1:{}", port());
    let mut mock = Killed(
        Command::new(BIN)
            .current_dir(&dir)
            .args(["mock-push", "--listen", &mock_addr, "--out", "mock"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mock-push starts"),
    );
    // Its second line names the relay flags; take them as printed.
    let mut lines = BufReader::new(mock.0.stdout.take().expect("stdout")).lines();
    let flags = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.trim_start().starts_with("approval-relay serve"))
        .expect("flags line");
    let flags: Vec<String> = flags
        .split_whitespace()
        .skip(2)
        .map(str::to_owned)
        .collect();

    let (backend, device, admin) = (
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
    );
    // Every log line at trace level goes to a file: no offline-code secret or code may be in it.
    let log = std::fs::File::create(dir.join("relay.log")).expect("log file");
    let _relay = Killed(
        Command::new(BIN)
            .current_dir(&dir)
            .env("RUST_LOG", "trace")
            .arg("serve")
            .args(&flags)
            .args([
                "--backend-addr",
                &backend,
                "--device-addr",
                &device,
                "--admin-addr",
                &admin,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("relay starts"),
    );
    wait_for(&backend);
    wait_for(&device);

    let enroll = [
        "backend",
        "--relay",
        &backend,
        "enroll",
        "alice@example.com",
    ];
    let uri = stdout(&dir, &enroll);
    run(
        &dir,
        &[
            "device",
            "enroll",
            uri.trim(),
            "--platform",
            "apns",
            "--push-token",
            "00aa11bb22cc33dd44ee55ff66778899",
        ],
    );

    let listener = Killed(
        Command::new(BIN)
            .current_dir(&dir)
            .args([
                "device",
                "listen",
                "--mock",
                &format!("https://{mock_addr}"),
                "--ca-file",
                "mock/ca.pem",
                "--auto",
                "approve",
                "--once",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("listener starts"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let create = [
        "backend",
        "--relay",
        &backend,
        "create",
        "alice@example.com",
        "--mode",
        "none",
    ];
    let id = stdout(&dir, &create);
    approved_by(listener, "the APNs phone");
    let watched = stdout(&dir, &["backend", "--relay", &backend, "watch", id.trim()]);
    assert!(
        watched.lines().any(|l| l.starts_with("APPROVED")),
        "{watched}"
    );

    // A second phone enrolls: the first is told, through a real APNs push to mock-push, and revokes it.
    let uri = stdout(&dir, &enroll);
    run(
        &dir,
        &["device", "--keys", "second.json", "enroll", uri.trim()],
    );
    let notices = stdout(&dir, &["device", "notices"]);
    let line = notices
        .lines()
        .find(|l| l.contains("NOTICE_KIND_NEW_DEVICE") && l.contains("[revocable]"))
        .unwrap_or_else(|| panic!("no new-device notice: {notices}"));
    let notice_id = line.split_whitespace().next().expect("id");
    let revoked = stdout(&dir, &["device", "revoke-notice", notice_id]);
    assert!(revoked.contains("revoked"), "{revoked}");
    let refused = Command::new(BIN)
        .current_dir(&dir)
        .args(["device", "--keys", "second.json", "pending"])
        .output()
        .expect("runs");
    assert!(!refused.status.success(), "a revoked phone is refused");

    offline_code_and_known_sign_ins(&dir, &backend);
    xiaomi_and_poll_only_phones(&dir, &backend, &mock_addr);
    let log = std::fs::read_to_string(dir.join("relay.log")).expect("log");
    let keys = std::fs::read_to_string(dir.join("carol.json")).expect("carol's keys");
    let secret = keys
        .split('"')
        .skip_while(|s| *s != "offline_code_secret")
        .nth(2)
        .expect("the phone kept its secret");
    assert!(
        log.len() > 10_000,
        "trace logging was on: {} bytes",
        log.len()
    );
    assert!(
        !log.contains(secret),
        "the offline-code secret is in the relay's trace log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for a `device listen --once` to end and returns what it printed; it must have approved.
fn approved_by(mut listener: Killed, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = listener.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "{what} never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut stdout) = listener.0.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out).expect("read");
    }
    assert!(status.success(), "{what}: {out}");
    assert!(out.contains("CHALLENGE_STATE_APPROVED"), "{what}: {out}");
    out
}

/// The README's Xiaomi phone (Mi Push through mock-push, the relay using the flags mock-push printed)
/// and a poll-only phone that finds its challenge by polling.
fn xiaomi_and_poll_only_phones(dir: &std::path::Path, backend: &str, mock_addr: &str) {
    for (account, keys, platform) in [
        ("li@example.com", "li.json", "xiaomi"),
        ("pat@example.com", "pat.json", "poll-only"),
    ] {
        let uri = stdout(dir, &["backend", "--relay", backend, "enroll", account]);
        run(
            dir,
            &[
                "device",
                "--keys",
                keys,
                "enroll",
                uri.trim(),
                "--platform",
                platform,
                "--push-token",
                "mi-regid-0001",
            ],
        );
        let listener = Killed(
            Command::new(BIN)
                .current_dir(dir)
                .args([
                    "device",
                    "--keys",
                    keys,
                    "listen",
                    "--mock",
                    &format!("https://{mock_addr}"),
                    "--ca-file",
                    "mock/ca.pem",
                    "--auto",
                    "approve",
                    "--once",
                    "--poll-ms",
                    "200",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("listener starts"),
        );
        std::thread::sleep(Duration::from_millis(500));
        let id = stdout(
            dir,
            &[
                "backend", "--relay", backend, "create", account, "--mode", "none",
            ],
        );
        let out = approved_by(listener, platform);
        assert!(out.contains("push received"), "{out}");
        let devices = stdout(dir, &["backend", "--relay", backend, "devices", account]);
        let expected = if platform == "xiaomi" {
            "PLATFORM_XIAOMI"
        } else {
            "PLATFORM_POLL_ONLY"
        };
        assert!(devices.contains(expected), "{devices}");
        let watched = stdout(dir, &["backend", "--relay", backend, "watch", id.trim()]);
        assert!(
            watched.lines().any(|l| l.starts_with("APPROVED")),
            "{watched}"
        );
        // The snapshot says which provider accepted the push, or that the phone polls.
        let delivery = if platform == "xiaomi" {
            "DELIVERY_STATE_DELIVERED via=xiaomi"
        } else {
            "DELIVERY_STATE_POLL_ONLY"
        };
        assert!(watched.contains(delivery), "{watched}");
    }
}

/// The README's offline-code and known-sign-in walkthrough: a phone with an offline code approves a
/// sign-in from a laptop, which then evaluates KNOWN; the phone's code is accepted once, then refused.
fn offline_code_and_known_sign_ins(dir: &std::path::Path, backend: &str) {
    let b = |args: &[&str]| -> Vec<String> {
        ["backend", "--relay", backend]
            .iter()
            .chain(args)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let call = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stdout(dir, &args)
    };
    let uri = call(b(&["enroll", "carol@example.com"]));
    run(
        dir,
        &[
            "device",
            "--keys",
            "carol.json",
            "enroll",
            uri.trim(),
            "--offline-code",
        ],
    );
    let evaluate = b(&[
        "evaluate",
        "carol@example.com",
        "--sign-in-device",
        "laptop-1",
        "--ip",
        "198.51.100.20",
        "--location",
        "Lyon, France",
    ]);
    assert_eq!(
        call(evaluate.clone()).trim(),
        "device=NEW place=NEW recommend=CHALLENGE"
    );
    let id = call(b(&[
        "create",
        "carol@example.com",
        "--mode",
        "none",
        "--sign-in-device",
        "laptop-1",
        "--ip",
        "198.51.100.20",
    ]));
    let shown = stdout(dir, &["device", "--keys", "carol.json", "show", id.trim()]);
    assert!(shown.contains("first sign-in from this device"), "{shown}");
    let answer = stdout(
        dir,
        &[
            "device",
            "--keys",
            "carol.json",
            "respond",
            id.trim(),
            "approve",
        ],
    );
    assert!(answer.contains("CHALLENGE_STATE_APPROVED"), "{answer}");
    assert_eq!(
        call(evaluate).trim(),
        "device=KNOWN place=KNOWN recommend=ALLOW"
    );

    let code = stdout(dir, &["device", "--keys", "carol.json", "code"]);
    let code = code.trim();
    assert!(
        code.len() == 6 && code.bytes().all(|c| c.is_ascii_digit()),
        "{code:?}"
    );
    let verify = b(&["verify-code", "carol@example.com", code]);
    let accepted = call(verify.clone());
    assert!(accepted.starts_with("ACCEPTED by d."), "{accepted}");
    let args: Vec<&str> = verify.iter().map(String::as_str).collect();
    let again = Command::new(BIN)
        .current_dir(dir)
        .args(&args)
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(1), "a code works once");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("CODE_RESULT_REPLAYED"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// The README's attested-keys walkthrough with real processes: a test root, a relay that requires
/// hardware attestation, an Android and an iPhone simulator enrolling with software-made attestations,
/// the verdicts in `backend devices`, and a challenge that asks for a least assurance.
#[test]
fn simulated_phones_enroll_with_attested_keys() {
    let dir = std::env::temp_dir().join(format!(
        "approval-relay-attest-walkthrough-{}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let root = stdout(&dir, &["device", "attest-root", "test-root"]);
    assert_eq!(root.trim(), "test-root/root.pem");
    let (backend, device, admin) = (
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
    );
    let _relay = Killed(
        Command::new(BIN)
            .current_dir(&dir)
            .args([
                "serve",
                "--backend-addr",
                &backend,
                "--device-addr",
                &device,
                "--admin-addr",
                &admin,
                "--require-attestation",
                "hardware",
                "--android-attestation-roots-file",
                "test-root/root.pem",
                "--android-attestation-apps",
                "com.example.authenticator",
                "--apple-app-attest-roots-file",
                "test-root/root.pem",
                "--apple-app-attest-app-ids",
                "SIMULATED1.com.example.authenticator",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("relay starts"),
    );
    wait_for(&backend);
    wait_for(&device);
    let enroll_uri = || {
        stdout(
            &dir,
            &["backend", "--relay", &backend, "enroll", "dave@example.com"],
        )
    };
    let uri = enroll_uri();
    let refused = Command::new(BIN)
        .current_dir(&dir)
        .args(["device", "--keys", "plain.json", "enroll", uri.trim()])
        .output()
        .expect("runs");
    assert!(!refused.status.success(), "an unattested phone is refused");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("PermissionDenied") && said.contains("hardware key attestation"),
        "{said}"
    );
    let android = stdout(
        &dir,
        &[
            "device",
            "--keys",
            "pixel.json",
            "enroll",
            uri.trim(),
            "--attest",
            "android",
            "--attest-root",
            "test-root",
        ],
    );
    assert!(android.contains("ASSURANCE_ANDROID_TEE"), "{android}");
    let uri = enroll_uri();
    let apple = stdout(
        &dir,
        &[
            "device",
            "--keys",
            "iphone.json",
            "enroll",
            uri.trim(),
            "--platform",
            "apns",
            "--push-token",
            "00aa11bb22cc33dd44ee55ff66778899",
            "--attest",
            "apple",
            "--attest-root",
            "test-root",
        ],
    );
    assert!(apple.contains("ASSURANCE_APPLE_APP_ATTEST"), "{apple}");
    let devices = stdout(
        &dir,
        &[
            "backend",
            "--relay",
            &backend,
            "devices",
            "dave@example.com",
        ],
    );
    assert_eq!(
        devices
            .lines()
            .filter(|l| l.ends_with("ASSURANCE_ANDROID_TEE"))
            .count(),
        1,
        "{devices}"
    );
    assert_eq!(
        devices
            .lines()
            .filter(|l| l.ends_with("ASSURANCE_APPLE_APP_ATTEST"))
            .count(),
        1,
        "{devices}"
    );
    let create = |min: &str| {
        Command::new(BIN)
            .current_dir(&dir)
            .args([
                "backend",
                "--relay",
                &backend,
                "create",
                "dave@example.com",
                "--mode",
                "none",
                "--min-assurance",
                min,
            ])
            .output()
            .expect("runs")
    };
    let none = create("android-strongbox");
    assert!(!none.status.success(), "no StrongBox phone");
    let said = String::from_utf8_lossy(&none.stderr);
    assert!(said.contains("min_assurance"), "{said}");
    let both = create("android-tee");
    assert!(both.status.success());
    let said = String::from_utf8_lossy(&both.stderr);
    assert!(said.contains("pushed to 2 device(s)"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}
