//! Who may send as which address: Postfix's smtpd_sender_login_maps
//! (`address login[, login...]`, `@domain login`), optionally derived from
//! the alias table ("one target, one address"): a mailbox is owned by its
//! own login, and every alias that resolves to a mailbox is owned by that
//! mailbox's login too. An address that resolves to two mailboxes is owned
//! by both. Logins are the SASL user names, compared without case.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::access::{TableError, source_lines};
use super::addresses::Addresses;

/// How deep alias chains are followed (alias -> alias -> mailbox).
const MAX_ALIAS_DEPTH: usize = 10;

#[derive(Debug, Default, Clone)]
pub struct LoginMap {
    /// Each address's logins, in the order they were added.
    owners: HashMap<String, Vec<String>>,
    /// Every (address, login) pair in `owners`, so that adding one is not a
    /// scan of the address's logins: an alias of 50,000 mailboxes, or a
    /// login map line of 50,000 logins, took seconds to load.
    pairs: HashSet<(String, String)>,
}

impl LoginMap {
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Adds the entries of a smtpd_sender_login_maps source file.
    pub fn load_file(&mut self, path: &Path) -> Result<(), TableError> {
        let text = std::fs::read_to_string(path).map_err(|e| TableError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        self.add_text(path, &text)
    }

    /// Adds the entries of a login map's text; `path` names it in errors.
    /// The file-free half of [`LoginMap::load_file`].
    pub fn add_text(&mut self, path: &Path, text: &str) -> Result<(), TableError> {
        for (line, key, value) in source_lines(text) {
            let logins: Vec<&str> = value
                .split([',', ' ', '\t'])
                .filter(|l| !l.is_empty())
                .collect();
            if logins.is_empty() {
                return Err(TableError {
                    path: path.to_path_buf(),
                    line,
                    message: format!("{key:?} has no login"),
                });
            }
            for login in logins {
                self.add(&key, login);
            }
        }
        Ok(())
    }

    /// Every mailbox is owned by its own login (the mailbox address), and
    /// every alias by the logins of the mailboxes it resolves to.
    pub fn add_from_aliases(&mut self, addresses: &Addresses) {
        for mailbox in addresses.mailboxes() {
            self.add(mailbox, mailbox);
        }
        for (alias, _) in addresses.aliases() {
            let mut owners = Vec::new();
            resolve(addresses, alias, 0, &mut HashMap::new(), &mut owners);
            for owner in owners {
                self.add(alias, &owner);
            }
        }
    }

    pub fn add(&mut self, address: &str, login: &str) {
        let pair = (address.to_lowercase(), login.to_lowercase());
        if !self.pairs.contains(&pair) {
            self.owners
                .entry(pair.0.clone())
                .or_default()
                .push(pair.1.clone());
            self.pairs.insert(pair);
        }
    }

    /// The owners of `sender`, looked up as Postfix does:
    /// `user+ext@domain`, `user@domain`, `user` (local domains only),
    /// `@domain`. `None`: nobody owns it (not listed).
    pub fn owners(&self, sender: &str, delimiter: &str, local: bool) -> Option<&[String]> {
        let sender = sender.to_lowercase();
        let (user, domain) = crate::syntax::split_address(&sender).unwrap_or((sender.as_str(), ""));
        let base = crate::syntax::strip_extension(user, delimiter);
        let mut keys = vec![sender.clone()];
        if let Some(base) = base {
            keys.push(format!("{base}@{domain}"));
        }
        if local {
            keys.push(base.unwrap_or(user).to_string());
        }
        if !domain.is_empty() {
            keys.push(format!("@{domain}"));
        }
        keys.iter()
            .find_map(|k| self.owners.get(k))
            .map(Vec::as_slice)
    }
}

/// Adds to `out` the mailboxes `address` resolves to within
/// [`MAX_ALIAS_DEPTH`] alias levels. `shallowest` holds the least depth at
/// which each address was expanded: an address is expanded again only when
/// reached by a shorter path, which finds nothing new otherwise. Without it
/// an alias listing itself a few times (or a loop of aliases with several
/// targets) took exponential time in the depth: fuzzing found a 350-byte
/// alias file that kept the loader busy for minutes.
fn resolve<'a>(
    addresses: &'a Addresses,
    address: &'a str,
    depth: usize,
    shallowest: &mut HashMap<&'a str, usize>,
    out: &mut Vec<String>,
) {
    if depth > MAX_ALIAS_DEPTH {
        return;
    }
    let first_visit = match shallowest.get(address) {
        Some(&seen) if seen <= depth => return,
        seen => seen.is_none(),
    };
    shallowest.insert(address, depth);
    if addresses.is_mailbox(address) {
        // Found once, when first reached: no scan of `out`.
        if first_visit {
            out.push(address.to_string());
        }
        return;
    }
    if let Some(targets) = addresses.alias_targets(address) {
        for t in targets {
            resolve(addresses, t, depth + 1, shallowest, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_from_aliases_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        let a = dir.path().join("a");
        let f = dir.path().join("f");
        std::fs::write(&m, "alice@example.com x\nbob@example.com x\n").unwrap();
        std::fs::write(
            &a,
            "shop@example.com alice@example.com\nfamily@example.com alice@example.com, bob@example.com\n\
             team@example.com family@example.com\nfwd@example.com someone@elsewhere.example\n",
        )
        .unwrap();
        std::fs::write(
            &f,
            "@example.net carol\nboss@example.org Alice@Example.com, dave\n",
        )
        .unwrap();
        let addrs = Addresses::load(Some(&m), Some(&a)).unwrap();
        let mut map = LoginMap::default();
        map.add_from_aliases(&addrs);
        map.load_file(&f).unwrap();
        let owners = |s: &str| map.owners(s, "+", true).map(|o| o.to_vec());
        assert_eq!(
            owners("alice@example.com"),
            Some(vec!["alice@example.com".into()])
        );
        assert_eq!(
            owners("alice+x@example.com"),
            Some(vec!["alice@example.com".into()])
        );
        assert_eq!(
            owners("shop@example.com"),
            Some(vec!["alice@example.com".into()])
        );
        assert_eq!(
            owners("team@example.com"),
            Some(vec!["alice@example.com".into(), "bob@example.com".into()])
        );
        assert_eq!(owners("fwd@example.com"), None);
        assert_eq!(owners("anyone@example.net"), Some(vec!["carol".into()]));
        assert_eq!(
            owners("boss@example.org"),
            Some(vec!["alice@example.com".into(), "dave".into()])
        );
        assert_eq!(owners("nobody@example.com"), None);
    }

    #[test]
    fn alias_loops_are_cheap_and_depth_still_bounds() {
        let path = Path::new("aliases");
        // An alias listing itself 20 times: 20^11 expansions before the fix.
        let mut aliases = format!(
            "loop@x.example {}m@x.example\n",
            "loop@x.example ".repeat(20)
        );
        // a0 -> a1 -> ... -> a11 -> m: m is 12 levels below a0, 10 below a2.
        for i in 0..11 {
            aliases.push_str(&format!("a{i}@x.example a{}@x.example\n", i + 1));
        }
        aliases.push_str("a11@x.example m@x.example\n");
        // First through the long way, then a short cut to a8 (m 5 levels
        // down): the short cut must expand a8 again.
        aliases.push_str("s@x.example a0@x.example, a8@x.example\n");
        let addrs = Addresses::parse(
            Some((Path::new("mailboxes"), "m@x.example box\n")),
            Some((path, aliases.as_str())),
        )
        .unwrap();
        let start = std::time::Instant::now();
        let mut map = LoginMap::default();
        map.add_from_aliases(&addrs);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let owners = |s: &str| map.owners(s, "", false).map(|o| o.to_vec());
        let m = Some(vec!["m@x.example".to_string()]);
        assert_eq!(owners("loop@x.example"), m);
        assert_eq!(owners("a0@x.example"), None);
        assert_eq!(owners("a1@x.example"), None);
        assert_eq!(owners("a2@x.example"), m);
        assert_eq!(owners("s@x.example"), m);
    }

    #[test]
    fn wide_aliases_and_login_lines_load_in_linear_time() {
        // 50,000 owners of one address, each also added twice (other case):
        // a scan per added login made this take seconds in a release build.
        const N: usize = 50_000;
        let mailboxes: String = (0..N).map(|i| format!("u{i}@x.example m\n")).collect();
        let targets: Vec<String> = (0..N).map(|i| format!("u{i}@x.example")).collect();
        let aliases = format!("all@x.example {}\n", targets.join(", "));
        let logins: Vec<String> = (0..N).map(|i| format!("l{i}, L{i}")).collect();
        let login_map = format!("boss@x.example {}\n", logins.join(", "));
        let start = std::time::Instant::now();
        let addrs = Addresses::parse(
            Some((Path::new("m"), mailboxes.as_str())),
            Some((Path::new("a"), aliases.as_str())),
        )
        .unwrap();
        let mut map = LoginMap::default();
        map.add_from_aliases(&addrs);
        map.add_text(Path::new("l"), &login_map).unwrap();
        map.add("ALL@x.example", "U7@x.example");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        let all = map.owners("all@x.example", "", false).unwrap();
        assert_eq!(all.len(), N);
        assert_eq!(all[7], "u7@x.example");
        let boss = map.owners("boss@x.example", "", false).unwrap();
        assert_eq!(boss.len(), N);
        assert_eq!(boss[1], "l1");
    }
}
