//! How the Redis store reaches its server: the one place that reads
//! `[store] url` and `tls_ca` and makes connections. [`Link`] is what the
//! scripts in redis.rs run on, whatever the URL's form:
//!
//! - `redis://`, `rediss://` (TLS), `redis+unix://`: one server, through
//!   redis's `ConnectionManager` (connects on first use, reconnects after
//!   a failure).
//! - `redis+sentinel://` and `rediss+sentinel://` (TLS to the sentinels
//!   and the masters): the master Sentinel names, found again when it
//!   changes ([`SentinelLink`]).
//!
//! TLS is rustls; certificates are checked against the system's roots, or
//! against `tls_ca` alone when it is set. Never unchecked: `#insecure` is a
//! config error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, TlsMode, Value,
};

use crate::common::lock;

/// Sentinel's own port, when a `redis+sentinel://` host names none.
pub const SENTINEL_PORT: u16 = 26379;

/// Sentinel's channel announcing a new master: "NAME OLD-IP OLD-PORT
/// NEW-IP NEW-PORT".
const SWITCH_MASTER: &str = "+switch-master";

/// Pause between two attempts to watch a sentinel that is down.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// A `redis+sentinel://` URL, read:
/// `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// `rediss+sentinel://`: TLS to the sentinels and to the masters.
    pub tls: bool,
    /// The sentinels, in the order they are asked.
    pub sentinels: Vec<ConnectionAddr>,
    /// The master's name in Sentinel's `sentinel monitor NAME ...`.
    pub master: String,
    /// The database on the master.
    pub db: i64,
    /// The masters' login (not the sentinels').
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Whether `url` is one of the Sentinel forms.
pub fn is_sentinel(url: &str) -> bool {
    url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://")
}

/// Reads a Sentinel URL. The hosts and the login are read by redis's own
/// URL parser (percent-encoding, IPv6 brackets), one `redis://` URL each.
pub fn parse_sentinel(url: &str) -> Result<SentinelUrl, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
        (true, rest)
    } else {
        return Err("expected redis+sentinel:// or rediss+sentinel://".into());
    };
    if rest.contains(['?', '#']) {
        return Err("a Sentinel URL takes no query or fragment".into());
    }
    let (authority, path) = rest
        .split_once('/')
        .ok_or("names no master: redis+sentinel://HOST:PORT/MASTER")?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err("an empty sentinel address".into());
        }
        // A port is there when the host ends with ":digits" outside brackets.
        let has_port = host.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        });
        let with_port = if has_port {
            host.to_string()
        } else {
            format!("{host}:{SENTINEL_PORT}")
        };
        let info = format!("{scheme}://{with_port}")
            .into_connection_info()
            .map_err(|e| format!("sentinel {host}: {e}"))?;
        sentinels.push(info.addr().clone());
    }
    let (master, db) = match path.split_once('/') {
        None => (path, None),
        Some((m, db)) => (m, Some(db.trim_end_matches('/'))),
    };
    if master.is_empty() {
        return Err("names no master: redis+sentinel://HOST:PORT/MASTER".into());
    }
    let db = match db {
        None | Some("") => 0,
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("database {d:?} is not a number"))?,
    };
    let (mut username, mut password) = (None, None);
    if let Some(u) = userinfo {
        let info = format!("redis://{u}@master/")
            .into_connection_info()
            .map_err(|e| format!("login: {e}"))?;
        username = info.redis_settings().username().map(String::from);
        password = info.redis_settings().password().map(String::from);
    }
    Ok(SentinelUrl {
        tls,
        sentinels,
        master: master.to_string(),
        db,
        username,
        password,
    })
}

/// The connection the store's scripts run on.
#[derive(Clone)]
pub enum Link {
    Direct(ConnectionManager),
    Sentinel(SentinelLink),
}

/// The certificates TLS connections trust: `tls_ca` (PEM) alone, else the
/// system's roots.
fn certificates(tls_ca: Option<&[u8]>) -> Option<TlsCertificates> {
    tls_ca.map(|pem| TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    })
}

