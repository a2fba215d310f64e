//! Caller commands on a running execution: abort, pause, continue, approve, reject.

use serde_json::json;

use super::{Audit, Engine, Error, Result, authorize, progress};
use crate::domain::{
    access::Caller,
    execution::{ExecutionDetail, Millis},
    machine::{Command, Effect, check_command},
    status::{ExecutionStatus, StageStatus},
};
use crate::store::executions::{Key, Scope};

/// An approval decision.
#[derive(Debug, Clone)]
pub struct Decision {
    pub execution_id: String,
    /// Must name the waiting stage when set.
    pub stage_name: Option<String>,
    pub comment: String,
    pub caller: Caller,
}

impl Engine {
    /// Stops scheduling and cancels running workflows; nothing is rolled back.
    pub async fn abort(&self, execution_id: &str, reason: &str, caller: &Caller) -> Result<ExecutionDetail> {
        let actor = caller.subject.as_str();
        let audit = Audit::new(caller, "execution.abort", json!({ "reason": reason }));
        let (_, d) = self
            .change(Key::Id(execution_id), Scope::Whole, Some(audit), |d, now| {
                authorize::steer(caller, d)?;
                if let Effect::To(_) = check_command(d.execution.status, Command::Abort)? {
                    abort(d, reason, actor, now);
                }
                Ok(())
            })
            .await?;
        tracing::info!(execution_id, actor, reason, "execution aborted");
        Ok(d)
    }

    pub async fn pause(&self, execution_id: &str, caller: &Caller) -> Result<ExecutionDetail> {
        let actor = caller.subject.as_str();
        let audit = Audit::new(caller, "execution.pause", json!({}));
        let (_, d) = self
            .change(Key::Id(execution_id), Scope::Whole, Some(audit), |d, _| {
                authorize::steer(caller, d)?;
                if let Effect::To(status) = check_command(d.execution.status, Command::Pause)? {
                    d.execution.status = status;
                    d.execution.status_message = format!("paused by {actor}; Continue to start the next stage");
                }
                Ok(())
            })
            .await?;
        tracing::info!(execution_id, actor, "execution paused");
        Ok(d)
    }

    pub async fn continue_execution(&self, execution_id: &str, caller: &Caller) -> Result<ExecutionDetail> {
        let actor = caller.subject.as_str();
        let audit = Audit::new(caller, "execution.continue", json!({}));
        let (_, d) = self
            .change(Key::Id(execution_id), Scope::Whole, Some(audit), |d, now| {
                authorize::steer(caller, d)?;
                if let Effect::To(status) = check_command(d.execution.status, Command::Continue)? {
                    d.execution.status =
                        if d.execution.started_at.is_some() { status } else { ExecutionStatus::Queued };
                    d.execution.status_message = format!("continued by {actor}");
                    progress::advance(d, now);
                }
                Ok(())
            })
            .await?;
        tracing::info!(execution_id, actor, "execution continued");
        Ok(d)
    }

    pub async fn approve(&self, decision: Decision) -> Result<ExecutionDetail> {
        self.decide(decision, Command::Approve).await
    }

    pub async fn reject(&self, decision: Decision) -> Result<ExecutionDetail> {
        self.decide(decision, Command::Reject).await
    }

    async fn decide(&self, decision: Decision, command: Command) -> Result<ExecutionDetail> {
        let action = if command == Command::Approve { "execution.approve" } else { "execution.reject" };
        let audit =
            Audit::new(&decision.caller, action, json!({ "stage": decision.stage_name, "comment": decision.comment }));
        let actor = decision.caller.subject.clone();
        let (stage, d) = self
            .change(Key::Id(&decision.execution_id), Scope::Whole, Some(audit), |d, now| {
                authorize::steer(&decision.caller, d)?;
                check_command(d.execution.status, command)?;
                let index = waiting_stage(d, decision.stage_name.as_deref())?;
                let stage = &mut d.stages[index];
                stage.decided_by = actor.clone();
                stage.decision_comment = decision.comment.clone();
                stage.ended_at = Some(now);
                stage.deadline_at = None;
                let name = stage.name.clone();
                if command == Command::Approve {
                    stage.status = StageStatus::Succeeded;
                    stage.status_message = format!("approved by {}", actor);
                    progress::advance(d, now);
                } else {
                    stage.status = StageStatus::Rejected;
                    stage.status_message = format!("rejected by {}", actor);
                    let message = format!("approval {name:?} rejected by {}: {}", actor, decision.comment);
                    progress::finish(d, ExecutionStatus::Rejected, message, now);
                }
                Ok(name)
            })
            .await?;
        tracing::info!(execution_id = %decision.execution_id, stage, actor = %actor, ?command, "approval decided");
        Ok(d)
    }
}

pub(super) fn abort(d: &mut ExecutionDetail, reason: &str, actor: &str, now: Millis) {
    for stage in &mut d.stages {
        if stage.status.is_active() {
            stage.status = StageStatus::Aborted;
            stage.status_message = "was running when the execution was aborted; nothing was rolled back".into();
            stage.ended_at = Some(now);
            stage.deadline_at = None;
        }
    }
    let why = if reason.is_empty() { String::new() } else { format!(": {reason}") };
    progress::finish(d, ExecutionStatus::Aborted, format!("aborted by {actor}{why}"), now);
}

fn waiting_stage(d: &ExecutionDetail, asked: Option<&str>) -> Result<usize> {
    let Some(waiting) = d.waiting_approval() else {
        let current = d.stages.iter().find(|s| s.status.is_active()).map(|s| s.name.as_str());
        return Err(Error::refused(
            "NO_APPROVAL_WAITING",
            match current {
                Some(name) => format!(
                    "no approval is waiting: stage {name:?} is running; wait until an approval stage is reached"
                ),
                None => "no approval is waiting; wait until an approval stage is reached".into(),
            },
        ));
    };
    match asked {
        Some(name) if name != waiting.name => {
            if d.stages.iter().any(|s| s.name == name) {
                Err(Error::refused(
                    "STAGE_NOT_WAITING",
                    format!("stage {name:?} is not waiting for approval; the waiting stage is {:?}", waiting.name),
                ))
            } else {
                Err(Error::invalid(
                    "stage_name",
                    format!("the pipeline has no stage {name:?}; the waiting stage is {:?}", waiting.name),
                ))
            }
        }
        _ => Ok(waiting.index),
    }
}
