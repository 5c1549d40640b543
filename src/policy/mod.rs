//! The compiled policy: profiles, each an ordered chain of stages and rules,
//! and the site facts rules read. Built by the config loader, immutable,
//! shared behind an `Arc`; a reload builds a new one and swaps it.

pub mod chain;
pub mod outcome;
pub mod reply;

use std::fmt;
use std::path::PathBuf;

use std::collections::HashSet;

use ipnet::IpNet;

use crate::config::ServerSettings;
use crate::dns::DnsConfig;
use crate::protocol::Request;
use crate::rules::Rule;
use crate::spf::{ResultActions, SpfAction, SpfSettings};
use crate::tables::addresses::Addresses;
use crate::tables::logins::LoginMap;
use outcome::AccessCodes;

pub use chain::{Decision, evaluate};

/// The four restriction stages, in Postfix's evaluation order
/// (smtpd_client_, _helo_, _sender_, _recipient_restrictions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Client,
    Helo,
    Sender,
    Recipient,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Client, Stage::Helo, Stage::Sender, Stage::Recipient];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Client => "client",
            Stage::Helo => "helo",
            Stage::Sender => "sender",
            Stage::Recipient => "recipient",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Postfix's `<Class>` for a reply from this stage's restriction list.
    pub fn class(self) -> &'static str {
        match self {
            Stage::Client => "Client host",
            Stage::Helo => "Helo command",
            Stage::Sender => "Sender address",
            Stage::Recipient => "Recipient address",
        }
    }

    /// Postfix's `<name>` (reply_name) for this stage.
    pub fn reply_name(self, req: &Request) -> String {
        match self {
            Stage::Client => req.client_label(),
            Stage::Helo => req.helo_name.clone(),
            Stage::Sender => req.sender.clone(),
            Stage::Recipient => req.recipient.clone(),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a restriction does when DNS gives a temporary failure (Postfix
/// `reject_tempfail_action` and the `*_tempfail_action` parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempfailAction {
    /// Remember the 4xx; answer it at the end unless something rejects.
    DeferIfPermit,
    /// Answer the 4xx at once.
    Defer,
}

impl TempfailAction {
    pub fn parse(text: &str) -> Option<TempfailAction> {
        match text {
            "defer_if_permit" => Some(TempfailAction::DeferIfPermit),
            "defer" => Some(TempfailAction::Defer),
            _ => None,
        }
    }
}

/// Reply codes and actions of Postfix parameters rpol reproduces (same
/// names, same defaults; `[postfix]` in policy.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codes {
    pub access: AccessCodes,
    /// `reject_code`, default 554: the `reject` restriction.
    pub reject_code: u16,
    /// `defer_code`, default 450: the `defer` restriction.
    pub defer_code: u16,
    /// `unknown_client_reject_code`, default 450.
    pub unknown_client_reject_code: u16,
    /// `unknown_hostname_reject_code`, default 450.
    pub unknown_hostname_reject_code: u16,
    /// `unknown_address_reject_code`, default 450.
    pub unknown_address_reject_code: u16,
    /// `invalid_hostname_reject_code`, default 501.
    pub invalid_hostname_reject_code: u16,
    /// `non_fqdn_reject_code`, default 504.
    pub non_fqdn_reject_code: u16,
    /// `relay_domains_reject_code`, default 554.
    pub relay_domains_reject_code: u16,
    /// `unknown_virtual_mailbox_reject_code`, default 550.
    pub unknown_virtual_mailbox_reject_code: u16,
    /// `unknown_virtual_alias_reject_code`, default 550.
    pub unknown_virtual_alias_reject_code: u16,
    /// `unknown_helo_hostname_tempfail_action`, default `$reject_tempfail_action`.
    pub unknown_helo_hostname_tempfail_action: TempfailAction,
    /// `unknown_address_tempfail_action`, default `$reject_tempfail_action`.
    pub unknown_address_tempfail_action: TempfailAction,
}

impl Default for Codes {
    fn default() -> Self {
        Codes {
            access: AccessCodes::default(),
            reject_code: 554,
            defer_code: 450,
            unknown_client_reject_code: 450,
            unknown_hostname_reject_code: 450,
            unknown_address_reject_code: 450,
            invalid_hostname_reject_code: 501,
            non_fqdn_reject_code: 504,
            relay_domains_reject_code: 554,
            unknown_virtual_mailbox_reject_code: 550,
            unknown_virtual_alias_reject_code: 550,
            unknown_helo_hostname_tempfail_action: TempfailAction::DeferIfPermit,
            unknown_address_tempfail_action: TempfailAction::DeferIfPermit,
        }
    }
}

/// Facts about the site that rules read.
#[derive(Debug, Clone)]
pub struct Site {
    /// `mynetworks`: the only trusted client networks.
    pub mynetworks: Vec<IpNet>,
    /// `recipient_delimiter`: characters that start an address extension.
    pub recipient_delimiter: String,
    /// Whether `smtpd_access_maps` is in `parent_domain_matches_subdomains`
    /// (Postfix default: yes), i.e. `example.com` in an access table also
    /// matches its subdomains.
    pub access_subdomains: bool,
    /// `smtpd_null_access_lookup_key`, default `<>`.
    pub null_access_key: String,
    pub codes: Codes,
    /// Our final destinations (Postfix virtual_mailbox_domains), lowercase.
    pub domains: HashSet<String>,
    /// Postfix `$myorigin`: the domain an unqualified sender is taken to
    /// be in (default: the first of `domains`).
    pub myorigin: String,
    /// Domains we relay to (Postfix relay_domains; subdomains match too).
    pub relay_domains: Vec<String>,
    /// Mailboxes and aliases of our domains.
    pub addresses: Addresses,
    /// `[spf]`: how check_spf judges.
    pub spf: SpfSettings,
    /// Who owns which sender address (smtpd_sender_login_maps); `None`
    /// when not configured.
    pub logins: Option<LoginMap>,
    /// Registered foreign sender addresses.
    pub foreign_senders: Vec<ForeignSender>,
    /// Our public sending addresses, for check_outbound_spf.
    pub egress: Vec<std::net::IpAddr>,
    /// What check_outbound_spf does per SPF result.
    pub outbound_spf: ResultActions,
}

/// A foreign address a login may send as, relayed through its own
/// provider's submission server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSender {
    pub address: String,
    pub login: String,
    pub relay: String,
}

