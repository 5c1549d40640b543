//! What the rate limits remember locally: which (limit, key, window) was
//! already warned about, so that crossing a limit is logged once per key
//! and window however often the key is refused, and how many crossings
//! each limit saw (the metrics). Bounded in entries; touched only when a
//! limit refuses a request, never on the way of one within its budget.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::bounded::BoundedLru;
use crate::common::lock;
use crate::state::store::rate::RateKey;

/// Keys remembered as warned about. One beyond it may be warned about
/// twice in a window, which costs a log line.
pub const WARNED_KEYS: usize = 10_000;

/// Limit names counted. Names come from policy.toml; the cap only keeps a
/// long run of reloads with ever new names from growing the map.
pub const LIMITS_COUNTED: usize = 1_000;

#[derive(Default)]
struct Inner {
    warned: Option<BoundedLru<(RateKey, u64), ()>>,
    exceeded: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct RateEvents(Mutex<Inner>);

impl std::fmt::Debug for RateEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateEvents")
    }
}

impl RateEvents {
    /// Notes that `key` of `limit` is over its budget in window number
    /// `window_slot`; true the first time (then the caller logs, and the
    /// crossing is counted).
    pub fn crossed(&self, limit: &str, key: RateKey, window_slot: u64) -> bool {
        let mut inner = lock(&self.0);
        let warned = inner
            .warned
            .get_or_insert_with(|| BoundedLru::new(WARNED_KEYS, usize::MAX));
        if warned.get(&(key, window_slot)).is_some() {
            return false;
        }
        warned.put((key, window_slot), (), 0);
        let known = inner.exceeded.contains_key(limit);
        if known || inner.exceeded.len() < LIMITS_COUNTED {
            *inner.exceeded.entry(limit.to_string()).or_default() += 1;
        }
        true
    }

    /// Crossings per limit name since start.
    pub fn exceeded(&self) -> Vec<(String, u64)> {
        let inner = lock(&self.0);
        inner
            .exceeded
            .iter()
            .map(|(n, c)| (n.clone(), *c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_and_window() {
        let e = RateEvents::default();
        let a = RateKey::new("l", "k", "a");
        let b = RateKey::new("l", "k", "b");
        assert!(e.crossed("l", a, 7));
        assert!(!e.crossed("l", a, 7));
        assert!(e.crossed("l", b, 7));
        assert!(e.crossed("l", a, 8));
        assert_eq!(e.exceeded(), [("l".to_string(), 3)]);
    }
}
