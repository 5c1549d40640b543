//! PREPEND actions already sent, per transaction (`instance`), so that a
//! header reaches a message once however many RCPTs ask for it, and a
//! header a response could not carry (one action per response) goes out
//! with a later one.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

/// Transactions remembered (bounded; older ones are long finished).
const TRANSACTIONS: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

#[derive(Debug)]
pub struct Prepended {
    sent: Mutex<LruCache<String, Vec<String>>>,
}

impl Default for Prepended {
    fn default() -> Self {
        Prepended {
            sent: Mutex::new(LruCache::new(TRANSACTIONS)),
        }
    }
}

impl Prepended {
    /// Whether `action` already went out in this transaction.
    pub fn was_sent(&self, instance: &str, action: &str) -> bool {
        if instance.is_empty() {
            return false;
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.get(instance)
            .is_some_and(|v| v.iter().any(|a| a == action))
    }

    /// Records that `action` goes out now.
    pub fn record(&self, instance: &str, action: &str) {
        if instance.is_empty() {
            return;
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        match sent.get_mut(instance) {
            Some(v) => v.push(action.to_string()),
            None => {
                sent.put(instance.to_string(), vec![action.to_string()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_transaction() {
        let p = Prepended::default();
        assert!(!p.was_sent("a", "PREPEND X: 1"));
        p.record("a", "PREPEND X: 1");
        assert!(p.was_sent("a", "PREPEND X: 1"));
        assert!(!p.was_sent("a", "PREPEND Y: 2"));
        assert!(!p.was_sent("b", "PREPEND X: 1"));
        p.record("", "PREPEND X: 1");
        assert!(!p.was_sent("", "PREPEND X: 1"));
    }
}
