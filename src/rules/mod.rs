//! The rules a chain is made of, with Postfix's restriction names.
//!
//! A rule is compiled once from its text (`check_client_access
//! client_whitelist`) into a [`Rule`]; evaluating it reads the request, the
//! site facts and the runtime state and returns an [`Outcome`]. Rules never
//! touch sockets.
//!
//! Adding a rule, waiting or not: one function in its family file, one
//! row in the table of [`rule_table!`] (ARCHITECTURE.md, "Adding a rule").

pub mod access;
pub mod address;
pub mod client;
pub mod dnsbl;
pub mod dnscheck;
pub mod generic;
pub mod greylist;
pub mod helo;
pub mod ratelimit;
pub mod sasl;
pub mod spf;
pub mod submission;

use std::fmt;
use std::sync::Arc;

use crate::dns::Resolver;
use crate::protocol::Request;
use crate::site::Site;
use crate::state::State;
use crate::tables::AccessTable;
use crate::vocab::Stage;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;
use dnsbl::Dnsxl;
use ratelimit::RateLimit;

/// How a rule runs, and what argument it takes.
#[derive(Clone, Copy)]
pub enum Run {
    /// Decides at once; no argument.
    Now(fn(&mut Context<'_>) -> Outcome),
    /// Waits for lookups or the store; no argument.
    Later(Waits),
    /// Consults the access table named by its one argument.
    Table(fn(&mut Context<'_>, &AccessTable) -> Outcome),
    /// Applies the `[[rate_limit]]` named by its one argument (waits for
    /// the store).
    Limit,
    /// Looks the request up in the DNS list named by its one argument
    /// (`domain` or `domain=filter`).
    List(dnsbl::Dnsxl),
}

/// Site facts a rule cannot work without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// A login map (`[site] login_map` and/or `login_from_aliases`).
    Logins,
    /// `[site] egress`.
    Egress,
    /// `[greylist]` (which itself needs a `[store]`).
    Greylist,
    /// `[dnsbl] sites`.
    DnsblSites,
}

impl Needs {
    /// Why `site` cannot serve a rule with this need, if it cannot.
    fn missing(self, site: &Site) -> Option<&'static str> {
        match self {
            Needs::Logins if site.logins.is_none() => {
                Some("needs a login map: set [site] login_map and/or login_from_aliases = true")
            }
            Needs::Egress if site.egress.is_empty() => {
                Some("needs [site] egress: the addresses our mail leaves from")
            }
            Needs::Greylist if site.greylist.is_none() => {
                Some("needs a [greylist] table (and a [store] for its records)")
            }
            Needs::DnsblSites if site.dnsbl_sites.is_none() => {
                Some("needs [dnsbl] sites: the DNS lists it scores the client with")
            }
            _ => None,
        }
    }
}

/// One row of the rule table.
pub struct RuleSpec {
    /// Postfix's restriction name (lowercase).
    pub name: &'static str,
    /// The first stage whose data the rule judges: it may sit there or in
    /// a later stage (a stage runs only when its data exists).
    pub earliest: Stage,
    pub needs: Needs,
    pub run: Run,
}

/// Makes [`RULES`] from one row per rule, and for the rules that wait
/// ([`Run::Later`]) the [`Waits`] enum that runs them. A row is
/// `kind name: Stage [needs Need] => function;`, `kind` one of `now`,
/// `later` (an `async fn`), `table` (its argument names an access table),
/// `limit` (its argument names a `[[rate_limit]]`) or `list` (its argument
/// names a DNS list; the [`dnsbl::Dnsxl`] says how it is queried).
///
/// The rules that wait run in place, inside the chain's own future (which
/// is as large as the largest of them, check_spf's, some 2 KB per
/// connection): a boxed future per rule and request cost an allocation, a
/// copy and a free each, five times per port-25 request. So each is a
/// variant of [`Waits`], named as the rule, which this macro writes.
macro_rules! rule_table {
    // All rows read: the table and the rules that wait.
    (@rows [$($rows:tt)*] [$($waits:ident => $run:path,)*]) => {
        /// Every rule rpol implements.
        pub const RULES: &[RuleSpec] = &[$($rows)*];

        /// The rules that wait, each named as its rule (see [`rule_table!`]).
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy)]
        pub enum Waits {
            $($waits,)*
        }

        impl Waits {
            /// The rule's name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Waits::$waits => stringify!($waits),)*
                }
            }

