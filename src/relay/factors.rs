//! The use cases of known sign-ins and offline codes: evaluating a sign-in, remembering an approved one,
//! provisioning and checking codes. The rules live in `known`, `factor` and `totp`; secrets are sealed by
//! `sealing` before they reach the store and opened only to compute a code.

use super::Relay;
use crate::audit::{Actor, AuditKind, AuditRecord};
use crate::challenge::{AccountId, DeviceId, LoginContext};
use crate::device::{Device, DeviceState};
use crate::error::Error;
use crate::factor::{self, Authenticator, CodeCheck, CodeMatch};
use crate::known::{self, Evaluation, KnownKey, Recommendation, Seen};
use crate::store::NewAuthenticator;

/// A sign-in evaluated: the comparison, the recommendation, and the facts behind it.
#[derive(Debug, Clone, Copy)]
pub struct SignInVerdict {
    /// Known or new, signal by signal.
    pub evaluation: Evaluation,
    /// What to ask for.
    pub recommendation: Recommendation,
    /// Devices that could be pushed for it.
    pub pushable: usize,
    /// The account has a usable offline code.
    pub offline_code: bool,
}

/// A standalone authenticator just made: its secret, given once.
#[derive(Clone)]
pub struct NewStandalone {
    /// Its id.
    pub id: String,
    /// For an authenticator app's QR code.
    pub uri: String,
    /// The secret, base32.
    pub secret_base32: String,
    /// Deadline for its first code, store clock.
    pub activate_by_ms: i64,
}

impl std::fmt::Debug for NewStandalone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and the URI that carries it are never printed.
        f.debug_struct("NewStandalone")
            .field("id", &self.id)
            .field("activate_by_ms", &self.activate_by_ms)
            .finish_non_exhaustive()
    }
}

fn pushable(devices: &[Device], ctx: &LoginContext) -> usize {
    devices
        .iter()
        .filter(|d| d.state == DeviceState::Active && d.push_token.is_some())
        .filter(|d| ctx.signing_in_device_id.as_ref() != Some(&d.id))
        .count()
}

impl Relay {
    /// Compares a sign-in with the account's known sign-ins and recommends a factor.
    ///
    /// # Errors
    /// A store failure.
    pub async fn evaluate_sign_in(
        &self,
        account: &AccountId,
        ctx: &LoginContext,
    ) -> Result<SignInVerdict, Error> {
        let crate::store::SignInFacts {
            known: set,
            devices,
            authenticators,
            now_ms: now,
        } = self.store.sign_in_facts(account).await?;
        let evaluation = Evaluation::of(ctx, &set, now, self.policy.remember_window);
        let pushable = pushable(&devices, ctx);
        let offline_code = !usable(&authenticators, &devices, now).is_empty();
        Ok(SignInVerdict {
            evaluation,
            recommendation: evaluation.recommend(pushable > 0, offline_code),
            pushable,
            offline_code,
        })
    }

    /// Makes a sign-in's device and place known (after an approval or an accepted code). Best effort:
    /// the decision stands if this fails, it is logged.
    pub(super) async fn remember_quietly(&self, account: &AccountId, ctx: &LoginContext) {
        let keys = known::keys_of(ctx);
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self
            .store
            .remember_sign_in(account, &keys, self.policy.remember_window)
            .await
        {
            tracing::warn!(error = %e, "could not remember an approved sign-in");
        }
    }

    /// Forgets every known sign-in after a fraud report, logged if it fails.
    pub(super) async fn forget_after_fraud(&self, account: &AccountId, by: &DeviceId) {
        let actor = Actor::Device(by.clone());
        self.forget_sign_ins_quietly(account, &actor, "fraud_reported")
            .await;
    }

    /// Forgets every known sign-in of the account on `actor`'s word, logged if it fails.
    pub(super) async fn forget_sign_ins_quietly(
        &self,
        account: &AccountId,
        actor: &Actor,
        why: &str,
    ) {
        if let Err(e) = self.store.forget_sign_ins(account, None, actor, why).await {
            tracing::warn!(error = %e, why, "could not forget known sign-ins");
        }
    }

