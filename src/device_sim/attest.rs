//! Software-made attestations under a test root, in the real structures: an Android Key Attestation
//! chain (leaf with the key description extension, encoded by its published ASN.1 schema) and an Apple
//! App Attest object (CBOR, `apple-appattest`). What a phone's secure hardware would produce, made with
//! `rcgen` and `yasna`, so the simulator, the walkthrough and the tests exercise the whole path. Never
//! trusted by a relay unless its root is configured.

use crate::pb;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SubjectPublicKeyInfo,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use time::OffsetDateTime;

/// The key description extension's OID, as `rcgen` takes it.
const KEY_DESCRIPTION: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 1, 17];
/// Apple's credential-certificate nonce extension.
const APPLE_NONCE: &[u64] = &[1, 2, 840, 113635, 100, 8, 2];

/// A test root and its key.
pub struct TestRoot {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    key_pem: String,
}

impl TestRoot {
    /// A fresh root named `name`.
    ///
    /// # Errors
    /// When `rcgen` cannot make it.
    pub fn generate(name: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let params = ca_params(name, None);
        let pem = params.self_signed(&key)?.pem();
        Ok(Self {
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// An older, expired issue of this root (same name and key), as phones sometimes send at the end of
    /// their chain.
    ///
    /// # Errors
    /// When `rcgen` cannot make it.
    pub fn expired_issue(&self, name: &str) -> Result<Vec<u8>, rcgen::Error> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        let mut params = ca_params(
            name,
            Some(OffsetDateTime::now_utc() - time::Duration::days(30)),
        );
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(3000);
        Ok(params.self_signed(&key)?.der().to_vec())
    }

    /// The root certificate, PEM (what the relay's `*_roots_file` takes).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Loads `root.pem` and `root-key.pem` from `dir`, creating them first if absent.
    ///
    /// # Errors
    /// When the files cannot be read, written or parsed.
    pub fn in_dir(dir: &Path) -> anyhow::Result<Self> {
        let (cert_path, key_path) = (dir.join("root.pem"), dir.join("root-key.pem"));
        if !cert_path.exists() {
            std::fs::create_dir_all(dir)?;
            let key = KeyPair::generate()?;
            let params = ca_params("approval-relay test attestation root", None);
            std::fs::write(&cert_path, params.self_signed(&key)?.pem())?;
            std::fs::write(&key_path, key.serialize_pem())?;
        }
        let pem = std::fs::read_to_string(&cert_path)?;
        let key_pem = std::fs::read_to_string(&key_path)?;
        let issuer = Issuer::from_ca_cert_pem(&pem, KeyPair::from_pem(&key_pem)?)?;
        Ok(Self {
            issuer,
            pem,
            key_pem,
        })
    }

    /// An intermediate CA under this root, valid until `not_after`.
    fn intermediate(
        &self,
        not_after: OffsetDateTime,
    ) -> Result<(Vec<u8>, Issuer<'static, KeyPair>), rcgen::Error> {
        let key = KeyPair::generate()?;
        let params = ca_params(
            "approval-relay test attestation intermediate",
            Some(not_after),
        );
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.der().to_vec(), Issuer::new(params, key)))
    }
}

fn ca_params(name: &str, not_after: Option<OffsetDateTime>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after =
        not_after.unwrap_or_else(|| OffsetDateTime::now_utc() + time::Duration::days(3650));
    params
}

fn leaf_params(name: &str, serial: u64, extension: CustomExtension) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.serial_number = Some(serial.into());
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(3650);
    params.custom_extensions = vec![extension];
    params
}

/// What an Android key description says; defaults describe a TEE key of `app_id` on a locked,
/// verified phone.
#[derive(Debug, Clone)]
pub struct AndroidSpec {
    /// The attestation challenge (the relay expects SHA-256 of the ticket).
    pub challenge: Vec<u8>,
    /// `attestationSecurityLevel`: 0 Software, 1 TrustedEnvironment, 2 StrongBox.
    pub attestation_level: u32,
    /// `keyMintSecurityLevel`.
    pub keymint_level: u32,
    /// Package names of the attestation application id.
    pub packages: Vec<String>,
    /// SHA-256 digests of its signing certificates.
    pub signature_digests: Vec<Vec<u8>>,
    /// `verifiedBootState`: 0 Verified, 1 SelfSigned, 2 Unverified, 3 Failed.
    pub boot_state: u32,
    /// The intermediate's expiry.
    pub intermediate_not_after: OffsetDateTime,
    /// The leaf's serial number.
    pub leaf_serial: u64,
    /// `origin`: 0 GENERATED, 2 IMPORTED.
    pub origin: u32,
    /// `purpose`s (2 SIGN, 3 VERIFY).
    pub purposes: Vec<u32>,
}

