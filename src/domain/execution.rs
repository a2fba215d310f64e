//! The recorded state of an execution, as the engine reads and writes it.
//! Times are milliseconds since the Unix epoch.

use std::{collections::BTreeMap, sync::Arc};

use super::{
    pipeline::Definition,
    status::{ExecutionStatus, StageStatus, WorkflowStatus},
};

pub type Millis = i64;

#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_version: i64,
    pub application: String,
    pub status: ExecutionStatus,
    pub status_message: String,
    pub variables: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, String>,
    pub request_id: String,
    pub triggered_by: String,
    pub chain_id: String,
    pub attempt: i32,
    /// When the chain's first attempt was created (chain age limits need it
    /// without reading that attempt).
    pub chain_created_at: Millis,
    /// Set on a resume: the execution it resumed, the stage it resumed from, and why.
    pub resumed_from: Option<ResumeOrigin>,
    /// The execution that resumed this one; None while this is the latest of its chain.
    pub resumed_by: Option<String>,
    /// The stage where it failed, was aborted, expired or was rejected.
    pub end_stage: Option<StageMark>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// The values of its secret variables, sealed by the engine; opaque here.
    pub sealed_secrets: Option<String>,
}

/// A stage named by index and name, as history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageMark {
    pub index: usize,
    pub name: String,
}

/// How many workflows of a stage are in each state. Kept on the stage row by
/// the transaction that changes a workflow, so deciding whether a stage has
/// ended never reads its workflows (the cost of a report is flat in the
/// stage's width).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkflowCounts {
    pub total: u32,
    /// Queued or running.
    pub open: u32,
    pub failed: u32,
    pub expired: u32,
    pub cancelled: u32,
}

impl WorkflowCounts {
    /// A stage that just queued `n` workflows.
    pub fn queued(n: u32) -> Self {
        WorkflowCounts { total: n, open: n, ..Default::default() }
    }

    pub fn succeeded(&self) -> u32 {
        self.total.saturating_sub(self.open + self.failed + self.expired + self.cancelled)
    }

    /// The change one open workflow's end makes.
    pub fn delta_of_end(status: WorkflowStatus) -> CountsDelta {
        let mut d = CountsDelta { open: -1, ..Default::default() };
        match status {
            WorkflowStatus::Failed => d.failed = 1,
            WorkflowStatus::Expired => d.expired = 1,
            WorkflowStatus::Cancelled => d.cancelled = 1,
            WorkflowStatus::Succeeded => {}
            WorkflowStatus::Queued | WorkflowStatus::Running => d.open = 0,
        }
        d
    }

    pub fn apply(&mut self, d: CountsDelta) {
        let add = |v: &mut u32, by: i32| *v = (*v as i64 + by as i64).max(0) as u32;
        add(&mut self.open, d.open);
        add(&mut self.failed, d.failed);
        add(&mut self.expired, d.expired);
        add(&mut self.cancelled, d.cancelled);
    }
}

/// A change to [`WorkflowCounts`], applied in the database where the
/// workflow's own row changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountsDelta {
    pub open: i32,
    pub failed: i32,
    pub expired: i32,
    pub cancelled: i32,
}

