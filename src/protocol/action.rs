//! The verdict as it goes out: one [`Action`], built typed by the rule or
//! the chain that decides and encoded once, by [`super::encode_response`].
//! Nothing reads an action's text back: its class, its reply and its
//! header are fields. The only text parsed is what an admin wrote (an
//! access(5) result, `[server] error_action`), once, when it is loaded.

use std::fmt;

/// Longest reject or defer action sent back, in bytes. Postfix cuts the
/// final SMTP reply at 510 characters (smtpd_check_reject), and the prefix
/// it adds (`<name>: <Class> rejected: `) needs room too. Only replies are
/// cut: a PREPEND header or another pass-through action goes out whole.
pub const MAX_REPLY_BYTES: usize = 450;

/// What goes after `action=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `DUNNO`: Postfix's own later restrictions decide.
    Dunno,
    /// `code dsn text`: a 4xx defers, a 5xx rejects. The text is cut so
    /// that the whole action fits [`MAX_REPLY_BYTES`] (see [`Action::reply`]).
    Reply {
        code: u16,
        dsn: String,
        text: String,
    },
    /// `DEFER_IF_PERMIT dsn text`, cut like a reply.
    DeferIfPermit { dsn: String, text: String },
    /// `PREPEND header`: `text` is the whole action, the header from
    /// `header_at` (an access table's verb keeps the case it was written in).
    Prepend { text: Box<str>, header_at: usize },
    /// Any other action, passed on as the admin or Postfix's access(5)
    /// wrote it: its class was read once, when it was loaded.
    Verbatim(Verbatim),
}

/// An action kept as written, with what was read from it at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verbatim {
    class: ActionClass,
    /// DEFER_IF_REJECT, which has no class of its own (the chain never
    /// answers one) but refuses when it is the answer.
    refuses: bool,
    text: Box<str>,
}

impl Action {
    /// A reply, its text cut at a character boundary so that `code dsn
    /// text` is at most [`MAX_REPLY_BYTES`].
    pub fn reply(code: u16, dsn: &str, text: String) -> Action {
        let head = digits(code) + 1 + dsn.len() + 1;
        Action::Reply {
            code,
            dsn: dsn.to_string(),
            text: cut(text, MAX_REPLY_BYTES.saturating_sub(head)),
        }
    }

    /// `DEFER_IF_PERMIT dsn text`, cut like [`Action::reply`].
    pub fn defer_if_permit(dsn: &str, text: String) -> Action {
        let head = "DEFER_IF_PERMIT ".len() + dsn.len() + 1;
        Action::DeferIfPermit {
            dsn: dsn.to_string(),
            text: cut(text, MAX_REPLY_BYTES.saturating_sub(head)),
        }
    }

    /// `PREPEND header`, the header written by `write` after the verb, in
    /// the action's own string.
    pub fn prepend_with(capacity: usize, write: impl FnOnce(&mut String)) -> Action {
        const VERB: &str = "PREPEND ";
        let mut text = String::with_capacity(VERB.len() + capacity);
        text.push_str(VERB);
        write(&mut text);
        Action::Prepend {
            text: text.into(),
            header_at: VERB.len(),
        }
    }

    /// `PREPEND header`.
    pub fn prepend(header: &str) -> Action {
        Action::prepend_with(header.len(), |text| text.push_str(header))
    }

    /// An access(5) `PREPEND` as written: `header_at` is where its header
    /// starts in `text`.
    pub fn prepend_written(text: &str, header_at: usize) -> Action {
        Action::Prepend {
            text: text.into(),
            header_at: header_at.min(text.len()),
        }
    }

    /// A pass-through action of a known class, as written.
    pub fn written(class: ActionClass, text: &str) -> Action {
        Action::Verbatim(Verbatim {
            class,
            refuses: false,
            text: text.into(),
        })
    }

    /// An action an admin wrote whole (`[server] error_action`): its class
    /// read from its first word, once, here.
    pub fn parse(text: &str) -> Action {
        let word = text.split([' ', '\t']).next().unwrap_or("");
        Action::Verbatim(Verbatim {
            class: ActionClass::of_word(word),
            refuses: word.eq_ignore_ascii_case("DEFER_IF_REJECT"),
            text: text.into(),
        })
    }

    /// What Postfix does with the action.
    pub fn class(&self) -> ActionClass {
        match self {
            Action::Dunno => ActionClass::Dunno,
            Action::Reply { code, .. } if code / 100 == 4 => ActionClass::Defer,
            Action::Reply { .. } => ActionClass::Reject,
            Action::DeferIfPermit { .. } => ActionClass::DeferIfPermit,
            Action::Prepend { .. } => ActionClass::Prepend,
            Action::Verbatim(v) => v.class,
        }
    }

