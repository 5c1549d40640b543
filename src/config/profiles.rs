//! `[profile.NAME]` and its `match`, compiled into [`Profile`]s whose rule
//! chains are compiled by `rules::compile`; `[tables]` and the table
//! references of the rules, each file loaded once.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::Compiler;
use super::schema::{MatchSection, ProfileSection};
use super::values::OneOrMany;
use crate::policy::{ChainRule, Match, Mode, Profile};
use crate::rules::ratelimit::{KeyKind, RateLimit};
use crate::rules::{self, TableResolver};
use crate::site::Site;
use crate::tables::{self, AccessTable, TableSpec};
use crate::vocab::Stage;
use crate::vocab::outcome::AccessCodes;

impl Compiler<'_> {
    /// `[tables]`: each name with its parsed spec; the files load when a
    /// rule first refers to them.
    pub(super) fn tables(
        &mut self,
        named: BTreeMap<String, Spanned<String>>,
        codes: AccessCodes,
    ) -> Tables {
        let mut resolver = Tables {
            named: HashMap::new(),
            loaded: HashMap::new(),
            base: self.base.clone(),
            codes,
            rate_limits: HashMap::new(),
            has_store: false,
        };
        for (name, spec) in &named {
            match tables::parse_spec(spec.get_ref(), &self.base) {
                Ok(spec) => {
                    resolver.named.insert(name.clone(), spec);
                }
                Err(e) => self.error(spec.span(), &format!("tables.{name}"), e),
            }
        }
        resolver
    }

    /// Every `[profile.NAME]`, `like` resolved, and the check that no two
    /// of them match one request at the same specificity.
    pub(super) fn profiles(
        &mut self,
        sections: BTreeMap<String, Spanned<ProfileSection>>,
        tables: &mut Tables,
        site: &Site,
    ) -> Vec<(Profile, Range<usize>)> {
        let mut profiles = Vec::new();
        for (name, section) in &sections {
            let Some(resolved) = self.resolve(name, &sections) else {
                continue;
            };
            if let Some(p) = self.profile(name, section, resolved, tables, site) {
                profiles.push((p, section.span()));
            }
        }
        self.check_matches(&profiles);
        profiles
    }

    /// The keys of profile `name` after `like`: each its own, else the
    /// first written along its `like` chain (`match` is never taken).
    /// `None` when the chain names no profile or goes round (reported on
    /// the profile whose `like` is at fault, once).
    fn resolve<'s>(
        &mut self,
        name: &'s str,
        sections: &'s BTreeMap<String, Spanned<ProfileSection>>,
    ) -> Option<Resolved<'s>> {
        let own = sections.get(name)?.get_ref();
        let mut chain: Vec<(&str, &ProfileSection)> = vec![(name, own)];
        let mut like = own.like.as_ref();
        while let Some(target) = like {
            if let Some(i) = chain.iter().position(|(n, _)| n == target.get_ref()) {
                // Reported by the profiles on the cycle, not by those
                // that lead into it.
                if i == 0 {
                    let path: Vec<&str> = chain.iter().map(|(n, _)| *n).collect();
                    let span = own.like.as_ref().map_or(0..0, Spanned::span);
                    self.error(
                        span,
                        &format!("profile.{name}.like"),
                        format!("a cycle: {} -> {name}", path.join(" -> ")),
                    );
                }
                return None;
            }
            let Some(section) = sections.get(target.get_ref()) else {
                if chain.len() == 1 {
                    self.error(
                        target.span(),
                        &format!("profile.{name}.like"),
                        format!("no profile named {:?}", target.get_ref()),
                    );
                }
                return None;
            };
            chain.push((target.get_ref(), section.get_ref()));
            like = section.get_ref().like.as_ref();
        }
        /// The first value along the chain, and whether it is the
        /// profile's own.
        fn first<'s, T: 's>(
            chain: &[(&str, &'s ProfileSection)],
            key: impl Fn(&'s ProfileSection) -> Option<T>,
        ) -> Option<(T, bool)> {
            chain
                .iter()
                .enumerate()
                .find_map(|(i, (_, s))| key(s).map(|v| (v, i == 0)))
        }
        let stage = |key: fn(&'s ProfileSection) -> Option<&'s Vec<Spanned<String>>>| {
            let at = chain.iter().position(|(_, s)| key(s).is_some());
            match at {
                Some(i) => (key(chain[i].1).map_or(&[][..], Vec::as_slice), i == 0),
                None => (&[][..], true),
            }
        };
        Some(Resolved {
            matcher: own.matcher.as_ref(),
            mode: first(&chain, |s| s.mode.as_ref()),
            called_from: first(&chain, |s| s.called_from.as_ref()),
            helo_required: first(&chain, |s| s.helo_required).is_some_and(|(v, _)| v),
            ignore_sasl: first(&chain, |s| s.ignore_sasl).is_some_and(|(v, _)| v),
            stages: [
                stage(|s| s.client.as_ref()),
                stage(|s| s.helo.as_ref()),
                stage(|s| s.sender.as_ref()),
                stage(|s| s.recipient.as_ref()),
            ],
        })
    }

    /// One profile; `None` when a rule of it did not compile (its errors
    /// are recorded), so one bad rule does not hide the others.
    fn profile(
        &mut self,
        name: &str,
        section: &Spanned<ProfileSection>,
        resolved: Resolved<'_>,
        tables: &mut Tables,
        site: &Site,
    ) -> Option<Profile> {
        if name == crate::policy::NO_PROFILE {
            self.error(
                section.span(),
                &format!("profile.{name}"),
                "the name \"-\" is reserved: the log and the metrics call a request that matched no profile so",
            );
        }
        let Resolved {
            matcher,
            mode,
            called_from,
            helo_required,
            ignore_sasl,
            stages: lists,
        } = resolved;
        let before = self.errors.len();
        let mut failed = false;
        let matcher = match matcher {
            None => Match::default(),
            Some(MatchSection {
                server_port,
                policy_context,
            }) => Match {
                server_port: self.match_list(name, "server_port", server_port),
                policy_context: self.match_list(name, "policy_context", policy_context),
            },
        };
        // A bad value taken with `like` is reported where it is written.
        let mut bad = |span: Range<usize>, own: bool, key: &str, message: &str| {
            if own {
                self.error(span, &format!("profile.{name}.{key}"), message);
            }
            failed = true;
        };
        let mode = match mode {
            None => Mode::Enforce,
            Some((m, own)) => match m.get_ref().as_str() {
                "enforce" => Mode::Enforce,
                "warn" => Mode::Warn,
                _ => {
                    bad(m.span(), own, "mode", "expected \"enforce\" or \"warn\"");
                    Mode::Enforce
                }
            },
        };
        let called_from = match called_from {
            None => Stage::Recipient,
            Some((s, own)) => Stage::parse(s.get_ref()).unwrap_or_else(|| {
                let message = "expected client, helo, sender or recipient";
                bad(s.span(), own, "called_from", message);
                Stage::Recipient
            }),
        };
        let mut stages: [Vec<ChainRule>; 4] = Default::default();
        for (stage, (list, own)) in Stage::ALL.into_iter().zip(lists) {
            let key = format!("profile.{name}.{stage}");
            // The permit earlier in this stage that ends it, if any.
            let mut permitted_by: Option<String> = None;
            // The `warn_if_reject` waiting for its rule.
            let mut warn_next: Option<Range<usize>> = None;
            for rule in list {
                let text = rule
                    .get_ref()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let first = text.split(' ').next().unwrap_or("");
                if first.eq_ignore_ascii_case(WARN_IF_REJECT) {
                    let why = if text.len() > first.len() {
                        Some("warn_if_reject takes no argument")
                    } else if warn_next.is_some() {
                        Some("warn_if_reject twice in a row")
                    } else {
                        warn_next = Some(rule.span());
                        None
                    };
                    if let Some(why) = why {
                        if own {
                            self.error(rule.span(), &key, why);
                        }
                        failed = true;
                    }
                    continue;
                }
                match rules::compile(rule.get_ref(), stage, tables, site) {
                    Ok(compiled) => {
                        if let Some(why) =
                            never_acts(&text, permitted_by.as_deref(), ignore_sasl, tables)
                        {
                            self.error(rule.span(), &key, why);
                        }
                        if permitted_by.is_none()
                            && matches!(text.as_str(), "permit" | "permit_sasl_authenticated")
                        {
                            permitted_by = Some(text.clone());
                        }
                        stages[stage as usize].push(ChainRule {
                            label: format!("{stage}: {text}").into(),
                            warn: warn_next.take().is_some(),
                            rule: compiled,
                        })
                    }
                    Err(e) => {
                        // A rule taken with `like` fails the same way in
                        // the profile it was written in, which reports it.
                        if own {
                            self.error(rule.span(), &key, e.to_string());
                        }
                        failed = true;
                    }
                }
            }
            if let Some(span) = warn_next {
                if own {
                    self.error(
                        span,
                        &key,
                        "warn_if_reject must be followed by the rule it applies to",
                    );
                }
                failed = true;
            }
        }
        (self.errors.len() == before && !failed).then(|| Profile {
            name: name.into(),
            matcher,
            called_from,
            helo_required,
            ignore_sasl,
            mode,
            stages,
            requests: Default::default(),
            reject_warnings: Default::default(),
        })
    }

    /// One key of `match`: its values, or none (anything) when unset. An
    /// empty list would match no request at all: refused.
    fn match_list<T: Clone>(
        &mut self,
        name: &str,
        key: &str,
        list: &Option<Spanned<OneOrMany<T>>>,
    ) -> Vec<T> {
        let Some(list) = list else {
            return Vec::new();
        };
        if list.get_ref().0.is_empty() {
            self.error(
                list.span(),
                &format!("profile.{name}.match.{key}"),
                "an empty list matches no request: leave the key out to match any",
            );
        }
        list.get_ref().0.clone()
    }

    /// Two profiles that one request could match at the same specificity:
    /// neither could be told to win.
    fn check_matches(&mut self, profiles: &[(Profile, Range<usize>)]) {
        for (i, (a, span)) in profiles.iter().enumerate() {
            let clash = profiles[..i]
                .iter()
                .find_map(|(b, _)| a.matcher.overlap(&b.matcher).map(|m| (b, m)));
            if let Some((b, common)) = clash {
                let message = if a.matcher == b.matcher {
                    format!(
                        "same match ({}) as profile {:?}: only one of them could ever be chosen",
                        a.matcher, b.name
                    )
                } else {
                    format!(
                        "a request with {common} matches both this profile ({}) and profile {:?} ({}): say which one serves it",
                        a.matcher, b.name, b.matcher
                    )
                };
                self.error(span.clone(), &format!("profile.{}.match", a.name), message);
            }
        }
    }
}

/// Postfix's restriction that turns the next one's reject into a logged
/// warning (postconf(5)).
const WARN_IF_REJECT: &str = "warn_if_reject";

/// A profile's keys after `like` (see [`Compiler::resolve`]).
struct Resolved<'s> {
    matcher: Option<&'s MatchSection>,
    /// With whether the profile wrote it itself (as for `stages`).
    mode: Option<(&'s Spanned<String>, bool)>,
    called_from: Option<(&'s Spanned<String>, bool)>,
    helo_required: bool,
    ignore_sasl: bool,
    /// Each stage's rules in [`Stage::ALL`] order, and whether the profile
    /// wrote them itself (errors of rules taken with `like` are reported
    /// where they were written).
    stages: [(&'s [Spanned<String>], bool); 4],
}

/// Why a rule (its `text`) could never act, if so: any rule after an
/// unconditional `permit` of its stage (greylisting or SPF there would be
/// a defence in name only), and `check_rate_limit NAME` counting logins
/// after `permit_sasl_authenticated` of its stage or in a profile that
/// ignores SASL. A defence that is a no-op is an open door, so it is an
/// error, not a warning.
fn never_acts(
    text: &str,
    permitted_by: Option<&str>,
    ignore_sasl: bool,
    tables: &Tables,
) -> Option<String> {
    if permitted_by == Some("permit") {
        return Some(format!(
            "{text}: never reached, \"permit\" before it ends the stage for every request"
        ));
    }
    let name = text.strip_prefix("check_rate_limit ")?;
    let counts_logins = tables
        .rate_limits
        .get(name)
        .is_some_and(|l| l.key == KeyKind::SaslUsername);
    match permitted_by {
        Some(permit) if counts_logins => Some(format!(
            "{text}: counts logins, and {permit:?} before it ends the stage for every \
             login: put the limit first"
        )),
        _ if counts_logins && ignore_sasl => Some(format!(
            "{text}: counts logins, and this profile ignores SASL (ignore_sasl = true), \
             so it never sees one"
        )),
        _ => None,
    }
}

/// Table references of the rules: names from `[tables]` or inline specs,
/// each file loaded once.
pub(super) struct Tables {
    named: HashMap<String, TableSpec>,
    loaded: HashMap<TableSpec, Arc<AccessTable>>,
    base: PathBuf,
    codes: AccessCodes,
    /// `[[rate_limit]]` by name, and whether `[store]` is there to count in.
    pub(super) rate_limits: HashMap<String, Arc<RateLimit>>,
    pub(super) has_store: bool,
}

impl TableResolver for Tables {
    fn table(&mut self, arg: &str) -> Result<Arc<AccessTable>, String> {
        let spec = match self.named.get(arg) {
            Some(spec) => spec.clone(),
            None if arg.contains(':') || arg.contains('/') => tables::parse_spec(arg, &self.base)?,
            None => {
                return Err(format!(
                    "no table named {arg:?} in [tables] (write a path or type:path to use a file directly)"
                ));
            }
        };
        if let Some(t) = self.loaded.get(&spec) {
            return Ok(t.clone());
        }
        let table =
            AccessTable::load(&spec.path, spec.kind, self.codes).map_err(|e| e.to_string())?;
        let table = Arc::new(table);
        self.loaded.insert(spec, table.clone());
        Ok(table)
    }

    fn rate_limit(&mut self, name: &str) -> Result<Arc<RateLimit>, String> {
        let limit = self
            .rate_limits
            .get(name)
            .ok_or_else(|| format!("no [[rate_limit]] named {name:?}"))?;
        if !self.has_store {
            return Err(format!(
                "check_rate_limit {name}: needs [store], where the counts are kept"
            ));
        }
        Ok(limit.clone())
    }
}

impl Tables {
    /// The table files the rules loaded, for reload polling.
    pub(super) fn files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.loaded.keys().map(|spec| spec.path.clone())
    }
}
