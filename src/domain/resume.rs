//! Resume rules: which executions and stages can be resumed, the plan of a
//! resume (carry over every stage before the chosen one, run the rest), and
//! the new execution it creates — built from the plan, so the two agree.

use super::{
    Reason, Refusal, Violation,
    execution::{Execution, ExecutionState, Millis, ResumeOrigin, StageRun},
    pipeline::StageKind,
    status::{ExecutionStatus, StageStatus},
};

/// How a caller names the stage to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageRef {
    Name(String),
    Index(i64),
}

/// Optional bounds on a chain; both off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainLimits {
    pub max_attempts: Option<u32>,
    pub max_age_ms: Option<i64>,
}

/// Why a stage is not a valid resume point; the same words name the refusal
/// of a Resume in that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    NeverReached,
    ExecutionNotResumable,
    NotLatest,
    ChainLimit,
}

impl Block {
    /// The reason shared by resume points and Resume's refusals.
    pub fn reason(self) -> Reason {
        match self {
            Block::NeverReached => Reason::StageNotReached,
            Block::ExecutionNotResumable => Reason::ExecutionNotResumable,
            Block::NotLatest => Reason::NotLatestInChain,
            Block::ChainLimit => Reason::ChainLimitReached,
        }
    }
}

/// What a resume does with one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// Carried over with this result from this execution.
    CarryOver { status: StageStatus, from_execution: String },
    /// Run again with every one of these workflows.
    Run { workflows: Vec<String> },
}

/// A stage was reached if it ever started (ran, failed, was skipped, waited
/// for approval, or was cut short by an abort).
pub fn reached(status: StageStatus) -> bool {
    !matches!(status, StageStatus::Pending | StageStatus::NotRun)
}

/// The last stage the execution reached.
pub fn furthest_reached(stages: &[StageRun]) -> Option<&StageRun> {
    stages.iter().rev().find(|s| reached(s.status))
}

/// The stage where a run stopped between stages goes on: the first one after
/// the furthest reached, if every stage before it ended well (succeeded,
/// approved or skipped). None when a stage before it did not, or every
/// stage was reached.
pub fn continuation(stages: &[StageRun]) -> Option<usize> {
    let next = furthest_reached(stages).map_or(0, |s| s.index + 1);
    (next < stages.len() && stages[..next].iter().all(|s| s.status.is_passed())).then_some(next)
}

/// Whether stage `index` can be resumed from, given the execution allows resume:
/// it was reached, or it is where a run stopped between stages goes on.
pub fn is_resume_point(stages: &[StageRun], index: usize) -> bool {
    reached(stages[index].status) || continuation(stages) == Some(index)
}

/// Whether the execution as a whole can be resumed now.
pub fn check_execution(e: &Execution, limits: ChainLimits, now: Millis) -> Result<(), (Block, Refusal)> {
    let status = e.status;
    let refuse = |block: Block, message: String| {
        let refusal = Refusal::new(block.reason(), message)
            .with("execution_id", &e.id)
            .with("status", status)
            .with("attempt", e.attempt);
        Err((block, refusal))
    };
    if !matches!(
        status,
        ExecutionStatus::Failed | ExecutionStatus::Aborted | ExecutionStatus::Expired | ExecutionStatus::Rejected
    ) {
        let advice = match status {
            ExecutionStatus::Paused => "a paused execution is continued with Continue, not resumed",
            ExecutionStatus::Succeeded => "it succeeded; start a new execution to deploy again",
            _ => "it is still running; wait for it to end, or Abort it first and then resume",
        };
        return refuse(
            Block::ExecutionNotResumable,
            format!("execution {} is {status} and cannot be resumed: {advice}", e.id),
        );
    }
    if let Some(latest) = &e.resumed_by {
        return refuse(
            Block::NotLatest,
            format!(
                "execution {} was already resumed by {latest}; only the latest execution of a chain can be resumed",
                e.id
            ),
        )
        .map_err(|(b, r)| (b, r.with("latest_execution_id", latest)));
    }
    if let Some(max) = limits.max_attempts
        && e.attempt as i64 >= max as i64
    {
        return refuse(
            Block::ChainLimit,
            format!("the chain has reached its limit of {max} attempts; start a new execution instead"),
        )
        .map_err(|(b, r)| (b, r.with("max_attempts", max)));
    }
    if let Some(max_age) = limits.max_age_ms
        && now - e.chain_created_at > max_age
    {
        return refuse(
            Block::ChainLimit,
            format!(
                "the chain is older than its limit of {} s since its first attempt; start a new execution instead",
                max_age / 1000
            ),
        )
        .map_err(|(b, r)| (b, r.with("max_age_seconds", max_age / 1000)));
    }
    Ok(())
}

