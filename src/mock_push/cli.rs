//! `approval-relay mock-push`: runs the mock on its own, writes what the relay needs to trust it (the
//! CA, a fresh APNs provider key, a Mi Push AppSecret, an HMS app secret) into a folder, and prints the
//! relay flags that point at it.

use super::{MockConfig, MockPush};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The team and key id the mock's generated APNs provider key is registered under.
pub const TEAM_ID: &str = "MOCKTEAM01";
/// See [`TEAM_ID`].
pub const KEY_ID: &str = "MOCKKEY001";
/// The HMS app id (OAuth client id) the mock's generated app secret belongs to.
pub const HMS_APP_ID: &str = "100000001";

/// Arguments of `approval-relay mock-push`.
#[derive(Debug, clap::Args)]
pub struct MockPushArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Serve h2c (HTTP/2 without TLS) instead of TLS. Needed for FCM: the OAuth client trusts only
    /// public roots, so it cannot reach a mock behind the generated CA.
    #[arg(long)]
    pub plaintext: bool,
    /// Folder for ca.pem, apns-key.p8, xiaomi-app-secret and hms-app-secret.
    #[arg(long, default_value = "mock-push")]
    pub out: PathBuf,
    /// A Firebase service-account key (JSON) whose OAuth assertions the mock accepts.
    #[arg(long)]
    pub fcm_service_account: Option<PathBuf>,
}

/// Runs the mock until Ctrl-C.
pub async fn main(args: MockPushArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("approval-relay mock-push: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The RSA public key (PKCS#1 DER) and e-mail of a service-account key file.
///
/// # Errors
/// The file is unreadable or holds no RSA PKCS#8 key.
pub fn service_account_public_key(
    path: &std::path::Path,
) -> anyhow::Result<(String, Vec<u8>, String)> {
    use base64::Engine;
    let sa: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let pem = sa["private_key"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("private_key missing"))?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body)?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| anyhow::anyhow!("private_key: {e}"))?;
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let email = sa["client_email"].as_str().unwrap_or_default().to_owned();
    let project = sa["project_id"].as_str().unwrap_or_default().to_owned();
    Ok((email, public, project))
}

async fn run(args: MockPushArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let key_file = args.out.join("apns-key.p8");
    std::fs::write(&key_file, key.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?;
    let mut config = MockConfig {
        apns_keys: HashMap::from([(
            (TEAM_ID.to_owned(), KEY_ID.to_owned()),
            *key.verifying_key(),
        )]),
        ..MockConfig::default()
    };
    if let Some(path) = &args.fcm_service_account {
        let (email, public, project) = service_account_public_key(path)?;
        config.fcm_accounts.insert(email, public);
        config.fcm_projects.push(project);
    }
    let xiaomi_secret = format!("{:032x}", rand::random::<u128>());
    let xiaomi_file = args.out.join("xiaomi-app-secret");
    std::fs::write(&xiaomi_file, &xiaomi_secret)?;
    config.xiaomi_secrets.push(xiaomi_secret);
    let hms_secret = format!("{:064x}", rand::random::<u128>());
    let hms_file = args.out.join("hms-app-secret");
    std::fs::write(&hms_file, &hms_secret)?;
    config.hms_apps.insert(HMS_APP_ID.to_owned(), hms_secret);
    let mock = MockPush::start(args.listen, !args.plaintext, config).await?;
    let url = mock.base_url();
    let mut flags = format!(
        "--apns-url {url} --apns-key-file {} --apns-key-id {KEY_ID} --apns-team-id {TEAM_ID}",
        key_file.display()
    );
    flags.push_str(&format!(
        " --xiaomi-url {url} --xiaomi-app-secret-file {} --hms-url {url} --hms-token-url \
         {url}/oauth2/v3/token --hms-app-id {HMS_APP_ID} --hms-app-secret-file {}",
        xiaomi_file.display(),
        hms_file.display()
    ));
    if let Some(pem) = mock.ca_pem() {
        let ca = args.out.join("ca.pem");
        std::fs::write(&ca, pem)?;
        let ca = ca.display();
        flags.push_str(&format!(
            " --apns-ca-file {ca} --xiaomi-ca-file {ca} --hms-ca-file {ca}"
        ));
    }
    if let Some(path) = &args.fcm_service_account {
        flags.push_str(&format!(
            " --fcm-url {url} --fcm-service-account-file {}",
            path.display()
        ));
    }
    println!("mock-push listening on {url}");
    println!("run the relay with:\n  approval-relay serve {flags}");
    println!("pushes it accepts stream from {url}/mock/pushes (JSON lines)");
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
