//! The gRPC codec of every approval.v1 service: prost's encoding, but a request that cannot be decoded
//! (a string that is not UTF-8, a bad varint, a truncated field) is INVALID_ARGUMENT naming the field
//! path, not the INTERNAL that `tonic_prost::ProstCodec` answers: the client sent garbage, the relay is
//! not broken, and nobody should be paged. Written by hand because tonic-prost hard-codes INTERNAL and
//! no crate offers a codec with this mapping; prost itself carries the field path in its error.
//!
//! [`status_layer`] does the same for the services whose code is not ours (health), whose decode
//! failures tonic answers in the response headers.

use bytes::Buf;
use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// What prost puts before every decode error.
const PREFIX: &str = "failed to decode Protobuf message: ";

/// prost encoding; decode failures become INVALID_ARGUMENT with the field path.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = StrictEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        StrictEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Encodes with prost.
#[derive(Debug, Clone, Default)]
pub struct StrictEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for StrictEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // The buffer grows as needed, so encoding into it cannot run out of room.
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a response: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }
}

/// The first allocation of a response's encode buffer. tonic allocates it when a response stream starts
/// and keeps it for the stream's life; its default (8 KiB) was most of an idle watch's footprint
/// (9.3 KB per stream measured with 100,000 open). Events and challenges encode in a few hundred bytes;
/// a larger message (an audit page) grows the buffer as it is written, at the cost of a few copies.
const ENCODE_BUFFER_BYTES: usize = 512;

/// tonic's default: ready messages of a stream are batched into one write up to this size.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// Decodes with prost; a failure is INVALID_ARGUMENT.
#[derive(Debug, Clone, Default)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode(buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes a message, or gives the INVALID_ARGUMENT a client must see for its bytes.
///
/// # Errors
/// INVALID_ARGUMENT whose message starts with the field path (or `request` for the message itself).
pub fn decode<U: Message + Default>(buf: impl Buf) -> Result<U, Status> {
    U::decode(buf).map_err(|e| Status::invalid_argument(describe(&e.to_string(), "")))
}

/// `<field path>: <what is wrong>` for a prost decode error (see [`field_error`]).
pub fn describe(error: &str, outer: &str) -> String {
    let (path, reason) = field_error(error, outer);
    format!("{path}: {reason}")
}

/// The field path of a prost decode error, prefixed by `outer` (e.g. `payload.`), or `request` / the
/// bare `outer` name when the message itself is broken; and what is wrong, in lower case.
pub fn field_error(error: &str, outer: &str) -> (String, String) {
    let (path, reason) = field_path(error);
    let path = match (path.is_empty(), outer.is_empty()) {
        (true, true) => "request".to_owned(),
        (true, false) => outer.trim_end_matches('.').to_owned(),
        (false, _) => format!("{outer}{path}"),
    };
    let reason = if reason.contains("not UTF-8") {
        "is not valid UTF-8".to_owned()
    } else {
        format!("is not a valid protobuf encoding ({reason})")
    };
    (path, reason)
}

/// Splits prost's `failed to decode Protobuf message: Inner.field: Outer.field: description` into the
/// dotted field path from the outermost message inwards and the description.
fn field_path(error: &str) -> (String, &str) {
    let mut rest = error.strip_prefix(PREFIX).unwrap_or(error);
    let mut stack = Vec::new();
    while let Some((segment, tail)) = rest.split_once(": ") {
        let Some((message, field)) = segment.split_once('.') else {
            break;
        };
        let ident =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ident(message) || !ident(field) {
            break;
        }
        stack.push((message, field));
        rest = tail;
    }
    // prost records the innermost field first, as the error travels outwards.
    stack.reverse();
    let fields: Vec<String> = stack
        .iter()
        .enumerate()
        .map(|(i, (message, field))| {
            // prost names a oneof, not its member: the member is known by the message inside it.
            match stack.get(i + 1) {
                Some((inner, _)) if is_oneof(message, field) => oneof_member(inner),
                _ => (*field).to_owned(),
            }
        })
        .collect();
    (fields.join("."), rest)
}

