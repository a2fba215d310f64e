//! Delays between retries of the worker: exponential, capped, and each
//! with a random part of itself added, so that the workers that lost a
//! server together (a restart, a rollout) do not all come back at the same
//! instant and again at the same doubled instants after.

use std::time::Duration;

use backon::BackoffBuilder as _;

/// Delays from `first` (plus up to as much again), doubling up to `max`
/// (plus up to as much again), without end.
pub fn jittered(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_a_random_part() {
        let first = Duration::from_millis(100);
        let max = Duration::from_millis(800);
        let delays: Vec<Duration> = jittered(first, max).take(8).collect();
        for (i, d) in delays.iter().enumerate() {
            let base = (first * 2u32.pow(i as u32)).min(max);
            assert!(*d >= base && *d < base * 2, "delay {i}: {d:?} not in [{base:?}, {:?})", base * 2);
        }
    }

    #[test]
    fn two_workers_do_not_wait_the_same() {
        let a: Vec<Duration> = jittered(Duration::from_secs(1), Duration::from_secs(5)).take(5).collect();
        let b: Vec<Duration> = jittered(Duration::from_secs(1), Duration::from_secs(5)).take(5).collect();
        assert_ne!(a, b);
    }
}
