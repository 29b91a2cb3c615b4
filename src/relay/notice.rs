//! Notices to an account's devices (a fraud report, a suspected clone, a new device, a sign-in the
//! backend let through) and what a device may do with one: read it, list recent ones, and revoke with one
//! signed tap. Sending a notice never fails the call that caused it; a store or push failure is logged.

use super::{Authenticated, Relay};
use crate::audit::{Actor, AuditKind, AuditRecord, SecurityKind};
use crate::auth::AuthError;
use crate::challenge::{AccountId, LoginContext, NoticeId};
use crate::device::Device;
use crate::error::Error;
use crate::notice::{Notice, NoticeDraft, NoticeError, NoticeKind, Revocation};

/// What a one-tap revoke did.
#[derive(Debug, Clone)]
pub enum Revoked {
    /// This device is now revoked.
    Device(Box<Device>),
    /// The backend was told to end this sign-in.
    SignIn(String),
}

impl Relay {
    /// Stores a notice for every active device of the account except its subject (and the device
    /// signing in, for a sign-in), and pushes it to those with a push token. `None` when no device is
    /// left to tell.
    ///
    /// # Errors
    /// A store failure.
    pub async fn notify(&self, draft: NoticeDraft) -> Result<Option<Notice>, Error> {
        let id = NoticeId::generate(&draft.account);
        let Some((notice, devices)) = self.store.create_notice(id, draft).await? else {
            return Ok(None);
        };
        metrics::counter!("relay_notices_total", "kind" => notice.kind.name()).increment(1);
        tracing::info!(notice_id = %notice.id, kind = notice.kind.name(), devices = devices.len(), "notice sent");
        self.dispatcher.push_notice(&notice, devices);
        Ok(Some(notice))
    }

    /// [`Relay::notify`] for a side effect of another call: a failure is logged, not returned.
    pub(super) async fn notify_quietly(&self, draft: NoticeDraft) {
        let kind = draft.kind.name();
        if let Err(error) = self.notify(draft).await {
            tracing::warn!(%error, kind, "could not send a notice");
        }
    }

    /// A refusal by the store step's device checks, as the caller answers it: a key rotated away since
    /// the signature was verified (`BadSignature`) is a failed authentication, counted and recorded as
    /// one; when the counter rule or a token flip has just marked the device a suspected clone, the
    /// account's other devices are told.
    pub(super) async fn on_auth_refusal(&self, auth: &Authenticated, error: AuthError) -> Error {
        let device = &auth.device;
        // Whatever the store refused (revoked, cloned, rotated key), this replica's copy is out of date.
        self.devices.forget(&device.id);
        match error {
            AuthError::BadSignature => {
                return self.auth_failed(Some(device), auth.source, error).await;
            }
            AuthError::CounterNotIncreasing | AuthError::TokenFlip => {
                let draft =
                    NoticeDraft::about(&device.account, NoticeKind::CloneSuspected, &device.id);
                self.notify_quietly(draft).await;
            }
            _ => {}
        }
        error.into()
    }

    /// A notice as a device it was sent to may see it, with the device it is about.
    ///
    /// # Errors
    /// `Auth` from the counter rule, `Notice(NotFound)` if it was not sent to this device, or a store
    /// failure.
    pub async fn device_notice(
        &self,
        auth: &Authenticated,
        id: &NoticeId,
    ) -> Result<(Notice, Option<Device>), Error> {
        self.accept(auth).await?;
        let notice = self.visible_notice(auth, id).await?;
        let subject = match &notice.subject {
            Some(subject) => self.store.get_device(subject).await?,
            None => None,
        };
        Ok((notice, subject))
    }

    /// The notices sent to a device that have not expired, newest first, with the devices they are about.
    ///
    /// # Errors
    /// `Auth` from the counter rule, or a store failure.
    pub async fn device_notices(
        &self,
        auth: &Authenticated,
    ) -> Result<Vec<(Notice, Option<Device>)>, Error> {
        self.accept(auth).await?;
        let mut notices = self.store.list_notices(&auth.device.account).await?;
        notices.retain(|n| n.visible_to(&auth.device.account, &auth.device.id));
        let mut out = Vec::with_capacity(notices.len());
        for notice in notices {
            let subject = match &notice.subject {
                Some(subject) => self.store.get_device(subject).await?,
                None => None,
            };
            out.push((notice, subject));
        }
        Ok(out)
    }

    /// Tells the account's devices of a sign-in the backend let through.
    ///
    /// # Errors
    /// `NoDevices` when no active device is left to tell, or a store failure.
    pub async fn send_sign_in_notice(
        &self,
        account: AccountId,
        context: LoginContext,
        sign_in_id: String,
    ) -> Result<Notice, Error> {
        let draft = NoticeDraft {
            account,
            kind: NoticeKind::SignIn,
            subject: None,
            challenge: None,
            context,
            sign_in_id,
        };
        self.notify(draft).await?.ok_or(Error::NoDevices)
    }

    /// The one-tap revoke on a notice: revokes the new or cloned device it is about, or tells the backend
    /// (security event SIGN_IN_REVOKED) to end the sign-in it tells of.
    ///
    /// # Errors
    /// `Auth` from the counter rule, `Notice` when there is nothing this device may revoke, or a store
    /// failure.
    pub async fn revoke_from_notice(
        &self,
        auth: &Authenticated,
        id: &NoticeId,
    ) -> Result<Revoked, Error> {
        self.accept(auth).await?;
        let notice = self.visible_notice(auth, id).await?;
        let now = self.store.now_ms().await?;
        let actor = Actor::Device(auth.device.id.clone());
        match notice.revocation(&auth.device.account, &auth.device.id, now)? {
            Revocation::Device(subject) => {
                let device = self
                    .store
                    .revoke_device(&notice.account, &subject, &actor)
                    .await?
                    .ok_or(Error::NotFound("device"))?;
                self.drop_device_code(&device).await;
                tracing::info!(notice_id = %id, device_id = %subject, "device revoked from a notice");
                Ok(Revoked::Device(Box::new(device)))
            }
            Revocation::SignIn(sign_in_id) => {
                let record =
                    AuditRecord::new(&notice.account, AuditKind::SignInRevoked, actor.clone())
                        .device(&auth.device.id)
                        .detail(sign_in_id.clone());
                self.store
                    .report(record, SecurityKind::SignInRevoked)
                    .await?;
                // "This was not me": whatever that sign-in made known must not pass as known again.
                self.forget_sign_ins_quietly(&notice.account, &actor, "sign_in_revoked")
                    .await;
                tracing::info!(notice_id = %id, "sign-in revoked from a notice");
                Ok(Revoked::SignIn(sign_in_id))
            }
        }
    }

    /// The counter rule for a call that changes nothing else.
    pub(super) async fn accept(&self, auth: &Authenticated) -> Result<(), Error> {
        match self.store.accept_call(&auth.call).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(self.on_auth_refusal(auth, e).await),
        }
    }

    async fn visible_notice(&self, auth: &Authenticated, id: &NoticeId) -> Result<Notice, Error> {
        match self.store.get_notice(id).await? {
            Some(n) if n.visible_to(&auth.device.account, &auth.device.id) => Ok(n),
            _ => {
                self.refused(&auth.device, None, "notice_not_targeted")
                    .await;
                Err(NoticeError::NotFound.into())
            }
        }
    }
}
