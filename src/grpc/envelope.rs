//! Parsing of the device envelopes, before any I/O: sizes, protobuf decoding, counter and timestamp
//! bounds, the body the RPC expects, and the enrollment payload. Pure, so the fuzz targets run exactly
//! what the device API runs on bytes a phone controls.

use super::convert;
use crate::auth::PublicKey;
use crate::challenge::DeviceId;
use crate::device::Ticket;
use crate::error::Error;
use crate::pb;
use crate::pb::device_request::Body;
use crate::store::NewDevice;
use prost::Message;

/// Counters stay below 2^53 so that every store compares them exactly.
pub const MAX_COUNTER: u64 = 1 << 53;
/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Largest accepted enrollment payload: room for an attestation chain or object.
pub const MAX_ENROLL_PAYLOAD: usize = 32 * 1024;
/// Largest signature accepted, in bytes (a DER P-256 signature is at most 72).
pub const MAX_SIGNATURE: usize = 512;

/// A signed request whose shape is valid; its signature is not checked yet.
#[derive(Debug)]
pub struct Opened {
    /// The device the envelope names.
    pub device: DeviceId,
    /// The device id inside the signed payload (must equal `device`; checked with the signature).
    pub inner_device: String,
    /// The signed counter.
    pub counter: u64,
    /// The signed timestamp.
    pub timestamp_ms: i64,
    /// The body, already matched against the RPC.
    pub body: Body,
}

/// Checks an envelope's shape and decodes its payload; `expected` says which body the RPC takes.
///
/// # Errors
/// `InvalidArgument` naming the field.
pub fn open(
    envelope: &pb::SignedRequest,
    rpc: &'static str,
    expected: fn(&Body) -> bool,
) -> Result<Opened, Error> {
    let device = convert::device_id("device_id", &envelope.device_id)?;
    check_bytes("payload", &envelope.payload, MAX_PAYLOAD)?;
    check_bytes("signature", &envelope.signature, MAX_SIGNATURE)?;
    let inner =
        pb::DeviceRequest::decode(envelope.payload.as_slice()).map_err(|e| decode_error(&e))?;
    // Counters are compared as Lua numbers (doubles) in the Redis scripts: keep them exact.
    if inner.counter == 0 || inner.counter >= MAX_COUNTER {
        return Err(Error::invalid(
            "payload.counter",
            "must be at least 1 and below 2^53",
        ));
    }
    if inner.timestamp_unix_ms == 0 {
        return Err(Error::invalid("payload.timestamp_unix_ms", "must be set"));
    }
    match inner.body {
        Some(body) if expected(&body) => Ok(Opened {
            device,
            inner_device: inner.device_id,
            counter: inner.counter,
            timestamp_ms: inner.timestamp_unix_ms,
            body,
        }),
        _ => Err(Error::invalid(
            "payload.body",
            format!("must be the body for {rpc}"),
        )),
    }
}

/// An enrollment whose shape is valid; the proof of possession is not checked yet.
#[derive(Debug)]
pub struct Enrollment {
    /// The single-use ticket.
    pub ticket: Ticket,
    /// The device to register.
    pub device: NewDevice,
    /// The signed timestamp.
    pub timestamp_ms: i64,
    /// Also provision an offline code.
    pub offline_code: bool,
    /// The key attestation, if the phone sent one.
    pub evidence: Option<crate::attest::Evidence>,
    /// The payload without its attestation: what App Attest's nonce covers.
    pub client_data: Vec<u8>,
}

