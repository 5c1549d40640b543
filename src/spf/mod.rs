//! SPF (RFC 7208) through viaspf and rpol's cached resolver: evaluation of
//! the HELO and MAIL FROM identities, the per-result actions, the
//! Received-SPF / Authentication-Results header, and the two caches that
//! make one evaluation serve a whole transaction.

pub mod header;
pub mod lookup;

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use lru::LruCache;
use viaspf::trace::Tracepoint;
use viaspf::{Config as ViaspfConfig, Sender, SpfResult, SpfResultCause};

use crate::dns::Resolver;
use crate::policy::outcome::Outcome;
use lookup::SpfLookup;

/// Settings and state of SPF checking, one per policy.
#[derive(Debug)]
pub struct Spf {
    pub settings: SpfSettings,
    pub state: SpfState,
}

impl Spf {
    pub fn new(settings: SpfSettings) -> Spf {
        let state = SpfState::new(&settings);
        Spf { settings, state }
    }
}

impl Default for Spf {
    fn default() -> Self {
        Spf::new(SpfSettings::default())
    }
}

/// Which identity an evaluation concerns (RFC 7208 2.3, 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    Helo,
    MailFrom,
}

impl Identity {
    pub fn name(self) -> &'static str {
        match self {
            Identity::Helo => "helo",
            Identity::MailFrom => "mailfrom",
        }
    }
}

/// What to do with one SPF result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfAction {
    /// Accept (the header is prepended).
    Accept,
    /// `550 5.7.23` for fail, `550 5.7.24` otherwise.
    Reject,
    /// `451 4.7.24` at once.
    Defer,
    /// `DEFER_IF_PERMIT 4.7.24`: a later reject wins.
    DeferIfPermit,
}

impl SpfAction {
    pub fn parse(text: &str) -> Option<SpfAction> {
        match text {
            "accept" => Some(SpfAction::Accept),
            "reject" => Some(SpfAction::Reject),
            "defer" => Some(SpfAction::Defer),
            "defer_if_permit" => Some(SpfAction::DeferIfPermit),
            _ => None,
        }
    }
}

/// Actions per SPF result, for one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultActions {
    pub pass: SpfAction,
    pub fail: SpfAction,
    pub softfail: SpfAction,
    pub neutral: SpfAction,
    pub none: SpfAction,
    pub temperror: SpfAction,
    pub permerror: SpfAction,
}

impl Default for ResultActions {
    /// RFC 7208 section 8 with a careful admin's choices: fail rejects;
    /// softfail and neutral (like none) accept, since 8.5 says softfail alone
    /// should not reject; temperror defers (8.6); permerror accepts, as
    /// policyd-spf does by default: a broken record is the sender's mistake,
    /// not evidence of forgery (8.7 leaves it to local policy).
    fn default() -> Self {
        ResultActions {
            pass: SpfAction::Accept,
            fail: SpfAction::Reject,
            softfail: SpfAction::Accept,
            neutral: SpfAction::Accept,
            none: SpfAction::Accept,
            temperror: SpfAction::Defer,
            permerror: SpfAction::Accept,
        }
    }
}

impl ResultActions {
    pub fn for_result(&self, result: &SpfResult) -> SpfAction {
        match result {
            SpfResult::Pass => self.pass,
            SpfResult::Fail(_) => self.fail,
            SpfResult::Softfail => self.softfail,
            SpfResult::Neutral => self.neutral,
            SpfResult::None => self.none,
            SpfResult::Temperror => self.temperror,
            SpfResult::Permerror => self.permerror,
        }
    }
}

/// Which header accepted mail carries. A policy response carries one
/// action, so one header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    ReceivedSpf,
    AuthenticationResults,
    None,
}

