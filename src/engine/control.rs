//! Caller commands on a running execution: abort, pause, continue, approve, reject.

use serde_json::json;

use super::{Audit, Engine, Error, Result, authorize, new_id, now, work::Unit};
use crate::{
    domain::{
        access::Caller,
        control::{self, CommandError, Order},
        execution::ExecutionDetail,
        progress::Changes,
    },
    store::executions::{self, Key},
};

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
        let order = Order::Abort { reason: reason.to_owned() };
        let d = self.command(execution_id, order, caller, "execution.abort", json!({ "reason": reason })).await?;
        if reason.is_empty() {
            tracing::info!(execution_id, actor = %caller.subject, "execution aborted");
        } else {
            tracing::info!(execution_id, actor = %caller.subject, reason, "execution aborted");
        }
        Ok(d)
    }

    pub async fn pause(&self, execution_id: &str, caller: &Caller) -> Result<ExecutionDetail> {
        let d = self.command(execution_id, Order::Pause, caller, "execution.pause", json!({})).await?;
        tracing::info!(execution_id, actor = %caller.subject, "execution paused");
        Ok(d)
    }

    pub async fn continue_execution(&self, execution_id: &str, caller: &Caller) -> Result<ExecutionDetail> {
        let d = self.command(execution_id, Order::Continue, caller, "execution.continue", json!({})).await?;
        tracing::info!(execution_id, actor = %caller.subject, "execution continued");
        Ok(d)
    }

    pub async fn approve(&self, decision: Decision) -> Result<ExecutionDetail> {
        self.decide(decision, true).await
    }

    pub async fn reject(&self, decision: Decision) -> Result<ExecutionDetail> {
        self.decide(decision, false).await
    }

    async fn decide(&self, decision: Decision, approve: bool) -> Result<ExecutionDetail> {
        let action = if approve { "execution.approve" } else { "execution.reject" };
        let details = json!({ "stage": decision.stage_name, "comment": decision.comment });
        let order = Order::Decide { approve, stage: decision.stage_name.clone(), comment: decision.comment.clone() };
        let d = self.command(&decision.execution_id, order, &decision.caller, action, details).await?;
        tracing::info!(execution_id = %decision.execution_id, actor = %decision.caller.subject, approve,
            "approval decided");
        Ok(d)
    }

    /// One command in one unit of work; answers with the execution as committed.
    async fn command(
        &self,
        execution_id: &str,
        order: Order,
        caller: &Caller,
        action: &'static str,
        details: serde_json::Value,
    ) -> Result<ExecutionDetail> {
        let mut unit = self.unit(Some(execution_id)).await?;
        let result = self.command_in(&mut unit, execution_id, &order, caller, action, details).await;
        self.finish(unit, result).await?;
        Ok((*self.view(execution_id).await?.detail).clone())
    }

    async fn command_in(
        &self,
        unit: &mut Unit,
        execution_id: &str,
        order: &Order,
        caller: &Caller,
        action: &'static str,
        details: serde_json::Value,
    ) -> Result<()> {
        let not_found = || Error::not_found("execution", execution_id);
        let (execution, revision) =
            executions::lock_revision(&unit.tx, Key::Id(execution_id)).await?.ok_or_else(not_found)?;
        let before = self.state_of(unit, execution, revision).await?;
        authorize::steer(caller, &before)?;
        let mut after = before.clone();
        let mut changes = Changes::default();
        let now = now();
        control::apply(&mut after, order, &caller.subject, now, &mut new_id, &mut changes).map_err(|e| match e {
            CommandError::Refused(r) => Error::Refused(
                r.with_default("execution_id", execution_id).with_default("status", before.execution.status),
            ),
            CommandError::Invalid(v) => Error::Invalid(vec![v]),
        })?;
        self.save(unit, &before, &after, changes, now).await?;
        unit.batch.push(Audit::new(caller, action, details).on(&after.execution).part());
        Ok(())
    }
}
