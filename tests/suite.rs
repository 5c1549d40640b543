//! The integration tests, one binary: each file of `tests/` is a module
//! here (`cargo test --test suite faults::` runs tests/faults.rs), so the
//! crate is built and linked once and the tests of every area run side by
//! side, most of them waiting on sockets and clocks rather than the CPU
//! (`.cargo/config.toml` sets how many at once). The helpers of
//! `tests/support/` are built once, as `crate::support`.
//!
//! Two stay binaries of their own: `tests/spf_conformance.rs`, a
//! `harness = false` runner of one test per RFC 7208 suite case, and
//! `tests/identity.rs`, which CI runs again in the release profile.

mod support {
    pub mod dns;
    pub mod faulty_dns;
    pub mod fixture;
    pub mod port587;
    pub mod redis;
    pub mod redis_ha;
    pub mod rpol;
}

mod access;
mod cli;
mod connection;
mod daemon;
mod dns;
mod dnsbl;
mod dnsbl_health;
mod dryrun;
mod e2e_postfix;
mod faults;
mod fuzz_regressions;
mod greylist;
mod journal;
mod layers;
mod man;
mod metrics;
mod packaging;
mod postfix_site;
mod privileges;
mod ratelimit;
mod redis_ha;
mod reload;
mod restrictions;
mod robustness;
mod spf;
mod spf_dmarc;
mod store_cli;
mod submission;

use std::sync::{Condvar, Mutex};

/// Held by the tests that load both cores for seconds (the request floods)
/// and by those whose bound is under a second of wall time: none of them
/// runs beside another, so a bound measures the daemon, not a flood next
/// door. The other tests (most wait on sockets and clocks) run beside them.
pub fn one_at_a_time() -> Turn {
    let mut busy = TURN.0.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        busy = TURN.1.wait(busy).unwrap_or_else(|e| e.into_inner());
    }
    *busy = true;
    Turn(())
}

static TURN: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// A turn from [`one_at_a_time`], given back on drop (a failing test's
/// too).
pub struct Turn(());

impl Drop for Turn {
    fn drop(&mut self) {
        *TURN.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
        TURN.1.notify_one();
    }
}