            async fn run(self, ctx: &mut Context<'_>) -> Outcome {
                match self {
                    $(Waits::$waits => $run(ctx).await,)*
                }
            }
        }
    };
    (@rows [$($rows:tt)*] [$($waits:tt)*]
        later $name:ident: $stage:ident $(needs $needs:ident)? => $run:path; $($rest:tt)*) => {
        rule_table!(@rows
            [$($rows)* rule_table!(@row $name, $stage, [$($needs)?], Run::Later(Waits::$name)),]
            [$($waits)* $name => $run,]
            $($rest)*);
    };
    (@rows [$($rows:tt)*] [$($waits:tt)*]
        now $name:ident: $stage:ident $(needs $needs:ident)? => $run:path; $($rest:tt)*) => {
        rule_table!(@rows
            [$($rows)* rule_table!(@row $name, $stage, [$($needs)?], Run::Now($run)),]
            [$($waits)*]
            $($rest)*);
    };
    (@rows [$($rows:tt)*] [$($waits:tt)*]
        table $name:ident: $stage:ident => $run:path; $($rest:tt)*) => {
        rule_table!(@rows
            [$($rows)* rule_table!(@row $name, $stage, [], Run::Table($run)),]
            [$($waits)*]
            $($rest)*);
    };
    (@rows [$($rows:tt)*] [$($waits:tt)*]
        list $name:ident: $stage:ident => $kind:path; $($rest:tt)*) => {
        rule_table!(@rows
            [$($rows)* rule_table!(@row $name, $stage, [], Run::List($kind)),]
            [$($waits)*]
            $($rest)*);
    };
    (@rows [$($rows:tt)*] [$($waits:tt)*]
        limit $name:ident: $stage:ident; $($rest:tt)*) => {
        rule_table!(@rows
            [$($rows)* rule_table!(@row $name, $stage, [], Run::Limit),]
            [$($waits)*]
            $($rest)*);
    };
    (@row $name:ident, $stage:ident, [$($needs:ident)?], $run:expr) => {
        RuleSpec {
            name: stringify!($name),
            earliest: Stage::$stage,
            needs: rule_table!(@needs $($needs)?),
            run: $run,
        }
    };
    (@needs) => { Needs::Nothing };
    (@needs $needs:ident) => { Needs::$needs };
    ($($rows:tt)*) => { rule_table!(@rows [] [] $($rows)*); };
}

