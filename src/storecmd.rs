//! `rpol store ...`: the greylisting and rate-limit records of `[store]`,
//! counted, listed, deleted and imported from postgrey, on the embedded
//! file or on Redis.
//!
//! The embedded file is redb's, which one process opens at a time (a lock
//! on the file). A running rpol holds it, so the commands refuse with the
//! daemon's pid and the fix (stop it for the minute the command takes)
//! rather than talk to it: a control socket would be a new way into the
//! daemon for what an admin does seldom, and the switch from postgrey, the
//! main use, happens before rpol serves anyway. Redis needs no stop.
//!
//! postgrey's files are Berkeley DB, read by running Debian's `db_dump -p`
//! (package db-util) under a deadline ([`DB_DUMP_TIMEOUT`]): no Berkeley DB
//! crate is well kept (the bindings are unmaintained and need libdb's
//! headers), and db_dump is the format's own reader, matched to the
//! libdb that wrote the files.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::cli::StoreCommand;
use crate::common::unix_now;
use crate::config::{self, parse_duration};
use crate::greylist::GreylistSettings;
use crate::state::store::admin::{ClientRow, Import, RateRow, TripletRow};
use crate::state::store::greylist::{Triplet, triplet_expired};
use crate::state::store::{Backend, Store, StoreSettings};

/// Longest `db_dump` may run: a postgrey.db of a million triplets dumps
/// in seconds; one that takes this long is stuck (a lock held by a
/// running postgrey) and is killed.
pub const DB_DUMP_TIMEOUT: Duration = Duration::from_secs(300);

/// The program that dumps a Berkeley DB file (Debian's db-util).
pub const DB_DUMP: &str = "db_dump";

/// Runs one `rpol store` command with the `[store]` and `[greylist]` of
/// the configuration at `config_path`; its output goes to `out`.
pub fn run(config_path: &Path, command: StoreCommand, out: &mut dyn Write) -> Result<(), String> {
    let loaded = config::load(config_path).map_err(|e| e.to_string())?;
    let settings = loaded
        .server
        .store
        .clone()
        .ok_or_else(|| format!("{}: no [store] table", config_path.display()))?;
    let greylist = loaded.policy.site.greylist.clone().unwrap_or_default();
    let creates = matches!(command, StoreCommand::ImportPostgrey { .. });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // The Redis client starts its connection task on the runtime.
    let store = {
        let _runtime = runtime.enter();
        open(&settings, creates)?
    };
    runtime.block_on(async {
        match command {
            StoreCommand::Stats { json } => stats(&store, json, out).await,
            StoreCommand::List {
                greylist: g,
                rate,
                json,
            } => list(&store, !rate || g, !g || rate, json, out).await,
            StoreCommand::Delete { key, older_than } => {
                let gone = match (key, older_than) {
                    (_, Some(d)) => {
                        let age = parse_duration(&d).map_err(|e| format!("--older-than: {e}"))?;
                        let cutoff = unix_now().saturating_sub(age.as_secs());
                        store.delete_older_than(cutoff).await
                    }
                    (Some(key), None) => {
                        let gone = store.delete(&key).await.map_err(|e| e.to_string())?;
                        if gone == 0 {
                            return Err(format!("no record {key:?}"));
                        }
                        Ok(gone)
                    }
                    (None, None) => unreachable!("clap requires one"),
                }
                .map_err(|e| e.to_string())?;
                writeln!(out, "deleted {gone} record(s)").map_err(|e| e.to_string())
            }
            StoreCommand::ImportPostgrey { path } => {
                import_postgrey(&store, &greylist, &path, out).await
            }
        }
    })
}

/// Opens the store; the embedded file only if it exists (or `creates`),
/// refusing with the pid of the rpol that holds it.
fn open(settings: &StoreSettings, creates: bool) -> Result<Store, String> {
    if let Backend::Embedded { path } = &settings.backend {
        if !creates && !path.exists() {
            return Err(format!(
                "{}: no store file (rpol has not run yet)",
                path.display()
            ));
        }
        let fresh = !path.exists();
        let store = Store::open(settings).map_err(|e| match holder(path) {
            Some(pid) if e.to_string().contains("already open") => format!(
                "{}: open in the running rpol (pid {pid}): redb lets one process open the \
                 file at a time; stop it (systemctl stop rpol), run the command, start it again",
                path.display()
            ),
            _ if e.to_string().contains("already open") => format!(
                "{}: open in another process (a running rpol?): redb lets one process \
                 open the file at a time; stop it, run the command, start it again",
                path.display()
            ),
            _ => format!("[store]: {e}"),
        })?;
        if fresh {
            give_to_directory_owner(path);
        }
        return Ok(store);
    }
    Store::open(settings).map_err(|e| format!("[store]: {e}"))
}

