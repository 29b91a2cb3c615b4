//! Android Key Attestation: the device key's certificate chain, up to a configured root, whose leaf
//! carries the key description binding the key to the enrollment ticket and to the app.

use super::key_description::{self, SecurityLevel};
use super::roots::Revocations;
use super::{Assurance, Binding, Refusal, Verdict, chain};
use crate::auth::{KeyAlgorithm, PublicKey};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::X509Certificate;

const FIELD: &str = "android.certificate_chain";
/// KeyMint `KeyOrigin::GENERATED`.
const ORIGIN_GENERATED: u32 = 0;
/// KeyMint `KeyPurpose::SIGN`.
const PURPOSE_SIGN: u32 = 2;
const ED25519_OID: &str = "1.3.101.112";

/// An app allowed to attest: its package and, optionally, the SHA-256 of its signing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedApp {
    /// Android package name.
    pub package: String,
    /// SHA-256 of the signing certificate; any signer when `None`.
    pub signer: Option<[u8; 32]>,
}

impl AllowedApp {
    /// Parses `package` or `package:SHA256HEX` (colons between hex pairs allowed, as `apksigner` and
    /// `keytool` print them).
    ///
    /// # Errors
    /// A reason when the digest is not 32 bytes of hex or the package is empty.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let (package, digest) = match entry.split_once(':') {
            Some((p, d)) => (p, Some(d)),
            None => (entry, None),
        };
        if package.is_empty() {
            return Err(format!("{entry:?}: empty package name"));
        }
        let signer = digest
            .map(|d| {
                let hex: String = d.chars().filter(|c| *c != ':').collect();
                let bytes = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(hex.as_bytes())
                    .map_err(|_| format!("{entry:?}: signer digest is not hex"))?;
                <[u8; 32]>::try_from(bytes)
                    .map_err(|_| format!("{entry:?}: signer digest must be 32 bytes (SHA-256)"))
            })
            .transpose()?;
        Ok(Self {
            package: package.to_owned(),
            signer,
        })
    }
}

/// How Android attestations are verified.
#[derive(Debug, Clone)]
pub struct AndroidPolicy {
    /// Trusted roots (DER).
    pub roots: Vec<CertificateDer<'static>>,
    /// Apps allowed to attest; when empty, the attested package only has to be the enrolling `app_id`.
    pub apps: Vec<AllowedApp>,
    /// Revoked or suspended certificate serials.
    pub revoked: Revocations,
}

impl Default for AndroidPolicy {
    /// Google's roots, no allow-list, nothing revoked.
    fn default() -> Self {
        Self {
            roots: super::google_roots(),
            apps: Vec::new(),
            revoked: Revocations::default(),
        }
    }
}

impl AndroidPolicy {
    /// Verifies a chain (leaf first) for an enrollment at `now_secs`.
    ///
    /// # Errors
    /// A [`Refusal`] naming the first check that failed.
    pub fn verify(
        &self,
        der_chain: &[Vec<u8>],
        binding: &Binding<'_>,
        now_secs: u64,
    ) -> Result<Verdict, Refusal> {
        let parsed = chain::parse(der_chain, FIELD)?;
        let leaf = &parsed[0];
        let extension = leaf
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == key_description::OID)
            .ok_or_else(|| {
                Refusal::malformed(format!("{FIELD}[0]"), "has no key description extension")
            })?;
        let description = key_description::parse(extension.value).map_err(|why| {
            Refusal::malformed(format!("{FIELD}[0]"), format!("key description: {why}"))
        })?;
        chain::verify(der_chain, &parsed, &self.roots, now_secs)?;
        if let Some(i) = parsed
            .iter()
            .position(|c| self.revoked.contains(&chain::serial_hex(c)))
        {
            return Err(Refusal::Revoked(i));
        }
        if leaf_key(leaf, binding.key.algorithm()).as_ref() != Some(binding.key) {
            return Err(Refusal::KeyMismatch);
        }
        if description.challenge[..] != Sha256::digest(binding.ticket.as_bytes())[..] {
            return Err(Refusal::ChallengeMismatch);
        }
        // An imported key existed outside the phone before Keystore held it: no better than software.
        if description.origin != Some(ORIGIN_GENERATED) {
            return Err(Refusal::KeyNotGenerated);
        }
        if !description.purposes.contains(&PURPOSE_SIGN) {
            return Err(Refusal::KeyNotForSigning);
        }
        let app = self.allowed_app(description.application.as_ref(), binding.app_id)?;
        let level = description
            .attestation_security_level
            .min(description.keymint_security_level);
        Ok(Verdict {
            assurance: match level {
                SecurityLevel::Software => Assurance::Software,
                SecurityLevel::TrustedEnvironment => Assurance::AndroidTee,
                SecurityLevel::StrongBox => Assurance::AndroidStrongBox,
            },
            app,
            boot: description.boot,
        })
    }

    /// The attested package that is the enrolling app and on the allow-list.
    fn allowed_app(
        &self,
        application: Option<&key_description::ApplicationId>,
        app_id: &str,
    ) -> Result<String, Refusal> {
        let Some(application) = application else {
            return Err(Refusal::AppNotAllowed(
                "the key description has no attestation application id".into(),
            ));
        };
        if !application.packages.iter().any(|p| p == app_id) {
            return Err(Refusal::AppNotAllowed(format!(
                "attested packages {:?} do not include app_id {app_id:?}",
                application.packages
            )));
        }
        if self.apps.is_empty() {
            return Ok(app_id.to_owned());
        }
        let allowed = self.apps.iter().any(|a| {
            a.package == app_id
                && a.signer.is_none_or(|d| {
                    application
                        .signature_digests
                        .iter()
                        .any(|s| s.as_slice() == d.as_slice())
                })
        });
        if allowed {
            Ok(app_id.to_owned())
        } else {
            Err(Refusal::AppNotAllowed(format!(
                "{app_id:?} (with its signing certificate) is not on android_attestation_apps"
            )))
        }
    }
}

/// The leaf certificate's key, read as the enrolled key's algorithm.
fn leaf_key(leaf: &X509Certificate<'_>, algorithm: KeyAlgorithm) -> Option<PublicKey> {
    let spki = leaf.public_key();
    match algorithm {
        KeyAlgorithm::EcdsaP256 => PublicKey::parse(algorithm, spki.raw).ok(),
        KeyAlgorithm::Ed25519 if spki.algorithm.algorithm.to_id_string() == ED25519_OID => {
            PublicKey::parse(algorithm, &spki.subject_public_key.data).ok()
        }
        KeyAlgorithm::Ed25519 => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_entries_take_an_optional_signer_digest() {
        let plain = AllowedApp::parse("com.example.approve").expect("valid");
        assert_eq!(plain.signer, None);
        let hex = "AB:".repeat(31) + "AB";
        let signed = AllowedApp::parse(&format!("com.example.approve:{hex}")).expect("valid");
        assert_eq!(signed.signer, Some([0xab; 32]));
        assert!(AllowedApp::parse("com.example:abcd").is_err());
        assert!(AllowedApp::parse(":").is_err());
    }
}
