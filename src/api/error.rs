//! The one place engine errors become gRPC statuses. The cause goes to the
//! log; the caller gets a sentence to act on and, where it helps, details.
//!
//! A status travels in HTTP/2 headers, which a client caps (16 KiB by
//! default) and refuses whole beyond that; so every message and detail here
//! is bounded, whatever the caller sent or how many problems it had.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{
    domain::{Violation, limits::truncate_marked},
    engine::Error,
    store::StoreError,
};

/// At most this many field violations are reported in one refusal.
const MAX_REPORTED: usize = 10;
/// A message is cut to this many bytes.
const MAX_MESSAGE: usize = 2048;
/// A field path or violation description is cut to this many bytes.
const MAX_PART: usize = 256;

pub fn to_status(error: Error) -> Status {
    match error {
        Error::NotFound(m) | Error::Hidden { not_found: m, .. } => Status::not_found(cut(&m)),
        Error::Invalid(violations) => invalid_status(violations),
        Error::Refused(r) => {
            let message = cut(&r.message);
            Status::with_error_details(
                Code::FailedPrecondition,
                message.clone(),
                ErrorDetails::with_precondition_failure_violation(r.reason, "execution", message),
            )
        }
        Error::AlreadyExists(m) => Status::already_exists(cut(&m)),
        Error::Denied(m) => Status::permission_denied(cut(&format!("permission denied: {m}"))),
        Error::Conflict(m) => Status::aborted(cut(&m)),
        Error::Store(StoreError::Unavailable(u)) => {
            tracing::warn!(error = %u.message, "storage unavailable");
            Status::unavailable(cut(&format!("{}; nothing was changed, retry", u.message)))
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

fn invalid_status(violations: Vec<Violation>) -> Status {
    let total = violations.len();
    let shown: Vec<Violation> = violations
        .into_iter()
        .take(MAX_REPORTED)
        .map(|v| Violation::new(truncate_marked(&v.field, MAX_PART), truncate_marked(&v.description, MAX_PART)))
        .collect();
    // As many as fit in the message; the count of the rest at its end.
    let mut message = String::new();
    let mut listed = 0;
    for v in &shown {
        let part = v.to_string();
        if listed > 0 && message.len() + part.len() + 2 > MAX_MESSAGE - 64 {
            break;
        }
        if listed > 0 {
            message.push_str("; ");
        }
        message.push_str(&part);
        listed += 1;
    }
    if total > listed {
        message.push_str(&format!("; and {} more problem(s) not listed", total - listed));
    }
    let details: Vec<FieldViolation> = shown.into_iter().map(|v| FieldViolation::new(v.field, v.description)).collect();
    Status::with_error_details(Code::InvalidArgument, cut(&message), ErrorDetails::with_bad_request(details))
}

fn cut(message: &str) -> String {
    truncate_marked(message, MAX_MESSAGE)
}

/// A request field that cannot even be converted.
pub fn invalid(field: &str, description: impl Into<String>) -> Status {
    to_status(Error::invalid(field, description))
}

/// A request field that breaks a rule or limit.
pub fn violation(v: Violation) -> Status {
    to_status(Error::Invalid(vec![v]))
}

/// Several fields that break rules or limits.
pub fn violations(v: Vec<Violation>) -> Status {
    to_status(Error::Invalid(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_stays_small_whatever_the_caller_sent() {
        let many: Vec<Violation> =
            (0..10_000).map(|i| Violation::new(format!("f[{i}]{}", "x".repeat(10_000)), "y".repeat(10_000))).collect();
        let status = to_status(Error::Invalid(many));
        assert!(status.message().len() <= MAX_MESSAGE, "{}", status.message().len());
        assert!(status.message().contains("more problem(s)"));
        // Percent-encoded message and base64 details, in the worst case.
        let on_the_wire = status.message().len() * 3 + status.details().len() * 4 / 3;
        assert!(on_the_wire < 16 * 1024, "{on_the_wire} bytes of headers");
        let long = to_status(Error::NotFound("n".repeat(100_000)));
        assert!(long.message().len() <= MAX_MESSAGE);
    }
}
