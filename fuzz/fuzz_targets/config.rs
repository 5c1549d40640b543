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

#[path = "../bodies/config.rs"]
mod body;

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy.toml");

fuzz_target!(|data: &[u8]| body::run(data, Path::new(POLICY)));
