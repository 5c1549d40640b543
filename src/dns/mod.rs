//! DNS lookups for rpol's restrictions: a small, cached, single-flight
//! resolver on top of hickory's name-server pool.
//!
//! Policy checks need only a handful of record types (A, AAAA, MX, TXT,
//! PTR) and must tell apart "the name does not exist" (NXDOMAIN), "the name
//! exists but has no such record" (NODATA) and "we could not find out"
//! (temporary failure), because Postfix-style restrictions answer those
//! three cases differently (reject, reject or accept, defer). This module
//! therefore returns an [`Outcome`] instead of a `Result`.
//!
//! Our own LRU cache is the single source of truth for caching: hickory's
//! response cache is not used at all (we talk to its `NameServerPool`
//! directly), so hit/miss counters and TTL clamping mean exactly what they
//! say. Concurrent identical lookups share one query on the wire.

mod cache;
mod records;
mod upstream;

pub use self::records::{Answer, Lookup, Mx, Outcome, RecordKind, ptr_name};

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use self::cache::{CacheState, InFlight, Key, TtlBounds};
use self::upstream::Upstream;
use crate::common::lock;

/// Default time to wait for one answer from the name servers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of tries of a query (resolv.conf's `attempts`).
pub const DEFAULT_ATTEMPTS: usize = 2;
/// Default bound of the cache, in entries (one entry per name and type).
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
/// Default floor for cached TTLs: a flood of mail from one client should not
/// re-query a name whose zone publishes TTL 0 or 1 for every message.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5);
/// Default ceiling for positive TTLs, so zone changes are seen within a day.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(86_400);
/// Default ceiling for negative TTLs (RFC 2308 suggests 1-3 hours at most).
pub const DEFAULT_NEGATIVE_MAX_TTL: Duration = Duration::from_secs(3_600);

/// How the resolver reaches the DNS and how long it keeps answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask, in order of preference. Empty means: read the
    /// system configuration (/etc/resolv.conf). With explicit servers the
    /// system configuration is never read.
    pub nameservers: Vec<SocketAddr>,
    /// Time to wait for an answer to one try of a query.
    pub timeout: Duration,
    /// Number of tries of a query before it is a temporary failure
    /// (resolv.conf semantics: 1 means no retry). Must be at least 1.
    pub attempts: usize,
    /// Maximum number of cached (name, type) entries. Must be at least 1.
    pub cache_size: usize,
    /// Floor for the TTL of cached answers, positive and negative.
    pub min_ttl: Duration,
    /// Ceiling for the TTL of cached positive answers.
    pub max_ttl: Duration,
    /// Ceiling for the TTL of cached NXDOMAIN / NODATA answers.
    pub negative_max_ttl: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            cache_size: DEFAULT_CACHE_SIZE,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            negative_max_ttl: DEFAULT_NEGATIVE_MAX_TTL,
        }
    }
}

/// Why a [`Resolver`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A setting in [`DnsConfig`] is out of range.
    #[error("invalid DNS configuration: {0}")]
    InvalidConfig(&'static str),
    /// The system resolver configuration could not be read.
    #[error("cannot read the system DNS configuration: {0}")]
    SystemConfig(String),
    /// hickory could not set up its client.
    #[error("cannot set up the DNS client: {0}")]
    Client(String),
    /// The system resolver configuration names no name server.
    #[error("the system DNS configuration names no name server")]
    NoNameservers,
}

/// Counters of the cache, for stats and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that started a query, or were the first to join one that
    /// a prefetch started or to read its answer ([`Resolver::prefetch`]).
    pub misses: u64,
    /// Lookups that joined a query another lookup had asked for.
    pub coalesced: u64,
    /// Entries in the cache now (expired ones included until touched).
    pub entries: usize,
}

/// A caching, single-flight DNS resolver. Cheap to clone: clones share the
/// cache, the counters and the connections.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    ttl: TtlBounds,
    /// Cache and in-flight table under one lock, so that "not cached" and
    /// "not in flight" are decided atomically (no duplicate query when a
    /// query completes between the two checks). Never held across an await.
    state: Mutex<CacheState>,
    /// Shared with the resolver a `[dns]` change replaces this one with.
    counters: Arc<Counters>,
}

