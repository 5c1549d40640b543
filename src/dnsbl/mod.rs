//! DNS blocklists and allowlists (DNSBL, DNSWL, RHSBL, RHSWL): the query
//! names, the lookups through rpol's one resolver (cached, single-flight,
//! with its deadlines), the reply filters and the reply templates, as
//! Postfix's smtpd_check.c does them (find_dnsxl_addr,
//! find_dnsxl_domain, rbl_pagein, rbl_reject_reply).
//!
//! One deliberate difference from Postfix: an answer in 127.255.255.0/24
//! is the list saying that it could not answer (Spamhaus' codes for a
//! query through a public resolver, an over-quota user or a typing error),
//! never a listing, in every rule; Postfix counts any A record of an
//! unfiltered list as a listing and then rejects all mail. Such an answer,
//! like a DNS failure, never turns into a reject.

pub mod filter;
pub mod health;
pub mod score;
pub mod template;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::dns::{Answer, Outcome as DnsOutcome, RecordKind, Resolver};
use crate::syntax::valid_hostname;
use crate::vocab::reply::{Reply, split_dsn};

pub use filter::Filter;
pub use template::{DEFAULT_RBL_REPLY, Name, Template};

/// Postfix's `maps_rbl_reject_code` default.
pub const DEFAULT_REJECT_CODE: u16 = 554;
/// Most bytes of the TXT records kept as the reason (Postfix's
/// RBL_TXT_LIMIT): several records are joined with ` / ` up to it.
pub const TXT_LIMIT: usize = 500;
/// Least time between two warnings about one list, in seconds: a list
/// that fails fails for every client, and the log should not flood.
const WARN_EVERY_SECS: u64 = 60;

/// One list as a rule names it: `domain` or `domain=filter`.
#[derive(Debug, Clone)]
pub struct List {
    /// The list's domain, without the filter.
    pub domain: String,
    /// The reply filter, if any: only A records it matches are listings.
    pub filter: Option<Filter>,
    /// What the rule wrote (`domain=filter`), the first key of the reply
    /// templates.
    pub written: String,
    /// The list's counters (shared by every rule naming the domain).
    pub counters: Arc<Counters>,
}

impl List {
    /// Parses a rule's argument.
    pub fn parse(arg: &str) -> Result<List, String> {
        let (domain, filter) = match arg.split_once('=') {
            Some((d, f)) => (d, Some(Filter::parse(f)?)),
            None => (arg, None),
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if !valid_hostname(domain) || !domain.contains('.') {
            return Err(format!("{domain:?} is not a DNS list domain"));
        }
        Ok(List {
            domain: domain.to_ascii_lowercase(),
            filter,
            written: arg.to_ascii_lowercase(),
            counters: counters(&domain.to_ascii_lowercase()),
        })
    }
}

/// What one list says about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Listed: the A records that matched the filter (all when none) and
    /// the TXT records as the reason (maybe empty).
    Listed {
        addrs: Vec<Ipv4Addr>,
        reason: String,
    },
    /// Not listed (NXDOMAIN, no A record, or none the filter matched).
    NotListed,
    /// The list answered an error code in 127.255.255.0/24.
    ErrorCode(Ipv4Addr),
    /// The DNS failed (timeout, SERVFAIL, ...).
    Failed(String),
}

impl Listing {
    /// One trace line for the answer to `query`.
    pub fn describe(&self, query: &str) -> String {
        match self {
            Listing::Listed { addrs, reason } => {
                let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                format!("{query}: listed ({}) {reason:?}", addrs.join(", "))
            }
            Listing::NotListed => format!("{query}: not listed"),
            Listing::ErrorCode(code) => {
                format!("{query}: error code {code} (not a listing; the list cannot answer)")
            }
            Listing::Failed(why) => format!("{query}: lookup failed ({why})"),
        }
    }
}

/// The query name for an address: its octets reversed (IPv4) or its 32
/// nibbles reversed (IPv6), then the list's domain. An IPv4-mapped IPv6
/// address is queried as IPv4, as Postfix sees the client.
pub fn address_query(ip: IpAddr, domain: &str) -> String {
    let mut name = crate::dns::ptr_name(ip);
    let cut = name
        .strip_suffix("in-addr.arpa")
        .or_else(|| name.strip_suffix("ip6.arpa"))
        .map_or(name.len(), str::len);
    name.truncate(cut);
    name.push_str(domain);
    name
}