    /// The known sign-ins within the window, most recently seen first.
    ///
    /// # Errors
    /// A store failure.
    pub async fn list_known(&self, account: &AccountId) -> Result<Vec<(KnownKey, Seen)>, Error> {
        let (set, now) = tokio::try_join!(self.store.known_sign_ins(account), self.store.now_ms())?;
        let since = now.saturating_sub(
            i64::try_from(self.policy.remember_window.as_millis()).unwrap_or(i64::MAX),
        );
        let mut known: Vec<(KnownKey, Seen)> = set
            .iter()
            .filter(|(_, s)| s.last_ms >= since)
            .filter_map(|(f, s)| Some((KnownKey::from_field(f)?, *s)))
            .collect();
        known.sort_by(|a, b| b.1.last_ms.cmp(&a.1.last_ms).then(a.0.cmp(&b.0)));
        Ok(known)
    }

    /// Forgets one known sign-in, or all of them; how many.
    ///
    /// # Errors
    /// A store failure.
    pub async fn forget_known(
        &self,
        account: &AccountId,
        key: Option<&KnownKey>,
    ) -> Result<usize, Error> {
        let field = key.map(KnownKey::field);
        // The value (a cookie id, a network) stays out of the audit trail: the kind is enough.
        let why = match key.map(|k| k.kind) {
            Some(crate::known::KeyKind::Device) => "backend:device",
            Some(crate::known::KeyKind::Network) => "backend:network",
            Some(crate::known::KeyKind::Location) => "backend:location",
            None => "backend",
        };
        Ok(self
            .store
            .forget_sign_ins(account, field.as_deref(), &Actor::Backend, why)
            .await?)
    }

    /// Whether this relay can keep offline-code secrets.
    pub fn offline_codes_enabled(&self) -> bool {
        self.sealer.is_some()
    }

    /// A fresh offline-code secret for a device about to enroll, and its sealed form for the store.
    ///
    /// # Errors
    /// `OfflineCodesOff` without a sealing key.
    pub(super) fn device_code(&self, device: &DeviceId) -> Result<(Vec<u8>, String), Error> {
        let sealer = self.sealer.as_ref().ok_or(Error::OfflineCodesOff)?;
        let secret = crate::totp::generate_secret();
        let sealed = sealer.seal(&secret, &factor::device_seal_context(device));
        Ok((secret, sealed))
    }

    /// Makes a standalone authenticator, pending until its first correct code.
    ///
    /// # Errors
    /// `OfflineCodesOff` without a sealing key, `TooManyAuthenticators`, or a store failure.
    pub async fn create_authenticator(
        &self,
        account: &AccountId,
        label: &str,
    ) -> Result<NewStandalone, Error> {
        let sealer = self.sealer.as_ref().ok_or(Error::OfflineCodesOff)?;
        let secret = crate::totp::generate_secret();
        let id = factor::standalone_id();
        let new = NewAuthenticator {
            sealed: sealer.seal(&secret, &factor::seal_context(account, &id)),
            id: id.clone(),
            device: None,
            pending: Some(factor::ACTIVATION_TTL),
        };
        let now = self.store.now_ms().await?;
        if !self.store.save_authenticator(account, &new).await? {
            return Err(Error::TooManyAuthenticators);
        }
        let label = if label.is_empty() {
            account.as_str()
        } else {
            label
        };
        metrics::counter!("relay_authenticators_created_total").increment(1);
        Ok(NewStandalone {
            uri: crate::totp::otpauth_uri(&self.policy.totp_issuer, label, &secret),
            secret_base32: crate::totp::base32(&secret),
            activate_by_ms: now
                + i64::try_from(factor::ACTIVATION_TTL.as_millis()).unwrap_or(i64::MAX),
            id,
        })
    }

