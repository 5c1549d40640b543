//! The store: greylisting (and later rate-limit) records that outlive
//! reloads and restarts, and that several MX hosts may share. Two
//! backends: an embedded redb file ([`embedded`]) and Redis ([`redis`]).
//!
//! This file is the plumbing every operation shares: opening, the timeout
//! on each call, the error count and the rate-limited warning. The
//! operations themselves (`greylist`, ...) are one method each here, one
//! redb transaction function in embedded.rs and one Lua script in
//! redis.rs. What a failed call means for the request (`on_store_error`)
//! is the rule's decision, not the store's.

pub mod admin;
pub mod embedded;
pub mod greylist;
pub mod rate;
pub mod redis;
pub mod redis_connect;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(test)]
use crate::common::unix_now;
use crate::common::{Throttled, lock};
use greylist::{GreylistParams, TripletInfo, TripletKey, Verdict};
use rate::{Hold, RateKey, RateParams};

/// Default `[store] path`: the Debian package's StateDirectory.
pub const DEFAULT_PATH: &str = "/var/lib/rpol/rpol.redb";
/// Default `[store] max_triplets`: a file of a size any mail host can
/// spare (BENCHMARKS.md, "Figures behind the code").
pub const DEFAULT_MAX_TRIPLETS: u64 = 1_000_000;
/// Default `[store] max_unconfirmed_per_network`: 1 % of the default
/// triplets, so one network's flood evicts no other network's triplets;
/// more first mails at once from one /24 than this is not a mail server.
pub const DEFAULT_MAX_UNCONFIRMED_PER_NETWORK: u64 = 10_000;
/// Prefix length by which IPv6 clients are counted against
/// `max_unconfirmed_per_network`, whatever the triplet's own prefix: one
/// site commonly gets a /48, so its 65,536 /64s share one budget.
pub const CAP_PREFIX_V6: u8 = 48;
/// Default `[store] max_clients`: clients that passed greylisting within
/// max_age (auto-whitelist records); a record is some 60 bytes.
pub const DEFAULT_MAX_CLIENTS: u64 = 1_000_000;
/// Default `[store] max_rate_records`: one per limit and key counted within
/// its window, so logins times limits for login keys; far above any site's.
pub const DEFAULT_MAX_RATE_RECORDS: u64 = 1_000_000;
/// Longest a call waits for the embedded store's one writer before it is
/// answered as busy: long against one transaction (bounded, milliseconds),
/// short against Postfix's 100 s policy timeout, so a queue under load
/// slows the answer without outliving the request.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);
/// Default `[store] timeout`: long enough for an fsync on a busy disk or a
/// Redis round trip across a LAN, short against Postfix's 100 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `[store] prefix` of every Redis key.
pub const DEFAULT_PREFIX: &str = "rpol:";

/// Where records live. Its `Debug` hides the Redis URL's login.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// A redb file on local disk.
    Embedded { path: PathBuf },
    /// A Redis server (`redis://host:port/db`, `rediss://` with TLS,
    /// `redis+unix:///path`), or the master a Sentinel names
    /// (`redis+sentinel://host:port,.../master/db`, [`redis_connect`]).
    Redis { url: String },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Embedded { path } => f.debug_struct("Embedded").field("path", path).finish(),
            Backend::Redis { url } => f
                .debug_struct("Redis")
                .field("url", &crate::log::Redacted(url).to_string())
                .finish(),
        }
    }
}

/// `[store]`, compiled. Server settings: a change takes a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub backend: Backend,
    /// Each store call gives up after this long.
    pub timeout: Duration,
    /// Records kept at most, per kind: a flood of one kind never takes
    /// another's room.
    pub limits: Limits,
    /// Prefix of Redis keys, so deployments can share one server.
    pub prefix: String,
    /// `[store] tls_ca`: the CA certificates (PEM) a Redis server's TLS
    /// certificate must chain to, in place of the system's roots.
    pub tls_ca: Option<PathBuf>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            backend: Backend::Embedded {
                path: PathBuf::from(DEFAULT_PATH),
            },
            timeout: DEFAULT_TIMEOUT,
            limits: Limits::default(),
            prefix: DEFAULT_PREFIX.into(),
            tls_ca: None,
        }
    }
}

