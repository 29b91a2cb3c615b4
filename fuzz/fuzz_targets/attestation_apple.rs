//! Apple App Attest: attacker-chosen attestation objects through the relay's verifier (CBOR, authData,
//! the x5c chain, the nonce extension). Input: 32 bytes of key id, then the object.
#![no_main]

use approval_relay::attest::{ApplePolicy, Binding};
use approval_relay::auth::{KeyAlgorithm, PublicKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn policy() -> &'static (ApplePolicy, PublicKey) {
    static POLICY: OnceLock<(ApplePolicy, PublicKey)> = OnceLock::new();
    POLICY.get_or_init(|| {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let key = PublicKey::parse(KeyAlgorithm::Ed25519, sk.verifying_key().as_bytes()).expect("key");
        let policy = ApplePolicy {
            app_ids: vec!["TEAMID1234.com.example.approve".into()],
            ..ApplePolicy::default()
        };
        (policy, key)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((key_id, object)) = data.split_first_chunk::<32>() else {
        return;
    };
    let (policy, key) = policy();
    let binding = Binding {
        ticket: "t.0000.ticket",
        key,
        app_id: "com.example.approve",
        client_data: b"client data",
    };
    let _ = policy.verify(object, key_id, &binding, 1_800_000_000);
});
