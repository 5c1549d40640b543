//! access(5) tables: parse a table from the input, then look up keys taken
//! from the input the way each check_*_access restriction does.
//!
//! Input: one byte of flags (bit 0: `cidr:` instead of hash; bit 1:
//! parent domains match subdomains), then the table text, a line `--`, and
//! one lookup key per line (a client lookup takes `name address`).
//!
//! The body of the fuzz target of the same name, shared with the replay of
//! its regressions in tests/fuzz_regressions.rs.

use std::path::Path;

use rpol::tables::{AccessTable, TableType};
use rpol::vocab::outcome::AccessCodes;

/// One input of the target.
pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let kind = if flags & 1 == 0 {
        TableType::Hash
    } else {
        TableType::Cidr
    };
    let subdomains = flags & 2 != 0;
    // Tables are read with read_to_string: only UTF-8 gets this far.
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (table_text, keys) = text.split_once("\n--\n").unwrap_or((text, ""));
    let Ok(table) = AccessTable::parse(Path::new("fuzz"), table_text, kind, AccessCodes::default())
    else {
        return;
    };
    let lines = table_text.lines().count();
    for key in keys.lines() {
        let (name, address) = key.split_once(' ').unwrap_or((key, key));
        let hits = [
            table.lookup_domain(key, subdomains),
            table.lookup_client(name, address, subdomains),
            table.lookup_address(key, "+-", subdomains, "<>"),
            table.lookup_address(key, "", subdomains, "<>"),
        ];
        for hit in hits.into_iter().flatten() {
            assert!(
                hit.entry.line >= 1 && hit.entry.line <= lines,
                "entry line {} outside the table's {lines} lines",
                hit.entry.line
            );
        }
    }
}
