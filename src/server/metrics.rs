//! Prometheus metrics: the server's own counters (latency, connections,
//! reloads, malformed requests), the registry that keeps each profile's
//! request counters across reloads, and GET /metrics on `[metrics] listen`.
//!
//! Counting never takes a lock: every counter is a relaxed atomic, owned
//! where it is counted (the DNS cache, the SPF cache, the chain's tally,
//! this module). One [`Collector`] reads them all when Prometheus scrapes
//! and encodes them with prometheus-client's text encoder (format 0.0.4).
//! Label values are fixed words or names from policy.toml, never request
//! text.
//!
//! The HTTP side is a small bounded handler over tokio, the request head
//! parsed by httparse: one request per connection, at most
//! [`MAX_REQUEST_HEAD`] bytes of it, all within `[metrics] timeout`, at most
//! [`MAX_SCRAPES`] connections at once. It runs beside the policy
//! listeners and shares nothing with them but the counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::common::lock;
use crate::policy::tally::{ActionClass, ActionCounts, RuleResult, RuleTally};
use crate::policy::{NO_PROFILE, Policy};
use crate::rules::RULES;
use crate::spf;
use crate::state::spf_cache::IDENTITIES;

/// Bytes of an HTTP request head (request line and headers) read at most:
/// a scraper sends a few hundred.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Headers a request may have (httparse parses into a fixed array).
const MAX_HEADERS: usize = 32;

/// Metrics connections served at once; one beyond is closed unanswered.
/// A scraper or two is all this endpoint is for.
pub const MAX_SCRAPES: usize = 16;

