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
use crate::policy::{ChainRule, Match, Profile};
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

    /// One `[profile.NAME]`; `None` when a rule of it did not compile (its
    /// errors are recorded), so one bad rule does not hide the others.
    pub(super) fn profile(
        &mut self,
        name: &str,
        section: Spanned<ProfileSection>,
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
        let ProfileSection {
            matcher,
            called_from,
            helo_required,
            ignore_sasl,
            client,
            helo,
            sender,
            recipient,
        } = section.into_inner();
        let matcher = match matcher {
            None => Match::default(),
            Some(MatchSection {
                server_port,
                policy_context,
            }) => Match {
                server_port,
                policy_context,
            },
        };
        let called_from = match called_from {
            None => Stage::Recipient,
            Some(s) => match Stage::parse(s.get_ref()) {
                Some(stage) => stage,
                None => {
                    self.error(
                        s.span(),
                        &format!("profile.{name}.called_from"),
                        "expected client, helo, sender or recipient",
                    );
                    Stage::Recipient
                }
            },
        };
        let mut stages: [Vec<ChainRule>; 4] = Default::default();
        let before = self.errors.len();
        for (stage, list) in [
            (Stage::Client, client),
            (Stage::Helo, helo),
            (Stage::Sender, sender),
            (Stage::Recipient, recipient),
        ] {
            // The permit earlier in this stage that ends it, if any.
            let mut permitted_by: Option<String> = None;
            for rule in list {
                let key = format!("profile.{name}.{stage}");
                match rules::compile(rule.get_ref(), stage, tables, site) {
                    Ok(compiled) => {
                        let text = rule
                            .get_ref()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ");
                        if let Some(why) =
                            skipped_limit(&text, permitted_by.as_deref(), ignore_sasl, tables)
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
                            text,
                            rule: compiled,
                        })
                    }
                    Err(e) => self.error(rule.span(), &key, e.to_string()),
                }
            }
        }
        (self.errors.len() == before).then(|| Profile {
            name: name.into(),
            matcher,
            called_from,
            helo_required,
            ignore_sasl,
            stages,
            requests: Default::default(),
        })
    }

    /// Two profiles with the same match could never both be chosen.
    pub(super) fn check_matches(&mut self, profiles: &[(Profile, Range<usize>)]) {
        for (i, (a, span)) in profiles.iter().enumerate() {
            if let Some((b, _)) = profiles[..i].iter().find(|(b, _)| b.matcher == a.matcher) {
                self.error(
                    span.clone(),
                    &format!("profile.{}.match", a.name),
                    format!(
                        "same match ({}) as profile {:?}: only one of them could ever be chosen",
                        a.matcher, b.name
                    ),
                );
            }
        }
    }
}

/// Why `check_rate_limit NAME` (the rule's `text`) would never count the
/// requests it is written for, if so: after an unconditional `permit` of
/// its stage, after `permit_sasl_authenticated` when it counts logins, or
/// counting logins in a profile that ignores SASL. A limit that is a no-op
/// is a stolen password's open door, so it is an error, not a warning.
fn skipped_limit(
    text: &str,
    permitted_by: Option<&str>,
    ignore_sasl: bool,
    tables: &Tables,
) -> Option<String> {
    let name = text.strip_prefix("check_rate_limit ")?;
    let counts_logins = tables
        .rate_limits
        .get(name)
        .is_some_and(|l| l.key == KeyKind::SaslUsername);
    match permitted_by {
        Some("permit") => Some(format!(
            "{text}: never reached, \"permit\" before it ends the stage for every request"
        )),
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