rule_table! {
    now permit: Client => generic::permit;
    now dunno: Client => generic::dunno;
    now reject: Client => generic::reject;
    now defer: Client => generic::defer;
    now defer_if_permit: Client => generic::defer_if_permit;
    now defer_if_reject: Client => generic::defer_if_reject;
    now permit_mynetworks: Client => client::permit_mynetworks;
    now permit_sasl_authenticated: Client => sasl::permit_sasl_authenticated;
    table check_client_access: Client => access::check_client_access;
    table check_helo_access: Helo => access::check_helo_access;
    table check_sender_access: Sender => access::check_sender_access;
    table check_recipient_access: Recipient => access::check_recipient_access;
    later reject_unknown_client_hostname: Client => client::reject_unknown_client_hostname;
    later reject_unknown_reverse_client_hostname: Client
        => client::reject_unknown_reverse_client_hostname;
    now reject_invalid_helo_hostname: Helo => helo::reject_invalid_helo_hostname;
    now reject_non_fqdn_helo_hostname: Helo => helo::reject_non_fqdn_helo_hostname;
    later reject_unknown_helo_hostname: Helo => helo::reject_unknown_helo_hostname;
    now reject_non_fqdn_sender: Sender => address::reject_non_fqdn_sender;
    later reject_unknown_sender_domain: Sender => address::reject_unknown_sender_domain;
    now reject_unlisted_sender: Sender => address::reject_unlisted_sender;
    // The recipient count exists at DATA, where the sender stage runs.
    now reject_multi_recipient_bounce: Sender => address::reject_multi_recipient_bounce;
    now reject_non_fqdn_recipient: Recipient => address::reject_non_fqdn_recipient;
    later reject_unknown_recipient_domain: Recipient => address::reject_unknown_recipient_domain;
    now reject_unlisted_recipient: Recipient => address::reject_unlisted_recipient;
    now reject_unauth_destination: Recipient => address::reject_unauth_destination;
    now defer_unauth_destination: Recipient => address::defer_unauth_destination;
    now permit_auth_destination: Recipient => address::permit_auth_destination;
    // Needs HELO and MAIL FROM: the sender stage or later.
    later check_spf: Sender => spf::check_spf;
    // The triplet needs the recipient.
    later check_greylist: Recipient needs Greylist => greylist::check_greylist;
    later check_outbound_spf: Sender needs Egress => submission::check_outbound_spf;
    now reject_authenticated_sender_login_mismatch: Sender needs Logins
        => submission::reject_authenticated_sender_login_mismatch;
    now reject_unauthenticated_sender_login_mismatch: Sender needs Logins
        => submission::reject_unauthenticated_sender_login_mismatch;
    now reject_sender_login_mismatch: Sender needs Logins
        => submission::reject_sender_login_mismatch;
    now reject_known_sender_login_mismatch: Sender needs Logins
        => submission::reject_known_sender_login_mismatch;
    limit check_rate_limit: Client;
    // postscreen's weighted score of [dnsbl] sites.
    later check_dnsbl_score: Client needs DnsblSites => dnsbl::check_dnsbl_score;
    list reject_rbl_client: Client => Dnsxl::RblClient;
    list reject_rhsbl_client: Client => Dnsxl::RhsblClient;
    list reject_rhsbl_reverse_client: Client => Dnsxl::RhsblReverseClient;
    list reject_rhsbl_helo: Helo => Dnsxl::RhsblHelo;
    list reject_rhsbl_sender: Sender => Dnsxl::RhsblSender;
    list reject_rhsbl_recipient: Recipient => Dnsxl::RhsblRecipient;
    list permit_dnswl_client: Client => Dnsxl::DnswlClient;
    list permit_rhswl_client: Client => Dnsxl::RhswlClient;
}

/// Postfix's older names for the same restrictions.
const ALIASES: &[(&str, &str)] = &[
    ("reject_unknown_client", "reject_unknown_client_hostname"),
    ("reject_invalid_hostname", "reject_invalid_helo_hostname"),
    ("reject_non_fqdn_hostname", "reject_non_fqdn_helo_hostname"),
    ("reject_unknown_hostname", "reject_unknown_helo_hostname"),
    ("check_recipient_maps", "reject_unlisted_recipient"),
    ("reject_rbl", "reject_rbl_client"),
];

/// One compiled rule: its row, and its table when it takes one.
pub struct Rule {
    spec: &'static RuleSpec,
    /// Its row's position in [`RULES`]: where the chain counts its results.
    index: usize,
    table: Option<Arc<AccessTable>>,
    limit: Option<Arc<RateLimit>>,
    list: Option<Arc<crate::dnsbl::List>>,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec.name)
    }
}

/// What a rule may read while it runs.
pub struct Context<'a> {
    pub request: &'a Request,
    pub site: &'a Site,
    pub dns: &'a Resolver,
    /// Runtime state that outlives the policy (caches, transactions).
    pub state: &'a State,
    /// When set, rules explain what they looked at (for traces).
    pub notes: Option<&'a mut Vec<String>>,
    /// Messages to count once the chain has not refused them (rate limits
    /// at END-OF-MESSAGE).
    pub counts: &'a mut Vec<ratelimit::Count>,
    /// The client's `[dnsbl] sites` score, once a rule of this request
    /// has asked for it (`dnsbl::client_score`).
    pub dnsbl_score: &'a mut Option<Arc<crate::dnsbl::score::Score>>,
}

