//! The timer loop: sleeps until the next lease expiry or deadline (or until
//! woken because one changed), then lets the engine fire what is due. The
//! loop owns sleeping and cancellation; `Engine::fire_due_timers` is the step.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, now};

/// Runs until `shutdown` is cancelled.
pub async fn run(engine: Engine, shutdown: CancellationToken) {
    tracing::debug!("timer loop started");
    if let Err(e) = engine.wake_all_queues().await {
        tracing::warn!(error = %e, "could not list queues with waiting tasks");
    }
    loop {
        let sleep = match step(&engine).await {
            Ok(sleep) => sleep,
            Err(e) => {
                tracing::warn!(error = %e, "timer step failed; retrying in a second");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = engine.notifier().timers_woken() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::debug!("timer loop stopped");
}

/// Fires what is due and says how long to sleep before the next look.
/// Deadlines set by other replicas are noticed within the recheck interval.
async fn step(engine: &Engine) -> crate::engine::Result<Duration> {
    if engine.fire_due_timers().await? > 0 {
        return Ok(Duration::ZERO);
    }
    let recheck = engine.settings().recheck;
    Ok(match engine.next_timer().await? {
        Some(at) => Duration::from_millis((at - now()).max(0) as u64 + 1).min(recheck),
        None => recheck,
    })
}
