//! Lists that fail safe, and our own addresses on them.
//!
//! - Probes: each configured list is asked for RFC 5782's test entries
//!   (section 5): `127.0.0.2` must be listed and `127.0.0.1` must not for
//!   an address list, `test` must be listed and `invalid` must not for a
//!   domain list. A list that lists `127.0.0.1` (or `invalid`) lists the
//!   world and is switched off at once; one that fails
//!   [`PROBE_FAILURES_OFF`] probes in a row (its test entry missing, an
//!   error code, a DNS failure) is switched off too. While off, a lookup
//!   in it is a DNS failure without a query: a blocklist passes, an
//!   allowlist sets defer_if_reject, as in Postfix when the list's DNS
//!   fails. The first good probe switches it back on.
//! - Circuit breaker: a list whose lookups time out [`TIMEOUTS_OPEN`]
//!   times in a row is skipped (a failure, never a listing) for
//!   `[dnsbl] timeout_pause`; after the pause lookups go out again, the
//!   first answer closes the breaker, another timeout opens it again.
//! - Egress watch: our egress addresses and HELO name, looked up in the
//!   configured blocklists, so that the admin learns of a listing before
//!   the remote sites' rejections arrive.
//!
//! The state is one [`Health`] per list domain, inside the list's
//! [`Counters`] (kept across reloads). The timers run in the server's
//! housekeeping; this module only answers what one round finds.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Counters, Listing, address_query, domain_query, epoch, is_error_code, txt_reason};
use crate::common::lock;
use crate::dns::{Answer, Outcome as DnsOutcome, RecordKind, Resolver};

/// Probes failed in a row that switch a list off (N): three probes ten
/// minutes apart, so that one lost packet or a resolver restart does not.
pub const PROBE_FAILURES_OFF: u32 = 3;
/// Lookups timed out in a row that open a list's circuit breaker (K).
pub const TIMEOUTS_OPEN: u32 = 5;
/// How often the lists are probed by default.
pub const PROBE_EVERY: Duration = Duration::from_secs(600);
/// How often the egress is looked up by default.
pub const WATCH_EVERY: Duration = Duration::from_secs(900);
/// How long an open breaker skips its list by default.
pub const TIMEOUT_PAUSE: Duration = Duration::from_secs(120);

/// `[dnsbl]`'s probe, breaker and egress settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Whether the lists are probed (`probe`).
    pub probe: bool,
    pub probe_every: Duration,
    /// Whether the egress is watched (`watch_egress`).
    pub watch_egress: bool,
    pub watch_every: Duration,
    /// How long an open breaker skips its list (`timeout_pause`).
    pub timeout_pause: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            probe: true,
            probe_every: PROBE_EVERY,
            watch_egress: true,
            watch_every: WATCH_EVERY,
            timeout_pause: TIMEOUT_PAUSE,
        }
    }
}

/// One configured list domain and how the rules query it.
#[derive(Debug, Clone)]
pub struct Watched {
    pub domain: String,
    pub counters: Arc<Counters>,
    /// Queried with addresses (reject_rbl_client, permit_dnswl_client).
    pub addresses: bool,
    /// Queried with names (reject_rhsbl_*, permit_rhswl_client).
    pub names: bool,
    /// Some rule uses it as a blocklist (the egress is looked up in those).
    pub blocks: bool,
}

impl Watched {
    pub fn health(&self) -> &Health {
        &self.counters.health
    }
}

