//! The compiled policy: profiles, each an ordered chain of stages and rules,
//! and the site facts rules read. Built by the config loader, immutable,
//! shared behind an `Arc`; a reload builds a new one and swaps it. What rpol
//! learns while it runs is not here but in [`crate::state`].

pub mod chain;
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

/// Which requests a profile serves. Unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub server_port: Option<u16>,
    pub policy_context: Option<String>,
}

impl Match {
    /// How specific a match is, or `None` if it does not match. A
    /// policy_context match outranks a port match: the context is the
    /// admin's explicit choice in main.cf/master.cf.
    pub fn score(&self, req: &Request) -> Option<u8> {
        let mut score = 0;
        if let Some(port) = self.server_port {
            if req.server_port.trim().parse::<u16>().ok() != Some(port) {
                return None;
            }
            score += 1;
        }
        if let Some(ctx) = &self.policy_context {
            if req.policy_context != *ctx {
                return None;
            }
            score += 2;
        }
        Some(score)
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.server_port, &self.policy_context) {
            (None, None) => f.write_str("default"),
            (Some(p), None) => write!(f, "server_port={p}"),
            (None, Some(c)) => write!(f, "policy_context={c}"),
            (Some(p), Some(c)) => write!(f, "server_port={p}, policy_context={c}"),
        }
    }
}

/// A rule with the text it was written as, for traces and logs.
#[derive(Debug)]
pub struct ChainRule {
    pub text: String,
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
    pub stages: [Vec<ChainRule>; 4],
    /// Requests this profile answered, by action class. Runtime counters,
    /// not policy: the server gives a reloaded profile of the same name the
    /// block the old one counted into.
    pub requests: Arc<ActionCounts>,
}

impl Profile {
    pub fn rules(&self, stage: Stage) -> &[ChainRule] {
        &self.stages[stage as usize]
    }
}

/// Everything a request is evaluated against.
#[derive(Debug)]
pub struct Policy {
    /// The config file this was loaded from.
    pub source: PathBuf,
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
            server_port: Some(587),
            policy_context: None,
        };
        let ctx = Match {
            server_port: None,
            policy_context: Some("submission".into()),
        };
        assert_eq!(Match::default().score(&req), Some(0));
        assert_eq!(port.score(&req), Some(1));
        assert_eq!(ctx.score(&req), Some(2));
        let other = Request::from_pairs([("server_port", "25")]);
        assert_eq!(port.score(&other), None);
        assert_eq!(ctx.score(&other), None);
    }
}
