//! Identifiers: accounts as the backend names them, and the opaque challenge and device ids the relay
//! issues. Issued ids embed the account's routing tag so that every key of an account can be found (and
//! lands in one Redis Cluster slot) without a lookup.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// Longest account id, idempotency key or request id accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than allowed.
    #[error("must be at most {0} bytes")]
    TooLong(usize),
    /// The id holds control characters.
    #[error("must not contain control characters")]
    ControlCharacter,
    /// The id is not one the relay issued.
    #[error("is not a valid id")]
    Malformed,
}

/// Checks a free-form name (account id, idempotency key): non-empty, bounded, printable.
///
/// # Errors
/// The [`IdError`] that describes what is wrong.
pub fn check_name(value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.len() > max {
        return Err(IdError::TooLong(max));
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

/// An account as the identity backend names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// Parses a backend-supplied account id.
    ///
    /// # Errors
    /// Empty, longer than [`MAX_NAME_LEN`], or holding control characters.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check_name(value, MAX_NAME_LEN)?;
        Ok(Self(value.to_owned()))
    }

    /// The account id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The routing tag shared by every key of this account.
    pub fn tag(&self) -> RoutingTag {
        let digest = Sha256::digest(self.0.as_bytes());
        RoutingTag([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// First 32 bits of SHA-256(account id), as 8 lower-case hex digits: the Redis hash tag of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoutingTag([u8; 4]);

impl RoutingTag {
    /// Parses the 8 lower-case hex digits of a tag.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 8
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let n = u32::from_str_radix(s, 16).ok()?;
        Some(Self(n.to_be_bytes()))
    }
}

impl fmt::Display for RoutingTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", u32::from_be_bytes(self.0))
    }
}

/// Length of the random part of an issued id: 16 bytes, base64url without padding.
const RANDOM_LEN: usize = 22;

fn issue(prefix: char, tag: RoutingTag) -> String {
    let mut random = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut random);
    format!("{prefix}.{tag}.{}", URL_SAFE_NO_PAD.encode(random))
}

fn parse_issued(prefix: char, value: &str) -> Result<RoutingTag, IdError> {
    check_name(value, MAX_NAME_LEN)?;
    let mut parts = value.split('.');
    let (Some(p), Some(tag), Some(random), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdError::Malformed);
    };
    let random_ok = random.len() == RANDOM_LEN
        && random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if p.len() != 1 || !p.starts_with(prefix) || !random_ok {
        return Err(IdError::Malformed);
    }
    RoutingTag::from_hex(tag).ok_or(IdError::Malformed)
}

macro_rules! issued_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Issues a fresh random id for an account.
            pub fn generate(account: &AccountId) -> Self {
                Self(issue($prefix, account.tag()))
            }

            /// Issues a fresh random id in the slot of a routing tag.
            pub fn generate_in(tag: RoutingTag) -> Self {
                Self(issue($prefix, tag))
            }

            /// Parses an id a client sent back.
            ///
            /// # Errors
            /// [`IdError`] when the id is not of the shape the relay issues.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                parse_issued($prefix, value)?;
                Ok(Self(value.to_owned()))
            }

            /// The routing tag of the account the id belongs to.
            pub fn tag(&self) -> RoutingTag {
                // Parsed or generated, so the shape is known; fall back to a fixed tag rather than panic.
                parse_issued($prefix, &self.0).unwrap_or(RoutingTag([0; 4]))
            }

            /// The id as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

issued_id!(
    /// Opaque challenge id: `c.<routing tag>.<22 random base64url characters>`.
    ChallengeId,
    'c'
);
issued_id!(
    /// Opaque device id: `d.<routing tag>.<22 random base64url characters>`.
    DeviceId,
    'd'
);

issued_id!(
    /// Opaque notice id: `n.<routing tag>.<22 random base64url characters>`.
    NoticeId,
    'n'
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_ids_carry_the_account_tag_and_parse_back() {
        let account = AccountId::parse("alice@example.com").expect("valid account");
        let id = ChallengeId::generate(&account);
        let parsed = ChallengeId::parse(id.as_str()).expect("issued id parses");
        assert_eq!(parsed.tag(), account.tag());
        assert_eq!(id.as_str().len(), 33);
    }

    #[test]
    fn a_device_id_is_not_a_challenge_id() {
        let account = AccountId::parse("a").expect("valid account");
        let device = DeviceId::generate(&account);
        assert_eq!(ChallengeId::parse(device.as_str()), Err(IdError::Malformed));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "c",
            "c.zzzzzzzz.AAAAAAAAAAAAAAAAAAAAAA",
            "c.0000000.AAAAAAAAAAAAAAAAAAAAAA",
            "c.00000000.AAAA",
            "c.00000000.AAAAAAAAAAAAAAAAAAAAAA.x",
            "c.00000000.AAAAAAAAAAAAAAAAAAAA\u{7f}A",
        ] {
            assert!(
                ChallengeId::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(ChallengeId::parse("c.00000000.AAAAAAAAAAAAAAAAAAAAAA").is_ok());
    }

    #[test]
    fn account_ids_are_bounded_and_printable() {
        assert_eq!(AccountId::parse(""), Err(IdError::Empty));
        assert_eq!(
            AccountId::parse(&"x".repeat(129)),
            Err(IdError::TooLong(128))
        );
        assert_eq!(AccountId::parse("a\nb"), Err(IdError::ControlCharacter));
    }
}
