//! The in-memory store's records: notices, the audit trails and their merged pages, and the budgets of
//! requests that fail authentication.

use super::state::State;
use crate::audit::{Actor, AuditKind, AuditRecord, SecurityKind, StoredAudit};
use crate::challenge::{AccountId, DeviceId, NoticeId};
use crate::device::{Device, DeviceState};
use crate::limits::{FailureBudget, FailureVerdict, LimitRefusal, RateLimit};
use crate::notice::{NOTICES_PER_ACCOUNT, Notice, NoticeDraft};
use crate::store::trail::{self, Cursor};
use crate::store::{AuditPage, AuthFailure, FailureOutcome, StoreError};
use std::time::Duration;

impl State {
    pub fn create_notice(
        &mut self,
        id: NoticeId,
        draft: NoticeDraft,
        now: i64,
    ) -> Option<(Notice, Vec<Device>)> {
        let devices: Vec<Device> = self
            .by_account
            .get(&draft.account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.devices.get(id))
            .filter(|d| d.state == DeviceState::Active && !draft.skips(&d.id))
            .cloned()
            .collect();
        if devices.is_empty() {
            return None;
        }
        let notice = draft.into_notice(id, devices.iter().map(|d| d.id.clone()).collect(), now);
        // The 50 newest are listed; every notice stays fetchable for its 7 days (see `purge`).
        let ids = self
            .notices_by_account
            .entry(notice.account.clone())
            .or_default();
        ids.push_back(notice.id.clone());
        if ids.len() > NOTICES_PER_ACCOUNT {
            ids.pop_front();
        }
        self.notices.insert(notice.id.clone(), notice.clone());
        let mut record = AuditRecord::new(&notice.account, AuditKind::NoticeSent, Actor::Relay)
            .detail(format!("{} {}", notice.kind.name(), notice.id));
        if let Some(device) = &notice.subject {
            record = record.device(device);
        }
        if let Some(challenge) = &notice.challenge {
            record = record.challenge(challenge);
        }
        self.audit(record, now);
        Some((notice, devices))
    }

    pub fn list_notices(&self, account: &AccountId, now: i64) -> Vec<Notice> {
        self.notices_by_account
            .get(account)
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|id| self.notices.get(id))
            .filter(|n| n.expires_at_ms > now)
            .cloned()
            .collect()
    }

    pub fn list_audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let cursor = Cursor::parse(before, |p| p.parse::<u64>().is_ok())?;
        let Some(trails) = self.trails.get(account) else {
            return Ok(AuditPage {
                records: Vec::new(),
                next: None,
            });
        };
        let older = |list: &std::collections::VecDeque<StoredAudit>, before: &Option<String>| {
            let before = before
                .as_deref()
                .and_then(|p| p.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            list.iter()
                .rev()
                .filter(|r| r.position.parse::<u64>().is_ok_and(|p| p < before))
                .take(limit + 1)
                .cloned()
                .collect::<Vec<_>>()
        };
        let main = older(&trails.main, &cursor.main);
        let refused = older(&trails.refused, &cursor.refused);
        Ok(trail::merge(main, refused, limit, cursor))
    }

    /// Takes one failure from a budget: `None` when within it, else the wait and whether it tripped.
    pub(super) fn take_failure(
        &mut self,
        key: String,
        now: i64,
        limit: &RateLimit,
    ) -> Option<(Duration, bool)> {
        if limit.per_minute == 0 {
            return None;
        }
        let (state, verdict) = FailureBudget::take(self.failures.get(&key).copied(), now, limit);
        if let Some(state) = state {
            self.failures.insert(key, state);
        }
        match verdict {
            FailureVerdict::Record => None,
            FailureVerdict::Limited { wait, first_trip } => Some((wait, first_trip)),
        }
    }

    pub fn auth_failure(&mut self, failure: &AuthFailure, now: i64) -> FailureOutcome {
        let limits = self.limits;
        let budgets = [
            (
                failure.source.as_ref().map(|s| format!("source:{s}")),
                limits.source_auth_failures,
                LimitRefusal::SourceAuthFailures,
            ),
            (
                failure.device.as_ref().map(|(d, _)| format!("device:{d}")),
                limits.device_auth_failures,
                LimitRefusal::DeviceAuthFailures,
            ),
        ];
        // The peer address first, as the Redis store checks it in a step of its own.
        for (key, limit, refusal) in budgets {
            let Some(key) = key else { continue };
            if let Some((wait, first_trip)) = self.take_failure(key, now, &limit) {
                if first_trip && let Some((device, account)) = &failure.device {
                    self.tripped(account, device, refusal, now);
                }
                return FailureOutcome::Limited {
                    limit: refusal,
                    wait,
                    first_trip,
                };
            }
        }
        if let Some((device, account)) = &failure.device {
            let record =
                AuditRecord::new(account, AuditKind::RequestRefused, Actor::Unauthenticated)
                    .device(device)
                    .detail(failure.reason);
            self.audit_refused(record, now);
        }
        FailureOutcome::Counted
    }

    /// One record and one security event per burst of failures.
    fn tripped(&mut self, account: &AccountId, device: &DeviceId, limit: LimitRefusal, now: i64) {
        let record = AuditRecord::new(account, AuditKind::RateLimited, Actor::Unauthenticated)
            .device(device)
            .detail(limit.name());
        self.audit_refused(record, now);
        self.security(
            account,
            SecurityKind::LimitTripped,
            Some(device),
            None,
            limit.name(),
            now,
        );
    }
}
