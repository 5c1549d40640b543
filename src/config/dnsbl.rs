//! `[dnsbl]` and the DNS-list parameters of `[postfix]`
//! (`maps_rbl_reject_code`, `default_rbl_reply`): the replies of
//! reject_rbl_client and its kin, the weighted sites of check_dnsbl_score
//! (postscreen_dnsbl_*), and the lists' probes, circuit breaker and
//! egress watch, compiled into the site facts.

use std::collections::BTreeMap;

use toml::Spanned;

use super::values::secs;
use super::{Compiler, schema};
use crate::dnsbl::health::Settings;
use crate::dnsbl::score::Sites;
use crate::dnsbl::{Name, Replies, Template};

/// Most `[dnsbl] sites`: each is a query per client.
const MAX_SITES: usize = 32;
/// Largest threshold or weight written (postscreen takes an int).
const MAX_SCORE: i64 = 1_000_000;

impl Compiler<'_> {
    pub(super) fn dnsbl(
        &mut self,
        section: schema::DnsblSection,
        code: u16,
        default: Template,
    ) -> (Replies, Settings, Option<Sites>) {
        let schema::DnsblSection {
            reply,
            probe,
            probe_interval,
            watch_egress,
            watch_interval,
            timeout_pause,
            sites,
            threshold,
            allowlist_threshold,
            min_ttl,
            max_ttl,
        } = section;
        let health = self.dnsbl_health_settings(
            probe,
            probe_interval,
            watch_egress,
            watch_interval,
            timeout_pause,
        );
        let replies = Replies {
            code,
            default,
            by_list: self.rbl_reply_maps(reply, code),
        };
        let sites = self.dnsbl_sites(sites, threshold, allowlist_threshold, min_ttl, max_ttl);
        (replies, health, sites)
    }

    /// `[dnsbl] probe`, `probe_interval`, `watch_egress`,
    /// `watch_interval`, `timeout_pause`.
    fn dnsbl_health_settings(
        &mut self,
        probe: Option<bool>,
        probe_interval: Option<Spanned<String>>,
        watch_egress: Option<bool>,
        watch_interval: Option<Spanned<String>>,
        timeout_pause: Option<Spanned<String>>,
    ) -> Settings {
        let mut s = Settings {
            probe: probe.unwrap_or(true),
            watch_egress: watch_egress.unwrap_or(true),
            ..Settings::default()
        };
        // At least a second between rounds (tests use that); at most a day.
        let range = secs(1)..=secs(86_400);
        self.duration(
            probe_interval,
            "dnsbl.probe_interval",
            range.clone(),
            &mut s.probe_every,
        );
        self.duration(
            watch_interval,
            "dnsbl.watch_interval",
            range.clone(),
            &mut s.watch_every,
        );
        self.duration(
            timeout_pause,
            "dnsbl.timeout_pause",
            range,
            &mut s.timeout_pause,
        );
        s
    }

    /// postscreen_dnsbl_sites and its companions; `None` without sites
    /// (a companion written without them is an error: it would do nothing).
    fn dnsbl_sites(
        &mut self,
        sites: Option<Spanned<Vec<Spanned<String>>>>,
        threshold: Option<Spanned<i64>>,
        allowlist_threshold: Option<Spanned<i64>>,
        min_ttl: Option<Spanned<String>>,
        max_ttl: Option<Spanned<String>>,
    ) -> Option<Sites> {
        let Some(sites) = sites.filter(|s| !s.get_ref().is_empty()) else {
            let spans = [
                ("dnsbl.threshold", threshold.map(|v| v.span())),
                (
                    "dnsbl.allowlist_threshold",
                    allowlist_threshold.map(|v| v.span()),
                ),
                ("dnsbl.min_ttl", min_ttl.map(|v| v.span())),
                ("dnsbl.max_ttl", max_ttl.map(|v| v.span())),
            ];
            for (key, span) in spans {
                if let Some(span) = span {
                    self.error(span, key, "needs [dnsbl] sites: the lists it scores with");
                }
            }
            return None;
        };
        let span = sites.span();
        let entries = sites.into_inner();
        if entries.len() > MAX_SITES {
            self.error(
                span,
                "dnsbl.sites",
                format!("must be at most {MAX_SITES} sites"),
            );
            return None;
        }
        let texts: Vec<&str> = entries.iter().map(|e| e.get_ref().as_str()).collect();
        let mut out = match Sites::parse(&texts) {
            Ok(out) => out,
            Err((i, e)) => {
                self.error(entries[i].span(), "dnsbl.sites", e);
                return None;
            }
        };
        if let Some(site) = entries
            .iter()
            .zip(&out.sites)
            .find(|(_, s)| s.weight.abs() > MAX_SCORE)
        {
            self.error(
                site.0.span(),
                "dnsbl.sites",
                format!("a weight must be between -{MAX_SCORE} and {MAX_SCORE}"),
            );
        }
        if let Some(t) = threshold {
            // postscreen refuses a threshold below 1: every client would
            // be listed.
            match *t.get_ref() {
                n @ 1..=MAX_SCORE => out.threshold = n,
                _ => self.error(
                    t.span(),
                    "dnsbl.threshold",
                    format!("must be between 1 and {MAX_SCORE}"),
                ),
            }
        }
        if let Some(t) = allowlist_threshold {
            // Only a negative threshold allowlists (postscreen_early.c).
            match *t.get_ref() {
                n if (-MAX_SCORE..=0).contains(&n) => out.allowlist_threshold = n,
                _ => self.error(
                    t.span(),
                    "dnsbl.allowlist_threshold",
                    format!(
                        "must be between -{MAX_SCORE} and 0 (0: off; a client at or below it is allowlisted)"
                    ),
                ),
            }
        }
        let max_span = max_ttl.as_ref().map(|v| v.span());
        self.duration(
            min_ttl,
            "dnsbl.min_ttl",
            secs(0)..=secs(86_400),
            &mut out.min_ttl,
        );
        self.duration(
            max_ttl,
            "dnsbl.max_ttl",
            secs(1)..=secs(7 * 86_400),
            &mut out.max_ttl,
        );
        if out.min_ttl > out.max_ttl {
            self.error(
                max_span.unwrap_or(span),
                "dnsbl.max_ttl",
                format!("must not be less than min_ttl ({}s)", out.min_ttl.as_secs()),
            );
        }
        Some(out)
    }

    fn rbl_reply_maps(
        &mut self,
        maps: BTreeMap<String, Spanned<String>>,
        code: u16,
    ) -> std::collections::HashMap<String, Template> {
        let mut out = std::collections::HashMap::new();
        for (list, text) in maps {
            let key = format!("dnsbl.reply.{list}");
            if let Some(t) = self.rbl_template(text, &key, code) {
                out.insert(list.to_ascii_lowercase(), t);
            }
        }
        out
    }

    /// A reply template, refused when it does not parse or does not expand
    /// to a 4xx or 5xx reply (Postfix warns at the first listing and
    /// answers `450 4.7.1 Service unavailable` instead).
    pub(super) fn rbl_template(
        &mut self,
        text: Spanned<String>,
        key: &str,
        code: u16,
    ) -> Option<Template> {
        let template = match Template::parse(text.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                self.error(text.span(), key, e);
                return None;
            }
        };
        let code = code.to_string();
        let sample = template.expand(&|name| match name {
            Name::Code => code.clone(),
            _ => "x".into(),
        });
        let b = sample.as_bytes();
        let valid = b.len() >= 4
            && matches!(b[0], b'4' | b'5')
            && b[1..3].iter().all(u8::is_ascii_digit)
            && b[3] == b' ';
        if !valid {
            self.error(
                text.span(),
                key,
                format!(
                    "must expand to a 4xx or 5xx code, a space and text (as \"$rbl_code Service unavailable; ...\"), not {sample:?}"
                ),
            );
            return None;
        }
        Some(template)
    }
}
