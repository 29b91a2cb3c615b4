//! Device public keys and signature checks: ECDSA P-256 with DER signatures (what Secure Enclave and
//! Android Keystore emit) and strict Ed25519.

use super::AuthError;
use p256::pkcs8::DecodePublicKey;

/// The signature scheme of a device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 / SHA-256, DER signatures.
    EcdsaP256,
    /// Ed25519, strict verification.
    Ed25519,
}

/// A device key in its canonical encoding (uncompressed SEC1, 65 bytes, or raw Ed25519, 32 bytes).
/// A phone's key is fully checked once, by [`PublicKey::parse`] at enrollment and rotation; a key read
/// back from the store ([`PublicKey::stored`]) is checked for shape only and decoded when a signature is
/// verified. Devices are read several times per challenge (the evaluation, the create, the pushes' claim,
/// the withdrawals) and only one of those reads verifies: an Ed25519 point decompression on each read
/// was ~10% of the relay's CPU under load. An Ed25519 point, once decoded, stays with the key, so a
/// device the replica holds (`relay::device_cache`) verifies its next request without decoding again.
#[derive(Clone)]
pub struct PublicKey {
    algorithm: KeyAlgorithm,
    canonical: Vec<u8>,
    // Shared, not inline: a decoded point is ~200 bytes, and devices are cloned often.
    ed25519: std::sync::OnceLock<std::sync::Arc<ed25519_dalek::VerifyingKey>>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The encoding alone: the same before and after the point is decoded.
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("key", &data_encoding::HEXLOWER.encode(&self.canonical))
            .finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.algorithm == other.algorithm && self.canonical == other.canonical
    }
}

impl Eq for PublicKey {}

/// Length of an uncompressed SEC1 P-256 point.
const P256_UNCOMPRESSED: usize = 65;
/// Length of an Ed25519 key.
const ED25519_LEN: usize = 32;

impl PublicKey {
    /// Parses a key as a phone sends it: SEC1 point or SPKI DER for P-256, 32 raw bytes for Ed25519.
    ///
    /// # Errors
    /// [`AuthError::MalformedKey`] when the bytes are not a valid key of that algorithm.
    pub fn parse(algorithm: KeyAlgorithm, bytes: &[u8]) -> Result<Self, AuthError> {
        let decoded = std::sync::OnceLock::new();
        let canonical = match algorithm {
            KeyAlgorithm::EcdsaP256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                .or_else(|_| p256::ecdsa::VerifyingKey::from_public_key_der(bytes))
                .map_err(|_| AuthError::MalformedKey)?
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            KeyAlgorithm::Ed25519 => {
                let key = ed25519(bytes)?;
                let canonical = key.to_bytes().to_vec();
                let _ = decoded.set(std::sync::Arc::new(key));
                canonical
            }
        };
        Ok(Self {
            algorithm,
            canonical,
            ed25519: decoded,
        })
    }

    /// A key read back from the store, in the canonical encoding [`PublicKey::to_bytes`] gave: only its
    /// shape is checked here (a point that is not on the curve fails every verification instead).
    ///
    /// # Errors
    /// [`AuthError::MalformedKey`] when the length or the SEC1 tag is wrong for the algorithm.
    pub fn stored(algorithm: KeyAlgorithm, bytes: &[u8]) -> Result<Self, AuthError> {
        let shaped = match algorithm {
            KeyAlgorithm::EcdsaP256 => bytes.len() == P256_UNCOMPRESSED && bytes[0] == 4,
            KeyAlgorithm::Ed25519 => bytes.len() == ED25519_LEN,
        };
        if !shaped {
            return Err(AuthError::MalformedKey);
        }
        Ok(Self {
            algorithm,
            canonical: bytes.to_vec(),
            ed25519: std::sync::OnceLock::new(),
        })
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Canonical encoding kept in the store: uncompressed SEC1 (65 bytes) or raw Ed25519 (32 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.canonical.clone()
    }

    /// The canonical encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.canonical
    }

    /// Verifies `signature` over exactly `message`.
    ///
    /// # Errors
    /// [`AuthError::MalformedSignature`] when the signature cannot be decoded,
    /// [`AuthError::BadSignature`] when it does not verify (or the stored key is not a valid point).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), AuthError> {
        match self.algorithm {
            KeyAlgorithm::EcdsaP256 => {
                // Parsed here only to tell a malformed signature from a wrong one; ring verifies (and
                // checks the point), as its P-256 is several times faster than the pure-Rust one (the
                // Criterion bench `envelope_open_and_verify_p256` measured 338 µs with p256's verifier).
                p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| AuthError::MalformedSignature)?;
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_ASN1,
                    &self.canonical,
                )
                .verify(message, signature)
                .map_err(|_| AuthError::BadSignature)
            }
            KeyAlgorithm::Ed25519 => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| AuthError::MalformedSignature)?;
                let key = match self.ed25519.get() {
                    Some(key) => key,
                    None => {
                        let key = ed25519(&self.canonical).map_err(|_| AuthError::BadSignature)?;
                        self.ed25519.get_or_init(|| std::sync::Arc::new(key))
                    }
                };
                key.verify_strict(message, &sig)
                    .map_err(|_| AuthError::BadSignature)
            }
        }
    }
}

