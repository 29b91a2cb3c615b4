//! The key-attestation settings turned into [`crate::attest::Policy`]: the requirement, the roots
//! (built in, replaced or extended by files), the allow-lists and the revocation list.

use super::list;
use super::{Config, ConfigError};
use crate::attest::{self, AppleEnvironment, Requirement, android::AllowedApp};
use std::path::Path;

impl Config {
    /// The attestation policy, reading every file it names.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting (and file) that is unusable.
    pub fn attestation(&self) -> Result<attest::Policy, ConfigError> {
        let bad = |m: String| ConfigError::new(m);
        let require = match self.require_attestation.as_str() {
            "none" => Requirement::None,
            "hardware" => Requirement::Hardware,
            other => {
                return Err(bad(format!(
                    "require_attestation {other:?} must be none or hardware"
                )));
            }
        };
        let mut policy = attest::Policy {
            require,
            ..attest::Policy::default()
        };
        if let Some(path) = &self.android_attestation_roots_file {
            policy.android.roots = roots("android_attestation_roots_file", path)?;
        }
        if let Some(path) = &self.android_attestation_extra_roots_file {
            policy
                .android
                .roots
                .extend(roots("android_attestation_extra_roots_file", path)?);
        }
        if let Some(path) = &self.android_attestation_revocations_file {
            let text = read("android_attestation_revocations_file", path)?;
            policy.android.revoked =
                attest::Revocations::parse_status_json(&text).map_err(|e| {
                    bad(format!(
                        "android_attestation_revocations_file {}: {e}",
                        path.display()
                    ))
                })?;
        }
        policy.android.apps = list(self.android_attestation_apps.as_deref())
            .map(|entry| {
                AllowedApp::parse(entry).map_err(|e| bad(format!("android_attestation_apps: {e}")))
            })
            .collect::<Result<_, _>>()?;
        if let Some(path) = &self.apple_app_attest_roots_file {
            policy.apple.roots = roots("apple_app_attest_roots_file", path)?;
        }
        policy.apple.app_ids = list(self.apple_app_attest_app_ids.as_deref())
            .map(|id| match id.split_once('.') {
                Some((team, bundle)) if !team.is_empty() && !bundle.is_empty() => Ok(id.to_owned()),
                _ => Err(bad(format!(
                    "apple_app_attest_app_ids: {id:?} must be TEAMID.bundle.id"
                ))),
            })
            .collect::<Result<_, _>>()?;
        policy.apple.environment = match self.apple_app_attest_environment.as_str() {
            "production" => AppleEnvironment::Production,
            "development" => AppleEnvironment::Development,
            other => {
                return Err(bad(format!(
                    "apple_app_attest_environment {other:?} must be production or development"
                )));
            }
        };
        // Without an allow-list a hardware verdict only says "some app's key is in hardware": any app
        // on any phone could enroll, so requiring hardware must name the apps.
        if require == Requirement::Hardware
            && policy.android.apps.is_empty()
            && policy.apple.app_ids.is_empty()
        {
            return Err(bad(
                "require_attestation = hardware needs android_attestation_apps or \
                 apple_app_attest_app_ids (which apps may attest)"
                    .into(),
            ));
        }
        Ok(policy)
    }
}

fn read(setting: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("{setting} {}: {e}", path.display())))
}

fn roots(
    setting: &str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    attest::parse_pem_roots(&read(setting, path)?)
        .map_err(|e| ConfigError::new(format!("{setting} {}: {e}", path.display())))
}
