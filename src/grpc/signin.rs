//! The backend API's sign-in factor calls: EvaluateSignIn, VerifyCode, ListKnownSignIns,
//! ForgetKnownSignIn and CreateAuthenticator, parsed and converted here; `backend.rs` routes them.

use super::convert::{self, familiarity_to_pb};
use crate::error::Error;
use crate::factor::CodeCheck;
use crate::known::{self, KeyKind, KnownKey, Recommendation, Seen, Signal};
use crate::pb;
use crate::relay::{Relay, SignInVerdict};

/// Longest ForgetKnownSignIn `value`, bytes.
const VALUE_MAX: usize = 256;
/// Longest CreateAuthenticator `label`, bytes.
const LABEL_MAX: usize = 64;

fn signal_to_pb(s: Signal) -> pb::SignInSignal {
    pb::SignInSignal {
        familiarity: familiarity_to_pb(s.familiarity).into(),
        first_seen_unix_ms: s.seen.map_or(0, |x| x.first_ms),
        last_seen_unix_ms: s.seen.map_or(0, |x| x.last_ms),
    }
}

/// An evaluation on the wire.
pub fn verdict_to_pb(v: &SignInVerdict) -> pb::SignInEvaluation {
    let e = &v.evaluation;
    pb::SignInEvaluation {
        device: Some(signal_to_pb(e.device)),
        place: Some(signal_to_pb(e.place)),
        network: Some(signal_to_pb(e.network)),
        location: Some(signal_to_pb(e.location)),
        recommendation: match v.recommendation {
            Recommendation::Allow => pb::SignInRecommendation::Allow,
            Recommendation::Challenge => pb::SignInRecommendation::Challenge,
            Recommendation::Code => pb::SignInRecommendation::Code,
            Recommendation::NoFactor => pb::SignInRecommendation::NoFactor,
        }
        .into(),
        pushable_devices: u32::try_from(v.pushable).unwrap_or(u32::MAX),
        offline_code_available: v.offline_code,
    }
}

/// EvaluateSignIn.
///
/// # Errors
/// `InvalidArgument` naming the field, or a store failure.
pub async fn evaluate(
    relay: &Relay,
    req: pb::EvaluateSignInRequest,
) -> Result<pb::EvaluateSignInResponse, Error> {
    let account = convert::account("account_id", &req.account_id)?;
    let ctx = convert::login_context(req.login_context)?;
    let verdict = relay.evaluate_sign_in(&account, &ctx).await?;
    Ok(pb::EvaluateSignInResponse {
        evaluation: Some(verdict_to_pb(&verdict)),
    })
}

/// Checks a VerifyCode `code`: exactly 6 ASCII digits.
///
/// # Errors
/// `InvalidArgument` naming `code`.
pub fn parse_code(code: &str) -> Result<&str, Error> {
    if code.len() == crate::totp::DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(Error::invalid("code", "must be exactly 6 ASCII digits"))
    }
}

/// VerifyCode.
///
/// # Errors
/// `InvalidArgument`, `NoOfflineCode`, `Limited`, or a store failure.
pub async fn verify_code(
    relay: &Relay,
    req: pb::VerifyCodeRequest,
) -> Result<pb::VerifyCodeResponse, Error> {
    let account = convert::account("account_id", &req.account_id)?;
    let code = parse_code(&req.code)?;
    let ctx = convert::login_context(req.login_context)?;
    Ok(match relay.verify_code(&account, code, &ctx).await? {
        CodeCheck::Accepted(m) => pb::VerifyCodeResponse {
            result: pb::CodeResult::Accepted.into(),
            authenticator_id: m.id,
            device_id: m.device.map(|d| d.to_string()).unwrap_or_default(),
        },
        CodeCheck::Replayed => pb::VerifyCodeResponse {
            result: pb::CodeResult::Replayed.into(),
            ..Default::default()
        },
        CodeCheck::Wrong | CodeCheck::Limited { .. } => pb::VerifyCodeResponse {
            result: pb::CodeResult::Wrong.into(),
            ..Default::default()
        },
    })
}

fn kind_to_pb(kind: KeyKind) -> pb::KnownSignInKind {
    match kind {
        KeyKind::Device => pb::KnownSignInKind::Device,
        KeyKind::Network => pb::KnownSignInKind::Network,
        KeyKind::Location => pb::KnownSignInKind::Location,
    }
}

fn known_to_pb((key, seen): &(KnownKey, Seen)) -> pb::KnownSignIn {
    pb::KnownSignIn {
        kind: kind_to_pb(key.kind).into(),
        value: key.value.clone(),
        first_seen_unix_ms: seen.first_ms,
        last_seen_unix_ms: seen.last_ms,
    }
}

