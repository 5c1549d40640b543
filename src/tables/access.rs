//! access(5) tables, read from their text source, and the key order in which
//! Postfix's check_*_access restrictions consult them (reference 2.3).
//!
//! Two table types: `hash`-like (exact keys, the postmap source format; also
//! accepted as `texthash:`, `lmdb:`, `btree:`, `cdb:`) and `cidr:` (patterns
//! tried in file order, first match wins). Results are parsed when the table
//! is loaded, so a bad result is a load error with file and line, not a
//! `451 4.3.5` at run time as in Postfix.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

// Only the admin's keys are inserted (see crate::site::NameSet).
use foldhash::fast::RandomState as FastHash;

use ipnet::IpNet;

use crate::syntax::{lowercase, parse_network};
use crate::vocab::outcome::{AccessCodes, Outcome, parse_action};

/// How keys are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableType {
    /// Exact keys, casefolded (Postfix `hash:` and the other indexed types).
    Hash,
    /// Network patterns in file order (Postfix `cidr:`).
    Cidr,
}

/// One loaded table.
#[derive(Debug)]
pub struct AccessTable {
    pub path: PathBuf,
    pub kind: TableType,
    exact: HashMap<String, Entry, FastHash>,
    networks: Vec<(IpNet, Entry)>,
}

/// A result with the line it came from, for traces.
#[derive(Debug, Clone)]
pub struct Entry {
    pub outcome: Outcome,
    pub line: usize,
}

/// A table that could not be loaded; `line` is 0 when the whole file failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct TableError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

/// What a lookup found: the key that matched and its entry.
#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub key: String,
    pub entry: &'a Entry,
}

