//! The device API's use cases: enrollment with proof of possession, authentication of signed requests
//! (signature over the exact payload bytes, device id, timestamp window) and the operations a device may
//! perform; the counter rule runs inside each operation's store step.

use super::{Authenticated, Relay};
use crate::attest::{Binding, Evidence};
use crate::audit::{Actor, AuditKind, AuditRecord};
use crate::auth::{self, AuthError, PublicKey};
use crate::challenge::{Challenge, ChallengeId, Decision, DeviceId, RespondError, State};
use crate::device::{Device, Ticket};
use crate::error::Error;
use crate::notice::{NoticeDraft, NoticeKind};
use crate::store::{AuthFailure, DeviceRefusal, FailureOutcome, NewDevice};

/// An enrollment as the phone sent it, its shape checked.
pub struct EnrollCall<'a> {
    /// The ticket from the QR code.
    pub ticket: &'a Ticket,
    /// The device to register.
    pub device: NewDevice,
    /// The signed payload bytes.
    pub payload: &'a [u8],
    /// The new key's signature over them.
    pub signature: &'a [u8],
    /// The signed timestamp.
    pub timestamp_ms: i64,
    /// Also provision an offline code.
    pub offline_code: bool,
    /// The key attestation and the client data it covers (the payload without it).
    pub attestation: Option<(&'a Evidence, &'a [u8])>,
}