/// Each kind of record's own budget (`[store] max_*`), in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Greylisting triplets, passed or not. Full: the oldest unconfirmed
    /// one makes room, else the least recently seen passed one (that
    /// sender waits once more; refusing would defer every new sender).
    pub triplets: u64,
    /// Unconfirmed (never passed) triplets of one client network (the
    /// triplet's `/24`; IPv6 by its `/48`, [`CAP_PREFIX_V6`]); beyond it,
    /// that network's own oldest unconfirmed triplet makes room, so a
    /// flood churns its own network's triplets, never others', and a
    /// neighbour cannot lock the network out for the retry window.
    pub unconfirmed_per_network: u64,
    /// Auto-whitelist records; full: a new client is not counted.
    pub clients: u64,
    /// Rate-limit records; a live one is never evicted. Full: a new key
    /// is deferred (never let through uncounted) until records expire, so
    /// a client minting keys can defer every new key for a window: size
    /// it well above the keys a window sees.
    pub rate_records: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            triplets: DEFAULT_MAX_TRIPLETS,
            unconfirmed_per_network: DEFAULT_MAX_UNCONFIRMED_PER_NETWORK,
            clients: DEFAULT_MAX_CLIENTS,
            rate_records: DEFAULT_MAX_RATE_RECORDS,
        }
    }
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("full: {0} rate-limit records (max_rate_records), none expired")]
    Full(u64),
    /// The embedded store's writer stayed taken for [`MAX_QUEUE_WAIT`].
    #[error("busy: no turn at the writer within {0:?}")]
    Busy(Duration),
    #[error("{0}")]
    Backend(String),
}

enum Inner {
    Embedded(embedded::Embedded),
    Redis(redis::RedisStore),
}

pub struct Store {
    inner: Inner,
    timeout: Duration,
    /// Failed calls (timeouts, errors, full, busy) since start.
    pub errors: AtomicU64,
    /// Store failures are logged at most once per interval, with how
    /// many happened since: a dead Redis must not flood the log.
    warned: Mutex<Throttled>,
    /// New triplets deferred without being stored (no indexed triplet to
    /// make room), warned about apart.
    unstored: Mutex<Throttled>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.backend())
    }
}

/// The network a triplet of client network `net` counts against for
/// `max_unconfirmed_per_network`: an IPv6 one widened to its
/// [`CAP_PREFIX_V6`] (one site's /64s are one budget), an IPv4 one as is
/// (a /16 holds many unrelated senders, so widening there would let one
/// lock out the others).
fn cap_network(net: &str) -> String {
    match net.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(a)) => ipnet::Ipv6Net::new(a, CAP_PREFIX_V6)
            .map_or_else(|_| net.to_string(), |n| n.trunc().addr().to_string()),
        _ => net.to_string(),
    }
}

/// `call` under `timeout`, its expiry a [`StoreError::Timeout`].
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(StoreError::Timeout(timeout)))
}

