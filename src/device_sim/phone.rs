//! A simulated phone's identity: its key, device id and counter, and the signed requests it sends,
//! built exactly as device.proto describes (so it doubles as a reference client for app developers).

use crate::pb;
use crate::pb::device_request::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use prost::Message;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

/// A device key with its private half.
#[derive(Clone)]
pub enum PhoneKey {
    /// ECDSA P-256, as Secure Enclave and Android Keystore hold.
    P256(p256::ecdsa::SigningKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
}

impl PhoneKey {
    /// A fresh random P-256 key.
    pub fn p256() -> Self {
        Self::P256(p256::ecdsa::SigningKey::random(&mut OsRng))
    }

    /// A fresh random Ed25519 key.
    pub fn ed25519() -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }

    /// The algorithm as the proto names it.
    pub fn algorithm(&self) -> pb::KeyAlgorithm {
        match self {
            Self::P256(_) => pb::KeyAlgorithm::EcdsaP256Sha256,
            Self::Ed25519(_) => pb::KeyAlgorithm::Ed25519,
        }
    }

    /// The public key as sent at enrollment: uncompressed SEC1 (as iOS exports it) or raw Ed25519.
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            Self::P256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Self::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
        }
    }

    /// The public key as a DER SubjectPublicKeyInfo (what an attestation certificate carries).
    pub fn spki_der(&self) -> Vec<u8> {
        use p256::pkcs8::EncodePublicKey;
        let der = match self {
            Self::P256(k) => k.verifying_key().to_public_key_der(),
            Self::Ed25519(k) => k.verifying_key().to_public_key_der(),
        };
        // Encoding a valid key into a Vec cannot fail.
        der.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// Signs `message`: DER ECDSA-SHA256, or Ed25519.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            Self::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
        }
    }
}

/// The phone's clock in Unix ms.
pub use crate::clock::now_ms;

/// A phone: key, device id once enrolled, and the last counter it used.
#[derive(Clone)]
pub struct Phone {
    /// Signs every request.
    pub key: PhoneKey,
    /// Empty until enrolled.
    pub device_id: String,
    /// The last counter sent.
    pub counter: u64,
}

impl Phone {
    /// A new, not yet enrolled phone.
    pub fn new(key: PhoneKey) -> Self {
        Self {
            key,
            device_id: String::new(),
            counter: 0,
        }
    }

    /// The Enroll request for `ticket`, signed by the phone's key (proof of possession).
    pub fn enroll_request(
        &self,
        ticket: &str,
        platform: pb::Platform,
        push_token: &str,
        app_id: &str,
        name: &str,
    ) -> pb::EnrollRequest {
        self.enroll_request_with(ticket, platform, push_token, app_id, name, false)
    }

    /// As [`Phone::enroll_request`], asking for an offline code when `offline_code`.
    pub fn enroll_request_with(
        &self,
        ticket: &str,
        platform: pb::Platform,
        push_token: &str,
        app_id: &str,
        name: &str,
        offline_code: bool,
    ) -> pb::EnrollRequest {
        let mut payload = self.enroll_payload(ticket, platform, push_token, app_id, name);
        payload.offline_code = offline_code;
        self.sign_enrollment(payload.encode_to_vec())
    }

    /// The EnrollPayload for `ticket`, without attestation or offline code, timestamped now.
    pub fn enroll_payload(
        &self,
        ticket: &str,
        platform: pb::Platform,
        push_token: &str,
        app_id: &str,
        name: &str,
    ) -> pb::EnrollPayload {
        pb::EnrollPayload {
            attestation: None,
            fallback: None,
            offline_code: false,
            ticket: ticket.to_owned(),
            key_algorithm: self.key.algorithm().into(),
            public_key: self.key.public_key(),
            platform: platform.into(),
            push_token: push_token.to_owned(),
            app_id: app_id.to_owned(),
            display_name: name.to_owned(),
            timestamp_unix_ms: now_ms(),
        }
    }

    /// An Enroll request for encoded payload bytes, signed by the phone's key (proof of possession).
    pub fn sign_enrollment(&self, payload: Vec<u8>) -> pb::EnrollRequest {
        pb::EnrollRequest {
            signature: self.key.sign(&payload),
            payload,
        }
    }

