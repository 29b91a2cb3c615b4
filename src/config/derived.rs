//! What the rest of the relay takes from a configuration: the TLS files of each listener, where Redis
//! is, the limits and policy of the use cases; and the configuration as `check-config` prints it, with
//! secrets redacted.

use super::Config;
use std::net::SocketAddr;
use std::time::Duration;

impl Config {
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

    pub(super) fn cluster_seeds(&self) -> impl Iterator<Item = &str> + Clone {
        self.redis_cluster_nodes
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Where Redis is and how to trust it, if anywhere (none: the in-memory store).
    pub fn redis_target(&self) -> Option<crate::store::redis::Target> {
        use crate::store::redis::{Nodes, Target};
        let nodes = match (&self.redis_url, &self.redis_cluster_nodes) {
            (Some(url), _) => Nodes::Single(url.clone()),
            (None, Some(_)) => Nodes::Cluster(self.cluster_seeds().map(str::to_owned).collect()),
            (None, None) => return None,
        };
        Some(Target {
            nodes,
            ca_file: self.redis_ca_file.clone(),
            client_cert_file: self.redis_client_cert_file.clone(),
            client_key_file: self.redis_client_key_file.clone(),
        })
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
            code_failures: crate::limits::RateLimit {
                per_minute: self.code_failures_per_minute,
                burst: self.code_failures_burst,
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
            remember_window: Duration::from_secs(self.remember_sign_ins_secs),
            totp_issuer: self.totp_issuer.clone(),
            // Read from files, so set apart by `Config::attestation`.
            attestation: crate::attest::Policy::default(),
            device_cache_entries: self.device_cache_entries,
        }
    }

    /// The effective configuration as TOML, with the passwords in Redis URLs replaced by `***`.
    ///
    /// # Errors
    /// A value TOML cannot hold (none of the settings' types).
    pub fn redacted_toml(&self) -> Result<String, String> {
        let mut shown = self.clone();
        shown.redis_url = shown.redis_url.as_deref().map(redact_url);
        shown.redis_cluster_nodes = shown.redis_cluster_nodes.as_deref().map(|nodes| {
            nodes
                .split(',')
                .map(|n| redact_url(n.trim()))
                .collect::<Vec<_>>()
                .join(",")
        });
        toml::to_string(&shown).map_err(|e| e.to_string())
    }
}

/// A URL with its password (the part after `user:` and before `@`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("rediss://relay:s3cret@10.0.0.5:6380/2"),
            "rediss://relay:***@10.0.0.5:6380/2"
        );
        assert_eq!(redact_url("redis://s3cret@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        let c = Config {
            redis_cluster_nodes: Some("redis://a:pw@h1:1, redis://h2:2".into()),
            ..Config::default()
        };
        let shown = c.redacted_toml().expect("toml");
        assert!(!shown.contains("pw"), "{shown}");
    }
}