impl Link {
    /// Checks `url` and prepares the connection; connects on first use.
    /// `tls_ca` is the PEM text of `[store] tls_ca`, if set; every call
    /// and every connection attempt is bounded by `timeout`.
    pub fn new(url: &str, tls_ca: Option<&[u8]>, timeout: Duration) -> RedisResult<Link> {
        if is_sentinel(url) {
            let parsed = parse_sentinel(url)
                .map_err(|e| RedisError::from((ErrorKind::InvalidClientConfig, "url", e)))?;
            return Ok(Link::Sentinel(SentinelLink::new(parsed, tls_ca, timeout)?));
        }
        let client = match certificates(tls_ca) {
            Some(certs) if url.starts_with("rediss://") => Client::build_with_tls(url, certs)?,
            _ => Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnect attempts happen per call; the store's timeout bounds them.
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        Ok(Link::Direct(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }
}

/// rustls's refusal of a certificate, said as what it means here.
fn explain(e: RedisError) -> RedisError {
    let text = e.to_string();
    if text.contains("invalid peer certificate") {
        RedisError::from((
            ErrorKind::Io,
            "TLS: the server's certificate is refused (not from tls_ca or the system's CA \
             certificates, or not naming the host)",
            text,
        ))
    } else {
        e
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Direct(m) => Box::pin(async { m.req_packed_command(cmd).await.map_err(explain) }),
            Link::Sentinel(s) => Box::pin(async { s.command(cmd).await.map_err(explain) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Direct(m) => m.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(s) => Box::pin(s.commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Direct(m) => m.get_db(),
            Link::Sentinel(s) => s.shared.db,
        }
    }
}

/// The master of a Sentinel-managed Redis. redis's `SentinelClient` finds
/// the master (asking each sentinel, checking the answer with `ROLE`) but
/// keeps no connection, and its `ConnectionManager` reconnects to one
/// fixed address; so this keeps the master's connection and asks Sentinel
/// again when it may have changed:
///
/// - after a call fails for a reason that says so (the connection broke
///   or timed out, or the server answers READONLY or MASTERDOWN, as a
///   demoted master does): the call fails (the store counts it and the
///   rule's `on_store_error` decides), the next call asks Sentinel;
/// - when a sentinel announces `+switch-master` for this master (each
///   sentinel is watched, so a failover moves the calls within
///   milliseconds, not at the first failure).
///
/// Calls in flight on the old master when it changes complete there or
/// fail; the ones after go to the new master.
#[derive(Clone)]
pub struct SentinelLink {
    shared: Arc<Shared>,
}

struct Shared {
    master: String,
    db: i64,
    timeout: Duration,
    /// One lookup at a time: the calls that find no connection wait for
    /// the one lookup instead of each asking every sentinel.
    resolver: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<Current>>,
    /// The last master connected to, to log a change once.
    last: Mutex<Option<String>>,
    ids: AtomicU64,
    /// Clients of the sentinels, for the `+switch-master` watchers.
    sentinels: Vec<Client>,
    /// The watchers (started with the first call, which runs on tokio),
    /// stopped with the store.
    watchers: OnceLock<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for w in self.watchers.get().into_iter().flatten() {
            w.abort();
        }
    }
}

#[derive(Clone)]
struct Current {
    id: u64,
    /// "ip:port", as Sentinel names it.
    addr: String,
    con: MultiplexedConnection,
}

/// Whether a call's failure means the master may have changed: no answer
/// from it, or it is no longer the master.
fn stale(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            )
        )
}

impl SentinelLink {
    fn new(url: SentinelUrl, tls_ca: Option<&[u8]>, timeout: Duration) -> RedisResult<Self> {
        let mut b = SentinelClientBuilder::new(
            url.sentinels.clone(),
            &url.master,
            SentinelServerType::Master,
        )?
        .set_client_to_redis_db(url.db);
        if let Some(u) = &url.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &url.password {
            b = b.set_client_to_redis_password(p);
        }
        let certs = certificates(tls_ca);
        if url.tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(c) = &certs {
                b = b
                    .set_client_to_redis_certificates(c.clone())
                    .set_client_to_sentinel_certificates(c.clone());
            }
        }
        let resolver = b.build()?;
        let sentinels = url
            .sentinels
            .iter()
            .map(|addr| match &certs {
                Some(c) if url.tls => Client::build_with_tls(addr.clone(), c.clone()),
                _ => Client::open(addr.clone()),
            })
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(SentinelLink {
            shared: Arc::new(Shared {
                master: url.master,
                db: url.db,
                timeout,
                resolver: tokio::sync::Mutex::new(resolver),
                current: Mutex::new(None),
                last: Mutex::new(None),
                ids: AtomicU64::new(0),
                sentinels,
                watchers: OnceLock::new(),
            }),
        })
    }

    /// The master's connection: the one held, else the master Sentinel
    /// names now.
    async fn current(&self) -> RedisResult<Current> {
        let s = &self.shared;
        s.watchers.get_or_init(|| {
            s.sentinels
                .iter()
                .map(|c| {
                    let watch = watch(Arc::downgrade(s), c.clone(), s.master.clone(), s.timeout);
                    tokio::spawn(watch).abort_handle()
                })
                .collect()
        });
        if let Some(c) = lock(&s.current).clone() {
            return Ok(c);
        }
        let mut resolver = s.resolver.lock().await;
        if let Some(c) = lock(&s.current).clone() {
            return Ok(c);
        }
        let client = resolver.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(s.timeout))
            .set_response_timeout(Some(s.timeout));
        let con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let previous = lock(&s.last).replace(addr.clone());
        if previous.as_ref().is_some_and(|p| *p != addr) {
            tracing::warn!(
                "store (redis): Sentinel names a new master for {}: {addr} (was {})",
                s.master,
                previous.unwrap_or_default()
            );
        }
        let c = Current {
            id: s.ids.fetch_add(1, Ordering::Relaxed),
            addr,
            con,
        };
        *lock(&s.current) = Some(c.clone());
        Ok(c)
    }

