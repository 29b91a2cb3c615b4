//! `approval-relay backend …`: the identity backend's side on the command line, for trying the service
//! (and for the README walkthrough) without installing grpcurl. A thin client of the backend API.

use crate::pb;
use crate::pb::audit_service_client::AuditServiceClient;
use crate::pb::challenge_service_client::ChallengeServiceClient;
use crate::pb::device_registry_client::DeviceRegistryClient;
use std::process::ExitCode;
use tonic::transport::Channel;

/// Arguments of `approval-relay backend`.
#[derive(Debug, clap::Args)]
pub struct BackendArgs {
    /// Backend API address.
    #[arg(
        long,
        default_value = "127.0.0.1:50051",
        env = "APPROVAL_RELAY_BACKEND"
    )]
    pub relay: String,
    /// CA (PEM) that the relay's backend certificate chains to; turns on TLS.
    #[arg(long, env = "APPROVAL_RELAY_BACKEND_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mTLS, with `--key-file`.
    #[arg(long, env = "APPROVAL_RELAY_BACKEND_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,
    /// Client private key (PEM) for mTLS.
    #[arg(long, env = "APPROVAL_RELAY_BACKEND_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,
    /// Name the relay's certificate must carry [default: the host in --relay].
    #[arg(long)]
    pub tls_name: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: BackendCommand,
}

/// The backend commands.
#[derive(Debug, clap::Subcommand)]
pub enum BackendCommand {
    /// Issue an enrollment ticket for an account; prints the enrollment URI.
    Enroll {
        /// The account.
        account: String,
    },
    /// Start a challenge; prints its id and the number to show on the sign-in screen.
    Create {
        /// The account.
        account: String,
        /// `type`, `choose` or `none`.
        #[arg(long, default_value = "type")]
        mode: String,
        /// Seconds until it expires (0: the relay's default).
        #[arg(long, default_value_t = 0)]
        ttl: u32,
        /// IP address of the sign-in.
        #[arg(long, default_value = "203.0.113.7")]
        ip: String,
        /// Approximate place of the sign-in.
        #[arg(long, default_value = "Lyon, France")]
        location: String,
        /// User agent of the sign-in.
        #[arg(long, default_value = "Firefox on Linux")]
        user_agent: String,
        /// Your stable id of the device signing in (a cookie id); an approval makes it known.
        #[arg(long, default_value = "")]
        sign_in_device: String,
        /// Push only devices whose key attestation meets this: `software`, `android-tee`,
        /// `apple-app-attest` or `android-strongbox` [default: any device].
        #[arg(long)]
        min_assurance: Option<String>,
    },
    /// Compare a sign-in with the account's known ones; prints
    /// `device=KNOWN|NEW|UNSPECIFIED place=KNOWN|NEW|UNSPECIFIED recommend=ALLOW|CHALLENGE|CODE|NO_FACTOR`.
    Evaluate {
        /// The account.
        account: String,
        /// The sign-in.
        #[command(flatten)]
        sign_in: SignIn,
    },
    /// Check an offline code; exit status 0 when accepted, 1 when refused.
    VerifyCode {
        /// The account.
        account: String,
        /// The 6-digit code.
        code: String,
        /// The sign-in.
        #[command(flatten)]
        sign_in: SignIn,
    },
    /// List an account's known sign-in devices, networks and locations.
    Known {
        /// The account.
        account: String,
    },
    /// Make a standalone authenticator; prints its otpauth:// URI (for an authenticator app).
    Authenticator {
        /// The account.
        account: String,
    },
    /// Print a challenge's events until it ends.
    Watch {
        /// The challenge id.
        challenge_id: String,
    },
    /// Cancel a challenge.
    Cancel {
        /// The challenge id.
        challenge_id: String,
    },
    /// List an account's devices.
    Devices {
        /// The account.
        account: String,
    },
    /// Print an account's latest audit records.
    Audit {
        /// The account.
        account: String,
    },
}

/// The sign-in a command is about.
#[derive(Debug, Clone, clap::Args)]
pub struct SignIn {
    /// Your stable id of the device signing in (a cookie id).
    #[arg(long, default_value = "")]
    sign_in_device: String,
    /// IP address of the sign-in.
    #[arg(long, default_value = "203.0.113.7")]
    ip: String,
    /// Approximate place of the sign-in.
    #[arg(long, default_value = "Lyon, France")]
    location: String,
}

impl SignIn {
    fn context(self) -> pb::LoginContext {
        pb::LoginContext {
            ip: self.ip,
            location: self.location,
            sign_in_device_key: self.sign_in_device,
            ..Default::default()
        }
    }
}

fn familiarity(s: Option<&pb::SignInSignal>) -> &'static str {
    match s.map(pb::SignInSignal::familiarity) {
        Some(pb::Familiarity::Known) => "KNOWN",
        Some(pb::Familiarity::New) => "NEW",
        _ => "UNSPECIFIED",
    }
}

