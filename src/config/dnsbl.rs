//! `[dnsbl]` and the DNS-list parameters of `[postfix]`
//! (`maps_rbl_reject_code`, `default_rbl_reply`): the replies of
//! reject_rbl_client and its kin, compiled into the site facts.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{Compiler, schema};
use crate::dnsbl::{Name, Replies, Template};

impl Compiler<'_> {
    pub(super) fn dnsbl(
        &mut self,
        section: schema::DnsblSection,
        code: u16,
        default: Template,
    ) -> Replies {
        let schema::DnsblSection { reply } = section;
        Replies {
            code,
            default,
            by_list: self.rbl_reply_maps(reply, code),
        }
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
