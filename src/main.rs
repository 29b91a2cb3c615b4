//! The `approval-relay` binary. Thin: the command line and everything it runs are library code
//! (`approval_relay::cli`) that the tests drive too.

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: profiles under load showed a third of the relay's CPU in glibc's
/// allocator (consolidation and free-list walks) for the many small, short-lived allocations of gRPC and
/// Redis traffic, and glibc keeps freed watch memory instead of returning it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    approval_relay::cli::main(shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
