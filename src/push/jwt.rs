//! ES256 JSON Web Tokens, as APNs token-based provider authentication wants them: `{"alg":"ES256",
//! "kid":…}` / `{"iss":<team id>,"iat":<seconds>}`, signed with the provider's P-256 key (raw r‖s).
//! Written by hand: about thirty lines with `p256`, where a JWT crate would add a second crypto stack.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

/// Signs an APNs provider token.
pub fn sign_es256(key: &SigningKey, key_id: &str, team_id: &str, issued_at_secs: i64) -> String {
    let header = serde_json::json!({ "alg": "ES256", "kid": key_id });
    let claims = serde_json::json!({ "iss": team_id, "iat": issued_at_secs });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// What a verified APNs provider token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `kid` from the header.
    pub key_id: String,
    /// `iss`: the team id.
    pub team_id: String,
    /// `iat`, seconds.
    pub issued_at: i64,
}

/// Reads the header and claims without checking the signature (to pick the key to check it with).
pub fn peek(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (header, claims) = (parts.next()?, parts.next()?);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
    if header.get("alg")?.as_str()? != "ES256" {
        return None;
    }
    Some(Claims {
        key_id: header.get("kid")?.as_str()?.to_owned(),
        team_id: claims.get("iss")?.as_str()?.to_owned(),
        issued_at: claims.get("iat")?.as_i64()?,
    })
}

/// Checks the signature of an ES256 token.
pub fn verify_es256(key: &VerifyingKey, token: &str) -> bool {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(raw) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&raw) else {
        return false;
    };
    key.verify(signing_input.as_bytes(), &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn a_signed_token_verifies_with_its_key_only() {
        let key = SigningKey::random(&mut OsRng);
        let token = sign_es256(&key, "ABC123DEFG", "TEAM123456", 1_700_000_000);
        assert!(verify_es256(key.verifying_key(), &token));
        assert!(!verify_es256(
            SigningKey::random(&mut OsRng).verifying_key(),
            &token
        ));
        let claims = peek(&token).expect("claims");
        assert_eq!(
            (
                claims.key_id.as_str(),
                claims.team_id.as_str(),
                claims.issued_at
            ),
            ("ABC123DEFG", "TEAM123456", 1_700_000_000)
        );
    }
}
