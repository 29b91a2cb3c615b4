//! The Redis store's records beyond a challenge: the budgets of requests that fail authentication (one
//! in the peer address's own slot, one in the account's) and notices.

use super::*;

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

impl RedisStore {
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

    pub(super) async fn count_auth_failure(
        &self,
        failure: &AuthFailure,
    ) -> Result<FailureOutcome, StoreError> {
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
            if let Some(reply) = self.helpers.failure_budget.observe(reply) {
                outcome = codec::failure_outcome(&reply, limit)?;
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

    pub(super) async fn notice(
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
}
