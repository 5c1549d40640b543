//! `[dnsbl]` and the DNS-list parameters of `[postfix]`
//! (`maps_rbl_reject_code`, `default_rbl_reply`): the replies of
//! reject_rbl_client and its kin, and the lists' probes, circuit breaker
//! and egress watch, compiled into the site facts.

use std::collections::BTreeMap;

use toml::Spanned;

use super::values::secs;
use super::{Compiler, schema};
use crate::dnsbl::health::Settings;
use crate::dnsbl::{Name, Replies, Template};

impl Compiler<'_> {
    pub(super) fn dnsbl(
        &mut self,
        section: schema::DnsblSection,
        code: u16,
        default: Template,
    ) -> (Replies, Settings) {
        let schema::DnsblSection {
            reply,
            probe,
            probe_interval,
            watch_egress,
            watch_interval,
            timeout_pause,
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
        (replies, health)
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
