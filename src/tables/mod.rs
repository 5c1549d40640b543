//! Lookup tables rules consult: access(5) tables named in `[tables]` or
//! written inline in a rule as Postfix writes them (`cidr:/path`,
//! `hash:/path`, or a plain path).

pub mod access;
pub mod addresses;
pub mod greylist;
pub mod logins;

use std::path::{Path, PathBuf};

pub use access::{AccessTable, TableType};

/// A table reference as written: `[type:]path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSpec {
    pub kind: TableType,
    pub path: PathBuf,
}

/// Parses `cidr:/etc/x`, `hash:/etc/x` (the postmap source file `/etc/x`
/// is read, not `/etc/x.db`), `texthash:x` or a bare path. Relative paths
/// resolve against `base` (the config file's directory).
pub fn parse_spec(text: &str, base: &Path) -> Result<TableSpec, String> {
    let (kind, path) = match text.split_once(':') {
        Some((prefix, path)) if !prefix.contains('/') => {
            let kind = match prefix {
                "hash" | "btree" | "lmdb" | "cdb" | "dbm" | "texthash" | "inline" => {
                    if prefix == "inline" {
                        return Err("inline: tables are not supported; use a file".into());
                    }
                    TableType::Hash
                }
                "cidr" => TableType::Cidr,
                "regexp" | "pcre" => {
                    return Err(format!(
                        "{prefix}: tables are not supported by rpol; use a hash or cidr table, or keep this check in main.cf"
                    ));
                }
                other => return Err(format!("unsupported table type {other:?}")),
            };
            (kind, path)
        }
        _ => (TableType::Hash, text),
    };
    if path.is_empty() {
        return Err("empty table path".into());
    }
    Ok(TableSpec {
        kind,
        path: base.join(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let base = Path::new("/etc/rpol");
        assert_eq!(
            parse_spec("cidr:/etc/postfix/nets", base),
            Ok(TableSpec {
                kind: TableType::Cidr,
                path: "/etc/postfix/nets".into()
            })
        );
        assert_eq!(
            parse_spec("tables/x", base).unwrap().path,
            PathBuf::from("/etc/rpol/tables/x")
        );
        assert_eq!(
            parse_spec("hash:/etc/postfix/x", base).unwrap().kind,
            TableType::Hash
        );
        assert!(parse_spec("pcre:/etc/x", base).is_err());
        assert!(parse_spec("ldap:/etc/x", base).is_err());
    }
}
