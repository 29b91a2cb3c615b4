//! Everything the in-memory store holds, and the helpers every step shares: appending to an account's
//! trails and the security stream, the counter rule, the record of an ended challenge, retention.

use super::{AUDIT_CAP, RETENTION_MS, SECURITY_CAP};
use crate::audit::{Actor, AuditKind, AuditRecord, SecurityEvent, SecurityKind, StoredAudit};
use crate::auth::AuthError;
use crate::challenge::{
    AccountId, Challenge, ChallengeId, DeviceId, Event, EventKind, NoticeId, State as Phase,
};
use crate::device::{Device, Enrollment};
use crate::limits::{Bucket, Cooldown, FailureBudget, LimitPolicy};
use crate::notice::Notice;
use crate::store::trail::REFUSED_CAP;
use crate::store::{DeviceCall, Ended};
use std::collections::{HashMap, VecDeque};

/// What a step leaves for after the lock: events for the watch hub, and whether security-event readers
/// must wake.
#[derive(Default)]
pub(super) struct After {
    pub events: Vec<Event>,
    pub security: bool,
}

/// An account's two trails (see `store::trail`), numbered by one sequence so their positions order
/// across both.
#[derive(Default)]
pub(super) struct Trails {
    pub seq: u64,
    pub main: VecDeque<StoredAudit>,
    pub refused: VecDeque<StoredAudit>,
}

/// The whole store.
pub(super) struct State {
    pub limits: LimitPolicy,
    /// The id of the one replica this store serves.
    pub replica: String,
    /// Pushes owed, by challenge: the owner and when to look at them again.
    pub push_work: HashMap<ChallengeId, (String, i64)>,
    pub after: After,
    pub devices: HashMap<DeviceId, Device>,
    pub by_account: HashMap<AccountId, Vec<DeviceId>>,
    pub enrollments: HashMap<String, Enrollment>,
    pub challenges: HashMap<ChallengeId, Challenge>,
    pub challenges_by_account: HashMap<AccountId, Vec<ChallengeId>>,
    pub idempotency: HashMap<(AccountId, String), ChallengeId>,
    pub trails: HashMap<AccountId, Trails>,
    pub security: VecDeque<SecurityEvent>,
    pub security_seq: u64,
    pub cooldowns: HashMap<AccountId, Cooldown>,
    /// Each device's previous push token and when it was replaced (token-flip clone detection).
    pub token_history: HashMap<DeviceId, (Option<String>, i64)>,
    /// Creation-rate buckets by "account:<id>" and "source:<address>".
    pub buckets: HashMap<String, Bucket>,
    /// Authentication-failure budgets by "device:<id>" and "source:<address>".
    pub failures: HashMap<String, FailureBudget>,
    pub notices: HashMap<NoticeId, Notice>,
    /// Each account's notice ids, oldest first, capped at `NOTICES_PER_ACCOUNT`.
    pub notices_by_account: HashMap<AccountId, VecDeque<NoticeId>>,
    /// Each account's remembered sign-ins, and when the set expires (Unix ms).
    pub known: HashMap<AccountId, (crate::known::Remembered, i64)>,
    /// Each account's offline-code authenticators by id.
    pub authenticators:
        HashMap<AccountId, std::collections::BTreeMap<String, crate::factor::Authenticator>>,
    /// Wrong or replayed codes in a row per account (reset by an accepted one).
    pub code_streaks: HashMap<AccountId, u32>,
}

impl State {
    pub fn new(limits: LimitPolicy, replica: String) -> Self {
        Self {
            limits,
            replica,
            push_work: HashMap::new(),
            after: After::default(),
            devices: HashMap::new(),
            by_account: HashMap::new(),
            enrollments: HashMap::new(),
            challenges: HashMap::new(),
            challenges_by_account: HashMap::new(),
            idempotency: HashMap::new(),
            trails: HashMap::new(),
            security: VecDeque::new(),
            security_seq: 0,
            cooldowns: HashMap::new(),
            token_history: HashMap::new(),
            buckets: HashMap::new(),
            failures: HashMap::new(),
            notices: HashMap::new(),
            notices_by_account: HashMap::new(),
            known: HashMap::new(),
            authenticators: HashMap::new(),
            code_streaks: HashMap::new(),
        }
    }

    /// Appends a real record to its account's trail.
    pub fn audit(&mut self, record: AuditRecord, at_ms: i64) {
        self.append(record, at_ms, false);
    }

    /// Appends a record of an unauthenticated refusal to its account's refusal trail.
    pub fn audit_refused(&mut self, record: AuditRecord, at_ms: i64) {
        self.append(record, at_ms, true);
    }

    fn append(&mut self, record: AuditRecord, at_ms: i64, refused: bool) {
        let trails = self.trails.entry(record.account.clone()).or_default();
        trails.seq += 1;
        let (list, cap) = if refused {
            (&mut trails.refused, REFUSED_CAP)
        } else {
            (&mut trails.main, AUDIT_CAP)
        };
        list.push_back(StoredAudit {
            position: trails.seq.to_string(),
            at_ms,
            record,
        });
        if list.len() > cap {
            list.pop_front();
        }
    }

    /// Appends a security event (readers wake after the step).
    pub fn security(
        &mut self,
        account: &AccountId,
        kind: SecurityKind,
        device: Option<&DeviceId>,
        challenge: Option<&ChallengeId>,
        detail: &str,
        at_ms: i64,
    ) {
        self.security_seq += 1;
        self.security.push_back(SecurityEvent {
            position: self.security_seq.to_string(),
            at_ms,
            account: account.clone(),
            kind,
            device: device.cloned(),
            challenge: challenge.cloned(),
            detail: detail.to_owned(),
        });
        if self.security.len() > SECURITY_CAP {
            self.security.pop_front();
        }
        self.after.security = true;
    }

