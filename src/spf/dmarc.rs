//! Whether a domain publishes a DMARC policy (RFC 7489 6.6.3), for
//! `[spf.mail_from] fail = "reject_unless_dmarc"`: an SPF fail is rejected
//! only when no DMARC verifier after DATA would have a policy to judge the
//! mail by. rpol verifies no DMARC itself (the From: header and DKIM come
//! with the message); it only asks whether a policy exists, as qpsmtpd's
//! `no_dmarc_policy` does: `p=none` is a policy.
//!
//! The organisational domain (RFC 7489 3.2) comes from the Public Suffix
//! List: the one compiled into the `psl` crate, or `[spf]
//! public_suffix_list`, a file in the list's own format read with the
//! `publicsuffix` crate (the same authors, the same lookup trait).

use std::sync::Arc;

use psl::Psl as _;

use crate::dns::{Answer, Outcome, RecordKind, Resolver};

/// The Public Suffix List the organisational domain is found with.
#[derive(Clone, Default)]
pub enum SuffixList {
    /// The list compiled into the `psl` crate (as of its release).
    #[default]
    Builtin,
    /// `[spf] public_suffix_list`: a file read at load and at each reload.
    File(Arc<publicsuffix::List>),
}

impl std::fmt::Debug for SuffixList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SuffixList::Builtin => "SuffixList::Builtin",
            SuffixList::File(_) => "SuffixList::File",
        })
    }
}

impl SuffixList {
    /// A list in the Public Suffix List's format (its `===BEGIN ICANN
    /// DOMAINS===` section at least).
    pub fn parse(text: &str) -> Result<SuffixList, String> {
        let list: publicsuffix::List = text.parse().map_err(|e: publicsuffix::Error| match e {
            publicsuffix::Error::InvalidList => {
                "not a public suffix list (no rule in an ICANN or PRIVATE section)".into()
            }
            e => e.to_string(),
        })?;
        Ok(SuffixList::File(Arc::new(list)))
    }

    /// RFC 7489 3.2: the longest public suffix of `domain` and one label
    /// more; `None` when `domain` is a public suffix itself (or one label).
    /// A top-level domain the list does not know is a public suffix (the
    /// list's implicit `*` rule). `domain`: lowercase A-labels, no
    /// trailing dot.
    pub fn organizational_domain<'d>(&self, domain: &'d str) -> Option<&'d str> {
        let bytes = domain.as_bytes();
        let found = match self {
            SuffixList::Builtin => psl::List.domain(bytes),
            SuffixList::File(list) => list.domain(bytes),
        }?;
        // The registrable domain is a tail of `domain`.
        domain.get(domain.len() - found.as_bytes().len()..)
    }
}

/// What DMARC policy discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// A DMARC policy record: the name it is at, and its text.
    Published { name: String, record: String },
    /// No DMARC policy applies, and why (for traces).
    Absent(String),
    /// The DNS could not say: the name asked and the failure.
    Unknown { name: String, why: String },
}

/// The two names DMARC policy discovery asks, in order (RFC 7489 6.6.3):
/// `_dmarc.DOMAIN`, then `_dmarc.` the organisational domain when that is
/// another name. `domain`: lowercase A-labels, no trailing dot.
pub fn policy_names(list: &SuffixList, domain: &str) -> Vec<String> {
    let mut names = vec![format!("_dmarc.{domain}")];
    if let Some(org) = list.organizational_domain(domain)
        && org != domain
    {
        names.push(format!("_dmarc.{org}"));
    }
    names
}