/// A valid Ed25519 point that is not of small order.
fn ed25519(bytes: &[u8]) -> Result<ed25519_dalek::VerifyingKey, AuthError> {
    let raw: [u8; ED25519_LEN] = bytes.try_into().map_err(|_| AuthError::MalformedKey)?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| AuthError::MalformedKey)?;
    if key.is_weak() {
        return Err(AuthError::MalformedKey);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;
    use p256::pkcs8::EncodePublicKey;
    use rand::rngs::OsRng;

    #[test]
    fn p256_der_signatures_verify_with_sec1_and_spki_keys() {
        let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
        let sig: p256::ecdsa::Signature = sk.sign(b"payload");
        let der = sig.to_der();
        let vk = sk.verifying_key();
        for encoding in [
            vk.to_encoded_point(false).as_bytes().to_vec(),
            vk.to_encoded_point(true).as_bytes().to_vec(),
            vk.to_public_key_der().expect("spki").as_bytes().to_vec(),
        ] {
            let key = PublicKey::parse(KeyAlgorithm::EcdsaP256, &encoding).expect("key parses");
            assert_eq!(key.verify(b"payload", der.as_bytes()), Ok(()));
            assert_eq!(
                key.verify(b"payloaD", der.as_bytes()),
                Err(AuthError::BadSignature)
            );
        }
        let key = PublicKey::parse(
            KeyAlgorithm::EcdsaP256,
            vk.to_encoded_point(false).as_bytes(),
        )
        .expect("key");
        assert_eq!(
            key.verify(b"payload", &sig.to_bytes()),
            Err(AuthError::MalformedSignature)
        );
    }

    #[test]
    fn ed25519_signatures_verify_and_forgeries_do_not() {
        let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let key =
            PublicKey::parse(KeyAlgorithm::Ed25519, sk.verifying_key().as_bytes()).expect("key");
        let sig = sk.sign(b"payload").to_bytes();
        assert_eq!(key.verify(b"payload", &sig), Ok(()));
        let other = ed25519_dalek::SigningKey::generate(&mut OsRng)
            .sign(b"payload")
            .to_bytes();
        assert_eq!(key.verify(b"payload", &other), Err(AuthError::BadSignature));
        assert_eq!(
            key.verify(b"payload", &sig[..63]),
            Err(AuthError::MalformedSignature)
        );
    }

    #[test]
    fn a_stored_key_verifies_as_the_parsed_one_and_a_bad_stored_one_verifies_nothing() {
        let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let parsed =
            PublicKey::parse(KeyAlgorithm::Ed25519, sk.verifying_key().as_bytes()).expect("key");
        let stored = PublicKey::stored(KeyAlgorithm::Ed25519, &parsed.to_bytes()).expect("shape");
        assert_eq!(stored, parsed);
        let sig = sk.sign(b"payload").to_bytes();
        assert_eq!(stored.verify(b"payload", &sig), Ok(()));
        // A small-order point and a non-point have the right shape but verify nothing.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        not_a_point[31] = 0x80;
        for bytes in [[0u8; 32], not_a_point] {
            let stored = PublicKey::stored(KeyAlgorithm::Ed25519, &bytes).expect("shape");
            assert_eq!(
                stored.verify(b"payload", &sig),
                Err(AuthError::BadSignature)
            );
        }
        // Decoded once and kept, in the key and its clones: the next verifications decide the same,
        // and a decoded key still equals one that is not.
        let held = stored.clone();
        assert_eq!(held.verify(b"payload", &sig), Ok(()));
        let copy = held.clone();
        assert!(copy.ed25519.get().is_some());
        assert_eq!(copy.verify(b"payload", &sig), Ok(()));
        assert_eq!(
            copy.verify(b"other payload", &sig),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            copy,
            PublicKey::stored(KeyAlgorithm::Ed25519, &parsed.to_bytes()).expect("shape")
        );
        let p = p256::ecdsa::SigningKey::random(&mut OsRng);
        let der: p256::ecdsa::Signature = p.sign(b"payload");
        let point = p.verifying_key().to_encoded_point(false);
        let stored = PublicKey::stored(KeyAlgorithm::EcdsaP256, point.as_bytes()).expect("shape");
        assert_eq!(stored.verify(b"payload", der.to_der().as_bytes()), Ok(()));
        let stored = PublicKey::stored(KeyAlgorithm::EcdsaP256, &[4; 65]).expect("shape");
        assert_eq!(
            stored.verify(b"payload", der.to_der().as_bytes()),
            Err(AuthError::BadSignature)
        );
        for (algorithm, bytes) in [
            (KeyAlgorithm::Ed25519, &[1u8; 31][..]),
            (KeyAlgorithm::EcdsaP256, &[4u8; 64][..]),
            (KeyAlgorithm::EcdsaP256, &[2u8; 65][..]),
            (KeyAlgorithm::EcdsaP256, &point.as_bytes()[..33]),
        ] {
            assert_eq!(
                PublicKey::stored(algorithm, bytes),
                Err(AuthError::MalformedKey)
            );
        }
    }

    #[test]
    fn malformed_and_weak_keys_are_refused() {
        assert_eq!(
            PublicKey::parse(KeyAlgorithm::Ed25519, &[1; 31]),
            Err(AuthError::MalformedKey)
        );
        assert_eq!(
            PublicKey::parse(KeyAlgorithm::Ed25519, &[0; 32]),
            Err(AuthError::MalformedKey)
        );
        assert_eq!(
            PublicKey::parse(KeyAlgorithm::EcdsaP256, &[4; 65]),
            Err(AuthError::MalformedKey)
        );
        assert_eq!(
            PublicKey::parse(KeyAlgorithm::EcdsaP256, b""),
            Err(AuthError::MalformedKey)
        );
    }
}