    /// Whether the action refuses: a reject, a defer or a hangup.
    pub fn refuses(&self) -> bool {
        self.class().refuses() || matches!(self, Action::Verbatim(v) if v.refuses)
    }

    /// The header of a PREPEND.
    pub fn header(&self) -> Option<&str> {
        match self {
            Action::Prepend { text, header_at } => text.get(*header_at..),
            _ => None,
        }
    }

    /// The action's text in pieces (joined, the wire text): one allocation
    /// at most is behind each, and the code of a reply is written apart.
    fn pieces(&self) -> (Option<u16>, [&str; 4]) {
        match self {
            Action::Dunno => (None, ["DUNNO", "", "", ""]),
            Action::Reply { code, dsn, text } => (Some(*code), [" ", dsn, " ", text]),
            Action::DeferIfPermit { dsn, text } => (None, ["DEFER_IF_PERMIT ", dsn, " ", text]),
            Action::Prepend { text, .. } => (None, [text, "", "", ""]),
            Action::Verbatim(v) => (None, [&v.text, "", "", ""]),
        }
    }

    /// The wire text of a pass-through action (PREPEND and the verbatim
    /// ones), borrowed; `None` for the others.
    pub fn passed_text(&self) -> Option<&str> {
        match self {
            Action::Prepend { text, .. } => Some(text),
            Action::Verbatim(v) => Some(&v.text),
            _ => None,
        }
    }

    /// Appends the action's text, unescaped, to `out`.
    pub(super) fn write_to(&self, out: &mut Vec<u8>) {
        let (code, pieces) = self.pieces();
        let mut digits = [0u8; 5];
        out.extend_from_slice(code_text(code, &mut digits).as_bytes());
        for piece in pieces {
            out.extend_from_slice(piece.as_bytes());
        }
    }
}

/// A reply code in decimal, written into `buf`; "" for none.
fn code_text(code: Option<u16>, buf: &mut [u8; 5]) -> &str {
    let Some(mut n) = code else {
        return "";
    };
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

impl fmt::Display for Action {
    /// The wire text (before control characters become spaces).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, pieces) = self.pieces();
        let mut digits = [0u8; 5];
        f.write_str(code_text(code, &mut digits))?;
        pieces.iter().try_for_each(|p| f.write_str(p))
    }
}

