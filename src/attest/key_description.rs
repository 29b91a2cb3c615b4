//! The Android key description (extension OID 1.3.6.1.4.1.11129.2.1.17 of the attested key's
//! certificate), read by its published ASN.1 schema (attestation versions 3 to 400):
//!
//! ```text
//! KeyDescription ::= SEQUENCE {
//!   attestationVersion INTEGER, attestationSecurityLevel SecurityLevel,
//!   keyMintVersion INTEGER, keyMintSecurityLevel SecurityLevel,
//!   attestationChallenge OCTET STRING, uniqueId OCTET STRING,
//!   softwareEnforced AuthorizationList, hardwareEnforced AuthorizationList }
//! SecurityLevel ::= ENUMERATED { Software (0), TrustedEnvironment (1), StrongBox (2) }
//! AuthorizationList ::= SEQUENCE { ..., rootOfTrust [704] EXPLICIT RootOfTrust OPTIONAL, ...,
//!   attestationApplicationId [709] EXPLICIT OCTET STRING OPTIONAL, ... }
//! RootOfTrust ::= SEQUENCE { verifiedBootKey OCTET STRING, deviceLocked BOOLEAN,
//!   verifiedBootState ENUMERATED { Verified (0), SelfSigned (1), Unverified (2), Failed (3) }, ... }
//! AttestationApplicationId ::= SEQUENCE {
//!   packageInfos SET OF SEQUENCE { packageName OCTET STRING, version INTEGER },
//!   signatureDigests SET OF OCTET STRING }
//! ```
//!
//! Only the fields the relay checks or records are kept; the other authorization tags are skipped (the
//! list grows with every Android release).

use super::BootState;
use super::der;
use x509_parser::asn1_rs::Tag;

/// The extension's OID, dotted.
pub const OID: &str = "1.3.6.1.4.1.11129.2.1.17";

/// Where a key lives, as Keystore reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecurityLevel {
    /// Keystore in Android's userspace.
    Software,
    /// The Trusted Execution Environment.
    TrustedEnvironment,
    /// StrongBox, a separate secure element.
    StrongBox,
}

/// The attested app: its package names and the SHA-256 digests of its signing certificates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplicationId {
    /// Package names (more than one for apps sharing a user id).
    pub packages: Vec<String>,
    /// SHA-256 of each signing certificate.
    pub signature_digests: Vec<Vec<u8>>,
}

/// The parts of a key description the relay uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    /// The attestation schema version.
    pub attestation_version: u32,
    /// Where the attestation was made.
    pub attestation_security_level: SecurityLevel,
    /// Where the key lives.
    pub keymint_security_level: SecurityLevel,
    /// The challenge the app passed to `setAttestationChallenge`.
    pub challenge: Vec<u8>,
    /// The attested app, from either authorization list.
    pub application: Option<ApplicationId>,
    /// The verified-boot state, from either authorization list (hardware first).
    pub boot: Option<BootState>,
    /// Whether the bootloader is locked.
    pub device_locked: Option<bool>,
    /// `origin` [702]: 0 GENERATED inside Keystore; anything else (IMPORTED, DERIVED…) existed outside.
    pub origin: Option<u32>,
    /// `purpose` [1]: the key's allowed purposes (2 is SIGN).
    pub purposes: Vec<u32>,
}

const PURPOSE: u32 = 1;
const ORIGIN: u32 = 702;
const ROOT_OF_TRUST: u32 = 704;
const APPLICATION_ID: u32 = 709;

/// Parses the extension's value (the DER of `KeyDescription`).
///
/// # Errors
/// A reason when the bytes do not follow the schema.
pub fn parse(value: &[u8]) -> der::Result<KeyDescription> {
    let top = der::only(value)?;
    let fields = der::sequence(&top, "KeyDescription")?;
    let [
        version,
        att_level,
        _keymint_version,
        km_level,
        challenge,
        _unique,
        software,
        hardware,
        ..,
    ] = fields.as_slice()
    else {
        return Err("KeyDescription: fewer than 8 fields".into());
    };
    let hardware = authorizations(hardware, "hardwareEnforced")?;
    let software = authorizations(software, "softwareEnforced")?;
    let attestation_security_level = level(att_level, "attestationSecurityLevel")?;
    // Android's userspace fills softwareEnforced: on a hardware attestation only the secure side's
    // lists say anything about boot state and key origin.
    let hardware_level = attestation_security_level != SecurityLevel::Software;
    let root = pick(hardware_level, hardware.root, software.root);
    let origin = pick(hardware_level, hardware.origin, software.origin);
    let mut purposes = hardware.purposes;
    if !hardware_level {
        purposes.extend(software.purposes);
    }
    Ok(KeyDescription {
        attestation_version: der::integer(version, "attestationVersion")?,
        attestation_security_level,
        keymint_security_level: level(km_level, "keyMintSecurityLevel")?,
        challenge: der::octets(challenge, "attestationChallenge")?.to_vec(),
        application: software.application.or(hardware.application),
        boot: root.map(|r| r.0),
        device_locked: root.map(|r| r.1),
        origin,
        purposes,
    })
}

