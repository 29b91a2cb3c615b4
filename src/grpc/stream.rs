//! StreamChallenges: one long-lived stream per busy backend. A session task reads requests, creates or
//! cancels challenges, and forwards the events of the challenges it created, each tagged with the
//! backend's request id. One task per stream (not per challenge); its events arrive on one unbounded
//! channel whose backlog is bounded by the stream's open challenges (see `watch::Sink`).

use super::backend::parse_create;
use super::convert::{self, challenge_to_pb};
use crate::challenge::{ChallengeId, MAX_NAME_LEN, check_name};
use crate::error::Error;
use crate::pb;
use crate::relay::Relay;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

/// The next request, once the client has not half-closed.
async fn next<S: Stream + Unpin>(inbound: &mut Option<S>) -> Option<S::Item> {
    match inbound {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Most challenges one StreamChallenges stream may follow at once.
pub const MAX_OPEN_PER_STREAM: usize = 10_000;

/// Serves one StreamChallenges stream over `inbound` (decoded requests, or the status of one that did not
/// decode): what the handler runs on tonic's stream and the fuzz target on its own sequences.
pub fn serve(
    relay: Arc<Relay>,
    inbound: impl Stream<Item = Result<pb::StreamChallengesRequest, Status>> + Send + Unpin + 'static,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<pb::StreamChallengesResponse, Status>> {
    let (out_tx, out_rx) = mpsc::channel(256);
    tokio::spawn(StreamSession::new(relay, out_tx).run(inbound, shutdown));
    tokio_stream::wrappers::ReceiverStream::new(out_rx)
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
                retry_after_seconds: match error {
                    Error::Limited(_, after) => {
                        u32::try_from(super::status::retry_after_secs(*after)).unwrap_or(u32::MAX)
                    }
                    _ => 0,
                },
            },
        )),
    }
}

impl StreamSession {
    fn new(
        relay: Arc<Relay>,
        out: mpsc::Sender<Result<pb::StreamChallengesResponse, Status>>,
    ) -> Self {
        Self {
            relay,
            out,
            open: HashMap::new(),
        }
    }

    /// Serves the stream until the client leaves, sends what cannot be decoded, or half-closes and
    /// every challenge created on the stream has ended; or until shutdown.
    async fn run(
        mut self,
        inbound: impl Stream<Item = Result<pb::StreamChallengesRequest, Status>> + Unpin,
        shutdown: CancellationToken,
    ) {
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let mut inbound = Some(inbound);
        loop {
            if inbound.is_none() && self.open.is_empty() {
                // Half-closed, and the last open challenge has ended: end the stream OK.
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = self.out.send(Err(Status::unavailable("relay shutting down; reconnect and watch again"))).await;
                    return;
                }
                Some(event) = events_rx.recv() => {
                    if !self.forward(event).await { return; }
                }
                request = next(&mut inbound), if inbound.is_some() => match request {
                    Some(Ok(request)) => {
                        if !self.handle(request, &events_tx).await { return; }
                    }
                    Some(Err(status)) if status.code() == Code::InvalidArgument => {
                        // A message that cannot be decoded: the framing held, but tonic stops reading
                        // the stream after a decode error, so it cannot go on; end it with the reason.
                        let _ = self.out.send(Err(status)).await;
                        return;
                    }
                    Some(Err(status)) => {
                        tracing::debug!(%status, "StreamChallenges client stream failed");
                        return;
                    }
                    // Half-close: no more requests, but the open challenges' events still come.
                    None => inbound = None,
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
                let result = match parse_create(create).map_err(|e| e.within("create.")) {
                    Ok(req) => self.relay.create_watched(req, events.clone()).await,
                    Err(e) => Err(e),
                };
                match result {
                    Err(e) => self.send(stream_error(&request_id, &e)).await,
                    Ok((challenge, created, registration, verdict)) => {
                        let response = pb::StreamChallengesResponse {
                            request_id: request_id.clone(),
                            response: Some(A::Created(pb::CreateChallengeResponse {
                                challenge: Some(challenge_to_pb(&challenge)),
                                created,
                                evaluation: Some(super::signin::verdict_to_pb(&verdict)),
                            })),
                        };
                        if !self.send(response).await {
                            return false;
                        }
                        if let Some(event) = challenge.terminal_event() {
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
