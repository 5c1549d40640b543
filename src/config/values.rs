//! Values that several sections share: Postfix-style times, counts,
//! domain lists, networks and IP addresses. Each `Compiler` method here
//! records a bad value under its key and keeps what was valid, so one load
//! reports every bad value.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::Compiler;

/// Parses a Postfix-style time: a number with an optional unit `ms`, `s`
/// (default), `m`, `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad time {text:?}: expected a number with a unit, e.g. \"300s\""))?;
    let secs = |mult: u64| Duration::from_secs(n.saturating_mul(mult));
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(secs(1)),
        "m" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        "d" => Ok(secs(86400)),
        "w" => Ok(secs(7 * 86400)),
        other => Err(format!(
            "bad time unit {other:?} in {text:?} (use ms, s, m, h, d or w)"
        )),
    }
}

/// The range a time setting accepts: times are added to clocks, so each
/// has a ceiling (a huge value would overflow them), and a floor where zero
/// or a tiny value would make no sense.
pub(super) type Times = RangeInclusive<Duration>;
/// The range a count setting accepts.
pub(super) type Counts = RangeInclusive<usize>;

pub(super) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A time for messages: `300s`, `1500ms`.
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Compiler<'_> {
    /// Sets `slot` to the time `value`, when it is given, valid and within
    /// `range`.
    pub(super) fn duration(
        &mut self,
        value: Option<Spanned<String>>,
        key: &str,
        range: Times,
        slot: &mut Duration,
    ) {
        if let Some(v) = value {
            match parse_duration(v.get_ref()) {
                Ok(d) if range.contains(&d) => *slot = d,
                Ok(_) => self.error(
                    v.span(),
                    key,
                    format!(
                        "must be between {} and {}",
                        show(*range.start()),
                        show(*range.end())
                    ),
                ),
                Err(e) => self.error(v.span(), key, e),
            }
        }
    }

    /// Sets `slot` to the count `value`, when it is given and within
    /// `range` (a size or number of tries of zero would disable the thing).
    pub(super) fn count(
        &mut self,
        value: Option<Spanned<usize>>,
        key: &str,
        range: Counts,
        slot: &mut usize,
    ) {
        if let Some(v) = value {
            let n = *v.get_ref();
            if range.contains(&n) {
                *slot = n;
            } else if n < *range.start() {
                self.error(v.span(), key, format!("must be at least {}", range.start()));
            } else {
                self.error(v.span(), key, format!("must be at most {}", range.end()));
            }
        }
    }

    /// Domain names, lowercase and without a trailing dot.
    pub(super) fn domains(&mut self, list: Vec<Spanned<String>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for d in list {
            let name = d.get_ref().trim().trim_end_matches('.').to_lowercase();
            if crate::syntax::valid_hostname(&name) {
                out.push(name);
            } else {
                self.error(
                    d.span(),
                    key,
                    format!("{:?} is not a valid domain name", d.get_ref()),
                );
            }
        }
        out
    }

    /// Networks as Postfix mynetworks writes them: address/prefix with no
    /// host bits set, or a single address.
    pub(super) fn networks(&mut self, list: Vec<Spanned<String>>, key: &str) -> Vec<IpNet> {
        let mut out = Vec::new();
        for n in list {
            match crate::syntax::parse_network(n.get_ref()) {
                Some(net) => out.push(net),
                None => self.error(
                    n.span(),
                    key,
                    format!(
                        "bad CIDR {:?} (expected address/prefix with no host bits set, or an address)",
                        n.get_ref()
                    ),
                ),
            }
        }
        out
    }

    /// IP addresses.
    pub(super) fn ip_addrs(&mut self, list: Vec<Spanned<String>>, key: &str) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for a in list {
            match a.get_ref().trim().parse::<IpAddr>() {
                Ok(ip) => out.push(ip),
                Err(_) => self.error(
                    a.span(),
                    key,
                    format!("{:?} is not an IP address", a.get_ref()),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("100"), Ok(Duration::from_secs(100)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}

/// A value written alone or as a list: `server_port = 587` or
/// `server_port = [465, 587]`. Written by hand rather than as an untagged
/// enum, which would turn every type error into "did not match any
/// variant" without saying what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

/// What [`OneOrMany`] names in a type error.
pub trait ListItem {
    const WHAT: &'static str;
}

impl ListItem for u16 {
    const WHAT: &'static str = "a port number";
}

impl ListItem for String {
    const WHAT: &'static str = "a string";
}

impl<'de, T: serde::Deserialize<'de> + ListItem> serde::Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer};

        struct Visit<T>(std::marker::PhantomData<T>);

        impl<'de, T: serde::Deserialize<'de> + ListItem> de::Visitor<'de> for Visit<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} or a list of them", T::WHAT)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|t| OneOrMany(vec![t]))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|t| OneOrMany(vec![t]))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|t| OneOrMany(vec![t]))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element()? {
                    all.push(item);
                }
                Ok(OneOrMany(all))
            }
        }

        de.deserialize_any(Visit(std::marker::PhantomData))
    }
}
