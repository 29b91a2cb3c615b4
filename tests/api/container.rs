//! The container image as it ships, started the way an orchestrator starts it. No registry is reachable
//! here, so the base image is a Debian bookworm made by debootstrap (the same release the Dockerfile
//! names) and the build stage is replaced by this build's own binary; everything of the runtime stage
//! runs as written in deploy/Dockerfile: the CA bundle, the user and group 10001, the state directory,
//! the environment, the health check, the entrypoint. The container runs with a read-only root, no
//! capabilities and no privilege escalation, as the Kubernetes manifests ask.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BASE: &str = "docker.io/library/debian:bookworm-slim";

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools")
}

/// Runs a command; its stdout when it succeeds.
fn sh(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{} {args:?}: {}\n{}{}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// podman needs runc and these limits in this sandbox (see .ci/deps).
const RUN_FLAGS: &[&str] = &[
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
];

/// A Debian bookworm base image under the Dockerfile's name, made once by debootstrap.
fn base_image(podman: &Path) {
    if sh(podman, &["image", "exists", BASE]).is_ok() {
        return;
    }
    let debootstrap = crate::tools::tool("debootstrap", "apt-get install debootstrap");
    let tarball = tools_dir().join("bookworm-minbase.tar");
    if !tarball.is_file() {
        let rootfs = tools_dir().join("bookworm-rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
        sh(
            &debootstrap,
            &[
                "--variant=minbase",
                "bookworm",
                &rootfs.display().to_string(),
                "http://deb.debian.org/debian",
            ],
        )
        .expect("debootstrap bookworm");
        let tar = Command::new("tar")
            .args([
                "--numeric-owner",
                "-C",
                &rootfs.display().to_string(),
                "-cf",
            ])
            .arg(&tarball)
            .arg(".")
            .status()
            .expect("tar");
        assert!(tar.success(), "tar of the rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
    }
    sh(
        podman,
        &[
            "import",
            "--change",
            "CMD [\"/bin/bash\"]",
            &tarball.display().to_string(),
            BASE,
        ],
    )
    .expect("podman import");
}

/// The Dockerfile's runtime stage around `binary` (the build stage cannot run without a registry).
fn containerfile() -> String {
    let dockerfile = include_str!("../../deploy/Dockerfile");
    let start = dockerfile
        .find("FROM debian:bookworm-slim AS runtime")
        .expect("the Dockerfile has a runtime stage");
    let runtime = &dockerfile[start..];
    assert!(runtime.contains("COPY --from=build /out/approval-relay "));
    runtime.replace(
        "COPY --from=build /out/approval-relay ",
        "COPY approval-relay ",
    )
}

struct Cleanup(PathBuf, Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in &self.1 {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = sh(&self.0, &args);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

#[test]
fn the_image_starts_as_uid_10001_on_a_read_only_root_and_stops_cleanly() {
    let podman = crate::tools::tool("podman", "apt-get install podman runc (or run .ci/deps)");
    base_image(&podman);
    let tag = format!("localhost/approval-relay-test:{}", free_port());
    let context = std::env::temp_dir().join(format!("approval-relay-image-{}", free_port()));
    std::fs::create_dir_all(&context).expect("context");
    std::fs::write(context.join("Containerfile"), containerfile()).expect("containerfile");
    let binary = context.join("approval-relay");
    let stripped = Command::new("objcopy")
        .args(["--strip-debug", env!("CARGO_BIN_EXE_approval-relay")])
        .arg(&binary)
        .status()
        .expect("objcopy (binutils)");
    assert!(stripped.success());
    let (name, mock, volume) = (
        format!("relay-{}", free_port()),
        format!("mock-{}", free_port()),
        format!("mock-state-{}", free_port()),
    );
    let _cleanup = Cleanup(
        podman.clone(),
        vec![
            vec!["rm".into(), "-f".into(), name.clone(), mock.clone()],
            vec!["volume".into(), "rm".into(), "-f".into(), volume.clone()],
            vec!["rmi".into(), "-f".into(), tag.clone()],
        ],
    );
    sh(
        &podman,
        &[
            "build",
            "--isolation",
            "chroot",
            "--pull=never",
            "-t",
            &tag,
            "-f",
            &context.join("Containerfile").display().to_string(),
            &context.display().to_string(),
        ],
    )
    .expect("podman build of the runtime stage");
    let _ = std::fs::remove_dir_all(&context);

    // As the manifests run it: read-only root, nothing added, the image's own user and environment.
    let admin = free_port();
    let mut run = vec!["run", "-d", "--name", &name];
    run.extend(RUN_FLAGS);
    let publish = format!("127.0.0.1:{admin}:9090");
    run.extend([
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-p",
        &publish,
        &tag,
        "serve",
        "--insecure-plaintext-backend",
        "--insecure-plaintext-device",
    ]);
    sh(&podman, &run).expect("the container starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sh(
        &podman,
        &["exec", &name, "approval-relay", "health", "--ready"],
    )
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the image's health check never passed: {:?}",
            sh(&podman, &["logs", &name])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", name.as_str()];
        all.extend(args);
        sh(&podman, &all).expect("exec")
    };
    assert_eq!(exec(&["id", "-u"]), "10001");
    assert_eq!(exec(&["id", "-gn"]), "relay", "a real group");
    assert!(
        !exec(&["ls", "/etc/ssl/certs/ca-certificates.crt"]).is_empty(),
        "a CA bundle"
    );
    assert_eq!(
        exec(&["stat", "-c", "%u", "/var/lib/approval-relay/mock"]),
        "10001"
    );
    let metrics = Command::new(env!("CARGO_BIN_EXE_approval-relay"))
        .args([
            "health",
            "--ready",
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .status()
        .expect("health from the host");
    assert!(metrics.success(), "the admin port is published");

    // mock-push writes into a fresh named volume, as in deploy/compose.yaml.
    let mount = format!("{volume}:/var/lib/approval-relay/mock");
    let mut run_mock = vec!["run", "-d", "--name", &mock];
    run_mock.extend(RUN_FLAGS);
    run_mock.extend([
        "--read-only",
        "-v",
        &mount,
        &tag,
        "mock-push",
        "--listen",
        "0.0.0.0:8443",
        "--out",
        "/var/lib/approval-relay/mock",
    ]);
    sh(&podman, &run_mock).expect("mock-push starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sh(
        &podman,
        &[
            "exec",
            &mock,
            "test",
            "-s",
            "/var/lib/approval-relay/mock/apns-key.p8",
        ],
    )
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "mock-push could not write its state: {:?}",
            sh(&podman, &["logs", &mock])
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // SIGTERM (the image's STOPSIGNAL): a bounded drain, exit 0, a last log line.
    sh(&podman, &["stop", "-t", "15", &name]).expect("stops");
    let code = sh(&podman, &["inspect", "-f", "{{.State.ExitCode}}", &name]).expect("inspect");
    assert_eq!(code, "0");
    let logs = Command::new(&podman)
        .args(["logs", &name])
        .output()
        .expect("logs");
    let logs =
        String::from_utf8_lossy(&logs.stderr).into_owned() + &String::from_utf8_lossy(&logs.stdout);
    let last: serde_json::Value = serde_json::from_str(logs.lines().last().expect("a log line"))
        .expect("the image logs JSON");
    assert_eq!(last["message"], "approval-relay stopped");
}
