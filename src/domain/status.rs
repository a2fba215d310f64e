//! The states of executions, stages and workflows, and their stored names.

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in the database and shown in messages.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// Where an execution is in its life.
    ExecutionStatus {
        Queued => "QUEUED",
        Running => "RUNNING",
        Paused => "PAUSED",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        Aborted => "ABORTED",
        Expired => "EXPIRED",
        Rejected => "REJECTED",
    }
);

status_enum!(
    /// Where a stage of an execution is.
    StageStatus {
        Pending => "PENDING",
        Running => "RUNNING",
        WaitingApproval => "WAITING_APPROVAL",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        Skipped => "SKIPPED",
        Aborted => "ABORTED",
        Expired => "EXPIRED",
        Rejected => "REJECTED",
        NotRun => "NOT_RUN",
    }
);

status_enum!(
    /// Where one workflow (one task) of a stage is.
    WorkflowStatus {
        Queued => "QUEUED",
        Running => "RUNNING",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        Expired => "EXPIRED",
        Cancelled => "CANCELLED",
    }
);

impl ExecutionStatus {
    /// Final states never change again (PAUSED is not final: it continues).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted | Self::Expired | Self::Rejected)
    }
}

impl StageStatus {
    /// A stage that is running or waiting for a person.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::WaitingApproval)
    }

    /// A stage the execution may move past.
    pub fn is_passed(self) -> bool {
        matches!(self, Self::Succeeded | Self::Skipped)
    }
}

impl WorkflowStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_stored_name() {
        for s in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(s.as_str()), Some(*s));
        }
        for s in StageStatus::ALL {
            assert_eq!(StageStatus::parse(s.as_str()), Some(*s));
        }
        for s in WorkflowStatus::ALL {
            assert_eq!(WorkflowStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(ExecutionStatus::parse("nope"), None);
    }
}
