//! The replica's subscriber (RESP3 push messages; on Cluster one connection per node, sharded channels)
//! and the task that owns it: batches subscriptions for the hub's challenges, hands every message to the
//! hub, and after a disconnection re-subscribes every watched channel itself, one slot at a time, then
//! re-reads each watched challenge so a watcher gets any terminal event it missed (DESIGN.md guarantee
//! 3). redis-rs' own re-subscription on Cluster sends a node's channels of many slots in one SSUBSCRIBE,
//! which Redis refuses (CROSSSLOT) and redis-rs drops silently (DESIGN.md §9): ours does not rely on it.
//! Exact channel names only, never patterns.

use super::conn::{Conn, Target};
use super::{codec, keys};
use crate::challenge::ChallengeId;
use crate::store::StoreError;
use crate::watch::Hub;
use ::redis::{AsyncCommands, PushKind, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest wait for a subscription (e.g. while the subscriber is re-connecting).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);

enum Op {
    Subscribe(ChallengeId, oneshot::Sender<Result<(), StoreError>>),
    Idle(ChallengeId),
}

/// Hands subscription requests to the subscriber task.
#[derive(Clone)]
pub struct Subscriber {
    ops: mpsc::UnboundedSender<Op>,
}

impl Subscriber {
    /// Subscribes to a challenge's channel; returns once Redis confirmed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn subscribe(&self, id: &ChallengeId) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Subscribe(id.clone(), tx))
            .map_err(|_| StoreError::Unavailable("subscriber stopped".into()))?;
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Unavailable("subscriber stopped".into())),
            Err(_) => Err(StoreError::Unavailable("subscribe timed out".into())),
        }
    }
}

fn unavailable(e: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Connects the subscriber and starts its task.
///
/// # Errors
/// [`StoreError::Unavailable`] when Redis cannot be reached at start.
pub async fn start(
    target: &Target,
    commands: Conn,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> Result<Subscriber, StoreError> {
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let conn = Conn::connect(target, Some(push_tx))
        .await
        .map_err(unavailable)?;
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel();
    hub.notify_idle(idle_tx);
    let forward = ops_tx.clone();
    tokio::spawn(async move {
        while let Some(id) = idle_rx.recv().await {
            if forward.send(Op::Idle(id)).is_err() {
                return;
            }
        }
    });
    let task = Task {
        conn,
        commands,
        hub,
        push_rx,
        ops_rx,
    };
    tokio::spawn(task.run(shutdown));
    Ok(Subscriber { ops: ops_tx })
}

struct Task {
    conn: Conn,
    commands: Conn,
    hub: Arc<Hub>,
    push_rx: mpsc::UnboundedReceiver<::redis::PushInfo>,
    ops_rx: mpsc::UnboundedReceiver<Op>,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(push) = self.push_rx.recv() => self.on_push(push, &shutdown).await,
                Some(op) = self.ops_rx.recv() => {
                    let mut batch = vec![op];
                    while let Ok(more) = self.ops_rx.try_recv() {
                        batch.push(more);
                    }
                    self.apply(batch).await;
                }
                else => return,
            }
        }
    }

    async fn apply(&mut self, batch: Vec<Op>) {
        let mut subscribe = Vec::new();
        let mut acks = Vec::new();
        let mut unsubscribe = Vec::new();
        for op in batch {
            match op {
                Op::Subscribe(id, ack) => {
                    subscribe.push(keys::channel(&id));
                    acks.push(ack);
                }
                // A watcher may have come back since: only drop channels nobody here watches now.
                Op::Idle(id) if !self.hub.contains(&id) => unsubscribe.push(keys::channel(&id)),
                Op::Idle(_) => {}
            }
        }
        if !subscribe.is_empty() {
            let result = self
                .conn
                .subscribe(&subscribe)
                .await
                .map_err(|e| e.to_string());
            for ack in acks {
                let _ = ack.send(result.clone().map_err(StoreError::Unavailable));
            }
        }
        if !unsubscribe.is_empty()
            && let Err(error) = self.conn.unsubscribe(&unsubscribe).await
        {
            tracing::debug!(%error, "unsubscribe failed; the channels go with the connection");
        }
    }

    async fn on_push(&mut self, push: ::redis::PushInfo, shutdown: &CancellationToken) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let [Value::BulkString(channel), Value::BulkString(payload), ..] =
                    push.data.as_slice()
                else {
                    return;
                };
                let Some(id) = std::str::from_utf8(channel)
                    .ok()
                    .and_then(|c| c.rsplit_once("ev:"))
                    .and_then(|(_, id)| ChallengeId::parse(id).ok())
                else {
                    return;
                };
                match codec::event(&id, payload) {
                    Ok(event) => self.hub.dispatch(&event),
                    Err(error) => tracing::warn!(%error, "undecodable event"),
                }
            }
            PushKind::Disconnection => {
                metrics::counter!("relay_redis_disconnections_total").increment(1);
                tracing::warn!(
                    "redis subscriber connection lost; re-subscribing and re-reading watched challenges"
                );
                self.resync(shutdown).await;
            }
            _ => {}
        }
    }

    /// Re-subscribes every watched channel (retrying until Redis answers), then re-reads each watched
    /// challenge and hands watchers its terminal event if it ended meanwhile.
    async fn resync(&mut self, shutdown: &CancellationToken) {
        let mut delay = Duration::from_millis(50);
        loop {
            let channels: Vec<String> = self.hub.watched().iter().map(keys::channel).collect();
            let done = if channels.is_empty() {
                Ok(())
            } else {
                self.conn.subscribe(&channels).await
            };
            match done {
                Ok(()) => break,
                Err(error) => {
                    tracing::debug!(%error, "re-subscribe failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
        for id in self.hub.watched() {
            let hash: ::redis::RedisResult<codec::Hash> =
                self.commands.hgetall(keys::challenge(&id)).await;
            // An empty hash is a challenge that does not exist (a StreamChallenges create registered its
            // watcher before a create that then never happened, or retention ended): nothing to tell.
            if hash.as_ref().is_ok_and(std::collections::HashMap::is_empty) {
                continue;
            }
            match hash
                .map_err(unavailable)
                .and_then(|h| codec::challenge(&id, &h))
            {
                Ok(c) => {
                    if let Some(event) = c.terminal_event() {
                        self.hub.dispatch(&event);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, challenge_id = %id, "could not re-read a watched challenge")
                }
            }
        }
    }
}
