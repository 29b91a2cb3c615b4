//! The backend API handlers: ChallengeService, DeviceRegistry, AuditService. Each parses its request,
//! calls the relay, and converts the answer.

use super::convert::{self, challenge_to_pb};
use super::{EventStream, until_shutdown};
use crate::challenge::{MAX_NAME_LEN, check_name};
use crate::error::Error;
use crate::notice::MAX_SIGN_IN_ID_LEN;
use crate::pb;
use crate::relay::{CreateRequest, Relay, WatchItem};
use crate::store::StoreError;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// The backend-facing services.
#[derive(Clone)]
pub struct BackendApi {
    relay: Arc<Relay>,
    shutdown: CancellationToken,
}

impl BackendApi {
    /// Handlers on `relay`; open streams end with UNAVAILABLE when `shutdown` fires.
    pub fn new(relay: Arc<Relay>, shutdown: CancellationToken) -> Self {
        Self { relay, shutdown }
    }
}

/// Validates a CreateChallenge request into the use case's input; pure, so it is fuzzed as is.
///
/// # Errors
/// `InvalidArgument` naming the field.
pub fn parse_create(req: pb::CreateChallengeRequest) -> Result<CreateRequest, Error> {
    let account = convert::account("account_id", &req.account_id)?;
    let idempotency_key = match req.idempotency_key.as_str() {
        "" => None,
        key => Some(
            check_name(key, MAX_NAME_LEN)
                .map(|()| key.to_owned())
                .map_err(|e| Error::invalid("idempotency_key", e))?,
        ),
    };
    Ok(CreateRequest {
        account,
        context: convert::login_context(req.login_context)?,
        idempotency_key,
        ttl: (req.ttl_seconds != 0).then(|| Duration::from_secs(u64::from(req.ttl_seconds))),
        mode: convert::number_mode(req.number_match_mode)?,
        min_assurance: convert::min_assurance("min_assurance", req.min_assurance)?,
    })
}

fn watch_item_to_pb(item: &WatchItem, now_ms: i64) -> pb::ChallengeEvent {
    match item {
        WatchItem::Snapshot(c) => convert::snapshot_to_pb(c, now_ms),
        WatchItem::Event(e) => convert::event_to_pb(e),
    }
}

use crate::clock::now_ms;

#[tonic::async_trait]
impl pb::challenge_service_server::ChallengeService for BackendApi {
    async fn create_challenge(
        &self,
        request: Request<pb::CreateChallengeRequest>,
    ) -> Result<Response<pb::CreateChallengeResponse>, Status> {
        let req = parse_create(request.into_inner())?;
        let (challenge, created, verdict) = self.relay.create_challenge(req).await?;
        Ok(Response::new(pb::CreateChallengeResponse {
            challenge: Some(challenge_to_pb(&challenge)),
            created,
            evaluation: Some(super::signin::verdict_to_pb(&verdict)),
        }))
    }

    type WatchChallengeStream = EventStream<pb::ChallengeEvent>;

    async fn watch_challenge(
        &self,
        request: Request<pb::WatchChallengeRequest>,
    ) -> Result<Response<Self::WatchChallengeStream>, Status> {
        let id = convert::challenge_id("challenge_id", &request.get_ref().challenge_id)?;
        let stream = self.relay.watch(&id).await?;
        metrics::gauge!("relay_open_watch_streams").increment(1.0);
        let guard = GaugeGuard("relay_open_watch_streams");
        let events = stream.map(move |item| {
            let _keep = &guard;
            item.map(|i| watch_item_to_pb(&i, now_ms()))
                .map_err(Status::from)
        });
        Ok(Response::new(until_shutdown(events, self.shutdown.clone())))
    }

    async fn send_sign_in_notice(
        &self,
        request: Request<pb::SendSignInNoticeRequest>,
    ) -> Result<Response<pb::SendSignInNoticeResponse>, Status> {
        let req = request.into_inner();
        let account = convert::account("account_id", &req.account_id)?;
        let context = convert::login_context(req.login_context)?;
        let sign_in_id = convert::text("sign_in_id", &req.sign_in_id, MAX_SIGN_IN_ID_LEN)?;
        let notice = self
            .relay
            .send_sign_in_notice(account, context, sign_in_id)
            .await?;
        Ok(Response::new(pb::SendSignInNoticeResponse {
            notice_id: notice.id.to_string(),
            targeted_device_ids: notice.targets.iter().map(ToString::to_string).collect(),
            expires_at_unix_ms: notice.expires_at_ms,
        }))
    }

    async fn get_challenge(
        &self,
        request: Request<pb::GetChallengeRequest>,
    ) -> Result<Response<pb::Challenge>, Status> {
        let id = convert::challenge_id("challenge_id", &request.get_ref().challenge_id)?;
        Ok(Response::new(challenge_to_pb(
            &self.relay.get_challenge(&id).await?,
        )))
    }

    async fn cancel_challenge(
        &self,
        request: Request<pb::CancelChallengeRequest>,
    ) -> Result<Response<pb::CancelChallengeResponse>, Status> {
        let id = convert::challenge_id("challenge_id", &request.get_ref().challenge_id)?;
        let (challenge, cancelled) = self.relay.cancel(&id).await?;
        Ok(Response::new(pb::CancelChallengeResponse {
            challenge: Some(challenge_to_pb(&challenge)),
            cancelled,
        }))
    }

    type StreamChallengesStream = EventStream<pb::StreamChallengesResponse>;

    async fn stream_challenges(
        &self,
        request: Request<Streaming<pb::StreamChallengesRequest>>,
    ) -> Result<Response<Self::StreamChallengesStream>, Status> {
        let inbound = request.into_inner();
        Ok(Response::new(Box::pin(super::stream::serve(
            Arc::clone(&self.relay),
            inbound,
            self.shutdown.clone(),
        ))))
    }