/// Relaxed counters: how lookups were answered.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Build a resolver. With explicit `nameservers` nothing is read from
    /// the system; with none, /etc/resolv.conf names the servers (its other
    /// options are ignored: `cfg` rules). No packet is sent until the first
    /// lookup; lookups must run inside a Tokio runtime.
    pub fn new(cfg: &DnsConfig) -> Result<Resolver, DnsError> {
        Resolver::build(cfg, Arc::default())
    }

    /// A resolver for new settings, its cache empty, that goes on counting
    /// in this one's counters (they outlive a reload).
    pub fn rebuilt(&self, cfg: &DnsConfig) -> Result<Resolver, DnsError> {
        Resolver::build(cfg, self.inner.counters.clone())
    }

    fn build(cfg: &DnsConfig, counters: Arc<Counters>) -> Result<Resolver, DnsError> {
        if cfg.attempts == 0 {
            return Err(DnsError::InvalidConfig("attempts must be at least 1"));
        }
        if cfg.timeout.is_zero() {
            return Err(DnsError::InvalidConfig("timeout must be positive"));
        }
        if cfg.min_ttl > cfg.max_ttl || cfg.min_ttl > cfg.negative_max_ttl {
            return Err(DnsError::InvalidConfig(
                "min_ttl must not exceed max_ttl nor negative_max_ttl",
            ));
        }
        let state = CacheState::new(cfg.cache_size)
            .ok_or(DnsError::InvalidConfig("cache_size must be at least 1"))?;
        let upstream = Upstream::new(cfg)?;
        Ok(Resolver {
            inner: Arc::new(Inner {
                upstream,
                ttl: TtlBounds {
                    min: cfg.min_ttl,
                    max: cfg.max_ttl,
                    negative_max: cfg.negative_max_ttl,
                },
                state: Mutex::new(state),
                counters,
            }),
        })
    }

    /// Look `name` up. Never fails: failures are [`Outcome::TempFail`].
    /// The name is always taken as fully qualified (no search domains).
    pub async fn lookup(&self, name: &str, kind: RecordKind) -> Lookup {
        let now = Instant::now();
        let started = with_probe(name, kind, |probe| {
            let mut st = lock(&self.inner.state);
            if let Some((name, outcome, prefetched)) = st.get(probe, now) {
                drop(st);
                // The first read of what a prefetch fetched is the query
                // this lookup would have sent: a miss, not from the cache.
                let counter = if prefetched {
                    &self.inner.counters.misses
                } else {
                    &self.inner.counters.hits
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return Err(finish(name, kind, outcome, !prefetched));
            }
            let key = Key::from_probe(probe);
            if let Some(query) = st.inflight.get_mut(probe) {
                let rx = query.rx.clone();
                let counter = if std::mem::take(&mut query.prefetched) {
                    &self.inner.counters.misses
                } else {
                    &self.inner.counters.coalesced
                };
                drop(st);
                counter.fetch_add(1, Ordering::Relaxed);
                Ok((key, rx))
            } else {
                let rx = self.start_query(st, key.clone(), false);
                self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                Ok((key, rx))
            }
        });
        // Err: answered from the cache.
        let (key, mut rx) = match started {
            Ok(waiting) => waiting,
            Err(hit) => return hit,
        };

        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(internal_failure),
            // The query task died without answering (panic, runtime
            // shutdown); its guard has already removed the in-flight entry.
            Err(_) => internal_failure(),
        };
        finish(key.name().into(), kind, outcome, false)
    }

    /// Sends the query for `name` and `kind` now, unless the cache holds
    /// its answer or the query is in flight already, and returns without
    /// waiting: a later [`Resolver::lookup`] joins the query in flight
    /// (single-flight) or finds its answer cached. The query is the same
    /// task a lookup starts, bounded by [`Resolver::lookup_bound`] like
    /// any other, so a prefetch can neither outlive that nor be asked
    /// twice at once. A prefetch counts nothing: the first lookup that
    /// joins its query, or reads its answer, counts the miss it would have
    /// counted asking itself and is shown as queried, not cached (the
    /// counters and traces say what the rules asked, as without it).
    /// Returns whether a query was sent.
    pub fn prefetch(&self, name: &str, kind: RecordKind) -> bool {
        let now = Instant::now();
        with_probe(name, kind, |probe| {
            let st = lock(&self.inner.state);
            let cached = st.expires(probe).is_some_and(|expires| expires > now);
            if cached || st.inflight.contains_key(probe) {
                return false;
            }
            self.start_query(st, Key::from_probe(probe), true);
            true
        })
    }

    /// Enters `key`'s query in the in-flight table (held locked in `st`,
    /// released here) and starts it; returns where its outcome appears.
    /// The query runs as its own task so that a caller dropping its
    /// future (client gone, timeout) cannot strand the callers that
    /// joined it.
    fn start_query(
        &self,
        mut st: std::sync::MutexGuard<'_, CacheState>,
        key: Key,
        prefetched: bool,
    ) -> watch::Receiver<Option<Outcome>> {
        let (tx, rx) = watch::channel(None);
        let query = InFlight {
            rx: rx.clone(),
            prefetched,
        };
        st.inflight.insert(key.clone(), query);
        drop(st);
        tokio::spawn(run_query(self.inner.clone(), key, tx));
        rx
    }

    /// How much longer the cache keeps its answer for `name` and `kind`,
    /// or `None` when it holds none (never asked, a temporary failure, a
    /// TTL of zero, evicted). Counts nothing.
    pub fn cached_ttl(&self, name: &str, kind: RecordKind) -> Option<Duration> {
        let now = Instant::now();
        with_probe(name, kind, |probe| lock(&self.inner.state).expires(probe))
            .and_then(|expires| expires.checked_duration_since(now))
    }

    /// The longest one lookup may take (`[dns] attempts` x `timeout`, plus
    /// a slack): lookups made at once are all done within it.
    pub fn lookup_bound(&self) -> Duration {
        self.inner.upstream.deadline()
    }

    /// Look up the PTR records of `ip`'s reverse-mapping name.
    pub async fn lookup_ptr(&self, ip: IpAddr) -> Lookup {
        self.lookup(&ptr_name(ip), RecordKind::Ptr).await
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let entries = lock(&self.inner.state).len();
        CacheStats {
            hits: self.inner.counters.hits.load(Ordering::Relaxed),
            misses: self.inner.counters.misses.load(Ordering::Relaxed),
            coalesced: self.inner.counters.coalesced.load(Ordering::Relaxed),
            entries,
        }
    }

    /// Drop every cached entry (queries in flight still complete and are
    /// cached). Counters are kept.
    pub fn clear(&self) {
        lock(&self.inner.state).clear();
    }
}

