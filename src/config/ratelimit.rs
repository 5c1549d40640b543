//! `[[rate_limit]]`: named budgets, compiled into [`RateLimit`]s that
//! `check_rate_limit NAME` refers to. Every value is range-checked; a name
//! is unique, and a limit has at least one budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::values::secs;
use super::{Compiler, schema};
use crate::rules::ratelimit::{KeyKind, LimitAction, RateLimit};
use crate::vocab::OnStoreError;

/// Longest limit name: it is a metrics label and part of the reply text.
const MAX_NAME: usize = 64;
/// Largest message or recipient budget per window.
const MAX_BUDGET: usize = 100_000_000;
/// Most distinct client networks a limit may allow: the record keeps one
/// more than this, so it bounds the record's size.
pub const MAX_DISTINCT_CLIENTS: usize = 100;
/// The shortest window: 12 slices of at least 5 s.
const MIN_WINDOW: Duration = secs(60);
/// The longest window: a week.
const MAX_WINDOW: Duration = secs(7 * 86400);

impl Compiler<'_> {
    pub(super) fn rate_limits(
        &mut self,
        sections: Vec<Spanned<schema::RateLimitSection>>,
    ) -> HashMap<String, Arc<RateLimit>> {
        let mut out = HashMap::new();
        for (i, section) in sections.into_iter().enumerate() {
            let span = section.span();
            let at = |key: &str| format!("rate_limit.{i}.{key}");
            let schema::RateLimitSection {
                name,
                key,
                messages,
                recipients,
                distinct_clients,
                window,
                action,
                on_store_error,
            } = section.into_inner();
            let Some(name) = name else {
                self.error(
                    span,
                    &at("name"),
                    "missing: every [[rate_limit]] needs a name",
                );
                continue;
            };
            let valid = !name.get_ref().is_empty()
                && name.get_ref().len() <= MAX_NAME
                && name
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !valid {
                self.error(
                    name.span(),
                    &at("name"),
                    format!("must be 1 to {MAX_NAME} letters, digits, '_', '-' or '.'"),
                );
                continue;
            }
            if out.contains_key(name.get_ref()) {
                self.error(
                    name.span(),
                    &at("name"),
                    format!(
                        "{:?} is already the name of a [[rate_limit]]",
                        name.get_ref()
                    ),
                );
                continue;
            }
            let kind = match &key {
                Some(k) => KeyKind::parse(k.get_ref()).or_else(|| {
                    self.error(
                        k.span(),
                        &at("key"),
                        "expected \"sasl_username\", \"client_address\" or \"sender\"",
                    );
                    None
                }),
                None => {
                    self.error(
                        span.clone(),
                        &at("key"),
                        "missing: sasl_username, client_address or sender",
                    );
                    None
                }
            };
            let mut budgets = [0usize; 3];
            let given = messages.is_some() || recipients.is_some() || distinct_clients.is_some();
            self.count(messages, &at("messages"), 1..=MAX_BUDGET, &mut budgets[0]);
            self.count(
                recipients,
                &at("recipients"),
                1..=MAX_BUDGET,
                &mut budgets[1],
            );
            self.count(
                distinct_clients,
                &at("distinct_clients"),
                1..=MAX_DISTINCT_CLIENTS,
                &mut budgets[2],
            );
            if !given {
                self.error(
                    span.clone(),
                    &at("messages"),
                    "a [[rate_limit]] needs messages, recipients and/or distinct_clients",
                );
            }
            let mut window_value = Duration::ZERO;
            let window_text = window.as_ref().map(|w| w.get_ref().trim().to_string());
            match window {
                Some(w) => self.duration(
                    Some(w),
                    &at("window"),
                    MIN_WINDOW..=MAX_WINDOW,
                    &mut window_value,
                ),
                None => self.error(span.clone(), &at("window"), "missing: e.g. \"1h\""),
            }
            let action = match action.as_ref().map(|a| a.get_ref().as_str()) {
                None | Some("defer") => LimitAction::Defer,
                Some("reject") => LimitAction::Reject,
                Some(_) => {
                    let a = action.as_ref().map_or(0..0, |a| a.span());
                    self.error(a, &at("action"), "expected \"defer\" or \"reject\"");
                    LimitAction::Defer
                }
            };
            let written = on_store_error.as_ref().map(|a| a.get_ref().as_str());
            let on_store_error = match written.map(OnStoreError::parse) {
                None => OnStoreError::Dunno,
                Some(Some(on_error)) => on_error,
                Some(None) => {
                    let a = on_store_error.as_ref().map_or(0..0, |a| a.span());
                    self.error(a, &at("on_store_error"), "expected \"dunno\" or \"defer\"");
                    OnStoreError::Dunno
                }
            };
            let (Some(key), Some(window_text)) = (kind, window_text) else {
                continue;
            };
            if window_value.is_zero() || !given {
                continue;
            }
            let name = name.into_inner();
            out.insert(
                name.clone(),
                Arc::new(RateLimit {
                    name,
                    key,
                    messages: budgets[0] as u64,
                    recipients: budgets[1] as u64,
                    distinct_clients: budgets[2] as u64,
                    window: window_value,
                    window_text,
                    action,
                    on_store_error,
                }),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn errors(text: &str) -> Vec<String> {
        match super::super::load_str(Path::new("p.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const STORE: &str = "[store]\npath = \"s.redb\"\n";
    const LIMIT: &str = "[[rate_limit]]\nname = \"per_login\"\nkey = \"sasl_username\"\nmessages = 2\nwindow = \"1h\"\n";

    #[test]
    fn a_good_limit_and_its_rule() {
        let text =
            format!("{STORE}{LIMIT}[profile.a]\nsender = [\"check_rate_limit per_login\"]\n");
        assert_eq!(errors(&text), Vec::<String>::new());
    }

    #[test]
    fn bad_limits_are_refused_with_positions() {
        let cases: &[(&str, &str)] = &[
            (
                "[[rate_limit]]\nname = \"a b\"\nkey = \"sender\"\nmessages = 1\nwindow = \"1h\"\n",
                "p.toml:2:8: rate_limit.0.name: must be 1 to 64 letters, digits, '_', '-' or '.'",
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"helo\"\nmessages = 1\nwindow = \"1h\"\n",
                "p.toml:3:7: rate_limit.0.key: expected \"sasl_username\", \"client_address\" or \"sender\"",
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\nmessages = 0\nwindow = \"1h\"\n",
                "p.toml:4:12: rate_limit.0.messages: must be at least 1",
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\ndistinct_clients = 101\nwindow = \"1h\"\n",
                "p.toml:4:20: rate_limit.0.distinct_clients: must be at most 100",
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\nmessages = 1\nwindow = \"30s\"\n",
                "p.toml:5:10: rate_limit.0.window: must be between 60s and 604800s",
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\nmessages = 1\nwindow = \"1h\"\naction = \"hold\"\n",
                "p.toml:6:10: rate_limit.0.action: expected \"defer\" or \"reject\"",
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\nmessages = 1\nwindow = \"1h\"\non_store_error = \"reject\"\n",
                "p.toml:6:18: rate_limit.0.on_store_error: expected \"dunno\" or \"defer\"",
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\nwindow = \"1h\"\n",
                "p.toml:1:1: rate_limit.0.messages: a [[rate_limit]] needs messages, recipients and/or distinct_clients",
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\nmessages = 1\nwindow = \"1h\"\n[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\nmessages = 1\nwindow = \"1h\"\n",
                "p.toml:7:8: rate_limit.1.name: \"a\" is already the name of a [[rate_limit]]",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(errors(text), [*want], "{text}");
        }
    }

    #[test]
    fn bad_uses_of_the_rule_are_refused() {
        let profile = |rules: &str| format!("{STORE}{LIMIT}[profile.a]\n{rules}\n");
        let cases = [
            (
                profile("sender = [\"check_rate_limit nope\"]"),
                "p.toml:9:11: profile.a.sender: no [[rate_limit]] named \"nope\"",
            ),
            (
                profile("sender = [\"check_rate_limit\"]"),
                "p.toml:9:11: profile.a.sender: check_rate_limit takes exactly one argument: the name of a [[rate_limit]]",
            ),
            (
                profile("recipient = [\"check_rate_limit per_login\"]"),
                "p.toml:9:14: profile.a.recipient: check_rate_limit cannot sit in the recipient stage: it counts at END-OF-MESSAGE, where that stage runs only for a message with one recipient (use the client, helo or sender stage)",
            ),
            (
                format!("{LIMIT}[profile.a]\nclient = [\"check_rate_limit per_login\"]\n"),
                "p.toml:7:11: profile.a.client: check_rate_limit per_login: needs [store], where the counts are kept",
            ),
            (
                format!(
                    "{STORE}[[rate_limit]]\nname = \"s\"\nkey = \"sender\"\nmessages = 1\nwindow = \"1h\"\n[profile.a]\nclient = [\"check_rate_limit s\"]\n"
                ),
                "p.toml:9:11: profile.a.client: check_rate_limit s: key = \"sender\" needs the sender stage, which the client stage runs without",
            ),
            // Issue 24 item 10: a limit that a permit before it skips for
            // the very requests it is written for.
            (
                profile("client = [\"permit_sasl_authenticated\", \"check_rate_limit per_login\"]"),
                "p.toml:9:40: profile.a.client: check_rate_limit per_login: counts logins, and \"permit_sasl_authenticated\" before it ends the stage for every login: put the limit first",
            ),
            (
                profile("sender = [\"permit\", \"check_rate_limit per_login\"]"),
                "p.toml:9:21: profile.a.sender: check_rate_limit per_login: never reached, \"permit\" before it ends the stage for every request",
            ),
            (
                profile("ignore_sasl = true\nclient = [\"check_rate_limit per_login\"]"),
                "p.toml:10:11: profile.a.client: check_rate_limit per_login: counts logins, and this profile ignores SASL (ignore_sasl = true), so it never sees one",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(errors(&text), [want], "{text}");
        }
        // Any defence after an unconditional permit of its stage.
        assert_eq!(
            errors(&format!(
                "{STORE}[greylist]\n[profile.a]\nrecipient = [\"permit\", \"check_greylist\"]\n"
            )),
            [
                "p.toml:5:24: profile.a.recipient: check_greylist: never reached, \"permit\" before it ends the stage for every request"
            ]
        );
        // In another stage, or first in its own, the limit counts.
        for rules in [
            "client = [\"check_rate_limit per_login\", \"permit_sasl_authenticated\"]",
            "client = [\"permit_sasl_authenticated\"]\nsender = [\"check_rate_limit per_login\"]",
        ] {
            assert_eq!(errors(&profile(rules)), Vec::<String>::new(), "{rules}");
        }
    }
}