impl AccessTable {
    pub fn load(
        path: &Path,
        kind: TableType,
        codes: AccessCodes,
    ) -> Result<AccessTable, TableError> {
        let text = std::fs::read_to_string(path).map_err(|e| TableError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot read table: {e}"),
        })?;
        AccessTable::parse(path, &text, kind, codes)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        kind: TableType,
        codes: AccessCodes,
    ) -> Result<AccessTable, TableError> {
        let mut table = AccessTable {
            path: path.to_path_buf(),
            kind,
            exact: HashMap::default(),
            networks: Vec::new(),
        };
        let err = |line: usize, message: String| TableError {
            path: path.to_path_buf(),
            line,
            message,
        };
        for (line_no, key, value) in source_lines(text) {
            let outcome = parse_action(&value, codes).map_err(|e| err(line_no, e.to_string()))?;
            let entry = Entry {
                outcome,
                line: line_no,
            };
            match kind {
                TableType::Hash => {
                    // postmap keeps the first of duplicate keys (with a warning).
                    table.exact.entry(key.to_lowercase()).or_insert(entry);
                }
                TableType::Cidr => {
                    let net = parse_network(&key)
                        .ok_or_else(|| err(line_no, format!("bad CIDR pattern {key:?}")))?;
                    table.networks.push((net, entry));
                }
            }
        }
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.networks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One key; `partial` marks Postfix's later, shortened keys, which a
    /// `cidr:` table cannot match.
    fn get(&self, key: &str, partial: bool) -> Option<Hit<'_>> {
        match self.kind {
            TableType::Hash => self.exact.get(key).map(|entry| Hit {
                key: key.to_string(),
                entry,
            }),
            TableType::Cidr if partial => None,
            TableType::Cidr => {
                let ip: IpAddr = key.parse().ok()?;
                self.networks
                    .iter()
                    .find(|(net, _)| net.contains(&ip))
                    .map(|(net, entry)| Hit {
                        key: net.to_string(),
                        entry,
                    })
            }
        }
    }

    /// check_helo_access: the name, then its parent domains.
    pub fn lookup_domain(&self, name: &str, subdomains: bool) -> Option<Hit<'_>> {
        if self.is_empty() {
            return None;
        }
        let name = lowercase(name.trim_end_matches('.'));
        self.domain_keys(&name, subdomains, false)
    }

    fn domain_keys(&self, name: &str, subdomains: bool, first_partial: bool) -> Option<Hit<'_>> {
        if let Some(hit) = self.get(name, first_partial) {
            return Some(hit);
        }
        // A numeric address never gets parent-domain lookups.
        if name.parse::<IpAddr>().is_ok() {
            return None;
        }
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            let parent = &rest[dot..];
            let key = if subdomains { &parent[1..] } else { parent };
            if key.is_empty() {
                break;
            }
            if let Some(hit) = self.get(key, true) {
                return Some(hit);
            }
            rest = &parent[1..];
        }
        None
    }

    /// check_client_access: hostname (or "unknown") and its parents, then
    /// the address and its shorter prefixes (`1.2.3.4`, `1.2.3`, `1.2`, `1`;
    /// for IPv6 the text cut at each last `:`).
    pub fn lookup_client(&self, name: &str, address: &str, subdomains: bool) -> Option<Hit<'_>> {
        if self.is_empty() {
            return None;
        }
        let name = if name.is_empty() { "unknown" } else { name };
        if let Some(hit) = self.lookup_domain(name, subdomains) {
            return Some(hit);
        }
        let address = lowercase(address);
        let delim = if address.contains(':') { ':' } else { '.' };
        let mut key = &*address;
        let mut partial = false;
        loop {
            if !key.is_empty()
                && let Some(hit) = self.get(key, partial)
            {
                return Some(hit);
            }
            match key.rfind(delim) {
                Some(cut) => key = &key[..cut],
                None => return None,
            }
            partial = true;
        }
    }

    /// check_sender_access / check_recipient_access: `user+ext@domain`,
    /// `user@domain`, `domain` and its parents, `user+ext@`, `user@`
    /// (access(5) EMAIL ADDRESS PATTERNS). The null address is looked up as
    /// `null_key` (smtpd_null_access_lookup_key, `<>`) only.
    pub fn lookup_address(
        &self,
        address: &str,
        delimiter: &str,
        subdomains: bool,
        null_key: &str,
    ) -> Option<Hit<'_>> {
        if self.is_empty() {
            return None;
        }
        if address.is_empty() {
            return self.get(null_key, false);
        }
        let address = lowercase(address);
        let (local, domain) = match crate::syntax::split_address(&address) {
            Some((l, d)) => (l, Some(d)),
            None => (&*address, None),
        };
        let base = crate::syntax::strip_extension(local, delimiter);
        if let Some(hit) = self.get(&address, false) {
            return Some(hit);
        }
        if let (Some(base), Some(domain)) = (base, domain)
            && let Some(hit) = self.get(&format!("{base}@{domain}"), true)
        {
            return Some(hit);
        }
        if let Some(domain) = domain
            && let Some(hit) = self.domain_keys(domain.trim_end_matches('.'), subdomains, true)
        {
            return Some(hit);
        }
        if domain.is_some()
            && let Some(hit) = self.get(&format!("{local}@"), true)
        {
            return Some(hit);
        }
        if let Some(base) = base {
            return self.get(&format!("{base}@"), true);
        }
        if domain.is_none() {
            return self.get(&format!("{local}@"), true);
        }
        None
    }
}

