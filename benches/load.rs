//! Load generator: the real rpol binary serving the shipped port-25 chain
//! (DNS answers from a loopback test server, cache warm) on a unix socket,
//! driven by several client connections, next to the protocol floor: a
//! server that answers every request `DUNNO` at once over the same kind of
//! socket, measured the same way. Figures are printed, never asserted.
//! Run: `cargo bench --bench load`.

#[path = "../tests/support/dns.rs"]
mod dns_server;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Client connections (Postfix keeps one per smtpd process).
const CONNECTIONS: usize = 4;
/// Requests per connection.
const REQUESTS: usize = 20_000;

const REQUEST: &[u8] = b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
client_address=203.0.113.10\nclient_name=unknown\nreverse_client_name=unknown\nserver_port=25\n\
helo_name=mail.good.example\nsender=someone@mx-only.example\nrecipient=alice@example.com\n\
queue_id=\ninstance=\nsasl_method=\nsasl_username=\npolicy_context=\n\n";

fn main() {
    // criterion-style flags from `cargo bench` are ignored.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dns = rt.block_on(dns_server::TestDns::start_default());
    let dir = tempfile::tempdir().unwrap();

    let floor_socket = dir.path().join("floor.sock");
    let floor = start_floor(&floor_socket);
    report("protocol floor (answers DUNNO, no policy)", &floor_socket);
    drop(floor);

    let socket = dir.path().join("rpol.sock");
    let mut rpol = start_rpol(dir.path(), dns.addr, &socket);
    report("rpol, shipped port-25 chain, warm DNS cache", &socket);
    let _ = rpol.kill();
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
    for _ in 0..100 {
        ask(&mut warm);
    }
    let start = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let socket = socket.to_path_buf();
            thread::spawn(move || {
                let mut conn = connect(&socket);
                let mut latencies = Vec::with_capacity(REQUESTS);
                for _ in 0..REQUESTS {
                    let t = Instant::now();
                    ask(&mut conn);
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
        "{what}: {} requests over {CONNECTIONS} connections in {:.2} s: {:.0} requests/s; latency p50 {:?}, p99 {:?}, max {:?}",
        all.len(),
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
fn ask(conn: &mut BufReader<UnixStream>) {
    conn.get_mut().write_all(REQUEST).unwrap();
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
fn start_floor(socket: &Path) -> thread::JoinHandle<()> {
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().take(CONNECTIONS + 1) {
            let stream = stream.unwrap();
            thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    if line == "\n" && out.write_all(b"action=DUNNO\n\n").is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    })
}

fn start_rpol(dir: &Path, dns: std::net::SocketAddr, socket: &Path) -> Child {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("policy.toml")).unwrap();
    let config = shipped.replace("nameservers = []", &format!("nameservers = [\"{dns}\"]"));
    std::os::unix::fs::symlink(root.join("tables"), dir.join("tables")).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_rpol"))
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
