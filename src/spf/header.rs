//! The trace header accepted mail carries: `Received-SPF` (RFC 7208 9.1)
//! or `Authentication-Results` (RFC 8601), on one line since the policy
//! protocol cannot carry a folded header.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{Evaluation, Identity};
use viaspf::SpfResult;

/// `Received-SPF: <result> (<comment>) client-ip=...; envelope-from=...;
/// helo=...; receiver=...; identity=...; [mechanism=...|problem=...]`.
pub fn received_spf(
    e: &Evaluation,
    ip: IpAddr,
    envelope_from: &str,
    helo: &str,
    receiver: &str,
) -> String {
    let mut out = String::new();
    push_received_spf(&mut out, e, ip, envelope_from, helo, receiver);
    out
}

/// [`received_spf`], appended to `out` (after the action's `PREPEND `):
/// this runs for every accepted transaction, so it is built in place.
pub fn push_received_spf(
    out: &mut String,
    e: &Evaluation,
    ip: IpAddr,
    envelope_from: &str,
    helo: &str,
    receiver: &str,
) {
    out.reserve(200 + e.sender.len() + envelope_from.len() + helo.len() + 2 * receiver.len());
    out.push_str("Received-SPF: ");
    out.push_str(e.result_name());
    out.push_str(" (");
    push_comment_text(out, e, ip, receiver);
    out.push_str(") client-ip=");
    // An IPv4 address is a dot-atom; an IPv6 one, with colons, is quoted.
    if ip.is_ipv6() {
        out.push('"');
        push_ip(out, ip);
        out.push('"');
    } else {
        push_ip(out, ip);
    }
    for (key, text) in [
        ("envelope-from", envelope_from),
        ("helo", helo),
        ("receiver", receiver),
    ] {
        push_key(out, key);
        push_value(out, text);
    }
    push_key(out, "identity");
    out.push_str(e.identity.name());
    for (key, text) in [("mechanism", &e.mechanism), ("problem", &e.problem)] {
        if let Some(text) = text {
            push_key(out, key);
            push_value(out, text);
        }
    }
    out.push(';');
}

/// `; key=`
fn push_key(out: &mut String, key: &str) {
    out.push_str("; ");
    out.push_str(key);
    out.push('=');
}

/// `Authentication-Results: <authserv-id>; spf=<result> (<comment>)
/// smtp.mailfrom=<sender>` (or `smtp.helo=` for the HELO identity).
pub fn authentication_results(e: &Evaluation, ip: IpAddr, authserv_id: &str) -> String {
    let property = match e.identity {
        Identity::MailFrom => format!("smtp.mailfrom={}", ar_value(&e.sender)),
        Identity::Helo => format!("smtp.helo={}", ar_value(&e.domain)),
    };
    format!(
        "Authentication-Results: {}; spf={} ({}) {}",
        ar_value(authserv_id),
        e.result_name(),
        comment(e, ip, authserv_id),
        property
    )
}

/// The conventional comment wording per result (open-spf.org).
fn comment(e: &Evaluation, ip: IpAddr, receiver: &str) -> String {
    let mut out = String::new();
    push_comment_text(&mut out, e, ip, receiver);
    out
}