    /// Security events after a position, oldest first.
    pub fn security_after(&self, after: u64, limit: usize) -> Vec<SecurityEvent> {
        self.security
            .iter()
            .filter(|e| e.position.parse::<u64>().is_ok_and(|p| p > after))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Appends a record and reports it as a security event of `kind`.
    pub fn report(&mut self, record: AuditRecord, kind: SecurityKind, now: i64) {
        self.security(
            &record.account,
            kind,
            record.device.as_ref(),
            record.challenge.as_ref(),
            &record.detail,
            now,
        );
        self.audit(record, now);
    }

    /// Counter rule on a call, auditing and reporting a suspected clone.
    pub fn accept(&mut self, call: &DeviceCall, now: i64) -> Result<&mut Device, AuthError> {
        let device = self
            .devices
            .get_mut(&call.device)
            .ok_or(AuthError::UnknownDevice)?;
        match device.accept_counter(&call.key, call.counter, now) {
            Ok(()) => {}
            Err(AuthError::CounterNotIncreasing) => {
                let detail = format!("counter {} after {}", call.counter, device.counter);
                self.mark_clone(&call.device, &detail, now);
                return Err(AuthError::CounterNotIncreasing);
            }
            Err(e) => return Err(e),
        }
        self.devices
            .get_mut(&call.device)
            .ok_or(AuthError::UnknownDevice)
    }

    /// Marks a device suspected cloned (refused from now on), audits it and reports it.
    pub fn mark_clone(&mut self, id: &DeviceId, detail: &str, now: i64) {
        let Some(device) = self.devices.get_mut(id) else {
            return;
        };
        device.state = crate::device::DeviceState::SuspectedClone;
        let account = device.account.clone();
        let record = AuditRecord::new(
            &account,
            AuditKind::CloneSuspected,
            Actor::Device(id.clone()),
        )
        .device(id)
        .detail(detail);
        self.report(record, SecurityKind::CloneSuspected, now);
    }

    /// The audit record of a challenge that just ended with `event`.
    pub fn ended_audit(challenge: &Challenge, event: &Event) -> AuditRecord {
        let (kind, actor, detail) = match &challenge.state {
            Phase::Approved(d) => (
                AuditKind::ChallengeApproved,
                Actor::Device(d.clone()),
                String::new(),
            ),
            Phase::Denied(d, r) => (
                AuditKind::ChallengeDenied,
                Actor::Device(d.clone()),
                r.name().to_owned(),
            ),
            Phase::FraudReported(d) => (
                AuditKind::FraudReported,
                Actor::Device(d.clone()),
                String::new(),
            ),
            Phase::Expired => (AuditKind::ChallengeExpired, Actor::Relay, String::new()),
            Phase::Cancelled | Phase::Pending => {
                (AuditKind::ChallengeCancelled, Actor::Backend, String::new())
            }
        };
        let mut record = AuditRecord::new(&challenge.account, kind, actor)
            .challenge(&challenge.id)
            .detail(detail);
        if let EventKind::Ended(
            Phase::Approved(d) | Phase::Denied(d, _) | Phase::FraudReported(d),
        ) = &event.kind
        {
            record = record.device(d);
        }
        record
    }

    /// A challenge that just ended, with the devices it was pushed to but `except`, as stored now: whom
    /// to withdraw it from. Its event is published after the step.
    pub fn ended(
        &mut self,
        challenge: Challenge,
        event: Event,
        except: Option<&DeviceId>,
    ) -> Ended {
        let withdraw = challenge
            .targets
            .iter()
            .filter(|id| Some(*id) != except)
            .filter_map(|id| self.devices.get(id))
            .cloned()
            .collect();
        self.after.events.push(event.clone());
        Ended {
            challenge,
            event,
            withdraw,
        }
    }

    /// Moves the account's cool-down after one of its challenges ended.
    pub fn cool(&mut self, challenge: &Challenge, now: i64) {
        let current = self
            .cooldowns
            .get(&challenge.account)
            .copied()
            .unwrap_or_default();
        let next = current.after(&challenge.state, now, &self.limits);
        self.cooldowns.insert(challenge.account.clone(), next);
    }

    /// Forgets what Redis would have let expire by now.
    pub fn purge(&mut self, now: i64) {
        let old: Vec<ChallengeId> = self
            .challenges
            .values()
            .filter(|c| c.state.is_terminal() && c.expires_at_ms + RETENTION_MS < now)
            .map(|c| c.id.clone())
            .collect();
        for id in old {
            if let Some(c) = self.challenges.remove(&id) {
                if let Some(list) = self.challenges_by_account.get_mut(&c.account) {
                    list.retain(|x| x != &id);
                }
                if let Some(key) = c.idempotency_key {
                    self.idempotency.remove(&(c.account, key));
                }
            }
        }
        self.enrollments.retain(|_, e| e.expires_at_ms > now);
        self.notices.retain(|_, n| n.expires_at_ms > now);
        // Budgets that are full again are the same as none (as their Redis keys expire then).
        let limits = self.limits;
        self.failures.retain(|key, budget| {
            let limit = if key.starts_with("device:") {
                limits.device_auth_failures
            } else {
                limits.source_auth_failures
            };
            Bucket::level(Some(budget.bucket), now, &limit) < i64::from(limit.burst) * 1000
        });
    }
}
