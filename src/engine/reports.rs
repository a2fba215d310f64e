//! Group commit of task reports. The workflows of one stage tend to report
//! together, and reports of one execution take turns on it: instead of
//! each waiting for the one before to commit, whoever gets the turn takes
//! every report queued for the execution meanwhile and commits them as one
//! transaction. Should any of them fail, the group is rolled back and each
//! report runs again on its own, so every caller gets its own answer and
//! nothing is acknowledged that was not committed.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch};

use super::{Engine, Error, Result, at_once::AtOnce, dispatch::Eager, locks::Turn, tasks::Completion};
use crate::{
    domain::execution::WorkflowRun,
    store::{Cause, StoreError},
};

/// A report waiting for its execution's turn, and where its answer goes.
struct Queued {
    completion: Completion,
    /// The reporter, if it is ready for its next task.
    eager: Option<Eager>,
    answer: oneshot::Sender<Result<WorkflowRun>>,
}

/// How long after tasks were handed out together a report waits for the
/// reports of the others (see [`Flight`]).
const FLIGHT_WINDOW: Duration = Duration::from_millis(3);

/// Tasks of one execution handed to workers by one dispatch whose reports
/// have not all come. Short tasks handed out together report at nearly
/// the same instant; a report that comes within [`FLIGHT_WINDOW`] of the
/// hand-off and asks for its worker's next task waits (until the window
/// closes at most) for the rest, so the stage's reports commit as one
/// group whose dispatch leases the next stage's tasks to all of them,
/// rather than the first alone and the others after it. Reports that come
/// later than that wait for nothing.
struct Flight {
    outstanding: usize,
    until: Instant,
    all_in: watch::Sender<bool>,
}

/// Reports queued per execution.
#[derive(Default)]
pub(super) struct Reports {
    queued: Mutex<HashMap<String, Vec<Queued>>>,
    flights: Mutex<HashMap<String, Flight>>,
    /// Reports committed with at least one other (for the benches).
    grouped: std::sync::atomic::AtomicU64,
}

impl Reports {
    fn push(&self, execution_id: &str, queued: Queued) {
        let mut map = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(execution_id.to_owned()).or_default().push(queued);
    }

    fn take(&self, execution_id: &str) -> Vec<Queued> {
        let mut map = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(execution_id).unwrap_or_default()
    }

    /// `n` tasks of the execution were just handed to workers together.
    pub fn handed(&self, execution_id: &str, n: usize) {
        let now = Instant::now();
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // Flights whose window closed wait for nothing: forget them.
        flights.retain(|_, f| f.until > now);
        if n > 1 {
            let (all_in, _) = watch::channel(false);
            flights.insert(execution_id.to_owned(), Flight { outstanding: n, until: now + FLIGHT_WINDOW, all_in });
        }
    }

    /// Counts a report of the execution in; while others of its flight are
    /// due, what to wait on and until when.
    fn arrived(&self, execution_id: &str) -> Option<(watch::Receiver<bool>, Instant)> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        let f = flights.get_mut(execution_id)?;
        f.outstanding = f.outstanding.saturating_sub(1);
        if f.outstanding > 0 && Instant::now() < f.until {
            return Some((f.all_in.subscribe(), f.until));
        }
        let f = flights.remove(execution_id).expect("present");
        f.all_in.send_replace(true);
        None
    }
}

