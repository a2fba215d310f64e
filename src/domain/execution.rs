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
    /// Set on a resume: the execution it resumed and the stage it resumed from.
    pub resumed_from: Option<ResumeOrigin>,
    /// The execution that resumed this one; None while this is the latest of its chain.
    pub resumed_by: Option<String>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageRun {
    pub index: usize,
    pub name: String,
    pub status: StageStatus,
    pub status_message: String,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// When a waiting approval expires.
    pub deadline_at: Option<Millis>,
    pub decided_by: String,
    pub decision_comment: String,
    /// Set when the stage was carried over by a resume: where it really ran.
    pub carried_from: Option<String>,
}

impl StageRun {
    /// A stage that has not started.
    pub fn pending(index: usize, name: &str) -> StageRun {
        StageRun {
            index,
            name: name.to_owned(),
            status: StageStatus::Pending,
            status_message: String::new(),
            started_at: None,
            ended_at: None,
            deadline_at: None,
            decided_by: String::new(),
            decision_comment: String::new(),
            carried_from: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeOrigin {
    pub execution_id: String,
    pub stage_index: usize,
    pub stage_name: String,
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
}

/// An execution with everything needed to show it or decide its next step.
#[derive(Debug, Clone)]
pub struct ExecutionDetail {
    pub execution: Execution,
    /// The pinned version, shared: it never changes once written.
    pub definition: Arc<Definition>,
    pub stages: Vec<StageRun>,
    pub workflows: Vec<WorkflowRun>,
}

impl ExecutionDetail {
    pub fn workflows_of(&self, stage_index: usize) -> impl Iterator<Item = &WorkflowRun> {
        self.workflows.iter().filter(move |w| w.stage_index == stage_index)
    }

    /// The approval stage waiting for a decision, if any.
    pub fn waiting_approval(&self) -> Option<&StageRun> {
        self.stages.iter().find(|s| s.status == StageStatus::WaitingApproval)
    }
}
