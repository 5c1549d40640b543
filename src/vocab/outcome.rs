//! What one rule says about a request, and how an access(5) result word
//! becomes that (Postfix's check_table_result, reference section 1.3).

use super::reply::{Reply, split_dsn};
use crate::protocol::{Action, ActionClass};

/// The result of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided here: try the next rule.
    Dunno,
    /// Ends the current stage only (Postfix: a PERMIT ends its own list).
    Permit,
    /// Ends the whole chain with this reply (4xx: defer, 5xx: reject).
    Reject(Reply),
    /// Remember a deferral; answer it at the end unless something rejects.
    DeferIfPermit(Reply),
    /// Turn a later 5xx of this stage into this 4xx.
    DeferIfReject(Reply),
    /// An action Postfix itself carries out (PREPEND, WARN, INFO, HOLD,
    /// FILTER, REDIRECT, BCC, HANGUP): passed through, evaluation goes on.
    Pass(Action),
    /// DISCARD: passed through, and like OK it ends the stage.
    PassPermit(Action),
}

impl Outcome {
    /// Short word for traces.
    pub fn label(&self) -> String {
        match self {
            Outcome::Dunno => "DUNNO".into(),
            Outcome::Permit => "PERMIT (ends this stage)".into(),
            Outcome::Reject(r) if r.is_temporary() => format!("DEFER {r}"),
            Outcome::Reject(r) => format!("REJECT {r}"),
            Outcome::DeferIfPermit(r) => format!("DEFER_IF_PERMIT {r}"),
            Outcome::DeferIfReject(r) => format!("DEFER_IF_REJECT {r}"),
            Outcome::Pass(a) => format!("{a} (passed to Postfix, evaluation goes on)"),
            Outcome::PassPermit(a) => format!("{a} (passed to Postfix, ends this stage)"),
        }
    }
}

/// Reply codes an access result uses; Postfix's parameters of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessCodes {
    /// `access_map_reject_code`, default 554.
    pub reject: u16,
    /// `access_map_defer_code`, default 450.
    pub defer: u16,
}

impl Default for AccessCodes {
    fn default() -> Self {
        AccessCodes {
            reject: 554,
            defer: 450,
        }
    }
}

/// Why an access result cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("empty result (Postfix would accept with a warning); write OK or DUNNO")]
    Empty,
    #[error("{0:?}: lookup tables are not allowed in an access result")]
    Table(String),
    #[error(
        "{0:?} is not an access(5) action; restriction classes in table results are not supported by rpol"
    )]
    Unknown(String),
    #[error("{0:?} needs text after the code, else Postfix reads it as OK")]
    BareCode(String),
    #[error("{0} needs {1}")]
    Malformed(&'static str, &'static str),
}

/// Parses an access(5) right-hand side, in Postfix's order of tests.
pub fn parse_action(value: &str, codes: AccessCodes) -> Result<Outcome, ActionError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ActionError::Empty);
    }
    let (word, rest) = match value.split_once([' ', '\t']) {
        Some((w, r)) => (w, r.trim_start()),
        None => (value, ""),
    };
    let upper = word.to_ascii_uppercase();
    let pass = |class| Outcome::Pass(Action::written(class, value));
    let with_text = |code: u16, default_dsn: &str, default_text: &str| {
        let (dsn, text) = split_dsn(rest);
        let text = if text.is_empty() { default_text } else { text };
        Reply::new(code, dsn.unwrap_or(default_dsn), text)
    };
    let outcome = match upper.as_str() {
        "DUNNO" => Outcome::Dunno,
        "REJECT" => Outcome::Reject(with_text(codes.reject, "5.7.1", "Access denied")),
        "DEFER" => Outcome::Reject(with_text(codes.defer, "4.7.1", "Access denied")),
        "DEFER_IF_PERMIT" => {
            Outcome::DeferIfPermit(with_text(codes.defer, "4.7.1", "Service unavailable"))
        }
        "DEFER_IF_REJECT" => {
            Outcome::DeferIfReject(with_text(codes.defer, "4.7.1", "Service unavailable"))
        }
        "HANGUP" => pass(ActionClass::Hangup),
        "INFO" => pass(ActionClass::Info),
        "WARN" => pass(ActionClass::Warn),
        "HOLD" => pass(ActionClass::Hold),
        "FILTER" if rest.contains(':') => pass(ActionClass::Filter),
        "FILTER" => return Err(ActionError::Malformed("FILTER", "transport:destination")),
        "REDIRECT" if rest.contains('@') => pass(ActionClass::Redirect),
        "BCC" if rest.contains('@') => pass(ActionClass::Bcc),
        "REDIRECT" => return Err(ActionError::Malformed("REDIRECT", "user@domain")),
        "BCC" => return Err(ActionError::Malformed("BCC", "user@domain")),
        "PREPEND" if header_like(rest) => {
            Outcome::Pass(Action::prepend_written(value, value.len() - rest.len()))
        }
        "PREPEND" => return Err(ActionError::Malformed("PREPEND", "\"Name: text\"")),
        "DISCARD" => Outcome::PassPermit(Action::written(ActionClass::Discard, value)),
        "OK" | "RELAY" => Outcome::Permit,
        _ if word.bytes().all(|b| b.is_ascii_digit()) => numeric(word, rest)?,
        _ if value.contains(':') => return Err(ActionError::Table(value.to_string())),
        _ => return Err(ActionError::Unknown(value.to_string())),
    };
    Ok(outcome)
}

