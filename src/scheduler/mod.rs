//! The loops that drive the engine: the timer loop, which sleeps until the
//! next deadline anyone set (and looks at the database only then), and the
//! relay of other replicas' announcements, and retention.

mod retention;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use retention::retention;

use crate::{
    engine::{Engine, now, timers::BATCH},
    store,
};

/// Runs the timer loop until `shutdown` is cancelled.
pub async fn run(engine: Engine, shutdown: CancellationToken) {
    tracing::debug!("timer loop started");
    if let Err(e) = engine.wake_all_queues().await {
        tracing::warn!(error = %e, "could not list queues with waiting tasks");
    }
    let deadlines = engine.events().deadlines();
    // What the database says is due, once at start; from then on commits
    // offer their deadlines.
    deadlines.offer(0);
    loop {
        let mut due_in = deadlines.next().map(|at| Duration::from_millis((at - now()).max(0) as u64));
        if !engine.events().is_relayed() {
            // Deadlines set by other replicas are not announced meanwhile.
            due_in = Some(due_in.map_or(engine.settings().recheck, |d| d.min(engine.settings().recheck)));
        }
        tracing::trace!(?due_in, "timer loop sleeps");
        let sleep = async {
            match due_in {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = deadlines.changed() => continue,
            _ = shutdown.cancelled() => break,
        }
        tracing::trace!("timer loop wakes");
        if let Err(e) = step(&engine).await {
            tracing::warn!(error = %e, "timer step failed; retrying in a second");
            deadlines.offer(now() + 1000);
        }
    }
    tracing::debug!("timer loop stopped");
}

/// Fires what is due and sets the next deadline from the database.
async fn step(engine: &Engine) -> crate::engine::Result<()> {
    let deadlines = engine.events().deadlines();
    deadlines.begin_lookup();
    let fired = engine.fire_due_timers().await;
    let next = match fired {
        // A full batch: more may be due right now.
        Ok(n) if n as u64 >= BATCH => Ok(Some(now())),
        Ok(_) => engine.next_timer().await,
        Err(e) => Err(e),
    };
    match next {
        Ok(next) => {
            deadlines.end_lookup(next);
            Ok(())
        }
        Err(e) => {
            deadlines.end_lookup(None);
            Err(e)
        }
    }
}

/// Relays what other replicas announce (PostgreSQL LISTEN/NOTIFY) to this
/// replica's pollers, watchers, timers and caches, reconnecting after
/// failures; while it is down, waiters fall back to rechecking.
pub async fn relay(engine: Engine, shutdown: CancellationToken) {
    if !engine.store().is_postgres() {
        return;
    }
    loop {
        let on_event = |payload: &str| {
            // What this replica announced it applied when it committed.
            if engine.events().is_own(payload) {
                return;
            }
            if payload.is_empty() {
                engine.forget_queues();
                engine.forget_known();
                engine.access_changed_elsewhere();
                engine.events().set_relayed(true);
            }
            engine
                .events()
                .apply_remote(payload, &|queue, n| engine.queue_woken(queue, n), &|id| engine.changed_elsewhere(id));
            if payload.lines().any(|l| l == "a") {
                engine.access_changed_elsewhere();
            }
        };
        let listened = store::listen(engine.store(), store::EVENTS_CHANNEL, on_event);
        tokio::select! {
            result = listened => {
                engine.events().set_relayed(false);
                if let Err(e) = result {
                    tracing::warn!(error = %e, "lost the channel from other replicas; rechecking until it is back");
                }
            }
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
