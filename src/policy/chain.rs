//! Evaluation of one request against a profile, with Postfix's semantics
//! for `smtpd_delay_reject = yes` (reference section 3):
//!
//! - stages run in the order client, helo, sender, recipient;
//! - inside a stage the first rule that decides ends the stage, and a
//!   permit ends only its own stage;
//! - a reject or defer anywhere ends the chain;
//! - `defer_if_permit` keeps the first deferral and answers it at the end
//!   unless something rejects; `defer_if_reject` turns a later 5xx of the
//!   same stage into its 4xx;
//! - when nothing rejects, the answer is `DUNNO`, never `OK`, so Postfix's
//!   own later restrictions still apply;
//! - a rule after `warn_if_reject` that rejects, defers or defers if
//!   permitted is logged as `reject_warning` and the chain goes on, as
//!   Postfix does (its `defer_if_reject` is kept: Postfix too raises that
//!   flag under warn_if_reject); a profile in `mode = "warn"` answers what
//!   it would have refused with what the chain passed through before the
//!   refusal (headers), else DUNNO, and logs the refusal the same way.
//!
//! Which stages run depends on `protocol_state`: a stage runs only when the
//! data it judges exists at that point of the SMTP dialogue.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{Mode, Policy, Profile};
use crate::protocol::{Action, ActionClass, ProtocolState, Request};
use crate::rules::{Context, Started, ratelimit};
use crate::state::State;
use crate::vocab::Stage;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;

/// The answer to one request, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What goes after `action=`.
    pub action: Action,
    /// The profile that served the request, if any matched.
    pub profile: Option<Arc<str>>,
    /// `stage: rule text` of the rule that decided, if one did.
    pub rule: Option<Arc<str>>,
    /// Refusals logged instead of answered, in chain order.
    pub reject_warnings: Vec<RejectWarning>,
    /// Readable steps, filled only when a trace was asked for.
    pub trace: Vec<String>,
}

/// A refusal that `warn_if_reject` or `mode = "warn"` turned into a log
/// line: Postfix's `reject_warning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectWarning {
    /// What would have gone after `action=`.
    pub action: Action,
    /// `stage: rule text` of the rule that refused.
    pub rule: Arc<str>,
}

/// Stages that run for a request, by protocol_state. Postfix with
/// smtpd_delay_reject = yes calls every list at RCPT, so `RCPT` (and an
/// absent or unknown state) runs all four; earlier states run the stages
/// whose data exists; DATA and END-OF-MESSAGE run the recipient stage only
/// when Postfix names the single recipient.
pub fn stages_for(req: &Request) -> [bool; 4] {
    let has_rcpt = !req.recipient.is_empty();
    match req.state() {
        ProtocolState::Connect => [true, false, false, false],
        ProtocolState::Helo | ProtocolState::Etrn => [true, true, false, false],
        ProtocolState::Mail => [true, true, true, false],
        ProtocolState::Rcpt | ProtocolState::Other => [true, true, true, true],
        ProtocolState::Vrfy => [true, true, false, true],
        ProtocolState::Data | ProtocolState::EndOfMessage => [true, true, true, has_rcpt],
    }
}