/// RFC 7489 6.6.3 over rpol's resolver (cached, single-flight, each
/// lookup within `[dns]`'s deadline): the domain's own record first, then
/// its organisational domain's. A temporary failure stops discovery, as
/// its answer might have been a record. `lookups` gets one line per
/// lookup when asked for (traces).
pub async fn discover(
    resolver: &Resolver,
    list: &SuffixList,
    domain: &str,
    mut lookups: Option<&mut Vec<String>>,
) -> Discovery {
    for name in policy_names(list, domain) {
        let lookup = resolver.lookup(&name, RecordKind::Txt).await;
        if let Some(lines) = lookups.as_deref_mut() {
            lines.push(lookup.describe());
        }
        match lookup.outcome {
            Outcome::Found(answer) => match read_records(&answer) {
                Records::Empty => {}
                Records::One(record) => {
                    return match policy_of(&record) {
                        Some(_) => Discovery::Published { name, record },
                        None => Discovery::Absent(format!(
                            "the DMARC record at {name} has no valid p= and no rua=: \
                             no DMARC processing (RFC 7489 6.6.3)"
                        )),
                    };
                }
                Records::Several => {
                    return Discovery::Absent(format!(
                        "several DMARC records at {name}: no DMARC processing (RFC 7489 6.6.3)"
                    ));
                }
            },
            Outcome::NxDomain | Outcome::NoData => {}
            Outcome::TempFail(why) => return Discovery::Unknown { name, why },
        }
    }
    Discovery::Absent("no DMARC record".into())
}

/// The DMARC records among a name's TXT records.
enum Records {
    Empty,
    One(String),
    Several,
}

/// RFC 7489 6.6.3 step 4: records that do not start with `v=DMARC1` are
/// discarded; step 5: more than one left is none at all.
fn read_records(answer: &Answer) -> Records {
    let Answer::Txt(texts) = answer else {
        return Records::Empty;
    };
    let mut dmarc = texts.iter().filter(|t| is_dmarc_record(t));
    match (dmarc.next(), dmarc.next()) {
        (None, _) => Records::Empty,
        (Some(one), None) => Records::One(String::from_utf8_lossy(one).into_owned()),
        (Some(_), Some(_)) => Records::Several,
    }
}

/// RFC 7489 6.4: the first tag is `v` (a tag name, in any case), its
/// value exactly `DMARC1`, then the end or a `;`.
fn is_dmarc_record(text: &[u8]) -> bool {
    let first = text.split(|&b| b == b';').next().unwrap_or_default();
    match tag(first) {
        Some((name, value)) => name.eq_ignore_ascii_case(b"v") && value == b"DMARC1",
        None => false,
    }
}

/// `name = value` with RFC 7489's optional whitespace around both.
fn tag(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = text.iter().position(|&b| b == b'=')?;
    Some((text[..eq].trim_ascii(), text[eq + 1..].trim_ascii()))
}

/// The policy a DMARC record gives, RFC 7489 6.6.3 step 6: its `p=`; a
/// record with no valid `p=`, or with an invalid `sp=`, is taken as
/// `p=none` when it has a reporting URI (`rua=`), and as no policy
/// otherwise.
fn policy_of(record: &str) -> Option<&str> {
    let mut p = None;
    let mut sp_valid = true;
    let mut rua = false;
    for part in record.split(';').skip(1) {
        let Some((name, value)) = tag(part.as_bytes()) else {
            continue;
        };
        let value = std::str::from_utf8(value).unwrap_or_default();
        let request = ["none", "quarantine", "reject"]
            .into_iter()
            .find(|r| r.eq_ignore_ascii_case(value));
        match name.to_ascii_lowercase().as_slice() {
            b"p" => p = request,
            b"sp" => sp_valid = request.is_some(),
            b"rua" => rua = value.split(',').any(|uri| is_uri(uri.trim())),
            _ => {}
        }
    }
    match p {
        Some(p) if sp_valid => Some(p),
        _ if rua => Some("none"),
        _ => None,
    }
}

