//! The one place where the relay's errors become gRPC statuses. The cause is logged here; the client gets
//! a short lower-case message (naming the field for INVALID_ARGUMENT).

use crate::attest::Refusal;
use crate::auth::AuthError;
use crate::challenge::RespondError;
use crate::error::Error;
use crate::notice::NoticeError;
use crate::store::{DeviceRefusal, EnrollRefusal, StoreError};
use tonic::{Code, Status};

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = code(&error);
        match code {
            Code::Internal | Code::Unavailable => tracing::error!(%error, "request failed"),
            _ => tracing::debug!(%error, ?code, "request refused"),
        }
        let message = match &error {
            Error::Auth(AuthError::MalformedSignature) => "signature: is malformed".to_owned(),
            Error::Auth(AuthError::MalformedKey) => "public_key: is malformed".to_owned(),
            Error::Store(StoreError::Corrupt(_)) => "internal error".to_owned(),
            // The cause (a node's address, a Cluster redirect mid-failover) is logged above; the client
            // only needs to know to retry.
            Error::Store(StoreError::Unavailable(_)) => {
                "store unavailable; retry (with the same idempotency key for a create)".to_owned()
            }
            // The path inside the request, as for every INVALID_ARGUMENT.
            Error::Attestation(Refusal::Malformed { field, why }) => {
                format!("payload.attestation.{field}: {why}")
            }
            other => other.to_string(),
        };
        let mut status = match &error {
            Error::NoDevices | Error::NoDevicesCodeAvailable => {
                let (reason, factor) = if matches!(error, Error::NoDevicesCodeAvailable) {
                    ("OFFLINE_CODE_AVAILABLE", "offline_code")
                } else {
                    ("NO_FACTOR", "none")
                };
                let details = tonic_types::ErrorDetails::with_error_info(
                    reason,
                    "approval-relay",
                    [("factor".to_owned(), factor.to_owned())],
                );
                <Status as tonic_types::StatusExt>::with_error_details(code, message, details)
            }
            Error::Attestation(refusal) => with_reason(code, message, refusal.reason()),
            Error::NoDeviceMeetsAssurance(_) => {
                with_reason(code, message, "NO_DEVICE_MEETS_ASSURANCE")
            }
            Error::MissingChannel(missing) => with_reason(code, message, missing.reason()),
            _ => Status::new(code, message),
        };
        if let Error::Limited(_, after) = &error
            && let Ok(v) = retry_after_secs(*after).to_string().parse()
        {
            status.metadata_mut().insert("retry-after", v);
        }
        status
    }
}

pub use crate::limits::retry_after_secs;

/// A status with a `google.rpc.ErrorInfo` naming `reason` (domain "approval-relay").
fn with_reason(code: Code, message: String, reason: &str) -> Status {
    let details = tonic_types::ErrorDetails::with_error_info(
        reason,
        "approval-relay",
        std::collections::HashMap::<String, String>::new(),
    );
    <Status as tonic_types::StatusExt>::with_error_details(code, message, details)
}

/// The status code for an error.
pub fn code(error: &Error) -> Code {
    match error {
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::NoDevices
        | Error::NoDevicesCodeAvailable
        | Error::NoOfflineCode
        | Error::OfflineCodesOff
        | Error::TooManyAuthenticators
        | Error::NoDeviceMeetsAssurance(_)
        | Error::MissingChannel(_)
        | Error::Attestation(Refusal::NotConfigured) => Code::FailedPrecondition,
        Error::Attestation(Refusal::Malformed { .. }) => Code::InvalidArgument,
        Error::Attestation(_) => Code::PermissionDenied,
        Error::Auth(e) | Error::Device(DeviceRefusal::Auth(e)) => auth_code(e),
        Error::Device(
            DeviceRefusal::ChallengeNotFound | DeviceRefusal::Respond(RespondError::NotTargeted),
        ) => Code::NotFound,
        Error::Device(DeviceRefusal::Respond(RespondError::Ended(_) | RespondError::Late)) => {
            Code::FailedPrecondition
        }
        Error::Device(DeviceRefusal::Respond(
            RespondError::MissingNumber
            | RespondError::WrongNumber { .. }
            | RespondError::UnexpectedNumber,
        )) => Code::InvalidArgument,
        Error::Enroll(EnrollRefusal::BadTicket) => Code::PermissionDenied,
        Error::Enroll(EnrollRefusal::TooManyDevices) => Code::FailedPrecondition,
        Error::Store(StoreError::InvalidPosition) => Code::InvalidArgument,
        Error::Store(StoreError::Unavailable(_)) => Code::Unavailable,
        Error::Store(StoreError::Corrupt(_)) => Code::Internal,
        Error::Lagged => Code::Aborted,
        Error::Notice(NoticeError::NotFound) => Code::NotFound,
        Error::Notice(NoticeError::NothingToRevoke | NoticeError::SelfRevoke) => {
            Code::FailedPrecondition
        }
        Error::Limited(..) => Code::ResourceExhausted,
    }
}

fn auth_code(e: &AuthError) -> Code {
    match e {
        AuthError::MalformedKey | AuthError::MalformedSignature => Code::InvalidArgument,
        AuthError::BadSignature
        | AuthError::UnknownDevice
        | AuthError::DeviceMismatch
        | AuthError::StaleTimestamp => Code::Unauthenticated,
        AuthError::Revoked
        | AuthError::SuspectedClone
        | AuthError::CounterNotIncreasing
        | AuthError::TokenFlip => Code::PermissionDenied,
    }
}
