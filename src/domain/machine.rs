//! The execution state machine: which caller commands each state allows, how
//! a stage's workflows decide the stage, and what runs next.

use std::collections::BTreeMap;

use super::{
    Reason, Refusal, condition,
    pipeline::{Skip, Stage},
    status::{ExecutionStatus as E, StageStatus as S, WorkflowStatus as W},
};

/// What a caller can ask of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Abort,
    Pause,
    Continue,
    Approve,
    Reject,
}

/// The effect of an allowed command on the execution's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The status becomes this.
    To(E),
    /// Already in the asked-for state: nothing to write (safe retries).
    Unchanged,
    /// The status stays, the command acts on a stage.
    OnStage,
}

/// Decides whether `command` is allowed in `status`; a refusal names the
/// blocking state and what to do instead.
pub fn check_command(status: E, command: Command) -> Result<Effect, Refusal> {
    use Command::*;
    match (status, command) {
        (s, _) if s.is_final() => Err(Refusal::new(
            Reason::ExecutionFinished,
            format!(
                "execution is {s} and can no longer be changed{}",
                if matches!(s, E::Succeeded) { "" } else { "; resume it to run again from a stage it reached" }
            ),
        )),
        (E::Queued | E::Running, Abort) | (E::Paused, Abort) => Ok(Effect::To(E::Aborted)),
        (E::Queued | E::Running, Pause) => Ok(Effect::To(E::Paused)),
        (E::Paused, Pause) => Ok(Effect::Unchanged),
        (E::Paused, Continue) => Ok(Effect::To(E::Running)),
        (E::Queued | E::Running, Continue) => Ok(Effect::Unchanged),
        (E::Queued | E::Running | E::Paused, Approve | Reject) => Ok(Effect::OnStage),
        (s, c) => unreachable!("{s} × {c:?} is covered above"),
    }
}

/// How a stage ends once all its workflows have: `None` while any still runs.
/// A failure outweighs an expiry, which outweighs a cancellation.
pub fn stage_outcome(workflows: impl IntoIterator<Item = W>) -> Option<S> {
    let mut outcome = S::Succeeded;
    for w in workflows {
        let this = match w {
            W::Queued | W::Running => return None,
            W::Succeeded => S::Succeeded,
            W::Failed => S::Failed,
            W::Expired => S::Expired,
            W::Cancelled => S::Aborted,
        };
        if rank(this) > rank(outcome) {
            outcome = this;
        }
    }
    Some(outcome)
}

fn rank(s: S) -> u8 {
    match s {
        S::Failed => 3,
        S::Expired => 2,
        S::Aborted => 1,
        _ => 0,
    }
}

/// The execution status a stage's end leads to, if it ends the execution.
pub fn execution_outcome(stage: S) -> Option<E> {
    match stage {
        S::Failed => Some(E::Failed),
        S::Expired => Some(E::Expired),
        S::Rejected => Some(E::Rejected),
        S::Aborted => Some(E::Aborted),
        _ => None,
    }
}

/// What the engine should do next for an execution.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Stages to record as SKIPPED, with the reason.
    pub skip: Vec<(usize, String)>,
    /// The stage to start now.
    pub start: Option<usize>,
    /// The final status to record, with a message for people and the stage
    /// that ended it (none when every stage passed).
    pub finish: Option<(E, String, Option<usize>)>,
}

/// Walks the stages in order from the first one not yet passed: skips those
/// whose condition holds, starts the next, or finishes the execution. A paused
/// execution starts nothing; a stage that is still active blocks everything.
pub fn plan(status: E, stages: &[(S, &Stage)], variables: &BTreeMap<String, String>) -> Plan {
    let mut plan = Plan::default();
    if status.is_final() {
        return plan;
    }
    for (index, (stage_status, stage)) in stages.iter().enumerate() {
        match stage_status {
            s if s.is_passed() => continue,
            s if s.is_active() => return plan,
            S::Pending => {}
            ended => {
                let final_status = execution_outcome(*ended).unwrap_or(E::Failed);
                plan.finish = Some((final_status, format!("stage {:?} ended {ended}", stage.name), Some(index)));
                return plan;
            }
        }
        if status == E::Paused {
            return plan;
        }
        match skip_reason(stage, variables) {
            Ok(Some(reason)) => plan.skip.push((index, reason)),
            Ok(None) => {
                plan.start = Some(index);
                return plan;
            }
            Err(e) => {
                plan.finish = Some((E::Failed, format!("skip condition of stage {:?}: {e}", stage.name), Some(index)));
                return plan;
            }
        }
    }
    plan.finish = Some((E::Succeeded, "every stage succeeded or was skipped".into(), None));
    plan
}