fn recommendation(e: &pb::SignInEvaluation) -> &'static str {
    e.recommendation()
        .as_str_name()
        .trim_start_matches("SIGN_IN_RECOMMENDATION_")
}

/// Runs one backend command.
pub async fn main(args: BackendArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("approval-relay backend: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

fn describe(kind: Option<pb::challenge_event::Kind>) -> String {
    use pb::challenge_event::Kind;
    match kind {
        Some(Kind::Snapshot(c)) => {
            let mut text = format!(
                "SNAPSHOT state={} number={}",
                c.state().as_str_name(),
                c.number
            );
            for d in &c.deliveries {
                text.push_str(&format!(
                    "\n  DELIVERY device={} state={}{}{}",
                    d.device_id,
                    d.state().as_str_name(),
                    via(d.platform(), d.fallback),
                    if d.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" reason={}", d.reason)
                    }
                ));
            }
            text
        }
        Some(Kind::Delivered(d)) => format!(
            "DELIVERED device={}{}",
            d.device_id,
            via(d.platform(), d.fallback)
        ),
        Some(Kind::DeliveryFailed(d)) => {
            format!("DELIVERY_FAILED device={} reason={}", d.device_id, d.reason)
        }
        Some(Kind::Approved(d)) => format!("APPROVED device={}", d.device_id),
        Some(Kind::Denied(d)) => format!(
            "DENIED device={} reason={}",
            d.device_id,
            d.reason().as_str_name()
        ),
        Some(Kind::FraudReported(d)) => format!("FRAUD_REPORTED device={}", d.device_id),
        Some(Kind::Expired(_)) => "EXPIRED".into(),
        Some(Kind::Cancelled(_)) => "CANCELLED".into(),
        None => "UNKNOWN".into(),
    }
}

fn client_tls(
    args: &BackendArgs,
    ca: &std::path::Path,
) -> Result<tonic::transport::ClientTlsConfig, String> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&args.cert_file, &args.key_file) {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read(cert)?,
            read(key)?,
        ));
    }
    if let Some(name) = &args.tls_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

