//! The decision log line of each request, as `[log] decisions` asks, with
//! identical lines folded into a count.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::Shared;
use crate::common::lock;
use crate::log::{Decisions, Escaped, Quoted, Repeats};
use crate::policy::chain::RejectWarning;
use crate::policy::{Decision, Policy};
use crate::protocol::{Action, Request};

/// The decision line, Postfix-style: queue id first, then the action and
/// who it concerns.
pub fn decision_line(req: &Request, decision: &Decision) -> String {
    line(
        req,
        decision,
        "",
        &decision.action.to_string(),
        decision.rule.as_deref(),
    )
}

/// The line of a refusal logged instead of answered: the decision line
/// it would have been, marked as Postfix marks one (`NOQUEUE:
/// reject_warning: ...`).
pub fn reject_warning_line(req: &Request, decision: &Decision, warning: &RejectWarning) -> String {
    line(
        req,
        decision,
        "reject_warning: ",
        &warning.action.to_string(),
        Some(&warning.rule),
    )
}

fn line(
    req: &Request,
    decision: &Decision,
    mark: &str,
    action: &str,
    rule: Option<&str>,
) -> String {
    let queue_id = if req.queue_id.is_empty() {
        "NOQUEUE"
    } else {
        &req.queue_id
    };
    // Everything but the mark, the profile and rule names came from the
    // client. The action is quoted: its text has spaces.
    format!(
        "{}: {mark}action={} client={} from=<{}> to=<{}> helo=<{}> sasl_username=<{}> \
         protocol_state={} instance={} profile={} rule={}",
        Escaped(queue_id),
        Quoted(action),
        Escaped(&req.client_label()),
        Escaped(&req.sender),
        Escaped(&req.recipient),
        Escaped(&req.helo_name),
        Escaped(&req.sasl_username),
        Escaped(&req.protocol_state),
        Escaped(&req.instance),
        decision
            .profile
            .as_deref()
            .unwrap_or(crate::policy::NO_PROFILE),
        rule.map_or("-".to_string(), |r| format!("\"{r}\"")),
    )
}

/// Writes a decision line; to the journal with its parts as fields of
/// their own (RPOL_RULE, RPOL_ACTION, CLIENT, SENDER, RECIPIENT,
/// SASL_USERNAME, INSTANCE, QUEUE_ID, PROTOCOL_STATE, RPOL_PROFILE;
/// those the request left empty are left out), escaped as in the line.
fn write_decision(
    line: &str,
    req: &Request,
    decision: &Decision,
    action: &Action,
    rule: Option<&str>,
) {
    use tracing::field::display;
    if !crate::log::to_journal() {
        tracing::info!(target: "rpol::decision", "{line}");
        return;
    }
    let given = |v: &str| (!v.is_empty()).then(|| display(Escaped(v).to_string()));
    tracing::info!(
        target: "rpol::decision",
        rpol_rule = rule.unwrap_or("-"),
        rpol_action = %Escaped(&action.to_string()),
        rpol_profile = decision.profile.as_deref().unwrap_or(crate::policy::NO_PROFILE),
        client = %Escaped(&req.client_label()),
        sender = given(&req.sender),
        recipient = given(&req.recipient),
        sasl_username = given(&req.sasl_username),
        instance = given(&req.instance),
        queue_id = given(&req.queue_id),
        protocol_state = given(&req.protocol_state),
        "{line}"
    );
}

/// The log of the decisions: one line each, identical ones in a window
/// folded into a count, and a warning per kind of request no profile
/// matched.
#[derive(Default)]
pub struct DecisionLog {
    /// Decision lines of the current window, to fold identical ones.
    lines: Repeats,
    /// (server_port, policy_context) pairs already warned about as matching
    /// no profile; at most [`UNMATCHED_WARNINGS`].
    unmatched: Mutex<HashSet<(String, String)>>,
}

/// Distinct unmatched (port, policy_context) pairs warned about; a client
/// choosing new values cannot make the set, or the log, grow without end.
const UNMATCHED_WARNINGS: usize = 32;

impl DecisionLog {
    /// Warns, once per server_port and policy_context, that a request
    /// matched no profile and was answered DUNNO unchecked.
    pub fn warn_unmatched(&self, req: &Request, policy: &Policy) {
        let key = (req.server_port.clone(), req.policy_context.clone());
        {
            let mut seen = lock(&self.unmatched);
            if seen.len() >= UNMATCHED_WARNINGS || !seen.insert(key) {
                return;
            }
        }
        let profiles: Vec<String> = policy
            .profiles
            .iter()
            .map(|p| format!("{} ({})", p.name, p.matcher))
            .collect();
        tracing::warn!(
            "a request with server_port=\"{}\" policy_context=\"{}\" matches no profile and is answered DUNNO unchecked; profiles: {}; add a profile without match for a default",
            Escaped(&req.server_port),
            Escaped(&req.policy_context),
            profiles.join(", ")
        );
    }

    /// Logs one decision as `[log] decisions` asks; a line identical to
    /// one already written in this window is only counted
    /// ([`Repeats`]), so a flood of one request costs a line a second.
    /// Would-be refusals (`reject_warning`) are refusals here: each has a
    /// line of its own before the decision's.
    pub fn log(&self, decisions: Decisions, req: &Request, decision: &Decision) {
        let all = match decisions {
            Decisions::All => true,
            Decisions::Refusals => false,
            Decisions::None => return,
        };
        for warning in &decision.reject_warnings {
            let line = reject_warning_line(req, decision, warning);
            if self.log_line(&line) {
                write_decision(&line, req, decision, &warning.action, Some(&warning.rule));
            }
        }
        if all || decision.action.refuses() {
            let line = decision_line(req, decision);
            if self.log_line(&line) {
                let rule = decision.rule.as_deref();
                write_decision(&line, req, decision, &decision.action, rule);
            }
        }
    }

    /// Counts `line` ([`Repeats`]) and writes the counts due; whether the
    /// line itself is to be written.
    fn log_line(&self, line: &str) -> bool {
        let (summaries, write) = self.lines.note(line, std::time::Instant::now());
        log_summaries(summaries);
        write
    }

    /// Writes the counts of the window of decision lines, when it is over
    /// (or at once, with `force`).
    pub fn flush(&self, force: bool) {
        log_summaries(self.lines.flush(std::time::Instant::now(), force));
    }
}

fn log_summaries(summaries: Vec<String>) {
    for s in summaries {
        tracing::info!(target: "rpol::decision", "{s}");
    }
}

/// Writes the counts of folded decision lines once their window is over,
/// also when no request comes to close it.
pub(super) async fn flush_decision_lines(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(crate::log::REPEAT_WINDOW).await;
        shared.decisions.flush(false);
    }
}
