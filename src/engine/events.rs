//! In-process wake-ups after a commit: watchers of an execution, the timer
//! loop's next deadline, and changes to access. The database stays the
//! source of truth; these only end waits. Other replicas' commits arrive
//! through PostgreSQL NOTIFY ([`Events::apply_remote`]).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::sync::{Notify, watch};

use crate::domain::execution::Millis;

pub struct Events {
    /// The stamp of the latest change of each watched execution.
    executions: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Stamps changes in the order this process learns of them (after their
    /// commit): a view read after stamp `s` was taken shows every change
    /// stamped `s` or earlier.
    stamps: AtomicU64,
    deadlines: Deadlines,
    /// Bumped when a grant, group or membership changes anywhere.
    access: watch::Sender<u64>,
    /// Bumped when the channel from other replicas reconnects: whatever they
    /// announced meanwhile was missed, so everyone looks again.
    resync: watch::Sender<u64>,
    /// PostgreSQL only: whether other replicas' announcements arrive; while
    /// they do not, waiters recheck on a timer.
    relayed: AtomicBool,
    /// This replica's name in its own announcements. PostgreSQL delivers a
    /// replica's NOTIFY back to its own LISTEN; what it applied at commit it
    /// must not apply again (a queue would count its tasks twice, and pollers
    /// would claim work that is not there).
    origin: String,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            executions: Mutex::default(),
            stamps: AtomicU64::new(1),
            deadlines: Deadlines::default(),
            access: watch::channel(0).0,
            resync: watch::channel(0).0,
            relayed: AtomicBool::new(true),
            origin: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

impl Events {
    /// The stamps of one execution's changes as they are committed (by this
    /// replica, or announced by another).
    pub fn watch_execution(&self, id: &str) -> watch::Receiver<u64> {
        let mut map = self.executions.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 1024 {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        map.entry(id.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// The stamp a read starting now may claim: it sees every change
    /// announced before.
    pub fn stamp(&self) -> u64 {
        self.stamps.load(Ordering::SeqCst)
    }

    /// Changes of one task's output (a heartbeat or report with output, the
    /// task's end), for followers of the output.
    pub fn watch_output(&self, task_id: &str) -> watch::Receiver<u64> {
        self.watch_execution(&format!("output:{task_id}"))
    }

    /// New output of task `task_id` was committed.
    pub fn output_changed(&self, task_id: &str) {
        self.execution_changed(&format!("output:{task_id}"));
    }

    /// Execution `id` changed (committed): wakes its watchers.
    pub fn execution_changed(&self, id: &str) {
        let stamp = self.stamps.fetch_add(1, Ordering::SeqCst) + 1;
        let mut map = self.executions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(id) {
            if tx.receiver_count() == 0 {
                map.remove(id);
            } else {
                tx.send_replace(stamp);
            }
        }
    }

    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    pub fn access_changes(&self) -> watch::Receiver<u64> {
        self.access.subscribe()
    }

    pub fn access_changed(&self) {
        self.access.send_modify(|g| *g += 1);
    }

    pub fn resyncs(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
    }

    pub fn is_relayed(&self) -> bool {
        self.relayed.load(Ordering::Relaxed)
    }

    pub fn set_relayed(&self, relayed: bool) {
        self.relayed.store(relayed, Ordering::Relaxed);
    }

    /// This replica's name in the announcements it makes.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether `payload` is an announcement this replica made itself (and
    /// applied when it committed).
    pub fn is_own(&self, payload: &str) -> bool {
        payload.lines().next().and_then(|l| l.strip_prefix("r ")) == Some(self.origin.as_str())
    }

    /// Applies what another replica announced (one line per fact, see
    /// [`Announcement`]); an empty payload means the channel reconnected.
    /// This replica's own announcements are ignored.
    pub fn apply_remote(&self, payload: &str, queues: &dyn Fn(&str, usize), changed: &dyn Fn(&str)) {
        if payload.is_empty() {
            self.resync.send_modify(|g| *g += 1);
            self.deadlines.offer(0);
            self.access_changed();
            return;
        }
        if self.is_own(payload) {
            return;
        }
        for line in payload.lines() {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("c"), Some(id), _) => changed(id),
                (Some("o"), Some(task), _) => self.output_changed(task),
                (Some("q"), Some(queue), n) => queues(queue, n.and_then(|n| n.parse().ok()).unwrap_or(1)),
                (Some("d"), Some(at), _) => {
                    if let Ok(at) = at.parse() {
                        self.deadlines.offer(at);
                    }
                }
                (Some("a"), _, _) => self.access_changed(),
                (Some("r"), _, _) => {}
                _ => tracing::debug!(line, "ignored an announcement from another replica"),
            }
        }
    }
}

/// What a commit tells other replicas, as the payload of one NOTIFY.
#[derive(Debug, Default)]
pub struct Announcement {
    lines: Vec<String>,
}

impl Announcement {
    pub fn changed(&mut self, id: &str) {
        let line = format!("c {id}");
        if !self.lines.contains(&line) {
            self.lines.push(line);
        }
    }

    pub fn queued(&mut self, queue: &str, n: usize) {
        self.lines.push(format!("q {queue} {n}"));
    }

    pub fn deadline(&mut self, at: Millis) {
        self.lines.push(format!("d {at}"));
    }

    pub fn access(&mut self) {
        self.lines.push("a".into());
    }

    /// The payload of what is left to tell (empty if nothing), which is
    /// then told; its first line names the replica that tells it.
    pub fn take(&mut self, origin: &str) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let mut payload = format!("r {origin}");
        for line in std::mem::take(&mut self.lines) {
            payload.push('\n');
            payload.push_str(&line);
        }
        payload
    }
}

/// The earliest moment a timer may be due, as far as this replica knows:
/// offered by every commit that sets a lease, a workflow deadline or an
/// approval deadline, so the timer loop sleeps until then and no longer
/// looks at the database while nothing is due.
#[derive(Default)]
pub struct Deadlines {
    state: Mutex<DeadlineState>,
    woken: Notify,
}

#[derive(Default)]
struct DeadlineState {
    next: Option<Millis>,
    /// While the timer loop reads the next deadline from the database,
    /// offers made meanwhile are kept here so the answer cannot hide them.
    collecting: Option<Option<Millis>>,
}

impl Deadlines {
    /// Something may be due at `at`.
    pub fn offer(&self, at: Millis) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(collected) = &mut s.collecting {
            *collected = Some(collected.map_or(at, |c| c.min(at)));
        }
        if s.next.is_none_or(|n| at < n) {
            s.next = Some(at);
            drop(s);
            self.woken.notify_one();
        }
    }

    pub fn next(&self) -> Option<Millis> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).next
    }

    /// Starts reading the next deadline from the database.
    pub fn begin_lookup(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).collecting = Some(None);
    }

    /// Sets the next deadline read from the database (with anything offered
    /// since the lookup began).
    pub fn end_lookup(&self, found: Option<Millis>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let collected = s.collecting.take().flatten();
        s.next = match (found, collected) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    pub async fn changed(&self) {
        self.woken.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_cannot_hide_a_deadline_offered_while_it_ran() {
        let d = Deadlines::default();
        d.begin_lookup();
        d.offer(50);
        d.end_lookup(Some(100));
        assert_eq!(d.next(), Some(50));
        d.begin_lookup();
        d.end_lookup(None);
        assert_eq!(d.next(), None);
        d.offer(70);
        d.offer(90);
        assert_eq!(d.next(), Some(70));
    }

    #[tokio::test]
    async fn watchers_are_woken_with_ever_later_stamps() {
        let e = Events::default();
        let mut rx = e.watch_execution("x");
        let before = e.stamp();
        e.execution_changed("x");
        assert!(rx.has_changed().unwrap());
        let first = *rx.borrow_and_update();
        assert!(first > before);
        e.execution_changed("y");
        assert!(!rx.has_changed().unwrap());
        let seen = std::sync::Mutex::new(Vec::new());
        e.apply_remote("c x\nq default 3\nd 10", &|q, n| seen.lock().unwrap().push((q.to_owned(), n)), &|id| {
            e.execution_changed(id)
        });
        assert!(*rx.borrow_and_update() > first);
        assert_eq!(seen.into_inner().unwrap(), [("default".to_string(), 3)]);
        assert_eq!(e.deadlines().next(), Some(10));
    }

    #[test]
    fn a_replica_ignores_its_own_announcements_and_applies_others() {
        let (mine, other) = (Events::default(), Events::default());
        let mut told = Announcement::default();
        told.queued("default", 2);
        told.changed("x");
        let payload = told.take(mine.origin());
        assert!(told.take(mine.origin()).is_empty(), "what was told is not told again");
        let counted = |e: &Events| {
            let seen = std::sync::Mutex::new(0);
            e.apply_remote(&payload, &|_, n| *seen.lock().unwrap() += n, &|_| {});
            seen.into_inner().unwrap()
        };
        assert_eq!(counted(&mine), 0, "queued here and counted at commit; counting it again would double it");
        assert_eq!(counted(&other), 2);
    }
}
