//! `approval-relay health`: asks the admin listener's `/healthz` (or `/readyz`) and exits 0 when it
//! answers 200. For container HEALTHCHECKs, where the slim image has no curl. A one-request HTTP/1.0
//! exchange by hand: pulling in an HTTP client for one status line is not worth its build time.

use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Arguments of `approval-relay health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Admin listener address.
    #[arg(
        long,
        default_value = "127.0.0.1:9090",
        env = "APPROVAL_RELAY_HEALTH_ADDR"
    )]
    pub admin: String,
    /// Ask `/readyz` (serving traffic) instead of `/healthz` (process alive).
    #[arg(long)]
    pub ready: bool,
}

/// Runs the check; prints why it failed.
pub async fn main(args: HealthArgs) -> ExitCode {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    match tokio::time::timeout(Duration::from_secs(3), status(&args.admin, path)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(code)) => {
            eprintln!("approval-relay health: {path} answered {code}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("approval-relay health: {}{path}: {e}", args.admin);
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "approval-relay health: {}{path} did not answer within 3 s",
                args.admin
            );
            ExitCode::FAILURE
        }
    }
}

async fn status(addr: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    // "HTTP/1.x NNN"
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP status line"))
}
