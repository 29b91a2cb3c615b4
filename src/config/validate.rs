//! Checks a configuration before anything is bound: values against each other, the transport rules of
//! DESIGN.md §2, and every file a setting names (it must exist and hold what the setting says), so
//! that a missing key file is the same one line and exit 64 as any other unusable setting.

use super::{Config, ConfigError};
use std::path::Path;

impl Config {
    /// Checks values against each other and against the transport rules.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::new(m));
        if self.min_ttl_secs == 0 || self.min_ttl_secs > self.max_ttl_secs {
            return bad(format!(
                "min_ttl_secs ({}) must be between 1 and max_ttl_secs ({})",
                self.min_ttl_secs, self.max_ttl_secs
            ));
        }
        if !(self.min_ttl_secs..=self.max_ttl_secs).contains(&self.default_ttl_secs) {
            return bad(format!(
                "default_ttl_secs ({}) must lie within min_ttl_secs..=max_ttl_secs ({}..={})",
                self.default_ttl_secs, self.min_ttl_secs, self.max_ttl_secs
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
                "redis url {:?} must start with redis:// or rediss://",
                super::derived::redact_url(url)
            ));
        }
        if self.redis_url.is_some() && self.redis_cluster_nodes.is_some() {
            return bad("give either redis_url or redis_cluster_nodes, not both".into());
        }
        if self.redis_client_cert_file.is_some() != self.redis_client_key_file.is_some() {
            return bad(
                "redis client TLS needs both redis_client_cert_file and redis_client_key_file"
                    .into(),
            );
        }
        let tls_files = self.redis_ca_file.is_some() || self.redis_client_cert_file.is_some();
        if tls_files && !urls.clone().any(|u| u.starts_with("rediss://")) {
            return bad(
                "redis_ca_file and redis_client_cert_file need a rediss:// redis_url or cluster node"
                    .into(),
            );
        }
        if self.apns_key_file.is_some()
            && (self.apns_key_id.is_none() || self.apns_team_id.is_none())
        {
            return bad("apns_key_file needs apns_key_id and apns_team_id".into());
        }
        if self.hms_app_secret_file.is_some() && self.hms_app_id.is_none() {
            return bad("hms_app_secret_file needs hms_app_id".into());
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
        for (rate, burst, rate_name, burst_name) in [
            (
                self.account_rate_per_minute,
                self.account_rate_burst,
                "account_rate_per_minute",
                "account_rate_burst",
            ),
            (
                self.source_rate_per_minute,
                self.source_rate_burst,
                "source_rate_per_minute",
                "source_rate_burst",
            ),
            (
                self.code_failures_per_minute,
                self.code_failures_burst,
                "code_failures_per_minute",
                "code_failures_burst",
            ),
        ] {
            if rate > 0 && burst == 0 {
                return bad(format!(
                    "{burst_name} must be at least 1 when {rate_name} is set ({rate}); \
                     or set {rate_name} to 0 to turn the limit off"
                ));
            }
        }
        if !(1..=400 * 86_400).contains(&self.remember_sign_ins_secs) {
            return bad(format!(
                "remember_sign_ins_secs ({}) must be between 1 and 34560000 (400 days)",
                self.remember_sign_ins_secs
            ));
        }
        if self.totp_previous_key_files.is_some() && self.totp_key_file.is_none() {
            return bad("totp_previous_key_files needs totp_key_file (the current key)".into());
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
        if self.otlp_endpoint.is_some() && !cfg!(feature = "otel") {
            return bad(
                "otlp_endpoint needs a relay built with the otel feature (cargo build --features otel)"
                    .into(),
            );
        }
        self.validate_transport()
    }

    /// mTLS on the backend listener and TLS on the device listener, or plaintext where it is explicitly
    /// allowed: on loopback (reachable only from this host) or with the insecure flag.
    fn validate_transport(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::new(m));
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

    /// Reads every file a setting names and checks it holds what the setting needs, so that a missing or
    /// wrong file is refused before the relay starts, naming the setting.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting and the file.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let pem_files = [
            ("redis_ca_file", &self.redis_ca_file, Pem::Certificates),
            (
                "redis_client_cert_file",
                &self.redis_client_cert_file,
                Pem::Certificates,
            ),
            (
                "redis_client_key_file",
                &self.redis_client_key_file,
                Pem::PrivateKey,
            ),
            ("apns_ca_file", &self.apns_ca_file, Pem::Certificates),
            ("fcm_ca_file", &self.fcm_ca_file, Pem::Certificates),
            ("xiaomi_ca_file", &self.xiaomi_ca_file, Pem::Certificates),
            ("hms_ca_file", &self.hms_ca_file, Pem::Certificates),
            (
                "backend_tls_cert_file",
                &self.backend_tls_cert_file,
                Pem::Certificates,
            ),
            (
                "backend_tls_key_file",
                &self.backend_tls_key_file,
                Pem::PrivateKey,
            ),
            (
                "backend_client_ca_file",
                &self.backend_client_ca_file,
                Pem::Certificates,
            ),
            (
                "device_tls_cert_file",
                &self.device_tls_cert_file,
                Pem::Certificates,
            ),
            (
                "device_tls_key_file",
                &self.device_tls_key_file,
                Pem::PrivateKey,
            ),
        ];
        for (setting, path, kind) in pem_files {
            if let Some(path) = path {
                check_pem(setting, path, kind)?;
            }
        }
        if let Some(path) = &self.apns_key_file {
            crate::push::apns::ApnsSettings::read_key(path)
                .map_err(|e| ConfigError::new(format!("apns_key_file: {e}")))?;
        }
        self.sealer()?;
        self.attestation()?;
        for (setting, path) in [
            ("xiaomi_app_secret_file", &self.xiaomi_app_secret_file),
            ("hms_app_secret_file", &self.hms_app_secret_file),
        ] {
            if let Some(path) = path
                && read(setting, path)?.trim().is_empty()
            {
                return Err(ConfigError::new(format!(
                    "{setting} {}: is empty",
                    path.display()
                )));
            }
        }
        if let Some(path) = &self.fcm_service_account_file {
            let text = read("fcm_service_account_file", path)?;
            let key: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                ConfigError::new(format!(
                    "fcm_service_account_file {}: not JSON: {e}",
                    path.display()
                ))
            })?;
            for field in ["client_email", "private_key", "token_uri"] {
                if !key[field].is_string() {
                    return Err(ConfigError::new(format!(
                        "fcm_service_account_file {}: not a service-account key (no {field})",
                        path.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// The offline-code sealing keys from `totp_key_file` (sealing) and `totp_previous_key_files`
    /// (opening only); `None` without `totp_key_file`.
    ///
    /// # Errors
    /// A file that cannot be read or does not hold a 32-byte key, named.
    pub fn sealer(&self) -> Result<Option<crate::sealing::Sealer>, ConfigError> {
        let Some(current) = &self.totp_key_file else {
            return Ok(None);
        };
        let previous = self.totp_previous_key_files.as_deref().unwrap_or("");
        let mut keys = Vec::new();
        let files = std::iter::once(("totp_key_file", current.clone())).chain(
            previous
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| ("totp_previous_key_files", std::path::PathBuf::from(p))),
        );
        for (setting, path) in files {
            let text = read(setting, &path)?;
            keys.push(
                crate::sealing::parse_key(&text)
                    .map_err(|e| ConfigError::new(format!("{setting} {}: {e}", path.display())))?,
            );
        }
        crate::sealing::Sealer::new(&keys)
            .map(Some)
            .map_err(|e| ConfigError::new(format!("totp_key_file: {e}")))
    }
}

#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

fn read(setting: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("{setting} {}: {e}", path.display())))
}

fn check_pem(setting: &str, path: &Path, kind: Pem) -> Result<(), ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let text = read(setting, path)?;
    let found = match kind {
        Pem::Certificates => {
            CertificateDer::pem_slice_iter(text.as_bytes())
                .filter_map(Result::ok)
                .count()
                > 0
        }
        Pem::PrivateKey => PrivateKeyDer::from_pem_slice(text.as_bytes()).is_ok(),
    };
    if found {
        return Ok(());
    }
    let what = match kind {
        Pem::Certificates => "no PEM certificate",
        Pem::PrivateKey => "no PEM private key",
    };
    Err(ConfigError::new(format!(
        "{setting} {}: {what} in it",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_mtls_needs_cert_key_and_client_ca_together() {
        let mut c = Config {
            backend_addr: "0.0.0.0:50051".parse().expect("addr"),
            backend_tls_cert_file: Some("server.pem".into()),
            backend_tls_key_file: Some("server.key".into()),
            ..Config::default()
        };
        let err = c.validate().expect_err("no client CA");
        assert!(err.to_string().contains("backend_client_ca_file"), "{err}");
        c.backend_client_ca_file = Some("clients.pem".into());
        c.validate().expect("full mTLS on a public address");
        assert!(c.backend_tls().is_some());
        c.device_tls_cert_file = Some("device.pem".into());
        let err = c.validate().expect_err("device cert without key");
        assert!(err.to_string().contains("device_tls_key_file"), "{err}");
    }

    #[test]
    fn a_rate_without_a_burst_names_the_limit() {
        let c = Config {
            source_rate_burst: 0,
            ..Config::default()
        };
        let err = c.validate().expect_err("no burst").to_string();
        assert!(
            err.starts_with("source_rate_burst must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn push_secrets_need_their_app_and_must_not_be_empty() {
        let c = Config {
            hms_app_secret_file: Some("secret".into()),
            ..Config::default()
        };
        let err = c.validate().expect_err("no app id").to_string();
        assert!(
            err.contains("hms_app_secret_file needs hms_app_id"),
            "{err}"
        );
        let empty = std::env::temp_dir().join(format!("empty-secret-{}", rand::random::<u64>()));
        std::fs::write(&empty, " \n").expect("write");
        let c = Config {
            xiaomi_app_secret_file: Some(empty.clone()),
            ..Config::default()
        };
        let err = c.check_files().expect_err("empty").to_string();
        let _ = std::fs::remove_file(&empty);
        assert!(
            err.starts_with("xiaomi_app_secret_file ") && err.ends_with("is empty"),
            "{err}"
        );
    }

    #[test]
    fn a_named_file_that_is_missing_is_refused_with_its_setting() {
        let c = Config {
            apns_key_file: Some("/nonexistent/key.p8".into()),
            apns_key_id: Some("K".into()),
            apns_team_id: Some("T".into()),
            ..Config::default()
        };
        let err = c.check_files().expect_err("missing").to_string();
        assert!(
            err.starts_with("apns_key_file: apns key file /nonexistent"),
            "{err}"
        );
    }
}
