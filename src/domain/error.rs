//! The two ways a domain rule says no.

/// Input that breaks a rule, pinned to the field that carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct Violation {
    /// Path of the offending field as the caller wrote it, e.g. `definition.stages[2].name`.
    pub field: String,
    /// What is wrong and how to fix it, lowercase, no final stop.
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// A well-formed request that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Short machine-readable name of the blocking state, e.g. `EXECUTION_FINISHED`.
    pub reason: &'static str,
    /// The state that blocks the call and what to do instead.
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}