/// [`comment`], appended to `out`.
fn push_comment_text(out: &mut String, e: &Evaluation, ip: IpAddr, receiver: &str) {
    let who = match e.identity {
        Identity::MailFrom => &e.sender,
        Identity::Helo => &e.domain,
    };
    push_comment(out, receiver);
    out.push_str(": ");
    // The wording before and after the name, each cut where the address
    // goes ("IP" in the conventional texts).
    let (before, after): (&[&str], &[&str]) = match &e.result {
        SpfResult::Pass => (&["domain of "], &[" designates ", " as permitted sender"]),
        SpfResult::Fail(_) => (
            &["domain of "],
            &[" does not designate ", " as permitted sender"],
        ),
        SpfResult::Softfail => (
            &["domain of transitioning "],
            &[" does not designate ", " as permitted sender"],
        ),
        SpfResult::Neutral => (
            &["", " is neither permitted nor denied by domain of "],
            &[""],
        ),
        SpfResult::None => (
            &["domain of "],
            &[" does not designate permitted sender hosts"],
        ),
        SpfResult::Temperror => (&["error in processing during lookup of domain of "], &[""]),
        SpfResult::Permerror => (&["permanent error in processing domain of "], &[": "]),
    };
    let with_ip = |out: &mut String, pieces: &[&str]| {
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                push_ip(out, ip);
            }
            out.push_str(piece);
        }
    };
    with_ip(out, before);
    push_comment(out, who);
    with_ip(out, after);
    if let SpfResult::Permerror = e.result {
        push_comment(out, e.problem.as_deref().unwrap_or("invalid record"));
    }
}

/// Appends `text` to a comment: comments may not hold unbalanced
/// parentheses or backslashes; control and non-ASCII characters are
/// replaced too (a header line is ASCII).
fn push_comment(out: &mut String, text: &str) {
    if text.bytes().all(|b| AS_IS_IN_COMMENT[usize::from(b)]) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        out.push(match c {
            '(' | ')' | '\\' => ' ',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        });
    }
}

/// Printable ASCII and space, but for `except`, by byte: a table lookup
/// per byte (these checks run over every header).
const fn printable_except(except: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = true;
        b += 1;
    }
    let mut i = 0;
    while i < except.len() {
        table[except[i] as usize] = false;
        i += 1;
    }
    table
}

/// What a comment takes as it is: no parentheses, no backslash.
const AS_IS_IN_COMMENT: [bool; 256] = printable_except(b"()\\");

/// What a quoted string takes as it is: no quote, no backslash.
const AS_IS_IN_QUOTES: [bool; 256] = printable_except(b"\"\\");

/// RFC 5322 atext, by byte.
const ATEXT: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'/'
                    | b'='
                    | b'?'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'{'
                    | b'|'
                    | b'}'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// A dot-atom (RFC 5322): atext runs separated by single dots.
fn is_dot_atom(bytes: &[u8]) -> bool {
    let mut after_dot = true;
    for &b in bytes {
        if b == b'.' {
            if after_dot {
                return false;
            }
            after_dot = true;
        } else if ATEXT[b as usize] {
            after_dot = false;
        } else {
            return false;
        }
    }
    !after_dot
}

/// A key-value value: a dot-atom as is, anything else quoted.
fn push_value(out: &mut String, text: &str) {
    if is_dot_atom(text.as_bytes()) {
        out.push_str(text);
    } else {
        push_quoted(out, text);
    }
}

/// RFC 8601 values: a token or an address as is, else quoted.
fn ar_value(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && !"()<>,;:\\\"[]?=".contains(c) || c == '@');
    if plain { text.to_string() } else { quote(text) }
}

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_quoted(&mut out, text);
    out
}

/// An address as text; IPv4 without `Display`'s padding machinery, which
/// costs more than the rest of the header.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, byte) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                crate::syntax::push_decimal(out, byte);
            }
        }
        // Display's own form for the IPv4-mapped ones (never a client's:
        // check_spf has made those IPv4).
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            let _ = write!(out, "{v6}");
        }
        IpAddr::V6(v6) => push_ipv6(out, &v6.segments()),
    }
}

