//! How an execution moves forward: starting, skipping and ending stages,
//! finishing the execution. Pure: applied to an [`ExecutionState`] in memory,
//! it records what the store must do besides saving the changed rows in
//! [`Changes`] (workflows to queue, open workflows to cancel set-wise).

use super::{
    execution::{ExecutionState, Millis, StageMark, WorkflowCounts, WorkflowRun},
    machine,
    pipeline::{FailurePolicy, StageKind},
    status::{ExecutionStatus, StageStatus, WorkflowStatus},
};

/// Side effects of a decision beyond the execution and stage rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// Workflows of a stage that just started, to insert as queued tasks.
    pub queued: Vec<WorkflowRun>,
    /// Open (queued or running) workflows to cancel; their stage's counts are
    /// already adjusted in the state. Workers learn of it on a heartbeat.
    pub cancel_open: Option<CancelOpen>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOpen {
    /// Only this stage's open workflows; None: every open workflow. Only the
    /// running stage has open workflows, so both reach the same rows.
    pub stage: Option<usize>,
    pub message: String,
}

/// Where new task ids come from (time-ordered ids in production).
pub type Ids<'a> = &'a mut dyn FnMut() -> String;

/// The stages a decision on a running stage's report (`settle_stage` and
/// what it leads to) can have changed: the reported one through the one
/// the execution goes on to (skipped ones between), or, once the execution
/// ended, every one from the reported on (pending ones become not run).
/// Stages outside are as they were: a long execution's report need not
/// compare its thousands of pending stages.
pub fn touched_by_report(after: &ExecutionState, reported: usize) -> std::ops::Range<usize> {
    let len = after.stages.len();
    if after.execution.status.is_final() {
        return reported..len;
    }
    let next = after.stages[reported..].iter().position(|s| s.status.is_active() || s.status == StageStatus::Pending);
    reported..next.map_or(len, |p| reported + p + 1)
}

/// Skips, starts the next stage, or finishes, as the machine's plan says.
pub fn advance(s: &mut ExecutionState, now: Millis, ids: Ids<'_>, ch: &mut Changes) {
    let pairs: Vec<_> = s.stages.iter().map(|st| st.status).zip(&s.definition.stages).collect();
    let plan = machine::plan(s.execution.status, &pairs, &s.execution.variables);
    if (plan.start.is_some() || !plan.skip.is_empty()) && s.execution.status == ExecutionStatus::Queued {
        s.execution.status = ExecutionStatus::Running;
        s.execution.started_at = Some(now);
    }
    for (index, reason) in plan.skip {
        let stage = &mut s.stages[index];
        stage.status = StageStatus::Skipped;
        stage.status_message = reason;
        stage.started_at = Some(now);
        stage.ended_at = Some(now);
    }
    if let Some(index) = plan.start {
        start_stage(s, index, now, ids, ch);
    }
    if let Some((status, message, stage)) = plan.finish {
        finish(s, status, message, stage, now, ch);
    }
}

fn start_stage(s: &mut ExecutionState, index: usize, now: Millis, ids: Ids<'_>, ch: &mut Changes) {
    let definition = s.definition.clone();
    let stage_def = &definition.stages[index];
    let stage = &mut s.stages[index];
    stage.started_at = Some(now);
    match &stage_def.kind {
        StageKind::Approval { timeout_ms, .. } => {
            stage.status = StageStatus::WaitingApproval;
            stage.status_message = "waiting for Approve or Reject".into();
            stage.deadline_at = Some(now.saturating_add(*timeout_ms as Millis));
        }
        StageKind::Workflows(workflows) => {
            stage.status = StageStatus::Running;
            stage.status_message.clear();
            stage.counts = WorkflowCounts::queued(workflows.len() as u32);
            for (workflow_index, w) in workflows.iter().enumerate() {
                ch.queued.push(WorkflowRun {
                    task_id: ids(),
                    execution_id: s.execution.id.clone(),
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
                    output_chars: 0,
                });
            }
        }
    }
}

