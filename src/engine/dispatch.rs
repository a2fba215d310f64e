//! Workers waiting in PollTask on this replica, per task queue. A unit of
//! work that queues tasks leases them straight to waiting workers in its own
//! transaction (the lease is granted at dispatch) and hands each its task
//! after the commit, so a transition needs no second transaction to claim
//! the next stage. Tasks nobody waits for are queued and claimed as before.
//!
//! Each queue also counts the tasks queued on it as far as this replica
//! knows (queued here, announced by another replica, claimed here): at zero
//! pollers do not ask the database for work that is not there. A queue
//! nothing is known about (after a start, or when announcements were missed)
//! is claimed from until a claim finds it empty.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{Notify, oneshot};

use super::tasks::ClaimedTask;

/// Beyond this many queues, idle ones are forgotten (a caller polling
/// made-up queue names must not grow memory).
const REMEMBERED_QUEUES: usize = 10_000;

#[derive(Default)]
pub(super) struct Dispatcher {
    queues: Arc<Mutex<Queues>>,
    next_waiter: AtomicU64,
    /// How tasks reached workers: claims that found one, claims that found
    /// none, and hand-offs at dispatch.
    pub claims_found: AtomicU64,
    pub claims_empty: AtomicU64,
    pub handed_at_dispatch: AtomicU64,
    /// Of those, leased to a reporter and sent with its report's answer.
    pub handed_with_report: AtomicU64,
}

/// How tasks reached workers on this replica so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimCounts {
    /// Claims (one statement each) that found a task.
    pub found: u64,
    /// Claims that found the queue empty.
    pub empty: u64,
    /// Tasks leased straight to a parked worker by the transaction that queued them.
    pub handed_at_dispatch: u64,
    /// Of those, leased to a worker whose report that transaction committed,
    /// and sent with the report's answer.
    pub handed_with_report: u64,
}

#[derive(Default)]
struct Queues {
    states: HashMap<String, QueueState>,
    /// Bumped when idle queues are forgotten: what a claim saw before that
    /// says nothing about the queue as it is remembered now.
    epoch: u64,
}

/// What a poller saw of a queue before it claimed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    epoch: u64,
    generation: u64,
}

struct QueueState {
    /// Bumped each time tasks may have been queued.
    generation: u64,
    /// Tasks known to wait in the queue; None: unknown (it may hold work).
    queued: Option<u64>,
    waiters: VecDeque<Waiter>,
    wake: Arc<Notify>,
}

impl Default for QueueState {
    /// A queue nothing is known about may hold work (after a restart, say).
    fn default() -> Self {
        QueueState { generation: 1, queued: None, waiters: VecDeque::new(), wake: Arc::new(Notify::new()) }
    }
}

/// A poller's turn to claim from a queue (see [`Dispatcher::reserve`]).
/// Dropped before its claim says what it found (the claim failed, or the
/// poll was cancelled), it leaves the queue's count unknown rather than
/// wrong: a lost count could hide a waiting task from every poller.
pub(super) struct Reservation<'a> {
    dispatcher: &'a Dispatcher,
    queue: &'a str,
    seen: Seen,
    open: bool,
}

impl Reservation<'_> {
    /// The claim found a task (already counted off when reserved).
    pub fn found(mut self) {
        self.open = false;
    }

    /// The claim found the queue empty.
    pub fn empty(mut self) {
        self.open = false;
        self.dispatcher.found_empty(self.queue, self.seen);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.open {
            self.dispatcher.unknown(self.queue);
        }
    }
}

/// A worker parked in PollTask.
pub(super) struct Waiter {
    id: u64,
    pub worker: String,
    to: oneshot::Sender<ClaimedTask>,
}

impl Waiter {
    /// Hands the task over; gives it back if the worker's poll has ended.
    pub fn hand(self, task: ClaimedTask) -> Result<(), Box<ClaimedTask>> {
        self.to.send(task).map_err(Box::new)
    }

