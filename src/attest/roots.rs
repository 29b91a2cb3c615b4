//! The built-in attestation roots and Google's attestation status list.
//!
//! Roots as published: Google's hardware attestation roots (developer.android.com, "Verify hardware-backed
//! key pairs with key attestation", the `roots` list) and Apple's App Attestation Root CA
//! (apple.com/certificateauthority). A configured file replaces or extends them (see `config`).

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashSet;

const GOOGLE_ROOTS: &str = include_str!("roots/google.pem");
const APPLE_ROOT: &str = include_str!("roots/apple-app-attestation-root.pem");

/// Google's hardware attestation roots.
pub fn google_roots() -> Vec<CertificateDer<'static>> {
    parse_pem_roots(GOOGLE_ROOTS).unwrap_or_default()
}

/// Apple's App Attestation Root CA.
pub fn apple_root() -> Vec<CertificateDer<'static>> {
    parse_pem_roots(APPLE_ROOT).unwrap_or_default()
}

/// Every certificate of a PEM bundle, each checked to be a usable trust anchor.
///
/// # Errors
/// A reason naming the certificate that is not, or an empty bundle.
pub fn parse_pem_roots(text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    for (i, c) in certs.iter().enumerate() {
        webpki::anchor_from_trusted_cert(c)
            .map_err(|e| format!("certificate {i} cannot be a root: {e}"))?;
    }
    Ok(certs)
}

/// Revoked or suspended attestation certificates, by serial (lower-case hex, no leading zeros).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations(HashSet<String>);

impl Revocations {
    /// Parses Google's status list: `{"entries": {"<serial hex>": {"status": "REVOKED" | "SUSPENDED",
    /// "reason": "…"}, …}}`. Every listed serial is refused, whatever its status.
    ///
    /// # Errors
    /// A reason when the JSON does not have that shape.
    pub fn parse_status_json(text: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct List {
            entries: std::collections::HashMap<String, serde::de::IgnoredAny>,
        }
        let list: List =
            serde_json::from_str(text).map_err(|e| format!("not a status list: {e}"))?;
        Ok(Self(
            list.entries.into_keys().map(|s| normalize(&s)).collect(),
        ))
    }

    /// Revokes these serials (hex).
    pub fn of<'a>(serials: impl IntoIterator<Item = &'a str>) -> Self {
        Self(serials.into_iter().map(normalize).collect())
    }

    /// True when `serial` (as [`super::chain::serial_hex`] writes it) is listed.
    pub fn contains(&self, serial: &str) -> bool {
        self.0.contains(serial)
    }

    /// How many serials are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn normalize(serial: &str) -> String {
    let lower = serial.trim().to_ascii_lowercase();
    let trimmed = lower.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_roots_parse() {
        assert!(google_roots().len() >= 2, "google roots");
        assert_eq!(apple_root().len(), 1);
    }

    #[test]
    fn status_list_serials_are_normalized() {
        let list = Revocations::parse_status_json(
            r#"{"entries":{"00C35747A084470C3135AEEFE2B8D40CD6":{"status":"REVOKED","reason":"KEY_COMPROMISE"},"6681152659205225093":{"status":"SUSPENDED"}}}"#,
        )
        .expect("parses");
        assert!(list.contains("c35747a084470c3135aeefe2b8d40cd6"));
        assert!(list.contains("6681152659205225093"));
        assert!(Revocations::parse_status_json("[]").is_err());
    }
}
