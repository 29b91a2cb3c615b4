//! The Redis store's challenge steps: creation with its helpers in other slots (the overdue index, the
//! sign-in address's bucket), and a device's answer.

use super::*;

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

    pub(super) async fn create(&self, new: NewChallenge) -> Result<CreateOutcome, StoreError> {
        let ttl_ms = i64::try_from(new.ttl.as_millis()).unwrap_or(i64::MAX);
        // The overdue index (keys::due) is in another slot than the account's. On a single node the create
        // script writes it in the same step; on Cluster it is written first: an entry for a challenge that
        // then is not created is harmless (the sweep finds nothing to expire and drops it), the other order
        // could leave a challenge no sweep finds.
        let due = keys::due(&new.id);
        let index_in_step = matches!(self.conn, Conn::Single(_));
        let mut pipe = ::redis::pipe();
        if !index_in_step {
            let due_at = crate::clock::now_ms().saturating_add(ttl_ms);
            let keep = ttl_ms.saturating_add(RETENTION_MS);
            pipe.zadd(&due, new.id.as_str(), due_at).ignore();
            // The pushes this replica owes, looked at again after a lease if not finished by then
            // (challenge::pushes): same shard, so the same command's slot.
            let lease_at = crate::clock::now_ms().saturating_add(crate::challenge::LEASE_MS);
            pipe.zadd(&due, keys::push_member(&self.replica, &new.id), lease_at)
                .ignore();
            // NX gives a new shard a TTL; GT extends it: the index never outlives its newest entry by long.
            pipe.cmd("PEXPIRE").arg(&due).arg(keep).arg("NX").ignore();
            pipe.cmd("PEXPIRE").arg(&due).arg(keep).arg("GT").ignore();
        }
        // The source's bucket is in another slot: checked beside the index write, in the same round
        // trip's time (both requests are in flight at once on the multiplexed connection).
        let source = new
            .context
            .ip
            .filter(|_| self.limits.source_rate.per_minute > 0)
            .map(crate::limits::source_key);
        let index = async {
            if index_in_step {
                return Ok(());
            }
            pipe.query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)
        };
        let (indexed, source_wait) = tokio::join!(index, self.take_source_token(source.as_deref()));
        // Both live in slots other than the account's. They are helpers, so when their node is down the
        // sign-in is not refused for it: the challenge is created without them (warned once).
        self.helpers.overdue_index.observe(indexed);
        let source_wait = self.helpers.source_bucket.observe(source_wait).flatten();
        if let Some(wait) = source_wait {
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
        if index_in_step {
            inv.key(&due);
        }
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
            .arg(if self.limits.supersede { "1" } else { "0" })
            .arg(new.min_assurance.rank())
            .arg(keys::push_member(&self.replica, &new.id))
            .arg(crate::challenge::LEASE_MS);
        for (name, value) in codec::new_challenge_fields(&new) {
            inv.arg(name).arg(value);
        }
        inv.arg("pusher").arg(&self.replica);
        let reply: Value = self.run(&inv).await?;
        let items = array(&reply)?;
        match text(at(items, 0)?)?.as_str() {
            "nodevices" => Ok(CreateOutcome::NoDevices),
            "noassurance" => Ok(CreateOutcome::NoDeviceMeetsAssurance),
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
                    superseded.push(self.ended(&id, at(old, 1)?, at(old, 2)?)?);
                }
                let mut challenge = Challenge {
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
                    pusher: String::new(),
                    push_claims: 0,
                };
                // As create.lua recorded them, so the create answer matches what a read shows.
                challenge.mark_poll_only(
                    devices
                        .iter()
                        .filter(|d| !d.platform.is_pushed())
                        .map(|d| &d.id),
                );
                Ok(CreateOutcome::Created(challenge, devices, superseded))
            }
        }
    }

    pub(super) async fn answer(
        &self,
        call: &DeviceCall,
        id: &ChallengeId,
        decision: Decision,
        number: u32,
        remember: std::time::Duration,
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
            .arg(millis(self.limits.fraud_mute))
            .arg(millis(remember).max(1))
            .arg(crate::known::MAX_DEVICES)
            .arg(crate::known::MAX_PLACES)
            .arg(call.key.as_bytes());
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
        let ended = self.ended(id, at(items, 3)?, at(items, 4)?)?;
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
}
