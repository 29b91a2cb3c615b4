//! The in-memory store's known sign-ins and offline-code authenticators (the Redis store's
//! remember.lua and code.lua do the same steps).

use super::state::State;
use crate::audit::{Actor, AuditKind, AuditRecord, SecurityKind};
use crate::challenge::AccountId;
use crate::factor::{
    Authenticator, CodeCheck, CodeMatch, MAX_STANDALONE, STREAK_ALERT, STREAK_DETAIL, fresh,
};
use crate::known::{self, KnownKey, Remembered};
use crate::limits::{Bucket, LimitRefusal};
use crate::store::NewAuthenticator;
use std::time::Duration;

impl State {
    pub fn known_sign_ins(&mut self, account: &AccountId, now: i64) -> Remembered {
        match self.known.get(account) {
            Some((_, until)) if *until <= now => {
                self.known.remove(account);
                Remembered::new()
            }
            Some((set, _)) => set.clone(),
            None => Remembered::new(),
        }
    }

    pub fn remember_sign_in(
        &mut self,
        account: &AccountId,
        keys: &[KnownKey],
        window: Duration,
        now: i64,
    ) {
        let set = self.known_sign_ins(account, now);
        let (writes, drops) = known::remember(&set, keys, now, window);
        let entry = self.known.entry(account.clone()).or_default();
        for field in drops {
            entry.0.remove(&field);
        }
        entry.0.extend(writes);
        entry.1 = now.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    }

    pub fn forget_sign_ins(
        &mut self,
        account: &AccountId,
        field: Option<&str>,
        actor: &Actor,
        why: &str,
        now: i64,
    ) -> usize {
        let mut set = self.known_sign_ins(account, now);
        let forgotten = match field {
            Some(f) => usize::from(set.remove(f).is_some()),
            None => std::mem::take(&mut set).len(),
        };
        if set.is_empty() {
            self.known.remove(account);
        } else if let Some(entry) = self.known.get_mut(account) {
            entry.0 = set;
        }
        if forgotten > 0 {
            let record = AuditRecord::new(account, AuditKind::KnownSignInsForgotten, actor.clone())
                .detail(why);
            self.audit(record, now);
        }
        forgotten
    }

    pub fn save_authenticator(
        &mut self,
        account: &AccountId,
        new: &NewAuthenticator,
        now: i64,
    ) -> bool {
        let a = Authenticator {
            id: new.id.clone(),
            device: new.device.clone(),
            sealed: new.sealed.clone(),
            created_ms: now,
            pending_until_ms: new
                .pending
                .map(|p| now.saturating_add(i64::try_from(p.as_millis()).unwrap_or(i64::MAX))),
            used_step: -1,
        };
        let held = self.authenticators.entry(account.clone()).or_default();
        held.retain(|_, x| x.usable(now));
        let standalone = held.values().filter(|x| x.device.is_none()).count();
        if a.device.is_none() && standalone >= MAX_STANDALONE {
            return false;
        }
        let actor = a.device.clone().map_or(Actor::Backend, Actor::Device);
        let mut record =
            AuditRecord::new(account, AuditKind::AuthenticatorCreated, actor).detail(&a.id);
        if let Some(device) = &a.device {
            record = record.device(device);
        }
        held.insert(a.id.clone(), a);
        self.audit(record, now);
        true
    }

    pub fn authenticators(&self, account: &AccountId) -> Vec<Authenticator> {
        self.authenticators
            .get(account)
            .map(|held| held.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn remove_authenticator(&mut self, account: &AccountId, id: &str) -> bool {
        let Some(held) = self.authenticators.get_mut(account) else {
            return false;
        };
        let removed = held.remove(id).is_some();
        if held.is_empty() {
            self.authenticators.remove(account);
        }
        removed
    }

    pub fn check_code(
        &mut self,
        account: &AccountId,
        matched: Option<&CodeMatch>,
        now: i64,
    ) -> CodeCheck {
        let limit = self.limits.code_failures;
        let key = format!("code:{account}");
        let spent = limit.per_minute > 0
            && Bucket::level(self.failures.get(&key).map(|b| b.bucket), now, &limit) < 1000;
        if spent {
            let (wait, first_trip) = self.take_failure(key, now, &limit).unwrap_or_default();
            if first_trip {
                let name = LimitRefusal::CodeFailures.name();
                let record =
                    AuditRecord::new(account, AuditKind::RateLimited, Actor::Backend).detail(name);
                self.audit_refused(record, now);
                self.security(account, SecurityKind::LimitTripped, None, None, name, now);
            }
            return CodeCheck::Limited { wait, first_trip };
        }
        // Read again here, atomically: still there, not past activation, its device still active.
        let device_active = |d: &Option<crate::challenge::DeviceId>| {
            d.as_ref().is_none_or(|d| {
                self.devices
                    .get(d)
                    .is_some_and(|x| x.state == crate::device::DeviceState::Active)
            })
        };
        let counts = matched.is_some_and(|m| device_active(&m.device));
        let stored = matched.filter(|_| counts).and_then(|m| {
            self.authenticators
                .get_mut(account)
                .and_then(|held| held.get_mut(&m.id))
                .filter(|a| a.usable(now))
                .map(|a| (m, a))
        });
        let outcome = match stored {
            Some((m, a)) if fresh(m, a.used_step) => {
                a.used_step = m.step;
                let activated = a.pending_until_ms.take().is_some();
                let detail = if activated {
                    format!("{} activated", m.id)
                } else {
                    m.id.clone()
                };
                let mut record = AuditRecord::new(account, AuditKind::CodeVerified, Actor::Backend)
                    .detail(detail);
                if let Some(device) = &m.device {
                    record = record.device(device);
                }
                self.audit(record, now);
                self.code_streaks.remove(account);
                return CodeCheck::Accepted(m.clone());
            }
            Some(_) => CodeCheck::Replayed,
            None => CodeCheck::Wrong,
        };
        if limit.per_minute > 0 {
            self.take_failure(key, now, &limit);
        }
        let record = AuditRecord::new(account, AuditKind::CodeRefused, Actor::Backend)
            .detail(outcome.name());
        self.audit_refused(record, now);
        let streak = self.code_streaks.entry(account.clone()).or_default();
        *streak += 1;
        if (*streak).is_multiple_of(STREAK_ALERT) {
            self.security(
                account,
                SecurityKind::LimitTripped,
                None,
                None,
                STREAK_DETAIL,
                now,
            );
        }
        outcome
    }
}