/// Evaluates `req`. With `want_trace`, `Decision::trace` explains each step.
pub async fn evaluate(policy: &Policy, state: &State, req: &Request, want_trace: bool) -> Decision {
    let mut trace = Vec::new();
    let Some(profile) = policy.select(req) else {
        if want_trace {
            trace.push(format!(
                "no profile matches server_port={:?} policy_context={:?}: DUNNO",
                req.server_port, req.policy_context
            ));
        }
        policy.unmatched.count(ActionClass::Dunno);
        return Decision {
            action: Action::Dunno,
            profile: None,
            rule: None,
            reject_warnings: Vec::new(),
            trace,
        };
    };
    if want_trace {
        trace.push(format!("profile {:?} ({})", profile.name, profile.matcher));
    }
    // ignore_sasl: the chain judges the client as if it had not
    // authenticated (port 25: AUTH must not buy a way around the checks).
    let stripped;
    let req = if profile.ignore_sasl
        && !(req.sasl_method.is_empty()
            && req.sasl_username.is_empty()
            && req.sasl_sender.is_empty())
    {
        if want_trace {
            trace.push(format!(
                "SASL attributes ignored (login {:?})",
                req.sasl_username
            ));
        }
        stripped = Request {
            sasl_method: String::new(),
            sasl_username: String::new(),
            sasl_sender: String::new(),
            ..req.clone()
        };
        &stripped
    } else {
        req
    };
    let mut run = Run {
        profile,
        req,
        trace: want_trace.then_some(trace),
        defer_if_permit: None,
        passed: Vec::new(),
        counts: Vec::new(),
        dnsbl_score: None,
        reject_warnings: Vec::new(),
    };
    let verdict = run.stages(policy, state).await;
    let (action, rule) = match verdict {
        Some((reply, stage, rule)) => {
            let action = format_reply(&reply, stage, profile.called_from, req);
            if profile.mode == Mode::Warn {
                run.would_refuse(action, rule, "mode warn");
                // The refusal wins over a pending deferral, as it would.
                run.defer_if_permit = None;
                run.passed_action(state)
            } else {
                (action, Some(rule))
            }
        }
        None => run.final_action(state),
    };
    for warning in &run.reject_warnings {
        profile.reject_warnings.count(warning.action.class());
    }
    let class = action.class();
    // Rate limits count a message only when this answer lets it through;
    // a refusal releases what the refused transaction reserved.
    let counts = std::mem::take(&mut run.counts);
    if !counts.is_empty() {
        // Boxed: the store call's future is large, and unboxed it would
        // make every connection's task that much larger for its whole life.
        if class.refuses() {
            run.step(|| "refused: the rate limits count nothing".into());
            Box::pin(ratelimit::release(state, counts, run.trace.as_mut())).await;
        } else {
            Box::pin(ratelimit::commit(state, counts, run.trace.as_mut())).await;
        }
    }
    profile.requests.count(class);
    let mut trace = run.trace.unwrap_or_default();
    if want_trace {
        match &rule {
            Some(rule) => trace.push(format!("decided by {rule}")),
            None => trace.push("no rule decided".into()),
        }
    }
    Decision {
        action,
        profile: Some(profile.name.clone()),
        rule,
        reject_warnings: run.reject_warnings,
        trace,
    }
}

/// The state of one evaluation.
struct Run<'a> {
    profile: &'a Profile,
    req: &'a Request,
    trace: Option<Vec<String>>,
    /// The first deferral (reply, stage, rule), answered at the end.
    defer_if_permit: Option<(Reply, Stage, Arc<str>)>,
    /// Actions passed through to Postfix (PREPEND, WARN, ...), with the rule.
    passed: Vec<(Action, Arc<str>)>,
    /// Messages the rate limits count if the answer lets them through.
    counts: Vec<ratelimit::Count>,
    /// The client's DNS list score, computed once per request.
    dnsbl_score: Option<Arc<crate::dnsbl::score::Score>>,
    /// Refusals logged instead of answered.
    reject_warnings: Vec<RejectWarning>,
}

