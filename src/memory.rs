//! Gives memory the server freed back to the system. glibc keeps what a
//! burst freed in its arenas: after 5,000 watch streams closed the server
//! stayed at 3.5× its idle size (the watchers bench), after 100,000
//! adversarial requests at several times it (fuzz_long), though nothing was
//! held. A trim every few seconds returns it; it costs about a millisecond.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Trims the heap every [`TRIM_EVERY`] until `shutdown` (glibc only; other
/// allocators give memory back by themselves or not at all).
pub async fn trim_periodically(shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => trim(),
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
