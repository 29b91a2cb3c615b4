//! The Redis store's push work (challenge::pushes): the periodic sweep's read of the overdue index
//! shards (overdue challenges and push-work members side by side), deferring and claiming pushes, and
//! the replicas' heartbeats.

use super::*;

impl RedisStore {
    /// Reads every shard; a shard on an unreachable node is counted, not fatal.
    pub(super) async fn sweep_due(&self, limit: usize) -> Result<Due, StoreError> {
        let now = self.now_ms().await?;
        let mut due = Due::default();
        // Shard by shard: each shard is its own Cluster slot, so no command spans two.
        for shard in 0..keys::DUE_SHARDS {
            let key = keys::due_shard(shard);
            let read: Result<Vec<String>, StoreError> = self
                .conn()
                .zrangebyscore_limit(&key, "-inf", now, 0, (2 * limit) as isize)
                .await
                .map_err(unavailable);
            let Some(members) = self.helpers.sweep.observe(read) else {
                due.unreachable += 1;
                continue;
            };
            let (work, mut ids): (Vec<String>, Vec<String>) =
                members.into_iter().partition(|m| m.starts_with("p:"));
            // Only as many as this round hands out are taken from the index; the rest wait for the next
            // round (taking them and dropping them past the limit would lose them).
            ids.truncate(limit.saturating_sub(due.overdue.len()));
            due.pushes.extend(work.iter().filter_map(|m| {
                let (owner, id) = m.strip_prefix("p:")?.split_once(':')?;
                Some(PushWork {
                    challenge: ChallengeId::parse(id).ok()?,
                    owner: owner.to_owned(),
                })
            }));
            if ids.is_empty() {
                continue;
            }
            // Each overdue entry is handed out once; the caller expires it or, if its deadline is in fact
            // still ahead (the score is the creating replica's estimate), sets a timer for it.
            let removed: Result<i64, StoreError> =
                self.conn().zrem(&key, &ids).await.map_err(unavailable);
            if self.helpers.sweep.observe(removed).is_some() {
                due.overdue
                    .extend(ids.iter().filter_map(|id| ChallengeId::parse(id).ok()));
            }
        }
        due.overdue.truncate(limit);
        due.pushes.truncate(limit);
        Ok(due)
    }

    pub(super) async fn defer(&self, work: &[PushWork]) -> Result<(), StoreError> {
        if work.is_empty() {
            return Ok(());
        }
        let at = crate::clock::now_ms().saturating_add(crate::challenge::LEASE_MS);
        let mut pipe = ::redis::pipe();
        for w in work {
            pipe.cmd("ZADD")
                .arg(keys::due(&w.challenge))
                .arg("XX")
                .arg(at)
                .arg(keys::push_member(&w.owner, &w.challenge))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub(super) async fn claim(&self, work: &PushWork) -> Result<ClaimOutcome, StoreError> {
        let id = &work.challenge;
        let reply: Value = self
            .run(
                self.script(&self.scripts.claim, keys::prefix(id.tag()))
                    .key(keys::challenge(id))
                    .arg(id.as_str())
                    .arg(&work.owner)
                    .arg(&self.replica)
                    .arg(crate::challenge::MAX_CLAIMS)
                    .arg(crate::challenge::GIVE_UP_BEFORE_MS)
                    .arg(crate::challenge::RELAY_LOST),
            )
            .await?;
        let items = array(&reply)?;
        let shard = keys::due(id);
        let old = keys::push_member(&work.owner, id);
        let mut pipe = ::redis::pipe();
        pipe.zrem(&shard, &old).ignore();
        let outcome = match text(at(items, 0)?)?.as_str() {
            "send" => {
                let challenge = codec::challenge(id, &codec::hash(at(items, 1)?)?)?;
                let devices = codec::devices(at(items, 2)?)?;
                let at = crate::clock::now_ms().saturating_add(crate::challenge::LEASE_MS);
                pipe.zadd(&shard, keys::push_member(&self.replica, id), at)
                    .ignore();
                ClaimOutcome::Send(Box::new(challenge), devices)
            }
            "gaveup" => ClaimOutcome::GaveUp(usize::try_from(int(at(items, 1)?)?).unwrap_or(0)),
            // Moved: the new owner's member is its own; this stale one goes.
            _ => ClaimOutcome::Nothing,
        };
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(outcome)
    }

    pub(super) async fn beat(&self) -> Result<(), StoreError> {
        // Beats come every second; three missed and the replica counts as gone, one lease later.
        let ttl = crate::challenge::LEASE_MS;
        ::redis::cmd("SET")
            .arg(keys::alive(&self.replica))
            .arg("1")
            .arg("PX")
            .arg(ttl)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub(super) async fn alive(&self, replica: &str) -> Result<bool, StoreError> {
        self.conn()
            .exists(keys::alive(replica))
            .await
            .map_err(unavailable)
    }
}
