//! Offline codes: RFC 6238 TOTP (HMAC-SHA-1 by default, as every authenticator app computes it; SHA-256
//! and SHA-512 too), six digits, 30-second steps. A code is accepted for the current step or the one
//! before or after it (clock drift), and only for a step later than the last one accepted for the same
//! secret, so no code works twice. Pure.
//!
//! Written by hand on `ring`'s HMAC, already in the tree: the TOTP crates would add a second hash stack
//! for twenty lines of RFC 4226 arithmetic, and the relay needs the time step a code matched (to refuse
//! its replay), which they hide behind a yes or no.

use data_encoding::BASE32_NOPAD;
use ring::hmac;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a generated secret (160 bits, as RFC 4226 recommends).
pub const SECRET_LEN: usize = 20;

/// The HMAC a secret is used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA-1, what authenticator apps assume.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl Algorithm {
    fn ring(self) -> hmac::Algorithm {
        match self {
            Self::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    /// The name in an `otpauth://` URI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }
}

/// The time step of a Unix time in seconds.
pub fn step(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// The code of `secret` for time step `step` (RFC 4226 HOTP of the step counter), `digits` long.
pub fn code(secret: &[u8], algorithm: Algorithm, step: i64, digits: u32) -> String {
    let key = hmac::Key::new(algorithm.ring(), secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = (u32::from(mac[offset]) & 0x7f) << 24
        | u32::from(mac[offset + 1]) << 16
        | u32::from(mac[offset + 2]) << 8
        | u32::from(mac[offset + 3]);
    let value = binary % 10u32.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The step `given` matches for `secret` at `now_secs` (this step, or one either side), if any step
/// later than `used_step` does.
pub fn matching_step(secret: &[u8], given: &str, now_secs: i64, used_step: i64) -> Option<i64> {
    if given.len() != DIGITS as usize || !given.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step(now_secs);
    [now - 1, now, now + 1]
        .into_iter()
        .filter(|s| *s > used_step)
        .find(|s| {
            let expected = code(secret, Algorithm::Sha1, *s, DIGITS);
            // Constant time in the digits (ring's helper for this is deprecated).
            expected.len() == given.len()
                && expected
                    .bytes()
                    .zip(given.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
}

/// A fresh random secret.
pub fn generate_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_LEN];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
    secret
}

/// The secret as authenticator apps take it (base32, no padding).
pub fn base32(secret: &[u8]) -> String {
    BASE32_NOPAD.encode(secret)
}

/// The `otpauth://totp/…` URI (Google Authenticator's key-URI format) for `secret`.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B: the seeds are the ASCII digits "1234567890" repeated to the hash's length.
    fn seed(len: usize) -> Vec<u8> {
        b"1234567890".iter().copied().cycle().take(len).collect()
    }

    #[test]
    fn rfc_6238_test_vectors() {
        let cases: [(i64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (time, sha1, sha256, sha512) in cases {
            let s = step(time);
            assert_eq!(
                code(&seed(20), Algorithm::Sha1, s, 8),
                sha1,
                "SHA1 at {time}"
            );
            assert_eq!(
                code(&seed(32), Algorithm::Sha256, s, 8),
                sha256,
                "SHA256 at {time}"
            );
            assert_eq!(
                code(&seed(64), Algorithm::Sha512, s, 8),
                sha512,
                "SHA512 at {time}"
            );
        }
    }

    #[test]
    fn a_code_matches_one_step_either_side_and_never_twice() {
        let secret = generate_secret();
        let now = 1_700_000_000;
        let current = code(&secret, Algorithm::Sha1, step(now), DIGITS);
        let s = matching_step(&secret, &current, now, i64::MIN).expect("the current code");
        assert_eq!(s, step(now));
        assert_eq!(matching_step(&secret, &current, now, s), None, "replayed");
        let previous = code(&secret, Algorithm::Sha1, step(now) - 1, DIGITS);
        assert!(
            matching_step(&secret, &previous, now, i64::MIN).is_some(),
            "drift"
        );
        let two_ago = code(&secret, Algorithm::Sha1, step(now) - 2, DIGITS);
        assert_eq!(
            matching_step(&secret, &two_ago, now, i64::MIN),
            None,
            "too old"
        );
        assert_eq!(
            matching_step(&secret, "12345", now, i64::MIN),
            None,
            "wrong length"
        );
    }

    #[test]
    fn the_uri_is_what_authenticator_apps_read() {
        let uri = otpauth_uri(
            "approval-relay",
            "alice@example.com",
            b"12345678901234567890",
        );
        assert_eq!(
            uri,
            "otpauth://totp/approval-relay:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=approval-relay&algorithm=SHA1&digits=6&period=30"
        );
    }
}
