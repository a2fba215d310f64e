//! How an execution moves forward, applied to its in-memory state inside a
//! use case's transaction: the domain decides, this writes the decision down.

use crate::domain::{
    execution::{ExecutionDetail, Millis, WorkflowRun},
    machine,
    pipeline::StageKind,
    status::{ExecutionStatus, StageStatus, WorkflowStatus},
};

/// Skips, starts the next stage, or finishes, as the plan says.
pub fn advance(d: &mut ExecutionDetail, now: Millis) {
    let pairs: Vec<_> = d.stages.iter().map(|s| s.status).zip(&d.definition.stages).collect();
    let plan = machine::plan(d.execution.status, &pairs, &d.execution.variables);
    if (plan.start.is_some() || !plan.skip.is_empty()) && d.execution.status == ExecutionStatus::Queued {
        d.execution.status = ExecutionStatus::Running;
        d.execution.started_at = Some(now);
    }
    for (index, reason) in plan.skip {
        let stage = &mut d.stages[index];
        stage.status = StageStatus::Skipped;
        stage.status_message = reason;
        stage.started_at = Some(now);
        stage.ended_at = Some(now);
    }
    if let Some(index) = plan.start {
        start_stage(d, index, now);
    }
    if let Some((status, message)) = plan.finish {
        finish(d, status, message, now);
    }
}

fn start_stage(d: &mut ExecutionDetail, index: usize, now: Millis) {
    let definition = &d.definition.stages[index];
    let stage = &mut d.stages[index];
    stage.started_at = Some(now);
    match &definition.kind {
        StageKind::Approval { timeout_ms, .. } => {
            stage.status = StageStatus::WaitingApproval;
            stage.status_message = "waiting for Approve or Reject".into();
            stage.deadline_at = Some(now + *timeout_ms as Millis);
        }
        StageKind::Workflows(workflows) => {
            stage.status = StageStatus::Running;
            stage.status_message.clear();
            for (workflow_index, w) in workflows.iter().enumerate() {
                d.workflows.push(WorkflowRun {
                    task_id: super::new_id(),
                    execution_id: d.execution.id.clone(),
                    stage_index: index,
                    workflow_index,
                    name: w.name.clone(),
                    task_queue: w.task_queue.clone(),
                    command: w.command.clone(),
                    timeout_ms: w.timeout_ms as i64,
                    status: WorkflowStatus::Queued,
                    attempt: 0,
                    max_attempts: w.max_attempts as i32,
                    exit_code: None,
                    output: String::new(),
                    status_message: String::new(),
                    created_at: now,
                    started_at: None,
                    ended_at: None,
                    lease_token: None,
                    lease_owner: None,
                    lease_expires_at: None,
                    deadline_at: None,
                });
            }
        }
    }
}

/// Ends a running workflow stage once all its workflows have ended: a bad
/// outcome ends the execution, a good one lets it advance.
pub fn settle_stage(d: &mut ExecutionDetail, index: usize, now: Millis) {
    if d.stages[index].status != StageStatus::Running {
        return;
    }
    let Some(outcome) = machine::stage_outcome(d.workflows_of(index).map(|w| w.status)) else {
        return;
    };
    let message = d
        .workflows_of(index)
        .filter(|w| w.status != WorkflowStatus::Succeeded)
        .map(|w| format!("workflow {:?} {}: {}", w.name, w.status, w.status_message))
        .collect::<Vec<_>>()
        .join("; ");
    let stage = &mut d.stages[index];
    stage.status = outcome;
    stage.ended_at = Some(now);
    stage.status_message = message.clone();
    match machine::execution_outcome(outcome) {
        Some(status) => {
            let name = stage.name.clone();
            finish(d, status, format!("stage {name:?} {outcome}: {message}"), now)
        }
        None => advance(d, now),
    }
}

/// A workflow ran past its timeout: it expires, and as that ends its stage
/// at once the stage's other open workflows are cancelled (their workers
/// hear it on the next heartbeat). The caller then settles the stage.
pub fn expire_workflow(d: &mut ExecutionDetail, task_id: &str, now: Millis) {
    let Some(w) = d.workflows.iter_mut().find(|w| w.task_id == task_id) else { return };
    w.status = WorkflowStatus::Expired;
    w.status_message = format!("ran past its timeout of {} ms", w.timeout_ms);
    w.ended_at = Some(now);
    let (stage, name) = (w.stage_index, w.name.clone());
    for sibling in d.workflows.iter_mut().filter(|s| s.stage_index == stage && !s.status.is_final()) {
        sibling.status = WorkflowStatus::Cancelled;
        sibling.status_message = format!("cancelled: workflow {name:?} of this stage expired");
        sibling.ended_at = Some(now);
    }
}

/// Records a final status: later stages never run, nothing is left queued.
pub fn finish(d: &mut ExecutionDetail, status: ExecutionStatus, message: String, now: Millis) {
    d.execution.status = status;
    d.execution.status_message = message;
    d.execution.ended_at = Some(now);
    for stage in &mut d.stages {
        if stage.status == StageStatus::Pending {
            stage.status = StageStatus::NotRun;
        }
    }
    cancel_open_workflows(d, now, &format!("execution {status}"));
}

/// Cancels queued and running workflows; a worker learns of it on its next heartbeat.
pub fn cancel_open_workflows(d: &mut ExecutionDetail, now: Millis, why: &str) {
    for w in &mut d.workflows {
        if !w.status.is_final() {
            w.status = WorkflowStatus::Cancelled;
            w.status_message = format!("cancelled: {why}");
            w.ended_at = Some(now);
        }
    }
}
