//! Ended challenges leave the overdue index soon after they end, so that the sweep never meets a
//! decided challenge at its deadline; and a challenge whose pushes this replica finished loses its
//! push-work member (`keys::push_member`) the same way. The index lives in slots other than the
//! account's, so this cannot be part of the script that ends the challenge or records the last push
//! outcome; one ZREM per challenge would be one more command and round trip on the hot path, so removals
//! are gathered for [`FLUSH_EVERY`] and sent as one ZREM per shard, all at once on the multiplexed
//! connection. A batch that is lost (a crash, a node down) costs nothing but the old behaviour: the sweep
//! hands the entry out and the expiry finds the challenge ended, or the claim finds its pushes done.

use super::conn::Conn;
use super::keys;
use crate::challenge::ChallengeId;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long removals are gathered before they are sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Removals sent at once at most (a burst flushes early).
const MAX_BATCH: usize = 4_096;

/// One member to take out of an overdue-index shard.
struct Removal {
    /// The shard key (`keys::due`).
    shard: String,
    /// The challenge id, or its push-work member.
    member: String,
    /// Whether it is an ended challenge's entry (counted in `relay_overdue_removed_total`).
    ended: bool,
}

/// Hands ended challenges and finished push work to the task that takes them out of the overdue index.
#[derive(Clone)]
pub struct Forgetter(mpsc::UnboundedSender<Removal>);

impl Forgetter {
    /// Starts the task; it stops with `shutdown`.
    pub fn start(conn: Conn, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, conn, shutdown));
        Self(tx)
    }

    /// `id` has ended: its overdue entry is no longer needed.
    pub fn ended(&self, id: &ChallengeId) {
        let _ = self.0.send(Removal {
            shard: keys::due(id),
            member: id.as_str().to_owned(),
            ended: true,
        });
    }

    /// `owner` (this replica) recorded the last outcome of the pushes it owed for `id`.
    pub fn pushes_done(&self, owner: &str, id: &ChallengeId) {
        let _ = self.0.send(Removal {
            shard: keys::due(id),
            member: keys::push_member(owner, id),
            ended: false,
        });
    }
}

/// The shards' ZREMs for a batch: shard key → members.
fn by_shard(batch: &[Removal]) -> BTreeMap<&str, Vec<&str>> {
    let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in batch {
        shards.entry(&r.shard).or_default().push(&r.member);
    }
    shards
}

async fn run(mut rx: mpsc::UnboundedReceiver<Removal>, conn: Conn, shutdown: CancellationToken) {
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            id = rx.recv() => match id { Some(id) => id, None => return },
        };
        batch.push(first);
        let flush_at = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(flush_at, rx.recv()).await {
                Ok(Some(id)) => batch.push(id),
                Ok(None) | Err(_) => break,
            }
        }
        let removals = by_shard(&batch).into_iter().map(|(shard, members)| {
            let mut conn = conn.clone();
            async move {
                ::redis::cmd("ZREM")
                    .arg(shard)
                    .arg(members)
                    .query_async::<()>(&mut conn)
                    .await
            }
        });
        let failed = futures::future::join_all(removals)
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        if failed > 0 {
            tracing::debug!(
                failed,
                "overdue index: some removals failed; the sweep meets those entries"
            );
        }
        let ended = batch.iter().filter(|r| r.ended).count();
        metrics::counter!("relay_overdue_removed_total").increment(ended as u64);
        batch.clear();
        // A burst's map and vector go back to their usual size.
        batch.shrink_to(MAX_BATCH / 4);
    }
}
