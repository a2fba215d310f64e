//! The one place that runs a unit of work: this process's turn on the
//! execution, one transaction on one connection, commit or roll back, and
//! only after a successful commit the answer and the wake-ups. Nothing a
//! unit did is visible to anyone (workers, watchers, other replicas, the
//! caller) before its COMMIT returned success.

use super::{
    Engine, Result,
    dispatch::{Eager, Waiter},
    events::Announcement,
    locks::Turn,
    tasks::ClaimedTask,
};
use crate::{
    domain::execution::Millis,
    store::{Batch, Tx},
};

/// An open unit of work.
pub(super) struct Unit {
    _turn: Option<Turn>,
    pub tx: Tx,
    /// Writes decided but not yet sent: they go to the database together at
    /// the end (one statement on PostgreSQL), right before COMMIT.
    pub batch: Batch,
    pub after: After,
    /// Reporters in this unit ready for their next task (see [`Eager`]).
    pub eager: Vec<Eager>,
    /// When the unit began, for the stage transition metric.
    pub started: std::time::Instant,
}

/// What a unit makes happen once it has committed.
#[derive(Default)]
pub(super) struct After {
    /// For other replicas, sent with the commit (PostgreSQL NOTIFY).
    pub announce: Announcement,
    /// Executions changed: watchers.
    pub changed: Vec<String>,
    /// Tasks leased at dispatch to workers parked on this replica.
    pub handoffs: Vec<(Waiter, ClaimedTask)>,
    /// Queues where tasks were left queued for any worker, with how many.
    pub queued: Vec<(String, usize)>,
    /// Deadlines (leases, timeouts) set: the timer must look by then.
    pub deadlines: Vec<Millis>,
    /// Grants or memberships changed.
    pub access: bool,
    /// Log lines and metrics of the stage changes, emitted once committed.
    pub observed: Vec<Observed>,
    /// The execution as this unit leaves it, when a report can be decided
    /// from that next (see [`super::known`]).
    pub known: Option<(String, super::known::Known)>,
}

/// A change to report once it is committed.
pub(super) enum Observed {
    Stage {
        execution: String,
        chain: String,
        stage: String,
        index: usize,
        from: String,
        to: String,
    },
    Execution {
        execution: String,
        chain: String,
        from: String,
        to: String,
    },
    /// A stage ended and the next began in a unit that started then.
    Transition(std::time::Instant),
}

impl Unit {
    fn open(turn: Option<Turn>, tx: Tx, started: std::time::Instant) -> Unit {
        Unit { _turn: turn, tx, batch: Batch::default(), after: After::default(), eager: Vec::new(), started }
    }

    /// Gives back the turn of a unit that ends without writing anything.
    pub fn into_turn(self) -> Option<Turn> {
        self._turn
    }
}

impl After {
    pub fn changed(&mut self, id: &str) {
        if !self.changed.iter().any(|c| c == id) {
            self.announce.changed(id);
            self.changed.push(id.to_owned());
        }
    }

    /// Like [`After::changed`], when the statement that changed it already
    /// told the other replicas.
    pub fn changed_told(&mut self, id: &str) {
        if !self.changed.iter().any(|c| c == id) {
            self.changed.push(id.to_owned());
        }
    }

    pub fn queued(&mut self, queue: &str, n: usize) {
        self.announce.queued(queue, n);
        self.queued.push((queue.to_owned(), n));
    }

    pub fn deadline(&mut self, at: Millis) {
        if self.deadlines.iter().all(|d| at < *d) {
            self.announce.deadline(at);
        }
        self.deadlines.push(at);
    }

    pub fn access_changed(&mut self) {
        self.announce.access();
        self.access = true;
    }
}

impl Engine {
    /// Opens a unit of work, on `execution` if given (waiting for this
    /// process's turn on it first, before taking a connection).
    pub(super) async fn unit(&self, execution: Option<&str>) -> Result<Unit> {
        let started = std::time::Instant::now();
        let turn = match execution {
            Some(id) => Some(self.inner.locks.turn(id).await),
            None => None,
        };
        self.unit_in(turn, started).await
    }

    /// Opens a unit of work in a turn already taken (at `started`).
    pub(super) async fn unit_in(&self, turn: Option<Turn>, started: std::time::Instant) -> Result<Unit> {
        tracing::trace!("unit: turn taken, waiting for a connection");
        let tx = self.store().write().await?;
        tracing::trace!("unit: transaction begun");
        Ok(Unit::open(turn, tx, started))
    }

    /// Opens a unit of work in `turn` (taken at `started`) that opens no
    /// transaction: its writes are sent as one statement by
    /// [`Engine::finish_at_once`]. The turn back on SQLite, or while the
    /// database is known to be down.
    pub(super) fn unit_at_once(&self, turn: Turn, started: std::time::Instant) -> std::result::Result<Unit, Turn> {
        match self.store().at_once() {
            Ok(Some(tx)) => Ok(Unit::open(Some(turn), tx, started)),
            Ok(None) | Err(_) => Err(turn),
        }
    }

