//! The one place engine errors become gRPC statuses. The cause goes to the
//! log; the caller gets a sentence to act on and, where it helps, details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{engine::Error, store::StoreError};

pub fn to_status(error: Error) -> Status {
    match error {
        Error::NotFound(m) => Status::not_found(m),
        Error::Invalid(violations) => {
            let message = violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            let details: Vec<FieldViolation> =
                violations.into_iter().map(|v| FieldViolation::new(v.field, v.description)).collect();
            Status::with_error_details(Code::InvalidArgument, message, ErrorDetails::with_bad_request(details))
        }
        Error::Refused(r) => Status::with_error_details(
            Code::FailedPrecondition,
            r.message.clone(),
            ErrorDetails::with_precondition_failure_violation(r.reason, "execution", r.message),
        ),
        Error::AlreadyExists(m) => Status::already_exists(m),
        Error::Denied(m) => Status::permission_denied(format!("permission denied: {m}")),
        Error::Conflict(m) => Status::aborted(m),
        Error::Store(StoreError::Unavailable(u)) => {
            tracing::warn!(error = %u.message, "storage unavailable");
            Status::unavailable(format!("{}; nothing was changed, retry", u.message))
        }
        Error::Store(StoreError::Duplicate(m)) => {
            tracing::warn!(error = %m, "unexpected duplicate key");
            Status::aborted("a concurrent change won; read again and retry")
        }
        Error::Store(e @ (StoreError::Rejected(_) | StoreError::Corrupt(_))) => {
            // The database refused the statement and would again: a bug, or a
            // limit the service failed to enforce. Never worth a retry.
            tracing::error!(error = %e, "the database refused a statement");
            Status::internal(
                "the server could not store or read this request (the database refused it); it was not applied and retrying will not help",
            )
        }
    }
}

/// A request field that cannot even be converted.
pub fn invalid(field: &str, description: impl Into<String>) -> Status {
    to_status(Error::invalid(field, description))
}
