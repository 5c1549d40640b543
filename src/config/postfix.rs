//! `[postfix]`: the main.cf parameters rpol reproduces (reply codes,
//! tempfail actions, how access tables match), checked as Postfix would
//! and compiled into what the site carries.

use toml::Spanned;

use super::{Compiler, schema};
use crate::vocab::outcome::AccessCodes;
use crate::vocab::{Codes, TempfailAction};

/// `[postfix]`, compiled: the parts of [`crate::site::Site`] it sets.
pub(super) struct Postfix {
    pub codes: Codes,
    /// Whether `smtpd_access_maps` is in `parent_domain_matches_subdomains`.
    pub access_subdomains: bool,
    /// `smtpd_null_access_lookup_key`.
    pub null_access_key: String,
    /// `maps_rbl_reject_code`.
    pub rbl_code: u16,
    /// `default_rbl_reply`, compiled.
    pub default_rbl_reply: crate::dnsbl::Template,
}

/// First digits a reply code may have: `reject` must reject, `defer` must
/// defer; the `unknown_*` codes are 4xx or 5xx as the admin chooses.
const REJECT: &[u16] = &[5];
const DEFER: &[u16] = &[4];
const ANY: &[u16] = &[4, 5];

impl Compiler<'_> {
    pub(super) fn postfix(&mut self, p: schema::PostfixSection) -> Postfix {
        let schema::PostfixSection {
            access_map_reject_code,
            access_map_defer_code,
            reject_code,
            defer_code,
            unknown_client_reject_code,
            unknown_hostname_reject_code,
            unknown_address_reject_code,
            invalid_hostname_reject_code,
            non_fqdn_reject_code,
            relay_domains_reject_code,
            unknown_virtual_mailbox_reject_code,
            unknown_virtual_alias_reject_code,
            multi_recipient_bounce_reject_code,
            reject_tempfail_action,
            unknown_helo_hostname_tempfail_action,
            unknown_address_tempfail_action,
            parent_domain_matches_subdomains,
            smtpd_null_access_lookup_key,
            maps_rbl_reject_code,
            default_rbl_reply,
        } = p;
        let rbl_code = self.reply_code(maps_rbl_reject_code, "maps_rbl_reject_code", ANY);
        let default_rbl_reply = self
            .rbl_template(default_rbl_reply, "postfix.default_rbl_reply", rbl_code)
            .unwrap_or_else(|| crate::dnsbl::Replies::default().default);
        // Unset, the two specific actions are $reject_tempfail_action.
        let base = self.tempfail(reject_tempfail_action, "reject_tempfail_action");
        let unknown_helo_hostname_tempfail_action = match unknown_helo_hostname_tempfail_action {
            Some(v) => self.tempfail(v, "unknown_helo_hostname_tempfail_action"),
            None => base,
        };
        let unknown_address_tempfail_action = match unknown_address_tempfail_action {
            Some(v) => self.tempfail(v, "unknown_address_tempfail_action"),
            None => base,
        };
        let codes = Codes {
            access: AccessCodes {
                reject: self.reply_code(access_map_reject_code, "access_map_reject_code", REJECT),
                defer: self.reply_code(access_map_defer_code, "access_map_defer_code", DEFER),
            },
            reject_code: self.reply_code(reject_code, "reject_code", REJECT),
            defer_code: self.reply_code(defer_code, "defer_code", DEFER),
            unknown_client_reject_code: self.reply_code(
                unknown_client_reject_code,
                "unknown_client_reject_code",
                ANY,
            ),
            unknown_hostname_reject_code: self.reply_code(
                unknown_hostname_reject_code,
                "unknown_hostname_reject_code",
                ANY,
            ),
            unknown_address_reject_code: self.reply_code(
                unknown_address_reject_code,
                "unknown_address_reject_code",
                ANY,
            ),
            invalid_hostname_reject_code: self.reply_code(
                invalid_hostname_reject_code,
                "invalid_hostname_reject_code",
                ANY,
            ),
            non_fqdn_reject_code: self.reply_code(
                non_fqdn_reject_code,
                "non_fqdn_reject_code",
                ANY,
            ),
            relay_domains_reject_code: self.reply_code(
                relay_domains_reject_code,
                "relay_domains_reject_code",
                REJECT,
            ),
            unknown_virtual_mailbox_reject_code: self.reply_code(
                unknown_virtual_mailbox_reject_code,
                "unknown_virtual_mailbox_reject_code",
                ANY,
            ),
            unknown_virtual_alias_reject_code: self.reply_code(
                unknown_virtual_alias_reject_code,
                "unknown_virtual_alias_reject_code",
                ANY,
            ),
            multi_recipient_bounce_reject_code: self.reply_code(
                multi_recipient_bounce_reject_code,
                "multi_recipient_bounce_reject_code",
                ANY,
            ),
            unknown_helo_hostname_tempfail_action,
            unknown_address_tempfail_action,
        };
        Postfix {
            codes,
            access_subdomains: parent_domain_matches_subdomains
                .iter()
                .any(|s| s == "smtpd_access_maps"),
            null_access_key: smtpd_null_access_lookup_key,
            rbl_code,
            default_rbl_reply,
        }
    }

    /// A reply code whose first digit is one of `classes`.
    fn reply_code(&mut self, v: Spanned<u16>, key: &str, classes: &[u16]) -> u16 {
        let c = *v.get_ref();
        if !classes.contains(&(c / 100)) {
            let want = if classes.len() == 1 {
                format!("a {}xx code", classes[0])
            } else {
                "a 4xx or 5xx code".to_string()
            };
            self.error(
                v.span(),
                &format!("postfix.{key}"),
                format!("must be {want}"),
            );
        }
        c
    }

    fn tempfail(&mut self, v: Spanned<String>, key: &str) -> TempfailAction {
        TempfailAction::parse(v.get_ref()).unwrap_or_else(|| {
            self.error(
                v.span(),
                &format!("postfix.{key}"),
                "expected \"defer_if_permit\" or \"defer\"",
            );
            TempfailAction::DeferIfPermit
        })
    }
}
