//! The Redis store: the same `Store` contract as `memory.rs`, shared by any number of replicas. Every
//! state change is one Lua script (beside this file) that checks state, writes it, appends the audit
//! record and publishes the event together, judging deadlines by Redis `TIME`. Keys of an account share
//! one hash tag (see `keys.rs`); every key has a TTL or a cap.
//!
//! Security events go to one global stream (`ar:security`) written right after the script that caused
//! them: a different slot, so it cannot be inside the same script on Cluster.

mod codec;
mod conn;
mod keys;
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
pub use conn::Target;
use scripts::Scripts;
use std::sync::Arc;
use subscriber::Subscriber;
use tokio_util::sync::CancellationToken;

/// How long an ended challenge stays readable after its deadline (as in the memory store).
const RETENTION_MS: i64 = memory::RETENTION_MS;

/// One authentication-failure budget to count against (see failure.lua).
struct FailureStep<'a> {
    prefix: String,
    key: String,
    limit: &'a crate::limits::RateLimit,
    name: &'static str,
    account: &'a str,
    device: &'a str,
    reason: &'a str,
}

/// The relay's state in Redis.
pub struct RedisStore {
    limits: LimitPolicy,
    conn: Conn,
    publish: &'static str,
    scripts: Scripts,
    subscriber: Subscriber,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn unavailable(e: ::redis::RedisError) -> StoreError {
    metrics::counter!("relay_redis_errors_total").increment(1);
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Takes a token from the sign-in source's bucket: `None` when taken (or nothing to limit), else the
    /// wait for the next one.
    async fn take_source_token(
        &self,
        source: Option<&str>,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let Some(source) = source else {
            return Ok(None);
        };
        let mut inv = self.script(&self.scripts.bucket, "");
        inv.key(keys::source_bucket(source))
            .arg(self.limits.source_rate.per_minute)
            .arg(self.limits.source_rate.burst);
        let reply: Value = self.run(&inv).await?;
        let wait = int(at(array(&reply)?, 0)?)?;
        Ok((wait > 0).then(|| std::time::Duration::from_millis(wait.unsigned_abs())))
    }

    /// A refusal decided outside the create script: audited and reported as the script does.
    async fn refused(
        &self,
        account: &AccountId,
        reason: LimitRefusal,
        wait: std::time::Duration,
    ) -> Result<CreateOutcome, StoreError> {
        let now = self.now_ms().await?;
        let record =
            AuditRecord::new(account, AuditKind::RateLimited, Actor::Backend).detail(reason.name());
        streams::append_audit(&mut self.conn(), record, now).await?;
        streams::append_security(
            &mut self.conn(),
            account,
            SecurityKind::LimitTripped,
            None,
            None,
            reason.name(),
        )
        .await;
        Ok(CreateOutcome::Limited(reason, wait))
    }

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
    ) -> Result<Self, StoreError> {
        let conn = Conn::connect(target, None).await.map_err(unavailable)?;
        let subscriber = subscriber::start(target, conn.clone(), hub, shutdown).await?;
        Ok(Self {
            publish: conn.publish_command(),
            conn,
            scripts: Scripts::new(),
            subscriber,
            limits,
        })
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
        let reply: Value = self
            .run(
                self.script(&self.scripts.touch, keys::prefix(call.device.tag()))
                    .key(keys::device(&call.device))
                    .arg(call.device.as_str())
                    .arg(call.counter)
                    .arg(op)
                    .arg(a)
                    .arg(b),
            )
            .await?;
        let items = array(&reply)?;
        if text(at(items, 0)?)? == "refused" {
            let reason = items.get(1).map(text).transpose()?.unwrap_or_default();
            return Ok(Err(self.refusal(&call.device, &reason).await));
        }
        self.get_device(&call.device)
            .await?
            .ok_or(StoreError::Corrupt("device vanished".into()))
            .map(Ok)
    }

