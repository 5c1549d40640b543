//! End-to-end test against a real Postfix: runs `tests/e2e/run.sh` (see
//! there) with this build's rpol binary.
//!
//! Ignored unless asked for, because it needs root, Postfix, swaks (with
//! Net::SSLeay), knot, openssl and saslpasswd2 (`tests/e2e/setup.sh`
//! installs them); `cargo test -- --ignored` runs it with the other tests
//! that need root or redis-server, as .ci/run does, or alone:
//!
//! ```text
//! cargo test --test suite e2e_postfix -- --ignored --nocapture
//! ```
//! `tests/e2e/README.md` describes the scenarios and where the replies
//! through rpol differ from Postfix's own.

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs root and a real Postfix (tests/e2e/setup.sh)"]
fn postfix_end_to_end() {
    run_script("tests/e2e/run.sh");
}

/// Postfix's own reject_rbl_client, reject_rhsbl_sender and
/// permit_dnswl_client beside rpol's answers through the same Postfix, on
/// the same zones (`tests/e2e/dnsbl.sh`).
#[test]
#[ignore = "needs root and a real Postfix (tests/e2e/setup.sh)"]
fn dns_lists_answer_as_postfix_does() {
    run_script("tests/e2e/dnsbl.sh");
}

/// Runs one of the e2e scripts with this build's rpol; fails with its
/// output when it does.
fn run_script(name: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let output = Command::new("bash")
        .arg(&script)
        .env("RPOL", env!("CARGO_BIN_EXE_rpol"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        println!("---- stderr\n{stderr}");
    }
    assert!(
        output.status.success(),
        "{} failed ({}); its output is above\n{}",
        script.display(),
        output.status,
        stdout
            .lines()
            .rev()
            .find(|l| l.contains("passed,"))
            .unwrap_or("")
    );
}
