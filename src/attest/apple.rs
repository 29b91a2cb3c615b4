//! Apple App Attest: the attestation object (CBOR, WebAuthn-shaped, format `apple-appattest`) whose
//! credential certificate binds the App Attest key and the enrollment payload to a genuine instance of
//! the configured app, following Apple's "Validating apps that connect to your server" steps.

use super::{Assurance, Binding, Refusal, Verdict, chain};
use ciborium::Value;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

const FIELD: &str = "apple.attestation_object";
/// The credential certificate's nonce extension.
const NONCE_OID: &str = "1.2.840.113635.100.8.2";
/// `authData` flag: attested credential data present.
const FLAG_AT: u8 = 0x40;

/// Which App Attest environment the app is built for (its `com.apple.developer.devicecheck.appattest-environment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppleEnvironment {
    /// AAGUID `appattest` followed by seven zero bytes.
    #[default]
    Production,
    /// AAGUID `appattestdevelop`.
    Development,
}

impl AppleEnvironment {
    /// The AAGUID Apple writes for this environment.
    pub fn aaguid(self) -> [u8; 16] {
        match self {
            Self::Production => *b"appattest\0\0\0\0\0\0\0",
            Self::Development => *b"appattestdevelop",
        }
    }

    /// Its configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Development => "development",
        }
    }
}

/// How App Attest objects are verified.
#[derive(Debug, Clone)]
pub struct ApplePolicy {
    /// Trusted roots (DER): Apple's App Attestation Root CA unless replaced.
    pub roots: Vec<CertificateDer<'static>>,
    /// App ids `TEAMID.bundle.id` allowed to attest; none configured refuses every App Attest object.
    pub app_ids: Vec<String>,
    /// The environment the AAGUID must name.
    pub environment: AppleEnvironment,
}

/// The authenticator data of an attestation object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthData {
    /// SHA-256 of the app id.
    pub rp_id_hash: [u8; 32],
    /// Flags byte.
    pub flags: u8,
    /// Signature counter (0 in an attestation).
    pub counter: u32,
    /// Environment marker.
    pub aaguid: [u8; 16],
    /// The credential id: the key id.
    pub credential_id: Vec<u8>,
}

impl AuthData {
    /// Parses `rpIdHash(32) ‖ flags(1) ‖ counter(4, big-endian) ‖ aaguid(16) ‖ idLength(2, big-endian)
    /// ‖ credentialId ‖ credentialPublicKey (COSE)`.
    ///
    /// # Errors
    /// A reason when it is too short or lacks attested credential data.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let fixed = bytes.get(..55).ok_or("authData: shorter than 55 bytes")?;
        let (rp, rest) = fixed.split_at(32);
        let flags = rest[0];
        if flags & FLAG_AT == 0 {
            return Err("authData: attested credential data flag not set".into());
        }
        let counter = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let mut aaguid = [0u8; 16];
        aaguid.copy_from_slice(&rest[5..21]);
        let id_len = usize::from(u16::from_be_bytes([rest[21], rest[22]]));
        let credential_id = bytes
            .get(55..55 + id_len)
            .ok_or("authData: credential id runs past the end")?
            .to_vec();
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(rp);
        Ok(Self {
            rp_id_hash,
            flags,
            counter,
            aaguid,
            credential_id,
        })
    }
}

/// The parts of an attestation object: its `x5c` certificates and raw `authData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// DER certificates, credential certificate first.
    pub x5c: Vec<Vec<u8>>,
    /// The authenticator data, as signed over.
    pub auth_data: Vec<u8>,
}

