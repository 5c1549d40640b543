//! The wire side of the resolver: one query to the configured name
//! servers through hickory's `NameServerPool` (UDP, TCP on truncation,
//! EDNS, retries), and the translation of its answer or error into an
//! [`Outcome`] with the TTL it may be cached for.
//!
//! hickory's `Resolver` is deliberately not used: it always sits on top of
//! its own response cache, which would hide queries from our counters and
//! apply its own TTL rules. The pool is the layer just below that cache.

use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::FirstAnswer as _;
use hickory_resolver::net::{
    DnsError as HickoryDnsError, DnsHandle as _, NetError, RetryDnsHandle,
};
use hickory_resolver::proto::op::{DnsRequestOptions, DnsResponse, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

use super::cache::{DEFAULT_NEGATIVE_TTL, Ttl};
use super::{Answer, DnsConfig, DnsError, Mx, Outcome, RecordKind};

/// Most CNAMEs followed for one lookup, across the answer and re-queries;
/// a longer chain is treated as broken (a loop, most likely).
const MAX_CNAME_CHAIN: usize = 8;
/// Slack on top of `attempts * timeout` before our own overall deadline
/// cuts a lookup short, should the pool ever overrun its per-try deadline.
const DEADLINE_SLACK: Duration = Duration::from_millis(500);
/// Longest error text kept in a [`Outcome::TempFail`] reason.
const MAX_REASON_LEN: usize = 80;

type Client = RetryDnsHandle<NameServerPool<TokioRuntimeProvider>>;

/// Connection to the name servers; cheap to share.
pub(crate) struct Upstream {
    client: Client,
    options: DnsRequestOptions,
    deadline: Duration,
}

impl Upstream {
    pub(crate) fn new(cfg: &DnsConfig) -> Result<Upstream, DnsError> {
        let servers = if cfg.nameservers.is_empty() {
            system_nameservers()?
        } else {
            cfg.nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect()
        };

        let mut opts = ResolverOpts::default();
        opts.timeout = cfg.timeout;
        // hickory counts retries, we count tries (resolv.conf semantics).
        opts.attempts = cfg.attempts - 1;
        // Unused by the pool, but make sure nothing below caches or reads
        // /etc/hosts should that ever change.
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        let retries = opts.attempts;

        let mut options = DnsRequestOptions::default();
        options.recursion_desired = opts.recursion_desired;
        options.use_edns = opts.edns0;
        options.edns_payload_len = opts.edns_payload_len;
        options.case_randomization = opts.case_randomization;

        let tls = TlsConfig::new().map_err(|e| DnsError::Client(e.to_string()))?;
        let cx = Arc::new(PoolContext::new(opts, tls));
        let pool = NameServerPool::from_config(servers, cx, TokioRuntimeProvider::default());
        let tries = u32::try_from(cfg.attempts).unwrap_or(u32::MAX);
        Ok(Upstream {
            client: RetryDnsHandle::new(pool, retries),
            options,
            deadline: cfg
                .timeout
                .saturating_mul(tries)
                .saturating_add(DEADLINE_SLACK),
        })
    }

    /// The longest one query takes: `attempts` x `timeout`, plus the slack.
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Ask for `name` (normalised, no trailing dot) of type `kind`. The TTL
    /// is `None` for outcomes that must not be cached.
    pub(crate) async fn query(&self, name: &str, kind: RecordKind) -> (Outcome, Option<Ttl>) {
        // A name that cannot be encoded cannot exist in the DNS. Not cached:
        // it costs nothing to find out again.
        // Labels may hold any bytes (RFC 2181 11); SPF domain-specs use
        // characters a host name cannot, so fall back to raw labels.
        let parsed = Name::from_str_relaxed(name).or_else(|_| {
            Name::from_labels(name.trim_end_matches('.').split('.').map(str::as_bytes))
        });
        let qname = match parsed {
            Ok(mut n) if !name.is_empty() => {
                n.set_fqdn(true);
                n
            }
            _ => return (Outcome::NxDomain, None),
        };
        match tokio::time::timeout(self.deadline, self.resolve(qname, kind)).await {
            Ok(r) => r,
            Err(_) => (Outcome::TempFail("timeout".to_owned()), None),
        }
    }

    async fn resolve(&self, mut qname: Name, kind: RecordKind) -> (Outcome, Option<Ttl>) {
        let rtype = record_type(kind);
        // TTLs of CNAMEs followed in earlier responses bound the result.
        let mut chain_ttl = u32::MAX;
        let mut hops = 0;
        loop {
            let response = self
                .client
                .lookup(Query::query(qname.clone(), rtype), self.options)
                .first_answer()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => return from_error(e, chain_ttl),
            };
            match analyse(&response, &qname, kind, rtype) {
                Analysed::Found(answer, ttl) => {
                    let ttl = ttl.min(chain_ttl);
                    return (
                        Outcome::Found(Arc::new(answer)),
                        Some(Ttl::Positive(secs(ttl))),
                    );
                }
                Analysed::Negative(outcome, ttl) => {
                    let ttl = ttl.map_or(DEFAULT_NEGATIVE_TTL, |t| secs(t.min(chain_ttl)));
                    return (outcome, Some(Ttl::Negative(ttl)));
                }
                Analysed::Cname(target, ttl, n) => {
                    hops += n;
                    if hops > MAX_CNAME_CHAIN {
                        return (Outcome::TempFail("CNAME chain too long".to_owned()), None);
                    }
                    chain_ttl = chain_ttl.min(ttl);
                    qname = target;
                }
            }
        }
    }
}

