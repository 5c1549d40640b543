//! The processes a load run measures and the figures read from /proc about
//! them: the protocol floor and the DNS server (this bench binary started
//! again in another role), the release rpol binary, and the CPU time and
//! peak RSS of each.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::{Target, connect_retry, probe};

/// How long a server may take to answer its first request.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Pids of every server started, for the SIGINT/SIGTERM handler.
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Stops every server still running (the handler for SIGINT and SIGTERM:
/// rpol, once it has become `nobody`, no longer gets a parent-death signal).
pub fn kill_all() {
    for pid in CHILDREN.lock().unwrap().drain(..) {
        // SAFETY: kill has no memory effects; the pid is our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// CPU time of process `pid` so far, (user, system), from /proc/PID/stat
/// (utime, stime; in clock ticks, 10 ms here).
pub fn cpu_times(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15 (proc(5)).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks_to_time(ticks(11)), ticks_to_time(ticks(12)))
}

/// User + system CPU time of process `pid` so far.
pub fn cpu_time(pid: u32) -> Duration {
    let (user, system) = cpu_times(pid);
    user + system
}

fn ticks_to_time(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// CPU time of the whole machine so far: (busy, all), from /proc/stat's
/// first line (busy is all but idle and iowait).
pub fn machine_time() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let all: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (ticks_to_time(all - idle), ticks_to_time(all))
}

/// A `VmXXX:` line of /proc/PID/status, in KiB (0 if absent).
pub fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A server process, killed when dropped.
pub struct Server {
    pub pid: u32,
    pub target: Target,
    child: Child,
    /// From spawn to the first answer.
    pub first_answer: Duration,
    /// rpol's `[metrics] listen`, when set: its store errors are read
    /// there at the edges of each run.
    pub metrics: Option<std::net::SocketAddr>,
    /// Whether it asks the slow DNS server (whose queries its runs count).
    pub slow_dns: bool,
    /// The port of the redis-server its store is on, if any.
    pub redis_port: Option<u16>,
}

impl Server {
    /// The protocol floor: this binary in its floor role.
    pub fn floor(rt: &tokio::runtime::Runtime, dir: &Path, name: &str, tcp: bool) -> Server {
        let target = Target::new(dir, name, tcp);
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--role", "floor", "--listen", &target.to_string()]);
        Server::spawn(rt, cmd, target, name)
    }

    /// The release rpol binary with `config` (written to `dir/name.toml`).
    pub fn rpol(
        rt: &tokio::runtime::Runtime,
        dir: &Path,
        name: &str,
        config: &str,
        tcp: bool,
        rust_log: &str,
    ) -> Server {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let target = Target::new(dir, name, tcp);
        let mut cmd = Command::new(rpol_binary());
        cmd.arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(target.to_string())
            .env("RUST_LOG", rust_log);
        // Warnings and errors show on the bench's stderr; at a level that
        // logs every decision, the lines are written (the cost measured)
        // but not kept.
        if !matches!(rust_log, "warn" | "error" | "off") {
            cmd.stderr(Stdio::null());
        }
        Server::spawn(rt, cmd, target, name)
    }

    fn spawn(rt: &tokio::runtime::Runtime, mut cmd: Command, target: Target, name: &str) -> Server {
        die_with_parent(&mut cmd);
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        CHILDREN.lock().unwrap().push(child.id());
        let mut server = Server {
            pid: child.id(),
            target,
            child,
            first_answer: Duration::ZERO,
            metrics: None,
            slow_dns: false,
            redis_port: None,
        };
        let deadline = started + START_TIMEOUT;
        rt.block_on(async {
            let mut conn = connect_retry(&server.target, deadline)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            probe(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{name}: first request: {e}"));
        });
        server.first_answer = started.elapsed();
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{name} exited: {status}");
        }
        server
    }

    /// (user, system) CPU time so far.
    pub fn cpu(&self) -> (Duration, Duration) {
        cpu_times(self.pid)
    }

    /// Peak resident set so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        vm_kib(self.pid, "VmHWM") as f64 / 1024.0
    }

    /// Resident set now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> f64 {
        vm_kib(self.pid, "VmRSS") as f64 / 1024.0
    }
}

impl Server {
    /// Stops the server with SIGTERM (a clean shutdown: the store closed)
    /// and waits for it; SIGKILL after `STOP_TIMEOUT`.
    pub fn terminate(mut self) {
        // SAFETY: kill has no memory effects; the pid is our own child.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().unwrap().retain(|&p| p != self.pid);
        self.target.remove();
    }
}

/// The loopback DNS server (tests/support/dns.rs) in a process of its own,
/// so that its CPU time is not counted as the client's. It prints its
/// address, then answers each line on its stdin with its query count; it
/// stops when its stdin closes.
pub struct Dns {
    pub addr: std::net::SocketAddr,
    pub pid: u32,
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Dns {
    /// The DNS server, answering each query `delay` late (none: at once).
    pub fn start(delay: Duration) -> Dns {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--role", "dns", "--delay-ms"])
            .arg(delay.as_millis().to_string());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the DNS server");
        CHILDREN.lock().unwrap().push(child.id());
        let to = child.stdin.take().unwrap();
        let mut from = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        let addr = line.trim().parse().expect("the DNS server's address");
        Dns {
            addr,
            pid: child.id(),
            child,
            to,
            from,
        }
    }

    /// Queries received so far.
    pub fn queries(&mut self) -> u64 {
        writeln!(self.to, "count").unwrap();
        let mut line = String::new();
        self.from.read_line(&mut line).unwrap();
        line.trim().parse().unwrap_or(0)
    }

    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().unwrap().retain(|&p| p != self.pid);
    }
}

/// SIGKILL to `cmd` when this process dies, whatever kills it. (rpol loses
/// it when it becomes `nobody`: see [`kill_all`].)
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A directory for sockets, configs and tables that rpol, once it runs as
/// `nobody`, can still read (for its reload checks).
pub fn work_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("rpol-load.")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The directory of the shipped policy.toml and tables/.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rpol measured: the one cargo built with the bench, or the binary
/// `RPOL_BENCH_BIN` names (another build, to compare two versions against
/// the same floor on the same machine, minutes apart).
pub fn rpol_binary() -> std::ffi::OsString {
    std::env::var_os("RPOL_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_rpol").into())
}

/// The value of counter `name` (its `_total` sample) in rpol's GET
/// /metrics at `addr`; 0 when absent or unreachable.
pub fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name || k == format!("{name}_total"))
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .map_or(0, |v| v as u64)
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throw-away redis-server on a free loopback port, without
/// persistence (`--save "" --appendonly no`); killed when dropped.
pub struct Redis {
    pub port: u16,
    pub pid: u32,
    child: Child,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start redis-server (is it installed?)");
        CHILDREN.lock().unwrap().push(child.id());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Read;
                let mut pong = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut pong).is_ok() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            port,
            pid: child.id(),
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Peak resident set so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        vm_kib(self.pid, "VmHWM") as f64 / 1024.0
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().unwrap().retain(|&p| p != self.pid);
    }
}