impl Run<'_> {
    fn step(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(line());
        }
    }

    /// Logs `action` of `rule` as a would-be refusal (`why`: what turned
    /// it into one, for the trace).
    fn would_refuse(&mut self, action: Action, rule: Arc<str>, why: &str) {
        self.step(|| {
            format!(
                "{why}: {rule} would answer {:?}: reject_warning",
                action.to_string()
            )
        });
        self.reject_warnings.push(RejectWarning { action, rule });
    }

    /// Sends the first DNS queries of the rules from the `first`th of
    /// `stage` on, through the stages that run for this request
    /// ([`crate::rules::Rule::prefetch`]): at most one query per distinct
    /// name and type (the resolver's in-flight table), each bounded by
    /// the resolver's deadline.
    fn prefetch(
        &self,
        policy: &Policy,
        state: &State,
        dns: &crate::dns::Resolver,
        stage: Stage,
        first: usize,
        runs: &[bool; 4],
    ) {
        let ahead = Stage::ALL
            .into_iter()
            .filter(|&later| later > stage && runs[later as usize])
            // Without HELO/EHLO the helo stage is skipped.
            .filter(|&later| later != Stage::Helo || !self.req.helo_name.is_empty())
            .flat_map(|later| self.profile.rules(later));
        for chain_rule in self.profile.rules(stage)[first..].iter().chain(ahead) {
            chain_rule.rule.prefetch(self.req, &policy.site, state, dns);
        }
    }

    /// Runs the stages; returns the reply that ended the chain, if any.
    async fn stages(&mut self, policy: &Policy, state: &State) -> Option<(Reply, Stage, Arc<str>)> {
        let runs = stages_for(self.req);
        let dns = state.resolver();
        let mut prefetched = false;
        for stage in Stage::ALL {
            let rules = self.profile.rules(stage);
            let helo_required = stage == Stage::Helo && self.profile.helo_required;
            if rules.is_empty() && !helo_required {
                continue;
            }
            if !runs[stage as usize] {
                let state = self.req.protocol_state.clone();
                self.step(|| format!("{stage}: not run at protocol_state {state:?}"));
                continue;
            }
            if stage == Stage::Helo && self.req.helo_name.is_empty() {
                if helo_required {
                    self.step(|| "helo: no HELO/EHLO and helo_required is set".into());
                    let reply = Reply::unnamed(503, "5.5.1", "Error: send HELO/EHLO first");
                    return Some((reply, stage, Arc::from("helo: helo_required")));
                }
                // Postfix: helo restrictions do nothing without HELO/EHLO.
                self.step(|| "helo: skipped, the client sent no HELO/EHLO".into());
                continue;
            }
            // defer_if_reject is reset at the start of each stage (SMTPD_CHECK_RESET).
            let mut defer_if_reject: Option<Reply> = None;
            for (i, chain_rule) in rules.iter().enumerate() {
                if !prefetched && chain_rule.rule.waits() {
                    // At the first rule that waits, the first DNS queries
                    // of it and of every rule ahead are sent at once (one
                    // round trip, not one each); the rules still decide in
                    // their order. A query of a rule after one that ends
                    // the chain or its stage is asked in vain, as it would
                    // not be in Postfix: a query, no answer.
                    prefetched = true;
                    self.prefetch(policy, state, &dns, stage, i, &runs);
                }
                let mut notes = Vec::new();
                let outcome = {
                    let mut ctx = Context {
                        request: self.req,
                        site: &policy.site,
                        dns: &dns,
                        state,
                        notes: self.trace.is_some().then_some(&mut notes),
                        counts: &mut self.counts,
                        dnsbl_score: &mut self.dnsbl_score,
                    };
                    match chain_rule.rule.start(&mut ctx) {
                        Started::Done(outcome) => outcome,
                        Started::Waits => chain_rule.rule.finish(&mut ctx).await,
                    }
                };
                policy.rule_results.count(chain_rule.rule.index(), &outcome);
                let rule_name = || chain_rule.label.clone();
                self.step(|| {
                    let mut line = format!("{} -> {}", rule_name(), outcome.label());
                    for note in &notes {
                        let _ = write!(line, "\n      {note}");
                    }
                    line
                });
                let called_from = self.profile.called_from;
                match outcome {
                    // warn_if_reject: what would have been answered is
                    // logged, and the rule counts as DUNNO.
                    Outcome::Reject(reply) if chain_rule.warn => {
                        let reply = match &defer_if_reject {
                            Some(deferral) if !reply.is_temporary() => deferral.clone(),
                            _ => reply,
                        };
                        let action = format_reply(&reply, stage, called_from, self.req);
                        self.would_refuse(action, rule_name(), "warn_if_reject");
                    }
                    Outcome::DeferIfPermit(reply) if chain_rule.warn => {
                        let action = defer_if_permit_action(&reply, stage, called_from, self.req);
                        self.would_refuse(action, rule_name(), "warn_if_reject");
                    }
                    Outcome::Dunno => {}
                    Outcome::Permit => break,
                    Outcome::Reject(reply) => {
                        let reply = match defer_if_reject.take() {
                            Some(deferral) if !reply.is_temporary() => {
                                self.step(|| {
                                    format!("the reject becomes the pending {deferral} (defer_if_reject)")
                                });
                                deferral
                            }
                            _ => reply,
                        };
                        return Some((reply, stage, rule_name()));
                    }
                    Outcome::DeferIfPermit(reply) => {
                        if self.defer_if_permit.is_none() {
                            self.defer_if_permit = Some((reply, stage, rule_name()));
                        }
                    }
                    Outcome::DeferIfReject(reply) => {
                        defer_if_reject.get_or_insert(reply);
                    }
                    Outcome::Pass(action) => self.passed.push((action, rule_name())),
                    Outcome::PassPermit(action) => {
                        self.passed.push((action, rule_name()));
                        break;
                    }
                }
            }
        }
        None
    }

    /// The answer when nothing rejected: a pending deferral, else the
    /// passed-through action that matters most, else a header an earlier
    /// request of the transaction could not carry, else DUNNO. One response
    /// carries one action: an enforcement action (HOLD, DISCARD, REDIRECT,
    /// FILTER, BCC, HANGUP) always wins over a header, whichever rule came
    /// first, and a header over a WARN or INFO; the others are dropped
    /// (and traced). A PREPEND already sent in this transaction is not sent
    /// again (Postfix would add the header once per RCPT); one that is due
    /// but not sent is kept for the next request of the transaction that
    /// can carry it (the next RCPT, else DATA).
    fn final_action(&mut self, state: &State) -> (Action, Option<Arc<str>>) {
        if self.profile.mode == Mode::Warn
            && let Some((reply, stage, rule)) = self.defer_if_permit.take()
        {
            let action = defer_if_permit_action(&reply, stage, self.profile.called_from, self.req);
            self.would_refuse(action, rule, "mode warn");
        }
        self.passed_action(state)
    }

    /// The answer when nothing refused, or (mode warn) what passed before
    /// the would-be refusal (see [`Run::final_action`]): a pending
    /// deferral, else the passed-through action that matters most, else a
    /// header kept from an earlier request, else DUNNO.
    fn passed_action(&mut self, state: &State) -> (Action, Option<Arc<str>>) {
        // The transaction memory serves RCPT and DATA: at MAIL Postfix may
        // still send the previous transaction's instance
        // (smtpd_delay_reject = no), and END-OF-MESSAGE carries no header
        // and has no later request to pass one to.
        let remembers = matches!(
            self.req.state(),
            ProtocolState::Rcpt | ProtocolState::Data | ProtocolState::Other
        );
        // After DATA comes only END-OF-MESSAGE: nothing to keep for.
        let keeps = remembers && self.req.state() != ProtocolState::Data;
        let passed = std::mem::take(&mut self.passed);
        let deferral = self.defer_if_permit.take();
        // The first of the highest rank, among the headers not sent yet.
        let mut chosen: Option<(usize, PassRank)> = None;
        let mut tickets = Vec::with_capacity(passed.len());
        for (i, (action, rule)) in passed.iter().enumerate() {
            let rank = PassRank::of(action);
            let ticket = (rank.keepable() && remembers)
                .then(|| state.transactions.ticket(self.req, action))
                .flatten();
            if rank == PassRank::Header
                && ticket
                    .as_ref()
                    .is_some_and(|t| state.transactions.was_sent(t))
            {
                self.step(|| {
                    format!(
                        "{rule}: {:?} already sent in this transaction",
                        action.to_string()
                    )
                });
                tickets.push(None);
                continue;
            }
            if chosen.is_none_or(|(_, best)| rank < best) {
                chosen = Some((i, rank));
            }
            tickets.push(Some((ticket, rank)));
        }
        let rank = if deferral.is_some() {
            None
        } else {
            chosen.map(|(_, rank)| rank)
        };
        // What an earlier request of the transaction could not carry goes
        // first when it ranks higher; a header needs a request that Postfix
        // lets carry one (not END-OF-MESSAGE).
        let kept = if deferral.is_none() && remembers {
            let below = rank.map_or(u8::MAX, |r| r as u8);
            state.transactions.take_kept(self.req, below)
        } else {
            None
        };
        let chosen = chosen
            .filter(|_| deferral.is_none() && kept.is_none())
            .map(|(i, _)| i);
        let mut answer = None;
        for (i, ((action, rule), ticket)) in passed.into_iter().zip(tickets).enumerate() {
            let Some((ticket, rank)) = ticket else {
                continue;
            };
            if Some(i) == chosen {
                if rank == PassRank::Header
                    && let Some(ticket) = ticket
                {
                    state.transactions.record(ticket);
                }
                answer = Some((action, rule));
            } else if let Some(ticket) = ticket.filter(|_| keeps) {
                self.step(|| format!("{rule}: {:?} kept for a later request", action.to_string()));
                state
                    .transactions
                    .keep_for_later(ticket, &action, rank as u8);
            } else {
                self.step(|| {
                    format!(
                        "{rule}: {:?} dropped: one response carries one action",
                        action.to_string()
                    )
                });
            }
        }
        if let Some((reply, stage, rule)) = deferral {
            let action = defer_if_permit_action(&reply, stage, self.profile.called_from, self.req);
            return (action, Some(rule));
        }
        if let Some(kept) = kept {
            self.step(|| {
                format!(
                    "{:?}: kept from an earlier request, sent now",
                    kept.to_string()
                )
            });
            return (kept, Some(Arc::from("kept from an earlier request")));
        }
        match answer {
            Some((action, rule)) => (action, Some(rule)),
            None => (Action::Dunno, None),
        }
    }
}

