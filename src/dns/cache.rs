//! The resolver's cache: an LRU of outcomes with their expiry, bounded in
//! entries and in bytes, plus the table of queries in flight, and the TTL
//! clamping rules.
//!
//! Only definite answers are cached (records, NXDOMAIN, NODATA). Temporary
//! failures are not: a SERVFAIL or timeout is usually transient, and caching
//! it would turn a one-second glitch into minutes of deferred mail. The
//! storm a failing name could cause is already damped by single-flight
//! (concurrent lookups share the one query that is failing).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Answer, Outcome, RecordKind};
use crate::bounded::BoundedLru;

/// Bytes of memory the DNS cache may use whatever `[dns] cache_size` says:
/// the names queried come from clients (HELO, sender, PTR names) and a TXT
/// answer can be tens of kilobytes.
pub const DNS_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Cache key: the record type's tag byte, then the normalised name, in
/// one string, so that a lookup can probe with bytes built on the stack
/// (see `with_probe` in the resolver): a hit allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Key(Box<str>);

// Hashed and compared as its bytes, as `Borrow<[u8]>` requires.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Key {
    /// The key a probe stands for (a probe is a tag byte and a name, all
    /// text: see `with_probe`).
    pub(crate) fn from_probe(probe: &[u8]) -> Key {
        Key(String::from_utf8_lossy(probe).into())
    }

    pub(crate) fn name(&self) -> &str {
        &self.0[1..]
    }

    pub(crate) fn kind(&self) -> RecordKind {
        RecordKind::from_tag(self.0.as_bytes()[0])
    }
}

/// One cached outcome, the name it answers (handed to every hit without a
/// copy) and the instant it stops being valid.
struct Entry {
    name: Arc<str>,
    outcome: Outcome,
    expires: Instant,
    /// Fetched by a prefetch that no lookup joined while it was in
    /// flight: the first lookup to read it takes it as its own query.
    unclaimed: AtomicBool,
}

/// A query running now.
pub(crate) struct InFlight {
    /// Where its outcome appears.
    pub(crate) rx: watch::Receiver<Option<Outcome>>,
    /// Sent by a prefetch, and no lookup has joined it yet: the first
    /// that does counts as the miss (as it would have, asking itself).
    pub(crate) prefetched: bool,
}

/// LRU cache and in-flight table, kept under one mutex by the resolver.
pub(crate) struct CacheState {
    lru: BoundedLru<Key, Entry>,
    /// Queries running now; joiners wait on the receiver until the value
    /// becomes `Some`.
    pub(crate) inflight: HashMap<Key, InFlight>,
}

impl CacheState {
    /// A cache of at most `entries` entries; `None` when `entries` is 0.
    pub(crate) fn new(entries: usize) -> Option<CacheState> {
        if entries == 0 {
            return None;
        }
        Some(CacheState {
            lru: BoundedLru::new(entries, DNS_CACHE_BYTES),
            inflight: HashMap::new(),
        })
    }

    /// The cached name and outcome for `probe` (a [`Key`]'s text) if still
    /// valid at `now`, and whether this is the first read of an answer a
    /// prefetch fetched ([`CacheState::put_prefetched`]); an expired entry
    /// is dropped on the way.
    pub(crate) fn get(&mut self, probe: &[u8], now: Instant) -> Option<(Arc<str>, Outcome, bool)> {
        let entry = self.lru.get(probe)?;
        if entry.expires > now {
            let first = entry.unclaimed.swap(false, Ordering::Relaxed);
            return Some((entry.name.clone(), entry.outcome.clone(), first));
        }
        self.lru.pop(probe);
        None
    }

    /// When the entry for `probe` expires, if there is one (expired or
    /// not); it is not marked as used.
    pub(crate) fn expires(&self, probe: &[u8]) -> Option<Instant> {
        self.lru.peek(probe).map(|e| e.expires)
    }

    /// Cache `outcome` until `expires`, evicting the least recently used
    /// entry when full.
    pub(crate) fn put(&mut self, key: Key, outcome: Outcome, expires: Instant) {
        self.insert(key, outcome, expires, false);
    }

    /// [`CacheState::put`] for the answer of a prefetch no lookup has
    /// joined: its first reader is told so by [`CacheState::get`].
    pub(crate) fn put_prefetched(&mut self, key: Key, outcome: Outcome, expires: Instant) {
        self.insert(key, outcome, expires, true);
    }

    fn insert(&mut self, key: Key, outcome: Outcome, expires: Instant, unclaimed: bool) {
        let name: Arc<str> = key.name().into();
        // The key's text, and the name again with its two counts.
        let weight = key.0.len() + 16 + name.len() + heap_bytes(&outcome);
        let entry = Entry {
            name,
            outcome,
            expires,
            unclaimed: AtomicBool::new(unclaimed),
        };
        self.lru.put(key, entry, weight);
    }

