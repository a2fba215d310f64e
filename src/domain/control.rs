//! Caller commands on an execution — abort, pause, continue, approve,
//! reject — as pure transitions of its state.

use super::{
    Reason, Refusal, Violation,
    execution::{ExecutionState, Millis},
    machine::{Command, Effect, check_command},
    progress::{self, Changes, Ids},
    status::{ExecutionStatus, StageStatus},
};

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    Refused(Refusal),
    Invalid(Violation),
}

impl From<Refusal> for CommandError {
    fn from(r: Refusal) -> Self {
        CommandError::Refused(r)
    }
}

/// A caller command with what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Abort {
        reason: String,
    },
    Pause,
    Continue,
    /// Approve (true) or reject the waiting approval stage; `stage`, when
    /// given, must name it.
    Decide {
        approve: bool,
        stage: Option<String>,
        comment: String,
    },
}

impl Order {
    pub fn command(&self) -> Command {
        match self {
            Order::Abort { .. } => Command::Abort,
            Order::Pause => Command::Pause,
            Order::Continue => Command::Continue,
            Order::Decide { approve: true, .. } => Command::Approve,
            Order::Decide { approve: false, .. } => Command::Reject,
        }
    }
}

/// Applies `order` by `actor`; returns the name of the stage it acted on, if any.
pub fn apply(
    s: &mut ExecutionState,
    order: &Order,
    actor: &str,
    now: Millis,
    ids: Ids<'_>,
    ch: &mut Changes,
) -> Result<Option<String>, CommandError> {
    let effect = check_command(s.execution.status, order.command())?;
    match order {
        Order::Abort { reason } => {
            if let Effect::To(_) = effect {
                abort(s, reason, actor, now, ch);
            }
            Ok(None)
        }
        Order::Pause => {
            if let Effect::To(status) = effect {
                s.execution.status = status;
                s.execution.status_message = format!("paused by {actor}; Continue to start the next stage");
            }
            Ok(None)
        }
        Order::Continue => {
            if let Effect::To(status) = effect {
                s.execution.status = if s.execution.started_at.is_some() { status } else { ExecutionStatus::Queued };
                s.execution.status_message = format!("continued by {actor}");
                progress::advance(s, now, ids, ch);
            }
            Ok(None)
        }
        Order::Decide { approve, stage, comment } => {
            let index = waiting_stage(s, stage.as_deref())?;
            let st = &mut s.stages[index];
            st.decided_by = actor.to_owned();
            st.decision_comment = comment.clone();
            st.ended_at = Some(now);
            st.deadline_at = None;
            let name = st.name.to_string();
            if *approve {
                st.status = StageStatus::Succeeded;
                st.status_message = format!("approved by {actor}");
                progress::advance(s, now, ids, ch);
            } else {
                st.status = StageStatus::Rejected;
                st.status_message = format!("rejected by {actor}");
                let message = format!("approval {name:?} rejected by {actor}: {comment}");
                progress::finish(s, ExecutionStatus::Rejected, message, Some(index), now, ch);
            }
            Ok(Some(name))
        }
    }
}

/// Stops the execution: active stages become ABORTED (nothing is rolled
/// back), pending ones NOT_RUN, open workflows are cancelled.
pub fn abort(s: &mut ExecutionState, reason: &str, actor: &str, now: Millis, ch: &mut Changes) {
    let mut at = None;
    for stage in &mut s.stages {
        if stage.status.is_active() {
            at.get_or_insert(stage.index);
            stage.status_message = if stage.status == StageStatus::WaitingApproval {
                "was waiting for approval when the execution was aborted".into()
            } else {
                "was running when the execution was aborted; nothing was rolled back".into()
            };
            stage.status = StageStatus::Aborted;
            stage.ended_at = Some(now);
            stage.deadline_at = None;
        }
    }
    let why = if reason.is_empty() { String::new() } else { format!(": {reason}") };
    progress::finish(s, ExecutionStatus::Aborted, format!("aborted by {actor}{why}"), at, now, ch);
}

