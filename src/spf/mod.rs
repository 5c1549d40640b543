//! SPF (RFC 7208) through viaspf and rpol's cached resolver: evaluation of
//! the HELO and MAIL FROM identities, the per-result actions, the
//! whitelist, the Received-SPF / Authentication-Results header, and
//! whether a domain publishes a DMARC policy (`dmarc`, for
//! `reject_unless_dmarc`). The result cache is runtime state
//! (crate::state::spf_cache).

pub mod dmarc;
pub mod header;
pub mod lookup;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use viaspf::{Config as ViaspfConfig, Sender, SpfResult, SpfResultCause};

use crate::dns::Resolver;
use lookup::SpfLookup;

/// Entries of the SPF result cache when `[spf] cache_size` is not given
/// (the cache is bounded in bytes as well: crate::state::spf_cache).
pub const SPF_CACHE_ENTRIES: usize = 10_000;

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
    /// Reject as [`SpfAction::Reject`] when neither the domain nor its
    /// organisational domain publishes a DMARC policy; accept otherwise,
    /// and let the DMARC verifier after DATA decide. Only for
    /// `[spf.mail_from]` fail and softfail.
    RejectUnlessDmarc,
}

impl SpfAction {
    pub fn parse(text: &str) -> Option<SpfAction> {
        match text {
            "accept" => Some(SpfAction::Accept),
            "reject" => Some(SpfAction::Reject),
            "defer" => Some(SpfAction::Defer),
            "defer_if_permit" => Some(SpfAction::DeferIfPermit),
            "reject_unless_dmarc" => Some(SpfAction::RejectUnlessDmarc),
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
    /// should not reject; temperror defers (8.6) as defer_if_permit, so a
    /// later reject wins and an earlier, more precise temporary reply (HELO
    /// or sender domain not found) is the one the client sees, as Postfix
    /// with policyd-spf answers; permerror accepts, as
    /// policyd-spf does by default: a broken record is the sender's mistake,
    /// not evidence of forgery (8.7 leaves it to local policy).
    fn default() -> Self {
        ResultActions {
            pass: SpfAction::Accept,
            fail: SpfAction::Reject,
            softfail: SpfAction::Accept,
            neutral: SpfAction::Accept,
            none: SpfAction::Accept,
            temperror: SpfAction::DeferIfPermit,
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
    /// `[spf.mail_from] reject_not_pass_domains` (policyd-spf's
    /// Reject_Not_Pass_Domains): MAIL FROM domains whose mail is rejected
    /// unless SPF passes. Lowercase A-labels, no trailing dot, sorted.
    pub reject_not_pass_domains: Vec<String>,
    pub helo: ResultActions,
    /// The Public Suffix List for DMARC's organisational domain
    /// (`reject_unless_dmarc`).
    pub public_suffix_list: dmarc::SuffixList,
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
            reject_not_pass_domains: Vec::new(),
            helo: ResultActions::default(),
            public_suffix_list: dmarc::SuffixList::default(),
            timeout: Duration::from_secs(20),
            cache_ttl: Duration::from_secs(600),
            cache_size: SPF_CACHE_ENTRIES,
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

/// `[spf] whitelist`: clients check_spf does not judge. Every entry
/// matches only a fact rpol verified itself, never a name the client
/// claims (as policyd-spf's whitelists):
/// - an address or network: the client address;
/// - `helo:NAME`: the HELO name is NAME and NAME's A/AAAA records hold the
///   client address;
/// - `ptr:DOMAIN`: a PTR name of the client address is DOMAIN or under it,
///   and forward-confirms (its A/AAAA records hold the address);
/// - `DOMAIN`: the client address passes DOMAIN's own SPF record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Whitelist {
    pub networks: Vec<IpNet>,
    pub helo_names: Vec<String>,
    pub ptr_domains: Vec<String>,
    pub spf_domains: Vec<String>,
}

impl Whitelist {
    /// Reads one entry per line; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Whitelist, (usize, String)> {
        let mut out = Whitelist::default();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let domain = |name: &str| {
                let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
                crate::syntax::valid_fqdn(&name).then_some(name)
            };
            let bad = |what: &str| Err((i + 1, format!("{entry:?} is not {what}")));
            let lower = entry.to_ascii_lowercase();
            if let Some(name) = lower.strip_prefix("helo:") {
                match domain(name) {
                    Some(name) => out.helo_names.push(name),
                    None => return bad("helo: followed by a fully-qualified host name"),
                }
            } else if let Some(name) = lower.strip_prefix("ptr:") {
                match domain(name) {
                    Some(name) => out.ptr_domains.push(name),
                    None => return bad("ptr: followed by a domain"),
                }
            } else if let Some(net) = crate::syntax::parse_network(entry) {
                out.networks.push(net);
            } else if let Some(name) = domain(entry) {
                out.spf_domains.push(name);
            } else {
                return bad("an address, a network, helo:NAME, ptr:DOMAIN or a domain");
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self == &Whitelist::default()
    }
}

/// `domain` as DNS queries spell it: lowercase A-labels (RFC 7208 4.3,
/// viaspf's own conversion), no trailing dot; `None` for what is not a
/// valid multi-label domain name.
pub fn ascii_domain(domain: &str) -> Option<String> {
    let name = viaspf::DomainName::new(domain.trim_end_matches('.')).ok()?;
    let mut text = name.to_string();
    if text.ends_with('.') {
        text.pop();
    }
    Some(text)
}

impl SpfSettings {
    /// Whether `domain` (as the request spells it) is in
    /// `reject_not_pass_domains`: the domain itself, not its subdomains,
    /// as policyd-spf matches.
    pub fn must_pass(&self, domain: &str) -> bool {
        !self.reject_not_pass_domains.is_empty()
            && ascii_domain(domain)
                .is_some_and(|d| self.reject_not_pass_domains.binary_search(&d).is_ok())
    }
}

/// Whether `name` is `domain` or a subdomain of it (both lowercase, no
/// trailing dot).
pub fn is_under(name: &str, domain: &str) -> bool {
    name == domain
        || (name.len() > domain.len()
            && name.ends_with(domain)
            && name.as_bytes()[name.len() - domain.len() - 1] == b'.')
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
    /// True when a record or the explanation used the local part (`%{l}`,
    /// `%{s}` ...), so the result may differ for another user of the same
    /// domain.
    pub uses_local_part: bool,
    /// Whether the result may be reused for another request: not for a
    /// temporary error (DNS may be back a second later), an identity that
    /// could not be evaluated, or an internal error.
    pub cacheable: bool,
    /// The DNS lookups made, for traces (empty unless asked for).
    pub lookups: Vec<String>,
}

impl Evaluation {
    /// This result, speaking of `local@domain` (`parts`): a cached result
    /// serves other spellings of the identity it was evaluated for, and
    /// replies and headers name the request's own.
    pub fn for_identity(&self, parts: (&str, &str)) -> Evaluation {
        let (local, domain) = parts;
        self.with_texts(address_text(local, domain), domain.to_owned())
    }

    /// What a cache keeps of this result: neither the identity's texts,
    /// which a hit writes anew for its request (`for_identity`), nor the
    /// trace's lookups. Two allocations fewer per result stored, and more
    /// results within the cache's byte bound.
    pub fn to_cached(&self) -> Evaluation {
        self.with_texts(String::new(), String::new())
    }

    fn with_texts(&self, sender: String, domain: String) -> Evaluation {
        Evaluation {
            identity: self.identity,
            sender,
            domain,
            result: self.result.clone(),
            mechanism: self.mechanism.clone(),
            problem: self.problem.clone(),
            uses_local_part: self.uses_local_part,
            cacheable: self.cacheable,
            lookups: Vec::new(),
        }
    }

    pub fn result_name(&self) -> &'static str {
        result_name(&self.result)
    }

    /// Heap bytes held (for the cache's byte bound).
    pub fn heap_bytes(&self) -> usize {
        let explanation = match &self.result {
            SpfResult::Fail(viaspf::ExplanationString::External(e)) => e.len(),
            _ => 0,
        };
        self.sender.len()
            + self.domain.len()
            + self.mechanism.as_ref().map_or(0, String::len)
            + self.problem.as_ref().map_or(0, String::len)
            + explanation
            + self.lookups.iter().map(String::len).sum::<usize>()
    }

    /// An evaluation that could not run; never cached.
    fn failed(identity: Identity, sender: &str, result: SpfResult, problem: &str) -> Evaluation {
        Evaluation {
            identity,
            sender: sender.to_string(),
            domain: sender.rsplit('@').next().unwrap_or("").to_string(),
            result,
            mechanism: None,
            problem: Some(problem.into()),
            uses_local_part: false,
            cacheable: false,
            lookups: Vec::new(),
        }
    }
}

/// Every result's name (RFC 7208 2.6), in the order of [`result_index`].
pub const RESULT_NAMES: [&str; 7] = [
    "pass",
    "fail",
    "softfail",
    "neutral",
    "none",
    "temperror",
    "permerror",
];

/// The position of `result`'s name in [`RESULT_NAMES`].
pub fn result_index(result: &SpfResult) -> usize {
    match result {
        SpfResult::Pass => 0,
        SpfResult::Fail(_) => 1,
        SpfResult::Softfail => 2,
        SpfResult::Neutral => 3,
        SpfResult::None => 4,
        SpfResult::Temperror => 5,
        SpfResult::Permerror => 6,
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

/// The identity viaspf evaluates. MAIL FROM: the local part as given (RFC
/// 7208 sets no syntax for it; it only feeds the `%{l}` macros), `postmaster`
/// when there is none (4.3), the domain without its trailing dot (the
/// same domain; viaspf takes names without it). HELO: `postmaster@helo`.
fn parse_identity(identity: Identity, sender: &str) -> Result<Sender, viaspf::ParseParamError> {
    match identity {
        Identity::MailFrom => match crate::syntax::split_address(sender) {
            Some(("", domain)) => Sender::from_domain(domain.trim_end_matches('.')),
            // Rebuilt only to drop a trailing dot.
            Some(_) if !sender.ends_with('.') => Sender::from_address(sender),
            Some((local, domain)) => {
                Sender::from_address(&format!("{local}@{}", domain.trim_end_matches('.')))
            }
            None => Sender::from_domain(sender.trim_end_matches('.')),
        },
        Identity::Helo => Sender::from_domain(sender.trim_end_matches('.')),
    }
}

/// The local part and domain [`evaluate`] checks for `sender`, without
/// asking viaspf: the key a cached result is looked up under.
pub fn identity_parts(identity: Identity, sender: &str) -> (&str, &str) {
    let (local, domain) = match identity {
        Identity::MailFrom => crate::syntax::split_address(sender).unwrap_or(("", sender)),
        Identity::Helo => ("", sender),
    };
    let local = if local.is_empty() {
        "postmaster"
    } else {
        local
    };
    (local, domain.trim_end_matches('.'))
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
    let Ok(parsed) = parse_identity(identity, sender) else {
        let (_, domain) = identity_parts(identity, sender);
        if Sender::from_domain(domain).is_ok() {
            // The domain is fine, so the local part is what could not be
            // expressed: never a reason to call the mail unchecked.
            return Evaluation::failed(
                identity,
                sender,
                SpfResult::Temperror,
                "the local part cannot be evaluated",
            );
        }
        // RFC 7208 4.3: a domain that is not a valid multi-label name gives
        // none. It is no domain anybody publishes a record for, so nothing
        // is forged; it is not cached all the same.
        return Evaluation::failed(
            identity,
            sender,
            SpfResult::None,
            "not a valid domain (RFC 7208 4.3)",
        );
    };
    // For the HELO identity the name was just parsed as the sender's domain.
    let helo_domain = if identity == Identity::Helo && sender == helo {
        Some(parsed.domain().clone())
    } else {
        viaspf::DomainName::new(helo.trim_end_matches('.')).ok()
    };
    let config = ViaspfConfig::builder()
        .timeout(settings.timeout)
        .hostname(settings.receiver.clone())
        .build();
    // A panic inside viaspf costs one temperror, not the connection: it is
    // caught where the evaluation is polled, on the request's own task (a
    // task of its own would cost a hand-off per evaluation).
    let evaluation = async {
        let lookup = SpfLookup::new(resolver, record_lookups);
        let result =
            viaspf::evaluate_sender(&lookup, &config, ip, &parsed, helo_domain.as_ref()).await;
        (result, lookup.take_log(), lookup.saw_local_part_macro())
    };
    let (result, lookups, uses_local_part) = match CatchPanic(std::pin::pin!(evaluation)).await {
        Ok(done) => done,
        Err(why) => {
            let sender = crate::log::Escaped(sender);
            tracing::error!("SPF evaluation of {sender} for {ip} failed: panicked: {why}");
            return Evaluation::failed(
                identity,
                &parsed.to_string(),
                SpfResult::Temperror,
                "internal error",
            );
        }
    };
    let (mechanism, problem) = match &result.cause {
        Some(SpfResultCause::Match(m)) => (Some(m.to_string()), None),
        Some(SpfResultCause::Error(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let cacheable = result.spf_result != SpfResult::Temperror;
    let (sender, domain) = identity_text(&parsed);
    Evaluation {
        identity,
        sender,
        domain,
        result: result.spf_result,
        mechanism,
        problem,
        uses_local_part,
        cacheable,
        lookups,
    }
}

/// `local@domain` and `domain` of a parsed identity, as its `Display`
/// writes them, without the formatting machinery (every evaluation).
fn identity_text(parsed: &Sender) -> (String, String) {
    let name = parsed.domain().as_ref().as_str();
    let domain = name.strip_suffix('.').unwrap_or(name);
    (address_text(parsed.local_part(), domain), domain.to_owned())
}

/// `local@domain`, in a string of its exact size.
fn address_text(local: &str, domain: &str) -> String {
    let mut address = String::with_capacity(local.len() + 1 + domain.len());
    for part in [local, "@", domain] {
        address.push_str(part);
    }
    address
}

/// A future that turns a panic while it is polled into `Err(message)`.
/// The inner future is dropped unpolled after that. It borrows the inner
/// future pinned where it lives (in the caller's own future), so catching
/// costs no allocation.
struct CatchPanic<'f, F>(std::pin::Pin<&'f mut F>);

impl<F: std::future::Future> std::future::Future for CatchPanic<'_, F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        // Unwind safety: what a panic could leave half-changed is the DNS
        // cache, whose lock recovers from poisoning and whose entries are
        // replaced whole, and this evaluation, which is then dropped.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => std::task::Poll::Ready(Err(payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_while_polled_is_an_error_not_an_unwind() {
        let caught = CatchPanic(std::pin::pin!(async {
            tokio::task::yield_now().await;
            panic!("viaspf bug");
        }))
        .await;
        assert_eq!(caught.unwrap_err(), "viaspf bug");
        let fine = CatchPanic(std::pin::pin!(async { 7 })).await;
        assert_eq!(fine, Ok(7));
    }

    #[test]
    fn whitelist_entries() {
        let w = Whitelist::parse(
            "# partners\n203.0.113.0/24\n198.51.100.7\nhelo:MX.Partner.example.\n\
             ptr:partner.example\npartner.example\n",
        )
        .unwrap();
        assert_eq!(w.networks.len(), 2);
        assert_eq!(w.helo_names, ["mx.partner.example"]);
        assert_eq!(w.ptr_domains, ["partner.example"]);
        assert_eq!(w.spf_domains, ["partner.example"]);
        assert_eq!(Whitelist::parse("bad entry!\n").unwrap_err().0, 1);
        assert_eq!(Whitelist::parse("\nhelo:\n").unwrap_err().0, 2);
        assert_eq!(Whitelist::parse("ptr:nodots\n").unwrap_err().0, 1);
        assert!(Whitelist::parse("# nothing\n").unwrap().is_empty());
    }

    #[test]
    fn ascii_domains_and_must_pass() {
        assert_eq!(
            ascii_domain("Bücher.Example.").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(ascii_domain("x.example").unwrap(), "x.example");
        assert_eq!(ascii_domain("nodot"), None);
        assert_eq!(ascii_domain(&format!("{}x", "a.".repeat(200))), None);
        let settings = SpfSettings {
            reject_not_pass_domains: vec!["bank.example".into(), "xn--bcher-kva.example".into()],
            ..SpfSettings::default()
        };
        assert!(settings.must_pass("BANK.example."));
        assert!(settings.must_pass("bücher.example"));
        assert!(!settings.must_pass("x.bank.example"));
        assert!(!settings.must_pass("bank.example.com"));
        assert!(!SpfSettings::default().must_pass("bank.example"));
    }

    #[test]
    fn under() {
        assert!(is_under("partner.example", "partner.example"));
        assert!(is_under("mx.partner.example", "partner.example"));
        assert!(!is_under("xpartner.example", "partner.example"));
    }

    #[test]
    fn identities() {
        let p = |s: &str| parse_identity(Identity::MailFrom, s).map(|s| s.to_string());
        assert_eq!(p("ceo@victim.example.").unwrap(), "ceo@victim.example");
        assert_eq!(p("@victim.example").unwrap(), "postmaster@victim.example");
        assert!(p("ceo@nodot").is_err());
        for s in [
            "ceo@Victim.Example.",
            "a b@x.example",
            "@x.example",
            "x.example",
        ] {
            let parsed = parse_identity(Identity::MailFrom, s).unwrap();
            let text = identity_text(&parsed);
            assert_eq!(
                text,
                (parsed.to_string(), parsed.domain().to_string()),
                "{s:?}"
            );
        }
        let parts = |i, s| identity_parts(i, s);
        assert_eq!(
            parts(Identity::MailFrom, "a b@x.example."),
            ("a b", "x.example")
        );
        assert_eq!(
            parts(Identity::MailFrom, "@x.example"),
            ("postmaster", "x.example")
        );
        assert_eq!(
            parts(Identity::Helo, "mx.example"),
            ("postmaster", "mx.example")
        );
    }
}