/// The query name for a host name or an address's domain, or `None`
/// where Postfix queries nothing (find_dnsxl_domain): an address literal,
/// an empty or invalid name, a name whose last label is all digits, a
/// name not in ASCII.
pub fn domain_query(what: &str, domain: &str) -> Option<String> {
    let name = match what.rfind('@') {
        Some(at) => &what[at + 1..],
        None => what,
    };
    if name.starts_with('[') || name.is_empty() {
        return None;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !name.is_ascii() || !valid_hostname(name) {
        return None;
    }
    Some(format!("{name}.{domain}"))
}

/// Looks `query` up in `list`: an A query, and when it is a listing, a
/// TXT query for the reason. Counts the outcome.
/// A list switched off by its probes, or whose breaker is open, is not
/// asked: the lookup fails ([`health`]).
pub async fn look_up(dns: &Resolver, list: &List, query: &str) -> Listing {
    look_up_gated(dns, list, query, true).await
}

/// Sends `query`'s A query to `list` now, into the resolver's cache
/// ([`Resolver::prefetch`]: nothing when it is cached or in flight),
/// without waiting for it or counting it in the list's counters, unless
/// the list's health says not to ask: the rule that looks it up later
/// joins the query in flight (single-flight) or finds its answer. A
/// request's lookups are asked at once this way, one round trip in all
/// rather than one each.
pub fn prefetch(dns: &Resolver, list: &List, query: &str) {
    if list.counters.health.gate(&list.domain).is_some() {
        return;
    }
    dns.prefetch(query, RecordKind::A);
}

/// [`look_up`] without the TXT query: a listing's reason is empty (the
/// score of `[dnsbl] sites` needs the A records only, in one round trip).
pub async fn look_up_addresses(dns: &Resolver, list: &List, query: &str) -> Listing {
    look_up_gated(dns, list, query, false).await
}

/// Asks the list unless its health says not to, tells its health what it
/// answered, and counts the outcome.
async fn look_up_gated(dns: &Resolver, list: &List, query: &str, reason: bool) -> Listing {
    let health = &list.counters.health;
    let listing = match health.gate(&list.domain) {
        Some(why) => Listing::Failed(why),
        None => {
            let listing = look_up_uncounted(dns, list, query, reason).await;
            health.answered(&listing, &list.domain);
            listing
        }
    };
    list.counters.count(&listing, &list.domain, query);
    listing
}

async fn look_up_uncounted(dns: &Resolver, list: &List, query: &str, reason: bool) -> Listing {
    let a = dns.lookup(query, RecordKind::A).await;
    let addrs = match &a.outcome {
        DnsOutcome::Found(answer) => match &**answer {
            Answer::A(addrs) => addrs.clone(),
            _ => return Listing::NotListed,
        },
        DnsOutcome::NxDomain | DnsOutcome::NoData => return Listing::NotListed,
        DnsOutcome::TempFail(why) => return Listing::Failed(why.clone()),
    };
    if let Some(code) = addrs.iter().find(|a| is_error_code(**a)) {
        return Listing::ErrorCode(*code);
    }
    let matched: Vec<Ipv4Addr> = match &list.filter {
        Some(filter) => addrs.into_iter().filter(|a| filter.matches(*a)).collect(),
        None => addrs,
    };
    if matched.is_empty() {
        return Listing::NotListed;
    }
    let reason = if reason {
        txt_reason(dns, query).await
    } else {
        String::new()
    };
    Listing::Listed {
        addrs: matched,
        reason,
    }
}

/// The TXT records of `query` joined with ` / ` (Postfix's rbl_pagein), at
/// most [`TXT_LIMIT`] bytes; empty when there are none or the lookup fails.
async fn txt_reason(dns: &Resolver, query: &str) -> String {
    let txt = dns.lookup(query, RecordKind::Txt).await;
    let DnsOutcome::Found(answer) = &txt.outcome else {
        return String::new();
    };
    let Answer::Txt(records) = &**answer else {
        return String::new();
    };
    let mut buf: Vec<u8> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let left = TXT_LIMIT.saturating_sub(buf.len());
        if left == 0 {
            break;
        }
        buf.extend_from_slice(&record[..record.len().min(left)]);
        if i + 1 < records.len() && TXT_LIMIT.saturating_sub(buf.len()) > 3 {
            buf.extend_from_slice(b" / ");
        }
    }
    // A byte outside ASCII becomes a space, as in Postfix's reply.
    buf.iter()
        .map(|&b| if b.is_ascii() { char::from(b) } else { ' ' })
        .collect()
}