impl AndroidSpec {
    /// A TEE attestation of `app_id` for `ticket`.
    pub fn new(ticket: &str, app_id: &str) -> Self {
        Self {
            challenge: Sha256::digest(ticket.as_bytes()).to_vec(),
            attestation_level: 1,
            keymint_level: 1,
            packages: vec![app_id.to_owned()],
            signature_digests: vec![vec![0x5a; 32]],
            boot_state: 0,
            intermediate_not_after: OffsetDateTime::now_utc() + time::Duration::days(3650),
            leaf_serial: 1,
            origin: 0,
            purposes: vec![2, 3],
        }
    }

    /// The key description's DER, by the published schema (version 300).
    pub fn key_description(&self) -> Vec<u8> {
        let app_id = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_set_of(|w| {
                    for p in &self.packages {
                        w.next().write_sequence(|w| {
                            w.next().write_bytes(p.as_bytes());
                            w.next().write_u64(1);
                        });
                    }
                });
                w.next().write_set_of(|w| {
                    for d in &self.signature_digests {
                        w.next().write_bytes(d);
                    }
                });
            });
        });
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_u32(300);
                w.next().write_enum(i64::from(self.attestation_level));
                w.next().write_u32(300);
                w.next().write_enum(i64::from(self.keymint_level));
                w.next().write_bytes(&self.challenge);
                w.next().write_bytes(&[]);
                // softwareEnforced: creationDateTime [701], attestationApplicationId [709].
                w.next().write_sequence(|w| {
                    w.next()
                        .write_tagged(yasna::Tag::context(701), |w| w.write_u64(1_700_000_000_000));
                    w.next()
                        .write_tagged(yasna::Tag::context(709), |w| w.write_bytes(&app_id));
                });
                // hardwareEnforced: purpose [1], algorithm [2], origin [702], rootOfTrust [704],
                // osVersion [705].
                w.next().write_sequence(|w| {
                    w.next().write_tagged(yasna::Tag::context(1), |w| {
                        w.write_set_of(|w| {
                            for p in &self.purposes {
                                w.next().write_u32(*p);
                            }
                        });
                    });
                    w.next()
                        .write_tagged(yasna::Tag::context(2), |w| w.write_u32(3));
                    w.next()
                        .write_tagged(yasna::Tag::context(702), |w| w.write_u32(self.origin));
                    w.next().write_tagged(yasna::Tag::context(704), |w| {
                        w.write_sequence(|w| {
                            w.next().write_bytes(&[0x11; 32]);
                            w.next().write_bool(self.boot_state == 0);
                            w.next().write_enum(i64::from(self.boot_state));
                            w.next().write_bytes(&[0x22; 32]);
                        });
                    });
                    w.next()
                        .write_tagged(yasna::Tag::context(705), |w| w.write_u32(150_000));
                });
            });
        })
    }

    /// The chain `[leaf, intermediate]` (DER) for the device key `spki_der` under `root`.
    ///
    /// # Errors
    /// When `rcgen` cannot make it.
    pub fn chain(&self, root: &TestRoot, spki_der: &[u8]) -> Result<Vec<Vec<u8>>, rcgen::Error> {
        let (intermediate, issuer) = root.intermediate(self.intermediate_not_after)?;
        let extension = CustomExtension::from_oid_content(KEY_DESCRIPTION, self.key_description());
        let leaf = leaf_params("Android Keystore Key", self.leaf_serial, extension)
            .signed_by(&SubjectPublicKeyInfo::from_der(spki_der)?, &issuer)?;
        Ok(vec![leaf.der().to_vec(), intermediate])
    }
}

/// What an App Attest object says; defaults are a production attestation of `app_id`.
#[derive(Debug, Clone)]
pub struct AppleSpec {
    /// `TEAMID.bundle.id` the RP id hash is made of.
    pub app_id: String,
    /// The authenticator counter.
    pub counter: u32,
    /// The AAGUID.
    pub aaguid: [u8; 16],
    /// Client data the nonce covers (the enrollment payload without its attestation).
    pub client_data: Vec<u8>,
}

impl AppleSpec {
    /// A production attestation of `app_id` over `client_data`.
    pub fn new(app_id: &str, client_data: Vec<u8>) -> Self {
        Self {
            app_id: app_id.to_owned(),
            counter: 0,
            aaguid: *b"appattest\0\0\0\0\0\0\0",
            client_data,
        }
    }

