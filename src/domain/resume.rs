//! Resume rules: which executions and stages can be resumed, and the plan of
//! a resume (carry over every stage before the chosen one, run the rest).

use super::limits::quote;
use super::{
    Refusal, Violation,
    execution::{ExecutionDetail, Millis, StageRun},
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

/// Why a stage is not a valid resume point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    NeverReached,
    ExecutionNotResumable,
    NotLatest,
    ChainLimit,
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

/// Whether the execution as a whole can be resumed now.
/// `first_created_at` is when the chain's first attempt was created.
pub fn check_execution(
    d: &ExecutionDetail,
    limits: ChainLimits,
    first_created_at: Millis,
    now: Millis,
) -> Result<(), (Block, Refusal)> {
    let e = &d.execution;
    let status = e.status;
    if !matches!(
        status,
        ExecutionStatus::Failed | ExecutionStatus::Aborted | ExecutionStatus::Expired | ExecutionStatus::Rejected
    ) {
        let advice = match status {
            ExecutionStatus::Paused => "a paused execution is continued with Continue, not resumed",
            ExecutionStatus::Succeeded => "it succeeded; start a new execution to deploy again",
            _ => "it is still running; wait for it to end, or Abort it first and then resume",
        };
        return Err((
            Block::ExecutionNotResumable,
            Refusal::new(
                "EXECUTION_NOT_RESUMABLE",
                format!("execution {} is {status} and cannot be resumed: {advice}", e.id),
            ),
        ));
    }
    if let Some(latest) = &e.resumed_by {
        return Err((
            Block::NotLatest,
            Refusal::new(
                "NOT_LATEST_IN_CHAIN",
                format!(
                    "execution {} was already resumed by {latest}; only the latest execution of a chain can be resumed",
                    e.id
                ),
            ),
        ));
    }
    if let Some(max) = limits.max_attempts
        && e.attempt as i64 >= max as i64
    {
        return Err((
            Block::ChainLimit,
            Refusal::new(
                "CHAIN_LIMIT_REACHED",
                format!("the chain has reached its limit of {max} attempts; start a new execution instead"),
            ),
        ));
    }
    if let Some(max_age) = limits.max_age_ms
        && now - first_created_at > max_age
    {
        return Err((
            Block::ChainLimit,
            Refusal::new(
                "CHAIN_LIMIT_REACHED",
                format!(
                    "the chain is older than its limit of {} s since its first attempt; start a new execution instead",
                    max_age / 1000
                ),
            ),
        ));
    }
    Ok(())
}

/// Finds the stage to resume from: it must exist and have been reached.
pub fn resolve_stage(d: &ExecutionDetail, wanted: &StageRef) -> Result<usize, ResolveError> {
    let furthest = match furthest_reached(&d.stages) {
        Some(s) => format!("the furthest stage reached is {:?} (index {})", s.name, s.index),
        None => "it reached no stage".to_owned(),
    };
    let index = match wanted {
        StageRef::Name(name) => d.stages.iter().position(|s| &s.name == name).ok_or_else(|| {
            ResolveError::Invalid(Violation::new(
                "stage_name",
                format!("the pipeline has no stage {}; {furthest}", quote(name)),
            ))
        })?,
        StageRef::Index(i) => usize::try_from(*i).ok().filter(|i| *i < d.stages.len()).ok_or_else(|| {
            ResolveError::Invalid(Violation::new(
                "stage_index",
                format!("stage index {i} is out of range 0..{}; {furthest}", d.stages.len()),
            ))
        })?,
    };
    let stage = &d.stages[index];
    if !reached(stage.status) {
        return Err(ResolveError::Refused(Refusal::new(
            "STAGE_NOT_REACHED",
            format!(
                "execution {} never reached stage {:?}; {furthest}; resume from that stage or an earlier one",
                d.execution.id, stage.name
            ),
        )));
    }
    Ok(index)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    Invalid(Violation),
    Refused(Refusal),
}

/// The plan of resuming `d` from stage `from`.
pub fn plan(d: &ExecutionDetail, from: usize) -> Vec<Planned> {
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

/// For each stage, why it is not a valid resume point (None: it is one).
pub fn resume_points(d: &ExecutionDetail, execution_block: Option<Block>) -> Vec<Option<Block>> {
    d.stages.iter().map(|s| if !reached(s.status) { Some(Block::NeverReached) } else { execution_block }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        execution::Execution,
        pipeline::{Definition, tests::stage},
    };
    use std::collections::BTreeMap;

    fn detail(status: ExecutionStatus, stages: &[StageStatus]) -> ExecutionDetail {
        ExecutionDetail {
            execution: Execution {
                id: "e1".into(),
                pipeline_id: "p".into(),
                pipeline_version: 1,
                application: "shop".into(),
                status,
                status_message: String::new(),
                variables: BTreeMap::new(),
                artifacts: BTreeMap::new(),
                request_id: "r".into(),
                triggered_by: "me".into(),
                chain_id: "e1".into(),
                attempt: 1,
                resumed_from: None,
                resumed_by: None,
                created_at: 0,
                started_at: Some(0),
                ended_at: None,
            },
            definition: std::sync::Arc::new(Definition {
                stages: (0..stages.len()).map(|i| stage(&format!("s{i}"), &["a", "b"])).collect(),
                ..Default::default()
            }),
            stages: stages
                .iter()
                .enumerate()
                .map(|(index, status)| StageRun { status: *status, ..StageRun::pending(index, &format!("s{index}")) })
                .collect(),
            workflows: Vec::new(),
        }
    }

    /// Every execution status × Resume.
    #[test]
    fn resume_by_status_table() {
        use ExecutionStatus as E;
        let table = [
            (E::Queued, Some("EXECUTION_NOT_RESUMABLE")),
            (E::Running, Some("EXECUTION_NOT_RESUMABLE")),
            (E::Paused, Some("EXECUTION_NOT_RESUMABLE")),
            (E::Succeeded, Some("EXECUTION_NOT_RESUMABLE")),
            (E::Failed, None),
            (E::Aborted, None),
            (E::Expired, None),
            (E::Rejected, None),
        ];
        assert_eq!(table.len(), E::ALL.len());
        for (status, want) in table {
            let d = detail(status, &[StageStatus::Failed]);
            let got = check_execution(&d, ChainLimits::default(), 0, 0).err().map(|(_, r)| r.reason);
            assert_eq!(got, want, "{status}");
        }
        let paused = check_execution(&detail(E::Paused, &[]), ChainLimits::default(), 0, 0).unwrap_err().1;
        assert!(paused.message.contains("Continue"), "{}", paused.message);
    }

    #[test]
    fn only_the_latest_of_a_chain_and_within_limits() {
        let mut d = detail(ExecutionStatus::Failed, &[StageStatus::Failed]);
        d.execution.resumed_by = Some("e2".into());
        assert_eq!(check_execution(&d, ChainLimits::default(), 0, 0).unwrap_err().0, Block::NotLatest);
        d.execution.resumed_by = None;
        d.execution.attempt = 3;
        let limits = ChainLimits { max_attempts: Some(3), max_age_ms: None };
        assert_eq!(check_execution(&d, limits, 0, 0).unwrap_err().0, Block::ChainLimit);
        let limits = ChainLimits { max_attempts: None, max_age_ms: Some(1000) };
        assert_eq!(check_execution(&d, limits, 0, 1001).unwrap_err().0, Block::ChainLimit);
        assert!(check_execution(&d, limits, 0, 1000).is_ok());
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
    fn resume_points_mark_unreached_stages() {
        use StageStatus as S;
        let d = detail(ExecutionStatus::Failed, &[S::Succeeded, S::Failed, S::NotRun]);
        assert_eq!(resume_points(&d, None), vec![None, None, Some(Block::NeverReached)]);
        assert_eq!(
            resume_points(&d, Some(Block::NotLatest)),
            vec![Some(Block::NotLatest), Some(Block::NotLatest), Some(Block::NeverReached)]
        );
    }
}
