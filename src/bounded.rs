//! A least-recently-used map bounded in bytes as well as in entries, so
//! that values a client chooses (names, addresses, headers) cannot grow
//! memory past a known figure however large each one is.

use std::borrow::Borrow;
use std::hash::Hash;

use lru::LruCache;

/// Bytes charged per entry on top of its own weight: the map's node, the
/// key and value headers, the hash table slot (an estimate on the high
/// side for 64-bit targets).
pub const ENTRY_OVERHEAD: usize = 96;

/// An LRU map that evicts the least recently used entries until both its
/// entry count and the sum of its entries' weights fit.
pub struct BoundedLru<K: Hash + Eq, V> {
    map: LruCache<K, (V, usize)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq, V> BoundedLru<K, V> {
    /// At most `max_entries` entries and `max_bytes` bytes (weights plus
    /// [`ENTRY_OVERHEAD`] each); both at least 1.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        BoundedLru {
            map: LruCache::unbounded(),
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// The value for `key`, or for anything `K` borrows as (a `&str` for a
    /// `String`-like key: a lookup need not build a `K`).
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|(v, _)| v)
    }

    /// The value for `key`, without marking it as used.
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.peek(key).map(|(v, _)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    /// Inserts `value`, whose heap bytes (strings, vectors) are `weight`.
    /// A value larger than the whole budget is not kept.
    pub fn put(&mut self, key: K, value: V, weight: usize) {
        let weight = weight.saturating_add(ENTRY_OVERHEAD);
        self.pop(&key);
        if weight > self.max_bytes {
            return;
        }
        while self.map.len() >= self.max_entries || self.bytes + weight > self.max_bytes {
            match self.map.pop_lru() {
                Some((_, (_, w))) => self.bytes -= w,
                None => break,
            }
        }
        self.bytes += weight;
        self.map.put(key, (value, weight));
    }

    pub fn pop<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, weight) = self.map.pop(key)?;
        self.bytes -= weight;
        Some(value)
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes charged now (weights plus overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_entries() {
        let mut m = BoundedLru::new(2, usize::MAX);
        m.put(1, "a", 1);
        m.put(2, "b", 1);
        m.get(&1);
        m.put(3, "c", 1);
        assert_eq!(m.len(), 2);
        assert!(m.get(&2).is_none(), "the least recently used goes first");
        assert!(m.get(&1).is_some() && m.get(&3).is_some());
    }

    #[test]
    fn bounded_by_bytes() {
        let budget = 10 * (ENTRY_OVERHEAD + 1000);
        let mut m = BoundedLru::new(usize::MAX, budget);
        for i in 0..1000 {
            m.put(i, vec![0u8; 1000], 1000);
            assert!(m.bytes() <= budget);
        }
        assert_eq!(m.len(), 10);
        // Too big for the whole budget: not kept, nothing evicted for it.
        m.put(5000, vec![], budget);
        assert!(m.get(&5000).is_none());
        assert_eq!(m.len(), 10);
        // Replacing an entry does not count it twice.
        m.put(999, vec![], 0);
        assert_eq!(m.bytes(), 9 * (ENTRY_OVERHEAD + 1000) + ENTRY_OVERHEAD);
        m.clear();
        assert_eq!((m.len(), m.bytes()), (0, 0));
    }
}
