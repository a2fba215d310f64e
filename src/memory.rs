//! Keeps the server's resident memory close to what it really holds.
//!
//! glibc's malloc raises its mmap threshold to the size of the largest
//! block freed (up to 32 MiB) and its trim threshold to twice that. After
//! one big request, later big blocks come from the arenas instead of mmap,
//! and an arena's free top is no longer given back, not even by
//! `malloc_trim` (which frees whole pages inside free chunks, never the
//! top below the trim threshold). After 15,000 adversarial requests
//! (fuzz_long) the process held 126 MiB resident, of which glibc counted
//! 180 MiB of its arenas' 184 MiB as free: 11 arenas kept their tops. So
//! [`configure`] fixes both thresholds at glibc's own starting values,
//! which also turns the raising off; the same run then held 63 MiB.
//!
//! On top of that, a trim every few seconds returns pages freed inside the
//! arenas after a burst (5,000 watch streams closing, the watchers bench);
//! it costs about a millisecond.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Blocks of this size and more get their own mapping, unmapped when freed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// An arena's free top beyond this is given back at once.
pub const TRIM_THRESHOLD: usize = 128 * 1024;

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

/// Fixes glibc's mmap and trim thresholds (see the module docs), unless
/// the environment sets them (`MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_TRIM_THRESHOLD_` or `GLIBC_TUNABLES`): call it at start-up,
/// before the threads that allocate start. Returns whether it set them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn configure() -> bool {
    let set_outside = ["GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if set_outside {
        return false;
    }
    // SAFETY: mallopt only changes the allocator's parameters; both values
    // are within the ranges glibc accepts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() -> bool {
    false
}

/// Gives the heap's free pages back to the system now (glibc only).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