    /// The attestation object (CBOR) and its key id under `root`.
    ///
    /// # Errors
    /// When `rcgen` cannot make it.
    pub fn object(&self, root: &TestRoot) -> Result<(Vec<u8>, Vec<u8>), rcgen::Error> {
        let credential = KeyPair::generate()?;
        let point = credential.public_key_raw().to_vec();
        let key_id = Sha256::digest(&point).to_vec();
        let mut auth = Sha256::digest(self.app_id.as_bytes()).to_vec();
        auth.push(0x40);
        auth.extend_from_slice(&self.counter.to_be_bytes());
        auth.extend_from_slice(&self.aaguid);
        auth.extend_from_slice(&32u16.to_be_bytes());
        auth.extend_from_slice(&key_id);
        auth.extend_from_slice(&cose_key(&point));
        let mut signed = auth.clone();
        signed.extend_from_slice(&Sha256::digest(&self.client_data));
        let nonce = Sha256::digest(&signed);
        let nonce_der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next()
                    .write_tagged(yasna::Tag::context(1), |w| w.write_bytes(&nonce));
            });
        });
        let (intermediate, issuer) =
            root.intermediate(OffsetDateTime::now_utc() + time::Duration::days(3650))?;
        let extension = CustomExtension::from_oid_content(APPLE_NONCE, nonce_der);
        let leaf = leaf_params(&data_encoding::HEXLOWER.encode(&key_id), 7, extension)
            .signed_by(&credential, &issuer)?;
        let text = |s: &str| ciborium::Value::Text(s.to_owned());
        let object = ciborium::Value::Map(vec![
            (text("fmt"), text("apple-appattest")),
            (
                text("attStmt"),
                ciborium::Value::Map(vec![
                    (
                        text("x5c"),
                        ciborium::Value::Array(vec![
                            ciborium::Value::Bytes(leaf.der().to_vec()),
                            ciborium::Value::Bytes(intermediate),
                        ]),
                    ),
                    (text("receipt"), ciborium::Value::Bytes(vec![0x30, 0x00])),
                ]),
            ),
            (text("authData"), ciborium::Value::Bytes(auth)),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&object, &mut out)
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok((out, key_id))
    }
}

/// A COSE EC2 P-256 key (RFC 9053) for an uncompressed point.
fn cose_key(point: &[u8]) -> Vec<u8> {
    use ciborium::Value;
    let int = |i: i64| Value::Integer(i.into());
    let key = Value::Map(vec![
        (int(1), int(2)),
        (int(3), int(-7)),
        (int(-1), int(1)),
        (
            int(-2),
            Value::Bytes(point.get(1..33).unwrap_or_default().to_vec()),
        ),
        (
            int(-3),
            Value::Bytes(point.get(33..65).unwrap_or_default().to_vec()),
        ),
    ]);
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(&key, &mut out);
    out
}

/// Attaches `attestation` to an encoded enrollment payload (the bytes a phone signs).
pub fn with_attestation(payload: &pb::EnrollPayload, attestation: pb::Attestation) -> Vec<u8> {
    let mut p = payload.clone();
    p.attestation = Some(attestation);
    p.encode_to_vec()
}

/// The Android attestation message for a chain.
pub fn android(chain: Vec<Vec<u8>>) -> pb::Attestation {
    pb::Attestation {
        kind: Some(pb::attestation::Kind::Android(pb::AndroidKeyAttestation {
            certificate_chain: chain,
        })),
    }
}

/// The App Attest message for an object and its key id.
pub fn apple(object: Vec<u8>, key_id: Vec<u8>) -> pb::Attestation {
    pb::Attestation {
        kind: Some(pb::attestation::Kind::Apple(pb::AppleAppAttest {
            attestation_object: object,
            key_id,
        })),
    }
}

/// `phone`'s Enroll request for `payload` with an Android attestation of its key under `root`.
///
/// # Errors
/// When the chain cannot be made.
pub fn android_enrollment(
    phone: &super::Phone,
    payload: &pb::EnrollPayload,
    root: &TestRoot,
    spec: &AndroidSpec,
) -> anyhow::Result<pb::EnrollRequest> {
    let chain = spec.chain(root, &phone.key.spki_der())?;
    Ok(phone.sign_enrollment(with_attestation(payload, android(chain))))
}

/// `phone`'s Enroll request for `payload` with an App Attest object of `app_id` (TEAMID.bundle) under
/// `root`, over the payload's bytes without the attestation, as device.proto says a phone does it.
///
/// # Errors
/// When the object cannot be made.
pub fn apple_enrollment(
    phone: &super::Phone,
    payload: &pb::EnrollPayload,
    root: &TestRoot,
    app_id: &str,
) -> anyhow::Result<pb::EnrollRequest> {
    let (object, key_id) = AppleSpec::new(app_id, payload.encode_to_vec()).object(root)?;
    Ok(phone.sign_enrollment(with_attestation(payload, apple(object, key_id))))
}

/// The simulator's attested Enroll request: `kind` `android` or `apple`, under the root in `dir`.
///
/// # Errors
/// An unknown kind, or a root that cannot be read or made.
pub fn simulated(
    phone: &super::Phone,
    payload: &pb::EnrollPayload,
    kind: &str,
    dir: &Path,
    apple_app_id: Option<&str>,
) -> anyhow::Result<pb::EnrollRequest> {
    let root = TestRoot::in_dir(dir)?;
    match kind {
        "android" => android_enrollment(
            phone,
            payload,
            &root,
            &AndroidSpec::new(&payload.ticket, &payload.app_id),
        ),
        "apple" => {
            let app_id = apple_app_id
                .map_or_else(|| format!("SIMULATED1.{}", payload.app_id), str::to_owned);
            apple_enrollment(phone, payload, &root, &app_id)
        }
        other => anyhow::bail!("must be android or apple, not {other:?}"),
    }
}
