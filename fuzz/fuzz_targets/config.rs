//! The policy.toml loader on arbitrary text: parse, unknown keys, every
//! value check, table and address files, profiles and rules.
//!
//! The text is loaded as if it were the repository's policy.toml, so its
//! relative paths (`tables/...`) find the shipped tables. Building the
//! resolver sends nothing; with no `nameservers` it only reads
//! /etc/resolv.conf.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy.toml");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Device and kernel files are no config an admin writes, and reading
    // /dev/zero or /dev/stdin would never end: leave them out.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    match rpol::config::load_str(Path::new(POLICY), text) {
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
});
