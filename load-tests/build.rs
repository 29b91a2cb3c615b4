//! Server code for `relay-reference` from the relay's own protos, generated with default stubs: the
//! reference serves the handful of RPCs the load test calls, and every other RPC answers UNIMPLEMENTED
//! without a hand-written stub per method.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = ["approval/v1/backend.proto", "approval/v1/device.proto"].map(|f| root.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .build_client(false)
        .generate_default_stubs(true)
        .use_arc_self(true)
        .compile_fds(fds)?;
    Ok(())
}
