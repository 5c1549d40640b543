//! The rules a chain is made of, with Postfix's restriction names.
//!
//! A rule is compiled once from its text (`check_client_access
//! client_whitelist`) into a [`Rule`]; evaluating it reads the request and
//! the site facts and returns an [`Outcome`]. Rules never touch sockets.
//! Adding a rule: one function in its family file, one line in [`compile`].

pub mod access;
pub mod address;
pub mod client;
pub mod dnscheck;
pub mod generic;
pub mod helo;
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
use submission::LoginCheck;

/// One compiled rule.
#[derive(Debug)]
pub enum Rule {
    Permit,
    Reject,
    Defer,
    Dunno,
    DeferIfPermit,
    DeferIfReject,
    PermitMynetworks,
    PermitSaslAuthenticated,
    CheckAccess {
        subject: Stage,
        table: Arc<AccessTable>,
    },
    RejectUnknownClientHostname,
    RejectUnknownReverseClientHostname,
    RejectInvalidHeloHostname,
    RejectNonFqdnHeloHostname,
    RejectUnknownHeloHostname,
    /// reject_non_fqdn_sender / _recipient.
    RejectNonFqdnAddress(Stage),
    /// reject_unknown_sender_domain / _recipient_domain.
    RejectUnknownDomain(Stage),
    /// reject_unlisted_sender / _recipient.
    RejectUnlistedAddress(Stage),
    RejectUnauthDestination,
    DeferUnauthDestination,
    PermitAuthDestination,
    CheckSpf,
    SenderLoginMismatch(submission::LoginCheck),
    CheckOutboundSpf,
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
    pub async fn evaluate(&self, ctx: &mut Context<'_>) -> Outcome {
        match self {
            Rule::Permit => Outcome::Permit,
            Rule::Reject => generic::reject(ctx),
            Rule::Defer => generic::defer(ctx),
            Rule::Dunno => Outcome::Dunno,
            Rule::DeferIfPermit => generic::defer_if_permit(ctx),
            Rule::DeferIfReject => generic::defer_if_reject(ctx),
            Rule::PermitMynetworks => client::permit_mynetworks(ctx),
            Rule::PermitSaslAuthenticated => sasl::permit_sasl_authenticated(ctx),
            Rule::CheckAccess { subject, table } => access::check_access(ctx, *subject, table),
            Rule::RejectUnknownClientHostname => client::reject_unknown_client_hostname(ctx).await,
            Rule::RejectUnknownReverseClientHostname => {
                client::reject_unknown_reverse_client_hostname(ctx).await
            }
            Rule::RejectInvalidHeloHostname => helo::reject_invalid_helo_hostname(ctx),
            Rule::RejectNonFqdnHeloHostname => helo::reject_non_fqdn_helo_hostname(ctx),
            Rule::RejectUnknownHeloHostname => helo::reject_unknown_helo_hostname(ctx).await,
            Rule::RejectNonFqdnAddress(s) => address::reject_non_fqdn_address(ctx, *s),
            Rule::RejectUnknownDomain(s) => address::reject_unknown_domain(ctx, *s).await,
            Rule::RejectUnlistedAddress(s) => address::reject_unlisted_address(ctx, *s),
            Rule::RejectUnauthDestination => address::reject_unauth_destination(ctx),
            Rule::DeferUnauthDestination => address::defer_unauth_destination(ctx),
            Rule::PermitAuthDestination => address::permit_auth_destination(ctx),
            Rule::CheckSpf => spf::check_spf(ctx).await,
            Rule::SenderLoginMismatch(check) => submission::sender_login_mismatch(ctx, *check),
            Rule::CheckOutboundSpf => submission::check_outbound_spf(ctx).await,
        }
    }

    /// Why the site lacks what this rule cannot work without, if it does.
    fn missing(&self, site: &Site) -> Option<&'static str> {
        match self {
            Rule::SenderLoginMismatch(_) if site.logins.is_none() => {
                Some("needs a login map: set [site] login_map and/or login_from_aliases = true")
            }
            Rule::CheckOutboundSpf if site.egress.is_empty() => {
                Some("needs [site] egress: the addresses our mail leaves from")
            }
            _ => None,
        }
    }
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
    (
        "warn_if_reject",
        "not implemented by rpol; test a chain with --test-request instead",
    ),
];

/// Postfix restrictions that later rpol work implements; named so that the
/// loader says "not implemented yet" rather than "unknown".
const NOT_YET: &[&str] = &[
    "reject_rbl_client",
    "reject_rhsbl_client",
    "reject_rhsbl_sender",
    "reject_rhsbl_helo",
    "reject_rhsbl_recipient",
    "permit_dnswl_client",
    "check_reverse_client_hostname_access",
    "check_sasl_access",
    "check_ccert_access",
    "permit_tls_clientcerts",
    "permit_tls_all_clientcerts",
    "reject_multi_recipient_bounce",
];

