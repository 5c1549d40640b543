//! The record types rpol asks for and what a lookup returns: the
//! answers, the outcome (found, NXDOMAIN, no data, temporary failure), and
//! their one-line descriptions for traces.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The record types rpol asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Mail exchanger.
    Mx,
    /// Text (SPF and friends).
    Txt,
    /// Reverse-mapping pointer.
    Ptr,
}

impl RecordKind {
    pub(super) const ALL: [RecordKind; 5] = [
        RecordKind::A,
        RecordKind::Aaaa,
        RecordKind::Mx,
        RecordKind::Txt,
        RecordKind::Ptr,
    ];

    /// The first byte of a cache key: an ASCII digit, so the key stays text.
    pub(super) fn tag(self) -> u8 {
        b'0' + self as u8
    }

    pub(super) fn from_tag(tag: u8) -> RecordKind {
        RecordKind::ALL[usize::from(tag - b'0')]
    }

    /// The conventional upper-case type mnemonic.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Mx => "MX",
            RecordKind::Txt => "TXT",
            RecordKind::Ptr => "PTR",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One mail exchanger of an MX answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mx {
    /// Lower is preferred.
    pub preference: u16,
    /// Host name, lowercase, no trailing dot; "" for the root (null MX).
    pub exchange: String,
}

/// The records of a positive answer, of the queried type only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// IPv4 addresses.
    A(Vec<Ipv4Addr>),
    /// IPv6 addresses.
    Aaaa(Vec<Ipv6Addr>),
    /// Mail exchangers, in the order received.
    Mx(Vec<Mx>),
    /// One entry per TXT record, its character-strings concatenated.
    Txt(Vec<Vec<u8>>),
    /// Host names, lowercase, no trailing dot.
    Ptr(Vec<String>),
}

impl Answer {
    /// RFC 7505 null MX: exactly one MX, preference 0, exchange ".".
    pub fn is_null_mx(&self) -> bool {
        matches!(self, Answer::Mx(mxs) if mxs.len() == 1 && mxs[0].preference == 0 && mxs[0].exchange.is_empty())
    }

    /// Number of records in the answer.
    pub fn len(&self) -> usize {
        match self {
            Answer::A(v) => v.len(),
            Answer::Aaaa(v) => v.len(),
            Answer::Mx(v) => v.len(),
            Answer::Txt(v) => v.len(),
            Answer::Ptr(v) => v.len(),
        }
    }

    /// True when the answer holds no record (never produced by a lookup:
    /// an empty answer is [`Outcome::NoData`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a lookup found out.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Records of the queried type. Shared, so cache hits copy a pointer.
    Found(Arc<Answer>),
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of the queried type.
    NoData,
    /// Timeout, SERVFAIL, REFUSED, network error: a short reason.
    TempFail(String),
}

/// The result of [`Resolver::lookup`].
#[derive(Clone, Debug)]
pub struct Lookup {
    /// The queried name, normalised: lowercase, no trailing dot. Shared
    /// with the cache entry, so a hit copies no name.
    pub name: Arc<str>,
    /// The queried type.
    pub kind: RecordKind,
    /// What was found.
    pub outcome: Outcome,
    /// True when served from the cache without waiting for the network.
    pub from_cache: bool,
}

/// Upper bound on the records listed by [`Lookup::describe`], to keep trace
/// lines short even for a name with dozens of addresses.
const DESCRIBE_MAX_RECORDS: usize = 4;
/// Upper bound on the bytes of one TXT record shown by [`Lookup::describe`].
const DESCRIBE_MAX_TXT: usize = 60;

impl Lookup {
    /// One short line for traces, e.g. `MX example.com: 10 mx.example.com
    /// (cached)`, `A nx.example: NXDOMAIN`, `A slow.example: temporary
    /// failure (timeout)`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}: ", self.kind, self.name);
        match &self.outcome {
            Outcome::NxDomain => s.push_str("NXDOMAIN"),
            Outcome::NoData => s.push_str("no data"),
            Outcome::TempFail(why) => {
                let _ = write!(s, "temporary failure ({why})");
            }
            Outcome::Found(answer) => {
                let items: Vec<String> = match &**answer {
                    Answer::A(v) => v.iter().map(ToString::to_string).collect(),
                    Answer::Aaaa(v) => v.iter().map(ToString::to_string).collect(),
                    Answer::Mx(v) => v
                        .iter()
                        .map(|mx| {
                            let host = if mx.exchange.is_empty() {
                                "."
                            } else {
                                &mx.exchange
                            };
                            format!("{} {}", mx.preference, host)
                        })
                        .collect(),
                    Answer::Txt(v) => v.iter().map(|t| quote_txt(t)).collect(),
                    Answer::Ptr(v) => v.clone(),
                };
                let shown = items.len().min(DESCRIBE_MAX_RECORDS);
                s.push_str(&items[..shown].join(", "));
                if items.len() > shown {
                    let _ = write!(s, ", ... ({} in all)", items.len());
                }
            }
        }
        if self.from_cache {
            s.push_str(" (cached)");
        }
        s
    }
}

/// Quote a TXT record for a trace line: printable ASCII as is, the rest
/// escaped, long records cut.
fn quote_txt(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes.iter().take(DESCRIBE_MAX_TXT) {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\{b:03}");
            }
        }
    }
    if bytes.len() > DESCRIBE_MAX_TXT {
        s.push_str("...");
    }
    s.push('"');
    s
}

/// The reverse-mapping name of an address: `4.3.2.1.in-addr.arpa` for
/// 1.2.3.4, the nibble form under `ip6.arpa` for IPv6. An IPv4-mapped IPv6
/// address (::ffff:1.2.3.4) maps to its IPv4 name, as Postfix does.
pub fn ptr_name(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            // Digits by hand: `format!` costs ten times as much, on every
            // request that checks the client's name.
            let mut s = String::with_capacity(29);
            for byte in v4.octets().into_iter().rev() {
                crate::syntax::push_decimal(&mut s, byte);
                s.push('.');
            }
            s.push_str("in-addr.arpa");
            s
        }
        IpAddr::V6(v6) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut s = String::with_capacity(64 + 8);
            for byte in v6.octets().iter().rev() {
                s.push(HEX[usize::from(byte & 0x0f)] as char);
                s.push('.');
                s.push(HEX[usize::from(byte >> 4)] as char);
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}