/// Words on how far the execution got, for messages.
fn furthest_words(stages: &[StageRun]) -> String {
    match furthest_reached(stages) {
        Some(s) => format!("the furthest stage reached is {:?} (index {})", s.name, s.index),
        None => "it reached no stage".to_owned(),
    }
}

/// Why stage `index` is not a resume point, in words.
pub fn never_reached_message(d: &ExecutionState, index: usize) -> String {
    let stage = &d.stages[index];
    let mut message = format!(
        "execution {} never reached stage {:?}; {}; resume from that stage or an earlier one",
        d.execution.id,
        stage.name,
        furthest_words(&d.stages)
    );
    if let Some(next) = continuation(&d.stages) {
        message.push_str(&format!(", or from {:?} where it stopped", d.stages[next].name));
    }
    message
}

/// Finds the stage to resume from: it must exist and be a resume point.
pub fn resolve_stage(d: &ExecutionState, wanted: &StageRef) -> Result<usize, ResolveError> {
    let index = match wanted {
        StageRef::Name(name) => d.stages.iter().position(|s| *s.name == **name).ok_or_else(|| {
            ResolveError::Invalid(Violation::new(
                "stage_name",
                format!("the pipeline has no stage {}; {}", super::quote(name), furthest_words(&d.stages)),
            ))
        })?,
        StageRef::Index(i) => usize::try_from(*i).ok().filter(|i| *i < d.stages.len()).ok_or_else(|| {
            ResolveError::Invalid(Violation::new(
                "stage_index",
                format!("stage index {i} is out of range 0..{}; {}", d.stages.len(), furthest_words(&d.stages)),
            ))
        })?,
    };
    if !is_resume_point(&d.stages, index) {
        let refusal = Refusal::new(Block::NeverReached.reason(), never_reached_message(d, index))
            .with("execution_id", &d.execution.id)
            .with("stage_name", &d.stages[index].name)
            .with("stage_index", index)
            .with("attempt", d.execution.attempt);
        return Err(ResolveError::Refused(refusal));
    }
    Ok(index)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    Invalid(Violation),
    Refused(Refusal),
}

/// The plan of resuming `d` from stage `from`.
pub fn plan(d: &ExecutionState, from: usize) -> Vec<Planned> {
    d.stages
        .iter()
        .zip(&d.definition.stages)
        .map(|(run, def)| {
            if run.index < from {
                Planned::CarryOver {
                    status: run.status,
                    from_execution: run.carried_from.clone().unwrap_or_else(|| d.execution.id.clone()),
                }
            } else {
                Planned::Run {
                    workflows: match &def.kind {
                        StageKind::Workflows(ws) => ws.iter().map(|w| w.name.clone()).collect(),
                        StageKind::Approval { .. } => Vec::new(),
                    },
                }
            }
        })
        .collect()
}

/// Stages an abort cut short whose side effects were not undone: workflow
/// stages that were running (an approval that was waiting deployed nothing).
pub fn not_rolled_back(d: &ExecutionState) -> Vec<String> {
    if d.execution.status != ExecutionStatus::Aborted {
        return Vec::new();
    }
    d.stages
        .iter()
        .zip(&d.definition.stages)
        .filter(|(s, def)| s.status == StageStatus::Aborted && !def.is_approval())
        .map(|(s, _)| s.name.to_string())
        .collect()
}

/// Who asks for a resume and how it is identified.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: String,
    pub request_id: String,
    pub actor: String,
    pub reason: String,
    pub now: Millis,
}

/// The new execution of the chain, QUEUED, with the stages before `from`
/// carried over exactly as the plan says and the rest pending; advancing it
/// starts stage `from`.
pub fn successor(old: &ExecutionState, from: usize, new: NewAttempt) -> ExecutionState {
    let mut execution = old.execution.clone();
    execution.id = new.id;
    execution.status = ExecutionStatus::Queued;
    execution.status_message = String::new();
    execution.request_id = new.request_id;
    execution.triggered_by = new.actor;
    execution.attempt = old.execution.attempt + 1;
    execution.resumed_from = Some(ResumeOrigin {
        execution_id: old.execution.id.clone(),
        stage_index: from,
        stage_name: old.stages[from].name.to_string(),
        reason: new.reason,
    });
    execution.resumed_by = None;
    execution.end_stage = None;
    execution.created_at = new.now;
    execution.started_at = None;
    execution.ended_at = None;
    let stages = plan(old, from)
        .into_iter()
        .zip(&old.stages)
        .map(|(planned, s)| match planned {
            Planned::CarryOver { from_execution, .. } => StageRun { carried_from: Some(from_execution), ..s.clone() },
            Planned::Run { .. } => StageRun::pending(s.index, &s.name),
        })
        .collect();
    ExecutionState { execution, definition: old.definition.clone(), stages }
}

