//! The backend API handlers: ChallengeService, DeviceRegistry, AuditService. Each parses its request,
//! calls the relay, and converts the answer.

use super::convert::{self, challenge_to_pb};
use super::{EventStream, until_shutdown};
use crate::challenge::{ChallengeId, MAX_NAME_LEN, check_name};
use crate::error::Error;
use crate::pb;
use crate::relay::{CreateRequest, Relay, WatchItem};
use crate::store::StoreError;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Most challenges one StreamChallenges stream may follow at once.
pub const MAX_OPEN_PER_STREAM: usize = 10_000;

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

fn parse_create(req: pb::CreateChallengeRequest) -> Result<CreateRequest, Error> {
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
    })
}

fn watch_item_to_pb(item: &WatchItem, now_ms: i64) -> pb::ChallengeEvent {
    match item {
        WatchItem::Snapshot(c) => convert::snapshot_to_pb(c, now_ms),
        WatchItem::Event(e) => convert::event_to_pb(e),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[tonic::async_trait]
impl pb::challenge_service_server::ChallengeService for BackendApi {
    async fn create_challenge(
        &self,
        request: Request<pb::CreateChallengeRequest>,
    ) -> Result<Response<pb::CreateChallengeResponse>, Status> {
        let req = parse_create(request.into_inner())?;
        let (challenge, created) = self.relay.create_challenge(req).await?;
        Ok(Response::new(pb::CreateChallengeResponse {
            challenge: Some(challenge_to_pb(&challenge)),
            created,
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
        let (out_tx, out_rx) = mpsc::channel(256);
        let session = StreamSession {
            relay: Arc::clone(&self.relay),
            out: out_tx,
            open: HashMap::new(),
        };
        tokio::spawn(session.run(inbound, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

/// Decrements a gauge when dropped (the stream ended or the client left).
struct GaugeGuard(&'static str);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// One StreamChallenges stream: its open challenges and where their events go.
struct StreamSession {
    relay: Arc<Relay>,
    out: mpsc::Sender<Result<pb::StreamChallengesResponse, Status>>,
    open: HashMap<ChallengeId, (String, u64, crate::watch::Registration)>,
}

fn stream_error(request_id: &str, error: &Error) -> pb::StreamChallengesResponse {
    pb::StreamChallengesResponse {
        request_id: request_id.to_owned(),
        response: Some(pb::stream_challenges_response::Response::Error(
            pb::StreamError {
                code: super::status::code(error) as i32,
                message: error.to_string(),
                retry_after_seconds: 0,
            },
        )),
    }
}

impl StreamSession {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::StreamChallengesRequest>,
        shutdown: CancellationToken,
    ) {
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = self.out.send(Err(Status::unavailable("relay shutting down; reconnect and watch again"))).await;
                    return;
                }
                Some(event) = events_rx.recv() => {
                    if !self.forward(event).await { return; }
                }
                request = inbound.next() => match request {
                    Some(Ok(request)) => {
                        if !self.handle(request, &events_tx).await { return; }
                    }
                    Some(Err(status)) => {
                        tracing::debug!(%status, "StreamChallenges client stream failed");
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    async fn send(&self, response: pb::StreamChallengesResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    async fn forward(&mut self, event: crate::challenge::Event) -> bool {
        let Some((request_id, seen, _)) = self.open.get_mut(&event.challenge_id) else {
            return true;
        };
        if event.sequence <= *seen {
            return true;
        }
        *seen = event.sequence;
        let response = pb::StreamChallengesResponse {
            request_id: request_id.clone(),
            response: Some(pb::stream_challenges_response::Response::Event(
                convert::event_to_pb(&event),
            )),
        };
        if event.is_terminal() {
            self.open.remove(&event.challenge_id);
        }
        self.send(response).await
    }

    async fn handle(
        &mut self,
        request: pb::StreamChallengesRequest,
        events: &mpsc::UnboundedSender<crate::challenge::Event>,
    ) -> bool {
        use pb::stream_challenges_request::Request as R;
        use pb::stream_challenges_response::Response as A;
        let request_id = request.request_id;
        if let Err(e) = check_name(&request_id, MAX_NAME_LEN) {
            return self
                .send(stream_error(&request_id, &Error::invalid("request_id", e)))
                .await;
        }
        match request.request {
            None => {
                self.send(stream_error(
                    &request_id,
                    &Error::invalid("request", "must be create or cancel"),
                ))
                .await
            }
            Some(R::Cancel(cancel)) => {
                let result =
                    match convert::challenge_id("cancel.challenge_id", &cancel.challenge_id) {
                        Ok(id) => self.relay.cancel(&id).await,
                        Err(e) => Err(e),
                    };
                let response = match result {
                    Ok((c, cancelled)) => pb::StreamChallengesResponse {
                        request_id,
                        response: Some(A::Cancelled(pb::CancelChallengeResponse {
                            challenge: Some(challenge_to_pb(&c)),
                            cancelled,
                        })),
                    },
                    Err(e) => stream_error(&request_id, &e),
                };
                self.send(response).await
            }
            Some(R::Create(create)) => {
                if self.open.len() >= MAX_OPEN_PER_STREAM {
                    let e = Error::invalid(
                        "request",
                        format!("at most {MAX_OPEN_PER_STREAM} open challenges per stream"),
                    );
                    return self.send(stream_error(&request_id, &e)).await;
                }
                let result = match parse_create(create).map_err(|e| prefix(e, "create.")) {
                    Ok(req) => self.relay.create_watched(req, events.clone()).await,
                    Err(e) => Err(e),
                };
                match result {
                    Err(e) => self.send(stream_error(&request_id, &e)).await,
                    Ok((challenge, created, registration)) => {
                        let terminal = challenge.state.is_terminal();
                        let response = pb::StreamChallengesResponse {
                            request_id: request_id.clone(),
                            response: Some(A::Created(pb::CreateChallengeResponse {
                                challenge: Some(challenge_to_pb(&challenge)),
                                created,
                            })),
                        };
                        if !self.send(response).await {
                            return false;
                        }
                        if terminal {
                            let event = crate::challenge::Event {
                                challenge_id: challenge.id.clone(),
                                sequence: challenge.sequence,
                                at_ms: challenge.ended_at_ms,
                                kind: crate::challenge::EventKind::Ended(challenge.state.clone()),
                            };
                            return self
                                .send(pb::StreamChallengesResponse {
                                    request_id,
                                    response: Some(A::Event(convert::event_to_pb(&event))),
                                })
                                .await;
                        }
                        self.open.insert(
                            challenge.id.clone(),
                            (request_id, challenge.sequence, registration),
                        );
                        true
                    }
                }
            }
        }
    }
}

/// Prefixes the field of an InvalidArgument (a nested request's fields).
fn prefix(error: Error, outer: &'static str) -> Error {
    match error {
        Error::InvalidArgument { field, reason } => Error::InvalidArgument {
            field: leak_field(outer, field),
            reason,
        },
        other => other,
    }
}

fn leak_field(outer: &'static str, field: &'static str) -> &'static str {
    // Field names form a small fixed set, so this cache stays tiny.
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<HashMap<(&'static str, &'static str), &'static str>>,
    > = std::sync::OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry((outer, field))
        .or_insert_with(|| Box::leak(format!("{outer}{field}").into_boxed_str()))
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
        let devices = self.relay.list_devices(&account).await?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: devices.iter().map(convert::device_to_pb).collect(),
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