impl Site {
    /// The sender as Postfix's own sender checks see it (trivial-rewrite
    /// before smtpd_sender_login_maps): an address without a domain is in
    /// `$myorigin`, and a trailing dot names the same domain. The null
    /// sender stays null.
    pub fn qualified_sender<'s>(&self, sender: &'s str) -> std::borrow::Cow<'s, str> {
        use std::borrow::Cow;
        if sender.is_empty() {
            return Cow::Borrowed(sender);
        }
        match sender.rsplit_once('@') {
            None if self.myorigin.is_empty() => Cow::Borrowed(sender),
            None => Cow::Owned(format!("{sender}@{}", self.myorigin)),
            Some((local, domain)) if domain.ends_with('.') => {
                Cow::Owned(format!("{local}@{}", domain.trim_end_matches('.')))
            }
            Some(_) => Cow::Borrowed(sender),
        }
    }

    /// The registered foreign sender entry for `address`, if any.
    pub fn foreign_sender(&self, address: &str) -> Option<&ForeignSender> {
        self.foreign_senders
            .iter()
            .find(|f| f.address.eq_ignore_ascii_case(address))
    }
}

/// Outbound defaults: the sending server must never emit mail that fails
/// SPF at the receiver. fail, softfail and permerror reject; neutral and
/// none accept (no receiver rejects on those); temperror defers.
pub fn default_outbound_actions() -> ResultActions {
    ResultActions {
        pass: SpfAction::Accept,
        fail: SpfAction::Reject,
        softfail: SpfAction::Reject,
        neutral: SpfAction::Accept,
        none: SpfAction::Accept,
        temperror: SpfAction::Defer,
        permerror: SpfAction::Reject,
    }
}

impl Site {
    /// Whether `domain` is one of ours (a final destination).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.domains.contains(domain) || self.domains.contains(&domain.to_lowercase())
    }

    /// Whether mail to `domain` is authorized: ours, or a relay domain or
    /// one of its subdomains (Postfix's default
    /// parent_domain_matches_subdomains includes relay_domains).
    pub fn is_authorized_destination(&self, domain: &str) -> bool {
        if self.is_local_domain(domain) {
            return true;
        }
        let domain = domain.trim_end_matches('.').to_lowercase();
        self.relay_domains.iter().any(|r| {
            domain == *r
                || (domain.len() > r.len()
                    && domain.ends_with(r.as_str())
                    && domain.as_bytes()[domain.len() - r.len() - 1] == b'.')
        })
    }
}