/// The PEM text of `[store] tls_ca`: unreadable, or holding no
/// certificate, stops the start.
fn read_tls_ca(path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path)
        .map_err(|e| StoreError::Backend(format!("tls_ca {}: {e}", path.display())))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(StoreError::Backend(format!(
            "tls_ca {}: no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(Some(pem))
}

impl Store {
    /// Opens the embedded file (an error here stops the start: the path or
    /// its permissions are wrong) or sets up the Redis client (which
    /// connects on first use, so rpol starts while Redis is down).
    pub fn open(settings: &StoreSettings) -> Result<Store, StoreError> {
        let inner = match &settings.backend {
            Backend::Embedded { path } => Inner::Embedded(embedded::Embedded::open(
                path,
                settings.limits,
                settings.timeout,
            )?),
            Backend::Redis { url } => Inner::Redis(redis::RedisStore::new(
                url,
                read_tls_ca(settings.tls_ca.as_deref())?.as_deref(),
                &settings.prefix,
                settings.timeout,
                settings.limits,
            )?),
        };
        Ok(Store {
            inner,
            timeout: settings.timeout,
            errors: AtomicU64::new(0),
            warned: Mutex::default(),
            unstored: Mutex::default(),
        })
    }

    fn backend(&self) -> &'static str {
        match self.inner {
            Inner::Embedded(_) => "embedded",
            Inner::Redis(_) => "redis",
        }
    }

    /// Counts and logs a failure of `call`. The embedded store bounds its
    /// own calls: a wait for its writer or a thread is no failure, only the
    /// work once it runs has `timeout` (see [`embedded`]); Redis calls get
    /// `timeout` whole.
    async fn guarded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = call.await;
        if let Err(e) = &result {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if let Some(since) = lock(&self.warned).due() {
                tracing::warn!(
                    "store ({}): {what} failed: {e} ({since} failure(s) since the last warning)",
                    self.backend()
                );
            }
        }
        result
    }

    /// Checks and updates a triplet (of client network `net`) and its
    /// client's auto-whitelist record in one atomic step.
    pub async fn greylist(
        &self,
        triplet: TripletKey,
        net: &str,
        client: &str,
        params: GreylistParams,
    ) -> Result<Verdict, StoreError> {
        self.greylist_noting(triplet, None, net, client, params)
            .await
    }

    /// [`Self::greylist`], keeping `info` as the triplet's details for
    /// `rpol store list` (a call without keeps those stored).
    pub async fn greylist_noting(
        &self,
        triplet: TripletKey,
        info: Option<TripletInfo>,
        net: &str,
        client: &str,
        params: GreylistParams,
    ) -> Result<Verdict, StoreError> {
        let net = &cap_network(net);
        let call = async {
            match &self.inner {
                Inner::Embedded(e) => e.greylist_noting(triplet, info, net, client, params).await,
                Inner::Redis(r) => {
                    let call = r.greylist(triplet, info.as_ref(), net, client, params);
                    within(self.timeout, call).await
                }
            }
        };
        let verdict = self.guarded("greylist", call).await;
        if let Ok(Verdict::NotStored { why, .. }) = &verdict
            && let Some(since) = lock(&self.unstored).due()
        {
            tracing::warn!(
                "store ({}): new triplets deferred without being stored: {why} ({since} since the last warning)",
                self.backend()
            );
        }
        verdict
    }

    /// Reads a rate-limit record: would one more message from `network`
    /// (one more recipient of transaction `tag`) fit beside the counts and
    /// the live reservations? Changes nothing.
    pub async fn rate_check(
        &self,
        key: RateKey,
        network: &str,
        tag: &str,
        params: RateParams,
    ) -> Result<rate::Check, StoreError> {
        let call = async {
            match &self.inner {
                Inner::Embedded(e) => e.rate_check(key, network.into(), tag.into(), params).await,
                Inner::Redis(r) => {
                    within(self.timeout, r.rate_check(key, network, tag, params)).await
                }
            }
        };
        self.guarded("rate limit check", call).await
    }

    /// Reserves room for transaction `tag` ([`rate::hold`]): checks and
    /// records in one atomic step, so parallel transactions cannot all
    /// pass the same reading.
    pub async fn rate_hold(
        &self,
        key: RateKey,
        network: &str,
        tag: &str,
        hold: Hold,
        params: RateParams,
    ) -> Result<rate::Check, StoreError> {
        let call = async {
            match &self.inner {
                Inner::Embedded(e) => {
                    e.rate_hold(key, network.into(), tag.into(), hold, params)
                        .await
                }
                Inner::Redis(r) => {
                    within(self.timeout, r.rate_hold(key, network, tag, &hold, params)).await
                }
            }
        };
        self.guarded("rate limit check", call).await
    }

    /// Counts one accepted message in a rate-limit record in place of its
    /// reservation, once per instance tag, in one atomic step.
    pub async fn rate_settle(
        &self,
        key: RateKey,
        network: &str,
        recipients: u32,
        tag: &str,
        params: RateParams,
    ) -> Result<rate::Counted, StoreError> {
        let call = async {
            match &self.inner {
                Inner::Embedded(e) => {
                    e.rate_settle(key, network.into(), recipients, tag.into(), params)
                        .await
                }
                Inner::Redis(r) => {
                    let settle = r.rate_settle(key, network, recipients, tag, params);
                    within(self.timeout, settle).await
                }
            }
        };
        self.guarded("rate limit count", call).await
    }

    /// Drops the reservation of a refused transaction.
    pub async fn rate_release(
        &self,
        key: RateKey,
        tag: &str,
        params: RateParams,
    ) -> Result<(), StoreError> {
        let call = async {
            match &self.inner {
                Inner::Embedded(e) => e.rate_release(key, tag.into(), params).await,
                Inner::Redis(r) => within(self.timeout, r.rate_release(key, tag, params)).await,
            }
        };
        self.guarded("rate limit release", call).await
    }

    /// Removes expired records (the embedded store, a batch per
    /// transaction; Redis keys expire by themselves). Returns how many went.
    pub async fn sweep(&self, greylist: Option<GreylistParams>) -> Result<u64, StoreError> {
        match &self.inner {
            Inner::Embedded(e) => self.guarded("sweep", e.sweep(greylist)).await,
            Inner::Redis(_) => Ok(0),
        }
    }

    /// Records held now (embedded), for the log and tests.
    pub async fn entries(&self) -> Option<u64> {
        match &self.inner {
            Inner::Embedded(e) => e.entries().await.ok(),
            Inner::Redis(_) => None,
        }
    }
}