/// RFC 5952 text, as `Display` writes it: lowercase hex without leading
/// zeros, the longest run of two or more zero groups (the first of equal
/// runs) as `::`.
fn push_ipv6(out: &mut String, groups: &[u16; 8]) {
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, &g) in groups.iter().enumerate() {
        if g == 0 {
            if run.1 == 0 {
                run.0 = i;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run.1 = 0;
        }
    }
    let hex = |out: &mut String, g: u16| {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let d = (g >> shift) & 0xf;
            if d != 0 || started || shift == 0 {
                out.push(char::from(DIGITS[usize::from(d)]));
                started = true;
            }
        }
    };
    let hex_groups = |out: &mut String, groups: &[u16]| {
        for (i, &g) in groups.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            hex(out, g);
        }
    };
    if best.1 < 2 {
        hex_groups(out, groups);
        return;
    }
    hex_groups(out, &groups[..best.0]);
    out.push_str("::");
    hex_groups(out, &groups[best.0 + best.1..]);
}

fn push_quoted(out: &mut String, text: &str) {
    out.push('"');
    if text.bytes().all(|b| AS_IS_IN_QUOTES[usize::from(b)]) {
        out.push_str(text);
        out.push('"');
        return;
    }
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_atoms_as_rfc_5322_defines_them() {
        // The definition, spelled out: non-empty, no dot at either end,
        // no two dots together, every other byte atext.
        let atext = "!#$%&'*+-/=?^_`{|}~";
        let reference = |t: &str| {
            !t.is_empty()
                && !t.starts_with('.')
                && !t.ends_with('.')
                && !t.contains("..")
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || atext.contains(c))
        };
        for t in [
            "",
            ".",
            "a",
            "a.b",
            ".a",
            "a.",
            "a..b",
            "mail.example.com",
            "user+tag",
            "x y",
            "a@b",
            "2001:db8::1",
            "\"q\"",
            "é",
            "a.b.c.d",
            "{|}~",
            "a\u{0}b",
        ] {
            assert_eq!(is_dot_atom(t.as_bytes()), reference(t), "{t:?}");
        }
        for b in 0..=255u8 {
            let t = [b'a', b, b'z'];
            let expect = b == b'.' || (b.is_ascii() && reference(&char::from(b).to_string()));
            assert_eq!(is_dot_atom(&t), expect, "byte {b}");
        }
    }

    proptest::proptest! {
        /// Groups drawn mostly from 0 and 1, so that runs of zeros of
        /// every length and place come up.
        #[test]
        fn ipv6_text_as_display(groups in proptest::array::uniform8(
            proptest::prop_oneof![3 => proptest::strategy::Just(0u16), 1 => 0u16..=0xffff, 1 => proptest::strategy::Just(1u16)]
        )) {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(groups));
            let mut out = String::new();
            push_ip(&mut out, ip);
            proptest::prop_assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn ip_text_as_display() {
        for text in [
            "::",
            "::1",
            "1::",
            "1:0:0:1:0:0:0:1",
            "1:0:0:0:1:0:0:1",
            "0:1:0:1:0:1:0:1",
            "2001:db8:0:0:1:0:0:1",
            "::ffff:192.0.2.1",
            "fe80::1:2",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string(), "{text}");
        }
        for n in [0u8, 7, 10, 99, 100, 255] {
            let ip = IpAddr::from([n, 0, 10, 255 - n]);
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mut out = String::new();
        push_ip(&mut out, v6);
        assert_eq!(out, "2001:db8::1");
    }

    fn eval(result: SpfResult, identity: Identity) -> Evaluation {
        Evaluation {
            identity,
            sender: "myname@example.com".into(),
            domain: "example.com".into(),
            result,
            mechanism: Some("ip4:203.0.113.0/24".into()),
            problem: None,
            uses_local_part: false,
            cacheable: true,
            lookups: vec![],
        }
    }

    #[test]
    fn received_spf_matches_the_rfc_example_shape() {
        let e = eval(SpfResult::Pass, Identity::MailFrom);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            received_spf(
                &e,
                ip,
                "myname@example.com",
                "foo.example.com",
                "mybox.example.org"
            ),
            "Received-SPF: pass (mybox.example.org: domain of myname@example.com designates 203.0.113.1 as permitted sender) \
             client-ip=203.0.113.1; envelope-from=\"myname@example.com\"; helo=foo.example.com; \
             receiver=mybox.example.org; identity=mailfrom; mechanism=\"ip4:203.0.113.0/24\";"
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(
            received_spf(&e, v6, "", "[2001:db8::1]", "r")
                .contains("client-ip=\"2001:db8::1\"; envelope-from=\"\"; helo=\"[2001:db8::1]\"")
        );
    }

    #[test]
    fn as_is_tables_as_the_checks_they_replace() {
        for b in 0..=255u8 {
            let printable = b.is_ascii_graphic() || b == b' ';
            let comment = printable && !matches!(b, b'(' | b')' | b'\\');
            let quoted = printable && b != b'"' && b != b'\\';
            assert_eq!(AS_IS_IN_COMMENT[usize::from(b)], comment, "{b:#x}");
            assert_eq!(AS_IS_IN_QUOTES[usize::from(b)], quoted, "{b:#x}");
        }
    }

    /// client-ip for every result, also for the wordings whose comment
    /// does not name the address.
    #[test]
    fn client_ip_for_every_result() {
        let results = [
            SpfResult::Pass,
            SpfResult::Fail(viaspf::ExplanationString::Default),
            SpfResult::Softfail,
            SpfResult::Neutral,
            SpfResult::None,
            SpfResult::Temperror,
            SpfResult::Permerror,
        ];
        for result in results {
            let names_ip = !matches!(
                result,
                SpfResult::None | SpfResult::Temperror | SpfResult::Permerror
            );
            for (ip, field) in [
                ("203.0.113.1", "client-ip=203.0.113.1;"),
                ("2001:db8::1", "client-ip=\"2001:db8::1\";"),
                ("::", "client-ip=\"::\";"),
                (
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                    "client-ip=\"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\";",
                ),
            ] {
                let e = eval(result.clone(), Identity::MailFrom);
                let header = received_spf(&e, ip.parse().unwrap(), "a@b.example", "h", "r");
                assert!(header.contains(field), "{header}");
                let comment = &header[..header.find(") client-ip=").unwrap()];
                assert_eq!(comment.contains(ip), names_ip, "{header}");
            }
        }
    }

    /// The open-spf.org wordings, whole.
    #[test]
    fn comment_wordings() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let cases = [
            (
                SpfResult::Pass,
                "r: domain of myname@example.com designates 192.0.2.1 as permitted sender",
            ),
            (
                SpfResult::Fail(viaspf::ExplanationString::Default),
                "r: domain of myname@example.com does not designate 192.0.2.1 as permitted sender",
            ),
            (
                SpfResult::Softfail,
                "r: domain of transitioning myname@example.com does not designate 192.0.2.1 as permitted sender",
            ),
            (
                SpfResult::Neutral,
                "r: 192.0.2.1 is neither permitted nor denied by domain of myname@example.com",
            ),
            (
                SpfResult::None,
                "r: domain of myname@example.com does not designate permitted sender hosts",
            ),
            (
                SpfResult::Temperror,
                "r: error in processing during lookup of domain of myname@example.com",
            ),
            (
                SpfResult::Permerror,
                "r: permanent error in processing domain of myname@example.com: invalid record",
            ),
        ];
        for (result, text) in cases {
            assert_eq!(comment(&eval(result, Identity::MailFrom), ip, "r"), text);
        }
    }

    #[test]
    fn authentication_results_form() {
        let e = eval(SpfResult::Softfail, Identity::MailFrom);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            authentication_results(&e, ip, "mx.example.org"),
            "Authentication-Results: mx.example.org; spf=softfail (mx.example.org: domain of transitioning myname@example.com does not designate 203.0.113.1 as permitted sender) smtp.mailfrom=myname@example.com"
        );
        let e = eval(SpfResult::None, Identity::Helo);
        assert!(authentication_results(&e, ip, "mx").ends_with("smtp.helo=example.com"));
    }
}
