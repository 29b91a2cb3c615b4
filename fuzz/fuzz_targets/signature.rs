//! Key parsing and signature verification on raw bytes: one byte picks the algorithm, one the key's
//! length; the key, then half the rest as signature and the other half as message.
#![no_main]

use approval_relay::auth::{KeyAlgorithm, PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [pick, key_len, rest @ ..] = data else {
        return;
    };
    let algorithm = if pick % 2 == 0 {
        KeyAlgorithm::EcdsaP256
    } else {
        KeyAlgorithm::Ed25519
    };
    let key_len = usize::from(*key_len).min(rest.len());
    let (key, rest) = rest.split_at(key_len);
    let (signature, message) = rest.split_at(rest.len() / 2);
    if let Ok(key) = PublicKey::parse(algorithm, key) {
        let _ = key.verify(message, signature);
        // A parsed key must survive its own encoding.
        let again = PublicKey::parse(algorithm, &key.to_bytes());
        assert!(again.is_ok(), "a parsed key's own bytes must parse");
    }
});