    /// Drops connection `id` (if still held), so the next call asks Sentinel.
    fn forget(&self, id: u64) {
        let mut current = lock(&self.shared.current);
        if current.as_ref().is_some_and(|c| c.id == id) {
            *current = None;
        }
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut c = self.current().await?;
        let result = c.con.req_packed_command(cmd).await;
        if let Err(e) = &result
            && stale(e)
        {
            self.forget(c.id);
        }
        result
    }

    async fn commands(
        &self,
        pipeline: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut c = self.current().await?;
        let result = c.con.req_packed_commands(pipeline, offset, count).await;
        if let Err(e) = &result
            && stale(e)
        {
            self.forget(c.id);
        }
        result
    }
}

/// Follows one sentinel's `+switch-master` announcements: one naming a
/// new address for this master drops the held connection. Reconnects
/// after [`WATCH_RETRY`] while the store lives; each attempt is bounded by
/// `timeout`.
async fn watch(shared: Weak<Shared>, sentinel: Client, master: String, timeout: Duration) {
    loop {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(timeout, sentinel.get_async_pubsub())
                .await
                .ok()?
                .ok()?;
            tokio::time::timeout(timeout, pubsub.subscribe(SWITCH_MASTER))
                .await
                .ok()?
                .ok()?;
            Some(pubsub)
        }
        .await;
        if let Some(pubsub) = subscribed {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                let words: Vec<&str> = text.split(' ').collect();
                if let [name, _, _, ip, port] = words[..]
                    && name == master
                {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    let new = format!("{ip}:{port}");
                    let mut current = lock(&shared.current);
                    if current.as_ref().is_some_and(|c| c.addr != new) {
                        *current = None;
                    }
                }
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(h: &str, p: u16) -> ConnectionAddr {
        ConnectionAddr::Tcp(h.into(), p)
    }

    #[test]
    fn sentinel_urls() {
        let u =
            parse_sentinel("redis+sentinel://10.0.0.1:26380,s2.example,[2001:db8::1]:5000/mx/3")
                .unwrap();
        assert!(!u.tls);
        assert_eq!(
            u.sentinels,
            [
                tcp("10.0.0.1", 26380),
                tcp("s2.example", SENTINEL_PORT),
                tcp("2001:db8::1", 5000)
            ]
        );
        assert_eq!((u.master.as_str(), u.db), ("mx", 3));
        assert_eq!((u.username, u.password), (None, None));
        let u = parse_sentinel("rediss+sentinel://rpol:p%40ss@[::1]/mx").unwrap();
        assert!(u.tls);
        assert!(matches!(
            &u.sentinels[..],
            [ConnectionAddr::TcpTls { host, port: SENTINEL_PORT, insecure: false, .. }] if host == "::1"
        ));
        assert_eq!((u.master.as_str(), u.db), ("mx", 0));
        assert_eq!(u.username.as_deref(), Some("rpol"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        let u = parse_sentinel("redis+sentinel://:pw@h/mx/").unwrap();
        assert_eq!((u.username, u.password.as_deref()), (None, Some("pw")));
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:1//0",
            "redis+sentinel://h:1/mx/x",
            "redis+sentinel://h:1/mx/-1",
            "redis+sentinel://h:1,/mx",
            "redis+sentinel:///mx",
            "redis+sentinel://h:1/mx?x=1",
            "rediss+sentinel://h:1/mx#insecure",
            "redis+sentinel://0.0.0.0/mx",
        ] {
            assert!(parse_sentinel(bad).is_err(), "{bad}");
        }
    }
}
