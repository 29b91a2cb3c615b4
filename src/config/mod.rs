//! One typed configuration, layered: defaults, then an optional TOML file, then `APPROVAL_RELAY_*`
//! environment variables, then command-line flags. Invalid configuration is one readable line and exit
//! code 64 (see `main.rs`). The environment is read only for the relay's own settings: platforms and
//! tools put other `APPROVAL_RELAY_*` variables there (Kubernetes' Service variables for Services named
//! `approval-relay-…`, the CLI tools' own settings), and those must never stop the relay.

mod attestation;
mod derived;
mod settings;
mod validate;

pub use settings::{Config, SETTINGS, ServeArgs};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

/// The entries of a comma-separated setting, trimmed, empty ones dropped.
pub fn list(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "APPROVAL_RELAY_";

/// Configuration that cannot be used, as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A loaded configuration and what the loading noticed but did not act on.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// `APPROVAL_RELAY_*` variables that are not settings (ignored; logged at debug once logs start).
    pub ignored_env: Vec<String>,
}

impl Config {
    /// Layers defaults, the file named by `args.config`, the environment and the flags, then checks the
    /// values and that every file a setting names can be read and used.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting at fault (and where it came from).
    pub fn load(args: &ServeArgs) -> Result<Loaded, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &args.config {
            if !path.is_file() {
                return Err(ConfigError::new(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Config = figment
            .merge(Env::prefixed(ENV_PREFIX).only(SETTINGS))
            .merge(Serialized::defaults(args))
            .extract()
            .map_err(|e| describe(&e))?;
        config.validate()?;
        config.check_files()?;
        Ok(Loaded {
            config,
            ignored_env: ignored_env(),
        })
    }
}

/// `APPROVAL_RELAY_*` variables that name no setting (nor the config file).
fn ignored_env() -> Vec<String> {
    let mut ignored: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.strip_prefix(ENV_PREFIX).is_some_and(|rest| {
                let rest = rest.to_ascii_lowercase();
                rest != "config" && !SETTINGS.contains(&rest.as_str())
            })
        })
        .collect();
    ignored.sort();
    ignored
}

/// One short line for a figment error: where the value came from, the setting, what is wrong.
fn describe(error: &figment::Error) -> ConfigError {
    let Some(e) = error.clone().into_iter().next() else {
        return ConfigError::new(error.to_string());
    };
    // figment prefixes keys with its profile ("default"); settings have no profiles.
    let path: Vec<&str> = e
        .path
        .iter()
        .map(String::as_str)
        .skip_while(|p| *p == "default")
        .collect();
    let setting = path.join(".");
    let from = match (&e.metadata, &e.profile) {
        (Some(m), _) if m.name.contains("environment") => {
            format!(
                "environment variable {ENV_PREFIX}{}",
                setting.to_ascii_uppercase()
            )
        }
        (Some(m), _) => match &m.source {
            Some(figment::Source::File(path)) => format!("config file {}", path.display()),
            _ if m.name.contains("Serialized") || m.name.contains("ServeArgs") => {
                format!("--{}", setting.replace('_', "-"))
            }
            _ => m.name.to_string(),
        },
        _ => "configuration".to_owned(),
    };
    let message = match &e.kind {
        figment::error::Kind::UnknownField(field, _) => {
            let hint = closest(field)
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_default();
            format!("{from}: unknown setting {field:?}{hint}")
        }
        kind if setting.is_empty() => format!("{from}: {kind}"),
        kind => format!("{from}: {setting}: {kind}"),
    };
    ConfigError::new(message)
}

/// The setting whose name is closest to `name`, if any is close.
fn closest(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .map(|s| (strsim::jaro_winkler(name, s), *s))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::load(&ServeArgs::default())
            .expect("defaults load")
            .config;
        assert!(c.backend_addr.ip().is_loopback());
    }

    #[test]
    fn a_mistyped_key_names_the_closest_setting() {
        assert_eq!(closest("redis_ulr"), Some("redis_url"));
        assert_eq!(closest("zzzz"), None);
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
        args.insecure_plaintext_backend = Some(true);
        assert!(Config::load(&args).is_ok());
        args.insecure_plaintext_backend = Some(false);
        assert!(Config::load(&args).is_err(), "=false turns the flag off");
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