impl Default for Site {
    fn default() -> Self {
        Site {
            mynetworks: Vec::new(),
            recipient_delimiter: String::new(),
            access_subdomains: true,
            null_access_key: "<>".into(),
            codes: Codes::default(),
            domains: HashSet::new(),
            myorigin: String::new(),
            relay_domains: Vec::new(),
            addresses: Addresses::default(),
            spf: SpfSettings::default(),
            logins: None,
            foreign_senders: Vec::new(),
            egress: Vec::new(),
            outbound_spf: default_outbound_actions(),
        }
    }
}

/// Which requests a profile serves. Unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub server_port: Option<u16>,
    pub policy_context: Option<String>,
}

impl Match {
    /// How specific a match is, or `None` if it does not match. A
    /// policy_context match outranks a port match: the context is the
    /// admin's explicit choice in main.cf/master.cf.
    pub fn score(&self, req: &Request) -> Option<u8> {
        let mut score = 0;
        if let Some(port) = self.server_port {
            if req.server_port.trim().parse::<u16>().ok() != Some(port) {
                return None;
            }
            score += 1;
        }
        if let Some(ctx) = &self.policy_context {
            if req.policy_context != *ctx {
                return None;
            }
            score += 2;
        }
        Some(score)
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.server_port, &self.policy_context) {
            (None, None) => f.write_str("default"),
            (Some(p), None) => write!(f, "server_port={p}"),
            (None, Some(c)) => write!(f, "policy_context={c}"),
            (Some(p), Some(c)) => write!(f, "server_port={p}, policy_context={c}"),
        }
    }
}

/// A rule with the text it was written as, for traces and logs.
#[derive(Debug)]
pub struct ChainRule {
    pub text: String,
    pub rule: Rule,
}

/// One profile: a match and four ordered rule lists.
#[derive(Debug)]
pub struct Profile {
    pub name: String,
    pub matcher: Match,
    /// The Postfix restriction list that calls this profile. A reply from
    /// another stage gets that stage's `<name>: <Class> rejected: ` in its
    /// text, so the client still learns what was refused.
    pub called_from: Stage,
    /// Postfix smtpd_helo_required: without HELO/EHLO the helo stage
    /// answers `503 5.5.1 Error: send HELO/EHLO first`.
    pub helo_required: bool,
    /// The chain sees no SASL attributes: on port 25 a client's AUTH must
    /// not change how it is judged.
    pub ignore_sasl: bool,
    pub stages: [Vec<ChainRule>; 4],
}

impl Profile {
    pub fn rules(&self, stage: Stage) -> &[ChainRule] {
        &self.stages[stage as usize]
    }
}

/// Everything a request is evaluated against.
#[derive(Debug)]
pub struct Policy {
    /// The config file this was loaded from.
    pub source: PathBuf,
    pub server: ServerSettings,
    pub site: Site,
    pub profiles: Vec<Profile>,
    /// `[dns]`: the resolver in the runtime state is built from it, and
    /// rebuilt when a reload changes it.
    pub dns_config: DnsConfig,
    /// Every file this policy was built from (config, tables, address
    /// lists), watched for changes.
    pub files: Vec<PathBuf>,
}

impl Policy {
    /// The most specific profile matching `req` (see [`Match::score`]).
    pub fn select(&self, req: &Request) -> Option<&Profile> {
        self.profiles
            .iter()
            .filter_map(|p| p.matcher.score(req).map(|s| (s, p)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_scores() {
        let req = Request::from_pairs([("server_port", "587"), ("policy_context", "submission")]);
        let port = Match {
            server_port: Some(587),
            policy_context: None,
        };
        let ctx = Match {
            server_port: None,
            policy_context: Some("submission".into()),
        };
        assert_eq!(Match::default().score(&req), Some(0));
        assert_eq!(port.score(&req), Some(1));
        assert_eq!(ctx.score(&req), Some(2));
        let other = Request::from_pairs([("server_port", "25")]);
        assert_eq!(port.score(&other), None);
        assert_eq!(ctx.score(&other), None);
    }
}