    async fn evaluate_sign_in(
        &self,
        request: Request<pb::EvaluateSignInRequest>,
    ) -> Result<Response<pb::EvaluateSignInResponse>, Status> {
        Ok(Response::new(
            super::signin::evaluate(&self.relay, request.into_inner()).await?,
        ))
    }

    async fn verify_code(
        &self,
        request: Request<pb::VerifyCodeRequest>,
    ) -> Result<Response<pb::VerifyCodeResponse>, Status> {
        Ok(Response::new(
            super::signin::verify_code(&self.relay, request.into_inner()).await?,
        ))
    }

    async fn list_known_sign_ins(
        &self,
        request: Request<pb::ListKnownSignInsRequest>,
    ) -> Result<Response<pb::ListKnownSignInsResponse>, Status> {
        Ok(Response::new(
            super::signin::list_known(&self.relay, request.get_ref()).await?,
        ))
    }

    async fn forget_known_sign_in(
        &self,
        request: Request<pb::ForgetKnownSignInRequest>,
    ) -> Result<Response<pb::ForgetKnownSignInResponse>, Status> {
        Ok(Response::new(
            super::signin::forget_known(&self.relay, request.get_ref()).await?,
        ))
    }
}

/// Decrements a gauge when dropped (the stream ended or the client left).
struct GaugeGuard(&'static str);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

#[tonic::async_trait]
impl pb::device_registry_server::DeviceRegistry for BackendApi {
    async fn create_enrollment(
        &self,
        request: Request<pb::CreateEnrollmentRequest>,
    ) -> Result<Response<pb::CreateEnrollmentResponse>, Status> {
        let req = request.into_inner();
        let account = convert::account("account_id", &req.account_id)?;
        let ttl = (req.ttl_seconds != 0).then(|| Duration::from_secs(u64::from(req.ttl_seconds)));
        let (ticket, expires_at_unix_ms, enrollment_uri) =
            self.relay.create_enrollment(account, ttl).await?;
        Ok(Response::new(pb::CreateEnrollmentResponse {
            ticket: ticket.as_str().to_owned(),
            expires_at_unix_ms,
            enrollment_uri,
        }))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let account = convert::account("account_id", &request.get_ref().account_id)?;
        let (devices, with_code) = tokio::try_join!(
            self.relay.list_devices(&account),
            self.relay.devices_with_code(&account)
        )?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: devices
                .iter()
                .map(|d| pb::DeviceInfo {
                    has_offline_code: with_code.contains(&d.id),
                    ..convert::device_to_pb(d)
                })
                .collect(),
        }))
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::RevokeDeviceResponse>, Status> {
        let req = request.get_ref();
        let account = convert::account("account_id", &req.account_id)?;
        let device = convert::device_id("device_id", &req.device_id)?;
        let device = self.relay.revoke_device(&account, &device).await?;
        Ok(Response::new(pb::RevokeDeviceResponse {
            device: Some(convert::device_to_pb(&device)),
        }))
    }

    async fn create_authenticator(
        &self,
        request: Request<pb::CreateAuthenticatorRequest>,
    ) -> Result<Response<pb::CreateAuthenticatorResponse>, Status> {
        Ok(Response::new(
            super::signin::create_authenticator(&self.relay, request.get_ref()).await?,
        ))
    }

    async fn delete_authenticator(
        &self,
        request: Request<pb::DeleteAuthenticatorRequest>,
    ) -> Result<Response<pb::DeleteAuthenticatorResponse>, Status> {
        Ok(Response::new(
            super::signin::delete_authenticator(&self.relay, request.get_ref()).await?,
        ))
    }
}

fn position_field(field: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Store(StoreError::InvalidPosition) => {
            Error::invalid(field, "is not a position this relay issued")
        }
        other => other,
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for BackendApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let req = request.into_inner();
        let account = convert::account("account_id", &req.account_id)?;
        let limit = match req.page_size {
            0 => 50,
            n @ 1..=500 => n as usize,
            _ => return Err(Error::invalid("page_size", "must be at most 500").into()),
        };
        let before = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        let page = self
            .relay
            .list_audit(&account, before, limit)
            .await
            .map_err(position_field("page_token"))?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.records.iter().map(convert::audit_to_pb).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    type WatchSecurityEventsStream = EventStream<pb::SecurityEvent>;

    async fn watch_security_events(
        &self,
        request: Request<pb::WatchSecurityEventsRequest>,
    ) -> Result<Response<Self::WatchSecurityEventsStream>, Status> {
        let after = request.into_inner().after_position;
        let after = (!after.is_empty()).then_some(after);
        // Validate the position before the stream starts, so a bad one is a plain error.
        self.relay
            .security_events(after.as_deref(), Duration::ZERO)
            .await
            .map_err(position_field("after_position"))?;
        let relay = Arc::clone(&self.relay);
        let start = Some((relay, after, std::collections::VecDeque::new()));
        let stream = futures::stream::unfold(start, |state| async move {
            let (relay, mut after, mut buffer) = state?;
            loop {
                if let Some(event) = buffer.pop_front() {
                    let event: crate::audit::SecurityEvent = event;
                    after = Some(event.position.clone());
                    return Some((
                        Ok(convert::security_to_pb(&event)),
                        Some((relay, after, buffer)),
                    ));
                }
                match relay
                    .security_events(after.as_deref(), Duration::from_secs(5))
                    .await
                {
                    Ok(events) => buffer.extend(events),
                    Err(e) => return Some((Err(Status::from(e)), None)),
                }
            }
        });
        Ok(Response::new(until_shutdown(stream, self.shutdown.clone())))
    }
}
