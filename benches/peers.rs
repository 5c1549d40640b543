//! rpol side by side with the policy servers an admin would otherwise use,
//! over TCP on 127.0.0.1, with the same client code and request mix for all:
//!
//! - the protocol floor (a server answering `DUNNO` at once, no policy);
//! - access tables: rpol (`check_client_access cidr:` +
//!   `check_sender_access`) against postfwd2 (the same two rules, `-n`,
//!   `--cache 0`);
//! - SPF: rpol's `check_spf` against policyd-spf
//!   (postfix-policyd-spf-python, one process per connection behind socat),
//!   both resolving through the same loopback DNS server serving
//!   tests/zones/spftest.zone.
//!
//! The peers resolve through libc (/etc/resolv.conf), so they only run
//! inside the private network + mount namespace that `benches/peers.sh`
//! sets up (knotd on 127.0.0.53, its own resolv.conf); that script sets
//! `RPOL_PEERS_DNS`. Without it the peers are skipped (the reason is
//! printed) and rpol asks an in-process DNS server instead.
//!
//! Every run is bounded in requests and in time; every process started here
//! is stopped when its guard drops. Figures are printed, never asserted.
//! Run: `benches/peers.sh` (root), or `cargo bench --bench peers` for the
//! floor and rpol alone.

#[path = "../tests/support/dns.rs"]
mod dns_server;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Client connections (Postfix keeps one per smtpd process).
const CONNECTIONS: usize = 4;
/// Unmeasured requests per connection before the clock starts (process
/// start-up of spawn-style servers, DNS caches).
const WARMUP: usize = 20;
/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A missing answer fails the run instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Set on SIGTERM or SIGINT: the clients stop, the bench skips the rest and
/// stops what it started.
static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Requests per connection and a time cap for one measured run.
#[derive(Clone, Copy)]
struct Budget {
    requests: usize,
    time: Duration,
}

const FAST: Budget = Budget {
    requests: 20_000,
    time: Duration::from_secs(10),
};
const SLOW: Budget = Budget {
    requests: 2_500,
    time: Duration::from_secs(10),
};

/// What the clients send.
#[derive(Clone, Copy)]
enum Mix {
    /// Clients 203.0.113.x and senders user@ok.example, except one request
    /// in four from 198.51.100.0/24 (client rule rejects) and one in four
    /// from a sender @spam.example (sender rule rejects).
    Access,
    /// One SPF evaluation per request: HELO nospf.spftest (no SPF record),
    /// MAIL FROM someone@chain.spftest (include + mx + a), a new `instance`
    /// per request, always client 203.0.113.10 (pass through the include).
    SpfSameClient,
    /// As `SpfSameClient`, but a distinct IPv6 client per request
    /// (2001:db8::/32; the record is fail for it after all five lookups), so
    /// no result cache can answer.
    SpfDistinctClients,
}

fn request(mix: Mix, conn: usize, i: usize) -> String {
    let (client, sender, helo) = match mix {
        Mix::Access => {
            let host = i % 250 + 1;
            let client = if i % 4 == 1 {
                format!("198.51.100.{host}")
            } else {
                format!("203.0.113.{host}")
            };
            let domain = if i % 4 == 2 {
                "spam.example"
            } else {
                "ok.example"
            };
            (client, format!("user{i}@{domain}"), "mail.ok.example")
        }
        Mix::SpfSameClient => (
            "203.0.113.10".to_string(),
            "someone@chain.spftest".to_string(),
            "nospf.spftest",
        ),
        Mix::SpfDistinctClients => (
            format!("2001:db8:{conn:x}::{:x}:{:x}", i >> 16, i & 0xffff),
            "someone@chain.spftest".to_string(),
            "nospf.spftest",
        ),
    };
    // As Postfix 3.7 sends it at RCPT.
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
         client_address={client}\nclient_name=unknown\nclient_port=40000\n\
         reverse_client_name=unknown\nserver_address=127.0.0.1\nserver_port=25\n\
         helo_name={helo}\nsender={sender}\nrecipient=alice@example.com\nrecipient_count=0\n\
         queue_id=\ninstance=bench.{conn}.{i}\nsize=1024\netrn_domain=\nstress=\n\
         sasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n\
         ccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=\n\
         encryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n"
    )
}

