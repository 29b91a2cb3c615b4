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

/// A parsed device key, ready to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// A P-256 key.
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// An Ed25519 key.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    /// Parses a key as a phone sends it: SEC1 point or SPKI DER for P-256, 32 raw bytes for Ed25519.
    ///
    /// # Errors
    /// [`AuthError::MalformedKey`] when the bytes are not a valid key of that algorithm.
    pub fn parse(algorithm: KeyAlgorithm, bytes: &[u8]) -> Result<Self, AuthError> {
        match algorithm {
            KeyAlgorithm::EcdsaP256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                .or_else(|_| p256::ecdsa::VerifyingKey::from_public_key_der(bytes))
                .map(Self::EcdsaP256)
                .map_err(|_| AuthError::MalformedKey),
            KeyAlgorithm::Ed25519 => {
                let raw: [u8; 32] = bytes.try_into().map_err(|_| AuthError::MalformedKey)?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
                    .map_err(|_| AuthError::MalformedKey)?;
                if key.is_weak() {
                    return Err(AuthError::MalformedKey);
                }
                Ok(Self::Ed25519(key))
            }
        }
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::EcdsaP256(_) => KeyAlgorithm::EcdsaP256,
            Self::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// Canonical encoding kept in the store: uncompressed SEC1 (65 bytes) or raw Ed25519 (32 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::EcdsaP256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            Self::Ed25519(k) => k.to_bytes().to_vec(),
        }
    }

    /// Verifies `signature` over exactly `message`.
    ///
    /// # Errors
    /// [`AuthError::MalformedSignature`] when the signature cannot be decoded,
    /// [`AuthError::BadSignature`] when it does not verify.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), AuthError> {
        match self {
            Self::EcdsaP256(key) => {
                // Parsed here only to tell a malformed signature from a wrong one; ring verifies, as its
                // P-256 is several times faster than the pure-Rust one (the Criterion bench
                // `envelope_open_and_verify_p256` measured 338 µs before, with p256's verifier).
                p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| AuthError::MalformedSignature)?;
                let point = key.to_encoded_point(false);
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_ASN1,
                    point.as_bytes(),
                )
                .verify(message, signature)
                .map_err(|_| AuthError::BadSignature)
            }
            Self::Ed25519(key) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| AuthError::MalformedSignature)?;
                key.verify_strict(message, &sig)
                    .map_err(|_| AuthError::BadSignature)
            }
        }
    }
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