/// A URI's scheme and something after it (RFC 3986 3.1), the syntax a
/// `rua=` address must at least have.
fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisational_domains_from_the_builtin_list() {
        let list = SuffixList::Builtin;
        let org = |d| list.organizational_domain(d);
        assert_eq!(org("mail.example.com"), Some("example.com"));
        assert_eq!(org("example.com"), Some("example.com"));
        assert_eq!(org("a.b.example.co.uk"), Some("example.co.uk"));
        // A public suffix has no organisational domain.
        assert_eq!(org("co.uk"), None);
        assert_eq!(org("com"), None);
        // An unknown top-level domain is a suffix (the implicit `*` rule).
        assert_eq!(org("x.y.dmarctest"), Some("y.dmarctest"));
        // The private section counts, as in DMARC verifiers.
        assert_eq!(org("someone.github.io"), Some("someone.github.io"));
        // IDN suffixes in A-label form.
        assert_eq!(
            org("www.xn--bcher-kva.xn--p1ai"),
            Some("xn--bcher-kva.xn--p1ai")
        );
    }

    #[test]
    fn a_list_from_a_file() {
        let text = "// comment\n// ===BEGIN ICANN DOMAINS===\ndmarctest\n\
                    // ===END ICANN DOMAINS===\n// ===BEGIN PRIVATE DOMAINS===\n\
                    shared.dmarctest\n*.wild.dmarctest\n!not.wild.dmarctest\n";
        let list = SuffixList::parse(text).unwrap();
        let org = |d| list.organizational_domain(d);
        assert_eq!(
            org("a.tenant.shared.dmarctest"),
            Some("tenant.shared.dmarctest")
        );
        assert_eq!(org("shared.dmarctest"), None);
        assert_eq!(org("a.b.wild.dmarctest"), Some("a.b.wild.dmarctest"));
        assert_eq!(org("x.not.wild.dmarctest"), Some("not.wild.dmarctest"));
        assert!(SuffixList::parse("com\nnet\n").is_err());
        assert!(SuffixList::parse("").is_err());
        assert!(
            SuffixList::parse("// ===BEGIN ICANN DOMAINS===\na..b\n").is_err(),
            "an empty label"
        );
    }

    #[test]
    fn discovery_names() {
        let list = SuffixList::Builtin;
        assert_eq!(
            policy_names(&list, "sub.example.co.uk"),
            ["_dmarc.sub.example.co.uk", "_dmarc.example.co.uk"]
        );
        assert_eq!(
            policy_names(&list, "example.co.uk"),
            ["_dmarc.example.co.uk"]
        );
        assert_eq!(policy_names(&list, "co.uk"), ["_dmarc.co.uk"]);
    }

    #[test]
    fn dmarc_records() {
        for yes in [
            "v=DMARC1; p=none",
            "v=DMARC1;p=reject",
            "v = DMARC1 ; p=quarantine",
            "V=DMARC1; p=none",
            "v=DMARC1",
        ] {
            assert!(is_dmarc_record(yes.as_bytes()), "{yes}");
        }
        for no in [
            "v=dmarc1; p=none",
            "v=DMARC10; p=none",
            "p=none; v=DMARC1",
            "v=spf1 -all",
            "",
            "DMARC1",
            "x v=DMARC1",
        ] {
            assert!(!is_dmarc_record(no.as_bytes()), "{no}");
        }
        let txt =
            |records: &[&str]| Answer::Txt(records.iter().map(|r| r.as_bytes().to_vec()).collect());
        assert!(matches!(
            read_records(&txt(&["v=spf1 -all", "v=DMARC1; p=none"])),
            Records::One(r) if r == "v=DMARC1; p=none"
        ));
        assert!(matches!(
            read_records(&txt(&["v=DMARC1; p=none", "v=DMARC1; p=reject"])),
            Records::Several
        ));
        assert!(matches!(read_records(&txt(&["hello"])), Records::Empty));
    }

    #[test]
    fn policies() {
        assert_eq!(policy_of("v=DMARC1; p=none"), Some("none"));
        assert_eq!(policy_of("v=DMARC1; p=Reject; pct=0"), Some("reject"));
        assert_eq!(
            policy_of("v=DMARC1; adkim=s; p=quarantine"),
            Some("quarantine")
        );
        // RFC 7489 6.6.3 step 6.
        assert_eq!(policy_of("v=DMARC1"), None);
        assert_eq!(policy_of("v=DMARC1; p=bogus"), None);
        assert_eq!(
            policy_of("v=DMARC1; rua=mailto:dmarc@example.com"),
            Some("none")
        );
        assert_eq!(
            policy_of("v=DMARC1; p=reject; sp=bogus; rua=mailto:d@example.com"),
            Some("none")
        );
        assert_eq!(policy_of("v=DMARC1; p=reject; sp=bogus"), None);
        assert_eq!(policy_of("v=DMARC1; rua=not a uri"), None);
    }
}