/// `[spf]`, compiled.
#[derive(Debug, Clone)]
pub struct SpfSettings {
    /// Also evaluate the HELO identity (RFC 7208 2.3), as policyd-spf does.
    pub check_helo: bool,
    /// `receiver=` of Received-SPF and the `%{r}` macro.
    pub receiver: String,
    pub header: HeaderKind,
    /// Authentication-Results authserv-id.
    pub authserv_id: String,
    pub skip_mynetworks: bool,
    pub skip_authenticated: bool,
    /// Clients and domains SPF is not checked for.
    pub whitelist: Whitelist,
    pub mail_from: ResultActions,
    pub helo: ResultActions,
    /// Overall time for one evaluation (RFC 7208 4.6.4: at least 20 s).
    pub timeout: Duration,
    /// How long an evaluation is reused for the same client, sender, HELO.
    pub cache_ttl: Duration,
    pub cache_size: usize,
}

impl Default for SpfSettings {
    fn default() -> Self {
        let host = hostname();
        SpfSettings {
            check_helo: true,
            receiver: host.clone(),
            header: HeaderKind::ReceivedSpf,
            authserv_id: host,
            skip_mynetworks: true,
            skip_authenticated: true,
            whitelist: Whitelist::default(),
            mail_from: ResultActions::default(),
            helo: ResultActions::default(),
            timeout: Duration::from_secs(20),
            cache_ttl: Duration::from_secs(600),
            cache_size: 10_000,
        }
    }
}

/// The machine's host name, the default receiver.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// SPF whitelist: addresses/networks and domains (a domain entry covers
/// its subdomains; it matches the HELO name or the sender domain).
#[derive(Debug, Clone, Default)]
pub struct Whitelist {
    pub networks: Vec<IpNet>,
    pub domains: Vec<String>,
}

impl Whitelist {
    /// Reads `entry` lines: an IP, a CIDR, or a domain; `#` comments.
    pub fn parse(text: &str) -> Result<Whitelist, (usize, String)> {
        let mut out = Whitelist::default();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            if let Some(net) = crate::tables::access::parse_network(entry) {
                out.networks.push(net);
            } else if crate::rules::syntax::valid_hostname(entry.trim_end_matches('.')) {
                out.domains
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err((
                    i + 1,
                    format!("{entry:?} is not an address, network or domain"),
                ));
            }
        }
        Ok(out)
    }

    /// The entry that covers this client, HELO or sender domain, if any.
    pub fn matches(&self, ip: IpAddr, helo: &str, sender_domain: &str) -> Option<String> {
        if let Some(net) = self.networks.iter().find(|n| n.contains(&ip)) {
            return Some(format!("client {ip} in {net}"));
        }
        for (what, name) in [("HELO", helo), ("sender domain", sender_domain)] {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if let Some(d) = self.domains.iter().find(|d| {
                name == **d
                    || (name.ends_with(d.as_str()) && name[..name.len() - d.len()].ends_with('.'))
            }) {
                return Some(format!("{what} {name} under {d}"));
            }
        }
        None
    }
}

/// One evaluated identity.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub identity: Identity,
    /// The identity checked: `user@domain` or `postmaster@helo`.
    pub sender: String,
    pub domain: String,
    pub result: SpfResult,
    /// The mechanism that matched (authorisation results).
    pub mechanism: Option<String>,
    /// What went wrong (error results).
    pub problem: Option<String>,
    /// True when a record used the local part (`%{l}`, `%{s}` ...), so the
    /// result may differ for another user of the same domain.
    pub uses_local_part: bool,
    /// The DNS lookups made, for traces (empty unless asked for).
    pub lookups: Vec<String>,
}

impl Evaluation {
    pub fn result_name(&self) -> &'static str {
        result_name(&self.result)
    }
}

pub fn result_name(result: &SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail(_) => "fail",
        SpfResult::Softfail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::None => "none",
        SpfResult::Temperror => "temperror",
        SpfResult::Permerror => "permerror",
    }
}