impl Context<'_> {
    /// Records a trace note; the closure runs only when a trace is wanted.
    pub fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(notes) = self.notes.as_deref_mut() {
            notes.push(f());
        }
    }
}

impl Rule {
    /// The row's position in [`RULES`].
    pub fn index(&self) -> usize {
        self.index
    }

    /// Postfix's name of the rule (`check_rate_limit`, ...).
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// The DNS list the rule names, and how it queries it.
    pub fn dns_list(&self) -> Option<(&Arc<crate::dnsbl::List>, Dnsxl)> {
        match (self.spec.run, &self.list) {
            (Run::List(kind), Some(list)) => Some((list, kind)),
            _ => None,
        }
    }

    /// Whether the rule waits (for the DNS or the store): where the chain
    /// starts the DNS queries of the rules ahead ([`Rule::prefetch`]).
    pub fn waits(&self) -> bool {
        matches!(self.spec.run, Run::Later(_) | Run::Limit | Run::List(_))
    }

    /// Sends the DNS queries this rule will make first for `request`,
    /// those that depend on nothing but the request, without waiting for
    /// them ([`Resolver::prefetch`]: none that is cached or in flight):
    /// when the rule runs, it joins them or finds their answers. A rule's
    /// later lookups depend on these answers, and wait for them.
    pub fn prefetch(&self, request: &Request, site: &Site, state: &State, dns: &Resolver) {
        let rule = match (self.spec.run, &self.list) {
            (Run::List(kind), Some(list)) => return dnsbl::prefetch(kind, request, list, dns),
            (Run::Later(rule), _) => rule,
            _ => return,
        };
        match rule {
            Waits::reject_unknown_client_hostname => {
                client::prefetch_ptr(request, &request.client_name, dns);
            }
            Waits::reject_unknown_reverse_client_hostname => {
                client::prefetch_ptr(request, &request.reverse_client_name, dns);
            }
            Waits::reject_unknown_helo_hostname => {
                helo::prefetch_unknown_helo_hostname(request, dns);
            }
            Waits::reject_unknown_sender_domain => {
                address::prefetch_unknown_domain(request, site, Stage::Sender, dns);
            }
            Waits::reject_unknown_recipient_domain => {
                address::prefetch_unknown_domain(request, site, Stage::Recipient, dns);
            }
            Waits::check_spf => spf::prefetch_check_spf(request, site, state, dns),
            // Their first lookups depend on the store, their settings or
            // other answers (check_dnsbl_score asks all its sites at once).
            Waits::check_greylist | Waits::check_outbound_spf | Waits::check_dnsbl_score => {}
        }
    }

    /// Runs a rule that decides at once (most of a chain), with no future
    /// made, polled and dropped around it; for one that waits, says so:
    /// [`Rule::finish`] runs it.
    pub fn start(&self, ctx: &mut Context<'_>) -> Started {
        match (self.spec.run, &self.table) {
            (Run::Now(f), _) => Started::Done(f(ctx)),
            (Run::Table(f), Some(table)) => Started::Done(f(ctx, table)),
            (Run::Table(_), None) => Started::Done(misconfigured()),
            (Run::Later(_) | Run::Limit | Run::List(_), _) => Started::Waits,
        }
    }

    /// Runs a rule that waits, to its outcome.
    pub async fn finish(&self, ctx: &mut Context<'_>) -> Outcome {
        if let (Run::List(kind), Some(list)) = (self.spec.run, &self.list) {
            return dnsbl::check(kind, ctx, list).await;
        }
        match (self.spec.run, &self.limit) {
            (Run::List(_), _) => misconfigured(),
            (Run::Later(rule), _) => rule.run(ctx).await,
            (Run::Limit, Some(limit)) => ratelimit::check_rate_limit(ctx, limit).await,
            (Run::Limit, None) => misconfigured(),
            // start() answers these; asked here, it answers the same.
            (Run::Now(_) | Run::Table(_), _) => match self.start(ctx) {
                Started::Done(outcome) => outcome,
                Started::Waits => misconfigured(),
            },
        }
    }
}

