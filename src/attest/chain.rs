//! Certificate chains of an attestation: parsed with `x509-parser` (for the extensions and serials),
//! validated with `rustls-webpki` to the configured roots (signatures, issuers, CA constraints, time).

use super::Refusal;
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most certificates in an attestation chain (Android chains have 3 to 5).
pub const MAX_CHAIN: usize = 8;

/// Parses every certificate of `chain`; `field` names the list inside `payload.attestation`.
///
/// # Errors
/// [`Refusal::Malformed`] naming the certificate.
pub fn parse<'a>(chain: &'a [Vec<u8>], field: &str) -> Result<Vec<X509Certificate<'a>>, Refusal> {
    if chain.is_empty() {
        return Err(Refusal::malformed(field, "must not be empty"));
    }
    if chain.len() > MAX_CHAIN {
        return Err(Refusal::malformed(
            field,
            format!("must hold at most {MAX_CHAIN} certificates"),
        ));
    }
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| match X509Certificate::from_der(der) {
            Ok(([], cert)) => Ok(cert),
            Ok(_) => Err(Refusal::malformed(
                format!("{field}[{i}]"),
                "trailing bytes after the certificate",
            )),
            Err(e) => Err(Refusal::malformed(
                format!("{field}[{i}]"),
                format!("not a DER X.509 certificate: {e}"),
            )),
        })
        .collect()
}

/// Validates `chain` (leaf first, DER) up to one of `roots` at `now_secs`.
///
/// # Errors
/// [`Refusal::Expired`] with the first certificate outside its validity, or [`Refusal::Untrusted`].
pub fn verify(
    chain: &[Vec<u8>],
    parsed: &[X509Certificate<'_>],
    roots: &[CertificateDer<'static>],
    now_secs: u64,
) -> Result<(), Refusal> {
    let now = i64::try_from(now_secs).unwrap_or(i64::MAX);
    // Phones send the root too, sometimes an older issue of it (Google re-issued its RSA root with the
    // same key; the 2016 one has expired). A trailing certificate with a root's key is the anchor
    // itself: trusted by key, so neither its dates nor its signature are checked.
    let root_keys: Vec<Vec<u8>> = roots
        .iter()
        .filter_map(|r| X509Certificate::from_der(r).ok())
        .map(|(_, c)| c.public_key().raw.to_vec())
        .collect();
    let mut used = parsed.len();
    while used > 1
        && root_keys
            .iter()
            .any(|k| k.as_slice() == parsed[used - 1].public_key().raw)
    {
        used -= 1;
    }
    let (chain, parsed) = (&chain[..used], &parsed[..used]);
    if let Some(i) = parsed.iter().position(|c| {
        let v = c.validity();
        now < v.not_before.timestamp() || now > v.not_after.timestamp()
    }) {
        return Err(Refusal::Expired(i));
    }
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    let leaf = CertificateDer::from(chain[0].as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| Refusal::Untrusted(format!("leaf: {e}")))?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_secs)),
        AnyPurpose,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            Refusal::Expired(0)
        }
        other => Refusal::Untrusted(other.to_string()),
    })
}

/// Attestation certificates assert no TLS purpose; an extended key usage, if any, is not ours to check.
struct AnyPurpose;

impl webpki::ExtendedKeyUsageValidator for AnyPurpose {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// A certificate's serial as Google's status list writes it: lower-case hex, no leading zeros.
pub fn serial_hex(cert: &X509Certificate<'_>) -> String {
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}