    /// A worker that reports a task and is ready for its next one: not in
    /// any line, it is offered only the tasks its own report's unit
    /// dispatches (see [`Eager`]).
    pub fn reporting(worker: &str) -> (Waiter, oneshot::Receiver<ClaimedTask>) {
        let (to, task) = oneshot::channel();
        (Waiter { id: 0, worker: worker.to_owned(), to }, task)
    }
}

/// A reporter ready for a task of `queue` (CompleteTaskRequest.next_task_queue).
/// It rides with its report into the unit that commits it: a task that unit
/// dispatches on `queue` and no parked poller takes is leased to it. Since
/// the unit commits only if the report is accepted, a refused report is
/// never handed a task; a unit rolled back hands nothing.
pub(super) struct Eager {
    pub queue: String,
    pub waiter: Waiter,
}

/// A poller's place in a queue's line; dropping it (the poll ended, or its
/// caller went away) leaves the line.
pub(super) struct Registration {
    pub id: u64,
    pub queue: String,
    pub task: oneshot::Receiver<ClaimedTask>,
    pub wake: Arc<Notify>,
    queues: Arc<Mutex<Queues>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = queues.states.get_mut(&self.queue) {
            s.waiters.retain(|w| w.id != self.id);
        }
    }
}

impl Dispatcher {
    /// Runs `f` on a queue's state. Beyond a bound, queues nobody waits on
    /// are forgotten (they then may hold work, as after a restart).
    fn with<T>(&self, queue: &str, f: impl FnOnce(&mut QueueState) -> T) -> T {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(queues.states.entry(queue.to_owned()).or_default());
        if queues.states.len() > REMEMBERED_QUEUES {
            queues.states.retain(|_, s| !s.waiters.is_empty());
            queues.epoch += 1;
        }
        out
    }

    /// Whether a claim on `queue` may find work.
    pub fn may_have_work(&self, queue: &str) -> bool {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.states.get(queue).is_none_or(|s| s.queued != Some(0))
    }