// The throw-away redis-server of the integration tests, for the unit tests.
#[cfg(test)]
#[path = "../../../tests/support/redis.rs"]
mod redis_support;

#[cfg(test)]
pub(crate) mod tests {
    use super::redis_support::start as redis_server;
    use super::*;

    fn params(now: u64) -> GreylistParams {
        GreylistParams {
            now,
            delay: 300,
            retry_window: 86_400,
            max_age: 10 * 86_400,
            auto_whitelist_clients: 2,
        }
    }

    /// The same sequence gives the same verdicts on every backend.
    async fn sequence(store: &Store) {
        let t0 = unix_now();
        let key = |s: &str| TripletKey::new("203.0.113.0", s, "rcpt@y.example");
        let ip = "203.0.113.9";
        let mut got = Vec::new();
        for (sender, at) in [("a", 0), ("a", 100), ("a", 300), ("a", 400), ("b", 4000)] {
            got.push(
                store
                    .greylist(key(sender), "203.0.113.0", ip, params(t0 + at))
                    .await,
            );
        }
        got.push(
            store
                .greylist(key("b"), "203.0.113.0", ip, params(t0 + 4300))
                .await,
        );
        got.push(
            store
                .greylist(key("c"), "203.0.113.0", ip, params(t0 + 4400))
                .await,
        );
        let want = [
            Verdict::Greylisted {
                missing: 300,
                first_seen: true,
            },
            Verdict::Greylisted {
                missing: 200,
                first_seen: false,
            },
            Verdict::Passed {
                delayed: 300,
                whitelisted_now: false,
            },
            Verdict::Known,
            Verdict::Greylisted {
                missing: 300,
                first_seen: true,
            },
            Verdict::Passed {
                delayed: 300,
                whitelisted_now: true,
            },
            Verdict::AutoWhitelisted { count: 2 },
        ];
        let got: Vec<_> = got.into_iter().map(|v| v.expect("store call")).collect();
        assert_eq!(got, want);
    }

    /// The same rate-limit sequence gives the same answers on every backend.
    async fn rate_sequence(store: &Store) {
        use rate::Exceeded;
        let t0 = unix_now();
        let p = |at: u64| RateParams {
            now: t0 + at,
            window: 3600,
            messages: 3,
            recipients: 4,
            distinct_clients: 2,
        };
        let key = RateKey::new("per_login", "sasl_username", "alice");
        let other = RateKey::new("per_login", "sasl_username", "bob");
        let mut got = Vec::new();
        let check = async |k, net: &str, at| {
            let c = store.rate_check(k, net, "", p(at)).await.expect("check");
            (c.exceeded, c.usage.messages, c.usage.recipients)
        };
        got.push(check(key, "203.0.113.0/24", 0).await);
        let c = store
            .rate_settle(key, "203.0.113.0/24", 2, "aa", p(1))
            .await
            .unwrap();
        assert!(!c.repeated);
        let c = store
            .rate_settle(key, "203.0.113.0/24", 2, "aa", p(2))
            .await
            .unwrap();
        assert!(c.repeated, "the same instance counts once");
        store
            .rate_settle(key, "198.51.100.0/24", 1, "bb", p(3))
            .await
            .unwrap();
        got.push(check(key, "2001:db8::/64", 4).await);
        got.push(check(key, "198.51.100.0/24", 4).await);
        store
            .rate_settle(key, "198.51.100.0/24", 1, "", p(5))
            .await
            .unwrap();
        got.push(check(key, "198.51.100.0/24", 6).await);
        got.push(check(other, "198.51.100.0/24", 6).await);
        // Everything has left the window an hour later.
        got.push(check(key, "2001:db8::/64", 3606).await);
        let want = [
            (None, 0, 0),
            (Some(Exceeded::DistinctClients), 2, 3),
            (None, 2, 3),
            (Some(Exceeded::Messages), 3, 4),
            (None, 0, 0),
            (None, 0, 0),
        ];
        assert_eq!(got, want);
        let c = store.rate_check(key, "x", "", p(7)).await.unwrap();
        assert_eq!(c.usage.networks, ["203.0.113.0/24", "198.51.100.0/24"]);
    }

