//! What a command that did not work prints, and its exit code: 2 for bad
//! input (a usage error, a file that does not parse, INVALID_ARGUMENT from
//! the server), 1 for everything else.

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// A process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It worked (for `watch`: the execution SUCCEEDED).
    Success = 0,
    /// The server refused or failed, or the execution did not succeed.
    Failed = 1,
    /// Bad input: flags, files or request fields.
    Usage = 2,
}

/// A command that did not work: the message, lines of detail, the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub details: Vec<String>,
}

pub type Result<T> = std::result::Result<T, Failure>;

impl Failure {
    /// Bad input on our side.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure { exit: Exit::Usage, message: message.into(), details: vec![] }
    }

    /// Anything else.
    pub fn failed(message: impl Into<String>) -> Self {
        Failure { exit: Exit::Failed, message: message.into(), details: vec![] }
    }

    /// A gRPC status: its message and code, then its BadRequest field violations.
    pub fn from_status(status: &Status) -> Self {
        let exit = if status.code() == Code::InvalidArgument { Exit::Usage } else { Exit::Failed };
        let text = if status.message().is_empty() { status.code().description() } else { status.message() };
        let message = format!("{text} ({})", code_name(status.code()));
        let details = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect())
            .unwrap_or_default();
        Failure { exit, message, details }
    }

    /// What goes to stderr.
    pub fn render(&self) -> String {
        let mut out = format!("error: {}\n", self.message);
        for line in &self.details {
            out.push_str(&format!("  - {line}\n"));
        }
        out
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::from_status(&status)
    }
}

/// `NotFound` → `NOT_FOUND`, as gRPC documents its codes.
pub fn code_name(code: Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// An error with its causes, as one line ("transport error: tcp connect error: …").
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, FieldViolation};

    #[test]
    fn code_names_are_grpc_names() {
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
    }

    #[test]
    fn invalid_argument_is_bad_input_and_lists_its_violations() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "definition.stages: at least one stage",
            ErrorDetails::with_bad_request(vec![FieldViolation::new("definition.stages", "at least one stage")]),
        );
        let failure = Failure::from_status(&status);
        assert_eq!(failure.exit, Exit::Usage);
        assert_eq!(
            failure.render(),
            "error: definition.stages: at least one stage (INVALID_ARGUMENT)\n  - definition.stages: at least one stage\n"
        );
    }

    #[test]
    fn other_codes_exit_1() {
        let failure = Failure::from(Status::not_found("execution x not found"));
        assert_eq!(failure.exit, Exit::Failed);
        assert_eq!(failure.render(), "error: execution x not found (NOT_FOUND)\n");
    }
}
