//! The store's request path (greylisting, rate limits, the sweep) on an
//! arbitrary sequence of calls; see fuzz/bodies/store.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/store.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
