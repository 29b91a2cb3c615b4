//! The Redis store's known sign-ins (remember.lua, forget.lua) and offline-code authenticators
//! (authenticator.lua, code.lua); the in-memory store's `factors.rs` keeps the same rules.

use super::*;
use crate::factor::{Authenticator, CodeCheck, CodeMatch, MAX_STANDALONE};
use crate::known::{self, KnownKey, Remembered, Seen};
use crate::store::NewAuthenticator;

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The known sign-ins in a `known:` hash. A value that does not parse is treated as never seen (and
/// dropped by the next remember).
fn known_of(hash: &codec::Hash) -> Remembered {
    hash.iter()
        .filter(|(f, _)| KnownKey::from_field(f).is_some())
        .filter_map(|(f, v)| Some((f.clone(), Seen::decode(std::str::from_utf8(v).ok()?)?)))
        .collect()
}

/// The authenticators in an `otp:` hash (its `id:…` fields are their bookkeeping).
fn authenticators_of(hash: &codec::Hash) -> Result<Vec<Authenticator>, StoreError> {
    hash.iter()
        .filter(|(f, _)| !f.contains(':'))
        .map(|(id, record)| codec::authenticator(id, record, hash))
        .collect()
}

impl RedisStore {
    pub(super) async fn read_known(&self, account: &AccountId) -> Result<Remembered, StoreError> {
        let hash: codec::Hash = self
            .conn()
            .hgetall(keys::known(account))
            .await
            .map_err(unavailable)?;
        Ok(known_of(&hash))
    }

    /// Devices, known sign-ins, authenticators and the clock in one script call (reads.lua `sign_in`).
    pub(super) async fn read_sign_in_facts(
        &self,
        account: &AccountId,
    ) -> Result<SignInFacts, StoreError> {
        let reply: Value = self
            .run(
                self.script(&self.scripts.reads, keys::prefix(account.tag()))
                    .key(keys::devices(account))
                    .key(keys::known(account))
                    .key(keys::authenticators(account))
                    .arg("sign_in"),
            )
            .await?;
        let parts = codec::array(&reply)?;
        Ok(SignInFacts {
            devices: codec::devices(codec::at(parts, 0)?)?,
            known: known_of(&codec::hash(codec::at(parts, 1)?)?),
            authenticators: authenticators_of(&codec::hash(codec::at(parts, 2)?)?)?,
            now_ms: codec::int(codec::at(parts, 3)?)?,
        })
    }

    pub(super) async fn remember(
        &self,
        account: &AccountId,
        keys_to_mark: &[KnownKey],
        window: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut inv = self.script(&self.scripts.remember, keys::prefix(account.tag()));
        inv.key(keys::known(account))
            .arg(ms(window).max(1))
            .arg(known::MAX_DEVICES)
            .arg(known::MAX_PLACES);
        for key in keys_to_mark {
            inv.arg(key.field());
        }
        self.run::<i64>(&inv).await.map(drop)
    }

    pub(super) async fn forget(
        &self,
        account: &AccountId,
        field: Option<&str>,
        actor: &Actor,
        why: &str,
    ) -> Result<usize, StoreError> {
        let n: i64 = self
            .run(
                self.script(&self.scripts.forget, keys::prefix(account.tag()))
                    .key(keys::known(account))
                    .arg(field.unwrap_or(""))
                    .arg(account.as_str())
                    .arg(actor.to_string())
                    .arg(why),
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub(super) async fn save_authenticator_step(
        &self,
        account: &AccountId,
        new: &NewAuthenticator,
    ) -> Result<bool, StoreError> {
        let device = new
            .device
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let actor = new
            .device
            .clone()
            .map_or(Actor::Backend, Actor::Device)
            .to_string();
        let saved: i64 = self
            .run(
                self.script(&self.scripts.authenticator, keys::prefix(account.tag()))
                    .key(keys::authenticators(account))
                    .arg(&new.id)
                    .arg(&device)
                    .arg(&new.sealed)
                    .arg(MAX_STANDALONE)
                    .arg(new.pending.map(|p| ms(p).to_string()).unwrap_or_default())
                    .arg(account.as_str())
                    .arg(actor),
            )
            .await?;
        Ok(saved == 1)
    }

    pub(super) async fn read_authenticators(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Authenticator>, StoreError> {
        let hash: codec::Hash = self
            .conn()
            .hgetall(keys::authenticators(account))
            .await
            .map_err(unavailable)?;
        authenticators_of(&hash)
    }

    pub(super) async fn delete_authenticator(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .conn()
            .hdel(
                keys::authenticators(account),
                &[id.to_owned(), format!("{id}:p"), format!("{id}:u")],
            )
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    pub(super) async fn code_step(
        &self,
        account: &AccountId,
        matched: Option<&CodeMatch>,
    ) -> Result<CodeCheck, StoreError> {
        let limit = self.limits.code_failures;
        let reply: Value = self
            .run(
                self.script(&self.scripts.code, keys::prefix(account.tag()))
                    .key(keys::authenticators(account))
                    .key(keys::code_failures(account))
                    .arg(limit.per_minute)
                    .arg(limit.burst)
                    .arg(account.as_str())
                    .arg(matched.map_or("", |m| m.id.as_str()))
                    .arg(matched.map_or(0, |m| m.step))
                    .arg(
                        matched
                            .and_then(|m| m.device.as_ref())
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    )
                    .arg(crate::factor::STREAK_ALERT),
            )
            .await?;
        let items = array(&reply)?;
        let check = match text(at(items, 0)?)?.as_str() {
            "accepted" => CodeCheck::Accepted(
                matched
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt("code accepted without a match".into()))?,
            ),
            "replayed" => CodeCheck::Replayed,
            "wrong" => CodeCheck::Wrong,
            "limited" => CodeCheck::Limited {
                wait: std::time::Duration::from_millis(int(at(items, 1)?)?.unsigned_abs()),
                first_trip: int(at(items, 2)?)? == 1,
            },
            other => return Err(StoreError::Corrupt(format!("code step answered {other}"))),
        };
        let alert = match check {
            CodeCheck::Limited {
                first_trip: true, ..
            } => Some(LimitRefusal::CodeFailures.name()),
            CodeCheck::Wrong | CodeCheck::Replayed if int(at(items, 1)?)? == 1 => {
                Some(crate::factor::STREAK_DETAIL)
            }
            _ => None,
        };
        if let Some(detail) = alert {
            streams::append_security(
                &mut self.conn(),
                account,
                SecurityKind::LimitTripped,
                None,
                None,
                detail,
            )
            .await;
        }
        Ok(check)
    }
}