/// The entries of a postmap source file: `key whitespace value`, `#`
/// comments, blank lines ignored, a line starting with whitespace continues
/// the previous one (postmap(1) input format).
pub fn source_lines(text: &str) -> Vec<(usize, String, String)> {
    let mut out: Vec<(usize, String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t'])
            && let Some(last) = out.last_mut()
        {
            last.2.push(' ');
            last.2.push_str(trimmed);
            continue;
        }
        let (key, value) = match trimmed.split_once([' ', '\t']) {
            Some((k, v)) => (k, v.trim()),
            None => (trimmed, ""),
        };
        out.push((i + 1, key.to_string(), value.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::reply::Reply;

    fn table(text: &str, kind: TableType) -> AccessTable {
        AccessTable::parse(Path::new("t"), text, kind, AccessCodes::default()).unwrap()
    }

    fn key_of(hit: Option<Hit<'_>>) -> Option<String> {
        hit.map(|h| h.key)
    }

    #[test]
    fn client_lookup_order() {
        let t = table(
            "mail.example.com OK\nexample.org REJECT\n203.0.113 REJECT net\n2001:db8: OK\nunknown DUNNO\n",
            TableType::Hash,
        );
        assert_eq!(
            key_of(t.lookup_client("mail.example.com", "198.51.100.1", true)),
            Some("mail.example.com".into())
        );
        // Parent domain, subdomains matched by "example.org".
        assert_eq!(
            key_of(t.lookup_client("a.b.example.org", "198.51.100.1", true)),
            Some("example.org".into())
        );
        // Without parent_domain_matches_subdomains, only ".example.org" would do.
        assert_eq!(
            key_of(t.lookup_client("a.example.org", "198.51.100.1", false)),
            None
        );
        // The name is tried before the address, "unknown" included.
        assert_eq!(
            key_of(t.lookup_client("", "203.0.113.9", true)),
            Some("unknown".into())
        );
        assert_eq!(
            key_of(t.lookup_client("host.other", "203.0.113.9", true)),
            Some("203.0.113".into())
        );
        assert_eq!(
            key_of(t.lookup_client("host.other", "2001:db8::1", true)),
            Some("2001:db8:".into())
        );
    }

    #[test]
    fn leading_dot_form_without_subdomain_matching() {
        let t = table(".example.org REJECT\n", TableType::Hash);
        assert_eq!(
            key_of(t.lookup_domain("a.example.org", false)),
            Some(".example.org".into())
        );
        assert_eq!(key_of(t.lookup_domain("example.org", false)), None);
    }

    #[test]
    fn cidr_first_match_wins_and_skips_names() {
        let t = table(
            "203.0.113.0/25 REJECT first\n203.0.113.0/24 OK\n2001:db8::/32 REJECT v6\n",
            TableType::Cidr,
        );
        let hit = t.lookup_client("x.example", "203.0.113.5", true).unwrap();
        assert_eq!(hit.key, "203.0.113.0/25");
        assert_eq!(
            hit.entry.outcome,
            Outcome::Reject(Reply::new(554, "5.7.1", "first"))
        );
        assert_eq!(
            key_of(t.lookup_client("x", "203.0.113.200", true)),
            Some("203.0.113.0/24".into())
        );
        assert_eq!(
            key_of(t.lookup_client("x", "2001:db8::5", true)),
            Some("2001:db8::/32".into())
        );
        assert!(t.lookup_client("x", "198.51.100.1", true).is_none());
    }

    #[test]
    fn address_lookup_order() {
        let t = table(
            "user+ext@example.com OK\nuser@example.com REJECT u\nexample.net REJECT d\nsub@ OK\nuser@ REJECT local\n<> REJECT null\n",
            TableType::Hash,
        );
        let k = |a: &str| key_of(t.lookup_address(a, "+", true, "<>"));
        assert_eq!(
            k("User+Ext@Example.com"),
            Some("user+ext@example.com".into())
        );
        assert_eq!(k("user+other@example.com"), Some("user@example.com".into()));
        assert_eq!(k("x@mail.example.net"), Some("example.net".into()));
        assert_eq!(k("sub@elsewhere.test"), Some("sub@".into()));
        assert_eq!(k("user+x@elsewhere.test"), Some("user@".into()));
        assert_eq!(k(""), Some("<>".into()));
        assert_eq!(k("nobody@elsewhere.test"), None);
        // Without a delimiter, the extension is part of the local part.
        assert_eq!(
            key_of(t.lookup_address("user+other@example.com", "", true, "<>")),
            None
        );
    }

    #[test]
    fn dunno_stops_the_search() {
        let t = table("a.example.com DUNNO\nexample.com REJECT\n", TableType::Hash);
        let hit = t.lookup_domain("a.example.com", true).unwrap();
        assert_eq!(hit.entry.outcome, Outcome::Dunno);
    }

    #[test]
    fn source_format_and_errors() {
        let t = table(
            "# comment\n\nkey1 REJECT some\n  continued text\nKEY2\tOK\nkey1 OK\n",
            TableType::Hash,
        );
        assert_eq!(t.len(), 2);
        let hit = t.lookup_domain("key1", true).unwrap();
        assert_eq!(
            hit.entry.outcome,
            Outcome::Reject(Reply::new(554, "5.7.1", "some continued text"))
        );
        assert_eq!(hit.entry.line, 3);
        let err = AccessTable::parse(
            Path::new("f"),
            "a OK\nb frobnicate\n",
            TableType::Hash,
            AccessCodes::default(),
        )
        .unwrap_err();
        assert_eq!(err.line, 2);
        let err = AccessTable::parse(
            Path::new("f"),
            "203.0.113.1/24 OK\n",
            TableType::Cidr,
            AccessCodes::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "f:1: bad CIDR pattern \"203.0.113.1/24\"");
    }
}