/// `4NN text` / `5NN text` reject with that code; any other all-digit word
/// means OK (the pop-before-smtp convention), a trap rpol refuses for
/// 4xx/5xx without text.
fn numeric(word: &str, rest: &str) -> Result<Outcome, ActionError> {
    let code: u16 = match word.parse() {
        Ok(code) if word.len() == 3 => code,
        _ => return Ok(Outcome::Permit),
    };
    if !(400..600).contains(&code) {
        return Ok(Outcome::Permit);
    }
    if rest.is_empty() {
        return Err(ActionError::BareCode(word.to_string()));
    }
    let (dsn, text) = split_dsn(rest);
    let default = if code < 500 { "4.7.1" } else { "5.7.1" };
    let text = if text.is_empty() {
        "Access denied"
    } else {
        text
    };
    Ok(Outcome::Reject(Reply::new(
        code,
        dsn.unwrap_or(default),
        text,
    )))
}

/// PREPEND needs `Name: value` with a header-name of printable ASCII.
fn header_like(text: &str) -> bool {
    match text.split_once(':') {
        Some((name, _)) => {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Result<Outcome, ActionError> {
        parse_action(v, AccessCodes::default())
    }

    #[test]
    fn postfix_action_words() {
        assert_eq!(p("OK"), Ok(Outcome::Permit));
        assert_eq!(p("relay"), Ok(Outcome::Permit));
        assert_eq!(p("dunno whatever"), Ok(Outcome::Dunno));
        assert_eq!(
            p("REJECT"),
            Ok(Outcome::Reject(Reply::new(554, "5.7.1", "Access denied")))
        );
        assert_eq!(
            p("REJECT 5.7.2 no thanks"),
            Ok(Outcome::Reject(Reply::new(554, "5.7.2", "no thanks")))
        );
        assert_eq!(
            p("DEFER"),
            Ok(Outcome::Reject(Reply::new(450, "4.7.1", "Access denied")))
        );
        assert_eq!(
            p("defer_if_permit"),
            Ok(Outcome::DeferIfPermit(Reply::new(
                450,
                "4.7.1",
                "Service unavailable"
            )))
        );
        assert_eq!(
            p("550 5.1.1 gone"),
            Ok(Outcome::Reject(Reply::new(550, "5.1.1", "gone")))
        );
        assert_eq!(
            p("421 bye"),
            Ok(Outcome::Reject(Reply::new(421, "4.7.1", "bye")))
        );
        assert_eq!(p("123"), Ok(Outcome::Permit));
        assert_eq!(p("550"), Err(ActionError::BareCode("550".into())));
        assert_eq!(
            p("PREPEND X-Test: yes"),
            Ok(Outcome::Pass(Action::prepend("X-Test: yes")))
        );
        assert!(p("PREPEND nothing").is_err());
        assert_eq!(
            p("DISCARD spam"),
            Ok(Outcome::PassPermit(Action::parse("DISCARD spam")))
        );
        assert!(matches!(p("hash:/etc/x"), Err(ActionError::Table(_))));
        assert!(matches!(
            p("permit_mynetworks"),
            Err(ActionError::Unknown(_))
        ));
        assert_eq!(p(""), Err(ActionError::Empty));
    }
}