fn main() {
    // criterion-style flags from `cargo bench` are ignored.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).unwrap();
        let mut int = signal(SignalKind::interrupt()).unwrap();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        STOP.store(true, Ordering::Relaxed);
    });
    let namespace_dns: Option<SocketAddr> = std::env::var("RPOL_PEERS_DNS")
        .ok()
        .map(|s| s.parse().expect("RPOL_PEERS_DNS is IP:PORT"));
    // Outside the namespace: rpol asks an in-process server (queries counted).
    let in_process = match namespace_dns {
        Some(_) => None,
        None => {
            let mut zones = dns_server::DEFAULT_ZONES.to_vec();
            zones.push(("spftest.", include_str!("../tests/zones/spftest.zone")));
            Some(rt.block_on(dns_server::TestDns::start(&zones)))
        }
    };
    let dns = namespace_dns.unwrap_or_else(|| in_process.as_ref().unwrap().addr);
    let queries = || in_process.as_ref().map(|d| d.query_count());
    let peers_skip = match namespace_dns {
        Some(_) => None,
        None => Some("not inside benches/peers.sh's private namespace (it resolves through libc)"),
    };

    let dir = WorkDir(work_dir());
    let dir = &dir.0;
    println!(
        "{} cores, load average {}; {CONNECTIONS} client connections over TCP on 127.0.0.1; DNS for rpol: {dns}{}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        if in_process.is_some() {
            " (in-process)"
        } else {
            " (the namespace's knotd, as for the peers)"
        }
    );

    // ---- the floor
    {
        let addr = start_floor();
        if !measure("floor (answers DUNNO, no policy)", addr, Mix::Access, FAST) {
            return;
        }
    }

    // ---- access tables
    std::fs::write(
        dir.join("clients.cidr"),
        "198.51.100.0/24 REJECT client blocked\n",
    )
    .unwrap();
    std::fs::write(dir.join("senders"), "spam.example REJECT sender blocked\n").unwrap();
    {
        let rpol = Rpol::start(
            dir,
            "access",
            &format!(
                "{}[profile.bench]\nclient = [\"check_client_access cidr:clients.cidr\"]\n\
                 sender = [\"check_sender_access hash:senders\"]\n",
                base_config(dns, "")
            ),
        );
        if !measure(
            "rpol, access tables (client cidr + sender domain)",
            rpol.addr,
            Mix::Access,
            FAST,
        ) {
            return;
        }
    }
    match peers_skip.or_else(|| missing(&["postfwd2"])) {
        Some(why) => println!("postfwd2: skipped: {why}"),
        None => match Postfwd::start(dir) {
            Ok(p) => {
                if !measure(
                    "postfwd2, the same two rules (-n, --cache 0)",
                    p.addr,
                    Mix::Access,
                    FAST,
                ) {
                    return;
                }
            }
            Err(e) => println!("postfwd2: skipped: {e}"),
        },
    }

    // ---- SPF
    {
        let rpol = Rpol::start(
            dir,
            "spf",
            &format!(
                "{}[profile.bench]\nrecipient = [\"check_spf\"]\n",
                base_config(dns, "")
            ),
        );
        let q = queries();
        if !measure(
            "rpol check_spf, same client, new instance each (SPF result cache hits)",
            rpol.addr,
            Mix::SpfSameClient,
            FAST,
        ) {
            return;
        }
        print_queries(q, queries());
        let q = queries();
        if !measure(
            "rpol check_spf, distinct client each (full evaluation, DNS cache warm)",
            rpol.addr,
            Mix::SpfDistinctClients,
            FAST,
        ) {
            return;
        }
        print_queries(q, queries());
    }
    {
        // One DNS cache entry: the names of an evaluation evict each other,
        // so lookups go to the DNS server again, as policyd-spf's (no cache)
        // all do. Not all: against the in-process server about 1.5 queries
        // per request were counted, of 6 lookups.
        let rpol = Rpol::start(
            dir,
            "spf-nocache",
            &format!(
                "{}[profile.bench]\nrecipient = [\"check_spf\"]\n",
                base_config(dns, "cache_size = 1\n")
            ),
        );
        let q = queries();
        if !measure(
            "rpol check_spf, distinct client each, DNS cache 1 entry",
            rpol.addr,
            Mix::SpfDistinctClients,
            SLOW,
        ) {
            return;
        }
        print_queries(q, queries());
    }
    match peers_skip.or_else(|| missing(&["policyd-spf", "socat"])) {
        Some(why) => println!("policyd-spf: skipped: {why}"),
        None => match PolicydSpf::start(dir) {
            Ok(p) => {
                if !measure(
                    "policyd-spf (socat, one process per connection), same client, new instance each",
                    p.addr,
                    Mix::SpfSameClient,
                    SLOW,
                ) {
                    return;
                }
                // The last run: nothing left to skip.
                let _ = measure(
                    "policyd-spf, distinct client each",
                    p.addr,
                    Mix::SpfDistinctClients,
                    SLOW,
                );
            }
            Err(e) => println!("policyd-spf: skipped: {e}"),
        },
    }
}

