//! `[greylist]`: check_greylist's settings, with postgrey's option names,
//! compiled into the site facts (they are policy; the records are state).

use std::path::PathBuf;

use toml::Spanned;

use super::values::secs;
use super::{Compiler, schema};
use crate::dnsbl::score::Sites;
use crate::greylist::{DEFAULT_ACTION, GreylistAction, GreylistSettings};
use crate::tables::greylist::ParseError;
use crate::vocab::OnStoreError;
use crate::vocab::outcome::{AccessCodes, Outcome, parse_action};

/// Most passes `auto_whitelist_clients` may ask for.
const MAX_AUTO_WHITELIST: usize = 10_000;

impl Compiler<'_> {
    pub(super) fn greylist(
        &mut self,
        section: Option<Spanned<schema::GreylistSection>>,
        has_store: bool,
        codes: AccessCodes,
        dnsbl: Option<&Sites>,
        files: &mut Vec<PathBuf>,
    ) -> Option<GreylistSettings> {
        let section = section?;
        if !has_store {
            self.error(
                section.span(),
                "greylist",
                "needs a [store] for its records (backend = \"embedded\" or \"redis\")",
            );
        }
        let schema::GreylistSection {
            delay,
            max_age,
            retry_window,
            ipv4_prefix,
            ipv6_prefix,
            auto_whitelist_clients,
            whitelist_clients,
            whitelist_recipients,
            action,
            header,
            skip_spf_pass,
            skip_fcrdns_match,
            on_store_error,
            min_dnsbl_score,
            skip_dnswl,
            privacy,
        } = section.into_inner();
        // Where a delay that leaves no room to retry is reported.
        let delay_span = delay.as_ref().or(retry_window.as_ref()).map(|v| v.span());
        let mut out = GreylistSettings {
            hostname: crate::spf::hostname(),
            ..GreylistSettings::default()
        };
        self.duration(
            delay,
            "greylist.delay",
            secs(1)..=secs(86_400),
            &mut out.delay,
        );
        self.duration(
            max_age,
            "greylist.max_age",
            secs(3_600)..=secs(3_650 * 86_400),
            &mut out.max_age,
        );
        self.duration(
            retry_window,
            "greylist.retry_window",
            secs(60)..=secs(365 * 86_400),
            &mut out.retry_window,
        );
        if out.delay >= out.retry_window {
            // postgrey passes a retry after delay and before retry_window:
            // no such retry exists, so every new sender is deferred for good.
            self.error(
                delay_span.unwrap_or(0..0),
                "greylist.delay",
                format!(
                    "must be shorter than retry_window ({}s): no retry could ever pass",
                    out.retry_window.as_secs()
                ),
            );
        }
        for (value, key, range, slot) in [
            (
                ipv4_prefix,
                "greylist.ipv4_prefix",
                8..=32,
                &mut out.ipv4_prefix,
            ),
            (
                ipv6_prefix,
                "greylist.ipv6_prefix",
                16..=128,
                &mut out.ipv6_prefix,
            ),
        ] {
            let mut n = usize::from(*slot);
            self.count(
                value.map(|v| Spanned::new(v.span(), usize::from(*v.get_ref()))),
                key,
                range,
                &mut n,
            );
            *slot = n as u8;
        }
        let mut n = out.auto_whitelist_clients as usize;
        self.count(
            auto_whitelist_clients.map(|v| {
                Spanned::new(
                    v.span(),
                    usize::try_from(*v.get_ref()).unwrap_or(usize::MAX),
                )
            }),
            "greylist.auto_whitelist_clients",
            0..=MAX_AUTO_WHITELIST,
            &mut n,
        );
        out.auto_whitelist_clients = n as u64;
        for path in whitelist_clients.unwrap_or_default() {
            let list = &mut out.whitelist_clients;
            self.whitelist_file(path, "greylist.whitelist_clients", files, |t| list.parse(t));
        }
        for path in whitelist_recipients.unwrap_or_default() {
            let list = &mut out.whitelist_recipients;
            self.whitelist_file(path, "greylist.whitelist_recipients", files, |t| {
                list.parse(t)
            });
        }
        let action_text = action.as_ref().map_or(DEFAULT_ACTION, |a| a.get_ref());
        match parse_action(action_text, codes) {
            Ok(Outcome::DeferIfPermit(reply)) => {
                out.action = GreylistAction {
                    defer_if_permit: true,
                    reply,
                }
            }
            Ok(Outcome::Reject(reply)) if reply.is_temporary() => {
                out.action = GreylistAction {
                    defer_if_permit: false,
                    reply,
                }
            }
            _ => self.error(
                action.as_ref().map_or(0..0, |a| a.span()),
                "greylist.action",
                "must be DEFER_IF_PERMIT, DEFER or a 4xx reply, with optional text",
            ),
        }
        if let Some(h) = header {
            let text = h.get_ref().trim();
            let name_ok = text.split_once(':').is_some_and(|(name, _)| {
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            });
            if text.is_empty() || (name_ok && !text.contains(['\n', '\r'])) {
                out.header = text.to_string();
            } else {
                self.error(
                    h.span(),
                    "greylist.header",
                    "must be one line \"Name: text\", or empty for no header",
                );
            }
        }
        out.skip_spf_pass = skip_spf_pass.unwrap_or(out.skip_spf_pass);
        out.skip_fcrdns_match = skip_fcrdns_match.unwrap_or(out.skip_fcrdns_match);
        out.privacy = privacy.unwrap_or(out.privacy);
        if let Some(v) = on_store_error {
            match OnStoreError::parse(v.get_ref()) {
                Some(on_error) => out.on_store_error = on_error,
                None => self.error(
                    v.span(),
                    "greylist.on_store_error",
                    "expected \"dunno\" or \"defer\"",
                ),
            }
        }
        if let Some(v) = min_dnsbl_score {
            if dnsbl.is_none() {
                self.error(
                    v.span(),
                    "greylist.min_dnsbl_score",
                    "needs [dnsbl] sites: the lists that score the client",
                );
            }
            out.min_dnsbl_score = Some(*v.get_ref());
        }
        if let Some(v) = skip_dnswl {
            match dnsbl {
                None => self.error(
                    v.span(),
                    "greylist.skip_dnswl",
                    "needs [dnsbl] sites: the lists that score the client",
                ),
                Some(sites) if *v.get_ref() && sites.allowlist_threshold == 0 => self.error(
                    v.span(),
                    "greylist.skip_dnswl",
                    "needs [dnsbl] allowlist_threshold (below 0): no score is an allowlisting without it",
                ),
                Some(_) => {}
            }
            out.skip_dnswl = *v.get_ref();
        }
        Some(out)
    }

    /// Reads one whitelist file into a list; the file is watched.
    fn whitelist_file(
        &mut self,
        path: Spanned<String>,
        key: &str,
        files: &mut Vec<PathBuf>,
        parse: impl FnOnce(&str) -> Result<(), ParseError>,
    ) {
        let full = self.base.join(path.get_ref());
        match std::fs::read_to_string(&full) {
            Ok(text) => {
                if let Err((line, msg)) = parse(&text) {
                    self.error(
                        path.span(),
                        key,
                        format!("{}:{line}: {msg}", full.display()),
                    );
                }
            }
            Err(e) => self.error(
                path.span(),
                key,
                format!("{}: cannot read: {e}", full.display()),
            ),
        }
        files.push(full);
    }
}