/// A list's health: one small record per domain.
#[derive(Debug, Default)]
pub struct Health {
    /// Switched off by the probes.
    off: AtomicBool,
    /// Why, while off.
    why_off: Mutex<String>,
    probe_failures: AtomicU32,
    /// Lookups timed out in a row.
    timeouts: AtomicU32,
    /// Until when the breaker skips the list, in milliseconds since
    /// [`epoch`] (0: closed).
    open_until: AtomicU64,
    /// The breaker's pause, in milliseconds (0: the default).
    pause_ms: AtomicU64,
    /// 0: not looked up, 1: the egress is not listed, 2: listed.
    egress: AtomicU8,
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Health {
    /// Whether the probes switched the list off.
    pub fn is_off(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }

    /// Whether the egress was found listed: `None` before it was looked up.
    pub fn egress_listed(&self) -> Option<bool> {
        match self.egress.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n == 2),
        }
    }

    /// Sets the breaker's pause (from `[dnsbl] timeout_pause`).
    pub fn set_pause(&self, pause: Duration) {
        let ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
        self.pause_ms.store(ms.max(1), Ordering::Relaxed);
    }

    fn pause(&self) -> Duration {
        match self.pause_ms.load(Ordering::Relaxed) {
            0 => TIMEOUT_PAUSE,
            ms => Duration::from_millis(ms),
        }
    }

    /// Why a lookup in the list is not sent now (switched off, or the
    /// breaker open), or `None` when it is.
    pub(super) fn gate(&self, domain: &str) -> Option<String> {
        if self.is_off() {
            let why = lock(&self.why_off).clone();
            return Some(format!("{domain} is switched off: {why}"));
        }
        let until = self.open_until.load(Ordering::Relaxed);
        if until != 0 && now_ms() < until {
            return Some(format!(
                "skipped: {domain} timed out {TIMEOUTS_OPEN} times in a row"
            ));
        }
        None
    }

    /// Counts a lookup's outcome for the breaker.
    pub(super) fn answered(&self, listing: &Listing, domain: &str) {
        if matches!(listing, Listing::Failed(why) if why == "timeout") {
            let n = self.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= TIMEOUTS_OPEN {
                let pause = self.pause();
                let until =
                    now_ms().saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
                let was = self.open_until.swap(until, Ordering::Relaxed);
                // Once per opening, not once per lookup that was in flight.
                if was == 0 || now_ms() >= was {
                    tracing::warn!(
                        "DNS list {domain}: {n} lookups timed out in a row: skipped for {}s (its rules pass as when its DNS fails)",
                        pause.as_secs_f64()
                    );
                }
            }
            return;
        }
        if self.timeouts.swap(0, Ordering::Relaxed) >= TIMEOUTS_OPEN
            && self.open_until.swap(0, Ordering::Relaxed) != 0
        {
            tracing::warn!("DNS list {domain} answers again: its lookups resume");
        }
    }

    /// Takes a probe's verdict: switches the list off or on.
    pub fn probed(&self, domain: &str, verdict: &Verdict) {
        match verdict {
            Verdict::Well => {
                self.probe_failures.store(0, Ordering::Relaxed);
                if self.off.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "DNS list {domain} is back on: its RFC 5782 test entries answer right again"
                    );
                }
            }
            Verdict::ListsTheWorld(why) => {
                self.probe_failures.fetch_add(1, Ordering::Relaxed);
                self.switch_off(domain, format!("it lists the world ({why})"));
            }
            Verdict::Failed(why) => {
                let n = self.probe_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= PROBE_FAILURES_OFF {
                    self.switch_off(domain, format!("{n} probes failed in a row (last: {why})"));
                } else {
                    tracing::info!(
                        "DNS list {domain}: probe failed ({n} of {PROBE_FAILURES_OFF} before it is switched off): {why}"
                    );
                }
            }
        }
    }

    fn switch_off(&self, domain: &str, why: String) {
        *lock(&self.why_off) = why.clone();
        if !self.off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "DNS list {domain} switched off: {why}; its rules act as when its DNS fails (a blocklist rejects nothing) until a probe finds it well"
            );
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Well,
    /// The entry that must not be listed is: the list lists everything.
    ListsTheWorld(String),
    /// A test entry missing, an error code, a DNS failure.
    Failed(String),
}

/// An A lookup as a list answers it, before any filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Raw {
    Listed(Vec<Ipv4Addr>),
    NotListed,
    ErrorCode(Ipv4Addr),
    Failed(String),
}

async fn raw_a(dns: &Resolver, query: &str) -> Raw {
    let a = dns.lookup(query, RecordKind::A).await;
    match a.outcome {
        DnsOutcome::Found(answer) => match &*answer {
            Answer::A(addrs) if !addrs.is_empty() => {
                match addrs.iter().find(|a| is_error_code(**a)) {
                    Some(code) => Raw::ErrorCode(*code),
                    None => Raw::Listed(addrs.clone()),
                }
            }
            _ => Raw::NotListed,
        },
        DnsOutcome::NxDomain | DnsOutcome::NoData => Raw::NotListed,
        DnsOutcome::TempFail(why) => Raw::Failed(why),
    }
}

fn joined(addrs: &[Ipv4Addr]) -> String {
    let v: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    v.join(", ")
}

