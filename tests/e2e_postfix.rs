//! End-to-end test against a real Postfix: runs `tests/e2e/run.sh` (see
//! there) with this build's rpol binary.
//!
//! Opt-in, because it needs root, Postfix, swaks (with Net::SSLeay), knot,
//! openssl and saslpasswd2 (`tests/e2e/setup.sh` installs them):
//!
//! ```text
//! RPOL_E2E=1 cargo test --test e2e_postfix -- --nocapture
//! ```
//!
//! Without `RPOL_E2E=1` the test prints why it did nothing and passes.
//! `tests/e2e/README.md` describes the scenarios and where the replies
//! through rpol differ from Postfix's own.

use std::path::Path;
use std::process::Command;

#[test]
fn postfix_end_to_end() {
    if std::env::var_os("RPOL_E2E").is_none_or(|v| v != "1") {
        println!(
            "skipped: set RPOL_E2E=1 to run the end-to-end test against a real Postfix \
             (needs root; install with tests/e2e/setup.sh)"
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/run.sh");
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
