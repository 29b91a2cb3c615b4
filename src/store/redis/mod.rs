//! The Redis store: the same `Store` contract as `memory.rs`, shared by any number of replicas. Every
//! state change is one Lua script (beside this file) that checks state, writes it, appends the audit
//! record and publishes the event together, judging deadlines by Redis `TIME`. Keys of an account share
//! one hash tag (see `keys.rs`); every key has a TTL or a cap.
//!
//! Security events go to one global stream (`ar:security`) written right after the script that caused
//! them: a different slot, so it cannot be inside the same script on Cluster.

mod challenges;
mod clock;
mod codec;
mod conn;
mod factors;
mod helpers;
mod keys;
mod overdue;
mod pushes;
mod records;
mod scripts;
mod streams;
mod subscriber;

use super::*;
use crate::audit::{Actor, AuditKind, SecurityKind};
use crate::challenge::State;
use crate::limits::{LimitPolicy, LimitRefusal};
use crate::watch::Hub;
use ::redis::{AsyncCommands, Value};
use codec::{array, at, int, text};
use conn::Conn;
pub use conn::{Nodes, Target};
use scripts::Scripts;
use std::sync::Arc;
use subscriber::Subscriber;
use tokio_util::sync::CancellationToken;

/// How long an ended challenge stays readable after its deadline (as in the memory store).
const RETENTION_MS: i64 = memory::RETENTION_MS;

