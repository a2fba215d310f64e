//! The one place engine errors become gRPC statuses. The cause goes to the
//! log; the caller gets a sentence to act on and, where it helps, details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::engine::Error;

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
        Error::Store(e) => {
            tracing::error!(error = %e, "storage failure");
            Status::unavailable("the database is unavailable or failed; retry later")
        }
    }
}

/// A request field that cannot even be converted.
pub fn invalid(field: &str, description: impl Into<String>) -> Status {
    to_status(Error::invalid(field, description))
}
