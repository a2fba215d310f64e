//! What retention may delete. A chain goes whole or not at all, only once
//! its latest execution has ended, and never while that execution could
//! still be resumed: deleting it would take away a deployment its owner may
//! still go on with.

use super::{execution::Millis, resume::ChainLimits, status::ExecutionStatus};

/// The policy, from the server's flags. Everything is kept unless a rule
/// is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Delete a finished chain once its latest execution ended this long ago.
    pub chains_for_ms: Option<Millis>,
    /// Keep only the newest N chains of each pipeline (by first attempt).
    pub chains_per_pipeline: Option<u32>,
    /// Delete audit events older than this.
    pub audit_for_ms: Option<Millis>,
    /// Count and log what would go, delete nothing.
    pub dry_run: bool,
}

impl Policy {
    pub fn deletes_chains(&self) -> bool {
        self.chains_for_ms.is_some() || self.chains_per_pipeline.is_some()
    }

    pub fn is_enabled(&self) -> bool {
        self.deletes_chains() || self.audit_for_ms.is_some()
    }

    /// Audit events before this instant go.
    pub fn audit_cutoff(&self, now: Millis) -> Option<Millis> {
        self.audit_for_ms.map(|d| now.saturating_sub(d))
    }

    /// Chains whose latest execution ended before this instant go.
    pub fn ended_cutoff(&self, now: Millis) -> Option<Millis> {
        self.chains_for_ms.map(|d| now.saturating_sub(d))
    }
}

/// What retention needs to know of a chain: its latest execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub chain_id: String,
    pub status: ExecutionStatus,
    pub attempt: i32,
    pub ended_at: Option<Millis>,
    /// When the chain's first attempt was created.
    pub chain_created_at: Millis,
}

/// Why a chain may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its latest execution ended longer ago than the policy keeps chains.
    Age,
    /// Its pipeline has more newer chains than the policy keeps.
    Count,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Age => "age",
            Reason::Count => "count",
        }
    }
}

/// Whether a Resume of this head could still be accepted: it ended in a
/// resumable state and the chain is within its limits. Such chains are kept
/// whatever the policy says.
pub fn still_resumable(head: &ChainHead, limits: ChainLimits, now: Millis) -> bool {
    let resumable_state = matches!(
        head.status,
        ExecutionStatus::Failed | ExecutionStatus::Aborted | ExecutionStatus::Expired | ExecutionStatus::Rejected
    );
    let within_attempts = limits.max_attempts.is_none_or(|max| (head.attempt as i64) < max as i64);
    let within_age = limits.max_age_ms.is_none_or(|max| now - head.chain_created_at <= max);
    resumable_state && within_attempts && within_age
}

