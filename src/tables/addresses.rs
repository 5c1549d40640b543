//! The site's address lists, read from the postmap source files a Postfix
//! virtual-mailbox setup already has:
//!
//! - mailboxes (virtual_mailbox_maps source): `address  whatever` lines;
//! - aliases (virtual_alias_maps source): `alias  target[, target...]`
//!   lines; `@domain target` is a catch-all for the domain.
//!
//! Used by reject_unlisted_recipient / reject_unlisted_sender, and later to
//! work out which login owns which address.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

// Only the admin's addresses are inserted (see crate::site::NameSet).
use foldhash::fast::RandomState as FastHash;

use super::access::{TableError, source_lines};

/// Mailboxes and aliases, keys casefolded.
#[derive(Debug, Default, Clone)]
pub struct Addresses {
    mailboxes: HashSet<String, FastHash>,
    aliases: HashMap<String, Vec<String>, FastHash>,
}

/// Where an address was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Mailbox(String),
    Alias(String),
}

impl Addresses {
    /// Loads the two files; either may be absent from the config (`None`).
    pub fn load(mailboxes: Option<&Path>, aliases: Option<&Path>) -> Result<Addresses, TableError> {
        let mailboxes = mailboxes
            .map(|p| read(p).map(|text| (p, text)))
            .transpose()?;
        let aliases = aliases.map(|p| read(p).map(|text| (p, text))).transpose()?;
        Addresses::parse(
            mailboxes.as_ref().map(|(p, text)| (*p, text.as_str())),
            aliases.as_ref().map(|(p, text)| (*p, text.as_str())),
        )
    }

    /// Parses the text of the two files, each given with the path that
    /// names it in errors; the file-free half of [`Addresses::load`].
    pub fn parse(
        mailboxes: Option<(&Path, &str)>,
        aliases: Option<(&Path, &str)>,
    ) -> Result<Addresses, TableError> {
        let mut out = Addresses::default();
        out.add(mailboxes, aliases)?;
        Ok(out)
    }

    /// Loads several files of each kind, in order: an alias in two files
    /// keeps the first one's targets, as Postfix's first map that has a key
    /// answers.
    pub fn load_all(mailboxes: &[PathBuf], aliases: &[PathBuf]) -> Result<Addresses, TableError> {
        let mut out = Addresses::default();
        for p in mailboxes {
            out.add(Some((p, &read(p)?)), None)?;
        }
        for p in aliases {
            out.add(None, Some((p, &read(p)?)))?;
        }
        Ok(out)
    }

    fn add(
        &mut self,
        mailboxes: Option<(&Path, &str)>,
        aliases: Option<(&Path, &str)>,
    ) -> Result<(), TableError> {
        let out = self;
        if let Some((_, text)) = mailboxes {
            for (_, key, _) in source_lines(text) {
                out.mailboxes.insert(key.to_lowercase());
            }
        }
        if let Some((path, text)) = aliases {
            for (line, key, value) in source_lines(text) {
                let targets: Vec<String> = value
                    .split([',', ' ', '\t'])
                    .filter(|t| !t.is_empty())
                    .map(str::to_lowercase)
                    .collect();
                if targets.is_empty() {
                    return Err(TableError {
                        path: path.to_path_buf(),
                        line,
                        message: format!("alias {key:?} has no target"),
                    });
                }
                out.aliases.entry(key.to_lowercase()).or_insert(targets);
            }
        }
        Ok(())
    }

    pub fn mailbox_count(&self) -> usize {
        self.mailboxes.len()
    }

    pub fn alias_count(&self) -> usize {
        self.aliases.len()
    }

    /// Whether `address` is a valid recipient: a mailbox or an alias, with
    /// Postfix's virtual lookup order (`user+ext@domain`, `user@domain`,
    /// then `@domain` for aliases).
    pub fn find(&self, address: &str, delimiter: &str) -> Option<Listed> {
        let address = crate::syntax::lowercase(address);
        let (local, domain) = crate::syntax::split_address(&address)?;
        let base =
            crate::syntax::strip_extension(local, delimiter).map(|b| format!("{b}@{domain}"));
        for key in std::iter::once(&*address).chain(base.as_deref()) {
            if self.mailboxes.contains(key) {
                return Some(Listed::Mailbox(key.to_string()));
            }
            if self.aliases.contains_key(key) {
                return Some(Listed::Alias(key.to_string()));
            }
        }
        let catch_all = format!("@{domain}");
        self.aliases
            .contains_key(&catch_all)
            .then_some(Listed::Alias(catch_all))
    }

    pub fn mailboxes(&self) -> impl Iterator<Item = &String> {
        self.mailboxes.iter()
    }

    pub fn aliases(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.aliases.iter()
    }

    pub fn is_mailbox(&self, address: &str) -> bool {
        self.mailboxes.contains(address)
    }

    /// The targets an alias expands to (one level).
    pub fn alias_targets(&self, alias: &str) -> Option<&[String]> {
        self.aliases.get(alias).map(Vec::as_slice)
    }
}

fn read(path: &Path) -> Result<String, TableError> {
    std::fs::read_to_string(path).map_err(|e| TableError {
        path: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn lookups() {
        let dir = tempfile::tempdir().unwrap();
        let m = write(
            dir.path(),
            "m",
            "# mailboxes\nalice@example.com  example.com/alice/\n",
        );
        let a = write(
            dir.path(),
            "a",
            "shop@example.com alice@example.com\nboth@example.com alice@example.com, bob@example.com\n@example.net alice@example.com\n",
        );
        let addrs = Addresses::load(Some(&m), Some(&a)).unwrap();
        assert_eq!(
            addrs.find("Alice@Example.com", "+"),
            Some(Listed::Mailbox("alice@example.com".into()))
        );
        assert_eq!(
            addrs.find("alice+news@example.com", "+"),
            Some(Listed::Mailbox("alice@example.com".into()))
        );
        assert_eq!(addrs.find("alice+news@example.com", ""), None);
        assert_eq!(
            addrs.find("shop@example.com", "+"),
            Some(Listed::Alias("shop@example.com".into()))
        );
        assert_eq!(
            addrs.find("anyone@example.net", "+"),
            Some(Listed::Alias("@example.net".into()))
        );
        assert_eq!(addrs.find("nobody@example.com", "+"), None);
        assert_eq!(
            addrs.alias_targets("both@example.com"),
            Some(
                &[
                    "alice@example.com".to_string(),
                    "bob@example.com".to_string()
                ][..]
            )
        );
        let bad = write(dir.path(), "bad", "lonely@example.com\n");
        let err = Addresses::load(None, Some(&bad)).unwrap_err();
        assert_eq!(err.line, 1);
        assert!(Addresses::load(Some(&dir.path().join("missing")), None).is_err());
    }
}
