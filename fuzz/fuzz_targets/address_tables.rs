//! The site's address tables: the mailbox and alias files (virtual_mailbox_maps
//! and virtual_alias_maps sources) and the sender login map
//! (smtpd_sender_login_maps source), with ownership derived from the
//! aliases, then lookups of addresses taken from the input.
//!
//! Input: mailboxes, aliases, login map and lookup keys (one a line), the
//! four separated by lines `--`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/address_tables.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