/// The test entries a list must list and must not list (RFC 5782
/// section 5): `(listed, not listed)` query names.
fn test_entries(domain: &str, names: bool) -> (String, String) {
    if names {
        (format!("test.{domain}"), format!("invalid.{domain}"))
    } else {
        (format!("2.0.0.127.{domain}"), format!("1.0.0.127.{domain}"))
    }
}

/// Probes one kind of entries of `domain`.
async fn probe_kind(dns: &Resolver, domain: &str, names: bool) -> Verdict {
    let (listed, unlisted) = test_entries(domain, names);
    let (yes, no) = tokio::join!(raw_a(dns, &listed), raw_a(dns, &unlisted));
    if let Raw::Listed(addrs) = &no {
        return Verdict::ListsTheWorld(format!("{unlisted} answered {}", joined(addrs)));
    }
    match (yes, no) {
        (Raw::Listed(_), Raw::NotListed) => Verdict::Well,
        (Raw::NotListed, _) => Verdict::Failed(format!("the test entry {listed} is not listed")),
        (Raw::ErrorCode(code), _) | (_, Raw::ErrorCode(code)) => {
            Verdict::Failed(format!("it answered the error code {code}"))
        }
        (Raw::Failed(why), _) | (_, Raw::Failed(why)) => {
            Verdict::Failed(format!("lookup failed ({why})"))
        }
        // Handled above.
        (Raw::Listed(_), Raw::Listed(_)) => Verdict::Well,
    }
}

/// Probes `list` with the test entries of each kind its rules query; the
/// worst verdict counts.
pub async fn probe(dns: &Resolver, list: &Watched) -> Verdict {
    let mut verdict = Verdict::Well;
    for (wanted, names) in [(list.addresses, false), (list.names, true)] {
        if !wanted {
            continue;
        }
        match probe_kind(dns, &list.domain, names).await {
            Verdict::Well => {}
            world @ Verdict::ListsTheWorld(_) => return world,
            failed => verdict = failed,
        }
    }
    verdict
}