impl Engine {
    /// Task reports committed together with at least one other, since start.
    pub fn grouped_reports(&self) -> u64 {
        self.inner.reports.grouped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits `c` for the task's execution, with whatever other reports of
    /// that execution are waiting when its turn comes. `eager` goes with it
    /// into the unit that commits it; whatever that unit leases it has
    /// been handed by the time the answer comes.
    pub(super) async fn report(&self, execution_id: &str, c: Completion, eager: Option<Eager>) -> Result<WorkflowRun> {
        let (answer, answered) = oneshot::channel();
        let ready_for_more = eager.is_some();
        self.inner.reports.push(execution_id, Queued { completion: c, eager, answer });
        // Only a reporter ready for more gains by waiting: its siblings' and
        // its own next tasks then come from one dispatch. A worker that
        // polls is better off answered at once, parked before that dispatch.
        if let Some((mut all_in, until)) = self.inner.reports.arrived(execution_id)
            && ready_for_more
        {
            let _ = tokio::time::timeout_at(until.into(), all_in.wait_for(|all| *all)).await;
        }
        let started = Instant::now();
        let turn = self.inner.locks.turn(execution_id).await;
        let group = self.inner.reports.take(execution_id);
        if group.is_empty() {
            // Taken by an earlier turn, which may need this one back to run
            // it alone: never wait for the answer holding the turn.
            drop(turn);
        } else {
            self.commit_group(turn, started, execution_id, group).await;
        }
        // Ours went with this group or an earlier one; its committer is a
        // detached task that answers every report it took.
        answered.await.map_err(|_| {
            Error::Store(StoreError::unavailable(Cause::Busy, "the report was not committed; send it again"))
        })?
    }

    async fn commit_group(&self, turn: Turn, started: Instant, id: &str, mut group: Vec<Queued>) {
        let eager: Vec<Eager> = group.iter_mut().filter_map(|q| q.eager.take()).collect();
        let reports: Vec<&Completion> = group.iter().map(|q| &q.completion).collect();
        let (turn, mut eager) = match self.report_at_once(turn, started, id, &reports, eager).await {
            AtOnce::Sent(Ok(runs)) => {
                self.answer(group, runs);
                return;
            }
            AtOnce::Sent(Err(e)) if group.len() == 1 => {
                let _ = group.into_iter().next().expect("one report").answer.send(Err(e));
                return;
            }
            // One of them failed: each runs alone (their reporters poll).
            AtOnce::Sent(Err(e)) => {
                tracing::debug!(error = %e, execution_id = %id, "a report of a group failed; each runs alone");
                return self.each_alone(id, group).await;
            }
            AtOnce::Declined(turn, eager) => (turn, eager),
        };
        if group.len() == 1 {
            let q = group.into_iter().next().expect("one report");
            let _ = q.answer.send(self.report_alone(Some((turn, started)), id, &q.completion, eager.pop()).await);
            return;
        }
        // Should the group fail, its reporters get no next task (their
        // reports, run again alone, may still be accepted): they poll.
        match self.try_group(turn, started, id, &group, eager).await {
            Some(runs) => self.answer(group, runs),
            None => self.each_alone(id, group).await,
        }
    }

    /// Each report of a group that failed together in a unit of its own,
    /// answered with its own result; its reporter gets no next task (it polls).
    async fn each_alone(&self, id: &str, group: Vec<Queued>) {
        for q in group {
            let _ = q.answer.send(self.report_alone(None, id, &q.completion, None).await);
        }
    }

    /// Answers each report of a group committed together with its run.
    fn answer(&self, group: Vec<Queued>, runs: Vec<WorkflowRun>) {
        if group.len() > 1 {
            self.inner.reports.grouped.fetch_add(group.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        for (q, run) in group.into_iter().zip(runs) {
            let _ = q.answer.send(Ok(run));
        }
    }

    /// All of `group` in one transaction, or None (rolled back) if any of
    /// them failed.
    async fn try_group(
        &self,
        turn: Turn,
        started: Instant,
        id: &str,
        group: &[Queued],
        eager: Vec<Eager>,
    ) -> Option<Vec<WorkflowRun>> {
        let mut unit = self.unit_in(Some(turn), started).await.ok()?;
        unit.eager = eager;
        let reports: Vec<&Completion> = group.iter().map(|q| &q.completion).collect();
        let result = self.complete_in(&mut unit, id, &reports).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, execution_id = %id, "a report of a group failed; each runs alone");
        }
        self.finish(unit, result).await.ok()
    }

    /// One report in a unit of its own: in the turn given (taken at the
    /// time given), or after waiting for one.
    async fn report_alone(
        &self,
        turn: Option<(Turn, Instant)>,
        id: &str,
        c: &Completion,
        eager: Option<Eager>,
    ) -> Result<WorkflowRun> {
        let mut unit = match turn {
            Some((turn, started)) => self.unit_in(Some(turn), started).await?,
            None => self.unit(Some(id)).await?,
        };
        unit.eager.extend(eager);
        let result = self.complete_in(&mut unit, id, &[c]).await.map(|mut runs| runs.remove(0));
        self.finish(unit, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_of_a_flight_wait_until_the_last_one_comes() {
        let r = Reports::default();
        r.handed("e", 3);
        let (first, _) = r.arrived("e").expect("two more are due");
        let (second, _) = r.arrived("e").expect("one more is due");
        assert!(!*first.borrow() && !*second.borrow());
        assert!(r.arrived("e").is_none(), "the last one waits for nobody");
        assert!(*first.borrow() && *second.borrow(), "and lets the others go");
        assert!(r.arrived("e").is_none(), "a report after its flight waits for nothing");
    }

    #[test]
    fn a_task_handed_alone_or_unknown_waits_for_nothing() {
        let r = Reports::default();
        r.handed("alone", 1);
        assert!(r.arrived("alone").is_none());
        assert!(r.arrived("never-handed").is_none());
        // A new dispatch replaces the execution's flight.
        r.handed("e", 2);
        r.handed("e", 3);
        assert!(r.arrived("e").is_some() && r.arrived("e").is_some());
        assert!(r.arrived("e").is_none());
    }
}
