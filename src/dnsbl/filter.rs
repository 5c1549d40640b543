//! The reply filter of a DNS list, `domain=127.0.0.[2..11]`: Postfix's
//! IPv4 address pattern (util/ip_match.c). Four fields separated by `.`,
//! each a decimal octet or a `[...]` of `;`-separated octets and
//! `low..high` ranges; the whole pattern may stand inside one more `[]`.

use std::fmt;
use std::net::Ipv4Addr;

/// One field of a pattern: the octet values it admits, as inclusive
/// ranges (a single octet is a range of one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field(Vec<(u8, u8)>);

/// A compiled reply filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    fields: [Field; 4],
    /// The pattern as written, for messages and traces.
    text: String,
}

impl Filter {
    /// Parses a pattern as Postfix's ip_match_parse does; the error names
    /// what was expected, as Postfix's does.
    pub fn parse(pattern: &str) -> Result<Filter, String> {
        let text = pattern.to_string();
        // A [] around the whole pattern is dropped (when the first `[`
        // closes at the very end).
        let mut body = pattern;
        if let Some(inner) = pattern.strip_prefix('[') {
            let mut level = 0;
            let mut close = None;
            for (i, c) in pattern.char_indices() {
                if c == '[' {
                    level += 1;
                } else if c == ']' {
                    level -= 1;
                    if level == 0 {
                        close = Some(i);
                        break;
                    }
                }
            }
            match close {
                None => return Err("missing \"]\" character".into()),
                Some(i) if i + 1 == pattern.len() => body = &inner[..inner.len() - 1],
                Some(_) => {}
            }
        }
        if body.is_empty() {
            return Err("empty address pattern".into());
        }
        // Ranges hold `..`: split fields at dots outside brackets.
        let mut fields = Vec::with_capacity(4);
        let mut current = String::new();
        let mut depth = 0;
        for c in body.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            if c == '.' && depth == 0 {
                fields.push(std::mem::take(&mut current));
            } else {
                current.push(c);
            }
        }
        fields.push(current);
        if fields.len() != 4 {
            return Err(format!(
                "need four fields separated by \".\" in {pattern:?}"
            ));
        }
        let mut out: Vec<Field> = Vec::with_capacity(4);
        for field in &fields {
            out.push(parse_field(field).map_err(|e| format!("{e} in {pattern:?}"))?);
        }
        let [a, b, c, d]: [Field; 4] = out
            .try_into()
            .map_err(|_| format!("need four fields in {pattern:?}"))?;
        Ok(Filter {
            fields: [a, b, c, d],
            text,
        })
    }

    /// Whether `addr` matches every field.
    pub fn matches(&self, addr: Ipv4Addr) -> bool {
        self.fields
            .iter()
            .zip(addr.octets())
            .all(|(field, octet)| field.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&octet)))
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn octet(text: &str) -> Result<u8, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("need decimal number 0..255 at {text:?}"));
    }
    text.parse::<u8>()
        .map_err(|_| format!("need decimal number 0..255 at {text:?}"))
}

fn parse_field(field: &str) -> Result<Field, String> {
    let Some(inner) = field.strip_prefix('[') else {
        return Ok(Field(vec![{
            let o = octet(field)?;
            (o, o)
        }]));
    };
    let Some(inner) = inner.strip_suffix(']') else {
        return Err(format!("need \";\" or \"]\" at {field:?}"));
    };
    let mut ranges = Vec::new();
    for member in inner.split(';') {
        match member.split_once("..") {
            Some((lo, hi)) => {
                let (lo, hi) = (octet(lo)?, octet(hi).map_err(|_| range_error(member))?);
                if lo > hi {
                    return Err(range_error(member));
                }
                ranges.push((lo, hi));
            }
            None if member.contains('.') => return Err(range_error(member)),
            None => {
                let o = octet(member)?;
                ranges.push((o, o));
            }
        }
    }
    Ok(Field(ranges))
}

fn range_error(member: &str) -> String {
    format!("numeric range error at {member:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, addr: &str) -> bool {
        Filter::parse(pattern)
            .unwrap()
            .matches(addr.parse().unwrap())
    }

    /// Postfix's own cases (util/ip_match.in and .ref).
    #[test]
    fn postfix_ip_match_cases() {
        for ok in [
            "1.2.3.4",
            "1.2.[3].4",
            "1.2.[1..127;128..255].5",
            "1.2.3.[4]",
            "[1;2].3.4.5",
            "[127.0.0.2]",
            "127.0.0.[2..11]",
        ] {
            assert!(Filter::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1.2.300.4",
            "1.2.3000.4",
            "1.2.3.",
            "1.2.3",
            "a",
            "1.2.3;4",
            "1.2.[].4",
            "1.2.[.4",
            "1.2.].4",
            "1.2.[1-255].5",
            "1.2.[1..127.128..255].5",
            "1.2.3.[4..1]",
            "1.2.3.[4.1]",
            "1.2.3.[4.x]",
            "1.2.3.[x]",
            "1.2.3.4x",
            "",
            "[1.2.3.4",
            "1.2.3.4.5",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        assert!(m("1.2.[3..11].5", "1.2.3.5"));
        assert!(!m("1.2.[3..11].5", "1.2.2.5"));
        assert!(m("1.2.[3..11].5", "1.2.11.5"));
        assert!(!m("1.2.[3..11].5", "1.2.12.5"));
        assert!(!m("1.2.[3..11].5", "1.2.11.6"));
        assert!(m("1.2.[3;5;7;9;11].5", "1.2.3.5"));
        assert!(!m("1.2.[3;5;7;9;11].5", "1.2.4.5"));
        assert!(m("1.2.[3;5;7;9;11].5", "1.2.11.5"));
        assert!(m("[1;2].3.4.5", "2.3.4.5"));
        assert!(!m("[1;2].3.4.5", "3.3.4.5"));
        assert!(m("127.0.0.[1;3;5..7]", "127.0.0.6"));
        assert!(!m("127.0.0.[1;3;5..7]", "127.0.0.4"));
        assert!(m("[127.0.0.2]", "127.0.0.2"));
    }
}