/// Probes every list at once, each within `deadline`, and switches each
/// off or on; returns what each probe found.
pub async fn probe_all(
    dns: &Resolver,
    lists: &[Watched],
    deadline: Duration,
) -> Vec<(String, Verdict)> {
    let mut tasks = tokio::task::JoinSet::new();
    for list in lists {
        let (dns, list) = (dns.clone(), list.clone());
        tasks.spawn(async move {
            let verdict = tokio::time::timeout(deadline, probe(&dns, &list))
                .await
                .unwrap_or_else(|_| Verdict::Failed("no answer within the deadline".into()));
            list.health().probed(&list.domain, &verdict);
            (list.domain, verdict)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(found) = done {
            out.push(found);
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What the egress watch found for one of our addresses or names in one
/// list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The address or HELO name looked up.
    pub what: String,
    pub domain: String,
    pub result: EgressResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressResult {
    /// Listed: the A records and the TXT reason.
    Listed(Vec<Ipv4Addr>, String),
    NotListed,
    /// Not known: the list is off, answered an error code, or failed.
    Unknown(String),
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, domain) = (&self.what, &self.domain);
        match &self.result {
            EgressResult::Listed(addrs, reason) => {
                write!(f, "{what} is listed by {domain} ({})", joined(addrs))?;
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            EgressResult::NotListed => write!(f, "{what} is not listed by {domain}"),
            EgressResult::Unknown(why) => {
                write!(f, "{what} could not be looked up in {domain}: {why}")
            }
        }
    }
}

/// Looks `what` (an address or a name) up in one list.
async fn egress_one(dns: &Resolver, domain: &str, what: String, query: String) -> Finding {
    let result = match raw_a(dns, &query).await {
        Raw::Listed(addrs) => EgressResult::Listed(addrs, txt_reason(dns, &query).await),
        Raw::NotListed => EgressResult::NotListed,
        Raw::ErrorCode(code) => EgressResult::Unknown(format!("error code {code}")),
        Raw::Failed(why) => EgressResult::Unknown(format!("lookup failed ({why})")),
    };
    Finding {
        what,
        domain: domain.to_string(),
        result,
    }
}

/// Looks our egress addresses up in every blocklist of `lists` that is
/// queried with addresses, and `helo` in those queried with names, all at
/// once within `deadline`; records in each list's health whether it lists
/// us, and warns of each listing.
pub async fn watch_egress(
    dns: &Resolver,
    lists: &[Watched],
    egress: &[IpAddr],
    helo: Option<&str>,
    deadline: Duration,
) -> Vec<Finding> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut unknown = Vec::new();
    for list in lists.iter().filter(|l| l.blocks) {
        let mut queries = Vec::new();
        if list.addresses {
            for ip in egress {
                let ip = ip.to_canonical();
                queries.push((ip.to_string(), address_query(ip, &list.domain)));
            }
        }
        if list.names
            && let Some(name) = helo
            && let Some(q) = domain_query(name, &list.domain)
        {
            queries.push((name.to_string(), q));
        }
        for (what, query) in queries {
            if list.health().is_off() {
                unknown.push(Finding {
                    what,
                    domain: list.domain.clone(),
                    result: EgressResult::Unknown("the list is switched off".into()),
                });
                continue;
            }
            let (dns, domain) = (dns.clone(), list.domain.clone());
            tasks.spawn(async move {
                let fallback = Finding {
                    what: what.clone(),
                    domain: domain.clone(),
                    result: EgressResult::Unknown("no answer within the deadline".into()),
                };
                tokio::time::timeout(deadline, egress_one(&dns, &domain, what, query))
                    .await
                    .unwrap_or(fallback)
            });
        }
    }
    let mut found = unknown;
    while let Some(done) = tasks.join_next().await {
        if let Ok(f) = done {
            found.push(f);
        }
    }
    found.sort_by(|a, b| (&a.domain, &a.what).cmp(&(&b.domain, &b.what)));
    for list in lists.iter().filter(|l| l.blocks) {
        let mine: Vec<&Finding> = found.iter().filter(|f| f.domain == list.domain).collect();
        let listed = mine
            .iter()
            .any(|f| matches!(f.result, EgressResult::Listed(..)));
        let known = mine
            .iter()
            .any(|f| !matches!(f.result, EgressResult::Unknown(_)));
        if listed || known {
            let was = list
                .health()
                .egress
                .swap(if listed { 2 } else { 1 }, Ordering::Relaxed);
            if was == 2 && !listed {
                tracing::warn!("our egress is no longer listed by {}", list.domain);
            }
        }
    }
    for f in &found {
        if matches!(f.result, EgressResult::Listed(..)) {
            tracing::warn!("our egress: {f}");
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_entries_of_rfc_5782() {
        assert_eq!(
            test_entries("bl.example", false),
            (
                "2.0.0.127.bl.example".to_string(),
                "1.0.0.127.bl.example".to_string()
            )
        );
        assert_eq!(
            test_entries("dbl.example", true),
            (
                "test.dbl.example".to_string(),
                "invalid.dbl.example".to_string()
            )
        );
    }

    #[test]
    fn probes_switch_off_and_on() {
        let h = Health::default();
        let failed = Verdict::Failed("x".into());
        for _ in 1..PROBE_FAILURES_OFF {
            h.probed("bl.example", &failed);
            assert!(!h.is_off());
        }
        h.probed("bl.example", &failed);
        assert!(h.is_off());
        assert!(h.gate("bl.example").unwrap().contains("switched off"));
        h.probed("bl.example", &Verdict::Well);
        assert!(!h.is_off());
        assert_eq!(h.gate("bl.example"), None);
        h.probed("bl.example", &Verdict::ListsTheWorld("y".into()));
        assert!(h.is_off(), "at once");
    }

    #[test]
    fn breaker_opens_after_timeouts_and_closes_on_an_answer() {
        let h = Health::default();
        h.set_pause(Duration::from_secs(3600));
        let timeout = Listing::Failed("timeout".into());
        for _ in 1..TIMEOUTS_OPEN {
            h.answered(&timeout, "bl.example");
            assert_eq!(h.gate("bl.example"), None);
        }
        // A SERVFAIL is an answer: the count starts again.
        h.answered(&Listing::Failed("SERVFAIL".into()), "bl.example");
        for _ in 1..TIMEOUTS_OPEN {
            h.answered(&timeout, "bl.example");
        }
        assert_eq!(h.gate("bl.example"), None);
        h.answered(&timeout, "bl.example");
        assert!(h.gate("bl.example").unwrap().starts_with("skipped"));
        h.answered(&Listing::NotListed, "bl.example");
        assert_eq!(h.gate("bl.example"), None);
    }
}