    pub(crate) fn len(&self) -> usize {
        self.lru.len()
    }

    pub(crate) fn clear(&mut self) {
        self.lru.clear();
    }
}

/// Heap bytes an outcome holds (a `String` or `Vec` costs its header too).
fn heap_bytes(outcome: &Outcome) -> usize {
    const HEADER: usize = std::mem::size_of::<Vec<u8>>();
    let Outcome::Found(answer) = outcome else {
        return 0;
    };
    HEADER
        + match &**answer {
            Answer::A(v) => 4 * v.len(),
            Answer::Aaaa(v) => 16 * v.len(),
            Answer::Mx(v) => v.iter().map(|m| HEADER + 8 + m.exchange.len()).sum(),
            Answer::Txt(v) => v.iter().map(|t| HEADER + t.len()).sum(),
            Answer::Ptr(v) => v.iter().map(|n| HEADER + n.len()).sum(),
        }
}

/// What the upstream said about how long an outcome may be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ttl {
    /// Positive answer: the smallest TTL of the records used.
    Positive(Duration),
    /// NXDOMAIN / NODATA: the SOA-derived negative TTL (RFC 2308), or
    /// [`DEFAULT_NEGATIVE_TTL`] when the answer carried no SOA.
    Negative(Duration),
}

/// Negative TTL used when a negative answer carries no SOA record.
pub(crate) const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(300);

/// The configured TTL bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TtlBounds {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) negative_max: Duration,
}

impl TtlBounds {
    /// How long to cache, or `None` not to cache at all (a clamped TTL of
    /// zero: the answer is good for this transaction only). The resolver
    /// checks `min <= max` and `min <= negative_max` at construction.
    pub(crate) fn clamp(&self, ttl: Ttl) -> Option<Duration> {
        let d = match ttl {
            Ttl::Positive(d) => d.max(self.min).min(self.max),
            Ttl::Negative(d) => d.max(self.min).min(self.negative_max),
        };
        (!d.is_zero()).then_some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn clamp_ttls() {
        let b = TtlBounds {
            min: s(5),
            max: s(86_400),
            negative_max: s(3_600),
        };
        assert_eq!(b.clamp(Ttl::Positive(s(1))), Some(s(5)));
        assert_eq!(b.clamp(Ttl::Positive(s(0))), Some(s(5)));
        assert_eq!(b.clamp(Ttl::Positive(s(300))), Some(s(300)));
        assert_eq!(b.clamp(Ttl::Positive(s(1_000_000))), Some(s(86_400)));
        assert_eq!(b.clamp(Ttl::Negative(s(86_400))), Some(s(3_600)));
        assert_eq!(b.clamp(Ttl::Negative(s(2))), Some(s(5)));
        let zero = TtlBounds { min: s(0), ..b };
        assert_eq!(zero.clamp(Ttl::Positive(s(0))), None);
        assert_eq!(zero.clamp(Ttl::Negative(s(0))), None);
        assert_eq!(zero.clamp(Ttl::Positive(s(1))), Some(s(1)));
    }

    #[test]
    fn lru_bound_and_expiry() {
        let mut c = CacheState::new(2).unwrap();
        let now = Instant::now();
        let k = |n: &str| Key::from_probe(format!("0{n}").as_bytes());
        let get = |c: &mut CacheState, n: &str, at| {
            c.get(format!("0{n}").as_bytes(), at).map(|(_, o, _)| o)
        };
        c.put(k("a"), Outcome::NoData, now + s(10));
        c.put(k("b"), Outcome::NxDomain, now + s(10));
        assert_eq!(get(&mut c, "a", now), Some(Outcome::NoData)); // a is now recent
        assert_eq!(c.get(b"0a", now).map(|(name, ..)| name), Some("a".into()));
        c.put(k("c"), Outcome::NoData, now + s(10)); // evicts b
        assert_eq!(c.len(), 2);
        assert_eq!(get(&mut c, "b", now), None);
        assert_eq!(get(&mut c, "a", now + s(11)), None); // expired, dropped
        assert_eq!(c.len(), 1);
        assert!(CacheState::new(0).is_none());
    }

    #[test]
    fn bounded_in_bytes() {
        let mut c = CacheState::new(usize::MAX).unwrap();
        let now = Instant::now();
        let big = Outcome::Found(std::sync::Arc::new(Answer::Txt(vec![vec![b'x'; 60_000]])));
        for n in 0..2_000 {
            c.put(
                Key::from_probe(format!("3name{n}.example").as_bytes()),
                big.clone(),
                now + s(60),
            );
        }
        assert!(c.lru.bytes() <= DNS_CACHE_BYTES);
        assert!(c.len() < 600, "{}", c.len());
    }
}
