//! Inputs the fuzzers (fuzz/, fuzz/README.md) found to crash, hang or
//! exhaust memory, replayed on every `cargo test` so that each fix stays in.
//!
//! Each file under tests/fuzz-regressions/<target>/ is an input of that
//! fuzz target, run here the way the target runs it; every replay must end
//! within [`DEADLINE`] (libFuzzer's `-timeout=10` of fuzz/run.sh) without a
//! panic. To keep a new find: copy it from fuzz/artifacts/<target>/ with a
//! name saying what it did, and fix rpol.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rpol::protocol::{Decoder, Request};
use rpol::tables::addresses::Addresses;
use rpol::tables::logins::LoginMap;
use rpol::tables::{AccessTable, TableType};
use rpol::vocab::outcome::AccessCodes;

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

/// fuzz/fuzz_targets/decoder.rs: chunk sizes, then the bytes of a client.
fn decoder(data: &[u8]) {
    let Some((sizes, bytes)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mut decoder = Decoder::new();
    let mut buf = Vec::new();
    let mut rest: &[u8] = bytes;
    let mut turn = 0;
    while !rest.is_empty() {
        let size = (usize::from(sizes[turn % 4]) + 1).min(rest.len());
        turn += 1;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => {
                    let _: &Request = &request;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// fuzz/fuzz_targets/access_table.rs: flags, table text, `--`, keys.
fn access_table(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let kind = if flags & 1 == 0 {
        TableType::Hash
    } else {
        TableType::Cidr
    };
    let subdomains = flags & 2 != 0;
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (table_text, keys) = text.split_once("\n--\n").unwrap_or((text, ""));
    let Ok(table) = AccessTable::parse(Path::new("t"), table_text, kind, AccessCodes::default())
    else {
        return;
    };
    for key in keys.lines() {
        let (name, address) = key.split_once(' ').unwrap_or((key, key));
        let _ = table.lookup_domain(key, subdomains);
        let _ = table.lookup_client(name, address, subdomains);
        let _ = table.lookup_address(key, "+-", subdomains, "<>");
        let _ = table.lookup_address(key, "", subdomains, "<>");
    }
}

/// fuzz/fuzz_targets/address_tables.rs: mailboxes, aliases, login map and
/// keys, separated by `--` lines.
fn address_tables(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, "\n--\n");
    let mailboxes = parts.next().unwrap_or("");
    let aliases = parts.next().unwrap_or("");
    let logins = parts.next().unwrap_or("");
    let keys = parts.next().unwrap_or("");
    let addresses = Addresses::parse(
        Some((Path::new("mailboxes"), mailboxes)),
        Some((Path::new("aliases"), aliases)),
    )
    .unwrap_or_default();
    let mut map = LoginMap::default();
    map.add_from_aliases(&addresses);
    let _ = map.add_text(Path::new("logins"), logins);
    for key in keys.lines() {
        for delimiter in ["+", "+-", ""] {
            let _ = addresses.find(key, delimiter);
            let _ = map.owners(key, delimiter, true);
            let _ = map.owners(key, delimiter, false);
        }
    }
}

/// fuzz/fuzz_targets/config.rs: the text as the repository's policy.toml.
fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.toml");
    if let Ok(loaded) = rpol::config::load_str(&path, text) {
        let _ = loaded.policy.warnings();
    }
}

#[test]
fn decoder_inputs() {
    replay("decoder", decoder);
}

#[test]
fn access_table_inputs() {
    replay("access_table", access_table);
}

#[test]
fn address_tables_inputs() {
    replay("address_tables", address_tables);
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
            ["decoder", "access_table", "address_tables", "config"].contains(&name.as_ref()),
            "tests/fuzz-regressions/{name}: no replay for this target"
        );
    }
}