/// The servers named by /etc/resolv.conf. Only called when the
/// configuration names none, never in tests.
fn system_nameservers() -> Result<Vec<NameServerConfig>, DnsError> {
    let (conf, _opts) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| DnsError::SystemConfig(e.to_string()))?;
    let (_domain, _search, servers) = conf.into_parts();
    if servers.is_empty() {
        return Err(DnsError::NoNameservers);
    }
    Ok(servers)
}

fn record_type(kind: RecordKind) -> RecordType {
    match kind {
        RecordKind::A => RecordType::A,
        RecordKind::Aaaa => RecordType::AAAA,
        RecordKind::Mx => RecordType::MX,
        RecordKind::Txt => RecordType::TXT,
        RecordKind::Ptr => RecordType::PTR,
    }
}

fn secs(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl))
}

/// What one response says about the queried name.
#[derive(Debug)]
enum Analysed {
    /// Records, with the smallest TTL of them and of the CNAMEs leading there.
    Found(Answer, u32),
    /// NXDOMAIN or NODATA, with the negative TTL if the response had an SOA.
    Negative(Outcome, Option<u32>),
    /// The answer ends in a CNAME whose target was not resolved here: ask
    /// again for the target (TTL of the CNAMEs, number of CNAMEs).
    Cname(Name, u32, usize),
}

/// Follow `qname` through the CNAMEs of the answer section to records of
/// the queried type. Records for other owners (an unrelated or spoofed
/// extra) are ignored.
fn analyse(response: &DnsResponse, qname: &Name, kind: RecordKind, rtype: RecordType) -> Analysed {
    let answers = &response.answers;
    let mut current = qname;
    let mut ttl = u32::MAX;
    let mut hops = 0;
    loop {
        let mut records = answers
            .iter()
            .filter(|r| r.record_type() == rtype && r.name == *current)
            .peekable();
        if records.peek().is_some() {
            let records: Vec<&Record> = records.collect();
            let min = records.iter().map(|r| r.ttl).min().unwrap_or(0);
            return Analysed::Found(build_answer(kind, &records), ttl.min(min));
        }
        let cname = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == *current => Some((&target.0, r.ttl)),
            _ => None,
        });
        match cname {
            Some((target, cname_ttl)) if hops < MAX_CNAME_CHAIN => {
                hops += 1;
                ttl = ttl.min(cname_ttl);
                current = target;
            }
            Some(_) => return Analysed::Cname(current.clone(), ttl, MAX_CNAME_CHAIN + 1),
            None => break,
        }
    }

    let negative_ttl = response.negative_ttl().map(|t| t.min(ttl));
    let code = response.metadata.response_code;
    if code == ResponseCode::NXDomain {
        // With CNAMEs followed, the code speaks of the end of the chain.
        return Analysed::Negative(Outcome::NxDomain, negative_ttl);
    }
    if hops > 0 && negative_ttl.is_none() {
        // The server handed us a CNAME without saying anything about its
        // target (no SOA): the target lives elsewhere, ask for it.
        return Analysed::Cname(current.clone(), ttl, hops);
    }
    Analysed::Negative(Outcome::NoData, negative_ttl)
}

