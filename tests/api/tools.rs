//! The operators' own tools the tests run (grpcurl, ...): found on PATH or in `target/tools/bin`, where
//! `.ci/deps` installs them. A missing one fails the test with how to install it, never skips it.

use std::path::PathBuf;

/// The path of `name`, or a failed test saying how to get it (`install`).
pub fn tool(name: &str, install: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/bin")
        .join(name);
    on_path
        .or_else(|| local.is_file().then_some(local))
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run .ci/deps (it installs every tool the tests use into \
                 target/tools/bin), or install it yourself: {install}"
            )
        })
}

/// Runs `tool` with `args` and returns its stdout, failing the test on a non-zero exit.
pub fn run(tool: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        tool.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
