//! The few DER readings the attestation structures need, on `asn1-rs`'s element reader: every
//! length and tag is checked by it; these helpers only say which element is expected.

use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};

/// A DER element that is not what the schema says, with a short reason.
pub type Result<T> = std::result::Result<T, String>;

/// Reads one element from the front of `input`; returns it and the rest.
pub fn element(input: &[u8]) -> Result<(Any<'_>, &[u8])> {
    let (rest, any) = Any::from_der(input).map_err(|e| format!("bad DER: {e}"))?;
    Ok((any, rest))
}

/// Reads exactly one element spanning all of `input`.
pub fn only(input: &[u8]) -> Result<Any<'_>> {
    let (any, rest) = element(input)?;
    if !rest.is_empty() {
        return Err("trailing bytes after the element".into());
    }
    Ok(any)
}

/// The children of a constructed universal element with `tag` (SEQUENCE or SET).
pub fn children<'a>(any: &Any<'a>, tag: Tag, what: &str) -> Result<Vec<Any<'a>>> {
    if any.header.class() != Class::Universal
        || any.header.tag() != tag
        || !any.header.is_constructed()
    {
        return Err(format!("{what}: expected {tag}"));
    }
    let mut out = Vec::new();
    let mut rest = any.data;
    while !rest.is_empty() {
        let (child, r) = element(rest)?;
        out.push(child);
        rest = r;
    }
    Ok(out)
}

/// The SEQUENCE's children.
pub fn sequence<'a>(any: &Any<'a>, what: &str) -> Result<Vec<Any<'a>>> {
    children(any, Tag::Sequence, what)
}

fn primitive<'a>(any: &Any<'a>, tag: Tag, what: &str) -> Result<&'a [u8]> {
    if any.header.class() != Class::Universal
        || any.header.tag() != tag
        || any.header.is_constructed()
    {
        return Err(format!("{what}: expected {tag}"));
    }
    Ok(any.data)
}

/// An OCTET STRING's bytes.
pub fn octets<'a>(any: &Any<'a>, what: &str) -> Result<&'a [u8]> {
    primitive(any, Tag::OctetString, what)
}

/// A small non-negative ENUMERATED value.
pub fn enumerated(any: &Any<'_>, what: &str) -> Result<u32> {
    small_unsigned(primitive(any, Tag::Enumerated, what)?, what)
}

/// A small non-negative INTEGER value.
pub fn integer(any: &Any<'_>, what: &str) -> Result<u32> {
    small_unsigned(primitive(any, Tag::Integer, what)?, what)
}

/// A BOOLEAN.
pub fn boolean(any: &Any<'_>, what: &str) -> Result<bool> {
    match primitive(any, Tag::Boolean, what)? {
        [0] => Ok(false),
        [0xff] => Ok(true),
        _ => Err(format!("{what}: not a DER BOOLEAN")),
    }
}

fn small_unsigned(bytes: &[u8], what: &str) -> Result<u32> {
    // DER: minimal two's complement; a leading 0x00 only before a set high bit.
    let value = match bytes {
        [] => return Err(format!("{what}: empty number")),
        [b, ..] if b & 0x80 != 0 => return Err(format!("{what}: negative")),
        [0, b, ..] if b & 0x80 == 0 => return Err(format!("{what}: not minimal")),
        b if b.len() > 5 || (b.len() == 5 && b[0] != 0) => {
            return Err(format!("{what}: too large"));
        }
        b => b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)),
    };
    Ok(value)
}

/// The context-specific tag number of an element, if it is `[n] EXPLICIT`; its content is one element.
pub fn explicit<'a>(any: &Any<'a>) -> Option<(u32, &'a [u8])> {
    (any.header.class() == Class::ContextSpecific && any.header.is_constructed())
        .then(|| (any.header.tag().0, any.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_be_minimal_and_non_negative() {
        assert_eq!(small_unsigned(&[0x01], "n"), Ok(1));
        assert_eq!(small_unsigned(&[0x00, 0x80], "n"), Ok(128));
        assert!(small_unsigned(&[0x00, 0x01], "n").is_err());
        assert!(small_unsigned(&[0x80], "n").is_err());
        assert!(small_unsigned(&[], "n").is_err());
        assert!(small_unsigned(&[1, 2, 3, 4, 5], "n").is_err());
    }
}
