//! The one place engine errors become gRPC statuses. The cause goes to the
//! log; the caller gets a sentence to act on and the details to branch on.
//!
//! Every status built here carries a `google.rpc.ErrorInfo`: its `reason` is
//! a value of the proto's `ErrorReason` without the `ERROR_REASON_` prefix,
//! its `domain` is [`DOMAIN`], its `metadata` the ids the refusal is about.
//! Refusals of a precondition add a `PreconditionFailure` whose violation
//! type is the same reason; invalid requests add a `BadRequest`.
//!
//! A status travels in HTTP/2 headers, which a client caps (16 KiB by
//! default) and refuses whole beyond that; so every message and detail here
//! is bounded, whatever the caller sent or how many problems it had.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{
    domain::{Reason, Violation, limits::truncate_marked},
    engine::Error,
    proto as pb,
    store::StoreError,
};

/// `ErrorInfo.domain` of every error: the proto package, which also names
/// the `ErrorReason` enum the reasons come from.
pub const DOMAIN: &str = "reprise.v1";

/// At most this many field violations are reported in one refusal.
const MAX_REPORTED: usize = 10;
/// A message is cut to this many bytes.
const MAX_MESSAGE: usize = 2048;
/// A field path or violation description is cut to this many bytes.
const MAX_PART: usize = 256;

/// The proto value of a domain reason (the same name).
pub fn proto_reason(reason: Reason) -> pb::ErrorReason {
    use pb::ErrorReason as P;
    match reason {
        Reason::StageNotReached => P::StageNotReached,
        Reason::ExecutionNotResumable => P::ExecutionNotResumable,
        Reason::NotLatestInChain => P::NotLatestInChain,
        Reason::ChainLimitReached => P::ChainLimitReached,
        Reason::ExecutionFinished => P::ExecutionFinished,
        Reason::NoApprovalWaiting => P::NoApprovalWaiting,
        Reason::StageNotWaiting => P::StageNotWaiting,
        Reason::LeaseNotHeld => P::LeaseNotHeld,
        Reason::SecretsKeyMissing => P::SecretsKeyMissing,
        Reason::SecretsUnreadable => P::SecretsUnreadable,
        Reason::NothingToChange => P::NothingToChange,
    }
}