/// ListKnownSignIns.
///
/// # Errors
/// `InvalidArgument` naming the field, or a store failure.
pub async fn list_known(
    relay: &Relay,
    req: &pb::ListKnownSignInsRequest,
) -> Result<pb::ListKnownSignInsResponse, Error> {
    let account = convert::account("account_id", &req.account_id)?;
    let known = relay.list_known(&account).await?;
    Ok(pb::ListKnownSignInsResponse {
        known: known.iter().map(known_to_pb).collect(),
    })
}

/// Parses what ForgetKnownSignIn names: `None` for all.
///
/// # Errors
/// `InvalidArgument` naming the field.
pub fn parse_forget(req: &pb::ForgetKnownSignInRequest) -> Result<Option<KnownKey>, Error> {
    let kind = pb::KnownSignInKind::try_from(req.kind)
        .map_err(|_| Error::invalid("kind", format!("{} is not a KnownSignInKind", req.kind)))?;
    if req.all {
        if kind != pb::KnownSignInKind::Unspecified || !req.value.is_empty() {
            return Err(Error::invalid(
                "all",
                "must not be combined with kind or value",
            ));
        }
        return Ok(None);
    }
    let kind = match kind {
        pb::KnownSignInKind::Unspecified => {
            return Err(Error::invalid("kind", "must be set (or set all)"));
        }
        pb::KnownSignInKind::Device => KeyKind::Device,
        pb::KnownSignInKind::Network => KeyKind::Network,
        pb::KnownSignInKind::Location => KeyKind::Location,
    };
    let value = convert::required_text("value", &req.value, VALUE_MAX)?;
    // A location is compared normalised: forget the value as listed or as typed.
    let value = if kind == KeyKind::Location {
        known::normalise_location(&value)
    } else {
        value
    };
    Ok(Some(KnownKey { kind, value }))
}

/// ForgetKnownSignIn.
///
/// # Errors
/// `InvalidArgument` naming the field, or a store failure.
pub async fn forget_known(
    relay: &Relay,
    req: &pb::ForgetKnownSignInRequest,
) -> Result<pb::ForgetKnownSignInResponse, Error> {
    let account = convert::account("account_id", &req.account_id)?;
    let key = parse_forget(req)?;
    let forgotten = relay.forget_known(&account, key.as_ref()).await?;
    Ok(pb::ForgetKnownSignInResponse {
        forgotten: u32::try_from(forgotten).unwrap_or(u32::MAX),
    })
}

/// An authenticator id as the relay issues them: `au_` and 16 base32 characters, or a device id.
///
/// # Errors
/// `InvalidArgument` naming `authenticator_id`.
pub fn authenticator_id(id: &str) -> Result<String, Error> {
    let standalone = id
        .strip_prefix(crate::factor::STANDALONE_PREFIX)
        .is_some_and(|rest| {
            rest.len() == 16
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        });
    if standalone {
        return Ok(id.to_owned());
    }
    convert::device_id("authenticator_id", id)
        .map(|d| d.to_string())
        .map_err(|_| Error::invalid("authenticator_id", "is not an authenticator id"))
}

/// DeleteAuthenticator.
///
/// # Errors
/// `InvalidArgument` naming the field, `NotFound`, or a store failure.
pub async fn delete_authenticator(
    relay: &Relay,
    req: &pb::DeleteAuthenticatorRequest,
) -> Result<pb::DeleteAuthenticatorResponse, Error> {
    let account = convert::account("account_id", &req.account_id)?;
    let id = authenticator_id(&req.authenticator_id)?;
    relay.delete_authenticator(&account, &id).await?;
    Ok(pb::DeleteAuthenticatorResponse {})
}

/// CreateAuthenticator.
///
/// # Errors
/// `InvalidArgument` naming the field, `OfflineCodesOff`, `TooManyAuthenticators`, or a store failure.
pub async fn create_authenticator(
    relay: &Relay,
    req: &pb::CreateAuthenticatorRequest,
) -> Result<pb::CreateAuthenticatorResponse, Error> {
    let account = convert::account("account_id", &req.account_id)?;
    let label = convert::text("label", &req.label, LABEL_MAX)?;
    let made = relay.create_authenticator(&account, &label).await?;
    Ok(pb::CreateAuthenticatorResponse {
        authenticator_id: made.id,
        otpauth_uri: made.uri,
        secret_base32: made.secret_base32,
        activate_by_unix_ms: made.activate_by_ms,
    })
}