/// Answers in 127.255.255.0/24: a list's error codes, never listings.
pub fn is_error_code(addr: Ipv4Addr) -> bool {
    let [a, b, c, _] = addr.octets();
    (a, b, c) == (127, 255, 255)
}

/// `[postfix] maps_rbl_reject_code`, `default_rbl_reply` and `[dnsbl]
/// reply` (Postfix's rbl_reply_maps), compiled.
#[derive(Debug, Clone)]
pub struct Replies {
    pub code: u16,
    pub default: Template,
    /// Keyed by `domain=filter` as written, or by domain.
    pub by_list: HashMap<String, Template>,
}

impl Default for Replies {
    fn default() -> Self {
        Replies {
            code: DEFAULT_REJECT_CODE,
            default: Template::parse(DEFAULT_RBL_REPLY)
                .expect("Postfix's default_rbl_reply parses"),
            by_list: HashMap::new(),
        }
    }
}

/// What the reply of a listing says, besides the list.
pub struct Subject<'a> {
    /// `$rbl_what`: the address or name listed.
    pub what: &'a str,
    /// `$rbl_class`: Postfix's class of the restriction.
    pub class: &'a str,
    /// `$rbl_reason`.
    pub reason: &'a str,
    /// The request's own values, for `$client_address` and the like.
    pub request: &'a dyn Fn(Name) -> String,
}

impl Replies {
    /// The reply to a listing (Postfix's rbl_reject_reply): the template
    /// of `domain=filter`, else of the domain, else the default, expanded;
    /// a result that does not start with a 4xx or 5xx code is Postfix's
    /// `450 4.7.1 Service unavailable`.
    pub fn reply(&self, list: &List, subject: &Subject<'_>) -> Reply {
        let template = self
            .by_list
            .get(&list.written)
            .or_else(|| self.by_list.get(&list.domain))
            .unwrap_or(&self.default);
        let code = self.code.to_string();
        let text = template.expand(&|name| match name {
            Name::Code => code.clone(),
            Name::Domain => list.domain.clone(),
            Name::Reason => subject.reason.to_string(),
            Name::What => subject.what.to_string(),
            Name::Class => subject.class.to_string(),
            other => (subject.request)(other),
        });
        reply_from_text(&text)
    }
}

