//! Every setting of `approval-relay serve`, declared once: the typed [`Config`] with its defaults, the
//! [`ServeArgs`] flags that override it, and the list of names the environment is read for. A macro,
//! because the same ~50 settings would otherwise be written three times and drift apart.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

macro_rules! settings {
    (
        values { $( $(#[doc = $vdoc:literal])* $vname:ident : $vty:ty = $vdef:expr ; )* }
        optional { $( $(#[doc = $odoc:literal])* $oname:ident : $oty:ty ; )* }
        flags { $( $(#[doc = $fdoc:literal])* $fname:ident ; )* }
    ) => {
        /// Everything `approval-relay serve` can be told.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $vdoc])* pub $vname: $vty, )*
            $( $(#[doc = $odoc])* pub $oname: Option<$oty>, )*
            $( $(#[doc = $fdoc])* pub $fname: bool, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self {
                    $( $vname: $vdef, )*
                    $( $oname: None, )*
                    $( $fname: false, )*
                }
            }
        }

        /// Flags of `approval-relay serve` and `check-config`; each overrides the file and the
        /// environment.
        #[derive(Debug, Default, Clone, clap::Args, Serialize)]
        pub struct ServeArgs {
            /// TOML file with any of the settings below (snake_case keys).
            #[arg(long, env = "APPROVAL_RELAY_CONFIG")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $vdoc])*
                #[arg(long)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $vname: Option<$vty>,
            )*
            $(
                $(#[doc = $odoc])*
                #[arg(long)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $oname: Option<$oty>,
            )*
            $(
                $(#[doc = $fdoc])*
                #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $fname: Option<bool>,
            )*
        }

        /// The name of every setting (the TOML key, the flag with dashes, the variable in upper case).
        pub const SETTINGS: &[&str] = &[
            $( stringify!($vname), )*
            $( stringify!($oname), )*
            $( stringify!($fname), )*
        ];
    };
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

settings! {
    values {
        /// Backend API listener (internal only) [default: 127.0.0.1:50051].
        backend_addr: SocketAddr = addr(50051);
        /// Device API listener, the one phones reach [default: 127.0.0.1:50052].
        device_addr: SocketAddr = addr(50052);
        /// Admin HTTP listener: /healthz, /readyz, /metrics [default: 127.0.0.1:9090].
        admin_addr: SocketAddr = addr(9090);
        /// APNs endpoint: https://api.push.apple.com, https://api.sandbox.push.apple.com, or mock-push's
        /// URL; used when apns_key_file is set [default: https://api.push.apple.com].
        apns_url: String = crate::push::apns::PRODUCTION.to_owned();
        /// FCM endpoint; used when fcm_service_account_file is set [default: https://fcm.googleapis.com].
        fcm_url: String = crate::push::fcm::PRODUCTION.to_owned();
        /// Mi Push endpoint: https://api.xmpush.xiaomi.com (mainland China), a regional one
        /// (https://sgp-api.xmpush.global.xiaomi.com, fr-api, ru-api, idmb-api), or mock-push's URL; used
        /// when xiaomi_app_secret_file is set [default: https://api.xmpush.xiaomi.com].
        xiaomi_url: String = crate::push::xiaomi::PRODUCTION.to_owned();
        /// HMS Push Kit endpoint; used when hms_app_secret_file is set
        /// [default: https://push-api.cloud.huawei.com].
        hms_url: String = crate::push::hms::PRODUCTION.to_owned();
        /// Huawei's OAuth 2.0 token endpoint (full URL)
        /// [default: https://oauth-login.cloud.huawei.com/oauth2/v3/token].
        hms_token_url: String = crate::push::hms::TOKEN_URL.to_owned();
        /// Pending challenges an account may have at once (push-bombing limit) [default: 1].
        max_pending_per_account: usize = 1;
        /// Cool-down after the first denied or unanswered challenge, seconds, doubling each time; 0 turns
        /// it off [default: 10].
        cooldown_base_secs: u64 = 10;
        /// Longest cool-down, seconds [default: 3600].
        cooldown_max_secs: u64 = 3600;
        /// New challenges are refused this long after a fraud report, seconds; 0 turns it off
        /// [default: 3600].
        fraud_mute_secs: u64 = 3600;
        /// Challenges an account may be sent per minute (token bucket refill); 0 turns the bucket off
        /// [default: 20].
        account_rate_per_minute: u32 = 20;
        /// The account bucket's burst [default: 10].
        account_rate_burst: u32 = 10;
        /// Challenges one sign-in address (IPv6: its /64) may cause per minute across accounts; 0 turns
        /// it off [default: 300].
        source_rate_per_minute: u32 = 300;
        /// The source bucket's burst [default: 100].
        source_rate_burst: u32 = 100;
        /// Device requests naming one device that fail authentication and are still recorded, per minute
        /// (also the burst); past it they are refused RESOURCE_EXHAUSTED; 0: no limit [default: 10].
        auth_failures_per_device_per_minute: u32 = 10;
        /// The same per peer address (IPv6: its /64), across devices; 0: no limit [default: 60].
        auth_failures_per_source_per_minute: u32 = 60;
        /// Wrong or replayed offline codes an account may send per minute (token bucket refill) before
        /// VerifyCode refuses every code RESOURCE_EXHAUSTED; 0 turns the limit off [default: 1].
        code_failures_per_minute: u32 = 1;
        /// That bucket's burst [default: 5].
        code_failures_burst: u32 = 5;
        /// How long an approved sign-in's device and place stay known after it, seconds, 1 to 34560000
        /// (400 days) [default: 2592000, 30 days].
        remember_sign_ins_secs: u64 = 2_592_000;
        /// Issuer shown by authenticator apps in otpauth:// URIs [default: approval-relay].
        totp_issuer: String = "approval-relay".into();
        /// Key attestation at enrollment: none (optional; verified and recorded when sent) or hardware
        /// (refuse enrollments without a hardware-backed attestation; needs android_attestation_apps or
        /// apple_app_attest_app_ids) [default: none].
        require_attestation: String = "none".into();
        /// App Attest environment the app is signed for: production or development (its AAGUID)
        /// [default: production].
        apple_app_attest_environment: String = "production".into();
        /// Challenge TTL when the backend gives none, seconds [default: 60].
        default_ttl_secs: u64 = 60;
        /// Shortest challenge TTL accepted, seconds [default: 10].
        min_ttl_secs: u64 = 10;
        /// Longest challenge TTL accepted, seconds [default: 600].
        max_ttl_secs: u64 = 600;
        /// Accepted skew of a device's signed timestamp, seconds [default: 300].
        timestamp_window_secs: u64 = 300;
        /// Numbers an owner may type in TYPE mode before a wrong one ends the challenge DENIED, 1 to 5
        /// (CHOOSE always ends at the first wrong tap) [default: 1].
        type_number_attempts: u32 = 1;
        /// Devices a replica keeps as last read, so that a device's next signed request (a phone reads a
        /// challenge, then answers it) needs no read before its store step; 0 keeps none
        /// [default: 10000].
        device_cache_entries: usize = crate::relay::DEVICE_CACHE_ENTRIES;
        /// Concurrent HTTP/2 streams per gRPC connection (tonic's default is unlimited) [default: 1000].
        max_concurrent_streams: u32 = 1_000;
        /// Provider requests in flight at once, per provider (APNs, FCM, Mi Push, HMS each) [default: 512].
        max_push_in_flight: usize = 512;
        /// Longest wait for in-flight work at shutdown, seconds [default: 10].
        shutdown_grace_secs: u64 = 10;
        /// Log format: text or json [default: text].
        log_format: String = "text".into();
        /// How often certificate files are checked for changes, seconds; SIGHUP reloads at once
        /// [default: 5].
        tls_reload_poll_secs: u64 = 5;
    }
    optional {
        /// Device API address written into enrollment URIs [default: the device listener].
        public_device_address: String;
        /// One Redis node: redis://[user:password@]host:port[/db], rediss:// for TLS [default: none, the
        /// in-memory store of development mode].
        redis_url: String;
        /// Redis Cluster seed nodes, comma-separated redis:// or rediss:// URLs (instead of redis_url).
        redis_cluster_nodes: String;
        /// CA certificates (PEM) to trust for rediss:// instead of the system's bundle (a private CA).
        redis_ca_file: PathBuf;
        /// Client certificate chain (PEM) for Redis over TLS with client authentication (needs
        /// redis_client_key_file).
        redis_client_cert_file: PathBuf;
        /// The client certificate's private key (PEM).
        redis_client_key_file: PathBuf;
        /// APNs provider key file (.p8, PKCS#8 PEM); with it, APNs devices are pushed through APNs, not
        /// the sink.
        apns_key_file: PathBuf;
        /// APNs provider key id (10 characters).
        apns_key_id: String;
        /// Apple developer team id.
        apns_team_id: String;
        /// Extra root certificate (PEM) to trust for APNs, e.g. the CA mock-push writes.
        apns_ca_file: PathBuf;
        /// Firebase service-account key (JSON); its token_uri is honoured; with it, FCM devices are
        /// pushed through FCM, not the sink.
        fcm_service_account_file: PathBuf;
        /// Firebase project id [default: the key's project_id].
        fcm_project_id: String;
        /// Extra root certificate (PEM) to trust for FCM, e.g. the CA mock-push writes.
        fcm_ca_file: PathBuf;
        /// File holding the Mi Push AppSecret; with it, Xiaomi devices are pushed through Mi Push, not
        /// the sink.
        xiaomi_app_secret_file: PathBuf;
        /// Android packages the AppSecret pushes to, comma-separated; a Xiaomi device with another
        /// app_id is not pushed (DELIVERY_FAILED rejected: package_not_allowed) [default: any].
        xiaomi_package: String;
        /// Notification channel id registered with Xiaomi, sent as extra.channel_id [default: none].
        xiaomi_channel_id: String;
        /// Extra root certificate (PEM) to trust for Mi Push, e.g. the CA mock-push writes.
        xiaomi_ca_file: PathBuf;
        /// HMS app id (the OAuth client id) from AppGallery Connect.
        hms_app_id: String;
        /// File holding the HMS app secret (the OAuth client secret); with it and hms_app_id, HMS devices
        /// are pushed through Push Kit, not the sink.
        hms_app_secret_file: PathBuf;
        /// Extra root certificate (PEM) to trust for HMS (Push Kit and the token endpoint).
        hms_ca_file: PathBuf;
        /// Backend listener certificate chain (PEM); with the key and the client CA the backend API is
        /// mTLS.
        backend_tls_cert_file: PathBuf;
        /// Backend listener private key (PEM).
        backend_tls_key_file: PathBuf;
        /// CA (PEM) that backend clients' certificates must chain to.
        backend_client_ca_file: PathBuf;
        /// DNS names (subjectAltName) a backend client certificate must carry one of, comma-separated
        /// [default: any name the CA signed].
        backend_allowed_client_names: String;
        /// Device listener certificate chain (PEM); with the key the device API is TLS.
        device_tls_cert_file: PathBuf;
        /// Device listener private key (PEM).
        device_tls_key_file: PathBuf;
        /// OTLP/gRPC endpoint to export traces to, e.g. http://127.0.0.1:4317 (needs the `otel` build
        /// feature, on by default) [default: none, no export].
        otlp_endpoint: String;
        /// File with the 32-byte AES-256-GCM key that seals offline-code secrets at rest (64 hex digits or
        /// base64); without it the in-memory store seals with a key made at start and the Redis store
        /// offers no offline codes.
        totp_key_file: PathBuf;
        /// Older sealing keys, comma-separated files, still accepted for opening secrets (key rotation).
        totp_previous_key_files: String;
        /// Roots (PEM bundle) Android attestation chains must lead to, instead of Google's built-in
        /// hardware attestation roots.
        android_attestation_roots_file: PathBuf;
        /// More roots (PEM bundle) trusted besides the built-in (or replaced) Android roots.
        android_attestation_extra_roots_file: PathBuf;
        /// Google's attestation status list (JSON, as published at android.googleapis.com/attestation/
        /// status); every listed serial is refused. Read at start.
        android_attestation_revocations_file: PathBuf;
        /// Android apps allowed to attest, comma-separated `package` or `package:SHA256` (the signing
        /// certificate's digest, hex, colons allowed) [default: any package equal to the enrolling
        /// app_id].
        android_attestation_apps: String;
        /// App ids (TEAMID.bundle.id) allowed to attest with App Attest, comma-separated [default: none;
        /// App Attest refused as not configured].
        apple_app_attest_app_ids: String;
        /// Roots (PEM) App Attest chains must lead to, instead of Apple's App Attestation Root CA.
        apple_app_attest_roots_file: PathBuf;
    }
    flags {
        /// At the pending cap, cancel the oldest pending challenge instead of refusing the new one
        /// (`--supersede-pending` or `--supersede-pending=true|false`).
        supersede_pending;
        /// Serve the backend API in plaintext even on a non-loopback address.
        insecure_plaintext_backend;
        /// Serve the device API in plaintext even on a non-loopback address.
        insecure_plaintext_device;
    }
}