impl Object {
    /// Parses the CBOR map `{fmt: "apple-appattest", attStmt: {x5c: [bytes…], receipt: bytes},
    /// authData: bytes}`.
    ///
    /// # Errors
    /// [`Refusal::Malformed`] with the path of the offending part.
    pub fn parse(bytes: &[u8]) -> Result<Self, Refusal> {
        let value: Value = ciborium::from_reader(bytes)
            .map_err(|e| Refusal::malformed(FIELD, format!("not CBOR: {e}")))?;
        let map = value
            .as_map()
            .ok_or_else(|| Refusal::malformed(FIELD, "not a CBOR map"))?;
        let fmt = entry(map, "fmt").and_then(Value::as_text);
        if fmt != Some("apple-appattest") {
            return Err(Refusal::malformed(
                format!("{FIELD}.fmt"),
                "must be \"apple-appattest\"",
            ));
        }
        let statement = entry(map, "attStmt")
            .and_then(Value::as_map)
            .ok_or_else(|| Refusal::malformed(format!("{FIELD}.attStmt"), "must be a map"))?;
        let x5c = entry(statement, "x5c")
            .and_then(Value::as_array)
            .ok_or_else(|| Refusal::malformed(format!("{FIELD}.attStmt.x5c"), "must be an array"))?
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.as_bytes().cloned().ok_or_else(|| {
                    Refusal::malformed(format!("{FIELD}.attStmt.x5c[{i}]"), "must be bytes")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let auth_data = entry(map, "authData")
            .and_then(Value::as_bytes)
            .ok_or_else(|| Refusal::malformed(format!("{FIELD}.authData"), "must be bytes"))?
            .clone();
        Ok(Self { x5c, auth_data })
    }
}

fn entry<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

impl Default for ApplePolicy {
    /// Apple's root, no app ids (App Attest refused as not configured), production.
    fn default() -> Self {
        Self {
            roots: super::apple_root(),
            app_ids: Vec::new(),
            environment: AppleEnvironment::Production,
        }
    }
}

impl ApplePolicy {
    /// Verifies an attestation object and its key id for an enrollment at `now_secs`.
    ///
    /// # Errors
    /// A [`Refusal`] naming the first check that failed.
    pub fn verify(
        &self,
        object: &[u8],
        key_id: &[u8],
        binding: &Binding<'_>,
        now_secs: u64,
    ) -> Result<Verdict, Refusal> {
        if self.app_ids.is_empty() {
            return Err(Refusal::NotConfigured);
        }
        if key_id.len() != 32 {
            return Err(Refusal::malformed("apple.key_id", "must be 32 bytes"));
        }
        let parsed = Object::parse(object)?;
        let x5c_field = format!("{FIELD}.attStmt.x5c");
        let certs = chain::parse(&parsed.x5c, &x5c_field)?;
        let auth = AuthData::parse(&parsed.auth_data)
            .map_err(|why| Refusal::malformed(format!("{FIELD}.authData"), why))?;
        let nonce = nonce(&certs[0]).map_err(|why| {
            Refusal::malformed(format!("{x5c_field}[0]"), format!("nonce extension: {why}"))
        })?;
        chain::verify(&parsed.x5c, &certs, &self.roots, now_secs)?;
        let mut signed = parsed.auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(binding.client_data));
        if nonce[..] != Sha256::digest(&signed)[..] {
            return Err(Refusal::NonceMismatch);
        }
        let key_hash = Sha256::digest(&certs[0].public_key().subject_public_key.data);
        if key_hash[..] != *key_id || auth.credential_id.as_slice() != key_id {
            return Err(Refusal::KeyIdMismatch);
        }
        let app = self
            .app_ids
            .iter()
            .find(|id| Sha256::digest(id.as_bytes())[..] == auth.rp_id_hash)
            .ok_or(Refusal::RpIdMismatch)?;
        if app.split_once('.').map(|(_, bundle)| bundle) != Some(binding.app_id) {
            return Err(Refusal::AppNotAllowed(format!(
                "attested app {app:?} is not app_id {:?}",
                binding.app_id
            )));
        }
        if auth.counter != 0 {
            return Err(Refusal::CounterNotZero);
        }
        if auth.aaguid != self.environment.aaguid() {
            return Err(Refusal::AaguidMismatch(self.environment.name()));
        }
        Ok(Verdict {
            assurance: Assurance::AppleAppAttest,
            app: app.clone(),
            boot: None,
        })
    }
}

/// The credential certificate's nonce: `SEQUENCE { [1] EXPLICIT OCTET STRING }`.
fn nonce(cert: &x509_parser::prelude::X509Certificate<'_>) -> Result<Vec<u8>, String> {
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == NONCE_OID)
        .ok_or("missing")?;
    let top = super::der::only(ext.value)?;
    let fields = super::der::sequence(&top, "nonce")?;
    let [tagged] = fields.as_slice() else {
        return Err("expected one field".into());
    };
    match super::der::explicit(tagged) {
        Some((1, content)) => {
            Ok(super::der::octets(&super::der::only(content)?, "nonce")?.to_vec())
        }
        _ => Err("expected [1] EXPLICIT OCTET STRING".into()),
    }
}
