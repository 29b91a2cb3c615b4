//! One typed configuration, layered: defaults, then an optional TOML file, then `APPROVAL_RELAY_*`
//! environment variables, then command-line flags. Invalid configuration is one readable line and exit
//! code 64 (see `main.rs`).

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `approval-relay serve` can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Backend API listener (internal only).
    pub backend_addr: SocketAddr,
    /// Device API listener (the one phones reach).
    pub device_addr: SocketAddr,
    /// Admin HTTP listener: /healthz, /readyz, /metrics.
    pub admin_addr: SocketAddr,
    /// Device API address put in enrollment URIs; defaults to `device_addr`.
    pub public_device_address: Option<String>,
    /// Redis URL (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS); none: the in-memory
    /// store of development mode.
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated `redis://host:port` URLs (instead of `redis_url`).
    pub redis_cluster_nodes: Option<String>,
    /// APNs endpoint: production, sandbox or a mock; APNs is used when `apns_key_file` is set.
    pub apns_url: String,
    /// The `.p8` provider key file (PKCS#8 PEM) from Apple.
    pub apns_key_file: Option<std::path::PathBuf>,
    /// The provider key's 10-character id.
    pub apns_key_id: Option<String>,
    /// The Apple developer team id.
    pub apns_team_id: Option<String>,
    /// An extra root certificate (PEM) to trust for APNs, e.g. mock-push's CA.
    pub apns_ca_file: Option<std::path::PathBuf>,
    /// FCM endpoint; FCM is used when `fcm_service_account_file` is set.
    pub fcm_url: String,
    /// The Firebase service-account key (JSON); its `token_uri` is where OAuth tokens come from.
    pub fcm_service_account_file: Option<std::path::PathBuf>,
    /// The Firebase project id; defaults to the key's `project_id`.
    pub fcm_project_id: Option<String>,
    /// An extra root certificate (PEM) to trust for FCM, e.g. mock-push's CA.
    pub fcm_ca_file: Option<std::path::PathBuf>,
    /// Pending challenges an account may have at once (push-bombing limit).
    pub max_pending_per_account: usize,
    /// At that cap, a new challenge cancels the oldest pending one (ends CANCELLED) instead of being refused.
    pub supersede_pending: bool,
    /// Cool-down after the first denied or unanswered challenge, seconds; doubles each time. 0: off.
    pub cooldown_base_secs: u64,
    /// Longest cool-down, seconds.
    pub cooldown_max_secs: u64,
    /// New challenges are refused this long after a fraud report, seconds. 0: off.
    pub fraud_mute_secs: u64,
    /// Challenges an account may be sent per minute (token bucket refill); 0 turns the bucket off.
    pub account_rate_per_minute: u32,
    /// The account bucket's burst.
    pub account_rate_burst: u32,
    /// Challenges one sign-in address (IPv6: its /64) may cause per minute across accounts; 0: off.
    pub source_rate_per_minute: u32,
    /// The source bucket's burst.
    pub source_rate_burst: u32,
    /// Device requests naming one device that fail authentication and are recorded per minute (also the
    /// burst); beyond it they are refused RESOURCE_EXHAUSTED and not recorded. 0: no limit.
    pub auth_failures_per_device_per_minute: u32,
    /// The same per peer address (IPv6: its /64), across devices. 0: no limit.
    pub auth_failures_per_source_per_minute: u32,
    /// Challenge TTL when the backend gives none, seconds.
    pub default_ttl_secs: u64,
    /// Shortest challenge TTL accepted, seconds.
    pub min_ttl_secs: u64,
    /// Longest challenge TTL accepted, seconds.
    pub max_ttl_secs: u64,
    /// Accepted skew of a device's signed timestamp, seconds.
    pub timestamp_window_secs: u64,
    /// Numbers an owner may type in NUMBER_MATCH_MODE_TYPE before a wrong one ends the challenge DENIED
    /// (1: the first wrong number ends it); CHOOSE always ends at the first wrong tap.
    pub type_number_attempts: u32,
    /// Concurrent HTTP/2 streams per gRPC connection (tonic's default is unlimited).
    pub max_concurrent_streams: u32,
    /// Provider requests in flight at once.
    pub max_push_in_flight: usize,
    /// Longest wait for in-flight work at shutdown, seconds.
    pub shutdown_grace_secs: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// Allow the backend API in plaintext on a non-loopback address.
    pub insecure_plaintext_backend: bool,
    /// Allow the device API in plaintext on a non-loopback address.
    pub insecure_plaintext_device: bool,
    /// Backend listener certificate chain (PEM); with the key and client CA, the backend API is mTLS.
    pub backend_tls_cert_file: Option<PathBuf>,
    /// Backend listener private key (PEM).
    pub backend_tls_key_file: Option<PathBuf>,
    /// CA (PEM) that backend clients' certificates must chain to.
    pub backend_client_ca_file: Option<PathBuf>,
    /// DNS names (subjectAltName) a backend client certificate must carry one of, comma-separated.
    pub backend_allowed_client_names: Option<String>,
    /// Device listener certificate chain (PEM); with the key, the device API is TLS.
    pub device_tls_cert_file: Option<PathBuf>,
    /// Device listener private key (PEM).
    pub device_tls_key_file: Option<PathBuf>,
    /// How often certificate files are checked for changes, seconds (SIGHUP reloads at once).
    pub tls_reload_poll_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            device_addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            public_device_address: None,
            redis_url: None,
            redis_cluster_nodes: None,
            apns_url: crate::push::apns::PRODUCTION.to_owned(),
            apns_key_file: None,
            apns_key_id: None,
            apns_team_id: None,
            apns_ca_file: None,
            fcm_url: crate::push::fcm::PRODUCTION.to_owned(),
            fcm_service_account_file: None,
            fcm_project_id: None,
            fcm_ca_file: None,
            max_pending_per_account: 1,
            supersede_pending: false,
            cooldown_base_secs: 10,
            cooldown_max_secs: 3600,
            fraud_mute_secs: 3600,
            account_rate_per_minute: 20,
            account_rate_burst: 10,
            source_rate_per_minute: 300,
            source_rate_burst: 100,
            auth_failures_per_device_per_minute: 10,
            auth_failures_per_source_per_minute: 60,
            default_ttl_secs: 60,
            min_ttl_secs: 10,
            max_ttl_secs: 600,
            timestamp_window_secs: 300,
            type_number_attempts: 1,
            max_concurrent_streams: 1_000,
            max_push_in_flight: 512,
            shutdown_grace_secs: 10,
            log_format: "text".into(),
            insecure_plaintext_backend: false,
            insecure_plaintext_device: false,
            backend_tls_cert_file: None,
            backend_tls_key_file: None,
            backend_client_ca_file: None,
            backend_allowed_client_names: None,
            device_tls_cert_file: None,
            device_tls_key_file: None,
            tls_reload_poll_secs: 5,
        }
    }
}

