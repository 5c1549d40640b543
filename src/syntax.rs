//! Host name, address and network syntax as Postfix checks it
//! (util/valid_hostname.c, cidr tables).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Longest host name (VALID_HOSTNAME_LEN).
const MAX_HOSTNAME: usize = 255;
/// Longest label (VALID_LABEL_LEN).
const MAX_LABEL: usize = 63;

/// Postfix's valid_hostname: letters, digits, `-`, `_` and dots; labels of
/// 1..=63 characters that neither start nor end with a hyphen; at most 255
/// characters; not entirely numeric.
pub fn valid_hostname(name: &str) -> bool {
    hostname_dots(name).is_some()
}

/// A [`valid_hostname`] with at least one dot: what Postfix's
/// `reject_non_fqdn_*` restrictions accept, and the HELO names SPF checks.
pub fn valid_fqdn(name: &str) -> bool {
    hostname_dots(name) == Some(true)
}

/// Byte classes for [`hostname_dots`], as bits: a name's bytes are OR-ed
/// together, so the loop branches only at dots. A digit is 0.
const NON_DIGIT: u8 = 1;
const DOT: u8 = 2;
const BAD: u8 = 4;

static CLASS: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'.' => DOT,
            b'0'..=b'9' => 0,
            // Where a hyphen may stand is checked per label.
            b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'_' => NON_DIGIT,
            _ => BAD,
        };
        b += 1;
    }
    t
};

/// `Some(has a dot)` when `name` is a valid host name, else `None`. One
/// pass over the bytes, each classified by a table (rules ask several
/// times per request); a label's length and hyphens are checked at its end.
fn hostname_dots(name: &str) -> Option<bool> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_HOSTNAME {
        return None;
    }
    let label_ok = |label: &[u8]| matches!(label, [first, .., last] | [first @ last] if *first != b'-' && *last != b'-' && label.len() <= MAX_LABEL);
    let mut seen = 0;
    let mut label_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let class = CLASS[usize::from(b)];
        seen |= class;
        if class == DOT {
            if !label_ok(&bytes[label_start..i]) {
                return None;
            }
            label_start = i + 1;
        }
    }
    let valid = seen & BAD == 0 && seen & NON_DIGIT != 0 && label_ok(&bytes[label_start..]);
    valid.then_some(label_start > 0)
}

/// `address` split at its last `@` (local part, domain), as
/// `rsplit_once('@')` but with a byte search, which costs a tenth as much:
/// it runs several times per request.
pub fn split_address(address: &str) -> Option<(&str, &str)> {
    let at = memchr::memrchr(b'@', address.as_bytes())?;
    // `@` is ASCII, so both sides are on character boundaries.
    Some((&address[..at], &address[at + 1..]))
}

/// The local part without its address extension (`user+ext` -> `user`),
/// when it has one: Postfix splits at the first of the
/// `recipient_delimiter` characters found, and a local part that starts
/// with one has no extension.
pub fn strip_extension<'a>(local: &'a str, delimiter: &str) -> Option<&'a str> {
    if delimiter.is_empty() {
        return None;
    }
    let cut = local.find(|c| delimiter.contains(c))?;
    (cut > 0).then(|| &local[..cut])
}

/// `text` in lower case (as `str::to_lowercase`), borrowed when it already
/// is: the usual case, on paths that run for every request.
pub fn lowercase(text: &str) -> std::borrow::Cow<'_, str> {
    if text
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(text.to_lowercase())
    }
}

/// Appends `byte` in decimal: IPv4 text by hand, as `Display`'s padding
/// machinery costs more than the rest of a header or PTR name.
pub fn push_decimal(out: &mut String, byte: u8) {
    let (h, t, o) = (byte / 100, byte / 10 % 10, byte % 10);
    if h > 0 {
        out.push(char::from(b'0' + h));
    }
    if h > 0 || t > 0 {
        out.push(char::from(b'0' + t));
    }
    out.push(char::from(b'0' + o));
}

/// Postfix's valid_hostaddr: an IPv4 dotted quad or an IPv6 address.
pub fn valid_hostaddr(text: &str) -> bool {
    text.parse::<Ipv4Addr>().is_ok() || (text.contains(':') && text.parse::<Ipv6Addr>().is_ok())
}