/// Checks an enrollment request's shape and decodes its payload.
///
/// # Errors
/// `InvalidArgument` naming the field.
pub fn open_enrollment(req: &pb::EnrollRequest) -> Result<Enrollment, Error> {
    check_bytes("payload", &req.payload, MAX_ENROLL_PAYLOAD)?;
    check_bytes("signature", &req.signature, MAX_SIGNATURE)?;
    let p = pb::EnrollPayload::decode(req.payload.as_slice()).map_err(|e| decode_error(&e))?;
    let ticket = Ticket::parse(&p.ticket).map_err(|e| Error::invalid("payload.ticket", e))?;
    let algorithm = convert::key_algorithm("payload.key_algorithm", p.key_algorithm)?;
    let key = PublicKey::parse(algorithm, &p.public_key)
        .map_err(|e| Error::invalid("payload.public_key", e))?;
    if p.timestamp_unix_ms == 0 {
        return Err(Error::invalid("payload.timestamp_unix_ms", "must be set"));
    }
    let platform = convert::platform("payload.platform", p.platform)?;
    let push_token = convert::text("payload.push_token", &p.push_token, convert::PUSH_TOKEN_MAX)?;
    let fallback = p.fallback.as_ref().map(fallback).transpose()?;
    crate::device::check_channels(
        platform,
        &push_token,
        fallback.as_ref().map(|(p, t)| (*p, t.as_str())),
    )
    .map_err(|(of_fallback, e)| {
        use crate::device::ChannelError as E;
        let field = match (of_fallback, e) {
            (false, _) => "payload.push_token",
            (true, E::MissingToken) => "payload.fallback.push_token",
            (true, _) => "payload.fallback.platform",
        };
        Error::invalid(field, e)
    })?;
    let device = NewDevice {
        id: crate::challenge::DeviceId::generate_in(ticket.tag()),
        offline_code: None,
        attestation: crate::attest::Verdict::default(),
        platform,
        push_token,
        fallback: fallback.map(|(platform, token)| crate::device::Fallback {
            platform,
            push_token: Some(token),
        }),
        app_id: convert::required_text("payload.app_id", &p.app_id, convert::APP_ID_MAX)?,
        key,
        display_name: convert::text(
            "payload.display_name",
            &p.display_name,
            convert::DISPLAY_NAME_MAX,
        )?,
    };
    let evidence = p.attestation.map(evidence).transpose()?;
    let client_data = if evidence.is_some() {
        without_field(&req.payload, ATTESTATION_FIELD)
    } else {
        Vec::new()
    };
    Ok(Enrollment {
        ticket,
        device,
        timestamp_ms: p.timestamp_unix_ms,
        offline_code: p.offline_code,
        evidence,
        client_data,
    })
}

/// The fallback channel's platform and token, their shape checked.
fn fallback(c: &pb::PushChannel) -> Result<(crate::device::Platform, String), Error> {
    Ok((
        convert::platform("payload.fallback.platform", c.platform)?,
        convert::text(
            "payload.fallback.push_token",
            &c.push_token,
            convert::PUSH_TOKEN_MAX,
        )?,
    ))
}

/// `EnrollPayload.attestation`'s field number.
const ATTESTATION_FIELD: u32 = 10;

fn evidence(a: pb::Attestation) -> Result<crate::attest::Evidence, Error> {
    use crate::attest::Evidence;
    use pb::attestation::Kind;
    match a.kind {
        None => Err(Error::invalid("payload.attestation.kind", "must be set")),
        Some(Kind::Android(a)) => Ok(Evidence::Android(a.certificate_chain)),
        Some(Kind::Apple(a)) => {
            if a.attestation_object.is_empty() {
                return Err(Error::invalid(
                    "payload.attestation.apple.attestation_object",
                    "must not be empty",
                ));
            }
            Ok(Evidence::Apple {
                object: a.attestation_object,
                key_id: a.key_id,
            })
        }
    }
}

/// `payload` with every top-level record of field `number` removed, the others kept byte for byte in
/// their order: App Attest's client data (device.proto, "Key attestation"). The payload has decoded, so
/// its wire format is valid.
pub fn without_field(payload: &[u8], number: u32) -> Vec<u8> {
    use prost::encoding::{DecodeContext, decode_key, skip_field};
    let mut out = Vec::with_capacity(payload.len());
    let mut rest = payload;
    while !rest.is_empty() {
        let start = rest;
        let Ok((tag, wire_type)) = decode_key(&mut rest) else {
            break;
        };
        if skip_field(wire_type, tag, &mut rest, DecodeContext::default()).is_err() {
            break;
        }
        if tag != number {
            out.extend_from_slice(&start[..start.len() - rest.len()]);
        }
    }
    out
}

/// A payload that does not decode, named by its field path inside `payload`.
fn decode_error(e: &prost::DecodeError) -> Error {
    let (path, reason) = super::codec::field_error(&e.to_string(), "payload.");
    Error::invalid(path, reason)
}

fn check_bytes(field: &'static str, value: &[u8], max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod attestation_tests {
    use super::without_field;

    #[test]
    fn without_field_drops_every_top_level_record_of_the_field_and_keeps_the_rest_in_order() {
        // field 1 varint 5; field 10 bytes "ab"; field 11 bytes "c"; field 10 bytes "d"; field 3 varint 300.
        let payload = [
            0x08, 0x05, 0x52, 0x02, b'a', b'b', 0x5a, 0x01, b'c', 0x52, 0x01, b'd', 0x18, 0xac,
            0x02,
        ];
        assert_eq!(
            without_field(&payload, 10),
            [0x08, 0x05, 0x5a, 0x01, b'c', 0x18, 0xac, 0x02]
        );
        // Nested records with the same number inside another field are not top-level: kept.
        let nested = [0x5a, 0x02, 0x52, 0x00];
        assert_eq!(without_field(&nested, 10), nested);
        assert_eq!(without_field(&[], 10), Vec::<u8>::new());
    }
}