    /// One call of failure.lua on one budget.
    async fn failure_step(
        &self,
        step: FailureStep<'_>,
        earlier_trip: &str,
    ) -> Result<Value, StoreError> {
        self.run(
            self.script(&self.scripts.failure, step.prefix)
                .key(step.key)
                .arg(step.limit.per_minute)
                .arg(step.limit.burst)
                .arg(step.account)
                .arg(step.device)
                .arg(step.reason)
                .arg(step.name)
                .arg(earlier_trip),
        )
        .await
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
        Ok(secs * 1000 + micros / 1000)
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
        let id = DeviceId::generate_in(ticket.tag());
        let mut inv = self.script(&self.scripts.enroll, keys::ticket_prefix(ticket));
        inv.key(keys::enrollment(ticket))
            .arg(id.as_str())
            .arg(memory::MAX_DEVICES);
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
            "",
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
        Ok((device, secs * 1000 + micros / 1000))
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
    ) -> Result<Result<Device, AuthError>, StoreError> {
        self.touch(call, "token", token.as_bytes(), b"").await
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
        let ttl_ms = i64::try_from(new.ttl.as_millis()).unwrap_or(i64::MAX);
        // The overdue index first: an entry for a challenge that then is not created is harmless (the sweep
        // finds nothing to expire and drops it); the other order could leave a challenge no sweep finds.
        let due_at = crate::device_sim::phone::now_ms().saturating_add(ttl_ms);
        let due = keys::due(&new.id);
        let keep = ttl_ms.saturating_add(RETENTION_MS);
        let mut pipe = ::redis::pipe();
        pipe.zadd(&due, new.id.as_str(), due_at).ignore();
        // NX gives a new shard a TTL; GT extends it: the index never outlives its newest entry by long.
        pipe.cmd("PEXPIRE").arg(&due).arg(keep).arg("NX").ignore();
        pipe.cmd("PEXPIRE").arg(&due).arg(keep).arg("GT").ignore();
        // The source's bucket is in another slot: checked beside the index write, in the same round
        // trip's time (both requests are in flight at once on the multiplexed connection).
        let source = new
            .context
            .ip
            .filter(|_| self.limits.source_rate.per_minute > 0)
            .map(crate::limits::source_key);
        let index = async {
            pipe.query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)
        };
        let (indexed, source_wait) = tokio::join!(index, self.take_source_token(source.as_deref()));
        indexed?;
        if let Some(wait) = source_wait? {
            return self
                .refused(&new.account, LimitRefusal::SourceRate, wait)
                .await;
        }
        let idem_key = match &new.idempotency_key {
            Some(k) => keys::idempotency(&new.account, k),
            None => keys::challenge(&new.id),
        };
        let mut inv = self.script(&self.scripts.create, keys::prefix(new.account.tag()));
        inv.key(keys::devices(&new.account))
            .key(idem_key)
            .key(keys::challenge(&new.id))
            .key(keys::pending(&new.account));
        inv.arg(new.id.as_str())
            .arg(new.account.as_str())
            .arg(ttl_ms)
            .arg(
                new.context
                    .signing_in_device_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
            .arg(if new.idempotency_key.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(RETENTION_MS)
            .arg(self.limits.max_pending)
            .arg(self.limits.account_rate.per_minute)
            .arg(self.limits.account_rate.burst)
            .arg(if self.limits.supersede { "1" } else { "0" });
        for (name, value) in codec::new_challenge_fields(&new) {
            inv.arg(name).arg(value);
        }
        let reply: Value = self.run(&inv).await?;
        let items = array(&reply)?;
        match text(at(items, 0)?)?.as_str() {
            "nodevices" => Ok(CreateOutcome::NoDevices),
            "limited" => {
                let reason = match text(at(items, 1)?)?.as_str() {
                    "cooling_down" => LimitRefusal::CoolingDown,
                    "muted_after_fraud_report" => LimitRefusal::Muted,
                    "account_rate" => LimitRefusal::AccountRate,
                    _ => LimitRefusal::TooManyPending,
                };
                let after = std::time::Duration::from_millis(int(at(items, 2)?)?.unsigned_abs());
                streams::append_security(
                    &mut self.conn(),
                    &new.account,
                    SecurityKind::LimitTripped,
                    None,
                    None,
                    reason.name(),
                )
                .await;
                Ok(CreateOutcome::Limited(reason, after))
            }
            "existing" => {
                let id = ChallengeId::parse(&text(at(items, 1)?)?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let c = self
                    .get_challenge(&id)
                    .await?
                    .ok_or(StoreError::Corrupt("idempotent challenge vanished".into()))?;
                Ok(CreateOutcome::Existing(c))
            }
            _ => {
                let (now, expires) = (int(at(items, 1)?)?, int(at(items, 2)?)?);
                let mut devices = Vec::new();
                for (id, hash) in array(at(items, 3)?)?.iter().zip(array(at(items, 4)?)?) {
                    let id = DeviceId::parse(&text(id)?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    devices.push(codec::device(&id, &codec::hash(hash)?)?);
                }
                let mut superseded = Vec::new();
                for old in array(at(items, 5)?)? {
                    let old = array(old)?;
                    let id = ChallengeId::parse(&text(at(old, 0)?)?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    superseded.push(codec::ended(&id, at(old, 1)?, at(old, 2)?)?);
                }
                let challenge = Challenge {
                    id: new.id,
                    account: new.account,
                    context: new.context,
                    number: new.number,
                    targets: devices.iter().map(|d| d.id.clone()).collect(),
                    created_at_ms: now,
                    expires_at_ms: expires,
                    ended_at_ms: 0,
                    state: State::Pending,
                    sequence: 0,
                    idempotency_key: new.idempotency_key,
                    wrong_answers: 0,
                    deliveries: Vec::new(),
                };
                Ok(CreateOutcome::Created(challenge, devices, superseded))
            }
        }
    }

    async fn get_challenge(&self, id: &ChallengeId) -> Result<Option<Challenge>, StoreError> {
        let hash = self.read_hash(keys::challenge(id)).await?;
        hash.map(|h| codec::challenge(id, &h)).transpose()
    }

    async fn respond(
        &self,
        call: &DeviceCall,
        id: &ChallengeId,
        decision: Decision,
        number: u32,
    ) -> Result<RespondOutcome, StoreError> {
        if call.device.tag() != id.tag() {
            // Another account's challenge (its keys are in another slot): the counter rule still
            // applies, then the same refusal as for any challenge not pushed to this device.
            let device = match self.touch(call, "touch", b"", b"").await? {
                Ok(device) => device,
                Err(e) => return Ok(Err(e.into())),
            };
            let record = AuditRecord::new(
                &device.account,
                AuditKind::RequestRefused,
                Actor::Device(device.id.clone()),
            )
            .challenge(id)
            .device(&device.id)
            .detail("not_targeted");
            self.audit(record).await?;
            return Ok(Err(DeviceRefusal::ChallengeNotFound));
        }
        let (state, reason) = match decision {
            Decision::Approve => ("approved", ""),
            Decision::Deny(r) => ("denied", r.name()),
            Decision::ReportFraud => ("fraud_reported", ""),
        };
        let mut inv = self.script(&self.scripts.respond, keys::prefix(call.device.tag()));
        inv.key(keys::device(&call.device))
            .key(keys::challenge(id))
            .arg(call.device.as_str())
            .arg(call.counter)
            .arg(id.as_str())
            .arg(state)
            .arg(reason)
            .arg(number)
            .arg(millis(self.limits.cooldown_base))
            .arg(millis(self.limits.cooldown_max))
            .arg(millis(self.limits.fraud_mute));
        let reply: Value = self.run(&inv).await?;
        let items = array(&reply)?;
        if text(at(items, 0)?)? == "refused" {
            let why = text(at(items, 1)?)?;
            let refusal = match why.as_str() {
                "not_found" => DeviceRefusal::ChallengeNotFound,
                "not_targeted" => DeviceRefusal::Respond(RespondError::NotTargeted),
                "late" => DeviceRefusal::Respond(RespondError::Late),
                "missing_number" => DeviceRefusal::Respond(RespondError::MissingNumber),
                "wrong_number" => DeviceRefusal::Respond(RespondError::WrongNumber {
                    attempts_left: u32::try_from(int(at(items, 2)?)?).unwrap_or(1),
                }),
                "unexpected_number" => DeviceRefusal::Respond(RespondError::UnexpectedNumber),
                ended if ended.starts_with("ended:") => {
                    let c = self
                        .get_challenge(id)
                        .await?
                        .ok_or(StoreError::Corrupt("challenge vanished".into()))?;
                    DeviceRefusal::Respond(RespondError::Ended(c.state))
                }
                other => DeviceRefusal::Auth(self.refusal(&call.device, other).await),
            };
            return Ok(Err(refusal));
        }
        let ended = codec::ended(id, at(items, 3)?, at(items, 4)?)?;
        if matches!(ended.challenge.state, State::FraudReported(_)) {
            streams::append_security(
                &mut self.conn(),
                &ended.challenge.account,
                SecurityKind::FraudReported,
                Some(&call.device),
                Some(id),
                "",
            )
            .await;
        }
        Ok(Ok(ended))
    }

    async fn expire(&self, id: &ChallengeId) -> Result<ExpireOutcome, StoreError> {
        let reply = self.end(id, "expired").await?;
        let items = array(&reply)?;
        match text(at(items, 0)?)?.as_str() {
            "notdue" => Ok(ExpireOutcome::NotDue(std::time::Duration::from_millis(
                int(at(items, 1)?)?.unsigned_abs(),
            ))),
            "ok" => Ok(ExpireOutcome::Expired(Box::new(codec::ended(
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
            "ok" => Ok(Some(Ok(codec::ended(id, at(items, 3)?, at(items, 4)?)?))),
            _ => Ok(Some(Err(codec::challenge(
                id,
                &codec::hash(at(items, 2)?)?,
            )?))),
        }
    }

    async fn record_deliveries(
        &self,
        id: &ChallengeId,
        outcomes: &[(DeviceId, Option<String>)],
    ) -> Result<(), StoreError> {
        let mut inv = self.script(&self.scripts.delivery, keys::prefix(id.tag()));
        inv.key(keys::challenge(id)).arg(id.as_str());
        for (device, failure) in outcomes {
            inv.arg(device.as_str())
                .arg(failure.as_deref().unwrap_or_default().replace('\t', " "));
        }
        let _: i64 = self.run(&inv).await?;
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

    async fn overdue(&self, limit: usize) -> Result<Vec<ChallengeId>, StoreError> {
        let now = self.now_ms().await?;
        let mut out = Vec::new();
        // Shard by shard: each shard is its own Cluster slot, so no command spans two.
        for shard in 0..keys::DUE_SHARDS {
            let key = keys::due_shard(shard);
            let ids: Vec<String> = self
                .conn()
                .zrangebyscore_limit(&key, "-inf", now, 0, limit as isize)
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                continue;
            }
            // Each entry is handed out once; the caller expires it or, if its deadline is in fact still
            // ahead (the score is the creating replica's estimate), sets a timer for it.
            let _: i64 = self.conn().zrem(&key, &ids).await.map_err(unavailable)?;
            out.extend(ids.iter().filter_map(|id| ChallengeId::parse(id).ok()));
        }
        Ok(out)
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
        let (device, account) = match &failure.device {
            Some((d, a)) => (d.as_str(), a.as_str()),
            None => ("", ""),
        };
        // The peer address's budget lives in its own slot: a step of its own, with no account. It is a
        // helper, so when it cannot be reached the request counts as within it.
        let mut outcome = FailureOutcome::Counted;
        if let Some(source) = &failure.source {
            let limit = LimitRefusal::SourceAuthFailures;
            let reply = self
                .failure_step(
                    FailureStep {
                        prefix: String::new(),
                        key: keys::source_auth_failures(source),
                        limit: &self.limits.source_auth_failures,
                        name: limit.name(),
                        account: "",
                        device,
                        reason: failure.reason,
                    },
                    "",
                )
                .await;
            match reply {
                Ok(reply) => outcome = codec::failure_outcome(&reply, limit)?,
                Err(error) => {
                    tracing::warn!(%error, "peer address budget unavailable; counting the failure as within it")
                }
            }
        }
        let Some((device_id, account_id)) = &failure.device else {
            return Ok(outcome);
        };
        let earlier_trip = match outcome {
            FailureOutcome::Limited {
                first_trip: false, ..
            } => return Ok(outcome),
            FailureOutcome::Limited { limit, .. } => limit.name(),
            FailureOutcome::Counted => "",
        };
        let limit = LimitRefusal::DeviceAuthFailures;
        let reply = self
            .failure_step(
                FailureStep {
                    prefix: keys::prefix(device_id.tag()),
                    key: keys::auth_failures(device_id),
                    limit: &self.limits.device_auth_failures,
                    name: limit.name(),
                    account,
                    device,
                    reason: failure.reason,
                },
                earlier_trip,
            )
            .await?;
        if outcome == FailureOutcome::Counted {
            outcome = codec::failure_outcome(&reply, limit)?;
        }
        if let FailureOutcome::Limited {
            limit,
            first_trip: true,
            ..
        } = outcome
        {
            streams::append_security(
                &mut self.conn(),
                account_id,
                SecurityKind::LimitTripped,
                Some(device_id),
                None,
                limit.name(),
            )
            .await;
        }
        Ok(outcome)
    }

    async fn create_notice(
        &self,
        id: NoticeId,
        draft: NoticeDraft,
    ) -> Result<Option<(Notice, Vec<Device>)>, StoreError> {
        let optional = |d: Option<&DeviceId>| d.map(ToString::to_string).unwrap_or_default();
        let mut inv = self.script(&self.scripts.notice, keys::prefix(draft.account.tag()));
        inv.key(keys::devices(&draft.account))
            .key(keys::notice(&id))
            .key(keys::notices(&draft.account));
        inv.arg(id.as_str())
            .arg(draft.account.as_str())
            .arg(crate::notice::ttl_ms())
            .arg(optional(draft.subject.as_ref()))
            .arg(optional(draft.context.signing_in_device_id.as_ref()))
            .arg(crate::notice::NOTICES_PER_ACCOUNT)
            .arg(draft.kind.name())
            .arg(
                draft
                    .challenge
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
        for (name, value) in codec::notice_extra_fields(&draft) {
            inv.arg(name).arg(value);
        }
        let reply: Value = self.run(&inv).await?;
        let items = array(&reply)?;
        if text(at(items, 0)?)? != "ok" {
            return Ok(None);
        }
        let now = int(at(items, 1)?)?;
        let mut devices = Vec::new();
        for (device, hash) in array(at(items, 2)?)?.iter().zip(array(at(items, 3)?)?) {
            let device =
                DeviceId::parse(&text(device)?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            devices.push(codec::device(&device, &codec::hash(hash)?)?);
        }
        let targets = devices.iter().map(|d| d.id.clone()).collect();
        Ok(Some((draft.into_notice(id, targets, now), devices)))
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
}
