//! `[postfix]`: the main.cf parameters rpol reproduces (reply codes,
//! tempfail actions), checked against the code classes Postfix allows.

use toml::Spanned;

use super::{Compiler, schema};
use crate::vocab::outcome::AccessCodes;
use crate::vocab::{Codes, TempfailAction};

impl Compiler<'_> {
    pub(super) fn codes(&mut self, p: &schema::PostfixSection) -> Codes {
        // (value, key, allowed first digits)
        let mut code = |v: &Spanned<u16>, key: &str, classes: &[u16]| -> u16 {
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
        };
        let any = &[4, 5][..];
        let codes = Codes {
            access: AccessCodes {
                reject: code(&p.access_map_reject_code, "access_map_reject_code", &[5]),
                defer: code(&p.access_map_defer_code, "access_map_defer_code", &[4]),
            },
            reject_code: code(&p.reject_code, "reject_code", &[5]),
            defer_code: code(&p.defer_code, "defer_code", &[4]),
            unknown_client_reject_code: code(
                &p.unknown_client_reject_code,
                "unknown_client_reject_code",
                any,
            ),
            unknown_hostname_reject_code: code(
                &p.unknown_hostname_reject_code,
                "unknown_hostname_reject_code",
                any,
            ),
            unknown_address_reject_code: code(
                &p.unknown_address_reject_code,
                "unknown_address_reject_code",
                any,
            ),
            invalid_hostname_reject_code: code(
                &p.invalid_hostname_reject_code,
                "invalid_hostname_reject_code",
                any,
            ),
            non_fqdn_reject_code: code(&p.non_fqdn_reject_code, "non_fqdn_reject_code", any),
            relay_domains_reject_code: code(
                &p.relay_domains_reject_code,
                "relay_domains_reject_code",
                &[5],
            ),
            unknown_virtual_mailbox_reject_code: code(
                &p.unknown_virtual_mailbox_reject_code,
                "unknown_virtual_mailbox_reject_code",
                any,
            ),
            unknown_virtual_alias_reject_code: code(
                &p.unknown_virtual_alias_reject_code,
                "unknown_virtual_alias_reject_code",
                any,
            ),
            unknown_helo_hostname_tempfail_action: TempfailAction::DeferIfPermit,
            unknown_address_tempfail_action: TempfailAction::DeferIfPermit,
        };
        let base = self.tempfail(&p.reject_tempfail_action, "reject_tempfail_action");
        let inherit = |cx: &mut Self, v: &Option<Spanned<String>>, key: &str| match v {
            Some(v) => cx.tempfail(v, key),
            None => base,
        };
        Codes {
            unknown_helo_hostname_tempfail_action: inherit(
                self,
                &p.unknown_helo_hostname_tempfail_action,
                "unknown_helo_hostname_tempfail_action",
            ),
            unknown_address_tempfail_action: inherit(
                self,
                &p.unknown_address_tempfail_action,
                "unknown_address_tempfail_action",
            ),
            ..codes
        }
    }

    pub(super) fn tempfail(&mut self, v: &Spanned<String>, key: &str) -> TempfailAction {
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
