//! Generates the gRPC code from `proto/` with `protox` (pure Rust), so no system `protoc` is needed.
//! Two descriptor sets are written to OUT_DIR for gRPC reflection, one per listener, so that the device
//! listener describes the device API alone and never the backend API.

use prost::Message;
use std::path::PathBuf;

/// The commit being built: `SOURCE_COMMIT` when the builder sets it (a container build without `.git`),
/// else `git rev-parse`, else `unknown`.
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=SOURCE_COMMIT");
    if let Ok(commit) = std::env::var("SOURCE_COMMIT") {
        return commit;
    }
    // Re-run when a commit is made (the reflog grows), not on every edit.
    if std::path::Path::new(".git/logs/HEAD").exists() {
        println!("cargo:rerun-if-changed=.git/logs/HEAD");
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/approval/v1/common.proto",
        "proto/approval/v1/backend.proto",
        "proto/approval/v1/device.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rustc-env=APPROVAL_RELAY_COMMIT={}", commit());
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for (listener, file) in [("backend", files[1]), ("device", files[2])] {
        let set = protox::compile([file], ["proto"])?;
        std::fs::write(
            out.join(format!("{listener}_descriptor.bin")),
            set.encode_to_vec(),
        )?;
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        // Undecodable requests are INVALID_ARGUMENT with the field path (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