/// The relay's state in Redis.
pub struct RedisStore {
    limits: LimitPolicy,
    replica: String,
    helpers: helpers::Helpers,
    conn: Conn,
    publish: &'static str,
    scripts: Scripts,
    subscriber: Subscriber,
    forgetter: overdue::Forgetter,
    clock: clock::LastTime,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn unavailable(e: ::redis::RedisError) -> StoreError {
    metrics::counter!("relay_redis_errors_total").increment(1);
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects to a Redis node (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS) or a
    /// Cluster, and starts the subscriber that feeds `hub`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn connect(
        target: &Target,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
        limits: LimitPolicy,
        replica: String,
    ) -> Result<Self, StoreError> {
        // Name the servers (never the password) so an operator knows which one is wrong.
        let at = |e: ::redis::RedisError| {
            StoreError::Unavailable(format!("redis at {}: {e}", target.addresses()))
        };
        let conn = Conn::connect(target, None).await.map_err(at)?;
        let forgetter = overdue::Forgetter::start(conn.clone(), shutdown.clone());
        let subscriber = subscriber::start(target, conn.clone(), hub, shutdown)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("redis at {}: {e}", target.addresses()))
            })?;
        Ok(Self {
            publish: conn.publish_command(),
            conn,
            scripts: Scripts::new(),
            subscriber,
            limits,
            replica,
            helpers: helpers::Helpers::default(),
            forgetter,
            clock: clock::LastTime::default(),
        })
    }

    /// A challenge a script just ended (codec::ended), its overdue entry handed to the forgetter.
    fn ended(&self, id: &ChallengeId, h: &Value, withdraw: &Value) -> Result<Ended, StoreError> {
        let ended = codec::ended(id, h, withdraw)?;
        self.forgetter.ended(id);
        Ok(ended)
    }

    /// An invocation of `script` with the two arguments every script starts with (prelude.lua): the key
    /// prefix of the account it works on, and the publish command.
    fn script<'a>(
        &self,
        script: &'a ::redis::Script,
        prefix: impl ::redis::ToRedisArgs,
    ) -> ::redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.arg(prefix).arg(self.publish);
        inv
    }

    /// Runs a script invocation (by SHA, loading it again after NOSCRIPT).
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        inv: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        inv.invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// A hash, or `None` when the key does not exist.
    async fn read_hash(&self, key: String) -> Result<Option<codec::Hash>, StoreError> {
        let hash: codec::Hash = self.conn().hgetall(key).await.map_err(unavailable)?;
        Ok((!hash.is_empty()).then_some(hash))
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    async fn refusal(&self, device: &DeviceId, reason: &str) -> AuthError {
        let error = match reason {
            "unknown_device" => AuthError::UnknownDevice,
            "revoked" => AuthError::Revoked,
            "suspected_clone" => AuthError::SuspectedClone,
            "token_flip" => AuthError::TokenFlip,
            "key_changed" => AuthError::BadSignature,
            _ => AuthError::CounterNotIncreasing,
        };
        let detail = match error {
            AuthError::CounterNotIncreasing => Some("counter did not increase"),
            AuthError::TokenFlip => Some("push token switched back within a day"),
            _ => None,
        };
        if let Some(detail) = detail
            && let Ok(Some(d)) = self.get_device(device).await
        {
            streams::append_security(
                &mut self.conn(),
                &d.account,
                SecurityKind::CloneSuspected,
                Some(device),
                None,
                detail,
            )
            .await;
        }
        error
    }

    async fn touch(
        &self,
        call: &DeviceCall,
        op: &str,
        a: &[u8],
        b: &[u8],
    ) -> Result<Result<Device, AuthError>, StoreError> {
        let items = match self.touch_reply(call, op, a, b, None).await? {
            Ok(items) => items,
            Err(refused) => return Ok(Err(refused)),
        };
        self.touched_device(call, &items).map(Ok)
    }

    /// touch.lua's reply after the counter rule let the call through (`with` adds a key it also reads,
    /// in the device's slot), or the refusal.
    async fn touch_reply(
        &self,
        call: &DeviceCall,
        op: &str,
        a: &[u8],
        b: &[u8],
        with: Option<String>,
    ) -> Result<Result<Vec<Value>, AuthError>, StoreError> {
        let mut script = self.script(&self.scripts.touch, keys::prefix(call.device.tag()));
        script.key(keys::device(&call.device));
        if let Some(key) = with {
            script.key(key);
        }
        script
            .arg(call.device.as_str())
            .arg(call.counter)
            .arg(op)
            .arg(a)
            .arg(b)
            .arg(call.key.as_bytes());
        // Taken apart, not copied: it holds the device's (and the challenge's) whole hash.
        let items = match self.run(&script).await? {
            Value::Array(items) => items,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "expected an array, got {other:?}"
                )));
            }
        };
        if text(at(&items, 0)?)? == "refused" {
            let reason = items.get(1).map(text).transpose()?.unwrap_or_default();
            return Ok(Err(self.refusal(&call.device, &reason).await));
        }
        Ok(Ok(items))
    }

    /// The device as touch.lua left it (its third reply element).
    fn touched_device(&self, call: &DeviceCall, items: &[Value]) -> Result<Device, StoreError> {
        let hash = codec::hash(at(items, 2)?)?;
        if hash.is_empty() {
            return Err(StoreError::Corrupt("device vanished".into()));
        }
        codec::device(&call.device, &hash)
    }

    async fn end(&self, id: &ChallengeId, target: &str) -> Result<Value, StoreError> {
        self.run(
            self.script(&self.scripts.end, keys::prefix(id.tag()))
                .key(keys::challenge(id))
                .arg(id.as_str())
                .arg(target)
                .arg(millis(self.limits.cooldown_base))
                .arg(millis(self.limits.cooldown_max))
                .arg(millis(self.limits.fraud_mute)),
        )
        .await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn now_ms(&self) -> Result<i64, StoreError> {
        let (secs, micros): (i64, i64) = ::redis::cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let now = secs * 1000 + micros / 1000;
        self.clock.record(now);
        Ok(now)
    }

    fn recent_now_ms(&self) -> Option<i64> {
        self.clock.recent()
    }

    async fn create_enrollment(
        &self,
        ticket: &Ticket,
        enrollment: &Enrollment,
    ) -> Result<(), StoreError> {
        let now = self.now_ms().await?;
        let ttl = (enrollment.expires_at_ms - now).max(1);
        let _: Value = self
            .run(
                self.script(&self.scripts.enrollment, keys::ticket_prefix(ticket))
                    .key(keys::enrollment(ticket))
                    .arg(enrollment.account.as_str())
                    .arg(ttl),
            )
            .await?;
        Ok(())
    }

    async fn enroll(
        &self,
        ticket: &Ticket,
        device: NewDevice,
    ) -> Result<Result<Device, EnrollRefusal>, StoreError> {
        // The ticket carries the account's tag, so the new id lands in the account's slot.
        let id = device.id.clone();
        let mut inv = self.script(&self.scripts.enroll, keys::ticket_prefix(ticket));
        inv.key(keys::enrollment(ticket))
            .arg(id.as_str())
            .arg(memory::MAX_DEVICES)
            .arg(device.offline_code.as_deref().unwrap_or(""))
            .arg(device.attestation.summary());
        for (name, value) in codec::new_device_fields(&device) {
            inv.arg(name).arg(value);
        }
        let reply: Value = self.run(&inv).await?;
        let items = array(&reply)?;
        match text(at(items, 0)?)?.as_str() {
            "bad_ticket" => return Ok(Err(EnrollRefusal::BadTicket)),
            "too_many" => return Ok(Err(EnrollRefusal::TooManyDevices)),
            _ => {}
        }
        let device = self
            .get_device(&id)
            .await?
            .ok_or(StoreError::Corrupt("device vanished".into()))?;
        streams::append_security(
            &mut self.conn(),
            &device.account,
            SecurityKind::DeviceEnrolled,
            Some(&id),
            None,
            &device.attestation.summary(),
        )
        .await;
        Ok(Ok(device))
    }

    async fn get_device(&self, id: &DeviceId) -> Result<Option<Device>, StoreError> {
        let hash = self.read_hash(keys::device(id)).await?;
        hash.map(|h| codec::device(id, &h)).transpose()
    }

    async fn device_and_time(&self, id: &DeviceId) -> Result<(Option<Device>, i64), StoreError> {
        // One round trip: TIME has no key, so even on Cluster it rides with the device's slot.
        let mut pipe = ::redis::pipe();
        pipe.hgetall(keys::device(id)).cmd("TIME");
        let (hash, (secs, micros)): (codec::Hash, (i64, i64)) = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let device = if hash.is_empty() {
            None
        } else {
            Some(codec::device(id, &hash)?)
        };
        let now = secs * 1000 + micros / 1000;
        self.clock.record(now);
        Ok((device, now))
    }

    async fn list_devices(&self, account: &AccountId) -> Result<Vec<Device>, StoreError> {
        let reply: Value = self
            .run(
                self.script(&self.scripts.reads, keys::prefix(account.tag()))
                    .key(keys::devices(account))
                    .arg("devices"),
            )
            .await?;
        codec::devices(&reply)
    }

    async fn revoke_device(
        &self,
        account: &AccountId,
        id: &DeviceId,
        actor: &Actor,
    ) -> Result<Option<Device>, StoreError> {
        if id.tag() != account.tag() {
            return Ok(None);
        }
        let reply: String = self
            .run(
                self.script(&self.scripts.revoke, keys::prefix(id.tag()))
                    .key(keys::device(id))
                    .arg(account.as_str())
                    .arg(id.as_str())
                    .arg(actor.to_string()),
            )
            .await?;
        if reply == "missing" {
            return Ok(None);
        }
        if reply == "ok" {
            streams::append_security(
                &mut self.conn(),
                account,
                SecurityKind::DeviceRevoked,
                Some(id),
                None,
                "",
            )
            .await;
        }
        self.get_device(id).await
    }

    async fn accept_call(
        &self,
        call: &DeviceCall,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        self.touch(call, "touch", b"", b"").await
    }

    async fn update_push_token(
        &self,
        call: &DeviceCall,
        token: &str,
        fallback: Option<&str>,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        self.touch(
            call,
            "token",
            token.as_bytes(),
            fallback.unwrap_or_default().as_bytes(),
        )
        .await
    }

    async fn rotate_key(
        &self,
        call: &DeviceCall,
        key: &PublicKey,
    ) -> Result<Result<Device, AuthError>, StoreError> {
        self.touch(
            call,
            "key",
            codec::algorithm_name(key.algorithm()).as_bytes(),
            &key.to_bytes(),
        )
        .await
    }

    async fn prune_token(
        &self,
        id: &DeviceId,
        token: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .run(
                self.script(&self.scripts.prune, keys::prefix(id.tag()))
                    .key(keys::device(id))
                    .arg(id.as_str())
                    .arg(token)
                    .arg(reason),
            )
            .await?;
        Ok(())
    }

    async fn create_challenge(&self, new: NewChallenge) -> Result<CreateOutcome, StoreError> {
        self.create(new).await
    }

    async fn get_challenge(&self, id: &ChallengeId) -> Result<Option<Challenge>, StoreError> {
        let hash = self.read_hash(keys::challenge(id)).await?;
        hash.map(|h| codec::challenge(id, &h)).transpose()
    }

    async fn accept_and_get_challenge(
        &self,
        call: &DeviceCall,
        id: &ChallengeId,
    ) -> Result<Result<Option<Challenge>, AuthError>, StoreError> {
        // One script when the challenge is in the device's slot (its own account's); another account's
        // challenge is not the device's to see, but its counter still moves first.
        if id.tag() != call.device.tag() {
            return match self.accept_call(call).await? {
                Ok(_) => Ok(Ok(self.get_challenge(id).await?)),
                Err(refused) => Ok(Err(refused)),
            };
        }
        let with = Some(keys::challenge(id));
        let items = match self.touch_reply(call, "challenge", b"", b"", with).await? {
            Ok(items) => items,
            Err(refused) => return Ok(Err(refused)),
        };
        let hash = codec::hash(at(&items, 3)?)?;
        if hash.is_empty() {
            return Ok(Ok(None));
        }
        codec::challenge(id, &hash).map(|c| Ok(Some(c)))
    }

    async fn respond(
        &self,
        call: &DeviceCall,
        id: &ChallengeId,
        decision: Decision,
        number: u32,
        remember: std::time::Duration,
    ) -> Result<RespondOutcome, StoreError> {
        self.answer(call, id, decision, number, remember).await
    }

    async fn expire(&self, id: &ChallengeId) -> Result<ExpireOutcome, StoreError> {
        let reply = self.end(id, "expired").await?;
        let items = array(&reply)?;
        match text(at(items, 0)?)?.as_str() {
            "notdue" => Ok(ExpireOutcome::NotDue(std::time::Duration::from_millis(
                int(at(items, 1)?)?.unsigned_abs(),
            ))),
            "ok" => Ok(ExpireOutcome::Expired(Box::new(self.ended(
                id,
                at(items, 3)?,
                at(items, 4)?,
            )?))),
            _ => Ok(ExpireOutcome::Ended),
        }
    }

    async fn cancel(
        &self,
        id: &ChallengeId,
    ) -> Result<Option<Result<Ended, Challenge>>, StoreError> {
        let reply = self.end(id, "cancelled").await?;
        let items = array(&reply)?;
        match text(at(items, 0)?)?.as_str() {
            "missing" => Ok(None),
            "ok" => Ok(Some(Ok(self.ended(id, at(items, 3)?, at(items, 4)?)?))),
            _ => Ok(Some(Err(codec::challenge(
                id,
                &codec::hash(at(items, 2)?)?,
            )?))),
        }
    }

    async fn record_deliveries(
        &self,
        id: &ChallengeId,
        outcomes: &[(DeviceId, crate::challenge::DeliveryState)],
        finished: bool,
    ) -> Result<(), StoreError> {
        let mut inv = self.script(&self.scripts.delivery, keys::prefix(id.tag()));
        inv.key(keys::challenge(id)).arg(id.as_str());
        for (device, outcome) in outcomes {
            // Poll-only is set by the create step, never recorded as a push outcome (memory skips it too).
            if *outcome == crate::challenge::DeliveryState::PollOnly {
                continue;
            }
            if let Some(value) = codec::delivery_value(outcome) {
                inv.arg(device.as_str()).arg(value);
            }
        }
        let _: i64 = self.run(&inv).await?;
        if finished {
            // The push work is done: its member leaves the index with the next batch of removals
            // (another slot; a lost removal only means the sweep finds the work done and drops it then).
            self.forgetter.pushes_done(&self.replica, id);
        }
        Ok(())
    }

    async fn list_pending(&self, device: &DeviceId) -> Result<Vec<Challenge>, StoreError> {
        let Some(d) = self.get_device(device).await? else {
            return Ok(Vec::new());
        };
        let reply: Value = self
            .run(
                self.script(&self.scripts.reads, keys::prefix(device.tag()))
                    .key(keys::pending(&d.account))
                    .arg("pending")
                    .arg(device.as_str()),
            )
            .await?;
        let mut out = Vec::new();
        for pair in array(&reply)? {
            let pair = array(pair)?;
            let id = ChallengeId::parse(&text(at(pair, 0)?)?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(codec::challenge(&id, &codec::hash(at(pair, 1)?)?)?);
        }
        out.sort_by_key(|c| c.created_at_ms);
        Ok(out)
    }

    async fn due(&self, limit: usize) -> Result<Due, StoreError> {
        self.sweep_due(limit).await
    }

    async fn defer_pushes(&self, work: &[PushWork]) -> Result<(), StoreError> {
        self.defer(work).await
    }

    async fn claim_pushes(&self, work: &PushWork) -> Result<ClaimOutcome, StoreError> {
        self.claim(work).await
    }

    fn replica(&self) -> &str {
        &self.replica
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        self.beat().await
    }

    async fn replica_alive(&self, replica: &str) -> Result<bool, StoreError> {
        self.alive(replica).await
    }

    async fn audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        let now = self.now_ms().await?;
        streams::append_audit(&mut self.conn(), record, now).await
    }

    async fn report(&self, record: AuditRecord, kind: SecurityKind) -> Result<(), StoreError> {
        let now = self.now_ms().await?;
        let (account, device, challenge, detail) = (
            record.account.clone(),
            record.device.clone(),
            record.challenge.clone(),
            record.detail.clone(),
        );
        streams::append_audit(&mut self.conn(), record, now).await?;
        streams::append_security(
            &mut self.conn(),
            &account,
            kind,
            device.as_ref(),
            challenge.as_ref(),
            &detail,
        )
        .await;
        Ok(())
    }

    async fn auth_failure(&self, failure: &AuthFailure) -> Result<FailureOutcome, StoreError> {
        self.count_auth_failure(failure).await
    }

    async fn create_notice(
        &self,
        id: NoticeId,
        draft: NoticeDraft,
    ) -> Result<Option<(Notice, Vec<Device>)>, StoreError> {
        self.notice(id, draft).await
    }

    async fn get_notice(&self, id: &NoticeId) -> Result<Option<Notice>, StoreError> {
        self.read_hash(keys::notice(id))
            .await?
            .map(|h| codec::notice(id, &h))
            .transpose()
    }

    async fn list_notices(&self, account: &AccountId) -> Result<Vec<Notice>, StoreError> {
        let keep = isize::try_from(crate::notice::NOTICES_PER_ACCOUNT).unwrap_or(isize::MAX);
        let ids: Vec<String> = self
            .conn()
            .zrevrange(keys::notices(account), 0, keep - 1)
            .await
            .map_err(unavailable)?;
        let ids: Vec<NoticeId> = ids
            .iter()
            .filter_map(|id| NoticeId::parse(id).ok())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in &ids {
            pipe.hgetall(keys::notice(id));
        }
        let hashes: Vec<codec::Hash> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        ids.iter()
            .zip(hashes)
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, h)| codec::notice(id, &h))
            .collect()
    }

    async fn list_audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        streams::list_audit(&mut self.conn(), account, before, limit).await
    }

    async fn security_events(
        &self,
        after: Option<&str>,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<SecurityEvent>, StoreError> {
        streams::read_security(&mut self.conn(), after, limit, wait).await
    }

    async fn subscribe(&self, id: &ChallengeId) -> Result<(), StoreError> {
        self.subscriber.subscribe(id).await
    }

    async fn known_sign_ins(&self, account: &AccountId) -> Result<Remembered, StoreError> {
        self.read_known(account).await
    }

    async fn remember_sign_in(
        &self,
        account: &AccountId,
        keys: &[KnownKey],
        window: Duration,
    ) -> Result<(), StoreError> {
        self.remember(account, keys, window).await
    }

    async fn forget_sign_ins(
        &self,
        account: &AccountId,
        field: Option<&str>,
        actor: &Actor,
        why: &str,
    ) -> Result<usize, StoreError> {
        self.forget(account, field, actor, why).await
    }

    async fn save_authenticator(
        &self,
        account: &AccountId,
        new: &NewAuthenticator,
    ) -> Result<bool, StoreError> {
        self.save_authenticator_step(account, new).await
    }

    async fn authenticators(&self, account: &AccountId) -> Result<Vec<Authenticator>, StoreError> {
        self.read_authenticators(account).await
    }

    async fn sign_in_facts(&self, account: &AccountId) -> Result<SignInFacts, StoreError> {
        self.read_sign_in_facts(account).await
    }

    async fn remove_authenticator(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<bool, StoreError> {
        self.delete_authenticator(account, id).await
    }

    async fn check_code(
        &self,
        account: &AccountId,
        matched: Option<&CodeMatch>,
    ) -> Result<CodeCheck, StoreError> {
        self.code_step(account, matched).await
    }
}
