//! The policy.toml loader on arbitrary text: parse, unknown keys, every
//! value check, table and address files, profiles and rules.
//!
//! The text is loaded as if it were the repository's policy.toml, so its
//! relative paths (`tables/...`) find the shipped tables. Building the
//! resolver sends nothing; with no `nameservers` it only reads
//! /etc/resolv.conf.
//!
//! The body of the fuzz target of the same name, shared with the replay of
//! its regressions in tests/fuzz_regressions.rs.

use std::path::Path;

/// One input, loaded as if it were the policy.toml at `policy` (so that
/// its relative table paths are found).
pub fn run(data: &[u8], policy: &Path) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Device and kernel files are no config an admin writes, and reading
    // /dev/zero or /dev/stdin would never end: leave them out.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    match rpol::config::load_str(policy, text) {
        Ok(loaded) => {
            let _ = loaded.policy.warnings();
        }
        Err(errors) => {
            // Every error names the file, a position inside the text, and
            // reads as one line.
            for e in &errors.0 {
                let line = e.to_string();
                assert!(!line.is_empty());
                assert!(
                    e.line <= text.lines().count() + 1,
                    "error line {} past the end of the text: {line}",
                    e.line
                );
            }
        }
    }
}