/// The pid of a process holding `path` open, from /proc.
fn holder(path: &Path) -> Option<u32> {
    let path = std::fs::canonicalize(path).ok()?;
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|target| target == path) {
                return Some(pid);
            }
        }
    }
    None
}

/// A file the command made as root goes to the owner of its directory
/// (the package's rpol, by StateDirectory), so the daemon can open it.
fn give_to_directory_owner(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Some(dir) = path.parent().and_then(|d| std::fs::metadata(d).ok()) {
        let _ = nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(dir.uid())),
            Some(nix::unistd::Gid::from_raw(dir.gid())),
        );
    }
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

async fn stats(store: &Store, json: bool, out: &mut dyn Write) -> Result<(), String> {
    let s = store.stats().await.map_err(|e| e.to_string())?;
    if json {
        let v = serde_json::json!({
            "triplets": s.triplets,
            "unconfirmed": s.unconfirmed,
            "passed": s.passed,
            "with_details": s.with_details,
            "clients": s.clients,
            "rate_records": s.rate_records,
        });
        return writeln!(out, "{v}").map_err(io);
    }
    for (what, n) in [
        ("triplets", s.triplets),
        ("  waiting for a retry", s.unconfirmed),
        ("  passed", s.passed),
        ("  with details", s.with_details),
        ("auto-whitelist clients", s.clients),
        ("rate-limit records", s.rate_records),
    ] {
        writeln!(out, "{what:<24} {n:>10}").map_err(io)?;
    }
    Ok(())
}

/// Seconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn utc(secs: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs.min(i64::MAX as u64) as i64) else {
        return secs.to_string();
    };
    format!(
        "{} {:02}:{:02}:{:02}",
        t.date(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn triplet_json(t: &TripletRow) -> serde_json::Value {
    let info = t.info.as_ref();
    serde_json::json!({
        "kind": "triplet",
        "key": t.key,
        "network": info.map(|i| i.net.as_str()),
        "sender_domain": info.map(|i| i.sender_domain.as_str()),
        "sender": info.map(|i| i.sender.as_str()),
        "recipient": info.map(|i| i.recipient.as_str()),
        "first_seen": t.first,
        "last_seen": t.last,
        "seen": t.seen,
        "passed": t.passed,
    })
}

fn client_json(c: &ClientRow) -> serde_json::Value {
    serde_json::json!({
        "kind": "client",
        "address": c.address,
        "count": c.count,
        "last_seen": c.last,
    })
}

fn rate_json(r: &RateRow) -> serde_json::Value {
    serde_json::json!({
        "kind": "rate",
        "key": r.key,
        "expires": r.expires,
        "messages": r.messages,
        "recipients": r.recipients,
        "networks": r.networks,
    })
}

/// Prints `rows` as columns, each as wide as its widest cell.
fn table(out: &mut dyn Write, rows: &[Vec<String>]) -> Result<(), String> {
    let mut widths = Vec::new();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(io)?;
    }
    Ok(())
}

async fn list(
    store: &Store,
    greylist: bool,
    rate: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let now = unix_now();
    if greylist {
        let mut triplets = store.triplets().await.map_err(|e| e.to_string())?;
        triplets.sort_by(|a, b| (a.last, &a.key).cmp(&(b.last, &b.key)));
        let mut clients = store.clients().await.map_err(|e| e.to_string())?;
        clients.sort_by(|a, b| (a.last, &a.address).cmp(&(b.last, &b.address)));
        if json {
            for t in &triplets {
                writeln!(out, "{}", triplet_json(t)).map_err(io)?;
            }
            for c in &clients {
                writeln!(out, "{}", client_json(c)).map_err(io)?;
            }
        } else {
            let dash = || "-".to_string();
            let mut rows = vec![
                [
                    "KEY",
                    "NETWORK",
                    "SENDER DOMAIN",
                    "SENDER",
                    "RECIPIENT",
                    "FIRST SEEN (UTC)",
                    "LAST SEEN (UTC)",
                    "SEEN",
                    "STATE",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for t in &triplets {
                let info = t.info.as_ref();
                rows.push(vec![
                    t.key[..16].to_string(),
                    info.map_or_else(dash, |i| i.net.clone()),
                    info.map_or_else(dash, |i| or_dash(&i.sender_domain)),
                    info.map_or_else(dash, |i| or_dash(&i.sender)),
                    info.map_or_else(dash, |i| i.recipient.clone()),
                    utc(t.first),
                    utc(t.last),
                    t.seen.map_or_else(dash, |n| n.to_string()),
                    if t.passed { "passed" } else { "waiting" }.to_string(),
                ]);
            }
            table(out, &rows)?;
            writeln!(out).map_err(io)?;
            let mut rows = vec![
                ["CLIENT", "PASSES", "LAST COUNTED (UTC)"]
                    .map(String::from)
                    .to_vec(),
            ];
            for c in &clients {
                rows.push(vec![c.address.clone(), c.count.to_string(), utc(c.last)]);
            }
            table(out, &rows)?;
        }
    }
    if rate {
        let mut rates = store.rates(now).await.map_err(|e| e.to_string())?;
        rates.sort_by(|a, b| (a.expires, &a.key).cmp(&(b.expires, &b.key)));
        if json {
            for r in &rates {
                writeln!(out, "{}", rate_json(r)).map_err(io)?;
            }
        } else {
            if greylist {
                writeln!(out).map_err(io)?;
            }
            let mut rows = vec![
                [
                    "RATE KEY",
                    "MESSAGES",
                    "RECIPIENTS",
                    "NETWORKS",
                    "EXPIRES (UTC)",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in &rates {
                rows.push(vec![
                    r.key[..16].to_string(),
                    r.messages.to_string(),
                    r.recipients.to_string(),
                    r.networks.to_string(),
                    utc(r.expires),
                ]);
            }
            table(out, &rows)?;
        }
    }
    Ok(())
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "<>".into()
    } else {
        s.to_string()
    }
}

/// One Berkeley DB file as (key, value) pairs, by `db_dump -p`.
pub async fn dump(file: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
    let mut child = tokio::process::Command::new(DB_DUMP)
        .arg("-p")
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {DB_DUMP} (apt install db-util) for {}: {e}",
                file.display()
            )
        })?;
    let stdout = child.stdout.take().expect("piped");
    let read = async {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut pairs = Vec::new();
        let mut in_data = false;
        let mut key: Option<Vec<u8>> = None;
        while let Some(line) = lines.next_line().await.map_err(io)? {
            if !in_data {
                in_data = line == "HEADER=END";
                continue;
            }
            let Some(data) = line.strip_prefix(' ') else {
                // DATA=END, or the header of the next database in the file.
                in_data = false;
                continue;
            };
            let bytes = unescape(data)
                .ok_or_else(|| format!("{}: db_dump printed {line:?}", file.display()))?;
            match key.take() {
                None => key = Some(bytes),
                Some(k) => pairs.push((k, bytes)),
            }
        }
        let output = child.wait_with_output().await.map_err(io)?;
        if !output.status.success() {
            return Err(format!(
                "{}: {DB_DUMP} failed ({}): {}",
                file.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(pairs)
    };
    tokio::time::timeout(DB_DUMP_TIMEOUT, read)
        .await
        .map_err(|_| {
            format!(
                "{}: {DB_DUMP} gave no end within {DB_DUMP_TIMEOUT:?} (is postgrey still running?)",
                file.display()
            )
        })?
}

/// db_dump -p's printable form: `\\` a backslash, `\xx` a byte in hex.
fn unescape(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        }
    }
    Some(out)
}

/// What the import found in postgrey's files.
#[derive(Debug, Default)]
struct Read {
    imports: Vec<Import>,
    expired: u64,
    /// Keys hashed by postgrey --privacy, or not postgrey's shape.
    unreadable: u64,
}

/// "first,last" or "count,last".
fn pair(v: &[u8]) -> Option<(u64, u64)> {
    let (a, b) = std::str::from_utf8(v).ok()?.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// postgrey.db's pairs: "net/sender/recipient" -> "first,last", each net
/// keyed again as rpol keys its clients ([greylist] ipv4_prefix, ...).
fn read_triplets(pairs: &[(Vec<u8>, Vec<u8>)], g: &GreylistSettings, now: u64, into: &mut Read) {
    let (delay, retry, max_age) = (
        g.delay.as_secs(),
        g.retry_window.as_secs(),
        g.max_age.as_secs(),
    );
    for (k, v) in pairs {
        let parsed = std::str::from_utf8(k).ok().and_then(|k| {
            let (net, rest) = k.split_once('/')?;
            let (sender, recipient) = rest.rsplit_once('/')?;
            let ip: IpAddr = net.parse().ok()?;
            Some((g.client_net(ip).addr().to_string(), sender, recipient))
        });
        let (Some((net, sender, recipient)), Some((first, last))) = (parsed, pair(v)) else {
            into.unreadable += 1;
            continue;
        };
        if triplet_expired(&Triplet { first, last }, now, delay, retry, max_age) {
            into.expired += 1;
            continue;
        }
        into.imports.push(Import::triplet(
            &net,
            sender,
            recipient,
            g.privacy,
            (first, last),
            delay,
        ));
    }
}

/// postgrey_clients.db's pairs: client address -> "count,last".
fn read_clients(pairs: &[(Vec<u8>, Vec<u8>)], max_age: u64, now: u64, into: &mut Read) {
    for (k, v) in pairs {
        let ip = std::str::from_utf8(k)
            .ok()
            .and_then(|k| k.parse::<IpAddr>().ok());
        let (Some(ip), Some((count, last))) = (ip, pair(v)) else {
            into.unreadable += 1;
            continue;
        };
        if now.saturating_sub(last) > max_age {
            into.expired += 1;
            continue;
        }
        into.imports.push(Import::Client {
            address: ip.to_canonical().to_string(),
            count,
            last,
        });
    }
}

async fn import_postgrey(
    store: &Store,
    g: &GreylistSettings,
    path: &Path,
    out: &mut dyn Write,
) -> Result<(), String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        ["postgrey.db", "postgrey_clients.db"]
            .iter()
            .map(|f| path.join(f))
            .filter(|f| f.exists())
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(format!(
            "{}: neither postgrey.db nor postgrey_clients.db",
            path.display()
        ));
    }
    let now = unix_now();
    let mut read = Read::default();
    for file in &files {
        let pairs = dump(file).await?;
        let clients = file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("clients"));
        if clients {
            read_clients(&pairs, g.max_age.as_secs(), now, &mut read);
        } else {
            read_triplets(&pairs, g, now, &mut read);
        }
    }
    let done = store
        .import(
            read.imports,
            g.max_age.as_secs(),
            g.retry_window.as_secs(),
            now,
        )
        .await
        .map_err(|e| e.to_string())?;
    writeln!(
        out,
        "imported {} triplet(s) and {} client(s); {} already held, {} beyond a budget, \
         {} expired, {} unreadable (postgrey --privacy keys cannot be imported)",
        done.triplets, done.clients, done.known, done.no_room, read.expired, read.unreadable
    )
    .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_dump_escapes() {
        assert_eq!(unescape("a\\5cb\\0a"), Some(b"a\\b\n".to_vec()));
        assert_eq!(unescape("a\\\\b"), Some(b"a\\b".to_vec()));
        assert_eq!(unescape("bad\\zz"), None);
        assert_eq!(unescape("cut\\4"), None);
    }

    #[test]
    fn postgrey_keys_become_rpol_triplets() {
        let g = GreylistSettings::default();
        let now = 1_800_000_000;
        let pairs = vec![
            (
                b"203.0.113.0/a@x.example/b@y.example".to_vec(),
                format!("{},{}", now - 1000, now - 600).into_bytes(),
            ),
            (
                b"2001:db8:0:0:0:0:0:0/c/d@e/f@y.example".to_vec(),
                format!("{},{}", now - 10, now - 10).into_bytes(),
            ),
            (
                b"0123456789abcdef0123456789abcdef01234567".to_vec(),
                b"1,2".to_vec(),
            ),
            (b"198.51.100.0/old@x/b@y".to_vec(), b"1,2".to_vec()),
        ];
        let mut read = Read::default();
        read_triplets(&pairs, &g, now, &mut read);
        assert_eq!((read.expired, read.unreadable), (1, 1));
        assert_eq!(
            read.imports[0],
            Import::triplet(
                "203.0.113.0",
                "a@x.example",
                "b@y.example",
                false,
                (now - 1000, now - 600),
                300
            )
        );
        let Import::Triplet { pending, .. } = &read.imports[0] else {
            panic!()
        };
        assert!(!pending);
        // The sender keeps its '/', the net is rpol's spelling.
        let Import::Triplet {
            info: Some(info),
            pending,
            ..
        } = &read.imports[1]
        else {
            panic!()
        };
        assert_eq!(
            (info.net.as_str(), info.sender.as_str(), *pending),
            ("2001:db8::", "c/d@e", true)
        );
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
    }
}
