//! `approval-relay device …`: a simulated phone on the command line. It keeps its key, device id and
//! counter in a JSON file and talks to the device API exactly as an app would.

pub mod attest;
mod listen;
pub mod phone;

pub use phone::{KeyFile, Phone, PhoneKey};

use crate::pb;
use crate::pb::device_request::Body;
use crate::pb::device_service_client::DeviceServiceClient;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::Channel;

/// Arguments of `approval-relay device`.
#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// Where the phone keeps its key, device id and counter.
    #[arg(
        long,
        default_value = "device-keys.json",
        env = "APPROVAL_RELAY_DEVICE_KEYS"
    )]
    pub keys: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: DeviceCommand,
}

/// The simulator's commands.
#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// Enroll with a ticket (or the whole `approval-relay://enroll?...` URI from CreateEnrollment).
    Enroll {
        /// The ticket or enrollment URI.
        ticket: String,
        /// Device API address; taken from the URI when one is given.
        #[arg(long)]
        relay: Option<String>,
        /// `fcm`, `apns`, `xiaomi`, `hms` or `poll-only` (no push: `device listen` polls).
        #[arg(long, default_value = "fcm")]
        platform: String,
        /// Push token to register (not sent for poll-only).
        #[arg(long, default_value = "simulated-push-token")]
        push_token: String,
        /// A second channel, `PLATFORM:TOKEN` (e.g. `xiaomi:regid-1`), tried when the first fails.
        #[arg(long)]
        fallback: Option<String>,
        /// APNs topic or Android package.
        #[arg(long, default_value = "com.example.authenticator")]
        app_id: String,
        /// What the owner calls this phone.
        #[arg(long, default_value = "Simulated phone")]
        name: String,
        /// `p256` or `ed25519`.
        #[arg(long, default_value = "p256")]
        algorithm: String,
        /// Also provision an offline code (then `device code` prints it).
        #[arg(long)]
        offline_code: bool,
        /// Send a software-made key attestation: `android` (a TEE key's certificate chain) or `apple`
        /// (an App Attest object), made under the test root in --attest-root.
        #[arg(long, requires = "attest_root")]
        attest: Option<String>,
        /// Directory of the test attestation root (`device attest-root DIR` creates it).
        #[arg(long)]
        attest_root: Option<PathBuf>,
        /// With `--attest apple`: the app id TEAMID.bundle.id the object names [default:
        /// SIMULATED1.<app-id>].
        #[arg(long)]
        attest_app_id: Option<String>,
    },
    /// Create (if absent) a test attestation root in DIR and print the path of its certificate, for the
    /// relay's android_attestation_roots_file / apple_app_attest_roots_file.
    AttestRoot {
        /// Where to keep root.pem and root-key.pem.
        dir: PathBuf,
    },
    /// Print this phone's current offline code (computed here, no connection needed).
    Code,
    /// List challenges waiting for this phone.
    Pending,
    /// Show who is signing in for one challenge.
    Show {
        /// The challenge id.
        challenge_id: String,
    },
    /// Wait for this phone's pushes from mock-push; show each challenge, or answer it with --auto.
    Listen {
        /// mock-push's URL.
        #[arg(long, default_value = "https://127.0.0.1:8443")]
        mock: String,
        /// The CA mock-push wrote (for https).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Answer every challenge: `approve` (only when no number is asked), `deny` or `fraud`.
        #[arg(long)]
        auto: Option<String>,
        /// Milliseconds to "think" before answering.
        #[arg(long, default_value_t = 0)]
        think_ms: u64,
        /// Stop after the first challenge.
        #[arg(long)]
        once: bool,
        /// For a poll-only phone: how often to poll ListPending, milliseconds.
        #[arg(long, default_value_t = 2_000)]
        poll_ms: u64,
    },
    /// List this phone's notices (new sign-ins, new devices, fraud reports, suspected clones).
    Notices,
    /// "This was not me": revoke the device or sign-in a notice is about.
    RevokeNotice {
        /// The notice id.
        notice_id: String,
    },
    /// Approve, deny or report a challenge.
    Respond {
        /// The challenge id.
        challenge_id: String,
        /// `approve`, `deny` or `fraud`.
        decision: String,
        /// The number shown on the sign-in screen (required to approve in TYPE and CHOOSE modes).
        #[arg(long, default_value_t = 0)]
        number: u32,
        /// With `deny`: `not-me` or `cancelled`.
        #[arg(long, default_value = "not-me")]
        reason: String,
    },
}

