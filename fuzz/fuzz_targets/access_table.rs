//! access(5) tables: parse a table from the input, then look up keys taken
//! from the input the way each check_*_access restriction does.
//!
//! Input: one byte of flags (bit 0: `cidr:` instead of hash; bit 1:
//! parent domains match subdomains), then the table text, a line `--`, and
//! one lookup key per line (a client lookup takes `name address`).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/access_table.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