/// The address inside an RFC 5321 address literal `[1.2.3.4]` or
/// `[IPv6:2001:db8::1]`, if it is one and valid.
pub fn address_literal(text: &str) -> Option<IpAddr> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ipv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// One trailing dot is removed, as Postfix does before these checks.
pub fn strip_one_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// `203.0.113.0/24`, `2001:db8::/32`, or a single address.
pub fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        // Postfix rejects a pattern with host bits set ("non-null host
        // address bits"); so does rpol, since it is usually a typo.
        return (net.network() == net.addr()).then_some(net);
    }
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// valid_hostname and valid_fqdn against [`by_labels`].
    fn agrees(name: &str) -> Result<(), TestCaseError> {
        let want = by_labels(name);
        prop_assert_eq!(valid_hostname(name), want, "{:?}", name);
        prop_assert_eq!(valid_fqdn(name), want && name.contains('.'), "{:?}", name);
        Ok(())
    }

    #[test]
    fn valid_hostname_agrees_with_labels_at_the_limits() {
        for len in [62, 63, 64] {
            let label = "a".repeat(len);
            for name in [
                label.clone(),
                format!("{label}.example"),
                format!("x.{label}"),
                format!("-{label}"),
                format!("{label}-"),
            ] {
                agrees(&name).unwrap();
            }
        }
        // 255 and 256 bytes in labels of 63.
        let long = |n: usize| {
            let mut s = String::new();
            while s.len() < n {
                if !s.is_empty() {
                    s.push('.');
                }
                let room = (n - s.len()).min(63);
                s.push_str(&"b".repeat(room));
            }
            s
        };
        for n in [254, 255, 256] {
            agrees(&long(n)).unwrap();
        }
        for name in [
            "",
            ".",
            "a.",
            ".a",
            "-",
            "a",
            "1",
            "1.2",
            "1.a",
            "a-b",
            "_",
            "é.example",
        ] {
            agrees(name).unwrap();
        }
    }

    #[test]
    fn addresses_split_at_the_last_at_as_rsplit_once_does() {
        for a in [
            "u@x.example",
            "\"a@b\"@x.example",
            "@x.example",
            "u@",
            "none",
            "",
            "é@ü.example",
            "@",
        ] {
            assert_eq!(split_address(a), a.rsplit_once('@'), "{a:?}");
        }
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("mail.example.com"));
        assert!(valid_hostname("localhost"));
        assert!(valid_hostname("a_b.example"));
        assert!(valid_hostname("1-2.example"));
        assert!(!valid_hostname("203.0.113.5"));
        assert!(!valid_hostname("123"));
        assert!(!valid_hostname("-a.example"));
        assert!(!valid_hostname("a-.example"));
        assert!(!valid_hostname("a..example"));
        assert!(!valid_hostname(".example"));
        assert!(!valid_hostname("example."));
        assert!(!valid_hostname("ex ample"));
        assert!(!valid_hostname(&format!("{}.example", "a".repeat(64))));
        assert!(!valid_hostname(&"a.".repeat(128)));
    }

    /// Postfix's valid_hostname as first written here, label by label: the
    /// one-pass version must agree with it on every input.
    fn by_labels(name: &str) -> bool {
        if name.is_empty() || name.len() > MAX_HOSTNAME {
            return false;
        }
        let mut non_numeric = false;
        for label in name.split('.') {
            if label.is_empty() || label.len() > MAX_LABEL {
                return false;
            }
            if label.starts_with('-') || label.ends_with('-') {
                return false;
            }
            for b in label.bytes() {
                match b {
                    b'0'..=b'9' => {}
                    b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'_' => non_numeric = true,
                    _ => return false,
                }
            }
        }
        non_numeric
    }

    proptest! {
        /// Also names around the whole-name limit of 255.
        #[test]
        fn one_pass_agrees_with_labels(
            name in "[a-c0-1._-]{0,12}|[a-z0-9.-]{60,70}|[a.]{250,260}|.{0,8}"
        ) {
            agrees(&name)?;
        }
    }

    #[test]
    fn literals() {
        assert_eq!(
            address_literal("[203.0.113.5]"),
            Some("203.0.113.5".parse().unwrap())
        );
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            address_literal("[ipv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_literal("[2001:db8::1]"), None);
        assert_eq!(address_literal("[300.0.0.1]"), None);
        assert_eq!(address_literal("203.0.113.5"), None);
        assert!(valid_hostaddr("203.0.113.5"));
        assert!(valid_hostaddr("2001:db8::1"));
        assert!(!valid_hostaddr("example.com"));
    }
}
