//! `[spf]` with `[spf.mail_from]` and `[spf.helo]` (how check_spf judges
//! and acts), and `[outbound_spf]` (how check_outbound_spf acts).

use std::path::PathBuf;

use super::values::{millis, secs};
use super::{Compiler, schema};
use crate::spf::dmarc::SuffixList;
use crate::spf::{HeaderKind, ResultActions, SpfAction, SpfSettings, Whitelist};

impl Compiler<'_> {
    pub(super) fn spf(&mut self, s: schema::SpfSection, files: &mut Vec<PathBuf>) -> SpfSettings {
        let schema::SpfSection {
            check_helo,
            receiver,
            header,
            authserv_id,
            skip_mynetworks,
            skip_authenticated,
            whitelist,
            timeout,
            cache_ttl,
            cache_size,
            public_suffix_list,
            mail_from,
            helo,
        } = s;
        let mut out = SpfSettings::default();
        if let Some(v) = check_helo {
            out.check_helo = v;
        }
        if let Some(r) = receiver {
            out.authserv_id = r.clone();
            out.receiver = r;
        }
        if let Some(a) = authserv_id {
            out.authserv_id = a;
        }
        if let Some(h) = header {
            out.header = match h.get_ref().as_str() {
                "received-spf" => HeaderKind::ReceivedSpf,
                "authentication-results" => HeaderKind::AuthenticationResults,
                "none" => HeaderKind::None,
                _ => {
                    self.error(
                        h.span(),
                        "spf.header",
                        "expected \"received-spf\", \"authentication-results\" or \"none\"",
                    );
                    HeaderKind::ReceivedSpf
                }
            };
        }
        if let Some(v) = skip_mynetworks {
            out.skip_mynetworks = v;
        }
        if let Some(v) = skip_authenticated {
            out.skip_authenticated = v;
        }
        if let Some(w) = whitelist {
            let path = self.base.join(w.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(text) => match Whitelist::parse(&text) {
                    Ok(list) => out.whitelist = list,
                    Err((line, msg)) => self.error(
                        w.span(),
                        "spf.whitelist",
                        format!("{}:{line}: {msg}", path.display()),
                    ),
                },
                Err(e) => self.error(
                    w.span(),
                    "spf.whitelist",
                    format!("{}: cannot read: {e}", path.display()),
                ),
            }
            files.push(path);
        }
        // RFC 7208 4.6.4 asks for at least 20 s; tests use less.
        self.duration(
            timeout,
            "spf.timeout",
            millis(100)..=secs(300),
            &mut out.timeout,
        );
        self.duration(
            cache_ttl,
            "spf.cache_ttl",
            secs(0)..=secs(86_400),
            &mut out.cache_ttl,
        );
        self.count(
            cache_size,
            "spf.cache_size",
            1..=10_000_000,
            &mut out.cache_size,
        );
        if let Some(p) = public_suffix_list {
            let path = self.base.join(p.get_ref());
            let key = "spf.public_suffix_list";
            match std::fs::read_to_string(&path) {
                Ok(text) => match SuffixList::parse(&text) {
                    Ok(list) => out.public_suffix_list = list,
                    Err(msg) => self.error(p.span(), key, format!("{}: {msg}", path.display())),
                },
                Err(e) => self.error(
                    p.span(),
                    key,
                    format!("{}: cannot read: {e}", path.display()),
                ),
            }
            // Reloaded when the file changes (an update of the list).
            files.push(path);
        }
        if let Some(a) = mail_from {
            let schema::SpfMailFromSection {
                pass,
                fail,
                softfail,
                neutral,
                none,
                temperror,
                permerror,
                reject_not_pass_domains,
            } = a;
            let actions = schema::SpfActionsSection {
                pass,
                fail,
                softfail,
                neutral,
                none,
                temperror,
                permerror,
            };
            out.mail_from = self.spf_actions(actions, "spf.mail_from", out.mail_from);
            out.reject_not_pass_domains = self.ascii_domains(
                reject_not_pass_domains,
                "spf.mail_from.reject_not_pass_domains",
            );
        }
        if let Some(a) = helo {
            out.helo = self.spf_actions(a, "spf.helo", out.helo);
        }
        out
    }

    /// Domain names as SPF checks them (lowercase A-labels, no trailing
    /// dot: `Bücher.Example.` is `xn--bcher-kva.example`), sorted, each once.
    fn ascii_domains(&mut self, list: Vec<toml::Spanned<String>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for d in list {
            match crate::spf::ascii_domain(d.get_ref().trim()) {
                Some(name) => out.push(name),
                None => self.error(
                    d.span(),
                    key,
                    format!("{:?} is not a valid domain name", d.get_ref()),
                ),
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `[outbound_spf]`: what check_outbound_spf does per result.
    pub(super) fn outbound_spf(&mut self, a: schema::SpfActionsSection) -> ResultActions {
        self.spf_actions(a, "outbound_spf", crate::site::default_outbound_actions())
    }

    /// A table of actions per SPF result, over `out`'s defaults.
    fn spf_actions(
        &mut self,
        a: schema::SpfActionsSection,
        section: &str,
        mut out: ResultActions,
    ) -> ResultActions {
        let schema::SpfActionsSection {
            pass,
            fail,
            softfail,
            neutral,
            none,
            temperror,
            permerror,
        } = a;
        // Only a MAIL FROM fail or softfail may wait for DMARC: the
        // results forwarding breaks (RFC 7489 10.1), of the identity DMARC
        // aligns (4.1).
        let dmarc_keys: &[&str] = if section == "spf.mail_from" {
            &["fail", "softfail"]
        } else {
            &[]
        };
        for (value, name, slot) in [
            (pass, "pass", &mut out.pass),
            (fail, "fail", &mut out.fail),
            (softfail, "softfail", &mut out.softfail),
            (neutral, "neutral", &mut out.neutral),
            (none, "none", &mut out.none),
            (temperror, "temperror", &mut out.temperror),
            (permerror, "permerror", &mut out.permerror),
        ] {
            if let Some(v) = value {
                match SpfAction::parse(v.get_ref()) {
                    Some(SpfAction::RejectUnlessDmarc) if !dmarc_keys.contains(&name) => self
                        .error(
                            v.span(),
                            &format!("{section}.{name}"),
                            "\"reject_unless_dmarc\" is only for [spf.mail_from] fail and softfail",
                        ),
                    Some(action) => *slot = action,
                    None if dmarc_keys.contains(&name) => self.error(
                        v.span(),
                        &format!("{section}.{name}"),
                        "expected \"accept\", \"reject\", \"reject_unless_dmarc\", \"defer\" \
                         or \"defer_if_permit\"",
                    ),
                    None => self.error(
                        v.span(),
                        &format!("{section}.{name}"),
                        "expected \"accept\", \"reject\", \"defer\" or \"defer_if_permit\"",
                    ),
                }
            }
        }
        out
    }
}