/// The oneofs of requests a client sends.
fn is_oneof(message: &str, field: &str) -> bool {
    matches!(
        (message, field),
        ("StreamChallengesRequest", "request") | ("DeviceRequest", "body")
    )
}

/// The member of a request oneof that holds a message of type `inner`: `create` / `cancel` on
/// StreamChallenges, and `get_challenge` for `GetChallengeBody` (the type without `Body`, in snake
/// case) in a device request.
fn oneof_member(inner: &str) -> String {
    match inner {
        "CreateChallengeRequest" => "create".to_owned(),
        "CancelChallengeRequest" => "cancel".to_owned(),
        other => {
            let mut out = String::new();
            for (i, c) in other.trim_end_matches("Body").chars().enumerate() {
                if c.is_ascii_uppercase() {
                    if i > 0 {
                        out.push('_');
                    }
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}

/// A tower layer that turns tonic's INTERNAL "failed to decode Protobuf message" answers, given in the
/// response headers, into INVALID_ARGUMENT with the field path: for services built with prost's own
/// codec (gRPC health).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusLayer;

/// The service [`StatusLayer`] wraps.
#[derive(Debug, Clone)]
pub struct StatusService<S>(S);

impl<S> tower::Layer<S> for StatusLayer {
    type Service = StatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusService(inner)
    }
}

/// The layer for a gRPC server.
pub fn status_layer() -> StatusLayer {
    StatusLayer
}

impl<S, Req, B> tower::Service<Req> for StatusService<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(http::Response<B>) -> http::Response<B>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        use futures::TryFutureExt;
        self.0.call(request).map_ok(rewrite as fn(_) -> _)
    }
}

fn rewrite<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != tonic::Code::Internal || !status.message().starts_with(PREFIX) {
        return response;
    }
    let fixed = Status::invalid_argument(describe(status.message(), ""));
    let headers = response.headers_mut();
    headers.remove("grpc-message");
    if fixed.add_header(headers).is_err() {
        tracing::debug!("could not rewrite a decode error's status");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn error_of<U: Message + Default + std::fmt::Debug>(bytes: &[u8]) -> Status {
        decode::<U>(bytes).expect_err("must not decode")
    }

    #[test]
    fn a_string_that_is_not_utf8_names_its_field_path() {
        // CreateChallengeRequest.login_context (2) { ip (1) = 0xff }
        let bytes = [0x12, 0x03, 0x0a, 0x01, 0xff];
        let status = error_of::<pb::CreateChallengeRequest>(&bytes);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "login_context.ip: is not valid UTF-8");
    }

    #[test]
    fn a_oneof_member_names_the_member() {
        // StreamChallengesRequest.create (2) { account_id (1) = 0xff }
        let bytes = [0x12, 0x03, 0x0a, 0x01, 0xff];
        let status = error_of::<pb::StreamChallengesRequest>(&bytes);
        assert_eq!(status.message(), "create.account_id: is not valid UTF-8");
    }

    #[test]
    fn a_bad_varint_names_the_request() {
        let status = error_of::<pb::GetChallengeRequest>(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("request: is not a valid protobuf encoding"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_device_body_names_its_member() {
        // DeviceRequest.body = get_challenge (10) { challenge_id (1) = 0xff }
        let e = pb::DeviceRequest::decode(&[0x52, 0x03, 0x0a, 0x01, 0xff][..]).expect_err("bad");
        assert_eq!(
            describe(&e.to_string(), "payload."),
            "payload.get_challenge.challenge_id: is not valid UTF-8"
        );
        assert_eq!(oneof_member("RevokeFromNoticeBody"), "revoke_from_notice");
    }

    #[test]
    fn an_outer_prefix_is_kept() {
        let e = pb::DeviceRequest::decode(&[0x0a, 0x01, 0xff][..]).expect_err("bad");
        assert_eq!(
            describe(&e.to_string(), "payload."),
            "payload.device_id: is not valid UTF-8"
        );
    }
}
