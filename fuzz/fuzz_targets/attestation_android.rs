//! Android Key Attestation: attacker-chosen certificate chains through the relay's verifier (X.509
//! parsing, the key description by its ASN.1 schema, chain validation), and the key description parser
//! on raw bytes. Input: a count byte, then that many certificates, each a 2-byte big-endian length and
//! its bytes.
#![no_main]

use approval_relay::attest::{AndroidPolicy, Binding, key_description};
use approval_relay::auth::{KeyAlgorithm, PublicKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        PublicKey::parse(KeyAlgorithm::Ed25519, sk.verifying_key().as_bytes()).expect("key")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = key_description::parse(data);
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    let mut chain = Vec::new();
    for _ in 0..(count % 9) {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        chain.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    let binding = Binding {
        ticket: "t.0000.ticket",
        key: key(),
        app_id: "com.example.approve",
        client_data: &[],
    };
    let _ = AndroidPolicy::default().verify(&chain, &binding, 1_800_000_000);
});
