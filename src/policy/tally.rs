//! What the chain counts as it evaluates: requests per profile by the class
//! of the action answered, and each rule's results. Plain relaxed atomics
//! in fixed arrays, indexed by enums and by a rule's row in
//! [`RULES`](crate::rules::RULES): counting costs a request no lock and no
//! allocation. The counters are reached through `Arc`s the compiled policy
//! holds; the server hands a new policy the ones the old one counted into,
//! so counts outlive a reload (`server::metrics` reads and exports them).

use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::protocol::ActionClass;
use crate::rules::RULES;
use crate::vocab::outcome::Outcome;

/// Requests answered, by action class: one block per profile (and one for
/// requests that matched none).
#[derive(Debug, Default)]
pub struct ActionCounts([AtomicU64; ActionClass::ALL.len()]);

impl ActionCounts {
    pub fn count(&self, class: ActionClass) {
        self.0[class as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, class: ActionClass) -> u64 {
        self.0[class as usize].load(Ordering::Relaxed)
    }
}

/// What one rule said, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleResult {
    Dunno,
    Permit,
    Reject,
    Defer,
    DeferIfPermit,
    DeferIfReject,
    /// An action passed to Postfix (PREPEND, WARN, ...); evaluation goes on.
    Pass,
    /// DISCARD: passed to Postfix, and the stage ends.
    Discard,
}

impl RuleResult {
    pub const ALL: [RuleResult; 8] = [
        RuleResult::Dunno,
        RuleResult::Permit,
        RuleResult::Reject,
        RuleResult::Defer,
        RuleResult::DeferIfPermit,
        RuleResult::DeferIfReject,
        RuleResult::Pass,
        RuleResult::Discard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuleResult::Dunno => "dunno",
            RuleResult::Permit => "permit",
            RuleResult::Reject => "reject",
            RuleResult::Defer => "defer",
            RuleResult::DeferIfPermit => "defer_if_permit",
            RuleResult::DeferIfReject => "defer_if_reject",
            RuleResult::Pass => "pass",
            RuleResult::Discard => "discard",
        }
    }

    pub fn of(outcome: &Outcome) -> RuleResult {
        match outcome {
            Outcome::Dunno => RuleResult::Dunno,
            Outcome::Permit => RuleResult::Permit,
            Outcome::Reject(r) if r.is_temporary() => RuleResult::Defer,
            Outcome::Reject(_) => RuleResult::Reject,
            Outcome::DeferIfPermit(_) => RuleResult::DeferIfPermit,
            Outcome::DeferIfReject(_) => RuleResult::DeferIfReject,
            Outcome::Pass(_) => RuleResult::Pass,
            Outcome::PassPermit(_) => RuleResult::Discard,
        }
    }
}

/// Results of every rule evaluation, by the rule's row and the result.
#[derive(Debug)]
pub struct RuleTally([[AtomicU64; RuleResult::ALL.len()]; RULES.len()]);

impl Default for RuleTally {
    fn default() -> Self {
        RuleTally([const { [const { AtomicU64::new(0) }; RuleResult::ALL.len()] }; RULES.len()])
    }
}

impl RuleTally {
    /// Counts one result of the rule in row `index` of [`RULES`].
    pub fn count(&self, index: usize, outcome: &Outcome) {
        if let Some(row) = self.0.get(index) {
            row[RuleResult::of(outcome) as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, index: usize, result: RuleResult) -> u64 {
        self.0
            .get(index)
            .map_or(0, |row| row[result as usize].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::reply::Reply;

    #[test]
    fn rule_results() {
        for (i, r) in RuleResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let tally = RuleTally::default();
        tally.count(0, &Outcome::Reject(Reply::new(450, "4.7.1", "x")));
        tally.count(0, &Outcome::Reject(Reply::new(554, "5.7.1", "x")));
        tally.count(RULES.len(), &Outcome::Dunno); // out of range: ignored
        assert_eq!(tally.get(0, RuleResult::Defer), 1);
        assert_eq!(tally.get(0, RuleResult::Reject), 1);
        assert_eq!(tally.get(0, RuleResult::Dunno), 0);
    }
}
