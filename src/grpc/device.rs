//! The device API handlers. Every call but Enroll is a signed envelope: parse it, authenticate it
//! (signature over the exact payload bytes, device id, timestamp), then run the one operation its body
//! names; the counter rule runs inside that operation's store step.

use super::convert;
use crate::auth::PublicKey;
use crate::device::Ticket;
use crate::error::Error;
use crate::pb;
use crate::pb::device_request::Body;
use crate::relay::{Authenticated, Relay};
use crate::store::NewDevice;
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Counters stay below 2^53 so that every store compares them exactly.
pub const MAX_COUNTER: u64 = 1 << 53;
/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Largest signature accepted, in bytes (a DER P-256 signature is at most 72).
const MAX_SIGNATURE: usize = 512;

/// The device-facing service.
#[derive(Clone)]
pub struct DeviceApi {
    relay: Arc<Relay>,
}

impl DeviceApi {
    /// Handlers on `relay`.
    pub fn new(relay: Arc<Relay>) -> Self {
        Self { relay }
    }

    /// Parses and authenticates an envelope whose body must be the one `expected` picks.
    async fn open(
        &self,
        request: Request<pb::SignedRequest>,
        rpc: &'static str,
        expected: fn(&Body) -> bool,
    ) -> Result<(Authenticated, Body), Error> {
        let envelope = request.into_inner();
        let device = convert::device_id("device_id", &envelope.device_id)?;
        check_bytes("payload", &envelope.payload, MAX_PAYLOAD)?;
        check_bytes("signature", &envelope.signature, MAX_SIGNATURE)?;
        let inner = pb::DeviceRequest::decode(envelope.payload.as_slice())
            .map_err(|_| Error::invalid("payload", "is not an encoded DeviceRequest"))?;
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
        let body = match inner.body {
            Some(body) if expected(&body) => body,
            _ => {
                return Err(Error::invalid(
                    "payload.body",
                    format!("must be the body for {rpc}"),
                ));
            }
        };
        let auth = self
            .relay
            .authenticate(
                &device,
                &inner.device_id,
                inner.counter,
                inner.timestamp_unix_ms,
                &envelope.payload,
                &envelope.signature,
            )
            .await?;
        Ok((auth, body))
    }
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

#[tonic::async_trait]
impl pb::device_service_server::DeviceService for DeviceApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let req = request.into_inner();
        check_bytes("payload", &req.payload, MAX_PAYLOAD)?;
        check_bytes("signature", &req.signature, MAX_SIGNATURE)?;
        let p = pb::EnrollPayload::decode(req.payload.as_slice())
            .map_err(|_| Error::invalid("payload", "is not an encoded EnrollPayload"))?;
        let ticket = Ticket::parse(&p.ticket).map_err(|e| Error::invalid("payload.ticket", e))?;
        let algorithm = convert::key_algorithm("payload.key_algorithm", p.key_algorithm)?;
        let key = PublicKey::parse(algorithm, &p.public_key)
            .map_err(|e| Error::invalid("payload.public_key", e))?;
        if p.timestamp_unix_ms == 0 {
            return Err(Error::invalid("payload.timestamp_unix_ms", "must be set").into());
        }
        let device = NewDevice {
            platform: convert::platform("payload.platform", p.platform)?,
            push_token: convert::required_text(
                "payload.push_token",
                &p.push_token,
                convert::PUSH_TOKEN_MAX,
            )?,
            app_id: convert::required_text("payload.app_id", &p.app_id, convert::APP_ID_MAX)?,
            key,
            display_name: convert::text(
                "payload.display_name",
                &p.display_name,
                convert::DISPLAY_NAME_MAX,
            )?,
        };
        let device = self
            .relay
            .enroll(
                &ticket,
                device,
                &req.payload,
                &req.signature,
                p.timestamp_unix_ms,
            )
            .await?;
        Ok(Response::new(pb::EnrollResponse {
            device_id: device.id.to_string(),
            counter: device.counter,
        }))
    }

    async fn get_challenge(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::DeviceChallenge>, Status> {
        let (auth, body) = self
            .open(request, "GetChallenge", |b| {
                matches!(b, Body::GetChallenge(_))
            })
            .await?;
        let Body::GetChallenge(body) = body else {
            return Err(Status::internal("body mismatch"));
        };
        let id = convert::challenge_id("payload.get_challenge.challenge_id", &body.challenge_id)?;
        let challenge = self.relay.device_challenge(&auth, &id).await?;
        Ok(Response::new(convert::device_challenge_to_pb(&challenge)))
    }

    async fn respond(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::RespondResponse>, Status> {
        let (auth, body) = self
            .open(request, "Respond", |b| matches!(b, Body::Respond(_)))
            .await?;
        let Body::Respond(body) = body else {
            return Err(Status::internal("body mismatch"));
        };
        let id = convert::challenge_id("payload.respond.challenge_id", &body.challenge_id)?;
        let decision = convert::decision(body.decision, body.deny_reason)?;
        let challenge = self
            .relay
            .respond(&auth, &id, decision, body.number)
            .await?;
        Ok(Response::new(pb::RespondResponse {
            state: convert::state_to_pb(&challenge.state).into(),
        }))
    }

    async fn list_pending(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        let (auth, _) = self
            .open(request, "ListPending", |b| {
                matches!(b, Body::ListPending(_))
            })
            .await?;
        let pending = self.relay.list_pending(&auth).await?;
        Ok(Response::new(pb::ListPendingResponse {
            challenges: pending
                .iter()
                .map(convert::device_challenge_to_pb)
                .collect(),
        }))
    }

    async fn update_push_token(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::DeviceAck>, Status> {
        let (auth, body) = self
            .open(request, "UpdatePushToken", |b| {
                matches!(b, Body::UpdatePushToken(_))
            })
            .await?;
        let Body::UpdatePushToken(body) = body else {
            return Err(Status::internal("body mismatch"));
        };
        let token = convert::required_text(
            "payload.update_push_token.push_token",
            &body.push_token,
            convert::PUSH_TOKEN_MAX,
        )?;
        let device = self.relay.update_push_token(&auth, &token).await?;
        Ok(Response::new(pb::DeviceAck {
            counter: device.counter,
        }))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::DeviceAck>, Status> {
        let (auth, body) = self
            .open(request, "RotateKey", |b| matches!(b, Body::RotateKey(_)))
            .await?;
        let Body::RotateKey(body) = body else {
            return Err(Status::internal("body mismatch"));
        };
        let algorithm = convert::key_algorithm(
            "payload.rotate_key.new_key_algorithm",
            body.new_key_algorithm,
        )?;
        let key = PublicKey::parse(algorithm, &body.new_public_key)
            .map_err(|e| Error::invalid("payload.rotate_key.new_public_key", e))?;
        let device = self
            .relay
            .rotate_key(&auth, &key, &body.new_key_proof)
            .await?;
        Ok(Response::new(pb::DeviceAck {
            counter: device.counter,
        }))
    }
}