/// Whether `command` would change `s` now, for a console that enables its
/// controls from it: the refusal the RPC would give, or one for a command
/// that would change nothing (pausing a paused execution), which the RPC
/// accepts as a safe retry but a person has no reason to click.
pub fn would_act(s: &ExecutionState, command: Command) -> Result<(), Refusal> {
    match check_command(s.execution.status, command)? {
        Effect::Unchanged => {
            Err(Refusal::new(Reason::NothingToChange, format!("execution is already {}", s.execution.status)))
        }
        Effect::OnStage | Effect::To(_) if matches!(command, Command::Approve | Command::Reject) => {
            match waiting_stage(s, None) {
                Ok(_) => Ok(()),
                Err(CommandError::Refused(r)) => Err(r),
                Err(CommandError::Invalid(v)) => Err(Refusal::new(Reason::NoApprovalWaiting, v.description)),
            }
        }
        _ => Ok(()),
    }
}

fn waiting_stage(s: &ExecutionState, asked: Option<&str>) -> Result<usize, CommandError> {
    let Some(waiting) = s.waiting_approval() else {
        let current = s.stages.iter().find(|st| st.status.is_active()).map(|st| &*st.name);
        return Err(CommandError::Refused(Refusal::new(
            Reason::NoApprovalWaiting,
            match current {
                Some(name) => format!(
                    "no approval is waiting: stage {name:?} is running; wait until an approval stage is reached"
                ),
                None => "no approval is waiting; wait until an approval stage is reached".into(),
            },
        )));
    };
    match asked {
        Some(name) if name != &*waiting.name => {
            if s.stages.iter().any(|st| &*st.name == name) {
                Err(CommandError::Refused(
                    Refusal::new(
                        Reason::StageNotWaiting,
                        format!("stage {name:?} is not waiting for approval; the waiting stage is {:?}", waiting.name),
                    )
                    .with("stage_name", name)
                    .with("waiting_stage_name", &waiting.name),
                ))
            } else {
                Err(CommandError::Invalid(Violation::new(
                    "stage_name",
                    format!("the pipeline has no stage {name:?}; the waiting stage is {:?}", waiting.name),
                )))
            }
        }
        _ => Ok(waiting.index),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{
        pipeline::{EnvironmentType, Stage, StageKind, tests::stage},
        progress::tests::{counter, state},
    };

    fn approval(name: &str) -> Stage {
        Stage {
            name: name.into(),
            environment_name: "prod".into(),
            environment_type: EnvironmentType::Prod,
            skip: None,
            kind: StageKind::Approval {
                timeout_ms: Duration::from_secs(60).as_millis() as u64,
                instructions: String::new(),
            },
            failure_policy: Default::default(),
        }
    }

    fn running(stages: Vec<Stage>) -> ExecutionState {
        let mut s = state(stages);
        progress::advance(&mut s, 1, &mut counter(), &mut Changes::default());
        s
    }

    #[test]
    fn abort_cancels_open_work_and_marks_what_was_running() {
        let mut s = running(vec![stage("a", &["x"]), stage("b", &["y"])]);
        let mut ch = Changes::default();
        apply(&mut s, &Order::Abort { reason: "wrong build".into() }, "ann", 5, &mut counter(), &mut ch).unwrap();
        assert_eq!(s.execution.status, ExecutionStatus::Aborted);
        assert_eq!(s.execution.status_message, "aborted by ann: wrong build");
        assert_eq!(s.stages[0].status, StageStatus::Aborted);
        assert_eq!(s.stages[1].status, StageStatus::NotRun);
        assert!(ch.cancel_open.is_some());
        assert_eq!(s.execution.end_stage.map(|m| m.index), Some(0));
    }

    #[test]
    fn approve_moves_on_and_reject_ends_the_execution() {
        let mut s = running(vec![approval("gate"), stage("b", &["y"])]);
        assert_eq!(s.stages[0].status, StageStatus::WaitingApproval);
        let mut ch = Changes::default();
        let order = Order::Decide { approve: true, stage: Some("gate".into()), comment: "ok".into() };
        assert_eq!(apply(&mut s, &order, "bob", 5, &mut counter(), &mut ch).unwrap(), Some("gate".into()));
        assert_eq!(s.stages[1].status, StageStatus::Running);
        assert_eq!(ch.queued.len(), 1);

        let mut s = running(vec![approval("gate"), stage("b", &["y"])]);
        let order = Order::Decide { approve: false, stage: None, comment: "no".into() };
        apply(&mut s, &order, "bob", 5, &mut counter(), &mut Changes::default()).unwrap();
        assert_eq!(s.execution.status, ExecutionStatus::Rejected);
        assert_eq!(s.stages[1].status, StageStatus::NotRun);
    }

    #[test]
    fn decisions_need_the_waiting_stage() {
        let mut s = running(vec![stage("a", &["x"]), approval("gate")]);
        let order = Order::Decide { approve: true, stage: None, comment: String::new() };
        let err = apply(&mut s, &order, "bob", 5, &mut counter(), &mut Changes::default()).unwrap_err();
        assert!(matches!(err, CommandError::Refused(r) if r.reason == Reason::NoApprovalWaiting));

        let mut s = running(vec![approval("gate"), stage("b", &["y"])]);
        let order = Order::Decide { approve: true, stage: Some("b".into()), comment: String::new() };
        let err = apply(&mut s, &order, "bob", 5, &mut counter(), &mut Changes::default()).unwrap_err();
        assert!(matches!(err, CommandError::Refused(r) if r.reason == Reason::StageNotWaiting));
        let order = Order::Decide { approve: true, stage: Some("nope".into()), comment: String::new() };
        let err = apply(&mut s, &order, "bob", 5, &mut counter(), &mut Changes::default()).unwrap_err();
        assert!(matches!(err, CommandError::Invalid(v) if v.field == "stage_name"));
    }

    #[test]
    fn pause_then_continue_starts_the_next_stage_only_after_continue() {
        let mut s = running(vec![stage("a", &["x"]), stage("b", &["y"])]);
        apply(&mut s, &Order::Pause, "ann", 2, &mut counter(), &mut Changes::default()).unwrap();
        assert_eq!(s.execution.status, ExecutionStatus::Paused);
        s.stages[0].counts.apply(crate::domain::execution::WorkflowCounts::delta_of_end(
            crate::domain::status::WorkflowStatus::Succeeded,
        ));
        let mut ch = Changes::default();
        progress::settle_stage(&mut s, 0, 3, &mut counter(), &mut ch);
        assert_eq!(s.stages[0].status, StageStatus::Succeeded);
        assert_eq!(s.stages[1].status, StageStatus::Pending);
        assert!(ch.queued.is_empty());
        apply(&mut s, &Order::Continue, "ann", 4, &mut counter(), &mut ch).unwrap();
        assert_eq!(s.execution.status, ExecutionStatus::Running);
        assert_eq!(s.stages[1].status, StageStatus::Running);
        assert_eq!(ch.queued.len(), 1);
    }

    /// Every status × every command: final executions refuse them all and keep their state.
    #[test]
    fn final_executions_refuse_every_command_unchanged() {
        for status in ExecutionStatus::ALL.iter().copied().filter(|s| s.is_final()) {
            for order in [
                Order::Abort { reason: String::new() },
                Order::Pause,
                Order::Continue,
                Order::Decide { approve: true, stage: None, comment: String::new() },
            ] {
                let mut s = running(vec![stage("a", &["x"])]);
                s.execution.status = status;
                let before = s.clone();
                let err = apply(&mut s, &order, "ann", 9, &mut counter(), &mut Changes::default()).unwrap_err();
                assert!(matches!(err, CommandError::Refused(r) if r.reason == Reason::ExecutionFinished));
                assert_eq!(s.execution, before.execution);
                assert_eq!(s.stages, before.stages);
            }
        }
    }
}