    /// Ends a unit opened at once: `send` makes its one statement of the
    /// unit's writes and sends it, which commits it; then what the unit
    /// makes happen. Err with the unit's turn when nothing was written:
    /// `send` had nothing to send (Ok(None)), or the database no longer
    /// held what the unit was decided from.
    pub(super) async fn finish_at_once<T, F, Fut>(&self, unit: Unit, send: F) -> Result<Result<T>, Option<Turn>>
    where
        F: FnOnce(Tx, Batch) -> Fut,
        Fut: std::future::Future<Output = crate::store::Result<Option<T>>>,
    {
        let Unit { _turn, tx, mut batch, mut after, .. } = unit;
        batch.notify(after.announce.take(self.events().origin()));
        match send(tx, batch).await {
            Ok(Some(value)) => {
                self.remember(&mut after);
                drop(_turn);
                self.apply_and_yield(after).await;
                Ok(Ok(value))
            }
            Ok(None) | Err(crate::store::StoreError::Stale(_)) => Err(_turn),
            Err(e) => Ok(Err(e.into())),
        }
    }

    /// Ends a unit: commits if `result` is Ok, then applies what it makes
    /// happen; rolls back otherwise. The result is returned only once its
    /// changes are durable.
    pub(super) async fn finish<T>(&self, unit: Unit, result: Result<T>) -> Result<T> {
        let Unit { _turn, tx, mut batch, mut after, .. } = unit;
        let value = match result {
            Ok(value) => value,
            Err(e) => {
                tx.rollback().await;
                return Err(e);
            }
        };
        batch.notify(after.announce.take(self.events().origin()));
        if let Err(e) = tx.run_last(batch).await {
            tx.rollback().await;
            return Err(e.into());
        }
        // A failed commit drops `after`: leases granted at dispatch were not
        // written, and the parked workers whose tasks they were simply wait on.
        tx.commit().await?;
        self.remember(&mut after);
        drop(_turn);
        self.apply_and_yield(after).await;
        Ok(value)
    }

    /// [`Engine::apply`], then, if it handed tasks to parked workers, lets
    /// them go first: woken by this task, they wait for it to yield the
    /// thread, and the reporter's answer (or a group's other answers) can
    /// wait the few microseconds their hand-off takes.
    async fn apply_and_yield(&self, after: After) {
        let handed = !after.handoffs.is_empty();
        self.apply(after);
        if handed {
            tokio::task::yield_now().await;
        }
    }

    /// What a committed unit knows of the executions it changed, noted
    /// before its turn passes on: the next unit on the execution finds it.
    fn remember(&self, after: &mut After) {
        self.inner.known.committed(&after.changed, after.known.take());
    }

    fn apply(&self, after: After) {
        let events = self.events();
        let all_handed = after.queued.is_empty();
        for id in &after.changed {
            events.execution_changed(id);
        }
        for at in after.deadlines {
            events.deadlines().offer(at);
        }
        for (queue, n) in after.queued {
            self.inner.dispatch.queued(&queue, n);
        }
        if after.access {
            self.inner.callers.clear();
            events.access_changed();
        }
        for observed in after.observed {
            match observed {
                Observed::Stage { execution, chain, stage, index, from, to } => {
                    tracing::info_span!("stage", execution_id = %execution, chain_id = %chain, stage = %stage, index)
                        .in_scope(|| tracing::info!(from = %from, to = %to, "stage changed"));
                }
                Observed::Execution { execution, chain, from, to } => {
                    tracing::info!(execution_id = %execution, chain_id = %chain, from = %from, to = %to, "execution changed");
                }
                Observed::Transition(started) => {
                    metrics::histogram!(crate::metrics::STAGE_TRANSITION).record(started.elapsed().as_secs_f64());
                }
            }
        }
        // A flight only when every task queued went to a worker: then the
        // reports of the flight are what the next dispatch waits for.
        if !after.handoffs.is_empty() && all_handed {
            let mut flights: Vec<(&str, usize)> = Vec::new();
            for (_, task) in &after.handoffs {
                match flights.iter_mut().find(|(id, _)| *id == task.run.execution_id) {
                    Some((_, n)) => *n += 1,
                    None => flights.push((&task.run.execution_id, 1)),
                }
            }
            for (id, n) in flights {
                self.inner.reports.handed(id, n);
            }
        }
        if !after.handoffs.is_empty() {
            let n = after.handoffs.len() as u64;
            self.inner.dispatch.handed_at_dispatch.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!(crate::metrics::HANDED_AT_DISPATCH).increment(n);
        }
        for (waiter, task) in after.handoffs {
            tracing::info!(task_id = %task.run.task_id, execution_id = %task.run.execution_id,
                workflow = %task.run.name, attempt = task.run.attempt, worker = %waiter.worker, "task leased at dispatch");
            if let Err(task) = waiter.hand(task) {
                // The worker's poll ended before its task arrived: give the
                // lease back so another worker gets the task now, not when
                // the lease expires.
                let engine = self.clone();
                tokio::spawn(async move { engine.release(*task).await });
            }
        }
    }
}
