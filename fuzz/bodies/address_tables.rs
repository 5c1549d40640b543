//! The site's address tables: the mailbox and alias files (virtual_mailbox_maps
//! and virtual_alias_maps sources) and the sender login map
//! (smtpd_sender_login_maps source), with ownership derived from the
//! aliases, then lookups of addresses taken from the input.
//!
//! Input: mailboxes, aliases, login map and lookup keys (one a line), the
//! four separated by lines `--`.
//!
//! The body of the fuzz target of the same name, shared with the replay of
//! its regressions in tests/fuzz_regressions.rs.

use std::path::Path;

use rpol::tables::addresses::Addresses;
use rpol::tables::logins::LoginMap;

/// One input of the target.
pub fn run(data: &[u8]) {
    // Tables are read with read_to_string: only UTF-8 gets this far.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, "\n--\n");
    let mailboxes = parts.next().unwrap_or("");
    let aliases = parts.next().unwrap_or("");
    let logins = parts.next().unwrap_or("");
    let keys = parts.next().unwrap_or("");

    let addresses = Addresses::parse(
        Some((Path::new("mailboxes"), mailboxes)),
        Some((Path::new("aliases"), aliases)),
    )
    .unwrap_or_default();
    let mut map = LoginMap::default();
    map.add_from_aliases(&addresses);
    let _ = map.add_text(Path::new("logins"), logins);

    for key in keys.lines() {
        for delimiter in ["+", "+-", ""] {
            let _ = addresses.find(key, delimiter);
            let _ = map.owners(key, delimiter, true);
            let _ = map.owners(key, delimiter, false);
        }
    }
}