/// `ErrorInfo.reason` for a proto reason: its value name without the
/// `ERROR_REASON_` prefix, e.g. `EXECUTION_NOT_RESUMABLE`.
pub fn reason_name(reason: pb::ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// A status with `ErrorInfo` for `reason` and `metadata`, next to `details`.
pub fn status_with(
    code: Code,
    message: &str,
    reason: pb::ErrorReason,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
    mut details: ErrorDetails,
) -> Status {
    let metadata: HashMap<String, String> =
        metadata.into_iter().map(|(k, v)| (k.to_owned(), truncate_marked(&v, MAX_PART))).collect();
    details.set_error_info(reason_name(reason), DOMAIN, metadata);
    Status::with_error_details(code, cut(message), details)
}

/// A status whose only detail is `ErrorInfo` for `reason`.
pub fn status(code: Code, message: &str, reason: pb::ErrorReason) -> Status {
    status_with(code, message, reason, [], ErrorDetails::new())
}

pub fn to_status(error: Error) -> Status {
    use pb::ErrorReason as R;
    match error {
        Error::NotFound(m) | Error::Hidden { not_found: m, .. } => status(Code::NotFound, &m, R::NotFound),
        Error::Invalid(violations) => invalid_status(violations),
        Error::Refused(r) => {
            let message = cut(&r.message);
            let reason = proto_reason(r.reason);
            let subject = r.metadata.iter().find(|(k, _)| *k == "execution_id" || *k == "task_id");
            let subject = subject.map_or_else(|| "execution".to_owned(), |(k, v)| format!("{}/{v}", &k[..k.len() - 3]));
            let details = ErrorDetails::with_precondition_failure_violation(reason_name(reason), subject, &message);
            status_with(Code::FailedPrecondition, &message, reason, r.metadata, details)
        }
        Error::AlreadyExists(m) => status(Code::AlreadyExists, &m, R::AlreadyExists),
        Error::Denied(m) => status(Code::PermissionDenied, &format!("permission denied: {m}"), R::PermissionDenied),
        Error::Conflict(m) => status(Code::Aborted, &m, R::ConcurrentChange),
        Error::Store(StoreError::Unavailable(u)) => {
            tracing::warn!(error = %u.message, "storage unavailable");
            status(Code::Unavailable, &format!("{}; nothing was changed, retry", u.message), R::StoreUnavailable)
        }
        Error::Store(StoreError::Stale(m)) => {
            // Decided again by the engine before it gets here; a bug if not.
            tracing::warn!(error = %m, "a change was decided from a stale state");
            status(Code::Aborted, "a concurrent change won; read again and retry", R::ConcurrentChange)
        }
        Error::Store(StoreError::Duplicate(m)) => {
            tracing::warn!(error = %m, "unexpected duplicate key");
            status(Code::Aborted, "a concurrent change won; read again and retry", R::ConcurrentChange)
        }
        Error::Store(e @ (StoreError::Rejected(_) | StoreError::Corrupt(_))) => {
            // The database refused the statement and would again: a bug, or a
            // limit the service failed to enforce. Never worth a retry.
            tracing::error!(error = %e, "the database refused a statement");
            internal(
                "the server could not store or read this request (the database refused it); it was not applied and retrying will not help",
            )
        }
    }
}

/// UNAUTHENTICATED, for the auth layer and streams whose token expired.
pub fn unauthenticated(message: &str) -> Status {
    status(Code::Unauthenticated, message, pb::ErrorReason::Unauthenticated)
}

/// INTERNAL: the server failed; the request was not applied.
pub fn internal(message: &str) -> Status {
    status(Code::Internal, message, pb::ErrorReason::Internal)
}

/// UNAVAILABLE at the end of a stream's maximum lifetime: reconnect.
pub fn stream_lifetime(message: &str) -> Status {
    status(Code::Unavailable, message, pb::ErrorReason::StreamLifetimeReached)
}

/// RESOURCE_EXHAUSTED: the caller holds its most streams at once.
pub fn too_many_streams(message: &str, limit: usize) -> Status {
    status_with(
        Code::ResourceExhausted,
        message,
        pb::ErrorReason::TooManyStreams,
        [("limit", limit.to_string())],
        ErrorDetails::new(),
    )
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
    status_with(
        Code::InvalidArgument,
        &message,
        pb::ErrorReason::InvalidArgument,
        [],
        ErrorDetails::with_bad_request(details),
    )
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

    /// Every domain reason travels under its own name, and every proto
    /// reason's wire name is its value name less the prefix.
    #[test]
    fn reasons_are_one_vocabulary() {
        for r in Reason::ALL {
            assert_eq!(reason_name(proto_reason(r)), r.as_str());
            assert_eq!(proto_reason(r).as_str_name(), format!("ERROR_REASON_{}", r.as_str()));
        }
        for value in 1..64 {
            if let Ok(p) = pb::ErrorReason::try_from(value) {
                assert!(p.as_str_name().starts_with("ERROR_REASON_"));
                assert_eq!(pb::ErrorReason::from_str_name(&format!("ERROR_REASON_{}", reason_name(p))), Some(p));
            }
        }
    }

    #[test]
    fn every_status_carries_error_info() {
        let unavailable = Error::Store(StoreError::unavailable(crate::store::Cause::Unreachable, "down"));
        let cases = [
            (Error::NotFound("x".into()), Code::NotFound, "NOT_FOUND"),
            (Error::Hidden { not_found: "x".into(), denied: "y".into() }, Code::NotFound, "NOT_FOUND"),
            (Error::invalid("f", "bad"), Code::InvalidArgument, "INVALID_ARGUMENT"),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists, "ALREADY_EXISTS"),
            (Error::Denied("x".into()), Code::PermissionDenied, "PERMISSION_DENIED"),
            (Error::Conflict("x".into()), Code::Aborted, "CONCURRENT_CHANGE"),
            (Error::Store(StoreError::Duplicate("x".into())), Code::Aborted, "CONCURRENT_CHANGE"),
            (unavailable, Code::Unavailable, "STORE_UNAVAILABLE"),
        ];
        for (error, code, reason) in cases {
            let s = to_status(error);
            let info = s.get_error_details().error_info().cloned().expect("error info");
            assert_eq!((s.code(), info.reason.as_str(), info.domain.as_str()), (code, reason, DOMAIN));
        }
        for s in [unauthenticated("u"), internal("i"), stream_lifetime("l"), too_many_streams("t", 3)] {
            assert!(s.get_error_details().error_info().is_some(), "{s:?}");
        }
        let refusal = crate::domain::Refusal::new(Reason::ExecutionFinished, "done").with("execution_id", "e1");
        let s = to_status(Error::Refused(refusal));
        let details = s.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "EXECUTION_FINISHED");
        assert_eq!(info.metadata.get("execution_id").map(String::as_str), Some("e1"));
        let pf = details.precondition_failure().expect("precondition failure");
        assert_eq!(
            (pf.violations[0].r#type.as_str(), pf.violations[0].subject.as_str()),
            ("EXECUTION_FINISHED", "execution/e1")
        );
    }

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