async fn run(args: BackendArgs) -> Result<(), String> {
    let scheme = if args.ca_file.is_some() {
        "https"
    } else {
        "http"
    };
    let url = if args.relay.contains("://") {
        args.relay.clone()
    } else {
        format!("{scheme}://{}", args.relay)
    };
    let mut endpoint = Channel::from_shared(url.clone()).map_err(|e| format!("--relay: {e}"))?;
    if let Some(ca) = &args.ca_file {
        endpoint = endpoint
            .tls_config(client_tls(&args, ca)?)
            .map_err(|e| format!("tls: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the backend API at {url}: {e}"))?;
    let mut challenges = ChallengeServiceClient::new(channel.clone());
    match args.command {
        BackendCommand::Enroll { account } => {
            let req = pb::CreateEnrollmentRequest {
                account_id: account,
                ttl_seconds: 0,
            };
            let e = DeviceRegistryClient::new(channel)
                .create_enrollment(req)
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", e.enrollment_uri);
        }
        BackendCommand::Create {
            account,
            mode,
            ttl,
            ip,
            location,
            user_agent,
            sign_in_device,
            min_assurance,
        } => {
            let min_assurance = match min_assurance.as_deref() {
                None => pb::Assurance::Unspecified,
                Some(name) => pb::Assurance::from_str_name(&format!(
                    "ASSURANCE_{}",
                    name.replace('-', "_").to_ascii_uppercase()
                ))
                .ok_or_else(|| format!("--min-assurance {name:?} is not an assurance level"))?,
            };
            let mode = match mode.as_str() {
                "type" => pb::NumberMatchMode::Type,
                "choose" => pb::NumberMatchMode::Choose,
                "none" => pb::NumberMatchMode::None,
                other => {
                    return Err(format!(
                        "--mode must be type, choose or none, not {other:?}"
                    ));
                }
            };
            let req = pb::CreateChallengeRequest {
                min_assurance: min_assurance.into(),
                account_id: account,
                login_context: Some(pb::LoginContext {
                    ip,
                    location,
                    user_agent,
                    signing_in_device_name: "approval-relay backend CLI".into(),
                    signing_in_device_id: String::new(),
                    sign_in_device_key: sign_in_device,
                }),
                idempotency_key: String::new(),
                ttl_seconds: ttl,
                number_match_mode: mode.into(),
            };
            let r = challenges
                .create_challenge(req)
                .await
                .map_err(status)?
                .into_inner();
            let c = r.challenge.unwrap_or_default();
            println!("{}", c.challenge_id);
            let e = r.evaluation.unwrap_or_default();
            eprintln!(
                "number to show on the sign-in screen: {}; pushed to {} device(s); device={} place={}",
                c.number,
                c.targeted_device_ids.len(),
                familiarity(e.device.as_ref()),
                familiarity(e.place.as_ref()),
            );
        }
        BackendCommand::Evaluate { account, sign_in } => {
            let req = pb::EvaluateSignInRequest {
                account_id: account,
                login_context: Some(sign_in.context()),
            };
            let e = challenges
                .evaluate_sign_in(req)
                .await
                .map_err(status)?
                .into_inner()
                .evaluation
                .unwrap_or_default();
            println!(
                "device={} place={} recommend={}",
                familiarity(e.device.as_ref()),
                familiarity(e.place.as_ref()),
                recommendation(&e)
            );
        }
        BackendCommand::VerifyCode {
            account,
            code,
            sign_in,
        } => {
            let req = pb::VerifyCodeRequest {
                account_id: account,
                code,
                login_context: Some(sign_in.context()),
            };
            let r = challenges
                .verify_code(req)
                .await
                .map_err(status)?
                .into_inner();
            match r.result() {
                pb::CodeResult::Accepted => println!(
                    "ACCEPTED by {}",
                    if r.device_id.is_empty() {
                        &r.authenticator_id
                    } else {
                        &r.device_id
                    }
                ),
                other => return Err(format!("refused: {}", other.as_str_name())),
            }
        }
        BackendCommand::Known { account } => {
            let req = pb::ListKnownSignInsRequest {
                account_id: account,
            };
            let list = challenges
                .list_known_sign_ins(req)
                .await
                .map_err(status)?
                .into_inner();
            for k in list.known {
                println!(
                    "{} {:?} first={} last={}",
                    k.kind()
                        .as_str_name()
                        .trim_start_matches("KNOWN_SIGN_IN_KIND_"),
                    k.value,
                    k.first_seen_unix_ms,
                    k.last_seen_unix_ms
                );
            }
        }
        BackendCommand::Authenticator { account } => {
            let req = pb::CreateAuthenticatorRequest {
                account_id: account,
                label: String::new(),
            };
            let r = DeviceRegistryClient::new(channel)
                .create_authenticator(req)
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", r.otpauth_uri);
            eprintln!(
                "authenticator {}: activate it with its first code (verify-code) before {}",
                r.authenticator_id, r.activate_by_unix_ms
            );
        }
        BackendCommand::Watch { challenge_id } => {
            let req = pb::WatchChallengeRequest { challenge_id };
            let mut stream = challenges
                .watch_challenge(req)
                .await
                .map_err(status)?
                .into_inner();
            while let Some(event) = stream.message().await.map_err(status)? {
                println!("{}", describe(event.kind));
            }
        }
        BackendCommand::Cancel { challenge_id } => {
            let req = pb::CancelChallengeRequest { challenge_id };
            let r = challenges
                .cancel_challenge(req)
                .await
                .map_err(status)?
                .into_inner();
            let state = r.challenge.unwrap_or_default().state();
            println!(
                "{} (cancelled by this call: {})",
                state.as_str_name(),
                r.cancelled
            );
        }
        BackendCommand::Devices { account } => {
            let req = pb::ListDevicesRequest {
                account_id: account,
            };
            let list = DeviceRegistryClient::new(channel)
                .list_devices(req)
                .await
                .map_err(status)?
                .into_inner();
            for d in list.devices {
                println!(
                    "{} {} {} {:?} {}",
                    d.device_id,
                    d.state().as_str_name(),
                    d.platform().as_str_name(),
                    d.display_name,
                    d.assurance().as_str_name()
                );
            }
        }
        BackendCommand::Audit { account } => {
            let req = pb::ListAuditEventsRequest {
                account_id: account,
                page_size: 50,
                page_token: String::new(),
            };
            let page = AuditServiceClient::new(channel)
                .list_audit_events(req)
                .await
                .map_err(status)?
                .into_inner();
            for e in page.events {
                println!(
                    "{} {} {} {} {}",
                    e.position,
                    e.kind().as_str_name(),
                    e.actor,
                    e.challenge_id,
                    e.detail
                );
            }
        }
    }
    Ok(())
}

/// ` via=xiaomi` (` via=xiaomi fallback`) for a delivered push; empty when the provider is unknown.
fn via(platform: pb::Platform, fallback: bool) -> String {
    let name = match platform {
        pb::Platform::Unspecified => return String::new(),
        pb::Platform::Apns => "apns",
        pb::Platform::Fcm => "fcm",
        pb::Platform::Xiaomi => "xiaomi",
        pb::Platform::Hms => "hms",
        pb::Platform::PollOnly => "poll_only",
    };
    format!(" via={name}{}", if fallback { " fallback" } else { "" })
}