/// Runs one simulator command; prints results on stdout and errors on stderr.
pub async fn main(args: DeviceArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("approval-relay device: {e}");
            ExitCode::FAILURE
        }
    }
}

fn enroll_parts(ticket: &str, relay: Option<String>) -> (String, String) {
    let Some(query) = ticket.strip_prefix("approval-relay://enroll?") else {
        return (
            ticket.to_owned(),
            relay.unwrap_or_else(|| "127.0.0.1:50052".into()),
        );
    };
    let mut t = String::new();
    let mut r = relay;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("ticket", v)) => t = v.to_owned(),
            Some(("relay", v)) if r.is_none() => r = Some(v.to_owned()),
            _ => {}
        }
    }
    (t, r.unwrap_or_else(|| "127.0.0.1:50052".into()))
}

async fn connect(relay: &str) -> Result<DeviceServiceClient<Channel>, String> {
    let url = if relay.contains("://") {
        relay.to_owned()
    } else {
        format!("http://{relay}")
    };
    DeviceServiceClient::connect(url.clone())
        .await
        .map_err(|e| format!("cannot reach the device API at {url}: {e}"))
}

pub(crate) fn load(path: &PathBuf) -> Result<KeyFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {} (enroll first): {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a key file: {e}", path.display()))
}

