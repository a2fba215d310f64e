//! The worker protocol: lease a task, heartbeat it, report its result.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::Instant;

use super::{
    Engine, Error, Result, authorize,
    dispatch::{Eager, Waiter},
    new_id, now,
    work::Unit,
};
use crate::{
    domain::{
        access::Caller,
        execution::{ExecutionState, FailureNote, Millis, WorkflowCounts, WorkflowRun},
        limits::{tail, truncate_marked},
        progress::{self, Changes},
        status::WorkflowStatus,
    },
    store::{
        executions::{self, Key},
        stages,
        tasks::{self, Received, Report},
    },
};

/// A task leased to a worker, with what it needs to run.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub run: WorkflowRun,
    pub stage_name: String,
    pub environment: BTreeMap<String, String>,
    pub lease: Duration,
}

/// Where a worker that reports a task takes its next one from (see
/// [`Engine::complete`]).
#[derive(Debug, Clone)]
pub struct NextTask {
    pub queue: String,
    pub worker: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Beat {
    pub cancelled: bool,
    pub lease_expires_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub task_id: String,
    pub lease_token: String,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub output: String,
    pub message: String,
    /// Characters of output the attempt sent before `output` (see
    /// [`Engine::heartbeat`]); None appends it as it is.
    pub output_offset: Option<i64>,
}

impl Engine {
    /// Leases the oldest task of `queue`, waiting up to `wait` for one. A
    /// worker parked here is handed its task by the transaction that queues
    /// it; tasks queued with nobody parked are claimed from the database.
    pub async fn poll(
        &self,
        caller: &Caller,
        queue: &str,
        worker: &str,
        wait: Duration,
    ) -> Result<Option<ClaimedTask>> {
        authorize::run_tasks(caller)?;
        let deadline = Instant::now() + wait;
        let dispatch = &self.inner.dispatch;
        loop {
            let reserved = dispatch.reserve(queue);
            let maybe = reserved.is_some();
            if let Some(reservation) = reserved {
                match self.claim(queue, worker).await? {
                    Some(task) => {
                        reservation.found();
                        dispatch.claims_found.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        metrics::counter!(crate::metrics::CLAIMS, "found" => "true").increment(1);
                        return Ok(Some(task));
                    }
                    None => {
                        dispatch.claims_empty.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        metrics::counter!(crate::metrics::CLAIMS, "found" => "false").increment(1);
                        reservation.empty();
                    }
                }
            }
            tracing::debug!(queue, worker, maybe, "poll parks");
            let mut parked = dispatch.register(queue, worker);
            let wake = parked.wake.clone();
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // Work may have been queued between the claim and parking.
            if dispatch.may_have_work(queue) && dispatch.withdraw(&parked) {
                continue;
            }
            // Without the channel from other replicas, look again now and then.
            let recheck = if self.events().is_relayed() { deadline } else { Instant::now() + self.settings().recheck };
            tracing::trace!(queue, "poll: parked");
            tokio::select! {
                handed = &mut parked.task => match handed {
                    Ok(task) => return Ok(Some(task)),
                    Err(_) => continue, // the dispatch rolled back
                },
                _ = woken => {}
                _ = tokio::time::sleep_until(recheck.min(deadline)) => {}
            }
            tracing::trace!(queue, "poll: woken");
            // A dispatch may have taken this poller meanwhile.
            if let Some(task) = dispatch.collect(parked).await {
                return Ok(Some(task));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Claims the oldest queued task of `queue` in one statement.
    async fn claim(&self, queue: &str, worker: &str) -> Result<Option<ClaimedTask>> {
        tracing::trace!(queue, "claim");
        let lease = self.settings().lease;
        let token = new_id();
        let now = now();
        let claimed = {
            let single = self.store().single().await?;
            tasks::claim(&single, queue, worker, &token, now, lease.as_millis() as i64, self.events().origin()).await?
        };
        let Some(run) = claimed else { return Ok(None) };
        let at = run.lease_expires_at.into_iter().chain(run.deadline_at).min().unwrap_or(now);
        self.events().deadlines().offer(at);
        self.events().execution_changed(&run.execution_id);
        self.inner.views.task_of(&run.task_id, &run.execution_id);
        let inputs = self.inputs(&run.execution_id).await?;
        let stage_name = inputs.definition.stages.get(run.stage_index).map(|s| s.name.to_string()).unwrap_or_default();
        tracing::info!(task_id = %run.task_id, execution_id = %run.execution_id, workflow = %run.name,
            attempt = run.attempt, worker, "task leased");
        Ok(Some(ClaimedTask {
            environment: inputs.environment(&stage_name, &run.name, &run.execution_id),
            run,
            stage_name,
            lease,
        }))
    }

    /// Extends the lease; says `cancelled` when the task was cancelled or
    /// expired under this lease, refuses when the lease is no longer held.
    ///
    /// With `offset` (characters of output the worker sent before this
    /// piece), what the server already received is skipped: a heartbeat
    /// sent again after its answer was lost adds nothing twice.
    pub async fn heartbeat(
        &self,
        caller: &Caller,
        task_id: &str,
        lease_token: &str,
        output: &str,
        offset: Option<i64>,
    ) -> Result<Beat> {
        authorize::run_tasks(caller)?;
        let until = now() + self.settings().lease.as_millis() as i64;
        let extended = match offset {
            None => {
                let single = self.store().single().await?;
                let piece = self.masked_output(&single, task_id, output).await?;
                let received = Received::Add(output.chars().count() as i64);
                tasks::extend_lease(&single, task_id, lease_token, until, piece.piece(), received).await?
            }
            Some(offset) => {
                // A unit of its own: the received count is read and moved on
                // under the row lock.
                let unit = self.unit(None).await?;
                let tx = &unit.tx;
                let result = async {
                    // An empty beat only moves the lease and the count on: no
                    // execution to look up, no secret to mask.
                    let inputs = match output.is_empty() {
                        true => None,
                        false => Some(self.inputs(&self.execution_of_task(task_id).await?).await?),
                    };
                    let reach = inputs.as_ref().map_or(0, |i| i.mask_reach());
                    let Some(seen) = unseen_in(tx, task_id, lease_token, output, offset, reach).await? else {
                        return Ok(false);
                    };
                    let piece = match &inputs {
                        Some(inputs) => {
                            let kept = self.settings().limits.kept_output_bytes;
                            masked_piece(tx, task_id, inputs, seen.fresh, kept, Some(&seen.kept_end)).await?
                        }
                        None => Masked::default(),
                    };
                    let received = Received::Now(seen.received);
                    Ok(tasks::extend_lease(tx, task_id, lease_token, until, piece.piece(), received).await?)
                }
                .await;
                self.finish(unit, result).await?
            }
        };
        if extended {
            if !output.is_empty() {
                self.events().output_changed(task_id);
            }
            return Ok(Beat { cancelled: false, lease_expires_at: until });
        }
        let task =
            tasks::get_one(&self.store().reader(), task_id).await?.ok_or_else(|| Error::not_found("task", task_id))?;
        let ours = task.lease_token.as_deref() == Some(lease_token);
        match task.status {
            WorkflowStatus::Cancelled | WorkflowStatus::Expired if ours => {
                Ok(Beat { cancelled: true, lease_expires_at: task.lease_expires_at.unwrap_or_default() })
            }
            _ => Err(stale(&task, lease_token)),
        }
    }

    /// Records a task's result and, when it was the stage's last, moves the
    /// execution on (next stage dispatched) in the same transaction.
    ///
    /// With `next`, the reporting worker is ready for a task of that queue:
    /// one that the unit committing its report dispatches there (the next
    /// stage's, when the report ends a stage) and no parked poller takes is
    /// leased to it in that unit, and returned. Nothing is waited for
    /// beyond the report's own commit.
    pub async fn complete(
        &self,
        caller: &Caller,
        c: Completion,
        next: Option<&NextTask>,
    ) -> Result<Option<ClaimedTask>> {
        authorize::run_tasks(caller)?;
        let execution_id = self.execution_of_task(&c.task_id).await?;
        let (eager, handed) = match next {
            Some(n) => {
                let (waiter, handed) = Waiter::reporting(&n.worker);
                (Some(Eager { queue: n.queue.clone(), waiter }), Some(handed))
            }
            None => (None, None),
        };
        let run = self.report(&execution_id, c, eager).await?;
        // Handed over after the commit and before the answer, if at all.
        let handed = handed.and_then(|mut h| h.try_recv().ok());
        if handed.is_some() {
            self.inner.dispatch.handed_with_report.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.events().output_changed(&run.task_id);
        // An exit code only when the worker reported one: `exit_code=0` for none would mislead.
        match run.exit_code {
            Some(exit_code) => tracing::info!(task_id = %run.task_id, execution_id = %run.execution_id,
                workflow = %run.name, status = %run.status, exit_code, "task completed"),
            None => tracing::info!(task_id = %run.task_id, execution_id = %run.execution_id, workflow = %run.name,
                status = %run.status, "task completed"),
        }
        Ok(handed)
    }

    /// Records reports of the execution's tasks (one alone, or a group
    /// that came together) and decides what follows, as one change: one
    /// statement for all of them on PostgreSQL. The runs, in order; should
    /// any report be refused, so is the whole (a group then runs each alone).
    pub(super) async fn complete_in(
        &self,
        unit: &mut Unit,
        execution_id: &str,
        reports: &[&Completion],
    ) -> Result<Vec<WorkflowRun>> {
        let now = now();
        let inputs = self.inputs(execution_id).await?;
        let kept = self.kept(&unit.tx, &inputs, reports, true).await?;
        let task_reports = task_reports(reports, &kept, false);
        let first = reports.first().map_or("", |c| c.task_id.as_str());
        let reported = tasks::report_counted(&unit.tx, execution_id, &task_reports, now, self.events().origin())
            .await?
            .ok_or_else(|| Error::not_found("task", first))?;
        unit.after.changed_told(execution_id);
        let mut runs = Vec::with_capacity(reports.len());
        for (c, run) in reports.iter().zip(reported.tasks) {
            match run {
                Some(run) => runs.push(run),
                None => {
                    let task = tasks::get_one(&unit.tx, &c.task_id)
                        .await?
                        .ok_or_else(|| Error::not_found("task", &c.task_id))?;
                    return Err(stale(&task, &c.lease_token));
                }
            }
        }
        let mut stages = reported.stages.into_iter();
        let (Some(stage), None) = (stages.next(), stages.next()) else {
            // Only one stage runs at a time: reports of two are a race with
            // a change of the execution, which each decides alone.
            return Err(Error::Conflict(format!("reports of execution {execution_id} were not of one running stage")));
        };
        self.decide_after_end(unit, reported.execution, &runs, stage, now, Some(reported.revision)).await?;
        Ok(runs)
    }

    /// Each report's output and message as they are kept: secrets masked,
    /// cut to size, and (if `reconcile`) what the server has of the output
    /// already left out — else the statement leaves it out.
    pub(super) async fn kept(
        &self,
        tx: &crate::store::Tx,
        inputs: &super::views::Inputs,
        reports: &[&Completion],
        reconcile: bool,
    ) -> Result<Vec<(Masked, String)>> {
        let limits = &self.settings().limits;
        let mut kept = Vec::with_capacity(reports.len());
        for c in reports {
            let seen = match c.output_offset {
                Some(offset) if reconcile && !c.output.is_empty() => {
                    unseen_in(tx, &c.task_id, &c.lease_token, &c.output, offset, inputs.mask_reach()).await?
                }
                _ => None,
            };
            // Not held (`seen` None): the report below is refused as stale.
            let (fresh, kept_end) = seen.map_or((c.output.as_str(), None), |s| (s.fresh, Some(s.kept_end)));
            let output =
                masked_piece(tx, &c.task_id, inputs, fresh, limits.kept_output_bytes, kept_end.as_deref()).await?;
            kept.push((output, truncate_marked(&inputs.mask(&c.message), limits.max_message_bytes)));
        }
        Ok(kept)
    }

    /// Counts the end of `run` on its stage, then lets the domain decide
    /// what follows (for ends the timers record).
    pub(super) async fn workflow_ended(
        &self,
        unit: &mut Unit,
        execution: crate::domain::execution::Execution,
        run: &WorkflowRun,
        now: Millis,
    ) -> Result<()> {
        let failure = matches!(run.status, WorkflowStatus::Failed | WorkflowStatus::Expired)
            .then(|| FailureNote { workflow: run.name.clone(), message: tasks::note(&run.status_message) });
        let delta = WorkflowCounts::delta_of_end(run.status);
        let stage = stages::count_end(&unit.tx, &execution.id, run.stage_index, delta, failure.as_ref())
            .await?
            .ok_or_else(|| crate::store::corrupt(format!("task {} has no stage {}", run.task_id, run.stage_index)))?;
        self.decide_after_end(unit, execution, std::slice::from_ref(run), stage, now, None).await
    }

    /// With the ends of `runs` counted on `stage` (theirs), the domain
    /// decides what follows (the stage ends, the next one starts, the
    /// execution finishes). `revision`: the one the unit's lock gave the
    /// execution, if known.
    async fn decide_after_end(
        &self,
        unit: &mut Unit,
        execution: crate::domain::execution::Execution,
        runs: &[WorkflowRun],
        stage: crate::domain::execution::StageRun,
        now: Millis,
        revision: Option<i64>,
    ) -> Result<()> {
        let definition = self.definitions().pinned_by(&unit.tx, &execution).await?;
        let counted = stage.clone();
        let held = ExecutionState::around_running_stage(execution, definition, stage);
        self.decide_end(unit, &held, counted, runs, now, revision).await.map(drop)
    }

    /// The domain decides what follows the ends of `runs` on the stage
    /// `counted` (that stage with their ends counted) and the unit writes it;
    /// `held` is the execution as the database holds it before the unit's
    /// writes, `revision` the one they leave it at, if known. The execution
    /// as decided.
    pub(super) async fn decide_end(
        &self,
        unit: &mut Unit,
        held: &ExecutionState,
        counted: crate::domain::execution::StageRun,
        runs: &[WorkflowRun],
        now: Millis,
        revision: Option<i64>,
    ) -> Result<ExecutionState> {
        let index = counted.index;
        let mut after = held.clone();
        after.stages[index] = counted;
        let mut changes = Changes::default();
        for run in runs.iter().filter(|r| r.status == WorkflowStatus::Expired) {
            progress::expire_siblings(&mut after, run.stage_index, &run.name, &mut changes);
        }
        progress::settle_stage(&mut after, index, now, &mut new_id, &mut changes);
        let touched = progress::touched_by_report(&after, index);
        self.save_within(unit, held, &after, touched, changes, now).await?;
        // Only where a report can be sent at once (see `at_once`).
        if let Some(revision) = revision.filter(|_| self.store().is_postgres()) {
            let known = super::known::Known::after(revision, &after.execution, &after.stages);
            unit.after.known = known.map(|k| (after.execution.id.clone(), k));
        }
        Ok(after)
    }

    /// Queues a lease that never reached its worker again (see [`super::work`]).
    pub(super) async fn release(&self, task: ClaimedTask) {
        let token = task.run.lease_token.clone().unwrap_or_default();
        let run = &task.run;
        let released = async {
            let mut unit = self.unit(Some(&run.execution_id)).await?;
            let result = async {
                executions::lock(&unit.tx, Key::Id(&run.execution_id)).await?;
                let released = tasks::release(&unit.tx, &run.task_id, &token).await?;
                if released {
                    unit.after.queued(&run.task_queue, 1);
                    unit.after.changed(&run.execution_id);
                }
                Ok::<_, Error>(released)
            }
            .await;
            self.finish(unit, result).await
        }
        .await;
        match released {
            Ok(true) => tracing::debug!(task_id = %run.task_id, "lease handed back: the worker's poll had ended"),
            Ok(false) => {}
            Err(e) => tracing::warn!(task_id = %task.run.task_id, error = %e,
                "could not hand back an undelivered lease; the task is offered again when it expires"),
        }
    }

    /// Wakes pollers of every queue with waiting tasks (after a restart).
    pub async fn wake_all_queues(&self) -> Result<()> {
        for queue in tasks::queues_with_work(&self.store().reader()).await? {
            self.inner.dispatch.queued(&queue, usize::MAX >> 1);
        }
        Ok(())
    }

    /// How many task queues have workers parked in PollTask on this replica.
    pub fn parked_queues(&self) -> usize {
        self.inner.dispatch.parked()
    }

    /// How many task queues this replica remembers something about (bounded).
    pub fn remembered_queues(&self) -> usize {
        self.inner.dispatch.len()
    }

    /// How tasks reached workers on this replica so far.
    pub fn claim_counts(&self) -> super::dispatch::ClaimCounts {
        use std::sync::atomic::Ordering::Relaxed;
        let d = &self.inner.dispatch;
        super::dispatch::ClaimCounts {
            found: d.claims_found.load(Relaxed),
            empty: d.claims_empty.load(Relaxed),
            handed_at_dispatch: d.handed_at_dispatch.load(Relaxed),
            handed_with_report: d.handed_with_report.load(Relaxed),
        }
    }

    /// Another replica queued `n` tasks on `queue`: this replica's pollers may claim them.
    pub fn queue_woken(&self, queue: &str, n: usize) {
        self.inner.dispatch.queued(queue, n);
    }

    /// Every queue may hold work again (announcements from other replicas were missed).
    pub fn forget_queues(&self) {
        self.inner.dispatch.forget_all();
    }

    /// The execution a task belongs to.
    pub(super) async fn execution_of_task(&self, task_id: &str) -> Result<String> {
        if let Some(id) = self.inner.views.execution_of(task_id) {
            return Ok(id);
        }
        let id = executions::of_task(&self.store().reader(), task_id)
            .await?
            .ok_or_else(|| Error::not_found("task", task_id))?;
        self.inner.views.task_of(task_id, &id);
        Ok(id)
    }
}

/// Why a report or heartbeat under `token` is refused.
pub(super) fn stale(task: &WorkflowRun, token: &str) -> Error {
    let ours = task.lease_token.as_deref() == Some(token);
    let message = match task.status {
        WorkflowStatus::Running if !ours => format!(
            "lease token does not match the current lease of task {} (attempt {}): the token is stale (its lease \
             expired and the task was handed out again) or wrong; drop the result",
            task.task_id, task.attempt
        ),
        WorkflowStatus::Queued => format!(
            "lease is stale: the lease of task {} expired and the task was queued again; drop the result",
            task.task_id
        ),
        WorkflowStatus::Cancelled => {
            format!("task {} was cancelled ({}); drop the result", task.task_id, task.status_message)
        }
        status => format!("task {} already ended as {status}; a result is accepted once", task.task_id),
    };
    Error::Refused(
        crate::domain::Refusal::new(crate::domain::Reason::LeaseNotHeld, message)
            .with("task_id", &task.task_id)
            .with("attempt", task.attempt),
    )
}

/// What the server has of an attempt's output, against a piece of it.
struct Seen<'a> {
    /// The part of the piece the server has not received.
    fresh: &'a str,
    /// How many characters it has received once that is kept.
    received: i64,
    /// The end of what it keeps, as far as a secret reaches back over the seam.
    kept_end: String,
}

/// [`unseen`] against what the server received of the attempt under
/// `lease_token`, read under the row lock with the kept output's last
/// `reach` characters (one statement); None when the lease is not held.
async fn unseen_in<'a>(
    c: &impl sea_orm::ConnectionTrait,
    task_id: &str,
    lease_token: &str,
    piece: &'a str,
    offset: i64,
    reach: usize,
) -> Result<Option<Seen<'a>>> {
    let held = tasks::output_received(c, task_id, lease_token, reach as i64).await?;
    Ok(held.map(|(received, kept_end)| {
        let (fresh, received) = unseen(piece, offset, received);
        Seen { fresh, received, kept_end }
    }))
}

/// Of a piece of output that begins `offset` characters into what the
/// worker sent, the part the server has not received (it has `received`),
/// and how many it has received once this is kept. A gap (a piece that was
/// lost) is not waited for: what arrives is kept after what is there.
fn unseen(piece: &str, offset: i64, received: i64) -> (&str, i64) {
    let chars = piece.chars().count() as i64;
    let skip = (received - offset).clamp(0, chars);
    let start = piece.char_indices().nth(skip as usize).map_or(piece.len(), |(i, _)| i);
    (&piece[start..], received.max(offset.saturating_add(chars)))
}

/// The store's form of each report, with what is kept of it; `from_offset`:
/// the statement leaves out what was received of a piece sent from an offset.
pub(super) fn task_reports<'a>(
    reports: &[&'a Completion],
    kept: &'a [(Masked, String)],
    from_offset: bool,
) -> Vec<tasks::TaskReport<'a>> {
    reports
        .iter()
        .zip(kept)
        .map(|(c, (output, message))| tasks::TaskReport {
            task_id: &c.task_id,
            lease_token: &c.lease_token,
            report: Report {
                status: match c.outcome {
                    Outcome::Succeeded => WorkflowStatus::Succeeded,
                    Outcome::Failed => WorkflowStatus::Failed,
                },
                exit_code: c.exit_code,
                output: output.piece(),
                message,
            },
            received_from: c.output_offset.filter(|_| from_offset),
        })
        .collect()
}

/// A piece of a task's output as it is kept: its secrets masked, cut to
/// the last `kept` bytes (after masking, so no cut leaves a part of
/// a secret), and masked again over the seam with what is kept already, so
/// a secret that a worker's writes cut in two is masked whole. Only
/// executions with secrets read the kept output's end for that. What shows
/// before the rest of a cut secret arrives is its beginning, as in the logs
/// of CI systems that mask line by line.
#[derive(Default)]
pub(super) struct Masked {
    text: String,
    replaces: i64,
}

impl Masked {
    pub fn piece(&self) -> tasks::Piece<'_> {
        tasks::Piece { text: &self.text, replaces: self.replaces }
    }
}