    /// Issue 24 item 4: reservations, the same on every backend. Answers
    /// are (exceeded, created, messages, recipients, held messages, held
    /// recipients).
    async fn reservation_sequence(store: &Store) {
        use rate::{Exceeded, Hold, MAX_RESERVATIONS, RESERVATION_TTL};
        let t0 = unix_now();
        let p = |at: u64, distinct_clients| RateParams {
            now: t0 + at,
            window: 3600,
            messages: 2,
            recipients: 3,
            distinct_clients,
        };
        let a = "203.0.113.0/24";
        let carol = RateKey::new("per_login", "sasl_username", "carol");
        let hold = async |k, net, tag, h: Hold, at, d| {
            let c = store
                .rate_hold(k, net, tag, h, p(at, d))
                .await
                .expect("hold");
            let u = c.usage;
            let held = (u.held_messages, u.held_recipients);
            (c.exceeded, c.created, u.messages, u.recipients, held)
        };
        let rcpt = |to: &str| Hold::Rcpt(to.into());
        let mut got = vec![
            hold(carol, a, "t1", rcpt("r1"), 0, 0).await,
            // The same RCPT again holds no more.
            hold(carol, a, "t1", rcpt("r1"), 1, 0).await,
            hold(carol, a, "t1", rcpt("r2"), 2, 0).await,
            hold(carol, a, "t2", rcpt("r1"), 3, 0).await,
            // Two transactions under way hold the 2 messages.
            hold(carol, a, "t3", rcpt("r1"), 4, 0).await,
            hold(carol, a, "t3", Hold::Probe, 4, 0).await,
            // t1 holds 2 recipients, t2 1: a second one of t2 is one too many.
            hold(carol, a, "t2", rcpt("r2"), 5, 0).await,
            // t1's message with its 2 recipients fits beside t2's one.
            hold(carol, a, "t1", Hold::Message(2), 6, 0).await,
        ];
        let c = store.rate_settle(carol, a, 2, "t1", p(7, 0)).await.unwrap();
        assert!(!c.repeated);
        assert_eq!((c.usage.messages, c.usage.held_messages), (1, 1));
        let c = store.rate_settle(carol, a, 2, "t1", p(7, 0)).await.unwrap();
        assert!(c.repeated, "a settle retried counts once");
        // END-OF-MESSAGE retried after its settle: fits, changes nothing.
        got.push(hold(carol, a, "t1", Hold::Message(2), 8, 0).await);
        // Elsewhere a counted instance is no retry: checked like any.
        got.push(hold(carol, a, "t1", Hold::Probe, 8, 0).await);
        store.rate_release(carol, "t2", p(9, 0)).await.unwrap();
        store.rate_release(carol, "t2", p(9, 0)).await.unwrap();
        // A counted instance's RCPT reserves; its repeated settle drops that.
        got.push(hold(carol, a, "t1", rcpt("r9"), 9, 0).await);
        let c = store.rate_settle(carol, a, 2, "t1", p(9, 0)).await.unwrap();
        assert!(c.repeated);
        assert_eq!((c.usage.messages, c.usage.held_messages), (1, 0));
        got.push(hold(carol, a, "t4", rcpt("r1"), 10, 0).await);
        // t4 lapses unsettled: its room is free again.
        got.push(hold(carol, a, "t5", Hold::Probe, 10 + RESERVATION_TTL, 0).await);
        // Networks held count for distinct_clients.
        let dave = RateKey::new("per_login", "sasl_username", "dave");
        let b = "198.51.100.0/24";
        got.push(hold(dave, a, "d1", rcpt("r1"), 0, 1).await);
        got.push(hold(dave, b, "d2", rcpt("r1"), 1, 1).await);
        got.push(hold(dave, a, "d2", rcpt("r1"), 2, 1).await);
        let want = [
            (None, true, 0, 0, (1, 1)),
            (None, false, 0, 0, (1, 1)),
            (None, false, 0, 0, (1, 2)),
            (None, true, 0, 0, (2, 3)),
            (Some(Exceeded::Messages), false, 0, 0, (2, 3)),
            (Some(Exceeded::Messages), false, 0, 0, (2, 3)),
            (Some(Exceeded::Recipients), false, 0, 0, (2, 3)),
            (None, false, 0, 0, (2, 3)),
            (None, false, 1, 2, (1, 1)),
            (Some(Exceeded::Messages), false, 1, 2, (1, 1)),
            (None, true, 1, 2, (1, 1)),
            (None, true, 1, 2, (1, 1)),
            (None, false, 1, 2, (0, 0)),
            (None, true, 0, 0, (1, 1)),
            (Some(Exceeded::DistinctClients), false, 0, 0, (1, 1)),
            (None, true, 0, 0, (2, 2)),
        ];
        assert_eq!(got, want);
        // Reservations per key are bounded: one more transaction waits.
        let erin = RateKey::new("per_login", "sasl_username", "erin");
        let big = RateParams {
            messages: 0,
            recipients: 0,
            ..p(0, 0)
        };
        for n in 0..MAX_RESERVATIONS {
            let c = store
                .rate_hold(erin, a, &format!("e{n}"), rcpt("r"), big)
                .await
                .unwrap();
            assert_eq!(c.exceeded, None, "{n}");
        }
        let c = store.rate_hold(erin, a, "e", rcpt("r"), big).await.unwrap();
        assert_eq!(c.exceeded, Some(Exceeded::Transactions));
        let c = store
            .rate_hold(erin, a, "e0", rcpt("s"), big)
            .await
            .unwrap();
        assert_eq!(c.exceeded, None, "a transaction holding room goes on");
    }