impl PartialEq<&str> for Action {
    fn eq(&self, other: &&str) -> bool {
        let (code, pieces) = self.pieces();
        let mut digits = [0u8; 5];
        let mut rest = *other;
        for piece in std::iter::once(code_text(code, &mut digits)).chain(pieces) {
            match rest.strip_prefix(piece) {
                Some(after) => rest = after,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

impl From<&str> for Action {
    /// [`Action::parse`].
    fn from(text: &str) -> Action {
        Action::parse(text)
    }
}

fn digits(code: u16) -> usize {
    code.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The class of an answer: what Postfix does with it. A label value, so
/// never the answer's text (which may carry client text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionClass {
    Dunno,
    /// A 5xx reply.
    Reject,
    /// A 4xx reply.
    Defer,
    DeferIfPermit,
    Prepend,
    Warn,
    Info,
    Hold,
    Filter,
    Redirect,
    Bcc,
    Hangup,
    Discard,
    /// Anything else (the chain answers none; kept so nothing is dropped).
    Other,
}

impl ActionClass {
    pub const ALL: [ActionClass; 14] = [
        ActionClass::Dunno,
        ActionClass::Reject,
        ActionClass::Defer,
        ActionClass::DeferIfPermit,
        ActionClass::Prepend,
        ActionClass::Warn,
        ActionClass::Info,
        ActionClass::Hold,
        ActionClass::Filter,
        ActionClass::Redirect,
        ActionClass::Bcc,
        ActionClass::Hangup,
        ActionClass::Discard,
        ActionClass::Other,
    ];

    /// Postfix's word for the class.
    pub fn name(self) -> &'static str {
        match self {
            ActionClass::Dunno => "DUNNO",
            ActionClass::Reject => "REJECT",
            ActionClass::Defer => "DEFER",
            ActionClass::DeferIfPermit => "DEFER_IF_PERMIT",
            ActionClass::Prepend => "PREPEND",
            ActionClass::Warn => "WARN",
            ActionClass::Info => "INFO",
            ActionClass::Hold => "HOLD",
            ActionClass::Filter => "FILTER",
            ActionClass::Redirect => "REDIRECT",
            ActionClass::Bcc => "BCC",
            ActionClass::Hangup => "HANGUP",
            ActionClass::Discard => "DISCARD",
            ActionClass::Other => "OTHER",
        }
    }

    /// Whether an answer of this class refuses: a reject, a defer or a
    /// hangup.
    pub fn refuses(self) -> bool {
        matches!(
            self,
            ActionClass::Reject
                | ActionClass::Defer
                | ActionClass::DeferIfPermit
                | ActionClass::Hangup
        )
    }

    /// The class of an action's first word, a reply code by its first
    /// digit (only for what an admin wrote, read once at load).
    fn of_word(word: &str) -> ActionClass {
        match word.as_bytes().first() {
            Some(b'4') => return ActionClass::Defer,
            Some(b'5') => return ActionClass::Reject,
            _ => {}
        }
        ActionClass::ALL[..ActionClass::ALL.len() - 1]
            .iter()
            .copied()
            .find(|c| c.name().eq_ignore_ascii_case(word))
            .unwrap_or(ActionClass::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_classes() {
        let cases = [
            ("DUNNO", ActionClass::Dunno),
            (
                "550 5.7.1 <x@y>: Sender address rejected",
                ActionClass::Reject,
            ),
            ("450 4.7.1 Try again", ActionClass::Defer),
            ("DEFER_IF_PERMIT 4.7.1 SPF", ActionClass::DeferIfPermit),
            ("PREPEND Received-SPF: pass", ActionClass::Prepend),
            ("prepend X: y", ActionClass::Prepend),
            ("discard", ActionClass::Discard),
            ("HOLD", ActionClass::Hold),
            ("OTHER", ActionClass::Other),
            ("frob", ActionClass::Other),
            ("", ActionClass::Other),
        ];
        for (action, want) in cases {
            assert_eq!(Action::parse(action).class(), want, "{action}");
        }
        for (i, c) in ActionClass::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    /// The typed actions say what their text says.
    #[test]
    fn built_actions_have_their_class_and_text() {
        let cases = [
            (Action::Dunno, "DUNNO", ActionClass::Dunno),
            (
                Action::reply(550, "5.7.1", "no".into()),
                "550 5.7.1 no",
                ActionClass::Reject,
            ),
            (
                Action::reply(421, "4.7.0", "bye".into()),
                "421 4.7.0 bye",
                ActionClass::Defer,
            ),
            (
                Action::defer_if_permit("4.7.1", "later".into()),
                "DEFER_IF_PERMIT 4.7.1 later",
                ActionClass::DeferIfPermit,
            ),
            (
                Action::prepend("X: 1"),
                "PREPEND X: 1",
                ActionClass::Prepend,
            ),
            (
                Action::prepend_written("prepend  X: 1", 9),
                "prepend  X: 1",
                ActionClass::Prepend,
            ),
        ];
        for (action, text, class) in cases {
            assert_eq!(action.to_string(), text);
            assert_eq!(action, text);
            assert_ne!(action, &text[1..]);
            assert_ne!(action, &text[..text.len() - 1]);
            assert_eq!(action.class(), class, "{text}");
            let mut out = Vec::new();
            action.write_to(&mut out);
            assert_eq!(out, text.as_bytes());
        }
        assert_eq!(Action::prepend("X: 1").header(), Some("X: 1"));
        assert_eq!(
            Action::prepend_written("prepend  X: 1", 9).header(),
            Some("X: 1")
        );
    }

    #[test]
    fn refusals_are_rejects_defers_and_hangups() {
        for action in [
            "REJECT",
            "554 5.7.1 Access denied",
            "450 4.7.1 Try later",
            "DEFER_IF_PERMIT 4.7.1 Greylisted",
            "defer_if_reject 4.7.1 x",
            "DEFER 4.3.0 x",
            "HANGUP",
        ] {
            assert!(Action::parse(action).refuses(), "{action}");
        }
        for action in [
            "DUNNO",
            "OK",
            "PREPEND X-A: b",
            "HOLD",
            "DISCARD x",
            "WARN x",
        ] {
            assert!(!Action::parse(action).refuses(), "{action}");
        }
    }

    #[test]
    fn replies_are_cut_at_a_character_boundary() {
        assert_eq!(
            Action::reply(550, "5.7.1", "short".into()).to_string(),
            "550 5.7.1 short"
        );
        let long = format!("550 5.7.1 {}", "é".repeat(400));
        let cut = Action::reply(550, "5.7.1", "é".repeat(400)).to_string();
        assert!(cut.len() <= MAX_REPLY_BYTES && cut.len() >= MAX_REPLY_BYTES - 1);
        assert!(long.starts_with(&cut));
        let cut = Action::defer_if_permit("4.7.1", "é".repeat(400)).to_string();
        assert!(cut.len() <= MAX_REPLY_BYTES && cut.len() >= MAX_REPLY_BYTES - 1);
        assert!(cut.starts_with("DEFER_IF_PERMIT 4.7.1 é"));
    }
}
