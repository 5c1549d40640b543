//! The compiled policy: profiles, each an ordered chain of stages and rules,
//! and the site facts rules read. Built by the config loader, immutable,
//! shared behind an `Arc`; a reload builds a new one and swaps it. What rpol
//! learns while it runs is not here but in [`crate::state`].

pub mod chain;
mod lists;
pub mod tally;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::dns::DnsConfig;
use crate::protocol::Request;
use crate::rules::Rule;
use crate::site::Site;
use crate::vocab::Stage;

pub use chain::{Decision, evaluate};
use tally::{ActionCounts, RuleTally};

/// The profile name the decision log and the metrics give a request that
/// matched no profile; no profile may be called so.
pub const NO_PROFILE: &str = "-";

/// Which requests a profile serves. An empty list matches anything; a
/// list matches a request that has one of its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub server_port: Vec<u16>,
    pub policy_context: Vec<String>,
}

impl Match {
    /// How specific a match is, or `None` if it does not match. A
    /// policy_context match outranks a port match: the context is the
    /// admin's explicit choice in main.cf/master.cf.
    pub fn score(&self, req: &Request) -> Option<u8> {
        let mut score = 0;
        if !self.server_port.is_empty() {
            let port = req.server_port.trim().parse::<u16>().ok()?;
            if !self.server_port.contains(&port) {
                return None;
            }
            score += 1;
        }
        if !self.policy_context.is_empty() {
            if !self.policy_context.contains(&req.policy_context) {
                return None;
            }
            score += 2;
        }
        Some(score)
    }

    /// What a request matched by both `self` and `other` at the same score
    /// would have, if there can be one: then neither profile is the more
    /// specific, and the loader refuses the pair.
    pub fn overlap(&self, other: &Match) -> Option<Match> {
        fn common<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Option<Vec<T>> {
            match (a.is_empty(), b.is_empty()) {
                (true, true) => Some(Vec::new()),
                (false, false) => {
                    let both: Vec<T> = a.iter().filter(|x| b.contains(x)).cloned().collect();
                    (!both.is_empty()).then_some(both)
                }
                // One constrains what the other leaves open: the scores differ.
                _ => None,
            }
        }
        Some(Match {
            server_port: common(&self.server_port, &other.server_port)?,
            policy_context: common(&self.policy_context, &other.policy_context)?,
        })
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = self.server_port.iter().map(u16::to_string);
        let ports = ports.collect::<Vec<_>>().join(",");
        let contexts = self.policy_context.join(",");
        match (ports.is_empty(), self.policy_context.is_empty()) {
            (true, true) => f.write_str("default"),
            (false, true) => write!(f, "server_port={ports}"),
            (true, false) => write!(f, "policy_context={contexts}"),
            (false, false) => write!(f, "server_port={ports}, policy_context={contexts}"),
        }
    }
}

/// What a profile does with a refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Refusals are answered.
    #[default]
    Enforce,
    /// A dry run: the chain runs as under `Enforce`, with the same side
    /// effects (greylisting triplets, rate counts of what it lets
    /// through), and a refusal is logged as `reject_warning` and counted
    /// while the answer is what the chain had passed through before it
    /// (headers), else DUNNO.
    Warn,
}

/// A rule with the text it was written as, for traces and logs.
#[derive(Debug)]
pub struct ChainRule {
    /// Written after `warn_if_reject`: a reject, defer or defer_if_permit
    /// of this rule is logged as `reject_warning` and the chain goes on.
    pub warn: bool,
    /// `stage: text`, as decisions and traces name the rule (made once
    /// here: a decision names its rule on every request).
    pub label: Arc<str>,
    pub rule: Rule,
}

/// One profile: a match and four ordered rule lists.
#[derive(Debug)]
pub struct Profile {
    /// Shared: every decision names its profile.
    pub name: Arc<str>,
    pub matcher: Match,
    /// The Postfix restriction list that calls this profile. A reply from
    /// another stage gets that stage's `<name>: <Class> rejected: ` in its
    /// text, so the client still learns what was refused.
    pub called_from: Stage,
    /// Postfix smtpd_helo_required: without HELO/EHLO the helo stage
    /// answers `503 5.5.1 Error: send HELO/EHLO first`.
    pub helo_required: bool,
    /// The chain sees no SASL attributes: on port 25 a client's AUTH must
    /// not change how it is judged.
    pub ignore_sasl: bool,
    pub mode: Mode,
    pub stages: [Vec<ChainRule>; 4],
    /// Requests this profile answered, by action class. Runtime counters,
    /// not policy: the server gives a reloaded profile of the same name the
    /// block the old one counted into.
    pub requests: Arc<ActionCounts>,
    /// Refusals logged as `reject_warning` instead of answered, by the
    /// class of the action that would have gone out (handed on at reload
    /// like `requests`).
    pub reject_warnings: Arc<ActionCounts>,
}