    /// The next signed request: counter incremented, timestamp now.
    pub fn signed(&mut self, body: Body) -> pb::SignedRequest {
        self.counter += 1;
        self.signed_with(self.counter, now_ms(), body)
    }

    /// A signed request with a chosen counter and timestamp (for replay and clock tests).
    pub fn signed_with(
        &self,
        counter: u64,
        timestamp_unix_ms: i64,
        body: Body,
    ) -> pb::SignedRequest {
        let payload = pb::DeviceRequest {
            device_id: self.device_id.clone(),
            counter,
            timestamp_unix_ms,
            body: Some(body),
        }
        .encode_to_vec();
        pb::SignedRequest {
            device_id: self.device_id.clone(),
            signature: self.key.sign(&payload),
            payload,
        }
    }
}

/// The key file a simulated phone keeps between commands.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// Device API address, e.g. `http://127.0.0.1:50052`.
    pub relay: String,
    /// The enrolled device id.
    pub device_id: String,
    /// `p256` or `ed25519`.
    pub algorithm: String,
    /// The private key: P-256 scalar or Ed25519 seed, base64.
    pub private_key: String,
    /// The last counter used.
    pub counter: u64,
    /// The push token registered at enrollment (how `device listen` finds this phone's pushes).
    #[serde(default)]
    pub push_token: String,
    /// The fallback channel's token, if one was registered (listen watches for it too).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fallback_push_token: String,
    /// Enrolled PLATFORM_POLL_ONLY: `device listen` polls ListPending instead of watching pushes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub poll_only: bool,
    /// The offline-code secret (base32) given at enrollment, if asked for. A real app keeps it in its
    /// keystore; the simulator's key file is as secret as its private key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub offline_code_secret: String,
}

impl KeyFile {
    /// Saves a phone and the push token it registered.
    pub fn from_phone(phone: &Phone, relay: &str, push_token: &str) -> Self {
        let (algorithm, private_key) = match &phone.key {
            PhoneKey::P256(k) => ("p256", STANDARD.encode(k.to_bytes())),
            PhoneKey::Ed25519(k) => ("ed25519", STANDARD.encode(k.to_bytes())),
        };
        Self {
            relay: relay.to_owned(),
            device_id: phone.device_id.clone(),
            algorithm: algorithm.into(),
            private_key,
            counter: phone.counter,
            push_token: push_token.to_owned(),
            fallback_push_token: String::new(),
            poll_only: false,
            offline_code_secret: String::new(),
        }
    }

    /// This file with the phone's latest counter (everything else kept).
    pub fn with_counter(&self, phone: &Phone) -> Self {
        Self {
            counter: phone.counter,
            relay: self.relay.clone(),
            device_id: self.device_id.clone(),
            algorithm: self.algorithm.clone(),
            private_key: self.private_key.clone(),
            push_token: self.push_token.clone(),
            fallback_push_token: self.fallback_push_token.clone(),
            poll_only: self.poll_only,
            offline_code_secret: self.offline_code_secret.clone(),
        }
    }

    /// Restores a phone.
    ///
    /// # Errors
    /// A readable reason when the file's key is unusable.
    pub fn to_phone(&self) -> Result<Phone, String> {
        let raw = STANDARD
            .decode(&self.private_key)
            .map_err(|e| format!("private_key: {e}"))?;
        let key = match self.algorithm.as_str() {
            "p256" => PhoneKey::P256(
                p256::ecdsa::SigningKey::from_slice(&raw)
                    .map_err(|e| format!("private_key: {e}"))?,
            ),
            "ed25519" => {
                let seed: [u8; 32] = raw
                    .as_slice()
                    .try_into()
                    .map_err(|_| "private_key: must be 32 bytes".to_owned())?;
                PhoneKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            other => return Err(format!("algorithm: unknown {other:?}")),
        };
        Ok(Phone {
            key,
            device_id: self.device_id.clone(),
            counter: self.counter,
        })
    }
}
