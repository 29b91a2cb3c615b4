//! The `approval-relay` binary: `serve` runs the relay, `device` plays a phone. Thin: everything else is
//! library code that the tests drive too.

use approval_relay::{app::App, backend_cli, config, device_sim, health_cli, mock_push, telemetry};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: profiles under load showed a third of the relay's CPU in glibc's
/// allocator (consolidation and free-list walks) for the many small, short-lived allocations of gRPC and
/// Redis traffic, and glibc keeps freed watch memory instead of returning it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for unusable configuration (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "Gets a yes or no from an account owner's phones before a sign-in goes through."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default when no command is given).
    Serve(Box<config::ServeArgs>),
    /// A simulated phone: enroll, list pending challenges, show and answer them.
    Device(device_sim::DeviceArgs),
    /// The identity backend's side: enroll, create, watch, cancel, list devices and audit.
    Backend(backend_cli::BackendArgs),
    /// A local APNs + FCM + OAuth stand-in that the relay can push to.
    MockPush(mock_push::cli::MockPushArgs),
    /// Exit 0 when a running relay's admin listener says it is healthy (for container health checks).
    Health(health_cli::HealthArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::default()))
    {
        Command::Device(args) => device_sim::main(args).await,
        Command::Backend(args) => backend_cli::main(args).await,
        Command::MockPush(args) => mock_push::cli::main(args).await,
        Command::Health(args) => health_cli::main(args).await,
        Command::Serve(args) => {
            let config = match config::Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("approval-relay: invalid configuration: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            telemetry::init_logs(&config.log_format);
            let app = match App::build(config).await {
                Ok(app) => app,
                Err(e) => {
                    tracing::error!("cannot start: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            match app.run(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("stopped: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
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
