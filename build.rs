//! Generates the gRPC code from `proto/` with `protox` (pure Rust), so no system `protoc` is needed.
//! Two descriptor sets are written to OUT_DIR for gRPC reflection, one per listener, so that the device
//! listener describes the device API alone and never the backend API.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/approval/v1/common.proto",
        "proto/approval/v1/backend.proto",
        "proto/approval/v1/device.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
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
