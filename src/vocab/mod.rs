//! The words every rule speaks: the restriction stages, what a rule says
//! about a request ([`outcome::Outcome`]), the SMTP replies it makes
//! ([`reply::Reply`]), and the Postfix reply codes and tempfail actions
//! they use. Below rules/, tables/ and spf/; imports nothing of rpol but
//! the protocol's request and action.

pub mod outcome;
pub mod reply;

use std::fmt;

use crate::protocol::Request;
use outcome::AccessCodes;

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

/// What a failed store call means for the request (`on_store_error` of
/// `[greylist]` and of a `[[rate_limit]]`). The rule says what its
/// deferral is: greylisting's own (as for a greylisted triplet), a rate
/// limit's `451 4.3.0 Temporary lookup failure` (as Postfix's for a table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// The request goes on unchecked: mail never stops for the store.
    Dunno,
    /// The request is deferred.
    Defer,
}

impl OnStoreError {
    /// `"dunno"` or `"defer"`, as policy.toml writes it.
    pub fn parse(text: &str) -> Option<OnStoreError> {
        match text {
            "dunno" => Some(OnStoreError::Dunno),
            "defer" => Some(OnStoreError::Defer),
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
    /// `multi_recipient_bounce_reject_code`, default 550.
    pub multi_recipient_bounce_reject_code: u16,
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
            multi_recipient_bounce_reject_code: 550,
            unknown_helo_hostname_tempfail_action: TempfailAction::DeferIfPermit,
            unknown_address_tempfail_action: TempfailAction::DeferIfPermit,
        }
    }
}