fn skip_reason(stage: &Stage, variables: &BTreeMap<String, String>) -> Result<Option<String>, String> {
    match &stage.skip {
        None => Ok(None),
        Some(Skip::Always) => Ok(Some("skip condition: always".into())),
        Some(Skip::When(expr)) => {
            Ok(condition::evaluate(expr, variables)?.then(|| format!("skip condition held: {expr}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pipeline::tests::stage;
    use proptest::prelude::*;

    /// Every execution status × every command, with the expected answer.
    #[test]
    fn commands_by_status_table() {
        use Command::*;
        let refused = Err("EXECUTION_FINISHED");
        let table: &[(E, [Result<Effect, &str>; 5])] = &[
            //            Abort                   Pause                  Continue               Approve              Reject
            (
                E::Queued,
                [
                    Ok(Effect::To(E::Aborted)),
                    Ok(Effect::To(E::Paused)),
                    Ok(Effect::Unchanged),
                    Ok(Effect::OnStage),
                    Ok(Effect::OnStage),
                ],
            ),
            (
                E::Running,
                [
                    Ok(Effect::To(E::Aborted)),
                    Ok(Effect::To(E::Paused)),
                    Ok(Effect::Unchanged),
                    Ok(Effect::OnStage),
                    Ok(Effect::OnStage),
                ],
            ),
            (
                E::Paused,
                [
                    Ok(Effect::To(E::Aborted)),
                    Ok(Effect::Unchanged),
                    Ok(Effect::To(E::Running)),
                    Ok(Effect::OnStage),
                    Ok(Effect::OnStage),
                ],
            ),
            (E::Succeeded, [refused; 5]),
            (E::Failed, [refused; 5]),
            (E::Aborted, [refused; 5]),
            (E::Expired, [refused; 5]),
            (E::Rejected, [refused; 5]),
        ];
        assert_eq!(table.len(), E::ALL.len());
        for (status, expected) in table {
            for (command, want) in [Abort, Pause, Continue, Approve, Reject].into_iter().zip(expected) {
                let got = check_command(*status, command).map_err(|r| r.reason.as_str());
                assert_eq!(&got, want, "{status} × {command:?}");
            }
        }
    }

    #[test]
    fn refusal_of_a_failed_execution_points_to_resume() {
        let r = check_command(E::Failed, Command::Pause).unwrap_err();
        assert!(r.message.contains("FAILED") && r.message.contains("resume"), "{}", r.message);
        let r = check_command(E::Succeeded, Command::Abort).unwrap_err();
        assert!(!r.message.contains("resume"));
    }

    #[test]
    fn stage_outcome_table() {
        let cases: &[(&[W], Option<S>)] = &[
            (&[W::Succeeded, W::Succeeded], Some(S::Succeeded)),
            (&[W::Succeeded, W::Running], None),
            (&[W::Failed, W::Queued], None),
            (&[W::Failed, W::Succeeded], Some(S::Failed)),
            (&[W::Expired, W::Succeeded], Some(S::Expired)),
            (&[W::Expired, W::Failed], Some(S::Failed)),
            (&[W::Cancelled, W::Succeeded], Some(S::Aborted)),
            (&[W::Cancelled, W::Expired], Some(S::Expired)),
        ];
        for (workflows, want) in cases {
            assert_eq!(stage_outcome(workflows.iter().copied()), *want, "{workflows:?}");
        }
    }

    fn run_plan(status: E, stage_states: &[S], stages: &[Stage]) -> Plan {
        let pairs: Vec<(S, &Stage)> = stage_states.iter().copied().zip(stages).collect();
        plan(status, &pairs, &BTreeMap::from([("region".to_string(), "eu".to_string())]))
    }

    #[test]
    fn plan_starts_the_first_pending_stage_and_skips_what_holds() {
        let mut stages = vec![stage("a", &["w"]), stage("b", &["w"]), stage("c", &["w"])];
        stages[1].skip = Some(Skip::When(r#"region == "eu""#.into()));
        let p = run_plan(E::Running, &[S::Succeeded, S::Pending, S::Pending], &stages);
        assert_eq!(p.skip, vec![(1, "skip condition held: region == \"eu\"".into())]);
        assert_eq!(p.start, Some(2));
        assert_eq!(p.finish, None);
    }

    #[test]
    fn plan_waits_for_active_stages_and_paused_executions() {
        let stages = vec![stage("a", &["w"]), stage("b", &["w"])];
        assert_eq!(run_plan(E::Running, &[S::Running, S::Pending], &stages), Plan::default());
        assert_eq!(run_plan(E::Paused, &[S::Succeeded, S::Pending], &stages), Plan::default());
        assert_eq!(run_plan(E::Failed, &[S::Failed, S::Pending], &stages), Plan::default());
    }

    #[test]
    fn plan_finishes_when_every_stage_passed_or_one_ended_badly() {
        let stages = vec![stage("a", &["w"]), stage("b", &["w"])];
        let done = run_plan(E::Running, &[S::Succeeded, S::Skipped], &stages);
        assert_eq!(done.finish.map(|f| f.0), Some(E::Succeeded));
        let failed = run_plan(E::Running, &[S::Succeeded, S::Expired], &stages);
        assert_eq!(failed.finish.map(|f| f.0), Some(E::Expired));
    }

    fn any_stage_status() -> impl Strategy<Value = S> {
        prop::sample::select(S::ALL.to_vec())
    }

    proptest! {
        /// Whatever the stage states, a plan never starts a stage before an
        /// unpassed one, never starts and finishes at once, and never acts on
        /// a paused or final execution except to skip nothing.
        #[test]
        fn plans_respect_stage_order(states in prop::collection::vec(any_stage_status(), 1..8),
                                     status in prop::sample::select(E::ALL.to_vec())) {
            let stages: Vec<Stage> = (0..states.len()).map(|i| stage(&format!("s{i}"), &["w"])).collect();
            let p = run_plan(status, &states, &stages);
            prop_assert!(!(p.start.is_some() && p.finish.is_some()));
            if let Some(start) = p.start {
                prop_assert_eq!(status, E::Running.max_if(status));
                prop_assert!(states[..start].iter().all(|s| s.is_passed()));
                prop_assert_eq!(states[start], S::Pending);
            }
            if status.is_final() || status == E::Paused {
                prop_assert!(p.start.is_none());
            }
        }
    }

    trait MaxIf {
        fn max_if(self, other: E) -> E;
    }
    impl MaxIf for E {
        /// Queued and Running both may start stages.
        fn max_if(self, other: E) -> E {
            if other == E::Queued { E::Queued } else { self }
        }
    }
}