/// The outcome of a rule that compile() never builds: refused rather than
/// let mail through.
fn misconfigured() -> Outcome {
    Outcome::Reject(Reply::new(451, "4.3.5", "Server configuration error"))
}

/// A started rule: its outcome, or word that it waits.
pub enum Started {
    Done(Outcome),
    Waits,
}

/// Why a rule text cannot be compiled (the config loader adds the position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Postfix restrictions rpol knows but refuses, with the reason.
const REFUSED: &[(&str, &str)] = &[
    (
        "reject_unauth_pipelining",
        "a policy request carries no pipelining information; keep reject_unauth_pipelining in main.cf",
    ),
    (
        "check_policy_service",
        "rpol is the policy service; nesting another one is not supported",
    ),
    (
        "reject_plaintext_session",
        "not implemented by rpol; keep it in main.cf",
    ),
];

/// Postfix restrictions that later rpol work implements; named so that the
/// loader says "not implemented yet" rather than "unknown".
const NOT_YET: &[&str] = &[
    "check_reverse_client_hostname_access",
    "check_sasl_access",
    "check_ccert_access",
    "permit_tls_clientcerts",
    "permit_tls_all_clientcerts",
];

/// Resolves a table argument to a loaded table, and a rate-limit argument
/// to its `[[rate_limit]]`.
pub trait TableResolver {
    fn table(&mut self, arg: &str) -> Result<Arc<AccessTable>, String>;

    fn rate_limit(&mut self, name: &str) -> Result<Arc<RateLimit>, String> {
        Err(format!("no [[rate_limit]] named {name:?}"))
    }
}

/// The row of a rule name (any case, older Postfix names included).
pub fn spec(name: &str) -> Option<&'static RuleSpec> {
    let lower = name.to_ascii_lowercase();
    let name = ALIASES
        .iter()
        .find(|(old, _)| *old == lower)
        .map_or(lower.as_str(), |(_, new)| new);
    RULES.iter().find(|r| r.name == name)
}

/// Compiles one rule text for `stage`, for a site that has what it needs.
pub fn compile(
    text: &str,
    stage: Stage,
    tables: &mut dyn TableResolver,
    site: &Site,
) -> Result<Rule, RuleError> {
    let mut words = text.split_whitespace();
    let Some(name) = words.next() else {
        return Err(RuleError("empty rule".into()));
    };
    let args: Vec<&str> = words.collect();
    let Some(spec) = spec(name) else {
        let lower = name.to_ascii_lowercase();
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == lower) {
            return Err(RuleError(format!("{name}: {why}")));
        }
        if NOT_YET.contains(&lower.as_str()) {
            return Err(RuleError(format!(
                "{name}: not implemented by this version of rpol"
            )));
        }
        return Err(RuleError(format!("unknown rule {name:?}")));
    };
    let earliest = spec.earliest;
    if stage < earliest {
        return Err(RuleError(format!(
            "{name} cannot work in the {stage} stage: it needs the {earliest} data, which the {stage} stage runs without (use it in the {earliest} stage or later)"
        )));
    }
    let mut list = None;
    let (table, limit) = match (spec.run, args.as_slice()) {
        (Run::List(_), [arg]) => {
            let parsed =
                crate::dnsbl::List::parse(arg).map_err(|e| RuleError(format!("{name}: {e}")))?;
            list = Some(Arc::new(parsed));
            (None, None)
        }
        (Run::List(_), _) => {
            return Err(RuleError(format!(
                "{name} takes exactly one argument: the list's domain, or domain=filter (as zen.spamhaus.org=127.0.0.[2..11])"
            )));
        }
        (Run::Table(_), [table]) => (Some(tables.table(table).map_err(RuleError)?), None),
        (Run::Table(_), _) => {
            return Err(RuleError(format!(
                "{name} takes exactly one table argument"
            )));
        }
        (Run::Limit, [limit]) => {
            let limit = tables.rate_limit(limit).map_err(RuleError)?;
            rate_limit_stage(&limit, stage)?;
            (None, Some(limit))
        }
        (Run::Limit, _) => {
            return Err(RuleError(format!(
                "{name} takes exactly one argument: the name of a [[rate_limit]]"
            )));
        }
        (_, []) => (None, None),
        (_, _) => return Err(RuleError(format!("{name} takes no argument"))),
    };
    if let Some(why) = spec.needs.missing(site) {
        return Err(RuleError(why.into()));
    }
    // Found by name: a `const` slice promises no one address to compare.
    let index = RULES.iter().position(|r| r.name == spec.name).unwrap_or(0);
    Ok(Rule {
        spec,
        index,
        table,
        limit,
        list,
    })
}