/// Flags of `approval-relay serve`; each overrides the file and the environment.
#[derive(Debug, Default, clap::Args, Serialize)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "APPROVAL_RELAY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Backend API listener [default: 127.0.0.1:50051].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_addr: Option<SocketAddr>,
    /// Device API listener [default: 127.0.0.1:50052].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_addr: Option<SocketAddr>,
    /// Admin HTTP listener [default: 127.0.0.1:9090].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<SocketAddr>,
    /// Device API address written into enrollment URIs [default: the device listener].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_device_address: Option<String>,
    /// Redis URL, e.g. redis://user:password@10.0.0.5:6379 or rediss:// for TLS [default: in-memory store].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated, e.g. redis://10.0.0.5:7000,redis://10.0.0.6:7000.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cluster_nodes: Option<String>,
    /// APNs endpoint [default: https://api.push.apple.com]; https://api.sandbox.push.apple.com for
    /// development builds, or mock-push's URL.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns_url: Option<String>,
    /// APNs provider key file (.p8); with it, APNs devices are pushed through APNs, not the sink.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns_key_file: Option<std::path::PathBuf>,
    /// APNs provider key id.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns_key_id: Option<String>,
    /// Apple developer team id.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns_team_id: Option<String>,
    /// Extra root certificate (PEM) to trust for APNs, e.g. the CA mock-push writes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns_ca_file: Option<std::path::PathBuf>,
    /// FCM endpoint [default: https://fcm.googleapis.com], or mock-push's URL.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm_url: Option<String>,
    /// Firebase service-account key (JSON); with it, FCM devices are pushed through FCM, not the sink.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm_service_account_file: Option<std::path::PathBuf>,
    /// Firebase project id [default: the key's project_id].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm_project_id: Option<String>,
    /// Extra root certificate (PEM) to trust for FCM, e.g. the CA mock-push writes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm_ca_file: Option<std::path::PathBuf>,
    /// Pending challenges an account may have at once [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_per_account: Option<usize>,
    /// At the pending cap, cancel the oldest pending challenge instead of refusing the new one.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub supersede_pending: bool,
    /// Cool-down after a denied or unanswered challenge, seconds, doubling each time; 0 turns it off [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_base_secs: Option<u64>,
    /// Longest cool-down, seconds [default: 3600].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_max_secs: Option<u64>,
    /// How long new challenges are refused after a fraud report, seconds; 0 turns it off [default: 3600].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraud_mute_secs: Option<u64>,
    /// Challenges an account may be sent per minute, token bucket; 0 turns it off [default: 20].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_rate_per_minute: Option<u32>,
    /// Burst of the account bucket [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_rate_burst: Option<u32>,
    /// Challenges one sign-in address (IPv6: its /64) may cause per minute across accounts; 0 turns it off [default: 300].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_rate_per_minute: Option<u32>,
    /// Burst of the source bucket [default: 100].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_rate_burst: Option<u32>,
    /// Recorded authentication failures per claimed device id per minute (and burst); 0: no limit [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_failures_per_device_per_minute: Option<u32>,
    /// Recorded authentication failures per peer address (IPv6: /64) per minute (and burst); 0: no limit [default: 60].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_failures_per_source_per_minute: Option<u32>,
    /// Challenge TTL when the backend gives none, seconds [default: 60].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_ttl_secs: Option<u64>,
    /// Shortest challenge TTL accepted, seconds [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ttl_secs: Option<u64>,
    /// Longest challenge TTL accepted, seconds [default: 600].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl_secs: Option<u64>,
    /// Accepted skew of a device's signed timestamp, seconds [default: 300].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_window_secs: Option<u64>,
    /// Numbers an owner may type in TYPE mode before a wrong one ends the challenge, 1 to 5 [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_number_attempts: Option<u32>,
    /// Concurrent HTTP/2 streams per gRPC connection [default: 1000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// Provider requests in flight at once [default: 512].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_push_in_flight: Option<usize>,
    /// Longest wait for in-flight work at shutdown, seconds [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// Log format: text or json [default: text].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Serve the backend API in plaintext even on a non-loopback address.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plaintext_backend: bool,
    /// Serve the device API in plaintext even on a non-loopback address.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plaintext_device: bool,
    /// Backend listener certificate chain (PEM); with the key and the client CA the backend API is mTLS.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_tls_cert_file: Option<PathBuf>,
    /// Backend listener private key (PEM).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_tls_key_file: Option<PathBuf>,
    /// CA (PEM) that backend clients' certificates must chain to.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_client_ca_file: Option<PathBuf>,
    /// DNS names a backend client certificate must carry one of (subjectAltName), comma-separated [default: any name the CA signed].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_allowed_client_names: Option<String>,
    /// Device listener certificate chain (PEM); with the key the device API is TLS.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_tls_cert_file: Option<PathBuf>,
    /// Device listener private key (PEM).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_tls_key_file: Option<PathBuf>,
    /// How often certificate files are checked for changes, seconds; SIGHUP reloads at once [default: 5].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_reload_poll_secs: Option<u64>,
}

/// Configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or parsed.
    #[error("{0}")]
    Source(#[from] Box<figment::Error>),
    /// Values that contradict each other or are unsafe.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Layers defaults, the file named by `args.config`, the environment and the flags.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting at fault.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &args.config {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(Env::prefixed("APPROVAL_RELAY_").ignore(&["config"]))
            .merge(Serialized::defaults(args))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values against each other and against the transport rules of DESIGN.md §2.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with a readable reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.min_ttl_secs == 0 || self.min_ttl_secs > self.max_ttl_secs {
            return bad(format!(
                "min_ttl_secs ({}) must be between 1 and max_ttl_secs ({})",
                self.min_ttl_secs, self.max_ttl_secs
            ));
        }
        if !(self.min_ttl_secs..=self.max_ttl_secs).contains(&self.default_ttl_secs) {
            return bad(format!(
                "default_ttl_secs ({}) must lie within min_ttl_secs..=max_ttl_secs",
                self.default_ttl_secs
            ));
        }
        let urls = self
            .redis_url
            .iter()
            .map(String::as_str)
            .chain(self.cluster_seeds());
        if let Some(url) = urls
            .clone()
            .find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return bad(format!(
                "redis url {url:?} must start with redis:// or rediss://"
            ));
        }
        if self.redis_url.is_some() && self.redis_cluster_nodes.is_some() {
            return bad("give either redis_url or redis_cluster_nodes, not both".into());
        }
        if self.apns_key_file.is_some()
            && (self.apns_key_id.is_none() || self.apns_team_id.is_none())
        {
            return bad("apns_key_file needs apns_key_id and apns_team_id".into());
        }
        if !(1..=crate::challenge::MAX_TYPE_ATTEMPTS).contains(&self.type_number_attempts) {
            return bad(format!(
                "type_number_attempts ({}) must be between 1 and {}",
                self.type_number_attempts,
                crate::challenge::MAX_TYPE_ATTEMPTS
            ));
        }
        if self.max_pending_per_account == 0 {
            return bad("max_pending_per_account must be at least 1".into());
        }
        if (self.account_rate_per_minute > 0 && self.account_rate_burst == 0)
            || (self.source_rate_per_minute > 0 && self.source_rate_burst == 0)
        {
            return bad("a rate limit with a per-minute rate needs a burst of at least 1".into());
        }
        if self.max_concurrent_streams == 0 {
            return bad("max_concurrent_streams must be at least 1".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad(format!(
                "log_format must be text or json, not {:?}",
                self.log_format
            ));
        }
        self.validate_transport()?;
        Ok(())
    }

    /// mTLS on the backend listener and TLS on the device listener, or plaintext where it is explicitly
    /// allowed: on loopback (reachable only from this host) or with the insecure flag.
    fn validate_transport(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let backend = [
            &self.backend_tls_cert_file,
            &self.backend_tls_key_file,
            &self.backend_client_ca_file,
        ];
        match backend.iter().filter(|f| f.is_some()).count() {
            0 if !self.backend_addr.ip().is_loopback() && !self.insecure_plaintext_backend => {
                return bad(format!(
                    "backend_addr {} is not loopback: the backend API needs mTLS (backend_tls_cert_file, \
                     backend_tls_key_file and backend_client_ca_file); pass --insecure-plaintext-backend to \
                     accept plaintext on a trusted network",
                    self.backend_addr
                ));
            }
            0 if self.backend_allowed_client_names.is_some() => {
                return bad("backend_allowed_client_names needs backend mTLS (backend_tls_cert_file, backend_tls_key_file and backend_client_ca_file)".into());
            }
            1 | 2 => {
                return bad("backend mTLS needs all three of backend_tls_cert_file, backend_tls_key_file and backend_client_ca_file".into());
            }
            _ => {}
        }
        match (&self.device_tls_cert_file, &self.device_tls_key_file) {
            (None, None)
                if !self.device_addr.ip().is_loopback() && !self.insecure_plaintext_device =>
            {
                bad(format!(
                    "device_addr {} is not loopback: the device API needs TLS (device_tls_cert_file and \
                     device_tls_key_file); pass --insecure-plaintext-device to accept plaintext (e.g. behind a \
                     TLS-terminating proxy)",
                    self.device_addr
                ))
            }
            (Some(_), None) | (None, Some(_)) => {
                bad("device TLS needs both device_tls_cert_file and device_tls_key_file".into())
            }
            _ if self.tls_reload_poll_secs == 0 => {
                bad("tls_reload_poll_secs must be at least 1".into())
            }
            _ => Ok(()),
        }
    }

    /// The backend listener's mTLS files, when configured.
    pub fn backend_tls(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.backend_tls_cert_file.clone()?,
            key: self.backend_tls_key_file.clone()?,
            client_ca: Some(self.backend_client_ca_file.clone()?),
            allowed_names: self
                .backend_allowed_client_names
                .iter()
                .flat_map(|n| n.split(','))
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The device listener's TLS files, when configured.
    pub fn device_tls(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.device_tls_cert_file.clone()?,
            key: self.device_tls_key_file.clone()?,
            client_ca: None,
            allowed_names: Vec::new(),
        })
    }

    fn cluster_seeds(&self) -> impl Iterator<Item = &str> + Clone {
        self.redis_cluster_nodes
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Where Redis is, if anywhere (none: the in-memory store).
    pub fn redis_target(&self) -> Option<crate::store::redis::Target> {
        use crate::store::redis::Target;
        match (&self.redis_url, &self.redis_cluster_nodes) {
            (Some(url), _) => Some(Target::Single(url.clone())),
            (None, Some(_)) => Some(Target::Cluster(
                self.cluster_seeds().map(str::to_owned).collect(),
            )),
            (None, None) => None,
        }
    }

    /// A configuration for tests and embedding: every listener on 127.0.0.1 port 0.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            backend_addr: any,
            device_addr: any,
            admin_addr: any,
            ..Self::default()
        }
    }

    /// The push-bombing limits the stores apply.
    pub fn limits(&self) -> crate::limits::LimitPolicy {
        crate::limits::LimitPolicy {
            max_pending: self.max_pending_per_account,
            supersede: self.supersede_pending,
            cooldown_base: Duration::from_secs(self.cooldown_base_secs),
            cooldown_max: Duration::from_secs(self.cooldown_max_secs),
            fraud_mute: Duration::from_secs(self.fraud_mute_secs),
            account_rate: crate::limits::RateLimit {
                per_minute: self.account_rate_per_minute,
                burst: self.account_rate_burst,
            },
            source_rate: crate::limits::RateLimit {
                per_minute: self.source_rate_per_minute,
                burst: self.source_rate_burst,
            },
            device_auth_failures: crate::limits::RateLimit {
                per_minute: self.auth_failures_per_device_per_minute,
                burst: self.auth_failures_per_device_per_minute,
            },
            source_auth_failures: crate::limits::RateLimit {
                per_minute: self.auth_failures_per_source_per_minute,
                burst: self.auth_failures_per_source_per_minute,
            },
        }
    }

    /// The policy the use cases apply.
    pub fn policy(&self, device_addr: SocketAddr) -> crate::relay::Policy {
        crate::relay::Policy {
            default_ttl: Duration::from_secs(self.default_ttl_secs),
            min_ttl: Duration::from_secs(self.min_ttl_secs),
            max_ttl: Duration::from_secs(self.max_ttl_secs),
            timestamp_window: Duration::from_secs(self.timestamp_window_secs),
            default_enrollment_ttl: Duration::from_secs(600),
            public_device_address: self
                .public_device_address
                .clone()
                .unwrap_or_else(|| device_addr.to_string()),
            type_number_attempts: self.type_number_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::load(&ServeArgs::default()).expect("defaults load");
        assert!(c.backend_addr.ip().is_loopback());
    }

    #[test]
    fn a_public_backend_listener_needs_the_explicit_flag() {
        let mut args = ServeArgs {
            backend_addr: Some("0.0.0.0:50051".parse().expect("addr")),
            ..ServeArgs::default()
        };
        let err = Config::load(&args).expect_err("refused");
        assert!(
            err.to_string().contains("--insecure-plaintext-backend"),
            "{err}"
        );
        args.insecure_plaintext_backend = true;
        assert!(Config::load(&args).is_ok());
    }

    #[test]
    fn backend_mtls_needs_cert_key_and_client_ca_together() {
        let mut args = ServeArgs {
            backend_addr: Some("0.0.0.0:50051".parse().expect("addr")),
            backend_tls_cert_file: Some("server.pem".into()),
            backend_tls_key_file: Some("server.key".into()),
            ..ServeArgs::default()
        };
        let err = Config::load(&args).expect_err("no client CA");
        assert!(err.to_string().contains("backend_client_ca_file"), "{err}");
        args.backend_client_ca_file = Some("clients.pem".into());
        let config = Config::load(&args).expect("full mTLS on a public address");
        assert!(config.backend_tls().is_some());
        args.device_tls_cert_file = Some("device.pem".into());
        let err = Config::load(&args).expect_err("device cert without key");
        assert!(err.to_string().contains("device_tls_key_file"), "{err}");
    }

    #[test]
    fn ttl_bounds_must_be_consistent() {
        let args = ServeArgs {
            min_ttl_secs: Some(100),
            max_ttl_secs: Some(50),
            ..ServeArgs::default()
        };
        assert!(Config::load(&args).is_err());
    }
}