impl Engine {
    /// `piece` as it is kept, for a heartbeat (nothing for an empty one).
    async fn masked_output(&self, c: &impl sea_orm::ConnectionTrait, task_id: &str, piece: &str) -> Result<Masked> {
        if piece.is_empty() {
            return Ok(Masked::default());
        }
        let execution_id = self.execution_of_task(task_id).await?;
        let kept = self.settings().limits.kept_output_bytes;
        masked_piece(c, task_id, &*self.inputs(&execution_id).await?, piece, kept, None).await
    }
}

/// `kept_end`: the end of the output kept already, when the caller read it
/// with the row (else it is read here, if a secret could reach over the seam).
pub(super) async fn masked_piece(
    c: &impl sea_orm::ConnectionTrait,
    task_id: &str,
    inputs: &super::views::Inputs,
    piece: &str,
    kept: usize,
    kept_end: Option<&str>,
) -> Result<Masked> {
    let masked = inputs.mask(piece);
    let masked = tail(&masked, kept);
    let reach = inputs.mask_reach();
    if reach == 0 || masked.is_empty() {
        return Ok(Masked { text: masked.to_owned(), replaces: 0 });
    }
    let before: std::borrow::Cow<str> = match kept_end {
        Some(end) => end.into(),
        None => tasks::output_tail(c, task_id, reach as i64).await?.into(),
    };
    let joined = format!("{before}{masked}");
    let seamless = inputs.mask(&joined);
    Ok(match seamless.strip_prefix(&*before) {
        Some(rest) => Masked { text: rest.to_owned(), replaces: 0 },
        None => Masked { text: seamless.into_owned(), replaces: before.chars().count() as i64 },
    })
}

/// An artifact name as an environment variable suffix.
pub fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::unseen;

    #[test]
    fn a_piece_sent_again_adds_only_what_the_server_has_not() {
        // (piece, offset, received) → (kept, received after)
        let cases = [
            ("abc", 0, 0, "abc", 3),   // the first piece
            ("abc", 0, 3, "", 3),      // the same, sent again
            ("cdef", 2, 3, "def", 6),  // overlapping what is there
            ("def", 3, 3, "def", 6),   // the next piece
            ("xyz", 10, 6, "xyz", 13), // after a lost piece: kept, not waited for
            ("ab", 0, 13, "", 13),     // long behind
            ("éü✓z", 1, 3, "✓z", 5),   // characters, not bytes
        ];
        for (piece, offset, received, kept, after) in cases {
            assert_eq!(unseen(piece, offset, received), (kept, after), "{piece:?} at {offset}, {received} received");
        }
    }
}