/// Whether retention deletes this chain now, and why. `beyond_newest`: the
/// pipeline has at least `chains_per_pipeline` newer chains.
pub fn verdict(
    head: &ChainHead,
    policy: &Policy,
    limits: ChainLimits,
    now: Millis,
    beyond_newest: bool,
) -> Option<Reason> {
    if !head.status.is_final() || still_resumable(head, limits, now) {
        return None;
    }
    let ended = head.ended_at?;
    if policy.ended_cutoff(now).is_some_and(|cutoff| ended < cutoff) {
        return Some(Reason::Age);
    }
    (beyond_newest && policy.chains_per_pipeline.is_some()).then_some(Reason::Count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{execution::Execution, resume::check_execution};

    const DAY: Millis = 86_400_000;
    const NOW: Millis = 100 * DAY;

    fn head(status: ExecutionStatus, attempt: i32, ended_days_ago: Option<i64>, created_days_ago: i64) -> ChainHead {
        ChainHead {
            chain_id: "c".into(),
            status,
            attempt,
            ended_at: ended_days_ago.map(|d| NOW - d * DAY),
            chain_created_at: NOW - created_days_ago * DAY,
        }
    }

    fn policy(days: Option<i64>, per_pipeline: Option<u32>) -> Policy {
        Policy { chains_for_ms: days.map(|d| d * DAY), chains_per_pipeline: per_pipeline, ..Policy::default() }
    }

    #[test]
    fn every_status_against_every_rule() {
        let window = ChainLimits { max_attempts: Some(3), max_age_ms: Some(30 * DAY) };
        let forever = ChainLimits::default();
        for &status in ExecutionStatus::ALL {
            let resumable = matches!(
                status,
                ExecutionStatus::Failed
                    | ExecutionStatus::Aborted
                    | ExecutionStatus::Expired
                    | ExecutionStatus::Rejected
            );
            let ended = status.is_final().then_some(40);
            // Old enough by age, outside the 30-day window.
            let old = head(status, 1, ended, 45);
            let expected = status.is_final().then_some(Reason::Age);
            assert_eq!(verdict(&old, &policy(Some(7), None), window, NOW, false), expected, "{status}");
            // Without a resume window a resumable head is kept forever.
            let kept = if resumable { None } else { expected };
            assert_eq!(verdict(&old, &policy(Some(7), None), forever, NOW, false), kept, "{status}");
            // Inside the window: only what cannot be resumed goes.
            let young = head(status, 1, ended, 20);
            let expected = (status.is_final() && !resumable).then_some(Reason::Age);
            assert_eq!(verdict(&young, &policy(Some(7), None), window, NOW, false), expected, "{status}");
            // At its last attempt a chain cannot be resumed: it goes.
            let spent = head(status, 3, ended, 20);
            let expected = status.is_final().then_some(Reason::Age);
            assert_eq!(verdict(&spent, &policy(Some(7), None), window, NOW, false), expected, "{status}");
            // Count: only when beyond the newest N, and only if the rule is set.
            let expected = status.is_final().then_some(Reason::Count);
            assert_eq!(verdict(&old, &policy(None, Some(5)), window, NOW, true), expected, "{status}");
            assert_eq!(verdict(&old, &policy(None, Some(5)), window, NOW, false), None, "{status}");
            assert_eq!(verdict(&old, &policy(None, None), window, NOW, true), None, "{status}");
        }
    }

    #[test]
    fn age_counts_from_the_end_of_the_latest_execution() {
        let limits = ChainLimits::default();
        let p = policy(Some(7), None);
        let at = |ended: i64| head(ExecutionStatus::Succeeded, 1, Some(ended), 60);
        assert_eq!(verdict(&at(8), &p, limits, NOW, false), Some(Reason::Age));
        assert_eq!(verdict(&at(7), &p, limits, NOW, false), None, "exactly 7 days: kept");
        assert_eq!(verdict(&at(1), &p, limits, NOW, false), None);
    }

    #[test]
    fn still_resumable_agrees_with_the_resume_rules() {
        let limits = ChainLimits { max_attempts: Some(3), max_age_ms: Some(30 * DAY) };
        for &status in ExecutionStatus::ALL {
            for attempt in 1..=4 {
                for created in [1, 29, 30, 31, 90] {
                    let h = head(status, attempt, Some(0), created);
                    let e = Execution {
                        id: "e".into(),
                        pipeline_id: "p".into(),
                        pipeline_version: 1,
                        application: "a".into(),
                        status,
                        status_message: String::new(),
                        variables: Default::default(),
                        artifacts: Default::default(),
                        request_id: "r".into(),
                        triggered_by: "t".into(),
                        chain_id: "c".into(),
                        attempt,
                        chain_created_at: h.chain_created_at,
                        resumed_from: None,
                        resumed_by: None,
                        end_stage: None,
                        created_at: h.chain_created_at,
                        started_at: None,
                        ended_at: h.ended_at,
                        sealed_secrets: None,
                    };
                    assert_eq!(
                        still_resumable(&h, limits, NOW),
                        check_execution(&e, limits, NOW).is_ok(),
                        "{status} attempt {attempt} created {created} days ago"
                    );
                }
            }
        }
    }

    #[test]
    fn audit_and_chain_cutoffs() {
        let p = Policy { chains_for_ms: Some(DAY), audit_for_ms: Some(2 * DAY), ..Policy::default() };
        assert!(p.is_enabled() && p.deletes_chains());
        assert_eq!(p.ended_cutoff(NOW), Some(NOW - DAY));
        assert_eq!(p.audit_cutoff(NOW), Some(NOW - 2 * DAY));
        assert!(!Policy::default().is_enabled());
        let audit_only = Policy { audit_for_ms: Some(DAY), ..Policy::default() };
        assert!(audit_only.is_enabled() && !audit_only.deletes_chains());
    }
}