fn build_answer(kind: RecordKind, records: &[&Record]) -> Answer {
    let data = records.iter().map(|r| &r.data);
    match kind {
        RecordKind::A => Answer::A(
            data.filter_map(|d| match d {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
        ),
        RecordKind::Aaaa => Answer::Aaaa(
            data.filter_map(|d| match d {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect(),
        ),
        RecordKind::Mx => Answer::Mx(
            data.filter_map(|d| match d {
                RData::MX(mx) => Some(Mx {
                    preference: mx.preference,
                    exchange: name_string(&mx.exchange),
                }),
                _ => None,
            })
            .collect(),
        ),
        RecordKind::Txt => Answer::Txt(
            data.filter_map(|d| match d {
                RData::TXT(txt) => Some(txt.txt_data.concat()),
                _ => None,
            })
            .collect(),
        ),
        RecordKind::Ptr => Answer::Ptr(
            data.filter_map(|d| match d {
                RData::PTR(ptr) => Some(name_string(&ptr.0)),
                _ => None,
            })
            .collect(),
        ),
    }
}

/// A name as rpol shows it: lowercase ASCII (IDNs as `xn--`), no trailing
/// dot, "" for the root.
/// The raw label bytes are joined, not hickory's escaped text form, so a
/// target such as `foo:bar.example` is queried as written.
fn name_string(name: &Name) -> String {
    name.to_lowercase()
        .iter()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(".")
}

/// Errors from the pool: a definite negative answer, or a temporary
/// failure with a short reason.
fn from_error(err: NetError, chain_ttl: u32) -> (Outcome, Option<Ttl>) {
    let reason = match err {
        NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) => {
            let outcome = match nr.response_code {
                ResponseCode::NXDomain => Outcome::NxDomain,
                ResponseCode::NoError => Outcome::NoData,
                code => return (Outcome::TempFail(rcode_name(code)), None),
            };
            let ttl = nr
                .negative_ttl
                .map_or(DEFAULT_NEGATIVE_TTL, |t| secs(t.min(chain_ttl)));
            return (outcome, Some(Ttl::Negative(ttl)));
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => rcode_name(code),
        NetError::Timeout => "timeout".to_owned(),
        NetError::NoConnections => "no connection to the name servers".to_owned(),
        NetError::Io(e) => format!("network error: {}", e.kind()),
        NetError::Truncated => "truncated answer".to_owned(),
        other => {
            let mut s = other.to_string();
            if s.len() > MAX_REASON_LEN {
                let mut end = MAX_REASON_LEN;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
            s
        }
    };
    (Outcome::TempFail(reason), None)
}

fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        other => format!("rcode {}", u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lowercase_without_dot() {
        assert_eq!(
            name_string(&Name::from_ascii("MX.Example.COM.").unwrap()),
            "mx.example.com"
        );
        assert_eq!(name_string(&Name::root()), "");
    }

    #[test]
    fn rcode_names() {
        assert_eq!(rcode_name(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(rcode_name(ResponseCode::Refused), "REFUSED");
    }
}