impl Profile {
    pub fn rules(&self, stage: Stage) -> &[ChainRule] {
        &self.stages[stage as usize]
    }
}

/// Everything a request is evaluated against.
#[derive(Debug)]
pub struct Policy {
    pub site: Site,
    pub profiles: Vec<Profile>,
    /// `[dns]`: the resolver in the runtime state is built from it, and
    /// rebuilt when a reload changes it.
    pub dns_config: DnsConfig,
    /// Every file this policy was built from (config, tables, address
    /// lists), watched for changes.
    pub files: Vec<PathBuf>,
    /// Requests that matched no profile (see [`Profile::requests`]).
    pub unmatched: Arc<ActionCounts>,
    /// Every rule's results (handed on at reload like `requests`).
    pub rule_results: Arc<RuleTally>,
}

impl Policy {
    /// What is legal but probably not meant: no default profile (requests
    /// that match no profile are answered DUNNO unchecked), or a default
    /// profile without rules.
    pub fn warnings(&self) -> Vec<String> {
        let default = self.profiles.iter().find(|p| p.matcher == Match::default());
        match default {
            None => vec![format!(
                "no default profile (one without match): a request that matches none of {} is answered DUNNO unchecked",
                self.profiles
                    .iter()
                    .map(|p| format!("{} ({})", p.name, p.matcher))
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
            Some(p) if p.stages.iter().all(Vec::is_empty) => vec![format!(
                "the default profile {} has no rules: requests that match no other profile are answered DUNNO unchecked (write client = [\"dunno\"] if that is meant)",
                p.name
            )],
            Some(_) => Vec::new(),
        }
        .into_iter()
        .chain(
            self.profiles
                .iter()
                .filter(|p| p.mode == Mode::Warn)
                .map(|p| {
                    format!(
                        "profile {} is in mode \"warn\": its refusals are logged as reject_warning and answered DUNNO",
                        p.name
                    )
                }),
        )
        .collect()
    }

    /// The most specific profile matching `req` (see [`Match::score`]).
    pub fn select(&self, req: &Request) -> Option<&Profile> {
        self.profiles
            .iter()
            .filter_map(|p| p.matcher.score(req).map(|s| (s, p)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_scores() {
        let req = Request::from_pairs([("server_port", "587"), ("policy_context", "submission")]);
        let port = Match {
            server_port: vec![587],
            policy_context: vec![],
        };
        let ctx = Match {
            server_port: vec![],
            policy_context: vec!["submission".into()],
        };
        let ports = Match {
            server_port: vec![465, 587],
            policy_context: vec![],
        };
        assert_eq!(Match::default().score(&req), Some(0));
        assert_eq!(port.score(&req), Some(1));
        assert_eq!(ctx.score(&req), Some(2));
        assert_eq!(ports.score(&req), Some(1));
        let other = Request::from_pairs([("server_port", "25")]);
        assert_eq!(port.score(&other), None);
        assert_eq!(ctx.score(&other), None);
        assert_eq!(ports.score(&other), None);
        let bad = Request::from_pairs([("server_port", "x587")]);
        assert_eq!(ports.score(&bad), None);
    }

    #[test]
    fn overlaps() {
        let m = |ports: &[u16], ctx: &[&str]| Match {
            server_port: ports.to_vec(),
            policy_context: ctx.iter().map(|c| c.to_string()).collect(),
        };
        assert_eq!(
            m(&[465, 587], &[]).overlap(&m(&[587, 25], &[])),
            Some(m(&[587], &[]))
        );
        assert_eq!(m(&[465], &[]).overlap(&m(&[587], &[])), None);
        // Different specificity: the more specific wins, no conflict.
        assert_eq!(m(&[587], &[]).overlap(&m(&[], &["submission"])), None);
        assert_eq!(m(&[587], &["a"]).overlap(&m(&[587], &[])), None);
        assert_eq!(m(&[], &[]).overlap(&m(&[], &[])), Some(m(&[], &[])));
        assert_eq!(
            m(&[587], &["a", "b"]).overlap(&m(&[587, 465], &["b"])),
            Some(m(&[587], &["b"]))
        );
    }
}
