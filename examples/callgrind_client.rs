//! The client of `benches/callgrind.sh`: starts the rpol binary named by
//! `EXP_RPOL` (a wrapper running it under valgrind) with the shipped
//! policy.toml (or `EXP_POLICY`) against a loopback DNS server holding the
//! load bench's zones, warms it with 2,000 requests, then sends
//! `EXP_REQUESTS` requests on each of `EXP_CONN` connections (default 4),
//! lock-step, with the load bench's request mix (benches/load/client.rs:
//! 29 attributes, half the clients new IPv6 addresses), and stops rpol
//! with SIGTERM so that callgrind writes its counts. Prints
//! throughput and latency, which under valgrind mean nothing: the
//! instruction counts are the point.

#[path = "../tests/support/dns.rs"]
mod dns_server;
// The load bench's request mix (`Mix::Standard`); the rest of the load
// client is not used here.
#[allow(dead_code)]
#[path = "../benches/load/client.rs"]
mod load_client;

use load_client::Mix;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Client connections (Postfix keeps one per smtpd process).
fn connections() -> usize {
    std::env::var("EXP_CONN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}
/// Requests per connection.
fn requests() -> usize {
    std::env::var("EXP_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn main() {
    // criterion-style flags from `cargo bench` are ignored.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut zones = dns_server::DEFAULT_ZONES.to_vec();
    zones.push(("spftest.", include_str!("../tests/zones/spftest.zone")));
    let dns = rt.block_on(dns_server::TestDns::start(&zones));
    let dir = tempfile::tempdir().unwrap();

    let socket = dir.path().join("rpol.sock");
    let mut rpol = start_rpol(dir.path(), dns.addr, &socket);
    report("rpol, shipped port-25 chain, warm DNS cache", &socket);
    unsafe { libc::kill(rpol.id() as i32, libc::SIGTERM) };
    let _ = rpol.wait();
    println!(
        "DNS queries to the test server in all: {}",
        dns.query_count()
    );
}

/// Drives `CONNECTIONS` x `REQUESTS` and prints throughput and latency.
fn report(what: &str, socket: &Path) {
    // Warm-up: first answers fill the DNS cache.
    let mut warm = connect(socket);
    let mut req = Vec::new();
    // Warm-up: every IPv4 client and sender domain once (the IPv6 clients
    // are new on every request, as in benches/load).
    for i in 0..2000u64 {
        Mix::Standard.request(&mut req, 0, 99, i);
        ask(&mut warm, &req);
    }
    let start = Instant::now();
    let workers: Vec<_> = (0..connections())
        .map(|c| {
            let socket = socket.to_path_buf();
            thread::spawn(move || {
                let mut conn = connect(&socket);
                let mut latencies = Vec::with_capacity(requests());
                let mut req = Vec::new();
                for i in 0..requests() {
                    let t = Instant::now();
                    Mix::Standard.request(&mut req, 1, c as u32, i as u64);
                    ask(&mut conn, &req);
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{what}: {} requests over {} connections in {:.2} s: {:.0} requests/s; latency p50 {:?}, p99 {:?}, max {:?}",
        all.len(),
        connections(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        all[all.len() - 1],
    );
}

fn connect(socket: &Path) -> BufReader<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return BufReader::new(s),
            Err(e) if Instant::now() > deadline => panic!("connect {}: {e}", socket.display()),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One request, one whole response.
fn ask(conn: &mut BufReader<UnixStream>, request: &[u8]) {
    conn.get_mut().write_all(request).unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).unwrap() == 0 {
            panic!("server closed the connection");
        }
        if line == "\n" {
            return;
        }
    }
}

/// The floor: read lines until the empty one, answer DUNNO; one thread per
/// connection.
fn start_rpol(dir: &Path, dns: std::net::SocketAddr, socket: &Path) -> Child {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(
        std::env::var("EXP_POLICY")
            .map(PathBuf::from)
            .unwrap_or(root.join("policy.toml")),
    )
    .unwrap();
    let config = shipped.replace("nameservers = []", &format!("nameservers = [\"{dns}\"]"));
    std::os::unix::fs::symlink(root.join("tables"), dir.join("tables")).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(std::env::var("EXP_RPOL").unwrap())
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start rpol")
}