/// The hardware list's value, or on a software attestation either list's.
fn pick<T>(hardware_level: bool, hardware: Option<T>, software: Option<T>) -> Option<T> {
    if hardware_level {
        hardware
    } else {
        hardware.or(software)
    }
}

fn level(any: &x509_parser::asn1_rs::Any<'_>, what: &str) -> der::Result<SecurityLevel> {
    match der::enumerated(any, what)? {
        0 => Ok(SecurityLevel::Software),
        1 => Ok(SecurityLevel::TrustedEnvironment),
        2 => Ok(SecurityLevel::StrongBox),
        n => Err(format!("{what}: unknown level {n}")),
    }
}

#[derive(Default)]
struct Authorizations {
    root: Option<(BootState, bool)>,
    application: Option<ApplicationId>,
    origin: Option<u32>,
    purposes: Vec<u32>,
}

fn authorizations(any: &x509_parser::asn1_rs::Any<'_>, what: &str) -> der::Result<Authorizations> {
    let mut out = Authorizations::default();
    for entry in der::sequence(any, what)? {
        let Some((tag, content)) = der::explicit(&entry) else {
            return Err(format!("{what}: an entry is not [n] EXPLICIT"));
        };
        // A repeated tag could smuggle a second root of trust or app id past a reader that takes the
        // first; the order of the others is not checked (some Keymaster versions did not sort them).
        let repeated = (tag == ROOT_OF_TRUST && out.root.is_some())
            || (tag == APPLICATION_ID && out.application.is_some())
            || (tag == ORIGIN && out.origin.is_some())
            || (tag == PURPOSE && !out.purposes.is_empty());
        if repeated {
            return Err(format!("{what}: [{tag}] appears twice"));
        }
        match tag {
            ROOT_OF_TRUST => out.root = Some(root_of_trust(&der::only(content)?)?),
            ORIGIN => out.origin = Some(der::integer(&der::only(content)?, "origin")?),
            PURPOSE => {
                for p in der::children(&der::only(content)?, Tag::Set, "purpose")? {
                    out.purposes.push(der::integer(&p, "purpose")?);
                }
            }
            APPLICATION_ID => {
                let octets = der::octets(&der::only(content)?, "attestationApplicationId")?;
                out.application = Some(application_id(octets)?);
            }
            _ => {
                der::only(content)?;
            }
        }
    }
    Ok(out)
}

fn root_of_trust(any: &x509_parser::asn1_rs::Any<'_>) -> der::Result<(BootState, bool)> {
    let fields = der::sequence(any, "rootOfTrust")?;
    let [boot_key, locked, state, ..] = fields.as_slice() else {
        return Err("rootOfTrust: fewer than 3 fields".into());
    };
    der::octets(boot_key, "rootOfTrust.verifiedBootKey")?;
    let locked = der::boolean(locked, "rootOfTrust.deviceLocked")?;
    let state = match der::enumerated(state, "rootOfTrust.verifiedBootState")? {
        0 => BootState::Verified,
        1 => BootState::SelfSigned,
        2 => BootState::Unverified,
        3 => BootState::Failed,
        n => return Err(format!("rootOfTrust.verifiedBootState: unknown state {n}")),
    };
    Ok((state, locked))
}

fn application_id(value: &[u8]) -> der::Result<ApplicationId> {
    let top = der::only(value)?;
    let fields = der::sequence(&top, "attestationApplicationId")?;
    let [infos, digests] = fields.as_slice() else {
        return Err("attestationApplicationId: expected 2 fields".into());
    };
    let mut out = ApplicationId::default();
    for info in der::children(infos, Tag::Set, "packageInfos")? {
        let parts = der::sequence(&info, "packageInfo")?;
        let [name, version] = parts.as_slice() else {
            return Err("packageInfo: expected 2 fields".into());
        };
        let name = der::octets(name, "packageInfo.packageName")?;
        // Version codes are 64-bit on recent Android; only their shape is checked.
        if version.header.tag() != Tag::Integer {
            return Err("packageInfo.version: expected INTEGER".into());
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| "packageInfo.packageName: not UTF-8".to_owned())?;
        out.packages.push(name.to_owned());
    }
    for digest in der::children(digests, Tag::Set, "signatureDigests")? {
        out.signature_digests
            .push(der::octets(&digest, "signatureDigest")?.to_vec());
    }
    Ok(out)
}