/// Evaluates one identity. `sender` is `user@domain` for MAIL FROM, or the
/// HELO name for the HELO identity (checked as `postmaster@helo`).
pub async fn evaluate(
    resolver: &Resolver,
    settings: &SpfSettings,
    ip: IpAddr,
    identity: Identity,
    sender: &str,
    helo: &str,
    record_lookups: bool,
) -> Evaluation {
    let parsed = match identity {
        // RFC 7208 4.3: a sender without local part is postmaster@domain
        // (viaspf refuses the empty local part of "@domain").
        Identity::MailFrom => match sender.strip_prefix('@') {
            Some(domain) => Sender::from_domain(domain),
            None => Sender::from_address(sender),
        },
        Identity::Helo => Sender::from_domain(sender),
    };
    let Ok(parsed) = parsed else {
        // RFC 7208 4.3: an identity that is not a valid domain gives none.
        return Evaluation {
            identity,
            sender: sender.to_string(),
            domain: sender.rsplit('@').next().unwrap_or("").to_string(),
            result: SpfResult::None,
            mechanism: None,
            problem: Some("not a valid domain".into()),
            uses_local_part: false,
            lookups: Vec::new(),
        };
    };
    let helo_domain = viaspf::DomainName::new(helo.trim_end_matches('.')).ok();
    let config = ViaspfConfig::builder()
        .timeout(settings.timeout)
        .hostname(settings.receiver.clone())
        .capture_trace(true)
        .build();
    // viaspf runs in its own task so that a panic inside it (0.7.0-alpha.2
    // overflows on a /0 prefix in debug builds) costs one temperror, not the
    // connection.
    let task = {
        let resolver = resolver.clone();
        let sender = parsed.clone();
        tokio::spawn(async move {
            let lookup = SpfLookup::new(&resolver, record_lookups);
            let result =
                viaspf::evaluate_sender(&lookup, &config, ip, &sender, helo_domain.as_ref()).await;
            (result, lookup.take_log())
        })
    };
    let (result, lookups) = match task.await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!("SPF evaluation of {parsed} for {ip} failed: {e}");
            return Evaluation {
                identity,
                sender: parsed.to_string(),
                domain: parsed.domain().to_string(),
                result: SpfResult::Temperror,
                mechanism: None,
                problem: Some("internal error".into()),
                uses_local_part: false,
                lookups: Vec::new(),
            };
        }
    };
    let (mechanism, problem) = match &result.cause {
        Some(SpfResultCause::Match(m)) => (Some(m.to_string()), None),
        Some(SpfResultCause::Error(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let uses_local_part = result.trace.as_ref().is_some_and(|t| {
        t.events.iter().any(|e| match &e.tracepoint {
            Tracepoint::EvaluateSpfRecord(record) => {
                let text = record.to_string().to_ascii_lowercase();
                text.contains("%{l") || text.contains("%{s")
            }
            _ => false,
        })
    });
    Evaluation {
        identity,
        sender: parsed.to_string(),
        domain: parsed.domain().to_string(),
        result: result.spf_result,
        mechanism,
        problem,
        uses_local_part,
        lookups,
    }
}

/// Key of the result cache: client, identity, sender (domain or whole
/// address), HELO.
type ResultKey = (IpAddr, Identity, String, String);

/// Results and transactions remembered between requests.
pub struct SpfState {
    results: Mutex<LruCache<ResultKey, (Instant, Evaluation)>>,
    /// `instance` -> the outcome of its first request (DUNNO once the
    /// header went out with an accept).
    transactions: Mutex<LruCache<String, Outcome>>,
    ttl: Duration,
}

impl std::fmt::Debug for SpfState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpfState")
    }
}

/// Transactions remembered for header de-duplication.
const TRANSACTIONS: usize = 10_000;

impl SpfState {
    pub fn new(settings: &SpfSettings) -> SpfState {
        let size = NonZeroUsize::new(settings.cache_size.max(1)).unwrap_or(NonZeroUsize::MIN);
        SpfState {
            results: Mutex::new(LruCache::new(size)),
            transactions: Mutex::new(LruCache::new(
                NonZeroUsize::new(TRANSACTIONS).unwrap_or(NonZeroUsize::MIN),
            )),
            ttl: settings.cache_ttl,
        }
    }