pub(crate) fn save(path: &PathBuf, file: &KeyFile) -> Result<(), String> {
    let text = serde_json::to_string_pretty(file).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub(crate) fn status(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

/// One line about a notice, as the app would show it.
fn describe_notice(n: &pb::DeviceNotice) -> String {
    let kind = pb::NoticeKind::try_from(n.kind).map_or("unknown", |k| k.as_str_name());
    let about = n.device.as_ref().map_or(String::new(), |d| {
        format!(" device {} ({:?})", d.device_id, d.display_name)
    });
    let context = n.login_context.as_ref().map_or(String::new(), |c| {
        format!(" from {} ({}) {}", c.ip, c.location, c.user_agent)
    });
    let revoke = if n.revocable { " [revocable]" } else { "" };
    format!("{} {kind}{about}{context}{revoke}", n.notice_id)
}

/// Prints the current offline code and how long it stays valid.
fn print_code(file: &KeyFile) -> Result<(), String> {
    if file.offline_code_secret.is_empty() {
        return Err("this phone has no offline code: enroll with --offline-code".into());
    }
    let secret = data_encoding::BASE32_NOPAD
        .decode(file.offline_code_secret.as_bytes())
        .map_err(|e| format!("offline_code_secret: {e}"))?;
    let now = crate::clock::now_ms() / 1000;
    let step = crate::totp::step(now);
    let code = crate::totp::code(
        &secret,
        crate::totp::Algorithm::Sha1,
        step,
        crate::totp::DIGITS,
    );
    let left = crate::totp::STEP_SECS - now.rem_euclid(crate::totp::STEP_SECS);
    println!("{code}");
    eprintln!("valid for {left} s more (and 30 s after, for clock drift)");
    Ok(())
}

pub(crate) fn describe(c: &pb::DeviceChallenge) -> String {
    let ctx = c.login_context.clone().unwrap_or_default();
    let mode =
        pb::NumberMatchMode::try_from(c.number_match_mode).map_or("unknown", |m| m.as_str_name());
    let state = pb::ChallengeState::try_from(c.state).map_or("unknown", |s| s.as_str_name());
    let mut out = format!(
        "{}\n  state: {state}\n  from: {} ({})\n  using: {} on {}\n  number match: {mode}",
        c.challenge_id, ctx.ip, ctx.location, ctx.user_agent, ctx.signing_in_device_name
    );
    if c.sign_in_device == pb::Familiarity::New as i32 {
        out.push_str("\n  warning: first sign-in from this device");
    }
    if c.sign_in_place == pb::Familiarity::New as i32 {
        out.push_str("\n  warning: sign-in from a new place");
    }
    if !c.number_choices.is_empty() {
        out.push_str(&format!(
            "\n  choose the number on the sign-in screen: {:?}",
            c.number_choices
        ));
    }
    out
}

async fn run(args: DeviceArgs) -> Result<(), String> {
    if let DeviceCommand::Enroll {
        ticket,
        relay,
        platform,
        push_token,
        fallback,
        app_id,
        name,
        algorithm,
        offline_code,
        attest,
        attest_root,
        attest_app_id,
    } = &args.command
    {
        let (ticket, relay) = enroll_parts(ticket, relay.clone());
        let key = match algorithm.as_str() {
            "p256" => PhoneKey::p256(),
            "ed25519" => PhoneKey::ed25519(),
            other => {
                return Err(format!(
                    "--algorithm must be p256 or ed25519, not {other:?}"
                ));
            }
        };
        let platform = platform_arg("--platform", platform)?;
        let push_token = if platform == pb::Platform::PollOnly {
            ""
        } else {
            push_token.as_str()
        };
        let fallback = match fallback.as_deref().map(|f| f.split_once(':')) {
            None => None,
            Some(Some((p, token))) => Some(pb::PushChannel {
                platform: platform_arg("--fallback", p)?.into(),
                push_token: token.to_owned(),
            }),
            Some(None) => return Err("--fallback must be PLATFORM:TOKEN".into()),
        };
        let mut phone = Phone::new(key);
        let mut client = connect(&relay).await?;
        let mut payload = phone.enroll_payload(&ticket, platform, push_token, app_id, name);
        payload.offline_code = *offline_code;
        payload.fallback.clone_from(&fallback);
        let request = match (attest.as_deref(), attest_root) {
            (None, _) => phone.sign_enrollment(prost::Message::encode_to_vec(&payload)),
            (Some(kind), Some(dir)) => {
                attest::simulated(&phone, &payload, kind, dir, attest_app_id.as_deref())
                    .map_err(|e| format!("--attest {kind}: {e}"))?
            }
            (Some(_), None) => return Err("--attest needs --attest-root".into()),
        };
        let response = client.enroll(request).await.map_err(status)?.into_inner();
        phone.device_id = response.device_id;
        phone.counter = response.counter;
        let mut file = KeyFile::from_phone(&phone, &relay, push_token);
        file.offline_code_secret = response.offline_code_secret;
        file.poll_only = platform == pb::Platform::PollOnly;
        file.fallback_push_token = fallback.map(|f| f.push_token).unwrap_or_default();
        save(&args.keys, &file)?;
        let assurance =
            pb::Assurance::try_from(response.assurance).map_or("unknown", |a| a.as_str_name());
        println!(
            "enrolled as {} (keys saved in {}; {assurance})",
            phone.device_id,
            args.keys.display()
        );
        return Ok(());
    }
    if let DeviceCommand::AttestRoot { dir } = &args.command {
        attest::TestRoot::in_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        println!("{}", dir.join("root.pem").display());
        return Ok(());
    }
    let file = load(&args.keys)?;
    if let DeviceCommand::Code = &args.command {
        return print_code(&file);
    }
    let mut phone = file.to_phone()?;
    let mut client = connect(&file.relay).await?;
    if let DeviceCommand::Listen {
        mock,
        ca_file,
        auto,
        think_ms,
        once,
        poll_ms,
    } = &args.command
    {
        let listen = listen::Listen {
            mock,
            ca_file: ca_file.as_deref(),
            auto: auto.as_deref(),
            think_ms: *think_ms,
            once: *once,
            poll: Duration::from_millis((*poll_ms).max(50)),
        };
        return listen::run(listen, &args.keys, file, phone, client).await;
    }
    let result = match &args.command {
        DeviceCommand::Enroll { .. }
        | DeviceCommand::Listen { .. }
        | DeviceCommand::Code
        | DeviceCommand::AttestRoot { .. } => Ok(()),
        DeviceCommand::Pending => {
            let request = phone.signed(Body::ListPending(pb::ListPendingBody {}));
            client.list_pending(request).await.map(|r| {
                let list = r.into_inner().challenges;
                if list.is_empty() {
                    println!("no pending challenge");
                }
                for c in &list {
                    println!("{}", describe(c));
                }
            })
        }
        DeviceCommand::Notices => {
            let request = phone.signed(Body::ListNotices(pb::ListNoticesBody {}));
            client.list_notices(request).await.map(|r| {
                let list = r.into_inner().notices;
                if list.is_empty() {
                    println!("no notice");
                }
                for n in &list {
                    println!("{}", describe_notice(n));
                }
            })
        }
        DeviceCommand::RevokeNotice { notice_id } => {
            let request = phone.signed(Body::RevokeFromNotice(pb::RevokeFromNoticeBody {
                notice_id: notice_id.clone(),
            }));
            client.revoke_from_notice(request).await.map(|r| {
                let r = r.into_inner();
                if r.revoked_device_id.is_empty() {
                    println!("sign-in reported to the backend ({})", r.revoked_sign_in_id);
                } else {
                    println!("device {} revoked", r.revoked_device_id);
                }
            })
        }
        DeviceCommand::Show { challenge_id } => {
            let request = phone.signed(Body::GetChallenge(pb::GetChallengeBody {
                challenge_id: challenge_id.clone(),
            }));
            client
                .get_challenge(request)
                .await
                .map(|r| println!("{}", describe(&r.into_inner())))
        }
        DeviceCommand::Respond {
            challenge_id,
            decision,
            number,
            reason,
        } => {
            let (decision, deny_reason) = match (decision.as_str(), reason.as_str()) {
                ("approve", _) => (pb::Decision::Approve, pb::DenyReason::Unspecified),
                ("fraud", _) => (pb::Decision::ReportFraud, pb::DenyReason::Unspecified),
                ("deny", "cancelled") => (pb::Decision::Deny, pb::DenyReason::CancelledByUser),
                ("deny", _) => (pb::Decision::Deny, pb::DenyReason::NotMe),
                (other, _) => {
                    return Err(format!(
                        "decision must be approve, deny or fraud, not {other:?}"
                    ));
                }
            };
            let body = pb::RespondBody {
                challenge_id: challenge_id.clone(),
                decision: decision.into(),
                deny_reason: deny_reason.into(),
                number: *number,
            };
            let request = phone.signed(Body::Respond(body));
            client.respond(request).await.map(|r| {
                let state = pb::ChallengeState::try_from(r.into_inner().state)
                    .map_or("unknown", |s| s.as_str_name());
                println!("{state}");
            })
        }
    };
    // The counter was used whether or not the relay accepted the request: keep it.
    save(&args.keys, &file.with_counter(&phone))?;
    result.map_err(status)
}

/// A `--platform` (or `--fallback`) name.
fn platform_arg(flag: &str, name: &str) -> Result<pb::Platform, String> {
    match name {
        "fcm" => Ok(pb::Platform::Fcm),
        "apns" => Ok(pb::Platform::Apns),
        "xiaomi" => Ok(pb::Platform::Xiaomi),
        "hms" => Ok(pb::Platform::Hms),
        "poll-only" => Ok(pb::Platform::PollOnly),
        other => Err(format!(
            "{flag} must be fcm, apns, xiaomi, hms or poll-only, not {other:?}"
        )),
    }
}
