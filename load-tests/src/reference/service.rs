//! The reference's RPCs and its side of the decision fan-out.

use crate::pb;
use crate::store::{DECIDED, Device, Store};
use approval_relay::device::Platform;
use approval_relay::push::apns::ApnsProvider;
use approval_relay::push::fcm::FcmProvider;
use approval_relay::push::{PushKind, PushMessage, PushProvider};
use futures::StreamExt;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

type Outbound = mpsc::UnboundedSender<Result<pb::StreamChallengesResponse, Status>>;

/// One replica: the store, the push clients, and the creates on this replica awaiting a decision.
pub struct Reference {
    store: Store,
    apns: ApnsProvider,
    fcm: FcmProvider,
    waiting: Mutex<HashMap<String, (Outbound, String)>>,
}

impl Reference {
    /// A replica over `store`, pushing through `apns` and `fcm`.
    pub fn new(store: Store, apns: ApnsProvider, fcm: FcmProvider) -> Self {
        Self {
            store,
            apns,
            fcm,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Outbound, String)>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pushes `kind` to every device but `except`, all at once.
    fn push(
        self: &Arc<Self>,
        kind: PushKind,
        challenge: String,
        devices: Vec<Device>,
        except: &str,
    ) {
        let devices: Vec<Device> = devices.into_iter().filter(|d| d.id != except).collect();
        if devices.is_empty() {
            return;
        }
        let relay = Arc::clone(self);
        tokio::spawn(async move {
            let sends = devices.into_iter().map(|device| {
                let message = PushMessage {
                    kind,
                    id: challenge.clone(),
                    expires_at_ms: now_ms() + 60_000,
                    give_up_at: Instant::now() + Duration::from_secs(30),
                    platform: if device.platform == 'a' {
                        Platform::Apns
                    } else {
                        Platform::Fcm
                    },
                    token: device.token,
                    app_id: device.app_id,
                };
                let relay = Arc::clone(&relay);
                async move {
                    match message.platform {
                        Platform::Apns => relay.apns.send(&message).await,
                        _ => relay.fcm.send(&message).await,
                    }
                }
            });
            futures::future::join_all(sends).await;
        });
    }

    async fn create(
        self: &Arc<Self>,
        request_id: String,
        create: pb::CreateChallengeRequest,
        out: &Outbound,
    ) {
        let challenge = format!("{:032x}", rand::random::<u128>());
        let ttl_ms = u64::from(create.ttl_seconds.max(1)) * 1000;
        match self
            .store
            .create(&create.account_id, &challenge, ttl_ms)
            .await
        {
            Ok(devices) => {
                self.waiting()
                    .insert(challenge.clone(), (out.clone(), request_id.clone()));
                let _ = out.send(Ok(pb::StreamChallengesResponse {
                    request_id,
                    response: Some(pb::stream_challenges_response::Response::Created(
                        pb::CreateChallengeResponse {
                            challenge: Some(pb::Challenge {
                                challenge_id: challenge.clone(),
                                ..Default::default()
                            }),
                            created: true,
                            evaluation: None,
                        },
                    )),
                }));
                self.push(PushKind::Challenge, challenge, devices, "");
            }
            Err(e) => {
                let _ = out.send(Err(Status::unavailable(e.to_string())));
            }
        }
    }

    /// A decision published by any replica: tell this replica's stream that created it, if any.
    fn decided(&self, payload: &str) {
        let Some((challenge, device)) = payload.split_once('|') else {
            return;
        };
        let Some((out, request_id)) = self.waiting().remove(challenge) else {
            return;
        };
        let _ = out.send(Ok(pb::StreamChallengesResponse {
            request_id,
            response: Some(pb::stream_challenges_response::Response::Event(
                pb::ChallengeEvent {
                    challenge_id: challenge.to_owned(),
                    sequence: 1,
                    at_unix_ms: now_ms(),
                    kind: Some(pb::challenge_event::Kind::Approved(pb::Approved {
                        device_id: device.to_owned(),
                    })),
                },
            )),
        }));
    }
}

/// Subscribes to decisions until the connection drops.
pub async fn listen_for_decisions(relay: Arc<Reference>, client: redis::Client) {
    let mut pubsub = match client.get_async_pubsub().await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("relay-reference: subscribe: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = pubsub.subscribe(DECIDED).await {
        eprintln!("relay-reference: subscribe: {e}");
        std::process::exit(1);
    }
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        if let Ok(payload) = message.get_payload::<String>() {
            relay.decided(&payload);
        }
    }
    eprintln!("relay-reference: the subscription ended");
    std::process::exit(1);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl pb::challenge_service_server::ChallengeService for Reference {
    async fn stream_challenges(
        self: Arc<Self>,
        request: Request<tonic::Streaming<pb::StreamChallengesRequest>>,
    ) -> Result<Response<BoxStream<pb::StreamChallengesResponse>>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(pb::stream_challenges_request::Request::Create(create)) =
                    message.request
                {
                    let relay = Arc::clone(&self);
                    let tx = tx.clone();
                    tokio::spawn(
                        async move { relay.create(message.request_id, create, &tx).await },
                    );
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }
}

#[tonic::async_trait]
impl pb::device_registry_server::DeviceRegistry for Reference {
    async fn create_enrollment(
        self: Arc<Self>,
        request: Request<pb::CreateEnrollmentRequest>,
    ) -> Result<Response<pb::CreateEnrollmentResponse>, Status> {
        // The ticket is the account itself: the reference trusts whoever enrolls.
        Ok(Response::new(pb::CreateEnrollmentResponse {
            ticket: request.into_inner().account_id,
            expires_at_unix_ms: now_ms() + 600_000,
            enrollment_uri: String::new(),
        }))
    }
}

#[tonic::async_trait]
impl pb::device_service_server::DeviceService for Reference {
    async fn enroll(
        self: Arc<Self>,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let payload =
            pb::EnrollPayload::decode(request.into_inner().payload.as_slice()).map_err(bad)?;
        let device = Device {
            id: format!("{:032x}", rand::random::<u128>()),
            platform: if payload.platform == pb::Platform::Apns as i32 {
                'a'
            } else {
                'f'
            },
            app_id: payload.app_id,
            token: payload.push_token,
        };
        self.store
            .enroll(&payload.ticket, &device)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::EnrollResponse {
            device_id: device.id,
            ..Default::default()
        }))
    }

    async fn get_challenge(
        self: Arc<Self>,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::DeviceChallenge>, Status> {
        let inner =
            pb::DeviceRequest::decode(request.into_inner().payload.as_slice()).map_err(bad)?;
        let Some(pb::device_request::Body::GetChallenge(body)) = inner.body else {
            return Err(bad("not a get-challenge body"));
        };
        let state = self
            .store
            .state(&body.challenge_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found("no such challenge"))?;
        let state = if state == "p" {
            pb::ChallengeState::Pending
        } else {
            pb::ChallengeState::Approved
        };
        Ok(Response::new(pb::DeviceChallenge {
            challenge_id: body.challenge_id,
            state: state.into(),
            ..Default::default()
        }))
    }

    async fn respond(
        self: Arc<Self>,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::RespondResponse>, Status> {
        let inner =
            pb::DeviceRequest::decode(request.into_inner().payload.as_slice()).map_err(bad)?;
        let Some(pb::device_request::Body::Respond(body)) = inner.body else {
            return Err(bad("not a respond body"));
        };
        let devices = self
            .store
            .respond(&body.challenge_id, &inner.device_id, body.decision)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::failed_precondition("not pending"))?;
        self.push(
            PushKind::Withdraw,
            body.challenge_id,
            devices,
            &inner.device_id,
        );
        Ok(Response::new(pb::RespondResponse {
            state: pb::ChallengeState::Approved.into(),
        }))
    }
}
