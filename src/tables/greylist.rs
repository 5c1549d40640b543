//! postgrey's whitelist files for greylisting (its read_clients_whitelists
//! and read_recipients_whitelists), one entry a line, `#` comments.
//!
//! Clients: `/regex/` and domain names match the client's host name (the
//! caller decides which name: rpol passes only forward-confirmed ones),
//! a domain also its subdomains; addresses and networks match the address,
//! `a.b.c` meaning a.b.c.0/24 and `a.b` a.b.0.0/16 (postgrey means that
//! too, though its code makes both /24). Recipients: `user@domain` (also
//! `user+ext@domain`), `user@` in any domain, `domain` (and subdomains),
//! `/regex/`. Matching ignores case.

use std::net::IpAddr;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

/// Compiled size a whitelist regex may reach: the files are the admin's,
/// but one pathological entry must not take megabytes per copy.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Lines of one file that may not be understood: `(line, message)`.
pub type ParseError = (usize, String);

fn regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("bad regular expression: {e}"))
}

/// The text of an entry: without comment and surrounding blanks.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(n, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then_some((n + 1, line))
    })
}

fn slashed(entry: &str) -> Option<&str> {
    entry
        .strip_prefix('/')
        .and_then(|e| e.strip_suffix('/'))
        .filter(|e| !e.is_empty() && !e.contains(char::is_whitespace))
}

#[derive(Debug, Clone, Default)]
pub struct ClientWhitelist {
    pub networks: Vec<IpNet>,
    /// Regexes and domains (as `(^|\.)domain$`).
    pub names: Vec<Regex>,
}

impl ClientWhitelist {
    /// Adds the entries of one file.
    pub fn parse(&mut self, text: &str) -> Result<(), ParseError> {
        for (n, entry) in entries(text) {
            let err = |m: String| (n, m);
            if let Some(pattern) = slashed(entry) {
                self.names.push(regex(pattern).map_err(err)?);
            } else if let Some(net) = network(entry) {
                self.networks.push(net);
            } else if entry.contains(':')
                || entry
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/')
            {
                return Err(err(format!("{entry:?} is not an address or network")));
            } else if entry.contains(char::is_whitespace) || entry.contains('/') {
                return Err(err(format!("{entry:?} does not look like a host name")));
            } else {
                let domain = entry.trim_end_matches('.');
                let pattern = format!("(?:^|\\.){}$", regex::escape(domain));
                self.names.push(regex(&pattern).map_err(err)?);
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.names.is_empty()
    }

    /// The network that holds `ip`.
    pub fn network_of(&self, ip: IpAddr) -> Option<&IpNet> {
        self.networks.iter().find(|n| n.contains(&ip))
    }

    /// The entry that matches the host `name` (without trailing dot).
    pub fn name_entry(&self, name: &str) -> Option<&Regex> {
        self.names.iter().find(|r| r.is_match(name))
    }
}

/// An address, a network, or a partial IPv4 address as postgrey reads it.
fn network(entry: &str) -> Option<IpNet> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    if let Ok(net) = entry.parse::<IpNet>() {
        // postgrey (NetAddr::IP) takes host bits as they are written.
        return Some(net.trunc());
    }
    let parts: Vec<&str> = entry.split('.').collect();
    let octets: Option<Vec<u8>> = parts.iter().map(|p| p.parse().ok()).collect();
    let octets = octets?;
    let prefix = match octets.len() {
        3 => 24,
        2 => 16,
        _ => return None,
    };
    let mut full = [0u8; 4];
    full[..octets.len()].copy_from_slice(&octets);
    IpNet::new(IpAddr::from(full), prefix).ok()
}

#[derive(Debug, Clone, Default)]
pub struct RecipientWhitelist {
    pub patterns: Vec<Regex>,
}

impl RecipientWhitelist {
    /// Adds the entries of one file.
    pub fn parse(&mut self, text: &str) -> Result<(), ParseError> {
        for (n, entry) in entries(text) {
            let err = |m: String| (n, m);
            let pattern = if let Some(p) = slashed(entry) {
                p.to_string()
            } else if entry.contains(char::is_whitespace) {
                return Err(err(format!("{entry:?} does not look like an address")));
            } else {
                match entry.split_once('@') {
                    Some((user, "")) => format!("^{}(?:\\+[^@]+)?@", regex::escape(user)),
                    Some((user, domain)) => format!(
                        "^{}(?:\\+[^@]+)?@{}$",
                        regex::escape(user),
                        regex::escape(domain)
                    ),
                    None => format!("(?:@|\\.){}$", regex::escape(entry)),
                }
            };
            self.patterns.push(regex(&pattern).map_err(err)?);
        }
        Ok(())
    }

    /// The entry that matches `recipient`.
    pub fn entry(&self, recipient: &str) -> Option<&Regex> {
        self.patterns.iter().find(|r| r.is_match(recipient))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients() {
        let mut w = ClientWhitelist::default();
        w.parse("# c\nexample.org\n/^mx\\d+\\.example\\.net$/\n198.51.100.7\n203.0.113.0/25\n198.51\n2001:db8::/32 # v6\n")
            .unwrap();
        assert!(w.name_entry("mail.Example.org").is_some());
        assert!(w.name_entry("example.org").is_some());
        assert!(w.name_entry("badexample.org").is_none());
        assert!(w.name_entry("mx12.example.net").is_some());
        assert!(w.name_entry("mx12.example.net.evil.example").is_none());
        for ip in ["198.51.100.7", "203.0.113.100", "198.51.7.7", "2001:db8::1"] {
            assert!(w.network_of(ip.parse().unwrap()).is_some(), "{ip}");
        }
        assert!(w.network_of("203.0.113.200".parse().unwrap()).is_none());
        assert!(ClientWhitelist::default().parse("a b\n").is_err());
        assert_eq!(
            ClientWhitelist::default().parse("\n/(/\n").map_err(|e| e.0),
            Err(2)
        );
    }

    #[test]
    fn recipients() {
        let mut w = RecipientWhitelist::default();
        w.parse("postmaster@\nabuse@example.org\nexample.net\n/^list-/\n")
            .unwrap();
        for yes in [
            "postmaster@any.example",
            "Postmaster+x@any.example",
            "abuse@example.org",
            "abuse+tag@example.org",
            "x@example.net",
            "x@sub.example.net",
            "list-foo@x.example",
        ] {
            assert!(w.entry(yes).is_some(), "{yes}");
        }
        for no in [
            "abuse@example.com",
            "x@badexample.net",
            "mypostmaster@x.example",
        ] {
            assert!(w.entry(no).is_none(), "{no}");
        }
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// The files the package installs parse, postgrey's Perl regexes
    /// included, and mean what they say.
    #[test]
    fn shipped_whitelists_parse() {
        let mut c = ClientWhitelist::default();
        c.parse(include_str!("../../tables/greylist_clients"))
            .unwrap_or_else(|(line, e)| panic!("greylist_clients:{line}: {e}"));
        assert!(c.names.len() > 100, "{}", c.names.len());
        assert!(c.name_entry("mail-ed1-f41.google.com").is_some());
        assert!(c.name_entry("smtp12.telekom.de").is_none());
        assert!(c.name_entry("mail12.telekom.de").is_some());
        assert!(c.network_of("209.85.128.1".parse().unwrap()).is_some());
        let mut r = RecipientWhitelist::default();
        r.parse(include_str!("../../tables/greylist_recipients"))
            .unwrap();
        assert!(r.entry("postmaster@example.org").is_some());
        assert!(r.entry("alice@example.org").is_none());
    }
}