fn internal_failure() -> Outcome {
    Outcome::TempFail("internal error".to_owned())
}

fn finish(name: Arc<str>, kind: RecordKind, outcome: Outcome, from_cache: bool) -> Lookup {
    let lookup = Lookup {
        name,
        kind,
        outcome,
        from_cache,
    };
    tracing::debug!(
        name = %lookup.name,
        kind = %lookup.kind,
        outcome = ?lookup.outcome,
        cached = lookup.from_cache,
        "dns lookup"
    );
    lookup
}

/// Removes the in-flight entry if the query task ends without publishing
/// (panic, runtime shutdown), so later lookups never wait on a dead query.
/// Disarmed on the normal path, which removes the entry itself: by the time
/// the guard drops, a new query for the same key may own the entry.
struct InflightGuard {
    inner: Arc<Inner>,
    key: Key,
    armed: bool,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.inner.state).inflight.remove(&self.key);
        }
    }
}

/// The body of a spawned query: ask, cache, publish.
async fn run_query(inner: Arc<Inner>, key: Key, tx: watch::Sender<Option<Outcome>>) {
    let mut guard = InflightGuard {
        inner: inner.clone(),
        key,
        armed: true,
    };
    let (outcome, ttl) = inner
        .upstream
        .query(guard.key.name(), guard.key.kind())
        .await;
    {
        let mut st = lock(&inner.state);
        // Cached and no longer in flight, in one step.
        let unclaimed = st
            .inflight
            .remove(&guard.key)
            .is_some_and(|query| query.prefetched);
        guard.armed = false;
        if let Some(ttl) = ttl.and_then(|t| inner.ttl.clamp(t)) {
            let expires = Instant::now() + ttl;
            if unclaimed {
                st.put_prefetched(guard.key.clone(), outcome.clone(), expires);
            } else {
                st.put(guard.key.clone(), outcome.clone(), expires);
            }
        }
    }
    tx.send_replace(Some(outcome));
}

