//! Values that several sections share: Postfix-style times, counts,
//! domain lists, networks and IP addresses. Each `Compiler` method here
//! records a bad value under its key and keeps what was valid, so one load
//! reports every bad value.

use std::net::IpAddr;
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

impl Compiler<'_> {
    /// Sets `slot` to the time `value`, when it is given and valid.
    pub(super) fn duration(
        &mut self,
        value: Option<Spanned<String>>,
        key: &str,
        slot: &mut Duration,
    ) {
        if let Some(v) = value {
            match parse_duration(v.get_ref()) {
                Ok(d) => *slot = d,
                Err(e) => self.error(v.span(), key, e),
            }
        }
    }

    /// As [`Self::duration`], refusing zero (a timeout of zero would fire
    /// at once).
    pub(super) fn nonzero_duration(
        &mut self,
        value: Option<Spanned<String>>,
        key: &str,
        slot: &mut Duration,
    ) {
        if let Some(v) = value {
            match parse_duration(v.get_ref()) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => self.error(v.span(), key, "must be more than zero"),
                Err(e) => self.error(v.span(), key, e),
            }
        }
    }

    /// Sets `slot` to the count `value`, when it is given and at least 1
    /// (a size or number of tries of zero would disable the thing).
    pub(super) fn count(&mut self, value: Option<Spanned<usize>>, key: &str, slot: &mut usize) {
        if let Some(v) = value {
            if *v.get_ref() == 0 {
                self.error(v.span(), key, "must be at least 1");
            } else {
                *slot = *v.get_ref();
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