/// Resolves a table argument to a loaded table.
pub trait TableResolver {
    fn table(&mut self, arg: &str) -> Result<Arc<AccessTable>, String>;
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
    let lower = name.to_ascii_lowercase();
    // (rule without its table, takes a table, earliest stage it can work in)
    let (rule, access, earliest) = match lower.as_str() {
        "permit" => (Some(Rule::Permit), None, Stage::Client),
        "reject" => (Some(Rule::Reject), None, Stage::Client),
        "defer" => (Some(Rule::Defer), None, Stage::Client),
        "dunno" => (Some(Rule::Dunno), None, Stage::Client),
        "defer_if_permit" => (Some(Rule::DeferIfPermit), None, Stage::Client),
        "defer_if_reject" => (Some(Rule::DeferIfReject), None, Stage::Client),
        "permit_mynetworks" => (Some(Rule::PermitMynetworks), None, Stage::Client),
        "permit_sasl_authenticated" => (Some(Rule::PermitSaslAuthenticated), None, Stage::Client),
        "check_client_access" => (None, Some(Stage::Client), Stage::Client),
        "check_helo_access" => (None, Some(Stage::Helo), Stage::Helo),
        "check_sender_access" => (None, Some(Stage::Sender), Stage::Sender),
        "check_recipient_access" => (None, Some(Stage::Recipient), Stage::Recipient),
        "reject_unknown_client_hostname" | "reject_unknown_client" => {
            (Some(Rule::RejectUnknownClientHostname), None, Stage::Client)
        }
        "reject_unknown_reverse_client_hostname" => (
            Some(Rule::RejectUnknownReverseClientHostname),
            None,
            Stage::Client,
        ),
        "reject_invalid_helo_hostname" | "reject_invalid_hostname" => {
            (Some(Rule::RejectInvalidHeloHostname), None, Stage::Helo)
        }
        "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => {
            (Some(Rule::RejectNonFqdnHeloHostname), None, Stage::Helo)
        }
        "reject_unknown_helo_hostname" | "reject_unknown_hostname" => {
            (Some(Rule::RejectUnknownHeloHostname), None, Stage::Helo)
        }
        "reject_non_fqdn_sender" => (
            Some(Rule::RejectNonFqdnAddress(Stage::Sender)),
            None,
            Stage::Sender,
        ),
        "reject_unknown_sender_domain" => (
            Some(Rule::RejectUnknownDomain(Stage::Sender)),
            None,
            Stage::Sender,
        ),
        "reject_unlisted_sender" => (
            Some(Rule::RejectUnlistedAddress(Stage::Sender)),
            None,
            Stage::Sender,
        ),
        "reject_non_fqdn_recipient" => (
            Some(Rule::RejectNonFqdnAddress(Stage::Recipient)),
            None,
            Stage::Recipient,
        ),
        "reject_unknown_recipient_domain" => (
            Some(Rule::RejectUnknownDomain(Stage::Recipient)),
            None,
            Stage::Recipient,
        ),
        "reject_unlisted_recipient" | "check_recipient_maps" => (
            Some(Rule::RejectUnlistedAddress(Stage::Recipient)),
            None,
            Stage::Recipient,
        ),
        "reject_unauth_destination" => {
            (Some(Rule::RejectUnauthDestination), None, Stage::Recipient)
        }
        "defer_unauth_destination" => (Some(Rule::DeferUnauthDestination), None, Stage::Recipient),
        "permit_auth_destination" => (Some(Rule::PermitAuthDestination), None, Stage::Recipient),
        // Needs HELO and MAIL FROM: the sender stage or later.
        "check_spf" => (Some(Rule::CheckSpf), None, Stage::Sender),
        "check_outbound_spf" => (Some(Rule::CheckOutboundSpf), None, Stage::Sender),
        "reject_authenticated_sender_login_mismatch" => (
            Some(Rule::SenderLoginMismatch(LoginCheck::Authenticated)),
            None,
            Stage::Sender,
        ),
        "reject_unauthenticated_sender_login_mismatch" => (
            Some(Rule::SenderLoginMismatch(LoginCheck::Unauthenticated)),
            None,
            Stage::Sender,
        ),
        "reject_sender_login_mismatch" => (
            Some(Rule::SenderLoginMismatch(LoginCheck::Both)),
            None,
            Stage::Sender,
        ),
        "reject_known_sender_login_mismatch" => (
            Some(Rule::SenderLoginMismatch(LoginCheck::Known)),
            None,
            Stage::Sender,
        ),
        _ => {
            if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == lower) {
                return Err(RuleError(format!("{name}: {why}")));
            }
            if NOT_YET.contains(&lower.as_str()) {
                return Err(RuleError(format!(
                    "{name}: not implemented by this version of rpol"
                )));
            }
            return Err(RuleError(format!("unknown rule {name:?}")));
        }
    };
    if stage < earliest {
        return Err(RuleError(format!(
            "{name} cannot work in the {stage} stage: it needs the {earliest} data, which the {stage} stage runs without (use it in the {earliest} stage or later)"
        )));
    }
    match (rule, access, args.as_slice()) {
        (Some(rule), _, []) => match rule.missing(site) {
            Some(why) => Err(RuleError(why.into())),
            None => Ok(rule),
        },
        (Some(_), _, _) => Err(RuleError(format!("{name} takes no argument"))),
        (None, Some(subject), [table]) => Ok(Rule::CheckAccess {
            subject,
            table: tables.table(table).map_err(RuleError)?,
        }),
        (None, _, _) => Err(RuleError(format!(
            "{name} takes exactly one table argument"
        ))),
    }
}