/// Removed when main returns (declared first, so dropped last).
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory the peers' run-as user (nobody) can read.
fn work_dir() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = match std::env::var_os("RPOL_PEERS_DIR") {
        Some(d) => PathBuf::from(d),
        None => tempfile::Builder::new()
            .prefix("rpol-peers.")
            .tempdir()
            .unwrap()
            .keep(),
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn missing(commands: &[&str]) -> Option<&'static str> {
    for c in commands {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(c).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(
                "not installed (apt-get install postfwd postfix-policyd-spf-python socat)",
            );
        }
    }
    None
}

fn print_queries(before: Option<u64>, after: Option<u64>) {
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "  DNS queries to the in-process server in that run (with warm-up): {}",
            a - b
        );
    }
}

/// A free port on 127.0.0.1 (bound and released; nothing else runs here).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_listening(addr: SocketAddr, mut alive: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if !alive() {
            return Err(format!("exited before listening on {addr}"));
        }
        if Instant::now() > deadline {
            return Err(format!("not listening on {addr} after {START_TIMEOUT:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------ client

/// Drives `CONNECTIONS` connections with `mix` within `budget` and prints
/// throughput, latency and what the answers were.
/// False once the bench is to stop.
#[must_use]
fn measure(name: &str, addr: SocketAddr, mix: Mix, budget: Budget) -> bool {
    if stopped() {
        return false;
    }
    match run(addr, mix, budget) {
        Ok(r) => {
            let mut all = r.latencies;
            all.sort();
            let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
            let answers: Vec<String> = r
                .answers
                .iter()
                .map(|(k, n)| format!("{k} {:.0}%", 100.0 * *n as f64 / all.len() as f64))
                .collect();
            let samples: Vec<String> = r
                .samples
                .iter()
                .map(|(k, a)| format!("  {k}: action={}", a.chars().take(110).collect::<String>()))
                .collect();
            println!(
                "{name}: {:.0} requests/s, p50 {} us, p99 {} us ({} requests in {:.2} s; {})",
                all.len() as f64 / r.elapsed.as_secs_f64(),
                pct(0.50).as_micros(),
                pct(0.99).as_micros(),
                all.len(),
                r.elapsed.as_secs_f64(),
                answers.join(", "),
            );
            for s in samples {
                println!("{s}");
            }
        }
        Err(e) => println!("{name}: failed: {e}"),
    }
    if stopped() {
        println!("interrupted: stopping what the bench started");
        return false;
    }
    true
}

struct Run {
    latencies: Vec<Duration>,
    answers: BTreeMap<&'static str, usize>,
    /// The first answer of each kind, to see that the servers did the same.
    samples: BTreeMap<&'static str, String>,
    elapsed: Duration,
}

type Worker = Result<(Vec<Duration>, BTreeMap<&'static str, usize>, Vec<String>), String>;

fn run(addr: SocketAddr, mix: Mix, budget: Budget) -> Result<Run, String> {
    // Every worker connects and warms up, then all start together.
    let ready = Arc::new(Barrier::new(CONNECTIONS + 1));
    let workers: Vec<thread::JoinHandle<Worker>> = (0..CONNECTIONS)
        .map(|c| {
            let ready = ready.clone();
            thread::spawn(move || {
                let conn = connect(addr).and_then(|mut conn| {
                    let deadline = Instant::now() + budget.time;
                    for w in 0..WARMUP {
                        if stopped() || Instant::now() > deadline {
                            break;
                        }
                        ask(&mut conn, &request(mix, c, 1_000_000 + w))?;
                    }
                    Ok(conn)
                });
                ready.wait();
                let mut conn = conn?;
                let deadline = Instant::now() + budget.time;
                let mut latencies = Vec::with_capacity(budget.requests);
                let mut answers = BTreeMap::new();
                let mut samples = Vec::new();
                for i in 0..budget.requests {
                    let req = request(mix, c, i);
                    let t = Instant::now();
                    let answer = ask(&mut conn, &req)?;
                    latencies.push(t.elapsed());
                    let n = answers.entry(kind(&answer)).or_insert(0);
                    if *n == 0 {
                        samples.push(answer);
                    }
                    *n += 1;
                    if stopped() || Instant::now() > deadline {
                        break;
                    }
                }
                Ok((latencies, answers, samples))
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    let mut run = Run {
        latencies: Vec::new(),
        answers: BTreeMap::new(),
        samples: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    let mut error = None;
    for w in workers {
        match w.join().map_err(|_| "client thread panicked".to_string()) {
            Ok(Ok((l, a, samples))) => {
                run.latencies.extend(l);
                for sample in samples {
                    run.samples.entry(kind(&sample)).or_insert(sample);
                }
                for (k, n) in a {
                    *run.answers.entry(k).or_insert(0) += n;
                }
            }
            Ok(Err(e)) | Err(e) => error = Some(e),
        }
    }
    run.elapsed = start.elapsed();
    match error {
        Some(e) => Err(e),
        None if run.latencies.is_empty() => Err("no request answered".into()),
        None => Ok(run),
    }
}

fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    Ok(BufReader::new(s))
}

/// One request, one whole response; returns its `action=` value.
fn ask(conn: &mut BufReader<TcpStream>, req: &str) -> Result<String, String> {
    conn.get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut action = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        match conn.read_line(&mut line) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if line == "\n" {
            return Ok(action);
        }
        if let Some(a) = line.strip_prefix("action=") {
            action = a.trim_end().to_string();
        }
    }
}

fn kind(action: &str) -> &'static str {
    let word = action.split_whitespace().next().unwrap_or("");
    match word.to_ascii_uppercase().as_str() {
        "DUNNO" | "OK" => "DUNNO/OK",
        "PREPEND" => "PREPEND",
        "REJECT" => "REJECT",
        w if w.starts_with('5') => "REJECT",
        w if w.starts_with('4') || w.starts_with("DEFER") => "DEFER",
        _ => "other",
    }
}

// ----------------------------------------------------------------- servers

/// The floor: read lines until the empty one, answer DUNNO; one thread per
/// connection. Lives as long as the process (a few idle threads).
fn start_floor() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
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
    });
    addr
}

fn base_config(dns: SocketAddr, dns_extra: &str) -> String {
    format!(
        "[server]\nmax_connections = 100\n\
         # As the shipped policy.toml: started as root, rpol serves as nobody.\n\
         user = \"nobody\"\n\
         [dns]\nnameservers = [\"{dns}\"]\ntimeout = \"2s\"\nattempts = 1\n{dns_extra}\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [spf]\nreceiver = \"mx.example.com\"\n"
    )
}

/// The release rpol binary on a free TCP port, killed on drop.
struct Rpol {
    child: Child,
    addr: SocketAddr,
}

impl Rpol {
    fn start(dir: &Path, name: &str, config: &str) -> Rpol {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let addr = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rpol"));
        // Should the bench die without dropping its guard, rpol goes too.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(format!("tcp:{addr}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start rpol");
        let mut rpol = Rpol { child, addr };
        let child = &mut rpol.child;
        if let Err(e) = wait_listening(addr, || matches!(child.try_wait(), Ok(None))) {
            panic!("rpol ({name}): {e}");
        }
        rpol
    }
}

impl Drop for Rpol {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// postfwd2 (it always daemonizes), stopped on drop with `--kill`.
struct Postfwd {
    addr: SocketAddr,
    run: PathBuf,
}

impl Postfwd {
    fn start(dir: &Path) -> Result<Postfwd, String> {
        use std::os::unix::fs::PermissionsExt;
        // Rules: an absolute path (postfwd2 chdirs to /).
        let rules = dir.join("postfwd.cf");
        std::fs::write(
            &rules,
            "id=R_CLIENT; client_address=198.51.100.0/24; action=REJECT client blocked\n\
             id=R_SENDER; sender=~/@spam\\.example$/; action=REJECT sender blocked\n",
        )
        .unwrap();
        // Its cache socket and pid file: writable by its run-as user.
        let run = dir.join("postfwd-run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let addr = free_port();
        let status = Command::new("postfwd2")
            .args(Self::common(&run))
            .args(["-n", "--cache", "0", "-u", "nobody", "-g", "nogroup"])
            .arg("--file")
            .arg(&rules)
            .args(["--interface", "127.0.0.1", "--port"])
            .arg(addr.port().to_string())
            .arg("--noidlestats")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("postfwd2: {e}"))?;
        let p = Postfwd { addr, run };
        if !status.success() {
            return Err(format!("postfwd2 exited with {status}"));
        }
        wait_listening(addr, || true)?;
        Ok(p)
    }

    fn common(run: &Path) -> Vec<String> {
        vec![
            "--pidfile".into(),
            run.join("postfwd.pid").display().to_string(),
            "--cache_port".into(),
            run.join("cache.sock").display().to_string(),
        ]
    }
}

impl Drop for Postfwd {
    fn drop(&mut self) {
        let _ = Command::new("postfwd2")
            .args(Self::common(&self.run))
            .arg("--kill")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Its children leave within a moment; wait (bounded) for the port.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(self.addr).is_ok() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// policyd-spf behind `socat ... fork EXEC:`, in its own process group,
/// which is ended on drop (socat and the policyd-spf processes it forked).
struct PolicydSpf {
    child: Child,
    addr: SocketAddr,
}

impl PolicydSpf {
    fn start(dir: &Path) -> Result<PolicydSpf, String> {
        use std::os::unix::process::CommandExt;
        let conf = dir.join("policyd-spf.conf");
        // As Debian's default, quieter; the SPF verdicts as rpol's defaults
        // (reject a HELO or MAIL FROM fail, header otherwise).
        std::fs::write(
            &conf,
            "debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n\
             PermError_reject = False\nTempError_Defer = False\n\
             skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1\n",
        )
        .unwrap();
        let addr = free_port();
        let child = Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{},bind=127.0.0.1,reuseaddr,fork",
                addr.port()
            ))
            .arg(format!("EXEC:/usr/bin/policyd-spf {}", conf.display()))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("socat.log")).unwrap())
            .spawn()
            .map_err(|e| format!("socat: {e}"))?;
        // For benches/peers.sh's clean-up, should this process die first.
        let _ = std::fs::write(dir.join("socat.pid"), child.id().to_string());
        let mut p = PolicydSpf { child, addr };
        let child = &mut p.child;
        wait_listening(addr, || matches!(child.try_wait(), Ok(None)))?;
        Ok(p)
    }
}

impl Drop for PolicydSpf {
    fn drop(&mut self) {
        // The group is socat's own (process_group(0) above): socat, its
        // forked children and the policyd-spf processes they exec'd.
        let pgid = self.child.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
