//! The retention loop: a sweep every interval, while the server runs. Every
//! replica runs it; their batches lock the same rows, so two replicas never
//! delete a chain twice, they only share the work.

use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, SweepOptions};

/// Sweeps every `retention_interval` until `shutdown` is cancelled; does
/// nothing when the policy deletes nothing.
pub async fn retention(engine: Engine, shutdown: CancellationToken) {
    let policy = engine.settings().retention;
    if !policy.is_enabled() {
        return;
    }
    let every = engine.settings().retention_interval.max(std::time::Duration::from_millis(100));
    tracing::info!(?policy, every = ?every, "retention loop started");
    loop {
        // Not at start: a replica that restarts often should not sweep each time.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => break,
        }
        let sweep = engine.sweep(&policy, SweepOptions::default());
        tokio::select! {
            result = sweep => if let Err(e) = result {
                tracing::warn!(error = %e, "retention sweep failed; the next one tries again");
            },
            // A batch cut short rolls back whole: nothing half-deleted.
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::debug!("retention loop stopped");
}