    /// A cached evaluation of `sender` (its domain, or the whole address
    /// for records that use the local part).
    pub fn get(
        &self,
        ip: IpAddr,
        identity: Identity,
        sender: &str,
        helo: &str,
    ) -> Option<Evaluation> {
        let mut cache = self.results.lock().unwrap_or_else(|e| e.into_inner());
        let helo = helo.to_ascii_lowercase();
        let domain_key = (ip, identity, domain_part(sender), helo.clone());
        let now = Instant::now();
        let fresh = |entry: &(Instant, Evaluation)| now.duration_since(entry.0) < self.ttl;
        match cache.get(&domain_key) {
            Some(entry) if fresh(entry) && !entry.1.uses_local_part => {
                return Some(entry.1.clone());
            }
            Some(entry) if fresh(entry) => {}
            Some(_) => {
                cache.pop(&domain_key);
                return None;
            }
            None => return None,
        }
        let full_key = (ip, identity, sender.to_ascii_lowercase(), helo);
        match cache.get(&full_key) {
            Some(entry) if fresh(entry) => Some(entry.1.clone()),
            _ => None,
        }
    }

    pub fn put(&self, ip: IpAddr, helo: &str, evaluation: &Evaluation) {
        let mut cache = self.results.lock().unwrap_or_else(|e| e.into_inner());
        let helo = helo.to_ascii_lowercase();
        let mut stored = evaluation.clone();
        stored.lookups.clear();
        let now = Instant::now();
        let domain_key = (
            ip,
            evaluation.identity,
            domain_part(&evaluation.sender),
            helo.clone(),
        );
        if evaluation.uses_local_part {
            cache.put(domain_key, (now, stored.clone()));
            let full_key = (
                ip,
                evaluation.identity,
                evaluation.sender.to_ascii_lowercase(),
                helo,
            );
            cache.put(full_key, (now, stored));
        } else {
            cache.put(domain_key, (now, stored));
        }
    }

    /// The outcome already given to this transaction (`instance`), if any.
    pub fn transaction(&self, instance: &str) -> Option<Outcome> {
        if instance.is_empty() {
            return None;
        }
        let mut seen = self.transactions.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(instance).cloned()
    }

    /// Remembers what later requests of this transaction get.
    pub fn remember(&self, instance: &str, outcome: Outcome) {
        if instance.is_empty() {
            return;
        }
        let mut seen = self.transactions.lock().unwrap_or_else(|e| e.into_inner());
        seen.put(instance.to_string(), outcome);
    }
}

fn domain_part(sender: &str) -> String {
    sender
        .rsplit('@')
        .next()
        .unwrap_or(sender)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist_entries() {
        let w = Whitelist::parse("# partners\n203.0.113.0/24\n198.51.100.7\npartner.example\n")
            .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(w.matches(ip("203.0.113.9"), "", "").is_some());
        assert!(w.matches(ip("198.51.100.7"), "", "").is_some());
        assert!(w.matches(ip("198.51.100.8"), "", "").is_none());
        assert!(
            w.matches(ip("198.51.100.8"), "mx.partner.example", "")
                .is_some()
        );
        assert!(
            w.matches(ip("198.51.100.8"), "", "partner.example")
                .is_some()
        );
        assert!(
            w.matches(ip("198.51.100.8"), "", "xpartner.example")
                .is_none()
        );
        assert_eq!(Whitelist::parse("bad entry!\n").unwrap_err().0, 1);
    }

    #[test]
    fn transactions_are_remembered() {
        let state = SpfState::new(&SpfSettings::default());
        assert_eq!(state.transaction("a.1"), None);
        state.remember("a.1", Outcome::Dunno);
        assert_eq!(state.transaction("a.1"), Some(Outcome::Dunno));
        assert_eq!(state.transaction("a.2"), None);
        state.remember("", Outcome::Dunno);
        assert_eq!(state.transaction(""), None);
    }
}