    #[tokio::test]
    async fn embedded_backend() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            backend: Backend::Embedded {
                path: dir.path().join("s.redb"),
            },
            ..StoreSettings::default()
        };
        let store = Store::open(&settings).unwrap();
        sequence(&store).await;
        rate_sequence(&store).await;
        reservation_sequence(&store).await;
    }

    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_backend_and_its_expiry() {
        let server = redis_server();
        let settings = StoreSettings {
            backend: Backend::Redis {
                url: server.url.clone(),
            },
            prefix: "t1:".into(),
            ..StoreSettings::default()
        };
        let store = Store::open(&settings).unwrap();
        sequence(&store).await;
        rate_sequence(&store).await;
        // A check writes nothing; a count's record expires with its window.
        let mut con = ::redis::Client::open(server.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut keys: Vec<String> = ::redis::cmd("KEYS")
            .arg("t1:rate:*")
            .query_async(&mut con)
            .await
            .unwrap();
        keys.retain(|k| k != "t1:rate:index");
        assert_eq!(keys.len(), 1, "{keys:?}");
        let ttl: i64 = ::redis::cmd("TTL")
            .arg(&keys[0])
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(ttl > 3500 && ttl <= 3600, "{ttl}");
        reservation_sequence(&store).await;
        let _ = ::redis::cmd("FLUSHDB")
            .query_async::<()>(
                &mut ::redis::Client::open(server.url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            )
            .await;
        sequence(&store).await;
        // Every key expires by itself; an unpassed triplet within the retry window.
        let client = ::redis::Client::open(server.url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg("t1:*")
            .query_async(&mut con)
            .await
            .unwrap();
        // Two triplets, a client, the indexes of passed triplets and of
        // clients (nothing unconfirmed is left: an empty index is no key).
        assert_eq!(keys.len(), 5, "{keys:?}");
        for k in keys {
            let ttl: i64 = ::redis::cmd("TTL")
                .arg(&k)
                .query_async(&mut con)
                .await
                .unwrap();
            assert!(ttl > 0 && ttl <= 10 * 86_400, "{k}: {ttl}");
        }
    }

    #[tokio::test]
    async fn redis_down_is_an_error_within_the_timeout_and_counted() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let settings = StoreSettings {
            backend: Backend::Redis {
                url: format!("redis://127.0.0.1:{port}/"),
            },
            timeout: Duration::from_millis(300),
            ..StoreSettings::default()
        };
        let store = Store::open(&settings).expect("starts while Redis is down");
        let start = std::time::Instant::now();
        let key = TripletKey::new("203.0.113.0", "a@x.example", "b@y.example");
        let r = store
            .greylist(key, "203.0.113.0", "203.0.113.9", params(unix_now()))
            .await;
        assert!(r.is_err(), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(store.errors.load(Ordering::Relaxed), 1);
    }
}

#[cfg(test)]
mod review {
    //! The store review's findings (issue 24 item 1 follow-up), each on
    //! both backends.
    use super::redis_support::start as redis_server;
    use super::*;

    fn params(now: u64) -> GreylistParams {
        GreylistParams {
            now,
            delay: 300,
            retry_window: 2 * 86_400,
            max_age: 35 * 86_400,
            auto_whitelist_clients: 0,
        }
    }

    fn embedded(dir: &tempfile::TempDir, limits: Limits) -> Store {
        let settings = StoreSettings {
            backend: Backend::Embedded {
                path: dir.path().join("s.redb"),
            },
            limits,
            ..StoreSettings::default()
        };
        Store::open(&settings).unwrap()
    }

    fn redis(server: &super::redis_support::RedisServer, limits: Limits) -> Store {
        let settings = StoreSettings {
            backend: Backend::Redis {
                url: server.url.clone(),
            },
            limits,
            ..StoreSettings::default()
        };
        Store::open(&settings).unwrap()
    }

    async fn gl(store: &Store, net: &str, sender: &str, at: u64) -> Verdict {
        let key = TripletKey::new(net, sender, "rcpt@y.example");
        store
            .greylist(key, net, "192.0.2.1", params(at))
            .await
            .expect("store call")
    }

    /// `case` on a fresh embedded store with `limits`.
    async fn on_embedded(limits: Limits, case: impl AsyncFn(&Store)) {
        let dir = tempfile::tempdir().unwrap();
        case(&embedded(&dir, limits)).await;
    }

    /// `case` on a throw-away redis-server with `limits` (the tests that
    /// call it are marked `#[ignore = "needs redis-server"]`).
    async fn on_redis(limits: Limits, case: impl AsyncFn(&Store)) {
        let server = redis_server();
        case(&redis(&server, limits)).await;
    }

    /// Two tests of one case with the same limits: on the embedded store,
    /// and (ignored unless asked) on a throw-away redis-server.
    macro_rules! on_both_backends {
        ($embedded:ident, $redis:ident, $case:ident, $limits:expr) => {
            #[tokio::test]
            async fn $embedded() {
                on_embedded($limits, $case).await;
            }

            #[tokio::test]
            #[ignore = "needs redis-server"]
            async fn $redis() {
                on_redis($limits, $case).await;
            }
        };
    }

    const NEW: Verdict = Verdict::Greylisted {
        missing: 300,
        first_seen: true,
    };

    /// Review item 3: passed triplets filling max_triplets must not lock
    /// out every new sender; the least recently seen passed one goes.
    async fn passed_triplets_cannot_fill_the_store_case(store: &Store) {
        let t = unix_now();
        let net = "203.0.113.0";
        for (n, sender) in ["a", "b", "c"].iter().enumerate() {
            let n = n as u64;
            assert_eq!(gl(store, net, sender, t + n).await, NEW);
            let v = gl(store, net, sender, t + 300 + n).await;
            assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
        }
        // "a" seen again: "b" is now the least recently seen.
        assert_eq!(gl(store, net, "a", t + 400).await, Verdict::Known);
        assert_eq!(gl(store, "198.51.100.0", "new", t + 500).await, NEW);
        assert_eq!(gl(store, net, "a", t + 501).await, Verdict::Known);
        assert_eq!(gl(store, net, "c", t + 502).await, Verdict::Known);
        // "b" was evicted: new again (and it evicts the unconfirmed "new").
        assert_eq!(gl(store, net, "b", t + 503).await, NEW);
    }

    /// A passed triplet not seen for max_age has expired: at the budget it
    /// takes no room, so a new triplet evicts no live unconfirmed one.
    async fn an_expired_passed_triplet_takes_no_room_case(store: &Store) {
        let t = unix_now();
        let net = "203.0.113.0";
        assert_eq!(gl(store, net, "old", t).await, NEW);
        let v = gl(store, net, "old", t + 300).await;
        assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
        let later = t + 300 + 35 * 86_400 + 100;
        assert_eq!(gl(store, net, "waiting", later).await, NEW);
        assert_eq!(gl(store, "198.51.100.0", "new", later + 1).await, NEW);
        // Both unconfirmed triplets were kept: each passes on its retry.
        let v = gl(store, net, "waiting", later + 300).await;
        assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
        let v = gl(store, "198.51.100.0", "new", later + 301).await;
        assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
    }

    /// Review item 8: the /64s of one IPv6 /48 share one budget of
    /// unconfirmed triplets; another /48 has its own.
    async fn one_v6_48_is_one_network_case(store: &Store) {
        let t = unix_now();
        assert_eq!(gl(store, "2001:db8:1:1::", "a", t).await, NEW);
        assert_eq!(gl(store, "2001:db8:1:2::", "a", t + 1).await, NEW);
        // The /48 is at its cap: the third /64's triplet takes the room
        // of the /48's oldest (item 9), the first /64's, which is new again.
        assert_eq!(gl(store, "2001:db8:1:3::", "a", t + 2).await, NEW);
        assert_eq!(gl(store, "2001:db8:1:1::", "a", t + 3).await, NEW);
        assert_eq!(gl(store, "2001:db8:2:1::", "a", t + 5).await, NEW);
        assert_eq!(gl(store, "2001:db8:3:1::", "a", t + 5).await, NEW);
    }

    /// Review item 9: a neighbour filling a /24's unconfirmed budget
    /// does not lock a sender of the same /24 out for the retry window:
    /// the network's own oldest unconfirmed triplet makes room, so the
    /// sender's triplet is stored and passes on its retry.
    async fn a_neighbour_cannot_lock_out_its_network_case(store: &Store) {
        let t = unix_now();
        let net = "203.0.113.0";
        for n in 0..3 {
            let sender = format!("flood{n}");
            assert_eq!(gl(store, net, &sender, t + n).await, NEW);
        }
        assert_eq!(gl(store, net, "real", t + 10).await, NEW);
        let v = gl(store, net, "real", t + 310).await;
        assert!(matches!(v, Verdict::Passed { .. }), "{v:?}");
        // The flood's oldest went: new again.
        assert_eq!(gl(store, net, "flood0", t + 311).await, NEW);
    }

    /// Review item 11: every key the greylist script writes carries an
    /// expiry from its first write on.
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_keys_expire_from_the_first_call() {
        let server = redis_server();
        let store = redis(&server, Limits::default());
        assert_eq!(gl(&store, "203.0.113.0", "a", unix_now()).await, NEW);
        let mut con = ::redis::Client::open(server.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg("rpol:*")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(keys.len(), 3, "triplet, its two indexes: {keys:?}");
        for k in keys {
            let ttl: i64 = ::redis::cmd("TTL")
                .arg(&k)
                .query_async(&mut con)
                .await
                .unwrap();
            assert!(ttl > 0, "{k}: {ttl}");
        }
    }

    on_both_backends!(
        passed_triplets_cannot_fill_the_store,
        passed_triplets_cannot_fill_the_store_redis,
        passed_triplets_cannot_fill_the_store_case,
        Limits {
            triplets: 3,
            ..Limits::default()
        }
    );

    /// Redis only: the embedded store counts such a triplet until its
    /// sweep removes it.
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn an_expired_passed_triplet_takes_no_room_redis() {
        let limits = Limits {
            triplets: 2,
            ..Limits::default()
        };
        on_redis(limits, an_expired_passed_triplet_takes_no_room_case).await;
    }

    on_both_backends!(
        one_v6_48_is_one_network,
        one_v6_48_is_one_network_redis,
        one_v6_48_is_one_network_case,
        Limits {
            unconfirmed_per_network: 2,
            ..Limits::default()
        }
    );

    on_both_backends!(
        a_neighbour_cannot_lock_out_its_network,
        a_neighbour_cannot_lock_out_its_network_redis,
        a_neighbour_cannot_lock_out_its_network_case,
        Limits {
            unconfirmed_per_network: 3,
            ..Limits::default()
        }
    );

    /// Review: a RCPT's hold on a new key, then refused (released), must
    /// not leave a record: each refused attempt with a new sender would
    /// take one of `max_rate_records` for the whole window, until every
    /// new key is refused. Room for two records; ten attempts of new keys.
    async fn released_attempts_take_no_room_case(store: &Store) {
        let p = RateParams {
            now: unix_now(),
            window: 86_400,
            messages: 5,
            recipients: 5,
            distinct_clients: 0,
        };
        for n in 0..10 {
            let key = RateKey::new("per_sender", "sender", &format!("s{n}@x.example"));
            let rcpt = rate::Hold::Rcpt("r".into());
            let c = store.rate_hold(key, "203.0.113.0/24", "t", rcpt, p).await;
            assert_eq!(c.map(|c| c.exceeded), Ok(None), "attempt {n}");
            store.rate_release(key, "t", p).await.unwrap();
        }
    }

    on_both_backends!(
        released_attempts_take_no_room,
        released_attempts_take_no_room_redis,
        released_attempts_take_no_room_case,
        Limits {
            rate_records: 2,
            ..Limits::default()
        }
    );
}
