//! Inputs the fuzzers (fuzz/, fuzz/README.md) found to crash, hang or
//! exhaust memory, replayed on every `cargo test` so that each fix stays in.
//!
//! Each file under tests/fuzz-regressions/<target>/ is an input of that
//! fuzz target, run here through the target's own body (fuzz/bodies/); every replay must end
//! within [`DEADLINE`] (libFuzzer's `-timeout=10` of fuzz/run.sh) without a
//! panic. To keep a new find: copy it from fuzz/artifacts/<target>/ with a
//! name saying what it did, and fix rpol.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

// The targets' own bodies, so a replay checks what the fuzzer checked.
#[path = "../fuzz/bodies/access_table.rs"]
mod access_table;
#[path = "../fuzz/bodies/address_tables.rs"]
mod address_tables;
#[path = "../fuzz/bodies/config.rs"]
mod config;
#[path = "../fuzz/bodies/decoder.rs"]
mod decoder;
#[path = "../fuzz/bodies/store.rs"]
mod store;

/// Time one replay may take; the fuzzers' timeout.
const DEADLINE: Duration = Duration::from_secs(10);

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs `run` on every input of `target`, each within [`DEADLINE`].
fn replay(target: &str, run: fn(&[u8])) {
    for path in inputs(target) {
        let data = std::fs::read(&path).expect("read input");
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            run(&data);
            let _ = tx.send(());
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(()) => worker.join().expect("replay thread"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{}: still running after {DEADLINE:?}", path.display())
            }
            // The sender was dropped without sending: the replay panicked.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(panic) = worker.join() {
                    eprintln!("{}: panicked", path.display());
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

/// The config target loads its text as the repository's policy.toml.
fn config(data: &[u8]) {
    config::run(
        data,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.toml"),
    );
}

#[test]
fn decoder_inputs() {
    replay("decoder", decoder::run);
}

#[test]
fn access_table_inputs() {
    replay("access_table", access_table::run);
}

#[test]
fn address_tables_inputs() {
    replay("address_tables", address_tables::run);
}

#[test]
fn config_inputs() {
    replay("config", config);
}

/// The regressions directory holds inputs of known targets only, so a file
/// is never silently skipped.
#[test]
fn every_regression_belongs_to_a_replayed_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    for entry in std::fs::read_dir(dir).expect("tests/fuzz-regressions") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            [
                "decoder",
                "access_table",
                "address_tables",
                "config",
                "store"
            ]
            .contains(&name.as_ref()),
            "tests/fuzz-regressions/{name}: no replay for this target"
        );
    }
}

#[test]
fn store_inputs() {
    replay("store", store::run);
    // No find yet: its seeds, so the body is run as well as compiled.
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/store");
    for entry in std::fs::read_dir(seeds).expect("fuzz/corpus/store") {
        store::run(&std::fs::read(entry.expect("dir entry").path()).expect("seed"));
    }
}
