//! Offline-code secrets at rest: sealed with AES-256-GCM (`ring`) under a key the operator gives in a
//! file, so that a copy of Redis holds no usable secret. A sealed secret names its key
//! (`v1.<key id>.<nonce>.<ciphertext>`, base64url; the key id is the first 8 hex digits of the key's
//! SHA-256), so that keys can be rotated: seal with the current key, open with any configured one.
//! Pure: the keys are bytes handed in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A key that is not 32 bytes.
    #[error("a sealing key must be 32 bytes (64 hex digits or 44 base64 characters)")]
    BadKey,
    /// Sealed under a key that is not configured (any more).
    #[error("sealed under key {0}, which is not configured")]
    UnknownKey(String),
    /// Not a sealed secret, or altered.
    #[error("sealed secret does not open")]
    Corrupt,
}

/// The configured keys; the first seals.
pub struct Sealer {
    keys: Vec<(String, LessSafeKey)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

/// A key file's text: 64 hex digits or standard base64 of 32 bytes (surrounding whitespace ignored).
///
/// # Errors
/// [`SealError::BadKey`].
pub fn parse_key(text: &str) -> Result<Vec<u8>, SealError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| SealError::BadKey)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| SealError::BadKey)?
    };
    if bytes.len() == 32 {
        Ok(bytes)
    } else {
        Err(SealError::BadKey)
    }
}

impl Sealer {
    /// Keys as raw 32-byte values, the current one first.
    ///
    /// # Errors
    /// [`SealError::BadKey`] for a key that is not 32 bytes.
    pub fn new(keys: &[Vec<u8>]) -> Result<Self, SealError> {
        let keys = keys
            .iter()
            .map(|k| {
                let id: String = Sha256::digest(k)[..4]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let key = UnboundKey::new(&AES_256_GCM, k).map_err(|_| SealError::BadKey)?;
                Ok((id, LessSafeKey::new(key)))
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        if keys.is_empty() {
            return Err(SealError::BadKey);
        }
        Ok(Self { keys })
    }

    /// A sealer with a random key, for the in-memory store of development mode (its secrets die with it).
    pub fn ephemeral() -> Self {
        let mut key = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
        Self::new(&[key]).unwrap_or_else(|_| unreachable!("32 random bytes are a key"))
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `secret`, bound to `context` (e.g. the device id) so that it cannot be moved to another
    /// record.
    pub fn seal(&self, secret: &[u8], context: &str) -> String {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        let mut data = secret.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut data,
        )
        .unwrap_or_else(|_| unreachable!("AES-GCM seals any length the relay makes"));
        format!(
            "v1.{id}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(data)
        )
    }

    /// Opens a sealed secret made for `context`.
    ///
    /// # Errors
    /// [`SealError`].
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.split('.');
        let (Some("v1"), Some(id), Some(nonce), Some(data), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SealError::Corrupt);
        };
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let nonce: [u8; NONCE_LEN] = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(SealError::Corrupt)?;
        let mut data = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| SealError::Corrupt)?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_context() {
        let old = Sealer::new(&[vec![1; 32]]).expect("key");
        let sealed = old.seal(b"secret", "d.1");
        assert!(!sealed.contains("secret"));
        assert_eq!(old.open(&sealed, "d.1").expect("opens"), b"secret");
        assert_eq!(
            old.open(&sealed, "d.2"),
            Err(SealError::Corrupt),
            "bound to its record"
        );
        let rotated = Sealer::new(&[vec![2; 32], vec![1; 32]]).expect("keys");
        assert_eq!(
            rotated.open(&sealed, "d.1").expect("the previous key"),
            b"secret"
        );
        assert!(rotated.seal(b"x", "d.1").contains(rotated.current_key_id()));
        let other = Sealer::new(&[vec![3; 32]]).expect("key");
        assert!(matches!(
            other.open(&sealed, "d.1"),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn keys_are_read_as_hex_or_base64() {
        assert_eq!(parse_key(&"ab".repeat(32)).expect("hex"), vec![0xab; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_key(&format!("{b64}\n")).expect("base64"), vec![7; 32]);
        assert_eq!(parse_key("short"), Err(SealError::BadKey));
    }
}