/// Longest name probed from a buffer on the stack; a longer one (a DNS
/// name has at most 253 characters) or one not in ASCII is built on the
/// heap.
const PROBE_BYTES: usize = 256;

/// Calls `f` with the cache key's text for `name` and `kind`: the kind's
/// tag, then the name in lower case without its trailing dot (the form
/// [`Lookup::name`] shows).
fn with_probe<R>(name: &str, kind: RecordKind, f: impl FnOnce(&[u8]) -> R) -> R {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() < PROBE_BYTES && name.is_ascii() {
        let mut buf = [0u8; PROBE_BYTES];
        let probe = &mut buf[..=name.len()];
        probe[0] = kind.tag();
        for (to, from) in probe[1..].iter_mut().zip(name.bytes()) {
            *to = from.to_ascii_lowercase();
        }
        return f(probe);
    }
    let mut probe = String::with_capacity(1 + name.len());
    probe.push(char::from(kind.tag()));
    probe.push_str(&name.to_lowercase());
    f(probe.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A resolver rebuilt for new `[dns]` settings (at reload) starts with
    /// an empty cache but counts on where the old one stopped.
    #[tokio::test]
    async fn a_rebuilt_resolver_keeps_the_counters() {
        let cfg = DnsConfig {
            // Nothing listens there: each lookup is a miss and a TempFail.
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: Duration::from_millis(100),
            attempts: 1,
            ..DnsConfig::default()
        };
        let old = Resolver::new(&cfg).unwrap();
        old.lookup("a.example", RecordKind::A).await;
        let new = old.rebuilt(&cfg).unwrap();
        assert_eq!(new.stats().misses, 1);
        new.lookup("b.example", RecordKind::A).await;
        assert_eq!(old.stats().misses, 2);
        assert_eq!(Resolver::new(&cfg).unwrap().stats().misses, 0);
    }

    /// A prefetch sends one query, which a second prefetch of the same
    /// name and type and the lookups that follow join: on the wire once.
    #[tokio::test]
    async fn a_prefetch_is_one_query_that_lookups_join() {
        let cfg = DnsConfig {
            // Nothing listens there: the query fails, and is not cached.
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: Duration::from_millis(100),
            attempts: 1,
            ..DnsConfig::default()
        };
        let r = Resolver::new(&cfg).unwrap();
        assert!(r.prefetch("a.example", RecordKind::Txt));
        assert!(!r.prefetch("A.Example.", RecordKind::Txt), "in flight");
        assert!(r.prefetch("a.example", RecordKind::A), "another type");
        let lookup = r.lookup("a.example.", RecordKind::Txt).await;
        assert!(matches!(lookup.outcome, Outcome::TempFail(_)));
        // The prefetches count nothing; the lookup that joins counts the
        // miss it would have counted alone.
        let stats = r.stats();
        assert_eq!((stats.misses, stats.coalesced, stats.hits), (1, 0, 0));
        // Once joined, a query is one that others join.
        assert!(r.prefetch("b.example", RecordKind::Txt));
        let (first, second) = tokio::join!(
            r.lookup("b.example", RecordKind::Txt),
            r.lookup("b.example", RecordKind::Txt)
        );
        assert!(!first.from_cache && !second.from_cache);
        let stats = r.stats();
        assert_eq!((stats.misses, stats.coalesced, stats.hits), (2, 1, 0));
    }

    #[test]
    fn ptr_name_v4() {
        assert_eq!(
            ptr_name("203.0.113.10".parse().unwrap()),
            "10.113.0.203.in-addr.arpa"
        );
    }

    #[test]
    fn ptr_name_v4_every_octet_width() {
        for n in 0..=255u8 {
            let ip = std::net::Ipv4Addr::new(n, 10, 0, 255);
            assert_eq!(ptr_name(ip.into()), format!("255.0.10.{n}.in-addr.arpa"));
        }
    }

    #[test]
    fn ptr_name_v6() {
        assert_eq!(
            ptr_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn ptr_name_v4_mapped() {
        assert_eq!(
            ptr_name("::ffff:198.51.100.7".parse().unwrap()),
            "7.100.51.198.in-addr.arpa"
        );
    }

    #[test]
    fn keys_are_the_kind_and_the_normalised_name() {
        let key = |name: &str, kind| with_probe(name, kind, Key::from_probe);
        for kind in RecordKind::ALL {
            let k = key("Mail.Example.COM.", kind);
            assert_eq!((k.name(), k.kind()), ("mail.example.com", kind));
        }
        assert_eq!(key("example.com", RecordKind::Mx).name(), "example.com");
        assert_eq!(key(".", RecordKind::A).name(), "");
        assert_ne!(
            key("x.example", RecordKind::A),
            key("x.example", RecordKind::Aaaa)
        );
        // Beyond the stack buffer, and not ASCII: the same form, on the heap.
        let long = format!("{}.Example", "A".repeat(300));
        assert_eq!(key(&long, RecordKind::Txt).name(), long.to_lowercase());
        assert_eq!(key("Ünï.Example.", RecordKind::A).name(), "ünï.example");
        let edge = "a".repeat(PROBE_BYTES - 1);
        assert_eq!(key(&edge, RecordKind::A).name(), edge);
    }

    #[test]
    fn null_mx() {
        let null = Answer::Mx(vec![Mx {
            preference: 0,
            exchange: String::new(),
        }]);
        assert!(null.is_null_mx());
        let pref10 = Answer::Mx(vec![Mx {
            preference: 10,
            exchange: String::new(),
        }]);
        assert!(!pref10.is_null_mx());
        let two = Answer::Mx(vec![
            Mx {
                preference: 0,
                exchange: String::new(),
            },
            Mx {
                preference: 10,
                exchange: "mx.example".into(),
            },
        ]);
        assert!(!two.is_null_mx());
        assert!(!Answer::A(vec![]).is_null_mx());
    }

    #[test]
    fn describe_lines() {
        let l = Lookup {
            name: "example.com".into(),
            kind: RecordKind::Mx,
            outcome: Outcome::Found(Arc::new(Answer::Mx(vec![Mx {
                preference: 10,
                exchange: "mx.example.com".into(),
            }]))),
            from_cache: true,
        };
        assert_eq!(l.describe(), "MX example.com: 10 mx.example.com (cached)");
        let l = Lookup {
            name: "nx.example".into(),
            kind: RecordKind::A,
            outcome: Outcome::NxDomain,
            from_cache: false,
        };
        assert_eq!(l.describe(), "A nx.example: NXDOMAIN");
        let l = Lookup {
            name: "slow.example".into(),
            kind: RecordKind::A,
            outcome: Outcome::TempFail("timeout".into()),
            from_cache: false,
        };
        assert_eq!(l.describe(), "A slow.example: temporary failure (timeout)");
        let l = Lookup {
            name: "t.example".into(),
            kind: RecordKind::Txt,
            outcome: Outcome::Found(Arc::new(Answer::Txt(vec![b"v=spf1 \"x\"\x01".to_vec()]))),
            from_cache: false,
        };
        assert_eq!(l.describe(), r#"TXT t.example: "v=spf1 \"x\"\001""#);
        let many = (1..=6).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect();
        let l = Lookup {
            name: "many.example".into(),
            kind: RecordKind::A,
            outcome: Outcome::Found(Arc::new(Answer::A(many))),
            from_cache: false,
        };
        assert_eq!(
            l.describe(),
            "A many.example: 203.0.113.1, 203.0.113.2, 203.0.113.3, 203.0.113.4, ... (6 in all)"
        );
    }

    #[test]
    fn config_validation() {
        let bad = |f: fn(&mut DnsConfig)| {
            let mut c = DnsConfig {
                nameservers: vec!["127.0.0.1:53".parse().unwrap()],
                ..DnsConfig::default()
            };
            f(&mut c);
            Resolver::new(&c).is_err()
        };
        assert!(bad(|c| c.attempts = 0));
        assert!(bad(|c| c.cache_size = 0));
        assert!(bad(|c| c.timeout = Duration::ZERO));
        assert!(bad(|c| c.min_ttl = Duration::from_secs(7200)));
        assert!(!bad(|_| ()));
    }
}
