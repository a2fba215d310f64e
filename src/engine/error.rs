//! The engine's one error type; the API maps it to a gRPC status in one place.

use crate::{
    domain::{Refusal, Violation},
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request breaks a rule; each violation names its field.
    #[error("invalid request: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
    /// The current state does not allow it.
    #[error("{0}")]
    Refused(Refusal),
    /// Something with the same identity exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller lacks a grant; the message names it.
    #[error("{0}")]
    Denied(String),
    /// The caller may not even read the thing it named: it is told what it
    /// would be told if the thing did not exist (`not_found`), so a refusal
    /// never confirms that it exists. `denied` says why, for the audit trail.
    #[error("{not_found}")]
    Hidden { not_found: String, denied: String },
    /// A concurrent change won; reading again and retrying will do.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn not_found(what: &str, id: &str) -> Self {
        Error::NotFound(format!("{what} {} not found", crate::domain::limits::quote(id)))
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Invalid(vec![Violation::new(field, description)])
    }

    pub fn refused(reason: crate::domain::Reason, message: impl Into<String>) -> Self {
        Error::Refused(Refusal::new(reason, message))
    }

    /// Why the caller was refused for want of permission, if it was.
    pub fn denial(&self) -> Option<&str> {
        match self {
            Error::Denied(why) | Error::Hidden { denied: why, .. } => Some(why),
            _ => None,
        }
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error::Refused(r)
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        Error::Store(e.into())
    }
}