/// Where check_rate_limit may sit: where its key exists, and not in the
/// recipient stage, which does not run at END-OF-MESSAGE (where it counts)
/// for a message with several recipients.
fn rate_limit_stage(limit: &RateLimit, stage: Stage) -> Result<(), RuleError> {
    if stage == Stage::Recipient {
        return Err(RuleError(
            "check_rate_limit cannot sit in the recipient stage: it counts at END-OF-MESSAGE, where that stage runs only for a message with one recipient (use the client, helo or sender stage)".into(),
        ));
    }
    if limit.key == ratelimit::KeyKind::Sender && stage < Stage::Sender {
        return Err(RuleError(format!(
            "check_rate_limit {}: key = \"sender\" needs the sender stage, which the {stage} stage runs without",
            limit.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_name_is_unique_lowercase_and_aliases_resolve() {
        for (i, r) in RULES.iter().enumerate() {
            assert_eq!(r.name, r.name.to_ascii_lowercase());
            assert!(
                RULES[..i].iter().all(|o| o.name != r.name),
                "{} twice",
                r.name
            );
            assert!(!REFUSED.iter().any(|(n, _)| *n == r.name));
            assert!(!NOT_YET.contains(&r.name));
        }
        for (old, new) in ALIASES {
            assert_eq!(spec(old).map(|s| s.name), Some(*new));
        }
        assert_eq!(
            spec("Permit_MyNetworks").map(|s| s.name),
            Some("permit_mynetworks")
        );
        assert!(spec("no_such_rule").is_none());
    }

    /// The table's rows are what the recipe (ARCHITECTURE.md) says: a
    /// rule that waits runs through its own `Waits` variant, named as
    /// the rule; the others decide at once, from a table, or from a limit.
    #[test]
    fn each_row_runs_its_own_function() {
        let (mut waiting, mut lists) = (0, 0);
        for r in RULES {
            match r.run {
                Run::Later(w) => {
                    assert_eq!(w.name(), r.name);
                    waiting += 1;
                }
                Run::Limit => assert_eq!(r.name, "check_rate_limit"),
                Run::Table(_) => {
                    assert!(r.name.starts_with("check_") && r.name.ends_with("_access"))
                }
                Run::List(_) => {
                    lists += 1;
                    assert!(
                        r.name.contains("bl_") || r.name.contains("wl_"),
                        "{}",
                        r.name
                    );
                }
                Run::Now(_) => {}
            }
        }
        assert_eq!(waiting, 9, "the rules that wait for DNS or the store");
        assert_eq!(lists, 8, "Postfix's DNS list rules");
        let greylist = spec("check_greylist").map(|s| (s.earliest, s.needs));
        assert_eq!(greylist, Some((Stage::Recipient, Needs::Greylist)));
        let outbound = spec("check_outbound_spf").map(|s| (s.earliest, s.needs));
        assert_eq!(outbound, Some((Stage::Sender, Needs::Egress)));
    }
}