/// `NNN [dsn] text` as Postfix reads an expanded template.
pub fn reply_from_text(text: &str) -> Reply {
    let b = text.as_bytes();
    let valid = b.len() >= 4
        && matches!(b[0], b'4' | b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && b[3] == b' ';
    if !valid {
        tracing::warn!("rbl response code configuration error: {text}");
        return Reply::bare(450, "4.7.1", "Service unavailable");
    }
    let code: u16 = text[..3].parse().unwrap_or(450);
    let (dsn, rest) = split_dsn(&text[4..]);
    let rest = if rest.is_empty() {
        "Service unavailable"
    } else {
        rest
    };
    Reply::bare(code, dsn.unwrap_or("4.7.1"), rest)
}

/// Counts of one list, by domain, for the metrics; they live as long as
/// the process (a reload keeps them).
#[derive(Debug, Default)]
pub struct Counters {
    /// Lookups that found a listing.
    pub listed: AtomicU64,
    /// Lookups that found none.
    pub not_listed: AtomicU64,
    /// Answers in 127.255.255.0/24.
    pub error_codes: AtomicU64,
    /// DNS failures (timeout, SERVFAIL, ...).
    pub failures: AtomicU64,
    /// When the last warning was written, in seconds since [`epoch`] + 1
    /// (0: never).
    warned: AtomicU64,
    /// The probes' verdict, the circuit breaker, the egress watch.
    pub health: health::Health,
}

impl Counters {
    fn count(&self, listing: &Listing, domain: &str, query: &str) {
        match listing {
            Listing::Listed { .. } => {
                self.listed.fetch_add(1, Ordering::Relaxed);
            }
            Listing::NotListed => {
                self.not_listed.fetch_add(1, Ordering::Relaxed);
            }
            Listing::ErrorCode(code) => {
                let n = self.error_codes.fetch_add(1, Ordering::Relaxed) + 1;
                if self.warn_due() {
                    tracing::warn!(
                        "{query}: DNS list {domain} answered the error code {code}, which is not a listing ({n} error answer(s) so far)"
                    );
                }
            }
            Listing::Failed(why) => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if self.warn_due() {
                    tracing::warn!(
                        "{query}: RBL lookup error: {why} ({n} failure(s) of {domain} so far)"
                    );
                }
            }
        }
    }

    /// Whether a warning may be written now (one per [`WARN_EVERY_SECS`]).
    fn warn_due(&self) -> bool {
        let now = epoch().elapsed().as_secs() + 1;
        let last = self.warned.load(Ordering::Relaxed);
        if last != 0 && now < last + WARN_EVERY_SECS {
            return false;
        }
        self.warned
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The counters of every list named since the process started.
fn registry() -> &'static Mutex<HashMap<String, Arc<Counters>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Counters>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The counters of `domain`, made on first use (at config load).
pub fn counters(domain: &str) -> Arc<Counters> {
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    map.entry(domain.to_string()).or_default().clone()
}

/// Every list's counters, by domain, in domain order.
pub fn all_counters() -> Vec<(String, Arc<Counters>)> {
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<_> = map.iter().map(|(d, c)| (d.clone(), c.clone())).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        assert_eq!(
            address_query("203.0.113.5".parse().unwrap(), "zen.example"),
            "5.113.0.203.zen.example"
        );
        assert_eq!(
            address_query("::ffff:203.0.113.5".parse().unwrap(), "zen.example"),
            "5.113.0.203.zen.example"
        );
        assert_eq!(
            address_query("2001:db8::1".parse().unwrap(), "bl.example"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"
        );
        assert_eq!(
            domain_query("user@Spam.example", "dbl.example").as_deref(),
            Some("Spam.example.dbl.example")
        );
        assert_eq!(
            domain_query("mail.spam.example", "dbl.example").as_deref(),
            Some("mail.spam.example.dbl.example")
        );
        for none in [
            "user@[203.0.113.5]",
            "",
            "user@",
            "203.0.113.5",
            "host.123",
            "bad..name",
            "b\u{fc}cher.example",
            "trailing.example.",
        ] {
            assert_eq!(domain_query(none, "dbl.example"), None, "{none:?}");
        }
    }

    #[test]
    fn lists_and_error_codes() {
        let l = List::parse("zen.example=127.0.0.[2..11]").unwrap();
        assert_eq!(l.domain, "zen.example");
        assert_eq!(l.written, "zen.example=127.0.0.[2..11]");
        assert!(
            l.filter
                .as_ref()
                .unwrap()
                .matches(Ipv4Addr::new(127, 0, 0, 4))
        );
        assert!(List::parse("zen.example").unwrap().filter.is_none());
        assert!(List::parse("zen.example=127.0.0.[x]").is_err());
        assert!(List::parse("localhost").is_err());
        assert!(List::parse("").is_err());
        assert!(is_error_code(Ipv4Addr::new(127, 255, 255, 254)));
        assert!(!is_error_code(Ipv4Addr::new(127, 0, 0, 2)));
    }

    #[test]
    fn replies_as_postfix_reads_them() {
        assert_eq!(
            reply_from_text("554 Service unavailable; x"),
            Reply::bare(554, "5.7.1", "Service unavailable; x")
        );
        assert_eq!(
            reply_from_text("450 4.7.25 listed"),
            Reply::bare(450, "4.7.25", "listed")
        );
        assert_eq!(
            reply_from_text("550 "),
            Reply::bare(550, "5.7.1", "Service unavailable")
        );
        assert_eq!(
            reply_from_text("250 fine"),
            Reply::bare(450, "4.7.1", "Service unavailable")
        );
    }
}
