//! The site facts rules read: trusted networks, our domains and
//! addresses, who owns which sender, our egress, and the SPF settings.
//! Compiled from policy.toml into the [`crate::policy::Policy`].

use std::collections::HashSet;

use foldhash::fast::RandomState as FastHash;

use ipnet::IpNet;

use crate::greylist::GreylistSettings;
use crate::spf::{ResultActions, SpfAction, SpfSettings};
use crate::tables::addresses::Addresses;
use crate::tables::logins::LoginMap;
use crate::vocab::Codes;

/// Names the admin wrote, looked up with names clients send. foldhash
/// rather than SipHash: only the admin's names are ever inserted, so no
/// client can crowd a bucket, and a lookup runs several times per request.
pub type NameSet = HashSet<String, FastHash>;

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
    pub domains: NameSet,
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
    /// `[greylist]`: how check_greylist judges; `None` without the table.
    pub greylist: Option<GreylistSettings>,
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
        match crate::syntax::split_address(sender) {
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
        let domain = crate::syntax::lowercase(domain.trim_end_matches('.'));
        self.domains.contains(&*domain)
    }

    /// Whether mail to `domain` is authorized: ours, or a relay domain or
    /// one of its subdomains (Postfix's default
    /// parent_domain_matches_subdomains includes relay_domains).
    pub fn is_authorized_destination(&self, domain: &str) -> bool {
        if self.is_local_domain(domain) {
            return true;
        }
        let domain = crate::syntax::lowercase(domain.trim_end_matches('.'));
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
            domains: NameSet::default(),
            myorigin: String::new(),
            relay_domains: Vec::new(),
            addresses: Addresses::default(),
            spf: SpfSettings::default(),
            logins: None,
            foreign_senders: Vec::new(),
            egress: Vec::new(),
            outbound_spf: default_outbound_actions(),
            greylist: None,
        }
    }
}