impl std::ops::AddAssign for CountsDelta {
    fn add_assign(&mut self, d: CountsDelta) {
        self.open += d.open;
        self.failed += d.failed;
        self.expired += d.expired;
        self.cancelled += d.cancelled;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageRun {
    pub index: usize,
    pub name: Arc<str>,
    pub status: StageStatus,
    pub status_message: String,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// When a waiting approval expires.
    pub deadline_at: Option<Millis>,
    pub decided_by: String,
    pub decision_comment: String,
    /// Set when the stage was carried over by a resume: the execution where
    /// it really ran (its workflows are read from there).
    pub carried_from: Option<String>,
    pub counts: WorkflowCounts,
    /// The first workflow of the stage that failed or expired, and its
    /// message (short): why the stage ended, without copying every message.
    pub first_failure: Option<FailureNote>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureNote {
    pub workflow: String,
    pub message: String,
}

impl StageRun {
    /// A stage that has not started.
    pub fn pending(index: usize, name: &Arc<str>) -> StageRun {
        StageRun {
            index,
            name: name.clone(),
            status: StageStatus::Pending,
            status_message: String::new(),
            started_at: None,
            ended_at: None,
            deadline_at: None,
            decided_by: String::new(),
            decision_comment: String::new(),
            carried_from: None,
            counts: WorkflowCounts::default(),
            first_failure: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeOrigin {
    pub execution_id: String,
    pub stage_index: usize,
    pub stage_name: String,
    /// Why the caller resumed, as given (may be empty).
    pub reason: String,
}

/// One workflow of a started stage, and the task that carries it to workers.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRun {
    pub task_id: String,
    pub execution_id: String,
    pub stage_index: usize,
    pub workflow_index: usize,
    pub name: String,
    pub task_queue: String,
    /// Copied from the pinned definition so a claim needs no other read.
    pub command: String,
    pub timeout_ms: i64,
    pub status: WorkflowStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    pub exit_code: Option<i32>,
    pub output: String,
    pub status_message: String,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub lease_token: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    pub deadline_at: Option<Millis>,
    /// Characters of output the current attempt produced (`output` keeps the
    /// last of them).
    pub output_chars: i64,
}

/// An execution with what its rules need to decide the next step: the row,
/// the pinned definition and every stage (workflows are changed set-wise and
/// counted on their stage, never loaded for a decision).
#[derive(Debug, Clone)]
pub struct ExecutionState {
    pub execution: Execution,
    /// The pinned version, shared: it never changes once written.
    pub definition: Arc<Definition>,
    pub stages: Vec<StageRun>,
}

impl ExecutionState {
    /// The approval stage waiting for a decision, if any.
    pub fn waiting_approval(&self) -> Option<&StageRun> {
        self.stages.iter().find(|s| s.status == StageStatus::WaitingApproval)
    }

    /// The state of an execution whose stage `current` is running, rebuilt
    /// from that stage's row alone: stages run strictly in order, so every
    /// stage before it has passed and every stage after it is pending. A
    /// report or timer needs nothing else, so its cost does not grow with the
    /// pipeline's length. The stages before `current` stand in as passed
    /// and are never written (nothing changes a passed stage).
    pub fn around_running_stage(execution: Execution, definition: Arc<Definition>, current: StageRun) -> Self {
        let stages = definition
            .stages
            .iter()
            .enumerate()
            .map(|(index, s)| match index.cmp(&current.index) {
                std::cmp::Ordering::Less => {
                    StageRun { status: StageStatus::Succeeded, ..StageRun::pending(index, &s.name) }
                }
                std::cmp::Ordering::Equal => current.clone(),
                std::cmp::Ordering::Greater => StageRun::pending(index, &s.name),
            })
            .collect();
        ExecutionState { execution, definition, stages }
    }
}

/// An execution with everything needed to show it: its state and the
/// workflows of every started stage (carried-over ones read from where they
/// ran). It derefs to its state, so the rules read a shown execution
/// without copying it (GetExecution asks them which controls apply).
#[derive(Debug, Clone)]
pub struct ExecutionDetail {
    pub state: ExecutionState,
    pub workflows: Vec<WorkflowRun>,
}

impl std::ops::Deref for ExecutionDetail {
    type Target = ExecutionState;

    fn deref(&self) -> &ExecutionState {
        &self.state
    }
}

impl std::ops::DerefMut for ExecutionDetail {
    fn deref_mut(&mut self) -> &mut ExecutionState {
        &mut self.state
    }
}

impl ExecutionDetail {
    /// Each stage's workflows, by stage index, gathered in one pass: a view
    /// of a 200 × 100 execution must not scan its 20,000 workflows once per
    /// stage (4 million comparisons per GetExecution or watch message).
    pub fn workflows_by_stage(&self) -> Vec<Vec<&WorkflowRun>> {
        let mut by_stage = vec![Vec::new(); self.stages.len()];
        for w in &self.workflows {
            if let Some(stage) = by_stage.get_mut(w.stage_index) {
                stage.push(w);
            }
        }
        by_stage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_each_kind_of_end() {
        let mut c = WorkflowCounts::queued(5);
        for s in [WorkflowStatus::Succeeded, WorkflowStatus::Failed, WorkflowStatus::Expired, WorkflowStatus::Cancelled]
        {
            c.apply(WorkflowCounts::delta_of_end(s));
        }
        assert_eq!(c, WorkflowCounts { total: 5, open: 1, failed: 1, expired: 1, cancelled: 1 });
        assert_eq!(c.succeeded(), 1);
        assert_eq!(WorkflowCounts::delta_of_end(WorkflowStatus::Running), CountsDelta::default());
    }
}