/// For each stage, why it is not a valid resume point (None: it is one).
/// What blocks the whole execution comes first, as Resume checks it first:
/// a point names the very reason Resume from that stage is refused with.
pub fn resume_points(d: &ExecutionState, execution_block: Option<Block>) -> Vec<Option<Block>> {
    (0..d.stages.len())
        .map(|i| execution_block.or_else(|| (!is_resume_point(&d.stages, i)).then_some(Block::NeverReached)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        execution::WorkflowCounts,
        pipeline::tests::stage,
        progress::{self, Changes, tests::counter},
        status::WorkflowStatus,
    };
    use proptest::prelude::*;

    fn detail(status: ExecutionStatus, stages: &[StageStatus]) -> ExecutionState {
        let mut s = progress::tests::state((0..stages.len()).map(|i| stage(&format!("s{i}"), &["a", "b"])).collect());
        s.execution.status = status;
        s.execution.started_at = Some(0);
        for (run, status) in s.stages.iter_mut().zip(stages) {
            run.status = *status;
        }
        s
    }

    /// Every execution status × Resume.
    #[test]
    fn resume_by_status_table() {
        use ExecutionStatus as E;
        let table = [
            (E::Queued, Some(Reason::ExecutionNotResumable)),
            (E::Running, Some(Reason::ExecutionNotResumable)),
            (E::Paused, Some(Reason::ExecutionNotResumable)),
            (E::Succeeded, Some(Reason::ExecutionNotResumable)),
            (E::Failed, None),
            (E::Aborted, None),
            (E::Expired, None),
            (E::Rejected, None),
        ];
        assert_eq!(table.len(), E::ALL.len());
        for (status, want) in table {
            let d = detail(status, &[StageStatus::Failed]);
            let got = check_execution(&d.execution, ChainLimits::default(), 0).err().map(|(_, r)| r.reason);
            assert_eq!(got, want, "{status}");
        }
        let paused = check_execution(&detail(E::Paused, &[]).execution, ChainLimits::default(), 0).unwrap_err().1;
        assert!(paused.message.contains("Continue"), "{}", paused.message);
    }

    #[test]
    fn only_the_latest_of_a_chain_and_within_limits() {
        let mut d = detail(ExecutionStatus::Failed, &[StageStatus::Failed]);
        d.execution.resumed_by = Some("e2".into());
        assert_eq!(check_execution(&d.execution, ChainLimits::default(), 0).unwrap_err().0, Block::NotLatest);
        d.execution.resumed_by = None;
        d.execution.attempt = 3;
        let limits = ChainLimits { max_attempts: Some(3), max_age_ms: None };
        assert_eq!(check_execution(&d.execution, limits, 0).unwrap_err().0, Block::ChainLimit);
        let limits = ChainLimits { max_attempts: None, max_age_ms: Some(1000) };
        assert_eq!(check_execution(&d.execution, limits, 1001).unwrap_err().0, Block::ChainLimit);
        assert!(check_execution(&d.execution, limits, 1000).is_ok());
    }

    #[test]
    fn resolve_stage_accepts_reached_stages_only() {
        use StageStatus as S;
        let d = detail(ExecutionStatus::Failed, &[S::Succeeded, S::Skipped, S::Failed, S::NotRun]);
        assert_eq!(resolve_stage(&d, &StageRef::Name("s1".into())), Ok(1));
        assert_eq!(resolve_stage(&d, &StageRef::Index(2)), Ok(2));
        let never = resolve_stage(&d, &StageRef::Index(3)).unwrap_err();
        assert!(matches!(&never, ResolveError::Refused(r) if r.message.contains("\"s2\"")), "{never:?}");
        assert!(
            matches!(resolve_stage(&d, &StageRef::Index(4)), Err(ResolveError::Invalid(v)) if v.field == "stage_index")
        );
        assert!(matches!(resolve_stage(&d, &StageRef::Index(-1)), Err(ResolveError::Invalid(_))));
        assert!(
            matches!(resolve_stage(&d, &StageRef::Name("nope".into())), Err(ResolveError::Invalid(v)) if v.field == "stage_name")
        );
    }

    #[test]
    fn a_run_stopped_between_stages_goes_on_from_the_next_one() {
        use StageStatus as S;
        let d = detail(ExecutionStatus::Aborted, &[S::Succeeded, S::NotRun, S::NotRun]);
        assert_eq!(continuation(&d.stages), Some(1));
        assert_eq!(resolve_stage(&d, &StageRef::Index(1)), Ok(1));
        assert!(matches!(resolve_stage(&d, &StageRef::Index(2)), Err(ResolveError::Refused(_))));
        assert_eq!(resume_points(&d, None), vec![None, None, Some(Block::NeverReached)]);
        // Aborted before anything ran: the first stage.
        let d = detail(ExecutionStatus::Aborted, &[S::NotRun, S::NotRun]);
        assert_eq!(continuation(&d.stages), Some(0));
        // A failed stage blocks going on past it.
        let d = detail(ExecutionStatus::Failed, &[S::Succeeded, S::Failed, S::NotRun]);
        assert_eq!(continuation(&d.stages), None);
        let message = never_reached_message(&d, 2);
        assert!(message.contains("\"s1\"") && !message.contains("where it stopped"), "{message}");
    }

    #[test]
    fn plan_carries_over_before_and_runs_whole_stages_from_the_chosen_one() {
        use StageStatus as S;
        let mut d = detail(ExecutionStatus::Failed, &[S::Succeeded, S::Succeeded, S::Failed, S::NotRun]);
        d.stages[0].carried_from = Some("e0".into());
        let p = plan(&d, 2);
        assert_eq!(p[0], Planned::CarryOver { status: S::Succeeded, from_execution: "e0".into() });
        assert_eq!(p[1], Planned::CarryOver { status: S::Succeeded, from_execution: "e1".into() });
        assert_eq!(p[2], Planned::Run { workflows: vec!["a".into(), "b".into()] });
        assert_eq!(p[3], Planned::Run { workflows: vec!["a".into(), "b".into()] });
    }

    #[test]
    fn only_running_workflow_stages_were_not_rolled_back() {
        use StageStatus as S;
        let mut d = detail(ExecutionStatus::Aborted, &[S::Succeeded, S::Aborted]);
        assert_eq!(not_rolled_back(&d), vec!["s1".to_string()]);
        d.execution.status = ExecutionStatus::Failed;
        assert!(not_rolled_back(&d).is_empty());
    }

    fn attempt() -> NewAttempt {
        NewAttempt { id: "e2".into(), request_id: "r2".into(), actor: "ann".into(), reason: "retry".into(), now: 50 }
    }

    fn resumable_status() -> impl Strategy<Value = ExecutionStatus> {
        prop::sample::select(vec![
            ExecutionStatus::Failed,
            ExecutionStatus::Aborted,
            ExecutionStatus::Expired,
            ExecutionStatus::Rejected,
        ])
    }

    /// Stage statuses as an ended execution leaves them: some passed, at most
    /// one that ended it, the rest never run.
    fn ended_stages() -> impl Strategy<Value = Vec<StageStatus>> {
        use StageStatus as S;
        (1usize..8, 0usize..8, prop::sample::select(vec![S::Failed, S::Aborted, S::Expired, S::Rejected, S::NotRun]))
            .prop_flat_map(|(len, passed, end)| {
                let passed = passed.min(len);
                prop::collection::vec(prop::sample::select(vec![S::Succeeded, S::Skipped]), passed).prop_map(
                    move |mut v| {
                        if v.len() < len {
                            v.push(end);
                        }
                        while v.len() < len {
                            v.push(S::NotRun);
                        }
                        v
                    },
                )
            })
    }

    proptest! {
        /// For every valid resume point: carried stages equal the originals
        /// with their source execution; every workflow of the chosen stage is
        /// queued; later stages are pending; plan and successor agree.
        #[test]
        fn successor_follows_the_plan(stages in ended_stages(), status in resumable_status(), pick in 0usize..8) {
            let mut old = detail(status, &stages);
            for s in &mut old.stages {
                if reached(s.status) {
                    s.counts = WorkflowCounts { total: 2, ..Default::default() };
                }
            }
            let points: Vec<usize> = (0..old.stages.len()).filter(|i| is_resume_point(&old.stages, *i)).collect();
            prop_assume!(!points.is_empty());
            let from = points[pick % points.len()];
            let planned = plan(&old, from);
            let mut new = successor(&old, from, attempt());
            for (i, p) in planned.iter().enumerate() {
                match p {
                    Planned::CarryOver { status, from_execution } => {
                        prop_assert_eq!(&new.stages[i], &StageRun { carried_from: Some(from_execution.clone()), ..old.stages[i].clone() });
                        prop_assert_eq!(new.stages[i].status, *status);
                    }
                    Planned::Run { .. } => prop_assert_eq!(&new.stages[i], &StageRun::pending(i, &old.stages[i].name)),
                }
            }
            prop_assert_eq!(new.execution.attempt, old.execution.attempt + 1);
            prop_assert_eq!(&new.execution.chain_id, &old.execution.chain_id);
            prop_assert_eq!(&new.execution.variables, &old.execution.variables);
            let mut ch = Changes::default();
            progress::advance(&mut new, 60, &mut counter(), &mut ch);
            prop_assert_eq!(new.stages[from].status, StageStatus::Running);
            prop_assert_eq!(ch.queued.len(), 2);
            prop_assert!(ch.queued.iter().all(|w| w.stage_index == from && w.status == WorkflowStatus::Queued));
            prop_assert!(new.stages[from + 1..].iter().all(|s| s.status == StageStatus::Pending));
        }
    }
}
