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

/// Why a well-formed request is refused: one vocabulary for every refusal
/// and for the resume points GetExecution shows. The API maps each onto the
/// proto's `ErrorReason` of the same name; the domain knows no proto types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The stage to resume from was never reached.
    StageNotReached,
    /// The execution is not FAILED, ABORTED, EXPIRED or REJECTED.
    ExecutionNotResumable,
    /// A later execution of the chain exists.
    NotLatestInChain,
    /// The chain reached its maximum attempts or age.
    ChainLimitReached,
    /// The execution has ended; it can no longer be steered.
    ExecutionFinished,
    /// Approve or Reject while no approval stage waits.
    NoApprovalWaiting,
    /// Approve or Reject named a stage that is not the waiting one.
    StageNotWaiting,
    /// A task report whose lease is not (or no longer) held.
    LeaseNotHeld,
    /// Secret variables to seal or open, and no secrets key configured.
    SecretsKeyMissing,
    /// Sealed secrets the configured key cannot open (the key changed).
    SecretsUnreadable,
    /// The command would change nothing (pausing a paused execution): the
    /// RPC accepts it as a safe retry; a console has no reason to offer it.
    NothingToChange,
}

impl Reason {
    /// Every reason, for tests that check the mapping is complete.
    pub const ALL: [Reason; 11] = [
        Reason::StageNotReached,
        Reason::ExecutionNotResumable,
        Reason::NotLatestInChain,
        Reason::ChainLimitReached,
        Reason::ExecutionFinished,
        Reason::NoApprovalWaiting,
        Reason::StageNotWaiting,
        Reason::LeaseNotHeld,
        Reason::SecretsKeyMissing,
        Reason::SecretsUnreadable,
        Reason::NothingToChange,
    ];

    /// The reason as it travels: UPPER_SNAKE, the proto enum value's name
    /// without its `ERROR_REASON_` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::StageNotReached => "STAGE_NOT_REACHED",
            Reason::ExecutionNotResumable => "EXECUTION_NOT_RESUMABLE",
            Reason::NotLatestInChain => "NOT_LATEST_IN_CHAIN",
            Reason::ChainLimitReached => "CHAIN_LIMIT_REACHED",
            Reason::ExecutionFinished => "EXECUTION_FINISHED",
            Reason::NoApprovalWaiting => "NO_APPROVAL_WAITING",
            Reason::StageNotWaiting => "STAGE_NOT_WAITING",
            Reason::LeaseNotHeld => "LEASE_NOT_HELD",
            Reason::SecretsKeyMissing => "SECRETS_KEY_MISSING",
            Reason::SecretsUnreadable => "SECRETS_UNREADABLE",
            Reason::NothingToChange => "NOTHING_TO_CHANGE",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A well-formed request that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// What blocks the request, in the shared vocabulary.
    pub reason: Reason,
    /// The state that blocks the call and what to do instead.
    pub message: String,
    /// The ids and values the refusal is about (`execution_id`, `status`,
    /// `stage_name` …), so a client can act without parsing the message.
    pub metadata: Vec<(&'static str, String)>,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), metadata: Vec::new() }
    }

    /// Adds (or replaces) one metadata entry.
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        let value = value.to_string();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Adds an entry unless the refusal already has one for `key`.
    pub fn with_default(self, key: &'static str, value: impl ToString) -> Self {
        if self.metadata.iter().any(|(k, _)| *k == key) { self } else { self.with(key, value) }
    }
}