/// Upper bounds of the latency buckets, in seconds: 10 µs (a decision
/// from memory) to 10 s (DNS timeouts), in 1-2.5-5 steps.
const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of fixed buckets of relaxed atomics (no lock, unlike
/// prometheus-client's own `Histogram`).
#[derive(Debug, Default)]
pub struct Latency {
    /// Per bucket, not cumulative; the last one is beyond every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The server's counters and the per-profile registry. One per server,
/// beside the swappable policy.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Request counters of every profile loaded since start, by name, and
    /// its refusals logged instead of answered (reject_warning).
    profiles: Mutex<BTreeMap<String, ProfileCounts>>,
    unmatched: Arc<ActionCounts>,
    rules: Arc<RuleTally>,
    /// From a request decoded to its answer written.
    pub latency: Latency,
    open_connections: AtomicU64,
    reloads_done: AtomicU64,
    reloads_failed: AtomicU64,
    malformed: AtomicU64,
    /// Requests whose checks were dropped: answered the timeout answer
    /// after `answer_timeout` (late), or unanswered, the client gone.
    late: AtomicU64,
    gone: AtomicU64,
    /// Connections closed unanswered: TCP peers outside `[server] allow`,
    /// unix-socket or loopback TCP peers of another account.
    refused_address: AtomicU64,
    refused_user: AtomicU64,
}

impl Metrics {
    /// Gives a freshly loaded policy the counters its profiles' names
    /// counted into before (new blocks for new names). Runs at start and
    /// at reload, never per request.
    pub fn adopt(&self, policy: &mut Policy) {
        let mut profiles = lock(&self.profiles);
        for p in &mut policy.profiles {
            let counts = profiles.entry(p.name.to_string()).or_default();
            p.requests = counts.requests.clone();
            p.reject_warnings = counts.reject_warnings.clone();
        }
        policy.unmatched = self.unmatched.clone();
        policy.rule_results = self.rules.clone();
    }

    /// Counts an open connection until the guard drops.
    pub fn connection(&self) -> OpenConnection<'_> {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(&self.open_connections)
    }

    pub fn reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_done
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request whose checks were dropped: `late` (answered the
    /// timeout answer) or the client gone.
    pub fn abandoned(&self, late: bool) {
        let counter = if late { &self.late } else { &self.gone };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection refused for `reason` (`address` or `user`).
    pub fn refused(&self, reason: &str) {
        let counter = if reason == "address" {
            &self.refused_address
        } else {
            &self.refused_user
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A profile's counters, kept by name across reloads.
#[derive(Debug, Default, Clone)]
struct ProfileCounts {
    requests: Arc<ActionCounts>,
    reject_warnings: Arc<ActionCounts>,
}

/// The classes a refusal logged instead of answered can have.
const WARNED: [ActionClass; 3] = [
    ActionClass::Reject,
    ActionClass::Defer,
    ActionClass::DeferIfPermit,
];

/// See [`Metrics::connection`].
pub struct OpenConnection<'a>(&'a AtomicU64);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads every counter at scrape time.
struct Exposition(Arc<Shared>);

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exposition")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let metrics = &shared.metrics;
        let policy = shared.policy();

        // Counter names are given without `_total`: the encoder adds it.
        let mut family = encoder.encode_descriptor(
            "rpol_requests",
            "Policy requests answered, by profile (\"-\": none matched) and the class of the action answered.",
            None,
            MetricType::Counter,
        )?;
        let profiles: Vec<(String, ProfileCounts)> = lock(&metrics.profiles)
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        for (name, counts) in &profiles {
            for class in ActionClass::ALL {
                let labels = [("profile", name.as_str()), ("action", class.name())];
                ConstCounter::new(counts.requests.get(class))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let labels = [
            ("profile", NO_PROFILE),
            ("action", ActionClass::Dunno.name()),
        ];
        let unmatched = metrics.unmatched.get(ActionClass::Dunno);
        ConstCounter::new(unmatched).encode(family.encode_family(&labels)?)?;

        let mut family = encoder.encode_descriptor(
            "rpol_reject_warnings",
            "Refusals logged as reject_warning instead of answered (warn_if_reject, mode = \"warn\"), by profile and the class of the action that would have gone out.",
            None,
            MetricType::Counter,
        )?;
        for (name, counts) in &profiles {
            for class in WARNED {
                let labels = [("profile", name.as_str()), ("action", class.name())];
                ConstCounter::new(counts.reject_warnings.get(class))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        // The rules the running policy uses, and any that ever counted.
        let mut shown = [false; RULES.len()];
        for profile in &policy.profiles {
            for rule in profile.stages.iter().flatten() {
                shown[rule.rule.index()] = true;
            }
        }
        let mut family = encoder.encode_descriptor(
            "rpol_rule_decisions",
            "Rule evaluations, by rule (Postfix's restriction name) and what the rule said.",
            None,
            MetricType::Counter,
        )?;
        for (i, spec) in RULES.iter().enumerate() {
            let counts = RuleResult::ALL.map(|r| metrics.rules.get(i, r));
            if !shown[i] && counts.iter().all(|n| *n == 0) {
                continue;
            }
            for (result, n) in RuleResult::ALL.iter().zip(counts) {
                let labels = [("rule", spec.name), ("result", result.name())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }

        let dns = shared.state.resolver().stats();
        counter(
            &mut encoder,
            "rpol_dns_cache_hits",
            "DNS lookups answered from the cache.",
            dns.hits,
        )?;
        counter(
            &mut encoder,
            "rpol_dns_cache_misses",
            "DNS lookups that sent a query.",
            dns.misses,
        )?;
        counter(
            &mut encoder,
            "rpol_dns_cache_coalesced",
            "DNS lookups that joined the same query already in flight.",
            dns.coalesced,
        )?;
        gauge(
            &mut encoder,
            "rpol_dns_cache_entries",
            "Entries in the DNS cache (expired ones until touched).",
            i64::try_from(dns.entries).unwrap_or(i64::MAX),
        )?;

        let spf_cache = &shared.state.spf_results;
        let mut family = encoder.encode_descriptor(
            "rpol_spf_results",
            "SPF results the rules used, by identity (mailfrom, helo) and result; cached results count too.",
            None,
            MetricType::Counter,
        )?;
        for identity in IDENTITIES {
            let id = match identity {
                spf::Identity::MailFrom => "mailfrom",
                spf::Identity::Helo => "helo",
            };
            for (i, result) in spf::RESULT_NAMES.iter().enumerate() {
                let labels = [("identity", id), ("result", *result)];
                ConstCounter::new(spf_cache.used(identity, i))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let (hits, misses) = spf_cache.hits_and_misses();
        counter(
            &mut encoder,
            "rpol_spf_cache_hits",
            "SPF results taken from the result cache.",
            hits,
        )?;
        counter(
            &mut encoder,
            "rpol_spf_cache_misses",
            "SPF results not in the result cache (evaluated).",
            misses,
        )?;

        let latency = &metrics.latency;
        let counts: Vec<u64> = latency
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(counts.clone())
            .collect();
        let sum = Duration::from_nanos(latency.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        let mut m = encoder.encode_descriptor(
            "rpol_request_duration_seconds",
            "Time from a request decoded to its answer written.",
            None,
            MetricType::Histogram,
        )?;
        // The count is the buckets' own sum, so that it equals +Inf even
        // while requests are counted during the scrape.
        m.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)?;

        gauge(
            &mut encoder,
            "rpol_open_connections",
            "Policy connections open now.",
            i64::try_from(metrics.open_connections.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        )?;
        let mut family = encoder.encode_descriptor(
            "rpol_reloads",
            "Configuration reloads (SIGHUP or a changed file), by result.",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [
            ("done", &metrics.reloads_done),
            ("failed", &metrics.reloads_failed),
        ] {
            ConstCounter::new(n.load(Ordering::Relaxed))
                .encode(family.encode_family(&[("result", result)])?)?;
        }
        counter(
            &mut encoder,
            "rpol_malformed_requests",
            "Requests that could not be decoded, answered with error_action.",
            metrics.malformed.load(Ordering::Relaxed),
        )?;
        let mut family = encoder.encode_descriptor(
            "rpol_requests_abandoned",
            "Requests whose checks were dropped: answered with a temporary failure after answer_timeout (late), or left unanswered when the client went away (client_gone).",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in [("late", &metrics.late), ("client_gone", &metrics.gone)] {
            ConstCounter::new(n.load(Ordering::Relaxed))
                .encode(family.encode_family(&[("reason", reason)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "rpol_connections_refused",
            "Connections closed unanswered, by reason: a TCP peer outside [server] allow (address), a unix-socket or loopback TCP peer of another account or of no known account (user).",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in [
            ("address", &metrics.refused_address),
            ("user", &metrics.refused_user),
        ] {
            ConstCounter::new(n.load(Ordering::Relaxed))
                .encode(family.encode_family(&[("reason", reason)])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "rpol_rate_limit_exceeded",
            "Keys that crossed a rate limit, once per key and window, by limit name.",
            None,
            MetricType::Counter,
        )?;
        for (limit, n) in shared.state.rate_events.exceeded() {
            ConstCounter::new(n).encode(family.encode_family(&[("limit", limit.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "rpol_dnsbl_lookups",
            "DNS list lookups by list and answer: listed, not_listed, error_code (an answer in 127.255.255.0/24, never a listing), failed (the DNS failed); every list named since rpol started.",
            None,
            MetricType::Counter,
        )?;
        for (site, c) in crate::dnsbl::all_counters() {
            for (answer, n) in [
                ("listed", &c.listed),
                ("not_listed", &c.not_listed),
                ("error_code", &c.error_codes),
                ("failed", &c.failures),
            ] {
                ConstCounter::new(n.load(Ordering::Relaxed)).encode(
                    family.encode_family(&[("site", site.as_str()), ("answer", answer)])?,
                )?;
            }
        }
        let lists = policy.dns_lists();
        let mut family = encoder.encode_descriptor(
            "rpol_dnsbl_disabled",
            "1 while the running policy's DNS list is switched off by its RFC 5782 probes (it lists 127.0.0.1, or its probes keep failing): its rules act as when its DNS fails.",
            None,
            MetricType::Gauge,
        )?;
        for list in &lists {
            ConstGauge::new(i64::from(list.health().is_off()))
                .encode(family.encode_family(&[("site", list.domain.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "rpol_egress_listed",
            "1 when the blocklist lists one of our egress addresses or our HELO name, 0 when not, at the last egress watch ([dnsbl] watch_egress); absent before it looked.",
            None,
            MetricType::Gauge,
        )?;
        for list in &lists {
            if let Some(listed) = list.health().egress_listed() {
                ConstGauge::new(i64::from(listed))
                    .encode(family.encode_family(&[("site", list.domain.as_str())])?)?;
            }
        }
        if let Some(store) = shared.state.store() {
            counter(
                &mut encoder,
                "rpol_store_errors",
                "Store calls that failed (timeouts, errors, full).",
                store.errors.load(Ordering::Relaxed),
            )?;
        }
        Ok(())
    }
}

/// The exposition of every metric, in the Prometheus text format 0.0.4.
pub fn exposition(shared: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(shared.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// The Content-Type of [`exposition`].
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves GET /metrics on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("metrics: {peer}: {MAX_SCRAPES} connections busy, closing");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let limit = shared.settings().metrics_timeout;
            if tokio::time::timeout(limit, scrape(stream, &shared))
                .await
                .is_err()
            {
                tracing::debug!("metrics: {peer}: no answer within {limit:?}, closing");
            }
        });
    }
}

/// Reads one request head and answers it; the connection then closes.
async fn scrape(mut stream: TcpStream, shared: &Arc<Shared>) {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    let response = loop {
        if len == buf.len() {
            break status(431, "Request Header Fields Too Large", "");
        }
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => {
                break answer(request.method, request.path, shared);
            }
            Err(httparse::Error::TooManyHeaders) => {
                break status(431, "Request Header Fields Too Large", "");
            }
            Err(_) => break status(400, "Bad Request", ""),
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn answer(method: Option<&str>, path: Option<&str>, shared: &Arc<Shared>) -> Vec<u8> {
    let path = path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path != "/metrics" {
        return status(404, "Not Found", "");
    }
    let head_only = match method {
        Some("GET") => false,
        Some("HEAD") => true,
        // RFC 9110 15.5.6: a 405 names the methods that are allowed.
        _ => return status(405, "Method Not Allowed", "Allow: GET, HEAD\r\n"),
    };
    let body = exposition(shared);
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

/// A response with a status, `extra` header lines, and the reason as a
/// short plain-text body.
fn status(code: u16, reason: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets() {
        let l = Latency::default();
        l.observe(Duration::from_micros(5));
        l.observe(Duration::from_micros(10));
        l.observe(Duration::from_millis(3));
        l.observe(Duration::from_secs(60));
        let counts: Vec<u64> = l
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[8], 1); // 3 ms: in (2.5 ms, 5 ms]
        assert_eq!(counts[LATENCY_BUCKETS.len()], 1);
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn status_lines() {
        let r = String::from_utf8(status(404, "Not Found", "")).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nNot Found\n"), "{r}");
        assert!(r.contains("Content-Length: 10\r\n"), "{r}");
    }
}
