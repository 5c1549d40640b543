//! Reply templates of DNS lists: Postfix's `default_rbl_reply` and the
//! values of `rbl_reply_maps`, expanded as smtpd's rbl_reject_reply does
//! (mac_expand): `$name`, `${name}`, `$(name)`, `${name?text}` (text when
//! the value is not empty), `${name:text}` (text when it is empty), `$$`.
//! In every value put in, a byte other than printable ASCII becomes a
//! space, as it does in the reply Postfix sends (smtpd_check_reject's
//! printable(); seen with Postfix 3.7 for a TXT record in UTF-8).

use std::fmt::Write as _;

/// Postfix's `default_rbl_reply`.
pub const DEFAULT_RBL_REPLY: &str = "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}";

/// The names a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// `$rbl_code`: `maps_rbl_reject_code`.
    Code,
    /// `$rbl_domain`: the list's domain, without its `=filter`.
    Domain,
    /// `$rbl_reason`, `$rbl_txt`: the TXT records, or empty.
    Reason,
    /// `$rbl_what`: the address or name that is listed.
    What,
    /// `$rbl_class`: `Client host`, `Helo command`, ...
    Class,
    ClientAddress,
    ClientName,
    ReverseClientName,
    HeloName,
    Sender,
    Recipient,
}

impl Name {
    fn parse(text: &str) -> Option<Name> {
        Some(match text {
            "rbl_code" => Name::Code,
            "rbl_domain" => Name::Domain,
            "rbl_reason" | "rbl_txt" => Name::Reason,
            "rbl_what" => Name::What,
            "rbl_class" => Name::Class,
            "client_address" => Name::ClientAddress,
            "client_name" => Name::ClientName,
            "reverse_client_name" => Name::ReverseClientName,
            "helo_name" => Name::HeloName,
            "sender" => Name::Sender,
            "recipient" => Name::Recipient,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Name),
    /// `${name?body}` (when_set) or `${name:body}`.
    Cond {
        name: Name,
        when_set: bool,
        body: Vec<Piece>,
    },
}

/// A compiled reply template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Compiles `text`; an unknown `$name` or an unclosed `${` is an error.
    pub fn parse(text: &str) -> Result<Template, String> {
        let (pieces, rest) = parse_pieces(text, None)?;
        debug_assert!(rest.is_empty());
        Ok(Template { pieces })
    }

    /// Expands the template with `value` giving each name's value.
    pub fn expand(&self, value: &dyn Fn(Name) -> String) -> String {
        let mut out = String::new();
        expand_into(&self.pieces, value, &mut out);
        out
    }
}

fn expand_into(pieces: &[Piece], value: &dyn Fn(Name) -> String, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Value(name) => push_filtered(out, &value(*name)),
            Piece::Cond {
                name,
                when_set,
                body,
            } => {
                if value(*name).is_empty() != *when_set {
                    expand_into(body, value, out);
                }
            }
        }
    }
}

/// Printable ASCII as is; any other byte a space.
fn push_filtered(out: &mut String, value: &str) {
    for b in value.bytes() {
        if (0x20..=0x7e).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push(' ');
        }
    }
}

/// Parses until `close` (or the end when `None`); returns the pieces and
/// the text after the closing character.
fn parse_pieces(mut text: &str, close: Option<char>) -> Result<(Vec<Piece>, &str), String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    loop {
        let Some(c) = text.chars().next() else {
            if let Some(close) = close {
                return Err(format!("missing \"{close}\""));
            }
            break;
        };
        if Some(c) == close {
            text = &text[1..];
            break;
        }
        if c != '$' {
            literal.push(c);
            text = &text[c.len_utf8()..];
            continue;
        }
        text = &text[1..];
        let open = text.chars().next();
        match open {
            Some('$') => {
                literal.push('$');
                text = &text[1..];
                continue;
            }
            Some('{') | Some('(') => {
                let close_with = if open == Some('{') { '}' } else { ')' };
                text = &text[1..];
                let end = text
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len());
                let name = lookup(&text[..end])?;
                text = &text[end..];
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                match text.chars().next() {
                    Some(c) if c == close_with => {
                        text = &text[1..];
                        pieces.push(Piece::Value(name));
                    }
                    Some(op @ ('?' | ':')) => {
                        let (body, rest) = parse_pieces(&text[1..], Some(close_with))?;
                        text = rest;
                        pieces.push(Piece::Cond {
                            name,
                            when_set: op == '?',
                            body,
                        });
                    }
                    _ => {
                        return Err(format!(
                            "missing \"{close_with}\" after ${}",
                            &name_text(name)
                        ));
                    }
                }
            }
            _ => {
                let end = text
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len());
                if end == 0 {
                    return Err("\"$\" not followed by a name (write $$ for a dollar)".into());
                }
                let name = lookup(&text[..end])?;
                text = &text[end..];
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Value(name));
            }
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok((pieces, text))
}

fn lookup(name: &str) -> Result<Name, String> {
    Name::parse(name).ok_or_else(|| {
        format!(
            "unknown name ${name} (known: rbl_code, rbl_domain, rbl_reason, rbl_txt, rbl_what, rbl_class, client_address, client_name, reverse_client_name, helo_name, sender, recipient)"
        )
    })
}

fn name_text(name: Name) -> String {
    let mut s = String::new();
    let _ = write!(s, "{name:?}");
    s.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(name: Name) -> String {
        match name {
            Name::Code => "554".into(),
            Name::Domain => "zen.example".into(),
            Name::Reason => String::new(),
            Name::What => "203.0.113.5".into(),
            Name::Class => "Client host".into(),
            _ => "x\u{e9}y".into(),
        }
    }

    #[test]
    fn postfix_default_reply() {
        let t = Template::parse(DEFAULT_RBL_REPLY).unwrap();
        assert_eq!(
            t.expand(&values),
            "554 Service unavailable; Client host [203.0.113.5] blocked using zen.example"
        );
        let with_reason = |n| match n {
            Name::Reason => "Listed; see https://x.example/?q=1 \u{1}\t".into(),
            n => values(n),
        };
        assert_eq!(
            t.expand(&with_reason),
            "554 Service unavailable; Client host [203.0.113.5] blocked using zen.example; Listed; see https://x.example/?q=1   "
        );
    }

    #[test]
    fn forms_and_errors() {
        let t = Template::parse("$$ ${rbl_reason:none} $(rbl_code) ${client_name}").unwrap();
        // Non-ASCII is replaced byte by byte.
        assert_eq!(t.expand(&values), "$ none 554 x  y");
        assert!(Template::parse("$nope").is_err());
        assert!(Template::parse("${rbl_code").is_err());
        assert!(Template::parse("${rbl_reason?x").is_err());
        assert!(Template::parse("$ x").is_err());
    }
}
