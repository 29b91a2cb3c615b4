//! The relay's error: every refusal and failure a use case can end in. `grpc::status` maps it to a gRPC
//! status in exactly one place.

use crate::auth::AuthError;
use crate::store::{DeviceRefusal, EnrollRefusal, StoreError};

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is missing, malformed or out of range; nothing changed.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field's name as in the proto (dotted for nested fields).
        field: std::borrow::Cow<'static, str>,
        /// What is wrong, in lower case.
        reason: String,
    },
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The account has no device to push to.
    #[error("account has no active device to push to")]
    NoDevices,
    /// The account has no device to push to, but an offline code.
    #[error("account has no active device to push to; an offline code is available (VerifyCode)")]
    NoDevicesCodeAvailable,
    /// VerifyCode for an account without a usable offline code.
    #[error("account has no usable offline code")]
    NoOfflineCode,
    /// Offline codes need a sealing key this relay was not given.
    #[error("offline codes are not enabled on this relay (totp_key_file)")]
    OfflineCodesOff,
    /// The account has as many standalone authenticators as allowed.
    #[error(
        "account has the maximum number of standalone authenticators ({})",
        crate::factor::MAX_STANDALONE
    )]
    TooManyAuthenticators,
    /// The request is not from a known device with a valid signature.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A device request refused in a store step.
    #[error(transparent)]
    Device(#[from] DeviceRefusal),
    /// An enrollment refused.
    #[error(transparent)]
    Enroll(#[from] EnrollRefusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A push-bombing limit refused a new challenge.
    #[error("limit: {} (retry after {} s)", .0.name(), crate::limits::retry_after_secs(*.1))]
    Limited(crate::limits::LimitRefusal, std::time::Duration),
    /// A notice cannot be shown or acted on.
    #[error(transparent)]
    Notice(#[from] crate::notice::NoticeError),
    /// A key attestation was refused at enrollment.
    #[error(transparent)]
    Attestation(#[from] crate::attest::Refusal),
    /// CreateChallenge's `min_assurance` is met by none of the account's active devices.
    #[error("no active device of the account meets min_assurance {}", .0.name())]
    NoDeviceMeetsAssurance(crate::attest::Assurance),
    /// A push-token update for a channel the device does not have.
    #[error(transparent)]
    MissingChannel(#[from] crate::device::MissingChannel),
    /// A watcher could not keep up and was dropped.
    #[error("watch fell behind; watch again")]
    Lagged,
}

impl Error {
    /// An [`Error::InvalidArgument`] for `field`.
    pub fn invalid(
        field: impl Into<std::borrow::Cow<'static, str>>,
        reason: impl std::fmt::Display,
    ) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// Names a nested request's field from the outer message (`create.` + `ttl_seconds`).
    #[must_use]
    pub fn within(self, outer: &str) -> Self {
        match self {
            Self::InvalidArgument { field, reason } => Self::InvalidArgument {
                field: format!("{outer}{field}").into(),
                reason,
            },
            other => other,
        }
    }
}