/// Which passed-through action an answer carries when several are due:
/// the lowest rank, then the first in chain order. Enforcement actions
/// come first, the one that decides most about the message first (after
/// DISCARD nothing else matters; a HOLD must not lose to a BCC); then a
/// header; then what only Postfix's log sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum PassRank {
    Hangup,
    Discard,
    Hold,
    Redirect,
    Filter,
    Bcc,
    /// PREPEND: once per transaction.
    Header,
    /// WARN, INFO: a log line at Postfix.
    Log,
}

impl PassRank {
    fn of(action: &Action) -> PassRank {
        match action.class() {
            ActionClass::Hangup => PassRank::Hangup,
            ActionClass::Discard => PassRank::Discard,
            ActionClass::Hold => PassRank::Hold,
            ActionClass::Redirect => PassRank::Redirect,
            ActionClass::Filter => PassRank::Filter,
            ActionClass::Bcc => PassRank::Bcc,
            ActionClass::Prepend => PassRank::Header,
            _ => PassRank::Log,
        }
    }

    /// Whether an action that this answer cannot carry waits for a later
    /// request of the transaction (a log line does not).
    fn keepable(self) -> bool {
        self < PassRank::Log
    }
}

/// `code dsn text`, the text prefixed with `<name>: <Class> rejected: ` when
/// the deciding stage is not the Postfix list that called rpol (Postfix adds
/// that list's own prefix itself).
pub fn format_reply(reply: &Reply, stage: Stage, called_from: Stage, req: &Request) -> Action {
    let text = prefixed_text(reply, stage, called_from, req);
    Action::reply(reply.code, &reply.dsn, text)
}

/// The answer of a pending `defer_if_permit`.
fn defer_if_permit_action(
    reply: &Reply,
    stage: Stage,
    called_from: Stage,
    req: &Request,
) -> Action {
    let text = prefixed_text(reply, stage, called_from, req);
    Action::defer_if_permit(&reply.dsn, text)
}

fn prefixed_text(reply: &Reply, stage: Stage, called_from: Stage, req: &Request) -> String {
    if stage == called_from || reply.bare {
        return reply.text.clone();
    }
    if reply.named {
        format!(
            "<{}>: {} rejected: {}",
            stage.reply_name(req),
            stage.class(),
            reply.text
        )
    } else {
        format!("{} rejected: {}", stage.class(), reply.text)
    }
}