    /// Checks an offline code against the account's usable authenticators; an accepted one makes the
    /// sign-in known.
    ///
    /// # Errors
    /// `NoOfflineCode` when the account has none usable, `Limited` past the budget of wrong codes, or
    /// a store failure. Never `CodeCheck::Limited`.
    pub async fn verify_code(
        &self,
        account: &AccountId,
        code: &str,
        ctx: &LoginContext,
    ) -> Result<CodeCheck, Error> {
        let (authenticators, devices, now) = tokio::try_join!(
            self.store.authenticators(account),
            self.store.list_devices(account),
            self.store.now_ms(),
        )?;
        let candidates = usable(&authenticators, &devices, now);
        if candidates.is_empty() {
            return Err(Error::NoOfflineCode);
        }
        let matched = self.find_match(account, &candidates, code, now);
        let check = self.store.check_code(account, matched.as_ref()).await?;
        metrics::counter!("relay_codes_total", "outcome" => check.name()).increment(1);
        tracing::info!(outcome = check.name(), "offline code checked");
        match check {
            CodeCheck::Accepted(_) => {
                self.remember_quietly(account, ctx).await;
                Ok(check)
            }
            CodeCheck::Wrong | CodeCheck::Replayed => Ok(check),
            CodeCheck::Limited { wait, .. } => {
                metrics::counter!("relay_limit_refusals_total", "limit" => "code_failures")
                    .increment(1);
                Err(Error::Limited(
                    crate::limits::LimitRefusal::CodeFailures,
                    wait,
                ))
            }
        }
    }

    /// The authenticator and step `code` matches now, if any. A secret that does not open (a key that
    /// is no longer configured) is skipped and logged, without the secret.
    fn find_match(
        &self,
        account: &AccountId,
        candidates: &[&Authenticator],
        code: &str,
        now_ms: i64,
    ) -> Option<CodeMatch> {
        let sealer = self.sealer.as_ref()?;
        candidates.iter().find_map(|a| {
            let secret = match sealer.open(&a.sealed, &factor::context_of(account, a)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(authenticator = %a.id, error = %e, "offline-code secret does not open");
                    return None;
                }
            };
            // Any step in the window: whether it was used already is the store step's to decide.
            let step = crate::totp::matching_step(&secret, code, now_ms / 1000, i64::MIN)?;
            Some(CodeMatch {
                id: a.id.clone(),
                device: a.device.clone(),
                step,
            })
        })
    }

    /// Drops a revoked device's offline code, logged if it fails (its codes are refused anyway: only
    /// active devices' count).
    pub(super) async fn drop_device_code(&self, device: &Device) {
        let actor = Actor::Relay;
        if let Err(e) = self
            .remove_code(&device.account, device.id.as_str(), actor)
            .await
        {
            tracing::warn!(error = %e, "could not delete a revoked device's offline code");
        }
    }

    /// Deletes an authenticator on the backend's word.
    ///
    /// # Errors
    /// `NotFound` or a store failure.
    pub async fn delete_authenticator(&self, account: &AccountId, id: &str) -> Result<(), Error> {
        if self.remove_code(account, id, Actor::Backend).await? {
            Ok(())
        } else {
            Err(Error::NotFound("authenticator"))
        }
    }

    async fn remove_code(
        &self,
        account: &AccountId,
        id: &str,
        actor: Actor,
    ) -> Result<bool, Error> {
        if !self.store.remove_authenticator(account, id).await? {
            return Ok(false);
        }
        let record = AuditRecord::new(account, AuditKind::AuthenticatorDeleted, actor).detail(id);
        self.store.audit(record).await?;
        Ok(true)
    }
}

/// The authenticators whose codes count now: standalone ones not past activation, and those of active
/// devices (a revoked or clone-suspected device's code is refused). The signing-in device's own code
/// counts: that is the single-device owner's factor (the code proves possession of the phone, as an
/// authenticator app on the same phone does), while a push to it would let it approve itself. The store
/// step checks the device's state and the activation deadline again, atomically.
fn usable<'a>(
    authenticators: &'a [Authenticator],
    devices: &[Device],
    now_ms: i64,
) -> Vec<&'a Authenticator> {
    authenticators
        .iter()
        .filter(|a| a.usable(now_ms))
        .filter(|a| match &a.device {
            None => true,
            Some(id) => devices
                .iter()
                .any(|d| &d.id == id && d.state == DeviceState::Active),
        })
        .collect()
}

impl Relay {
    /// The account's devices that hold an offline code.
    ///
    /// # Errors
    /// A store failure.
    pub async fn devices_with_code(&self, account: &AccountId) -> Result<Vec<DeviceId>, Error> {
        Ok(self
            .store
            .authenticators(account)
            .await?
            .into_iter()
            .filter_map(|a| a.device)
            .collect())
    }
}
