//! SMTP replies as rpol hands them to Postfix: a code, an enhanced status
//! code (RFC 3463) and the text Postfix puts after `<Class> rejected: `.
//!
//! Postfix forces the DSN class digit to match the reply code
//! (smtpd_check_reject); rpol does the same before it answers so that the
//! logged action is what the SMTP client will see. The chain makes the
//! answer of a reply (`protocol::Action::reply`, cut to its byte limit).

use std::fmt;

/// A reject or defer reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `X.Y.Z`, its first digit equal to the first digit of `code`.
    pub dsn: String,
    pub text: String,
    /// Whether Postfix writes `<name>: ` before `<Class> rejected:` for this
    /// reply. Postfix omits it for reject_unknown_client_hostname and
    /// reject_unknown_reverse_client_hostname (smtpd_check.c).
    pub named: bool,
    /// Whether Postfix writes the text alone, with no `<name>: <Class>
    /// rejected: ` before it: the DNS list restrictions
    /// (smtpd_check.c rbl_reject_reply, DEFER_IF_REJECT of permit_dnswl_*),
    /// whose text says what was listed.
    pub bare: bool,
}

impl Reply {
    /// A reply with Postfix's usual `<name>: <Class> rejected:` form.
    pub fn new(code: u16, dsn: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            dsn: fix_dsn_class(code, dsn),
            text: text.into(),
            named: true,
            bare: false,
        }
    }

    /// A reply whose text Postfix writes without the `<name>: ` part.
    pub fn unnamed(code: u16, dsn: &str, text: impl Into<String>) -> Reply {
        Reply {
            named: false,
            ..Reply::new(code, dsn, text)
        }
    }

    /// A reply whose text Postfix writes alone, without any prefix.
    pub fn bare(code: u16, dsn: &str, text: impl Into<String>) -> Reply {
        Reply {
            bare: true,
            ..Reply::new(code, dsn, text)
        }
    }

    pub fn is_temporary(&self) -> bool {
        self.code / 100 == 4
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.dsn, self.text)
    }
}

/// Gives `dsn` the class digit of `code` (4.x.x for 4xx, 5.x.x for 5xx), as
/// Postfix does for every reply it sends.
pub fn fix_dsn_class(code: u16, dsn: &str) -> String {
    let class = match code / 100 {
        4 => '4',
        5 => '5',
        _ => return dsn.to_string(),
    };
    let mut out = String::with_capacity(dsn.len());
    out.push(class);
    out.push_str(dsn.get(1..).unwrap_or(""));
    out
}

/// True for an RFC 3463 enhanced status code `[245].D{1,3}.D{1,3}`.
pub fn is_dsn(word: &str) -> bool {
    let mut parts = word.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(class, "2" | "4" | "5")
        && [subject, detail]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Splits an optional leading DSN off `text` (Postfix 2.3+ table results:
/// "if text starts with a valid D.SSS.DDD, that becomes the DSN").
pub fn split_dsn(text: &str) -> (Option<&str>, &str) {
    let text = text.trim_start();
    let (first, rest) = text.split_once([' ', '\t']).unwrap_or((text, ""));
    if is_dsn(first) {
        (Some(first), rest.trim_start())
    } else {
        (None, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_class_follows_code() {
        assert_eq!(Reply::new(450, "5.7.1", "x").dsn, "4.7.1");
        assert_eq!(Reply::new(554, "4.7.1", "x").dsn, "5.7.1");
        assert_eq!(Reply::new(550, "5.7.23", "x").to_string(), "550 5.7.23 x");
    }

    #[test]
    fn dsn_syntax() {
        assert!(is_dsn("5.7.1"));
        assert!(is_dsn("4.1.10"));
        assert!(!is_dsn("5.7"));
        assert!(!is_dsn("6.7.1"));
        assert!(!is_dsn("5.7.1234"));
        assert_eq!(split_dsn("5.7.1 go away"), (Some("5.7.1"), "go away"));
        assert_eq!(split_dsn("go away"), (None, "go away"));
        assert_eq!(split_dsn("4.7.1"), (Some("4.7.1"), ""));
    }
}
