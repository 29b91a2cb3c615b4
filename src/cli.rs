//! The command line of the one binary: `serve` (the default), `check-config`, and the tools (`device`,
//! `backend`, `mock-push`, `health`). Exit codes: 0 done, 64 (EX_USAGE) for anything wrong with the
//! command line or the configuration, always as one line on stderr; 1 when the relay cannot start or
//! stops on an error.

use crate::app::App;
use crate::config::{Config, ServeArgs};
use crate::{backend_cli, device_sim, health_cli, mock_push, telemetry};
use clap::{Parser, Subcommand};
use std::future::Future;
use std::process::ExitCode;

/// Exit code for an unusable command line or configuration (sysexits EX_USAGE).
pub const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    version = telemetry::VERSION_LINE,
    about = "Gets a yes or no from an account owner's phones before a sign-in goes through."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Print the effective configuration (file, environment and flags, as `serve` reads them) with
    /// secrets redacted and exit 0, or print why it is unusable and exit 64.
    CheckConfig(Box<ServeArgs>),
    /// A simulated phone: enroll, list pending challenges, show and answer them.
    Device(device_sim::DeviceArgs),
    /// The identity backend's side: enroll, create, watch, cancel, list devices and audit.
    Backend(backend_cli::BackendArgs),
    /// A local APNs + FCM + OAuth stand-in that the relay can push to.
    MockPush(mock_push::cli::MockPushArgs),
    /// Exit 0 when a running relay's admin listener says it is healthy (for container health checks).
    Health(health_cli::HealthArgs),
}

/// Parses the command line and runs what it names until `shutdown` (for `serve`).
pub async fn main(shutdown: impl Future<Output = ()> + Send + 'static) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::default()))
    {
        Command::Device(args) => device_sim::main(args).await,
        Command::Backend(args) => backend_cli::main(args).await,
        Command::MockPush(args) => mock_push::cli::main(args).await,
        Command::Health(args) => health_cli::main(args).await,
        Command::CheckConfig(args) => check_config(&args),
        Command::Serve(args) => serve(&args, shutdown).await,
    }
}

/// clap's help and version go to stdout with 0; any other error is one line and 64.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line");
    let line = line.strip_prefix("error: ").unwrap_or(line);
    eprintln!("approval-relay: {line} (see --help)");
    ExitCode::from(EX_USAGE)
}

fn invalid(e: &crate::config::ConfigError) -> ExitCode {
    eprintln!("approval-relay: invalid configuration: {e}");
    ExitCode::from(EX_USAGE)
}

fn check_config(args: &ServeArgs) -> ExitCode {
    let loaded = match Config::load(args) {
        Ok(l) => l,
        Err(e) => return invalid(&e),
    };
    match loaded.config.redacted_toml() {
        Ok(toml) => {
            println!(
                "# approval-relay {}: effective configuration",
                telemetry::VERSION_LINE
            );
            for name in &loaded.ignored_env {
                println!("# ignored (not a setting): {name}");
            }
            print!("{toml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("approval-relay: cannot print the configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> ExitCode {
    let loaded = match Config::load(args) {
        Ok(l) => l,
        Err(e) => return invalid(&e),
    };
    let config = loaded.config;
    let _traces = match telemetry::trace::init(&config.log_format, config.otlp_endpoint.as_deref())
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("approval-relay: invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    for variable in &loaded.ignored_env {
        tracing::debug!(%variable, "ignoring an APPROVAL_RELAY_ variable that names no setting");
    }
    tracing::info!(
        version = telemetry::VERSION,
        commit = telemetry::COMMIT,
        "approval-relay starting"
    );
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run(shutdown).await {
        Ok(()) => {
            tracing::info!("approval-relay stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("stopped: {e:#}");
            ExitCode::FAILURE
        }
    }
}