/// Ends a running workflow stage once its counts say so: every workflow
/// ended, or (fail-fast) one failed, which cancels the open siblings. A bad
/// outcome finishes the execution, a good one lets it advance.
pub fn settle_stage(s: &mut ExecutionState, index: usize, now: Millis, ids: Ids<'_>, ch: &mut Changes) {
    let fail_fast = s.definition.stages[index].failure_policy == FailurePolicy::FailFast;
    let stage = &mut s.stages[index];
    if stage.status != StageStatus::Running {
        return;
    }
    if stage.counts.open > 0 {
        if !(fail_fast && stage.counts.failed > 0) {
            return;
        }
        let who = stage.first_failure.as_ref().map_or_else(String::new, |f| format!(" {:?}", f.workflow));
        cancel_stage_workflows(
            stage,
            format!("cancelled: workflow{who} of this stage failed and the stage fails fast"),
            ch,
        );
    }
    let c = stage.counts;
    let outcome = if c.failed > 0 {
        StageStatus::Failed
    } else if c.expired > 0 {
        StageStatus::Expired
    } else if c.cancelled > 0 {
        StageStatus::Aborted
    } else {
        StageStatus::Succeeded
    };
    stage.status = outcome;
    stage.ended_at = Some(now);
    stage.status_message = stage_message(stage.counts, stage.first_failure.as_ref());
    match machine::execution_outcome(outcome) {
        Some(status) => {
            let message = format!("stage {:?} {outcome}: {}", stage.name, stage.status_message);
            finish(s, status, message, Some(index), now, ch);
        }
        None => advance(s, now, ids, ch),
    }
}

/// Why a stage of workflows ended, in a line: the counts and the first failure.
fn stage_message(c: WorkflowCounts, first: Option<&super::execution::FailureNote>) -> String {
    if c.failed + c.expired + c.cancelled == 0 {
        return format!("{} of {} workflows succeeded", c.succeeded(), c.total);
    }
    let mut parts = Vec::new();
    for (n, what) in [(c.failed, "failed"), (c.expired, "expired"), (c.cancelled, "were cancelled")] {
        if n > 0 {
            parts.push(format!("{n} of {} {what}", c.total));
        }
    }
    let mut line = parts.join(", ");
    if let Some(f) = first {
        line.push_str(&format!("; first: workflow {:?}", f.workflow));
        if !f.message.is_empty() {
            line.push_str(&format!(": {}", f.message));
        }
    }
    line
}

/// A workflow of stage `index` ran past its timeout: as that ends the stage
/// at once, the stage's other open workflows are cancelled. The expired
/// workflow's own end is already counted. The caller then settles the stage.
pub fn expire_siblings(s: &mut ExecutionState, index: usize, workflow: &str, ch: &mut Changes) {
    let stage = &mut s.stages[index];
    if stage.counts.open > 0 {
        cancel_stage_workflows(stage, format!("cancelled: workflow {workflow:?} of this stage expired"), ch);
    }
}

fn cancel_stage_workflows(stage: &mut super::execution::StageRun, message: String, ch: &mut Changes) {
    stage.counts.cancelled += stage.counts.open;
    stage.counts.open = 0;
    ch.cancel_open = Some(CancelOpen { stage: Some(stage.index), message });
}

