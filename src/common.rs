//! Small helpers every layer shares, each written once: the clock in Unix
//! seconds, a mutex lock that outlives a panic, and a warning throttled to
//! one line per interval. Below everything; imports nothing of rpol.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Seconds since the epoch at `time` (0 before it).
pub fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Locks `mutex`, also when a thread panicked holding it: every value
/// rpol keeps under a lock (caches, counters, slots) stays usable after
/// a half-done update, and serving on beats panicking too.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The least time between two warnings of one [`Throttled`].
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning logged at most once per [`WARN_EVERY`], with how many times
/// its cause happened since, so that a flood (a dead store, a storm of
/// refused connections) cannot flood the log.
#[derive(Debug, Default)]
pub struct Throttled {
    last: Option<Instant>,
    since: u64,
}

impl Throttled {
    /// Counts one event; `Some(events since the last warning, this one
    /// included)` when it is time to warn again.
    pub fn due(&mut self) -> Option<u64> {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }

    /// Counts one event and, when due, logs `message(events)`.
    pub fn warn(&mut self, message: impl FnOnce(u64) -> String) {
        if let Some(count) = self.due() {
            tracing::warn!("{}", message(count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_counts_what_it_did_not_say() {
        let mut w = Throttled::default();
        assert_eq!(w.due(), Some(1), "the first is said");
        assert_eq!(w.due(), None);
        assert_eq!(w.due(), None);
        w.last = w.last.map(|t| t - WARN_EVERY);
        assert_eq!(w.due(), Some(3), "two held back, and this one");
    }

    #[test]
    fn a_poisoned_lock_still_locks() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[test]
    fn the_clock_counts_from_the_epoch() {
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_secs(7)), 7);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(7)), 0);
        assert!(unix_now() > 1_700_000_000);
    }
}
