//! The in-memory store's device steps: tickets, enrollment, revocation, token and key changes, pruning.

use super::MAX_DEVICES;
use super::state::State;
use crate::audit::{Actor, AuditKind, AuditRecord, SecurityKind};
use crate::auth::{AuthError, PublicKey};
use crate::challenge::{AccountId, DeviceId};
use crate::device::{Device, DeviceState, Enrollment, Ticket};
use crate::store::{DeviceCall, EnrollRefusal, NewDevice};

impl State {
    pub fn create_enrollment(&mut self, ticket: &Ticket, enrollment: &Enrollment, now: i64) {
        self.enrollments.insert(ticket.digest(), enrollment.clone());
        let record = AuditRecord::new(
            &enrollment.account,
            AuditKind::EnrollmentCreated,
            Actor::Backend,
        );
        self.audit(record, now);
    }

    pub fn enroll(
        &mut self,
        ticket: &Ticket,
        new: NewDevice,
        now: i64,
    ) -> Result<Device, EnrollRefusal> {
        let digest = ticket.digest();
        let Some(enrollment) = self
            .enrollments
            .get(&digest)
            .filter(|e| e.expires_at_ms > now)
            .cloned()
        else {
            return Err(EnrollRefusal::BadTicket);
        };
        let account = enrollment.account;
        // Revoked devices do not count; suspected clones do, until revoked.
        let count = self.by_account.get(&account).map_or(0, |l| {
            l.iter()
                .filter(|d| {
                    self.devices
                        .get(*d)
                        .is_some_and(|d| d.state != DeviceState::Revoked)
                })
                .count()
        });
        if count >= MAX_DEVICES {
            return Err(EnrollRefusal::TooManyDevices);
        }
        self.enrollments.remove(&digest);
        let device = Device {
            id: new.id.clone(),
            account: account.clone(),
            platform: new.platform,
            push_token: (!new.push_token.is_empty()).then_some(new.push_token),
            fallback: new.fallback,
            app_id: new.app_id,
            key: new.key,
            display_name: new.display_name,
            created_at_ms: now,
            last_seen_ms: now,
            counter: 0,
            state: DeviceState::Active,
            attestation: new.attestation,
        };
        self.by_account
            .entry(account.clone())
            .or_default()
            .push(device.id.clone());
        self.devices.insert(device.id.clone(), device.clone());
        let record = AuditRecord::new(
            &account,
            AuditKind::DeviceEnrolled,
            Actor::Device(device.id.clone()),
        )
        .device(&device.id)
        .detail(device.attestation.summary());
        self.report(record, SecurityKind::DeviceEnrolled, now);
        if let Some(sealed) = new.offline_code {
            let code = crate::store::NewAuthenticator {
                id: device.id.to_string(),
                device: Some(device.id.clone()),
                sealed,
                pending: None,
            };
            self.save_authenticator(&account, &code, now);
        }
        Ok(device)
    }

    pub fn list_devices(&self, account: &AccountId) -> Vec<Device> {
        self.by_account
            .get(account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.devices.get(id).cloned())
            .collect()
    }

    pub fn revoke_device(
        &mut self,
        account: &AccountId,
        id: &DeviceId,
        actor: &Actor,
        now: i64,
    ) -> Option<Device> {
        let device = self.devices.get_mut(id).filter(|d| &d.account == account)?;
        if device.state == DeviceState::Revoked {
            return Some(device.clone());
        }
        device.state = DeviceState::Revoked;
        let device = device.clone();
        let record = AuditRecord::new(account, AuditKind::DeviceRevoked, actor.clone()).device(id);
        self.report(record, SecurityKind::DeviceRevoked, now);
        Some(device)
    }

    pub fn update_push_token(
        &mut self,
        call: &DeviceCall,
        token: &str,
        fallback: Option<&str>,
        now: i64,
    ) -> Result<Device, AuthError> {
        let (current, changed) = {
            let d = self.accept(call, now)?;
            (d.push_token.clone(), d.push_token.as_deref() != Some(token))
        };
        if changed {
            let (previous, changed_at) = self
                .token_history
                .get(&call.device)
                .cloned()
                .unwrap_or_default();
            if crate::auth::is_token_flip(previous.as_deref(), changed_at, token, now) {
                self.mark_clone(&call.device, "push token switched back within a day", now);
                return Err(AuthError::TokenFlip);
            }
            self.token_history
                .insert(call.device.clone(), (current, now));
        }
        let device = self
            .devices
            .get_mut(&call.device)
            .ok_or(AuthError::UnknownDevice)?;
        device.push_token = Some(token.to_owned());
        if let (Some(new), Some(f)) = (fallback, device.fallback.as_mut()) {
            f.push_token = Some(new.to_owned());
        }
        let device = device.clone();
        let record = AuditRecord::new(
            &device.account,
            AuditKind::PushTokenUpdated,
            Actor::Device(device.id.clone()),
        )
        .device(&device.id);
        self.audit(record, now);
        Ok(device)
    }

    /// Counter rule, then the new key; the counter starts again from 0 with it (device.proto: a way
    /// out for a device whose counter nears 2^53; a copy of the old key cannot sign for the new one).
    pub fn rotate_key(
        &mut self,
        call: &DeviceCall,
        key: &PublicKey,
        now: i64,
    ) -> Result<Device, AuthError> {
        let device = {
            let d = self.accept(call, now)?;
            d.key = key.clone();
            d.counter = 0;
            // The new key is not attested: whatever the old one proved says nothing about it.
            d.attestation = crate::attest::Verdict::default();
            d.clone()
        };
        let record = AuditRecord::new(
            &device.account,
            AuditKind::KeyRotated,
            Actor::Device(device.id.clone()),
        )
        .device(&device.id)
        .detail(device.attestation.summary());
        self.audit(record, now);
        Ok(device)
    }

    pub fn prune_token(&mut self, id: &DeviceId, token: &str, reason: &str, now: i64) {
        let Some(device) = self.devices.get_mut(id) else {
            return;
        };
        // Only the token that failed: the phone may have sent a fresh one meanwhile.
        let detail = if device.push_token.as_deref() == Some(token) {
            device.push_token = None;
            reason.to_owned()
        } else if let Some(fallback) = device
            .fallback
            .as_mut()
            .filter(|f| f.push_token.as_deref() == Some(token))
        {
            fallback.push_token = None;
            format!("fallback: {reason}")
        } else {
            return;
        };
        let record = AuditRecord::new(&device.account, AuditKind::PushTokenPruned, Actor::Relay)
            .device(id)
            .detail(detail);
        self.audit(record, now);
    }
}