    /// A turn to claim from `queue` if it may hold work. One of the tasks
    /// known to wait there is counted as this claim's, so two pollers never
    /// claim for the same task (the second would find nothing).
    pub fn reserve<'a>(&'a self, queue: &'a str) -> Option<Reservation<'a>> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = queues.epoch;
        let generation = match queues.states.get_mut(queue) {
            // Nothing is known about it (after a start): it may hold work.
            None => 1,
            Some(s) => match s.queued {
                Some(0) => return None,
                known => {
                    s.queued = known.map(|n| n - 1);
                    s.generation
                }
            },
        };
        Some(Reservation { dispatcher: self, queue, seen: Seen { epoch, generation }, open: true })
    }

    /// The queue's count is no longer known: claims look until one finds it empty.
    fn unknown(&self, queue: &str) {
        self.with(queue, |s| {
            s.generation += 1;
            s.queued = None;
        });
    }

    /// A claim found `queue` empty after it was seen as `seen`.
    fn found_empty(&self, queue: &str, seen: Seen) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if queues.epoch != seen.epoch {
            return;
        }
        let s = queues.states.entry(queue.to_owned()).or_default();
        // Queued again while the claim ran: its "empty" is stale.
        if s.generation == seen.generation {
            s.queued = Some(0);
        }
    }

    /// Tasks were queued on `queue`: wake up to `n` parked pollers to claim them.
    pub fn queued(&self, queue: &str, n: usize) {
        let (wake, parked) = self.with(queue, |s| {
            s.generation += 1;
            s.queued = s.queued.map(|k| k + n as u64);
            (s.wake.clone(), s.waiters.len())
        });
        // Only parked pollers can be woken; one more permit covers a poller
        // about to park.
        for _ in 0..n.min(parked + 1).max(1) {
            wake.notify_one();
        }
    }

    /// Nothing is known any more (the channel from other replicas dropped):
    /// every queue may hold work, and every parked poller looks again.
    pub fn forget_all(&self) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for s in queues.states.values_mut() {
            s.generation += 1;
            s.queued = None;
            s.wake.notify_waiters();
        }
    }

    /// Parks a poller in `queue`'s line.
    pub fn register(&self, queue: &str, worker: &str) -> Registration {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (to, task) = oneshot::channel();
        let wake = self.with(queue, |s| {
            s.waiters.push_back(Waiter { id, worker: worker.to_owned(), to });
            s.wake.clone()
        });
        Registration { id, queue: queue.to_owned(), task, wake, queues: self.queues.clone() }
    }

    /// Leaves the line; false when a dispatch took this poller first (its
    /// task is then on its way, or the dispatch rolled back).
    pub fn withdraw(&self, r: &Registration) -> bool {
        self.with(&r.queue, |s| match s.waiters.iter().position(|w| w.id == r.id) {
            Some(i) => {
                s.waiters.remove(i);
                true
            }
            None => false,
        })
    }

    /// Leaves the line, with the task a dispatch handed meanwhile if one
    /// took this poller (waiting for that dispatch's commit, or its
    /// rollback, which hands nothing).
    pub async fn collect(&self, mut r: Registration) -> Option<ClaimedTask> {
        if self.withdraw(&r) {
            return None;
        }
        (&mut r.task).await.ok()
    }

    /// Takes up to `n` parked pollers of `queue`, longest waiting first.
    pub fn take(&self, queue: &str, n: usize) -> Vec<Waiter> {
        self.with(queue, |s| {
            let mut out = Vec::new();
            while out.len() < n {
                match s.waiters.pop_front() {
                    Some(w) if w.to.is_closed() => continue,
                    Some(w) => out.push(w),
                    None => break,
                }
            }
            out
        })
    }

    /// How many queues are remembered (at most [`REMEMBERED_QUEUES`] beside
    /// the ones pollers are parked on).
    pub fn len(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).states.len()
    }

    /// How many queues have pollers parked on them now.
    pub fn parked(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).states.values().filter(|s| !s.waiters.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_counts_what_was_queued_and_claimed() {
        let d = Dispatcher::default();
        d.reserve("q").expect("nothing known: may hold work").empty();
        assert!(d.reserve("q").is_none(), "found empty: no claim until something is queued");
        d.queued("q", 2);
        let (a, b) = (d.reserve("q").expect("two queued"), d.reserve("q").expect("two queued"));
        assert!(d.reserve("q").is_none(), "both tasks have a claim on their way: a third would find nothing");
        a.found();
        b.found();
        assert!(!d.may_have_work("q"));
        d.forget_all();
        assert!(d.may_have_work("q"), "after announcements were missed nothing is known");
    }

    #[test]
    fn a_queue_found_empty_stays_empty_until_something_is_queued() {
        let d = Dispatcher::default();
        d.reserve("q").expect("unknown").empty();
        assert!(!d.may_have_work("q"));
        d.queued("q", 1);
        let r = d.reserve("q").expect("one queued");
        // Queued again while the claim ran: the claim's "empty" is stale.
        d.queued("q", 1);
        r.empty();
        assert!(d.may_have_work("q"));
    }

    #[test]
    fn a_claim_that_never_answered_leaves_the_count_unknown() {
        let d = Dispatcher::default();
        d.reserve("q").expect("unknown").empty();
        d.queued("q", 1);
        drop(d.reserve("q").expect("one queued")); // the claim failed
        assert!(d.reserve("q").is_some(), "the task may still wait: pollers must look");
    }

    #[test]
    fn forgetting_idle_queues_voids_what_claims_saw_before() {
        let d = Dispatcher::default();
        let r = d.reserve("q0").expect("unknown");
        for i in 0..=REMEMBERED_QUEUES {
            d.queued(&format!("q{i}"), 1);
        }
        assert!(d.len() <= 1);
        r.empty();
        assert!(d.may_have_work("q0"), "a claim from before the forgetting must not mark the queue empty");
    }

    #[test]
    fn pollers_are_taken_in_order_and_can_withdraw() {
        let d = Dispatcher::default();
        let a = d.register("q", "a");
        let b = d.register("q", "b");
        assert!(d.withdraw(&a));
        let taken = d.take("q", 5);
        assert_eq!(taken.iter().map(|w| w.worker.as_str()).collect::<Vec<_>>(), ["b"]);
        assert!(!d.withdraw(&b), "b was taken by the dispatch");
        drop(taken);
        drop((a, b));
    }
}