impl Relay {
    /// Enrolls a device: the signature by the new key over the payload proves possession; its key
    /// attestation, if any, is verified and the verdict kept.
    ///
    /// # Errors
    /// `Auth` for a bad proof or timestamp, `Attestation` for a refused attestation, `Enroll` for a bad
    /// ticket, or a store failure.
    pub async fn enroll(&self, call: EnrollCall<'_>) -> Result<(Device, Option<Vec<u8>>), Error> {
        let EnrollCall {
            ticket,
            mut device,
            payload,
            signature,
            timestamp_ms,
            offline_code,
            attestation,
        } = call;
        device.key.verify(payload, signature)?;
        let now = self.store.now_ms().await?;
        auth::check_timestamp(timestamp_ms, now, self.window_ms())?;
        let binding = Binding {
            ticket: ticket.as_str(),
            key: &device.key,
            app_id: &device.app_id,
            client_data: attestation.map_or(&[], |a| a.1),
        };
        let now_secs = u64::try_from(now / 1000).unwrap_or_default();
        device.attestation =
            self.policy
                .attestation
                .verify(attestation.map(|a| a.0), &binding, now_secs)?;
        // Sealed before the step and saved in it: the device never exists without the code it asked
        // for, and a relay that cannot seal refuses before the ticket is used.
        let secret = if offline_code {
            let (secret, sealed) = self.device_code(&device.id)?;
            device.offline_code = Some(sealed);
            Some(secret)
        } else {
            None
        };
        let device = self.store.enroll(ticket, device).await??;
        tracing::info!(device_id = %device.id, platform = device.platform.name(), "device enrolled");
        let draft = NoticeDraft::about(&device.account, NoticeKind::NewDevice, &device.id);
        self.notify_quietly(draft).await;
        Ok((device, secret))
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.policy.timestamp_window.as_millis()).unwrap_or(i64::MAX)
    }

    /// Checks a signed request: known device, matching id, valid signature, fresh timestamp. A request
    /// that fails is counted against the budgets of the device it names and of its peer address `source`
    /// and recorded in the account's refusal trail while within them (DESIGN.md guarantee 11); past them
    /// it is refused RESOURCE_EXHAUSTED. A request that authenticates is never refused by those budgets.
    /// The device as this replica last read it, and the store clock as last read, are tried first
    /// (`device_cache`); a failure is only ever decided on a fresh read.
    ///
    /// # Errors
    /// `Auth` with the reason, or `Limited` when a failure budget is spent.
    #[allow(clippy::too_many_arguments)]
    pub async fn authenticate(
        &self,
        envelope_device: &DeviceId,
        inner_device: &str,
        counter: u64,
        timestamp_ms: i64,
        payload: &[u8],
        signature: &[u8],
        source: Option<std::net::IpAddr>,
    ) -> Result<Authenticated, Error> {
        let check = |device: &Device, now: i64| {
            device
                .key
                .verify(payload, signature)
                .and_then(|()| {
                    if inner_device == device.id.as_str() {
                        Ok(())
                    } else {
                        Err(AuthError::DeviceMismatch)
                    }
                })
                .and_then(|()| auth::check_timestamp(timestamp_ms, now, self.window_ms()))
        };
        if let Some(device) = self.devices.get(envelope_device)
            && let Some(now) = self.store.recent_now_ms()
        {
            if check(&device, now).is_ok() {
                metrics::counter!("relay_device_cache_total", "outcome" => "hit").increment(1);
                return Ok(Authenticated::new(device, counter, source));
            }
            // Perhaps rotated since: decided again below on what the store holds now.
            self.devices.forget(envelope_device);
        }
        metrics::counter!("relay_device_cache_total", "outcome" => "miss").increment(1);
        let (device, now) = self.store.device_and_time(envelope_device).await?;
        let Some(device) = device else {
            return Err(self
                .auth_failed(None, source, AuthError::UnknownDevice)
                .await);
        };
        if let Err(e) = check(&device, now) {
            return Err(self.auth_failed(Some(&device), source, e).await);
        }
        self.devices.put(&device);
        Ok(Authenticated::new(device, counter, source))
    }

    /// Counts a failed authentication; the error to answer with.
    pub(super) async fn auth_failed(
        &self,
        device: Option<&Device>,
        source: Option<std::net::IpAddr>,
        error: AuthError,
    ) -> Error {
        metrics::counter!("relay_device_requests_refused_total", "reason" => error.reason())
            .increment(1);
        let failure = AuthFailure {
            device: device.map(|d| (d.id.clone(), d.account.clone())),
            source: source.map(crate::limits::source_key),
            reason: error.reason(),
        };
        match self.store.auth_failure(&failure).await {
            Ok(FailureOutcome::Counted) => error.into(),
            Ok(FailureOutcome::Limited {
                limit,
                wait,
                first_trip,
            }) => {
                metrics::counter!("relay_limit_refusals_total", "limit" => limit.name())
                    .increment(1);
                if first_trip {
                    tracing::warn!(
                        limit = limit.name(),
                        device_id = device.map(|d| d.id.to_string()).unwrap_or_default(),
                        "device requests failing authentication are over their budget; \
                         refusing them RESOURCE_EXHAUSTED without recording each"
                    );
                }
                Error::Limited(limit, wait)
            }
            Err(store_error) => {
                tracing::warn!(%store_error, "could not count a failed authentication");
                error.into()
            }
        }
    }

    pub(super) async fn refused(
        &self,
        device: &Device,
        challenge: Option<&ChallengeId>,
        reason: &str,
    ) {
        metrics::counter!("relay_device_requests_refused_total", "reason" => reason.to_owned())
            .increment(1);
        let mut record = AuditRecord::new(
            &device.account,
            AuditKind::RequestRefused,
            Actor::Device(device.id.clone()),
        )
        .device(&device.id)
        .detail(reason);
        if let Some(id) = challenge {
            record = record.challenge(id);
        }
        if let Err(error) = self.store.audit(record).await {
            tracing::warn!(%error, "could not audit a refused request");
        }
    }

    /// A device's answer to a challenge.
    ///
    /// # Errors
    /// `Device` with the refusal, or a store failure.
    pub async fn respond(
        &self,
        auth: &Authenticated,
        id: &ChallengeId,
        decision: Decision,
        number: u32,
    ) -> Result<Challenge, Error> {
        // An approval makes the sign-in known in the same store step (no second round trip).
        let remember = self.policy.remember_window;
        match self
            .store
            .respond(&auth.call, id, decision, number, remember)
            .await?
        {
            Ok(ended) => {
                let challenge = self.ended(ended);
                tracing::info!(challenge_id = %id, outcome = challenge.state.name(), "challenge decided");
                if matches!(challenge.state, State::FraudReported(_)) {
                    self.forget_after_fraud(&challenge.account, &auth.device.id)
                        .await;
                    let mut draft = NoticeDraft::about(
                        &challenge.account,
                        NoticeKind::FraudReported,
                        &auth.device.id,
                    );
                    draft.challenge = Some(challenge.id.clone());
                    self.notify_quietly(draft).await;
                }
                Ok(challenge)
            }
            Err(DeviceRefusal::Auth(e)) => {
                metrics::counter!("relay_responses_refused_total").increment(1);
                Err(self.on_auth_refusal(auth, e).await)
            }
            Err(refusal) => {
                metrics::counter!("relay_responses_refused_total").increment(1);
                if refusal == DeviceRefusal::Respond(RespondError::Late) {
                    // The deadline passed but no timer has fired yet: expire it now.
                    self.expire(id).await;
                }
                Err(refusal.into())
            }
        }
    }

    /// A challenge as a targeted device may see it.
    ///
    /// # Errors
    /// `Auth` from the counter rule, `NotFound` if not targeted, or a store failure.
    pub async fn device_challenge(
        &self,
        auth: &Authenticated,
        id: &ChallengeId,
    ) -> Result<Challenge, Error> {
        let challenge = match self.store.accept_and_get_challenge(&auth.call, id).await? {
            Ok(challenge) => challenge,
            Err(e) => return Err(self.on_auth_refusal(auth, e).await),
        };
        match challenge {
            Some(c) if c.account == auth.device.account && c.is_targeted(&auth.device.id) => Ok(c),
            _ => {
                self.refused(&auth.device, Some(id), "not_targeted").await;
                Err(Error::NotFound("challenge"))
            }
        }
    }

    /// Pending challenges for a device.
    ///
    /// # Errors
    /// `Auth` from the counter rule, or a store failure.
    pub async fn list_pending(&self, auth: &Authenticated) -> Result<Vec<Challenge>, Error> {
        self.accept(auth).await?;
        Ok(self.store.list_pending(&auth.device.id).await?)
    }

    /// Replaces a device's push token, and its fallback's when given.
    ///
    /// # Errors
    /// `Auth` from the counter rule (applied first, as to any signed request), then `MissingChannel` for
    /// a poll-only device or a fallback token without a fallback channel (only the counter moved), or a
    /// store failure.
    pub async fn update_push_token(
        &self,
        auth: &Authenticated,
        token: &str,
        fallback: Option<&str>,
    ) -> Result<Device, Error> {
        let missing = if !auth.device.platform.is_pushed() {
            Some(crate::device::MissingChannel::PollOnly)
        } else if fallback.is_some() && auth.device.fallback.is_none() {
            Some(crate::device::MissingChannel::NoFallback)
        } else {
            None
        };
        if let Some(missing) = missing {
            // A revoked, cloned or replayed request is refused as such, not for its channel.
            self.accept(auth).await?;
            return Err(missing.into());
        }
        match self
            .store
            .update_push_token(&auth.call, token, fallback)
            .await?
        {
            Ok(device) => {
                self.devices.put(&device);
                Ok(device)
            }
            Err(e) => Err(self.on_auth_refusal(auth, e).await),
        }
    }

    /// Replaces a device's key after checking the new key's proof of possession.
    ///
    /// # Errors
    /// `Auth` for a bad proof or from the counter rule, or a store failure.
    pub async fn rotate_key(
        &self,
        auth: &Authenticated,
        key: &PublicKey,
        proof: &[u8],
    ) -> Result<Device, Error> {
        let message = rotate_key_message(&auth.device.id, auth.call.counter);
        if let Err(e) = key.verify(message.as_bytes(), proof) {
            // Authenticated, so the request consumes its counter like any refused one.
            self.accept(auth).await?;
            self.refused(&auth.device, None, "bad_new_key_proof").await;
            return Err(Error::invalid("payload.rotate_key.new_key_proof", e));
        }
        match self.store.rotate_key(&auth.call, key).await? {
            Ok(device) => {
                self.devices.put(&device);
                Ok(device)
            }
            Err(e) => Err(self.on_auth_refusal(auth, e).await),
        }
    }
}

/// The text a new key signs in RotateKey, as documented in device.proto.
pub fn rotate_key_message(device: &DeviceId, counter: u64) -> String {
    format!("approval.v1/rotate-key:{device}:{counter}")
}