/// Records a final status: later stages never run, nothing is left open.
pub fn finish(
    s: &mut ExecutionState,
    status: ExecutionStatus,
    message: String,
    stage: Option<usize>,
    now: Millis,
    ch: &mut Changes,
) {
    let e = &mut s.execution;
    e.status = status;
    e.status_message = message;
    e.ended_at = Some(now);
    if e.started_at.is_none() {
        e.started_at = Some(now);
    }
    e.end_stage = stage.map(|index| StageMark { index, name: s.stages[index].name.to_string() });
    let mut cancelled = false;
    for st in &mut s.stages {
        if st.status == StageStatus::Pending {
            st.status = StageStatus::NotRun;
        }
        if st.counts.open > 0 {
            st.counts.cancelled += st.counts.open;
            st.counts.open = 0;
            cancelled = true;
        }
    }
    if cancelled && ch.cancel_open.is_none() {
        ch.cancel_open = Some(CancelOpen { stage: None, message: format!("cancelled: execution {status}") });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use super::*;
    use crate::domain::{
        execution::{Execution, StageRun, WorkflowCounts},
        pipeline::{Definition, Stage, tests::stage},
    };

    pub fn state(stages: Vec<Stage>) -> ExecutionState {
        let runs = stages.iter().enumerate().map(|(i, s)| StageRun::pending(i, &s.name)).collect();
        ExecutionState {
            execution: Execution {
                id: "e1".into(),
                pipeline_id: "p".into(),
                pipeline_version: 1,
                application: "shop".into(),
                status: ExecutionStatus::Queued,
                status_message: String::new(),
                variables: BTreeMap::new(),
                artifacts: BTreeMap::new(),
                request_id: "r".into(),
                triggered_by: "me".into(),
                chain_id: "e1".into(),
                attempt: 1,
                chain_created_at: 0,
                resumed_from: None,
                resumed_by: None,
                end_stage: None,
                created_at: 0,
                started_at: None,
                ended_at: None,
                sealed_secrets: None,
            },
            definition: Arc::new(Definition { stages, ..Default::default() }),
            stages: runs,
        }
    }

    pub fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("t{n}")
        }
    }

    #[test]
    fn advance_starts_the_first_stage_with_all_its_workflows() {
        let mut s = state(vec![stage("a", &["x", "y"]), stage("b", &["z"])]);
        let mut ch = Changes::default();
        advance(&mut s, 10, &mut counter(), &mut ch);
        assert_eq!(s.execution.status, ExecutionStatus::Running);
        assert_eq!(s.stages[0].status, StageStatus::Running);
        assert_eq!(s.stages[0].counts, WorkflowCounts::queued(2));
        assert_eq!(ch.queued.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(s.stages[1].status, StageStatus::Pending);
    }

    #[test]
    fn a_stage_waits_for_every_workflow_then_the_next_one_starts() {
        let mut s = state(vec![stage("a", &["x", "y"]), stage("b", &["z"])]);
        advance(&mut s, 10, &mut counter(), &mut Changes::default());
        s.stages[0].counts.apply(WorkflowCounts::delta_of_end(WorkflowStatus::Succeeded));
        let mut ch = Changes::default();
        settle_stage(&mut s, 0, 20, &mut counter(), &mut ch);
        assert_eq!(s.stages[0].status, StageStatus::Running);
        assert!(ch.queued.is_empty());
        s.stages[0].counts.apply(WorkflowCounts::delta_of_end(WorkflowStatus::Succeeded));
        settle_stage(&mut s, 0, 30, &mut counter(), &mut ch);
        assert_eq!(s.stages[0].status, StageStatus::Succeeded);
        assert_eq!(s.stages[1].status, StageStatus::Running);
        assert_eq!(ch.queued.len(), 1);
    }

    #[test]
    fn a_failure_waits_for_siblings_unless_the_stage_fails_fast() {
        for policy in [FailurePolicy::WaitForAll, FailurePolicy::FailFast] {
            let mut a = stage("a", &["x", "y"]);
            a.failure_policy = policy;
            let mut s = state(vec![a, stage("b", &["z"])]);
            advance(&mut s, 10, &mut counter(), &mut Changes::default());
            s.stages[0].counts.apply(WorkflowCounts::delta_of_end(WorkflowStatus::Failed));
            let mut ch = Changes::default();
            settle_stage(&mut s, 0, 20, &mut counter(), &mut ch);
            if policy == FailurePolicy::WaitForAll {
                assert_eq!(s.stages[0].status, StageStatus::Running);
                assert_eq!(ch, Changes::default());
            } else {
                assert_eq!(s.stages[0].status, StageStatus::Failed);
                assert_eq!(s.execution.status, ExecutionStatus::Failed);
                assert_eq!(s.stages[0].counts.cancelled, 1);
                assert_eq!(ch.cancel_open.as_ref().and_then(|c| c.stage), Some(0));
                assert_eq!(s.execution.end_stage.as_ref().map(|m| m.index), Some(0));
                assert_eq!(s.stages[1].status, StageStatus::NotRun);
            }
        }
    }

    /// Each way a report's decision can go: the range names the stages it
    /// changed, and no stage outside it changed.
    #[test]
    fn a_report_touches_its_stage_through_the_next_active_one_or_all_once_ended() {
        use crate::domain::pipeline::Skip;
        let skipped = |name| Stage { skip: Some(Skip::Always), ..stage(name, &["s"]) };
        let fast = |name| Stage { failure_policy: FailurePolicy::FailFast, ..stage(name, &["f", "g"]) };
        /// What happens, the stages, the report's outcome, whether the
        /// execution is paused, and the stages the decision may change.
        type Case = (&'static str, Vec<Stage>, WorkflowStatus, bool, std::ops::Range<usize>);
        let cases: Vec<Case> = vec![
            (
                "sibling still open",
                vec![stage("a", &["x", "y"]), stage("b", &["z"]), stage("c", &["z"])],
                WorkflowStatus::Succeeded,
                false,
                0..1,
            ),
            (
                "next starts",
                vec![stage("a", &["x"]), stage("b", &["z"]), stage("c", &["z"])],
                WorkflowStatus::Succeeded,
                false,
                0..2,
            ),
            (
                "skips to the one after",
                vec![stage("a", &["x"]), skipped("b"), stage("c", &["z"]), stage("d", &["z"])],
                WorkflowStatus::Succeeded,
                false,
                0..3,
            ),
            (
                "paused: the next waits",
                vec![stage("a", &["x"]), stage("b", &["z"]), stage("c", &["z"])],
                WorkflowStatus::Succeeded,
                true,
                0..2,
            ),
            (
                "fails fast: ended",
                vec![fast("a"), stage("b", &["z"]), stage("c", &["z"])],
                WorkflowStatus::Failed,
                false,
                0..3,
            ),
            ("last stage: succeeded", vec![stage("a", &["x"])], WorkflowStatus::Succeeded, false, 0..1),
        ];
        for (what, stages, outcome, paused, want) in cases {
            let mut s = state(stages);
            advance(&mut s, 10, &mut counter(), &mut Changes::default());
            if paused {
                s.execution.status = ExecutionStatus::Paused;
            }
            let before = s.clone();
            s.stages[0].counts.apply(WorkflowCounts::delta_of_end(outcome));
            settle_stage(&mut s, 0, 20, &mut counter(), &mut Changes::default());
            let touched = touched_by_report(&s, 0);
            assert_eq!(touched, want, "{what}");
            assert_eq!(before.stages[touched.end..], s.stages[touched.end..], "{what}: nothing changed after");
        }
    }

    #[test]
    fn finishing_cancels_open_workflows_and_marks_pending_stages_not_run() {
        let mut s = state(vec![stage("a", &["x", "y"]), stage("b", &["z"])]);
        advance(&mut s, 10, &mut counter(), &mut Changes::default());
        let mut ch = Changes::default();
        finish(&mut s, ExecutionStatus::Aborted, "stop".into(), Some(0), 20, &mut ch);
        assert_eq!(s.stages[0].counts, WorkflowCounts { total: 2, open: 0, cancelled: 2, ..Default::default() });
        assert_eq!(ch.cancel_open.map(|c| c.stage), Some(None));
        assert_eq!(s.stages[1].status, StageStatus::NotRun);
    }

    #[test]
    fn stage_messages_name_counts_and_the_first_failure() {
        let c = WorkflowCounts { total: 4, open: 0, failed: 2, expired: 0, cancelled: 1 };
        let note = super::super::execution::FailureNote { workflow: "us".into(), message: "exit status 3".into() };
        assert_eq!(
            stage_message(c, Some(&note)),
            "2 of 4 failed, 1 of 4 were cancelled; first: workflow \"us\": exit status 3"
        );
        assert_eq!(
            stage_message(WorkflowCounts { total: 3, ..Default::default() }, None),
            "3 of 3 workflows succeeded"
        );
    }
}
