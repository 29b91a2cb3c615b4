//! The device API handlers. Every call but Enroll is a signed envelope: parse it, authenticate it
//! (signature over the exact payload bytes, device id, timestamp), then run the one operation its body
//! names; the counter rule runs inside that operation's store step.

use super::{convert, envelope};
use crate::auth::PublicKey;
use crate::error::Error;
use crate::pb;
use crate::pb::device_request::Body;
use crate::relay::{Authenticated, Relay, Revoked};
use std::sync::Arc;
use tonic::{Request, Response, Status};

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
        let source = request.remote_addr().map(|a| a.ip());
        let signed = request.into_inner();
        let opened = envelope::open(&signed, rpc, expected)?;
        let auth = self
            .relay
            .authenticate(
                &opened.device,
                &opened.inner_device,
                opened.counter,
                opened.timestamp_ms,
                &signed.payload,
                &signed.signature,
                source,
            )
            .await?;
        Ok((auth, opened.body))
    }
}

#[tonic::async_trait]
impl pb::device_service_server::DeviceService for DeviceApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let req = request.into_inner();
        let enrollment = envelope::open_enrollment(&req)?;
        let (device, secret) = self
            .relay
            .enroll(crate::relay::EnrollCall {
                ticket: &enrollment.ticket,
                device: enrollment.device,
                payload: &req.payload,
                signature: &req.signature,
                timestamp_ms: enrollment.timestamp_ms,
                offline_code: enrollment.offline_code,
                attestation: enrollment
                    .evidence
                    .as_ref()
                    .map(|e| (e, enrollment.client_data.as_slice())),
            })
            .await?;
        Ok(Response::new(pb::EnrollResponse {
            device_id: device.id.to_string(),
            counter: device.counter,
            offline_code_secret: secret.map(|s| crate::totp::base32(&s)).unwrap_or_default(),
            assurance: convert::assurance_to_pb(device.attestation.assurance).into(),
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
        let fallback = convert::text(
            "payload.update_push_token.fallback_push_token",
            &body.fallback_push_token,
            convert::PUSH_TOKEN_MAX,
        )?;
        let fallback = (!fallback.is_empty()).then_some(fallback);
        let device = self
            .relay
            .update_push_token(&auth, &token, fallback.as_deref())
            .await?;
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

    async fn get_notice(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::DeviceNotice>, Status> {
        let (auth, body) = self
            .open(request, "GetNotice", |b| matches!(b, Body::GetNotice(_)))
            .await?;
        let Body::GetNotice(body) = body else {
            return Err(Status::internal("body mismatch"));
        };
        let id = convert::notice_id("payload.get_notice.notice_id", &body.notice_id)?;
        let (notice, subject) = self.relay.device_notice(&auth, &id).await?;
        Ok(Response::new(convert::notice_to_pb(
            &notice,
            subject.as_ref(),
            &auth.device.id,
        )))
    }

    async fn list_notices(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::ListNoticesResponse>, Status> {
        let (auth, _) = self
            .open(request, "ListNotices", |b| {
                matches!(b, Body::ListNotices(_))
            })
            .await?;
        let notices = self.relay.device_notices(&auth).await?;
        Ok(Response::new(pb::ListNoticesResponse {
            notices: notices
                .iter()
                .map(|(n, subject)| convert::notice_to_pb(n, subject.as_ref(), &auth.device.id))
                .collect(),
        }))
    }

    async fn revoke_from_notice(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::RevokeFromNoticeResponse>, Status> {
        let (auth, body) = self
            .open(request, "RevokeFromNotice", |b| {
                matches!(b, Body::RevokeFromNotice(_))
            })
            .await?;
        let Body::RevokeFromNotice(body) = body else {
            return Err(Status::internal("body mismatch"));
        };
        let id = convert::notice_id("payload.revoke_from_notice.notice_id", &body.notice_id)?;
        Ok(Response::new(
            match self.relay.revoke_from_notice(&auth, &id).await? {
                Revoked::Device(device) => pb::RevokeFromNoticeResponse {
                    revoked_device_id: device.id.to_string(),
                    revoked_sign_in_id: String::new(),
                },
                Revoked::SignIn(sign_in_id) => pb::RevokeFromNoticeResponse {
                    revoked_device_id: String::new(),
                    revoked_sign_in_id: sign_in_id,
                },
            },
        ))
    }
}
