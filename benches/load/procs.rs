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
    pub fn start() -> Dns {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--role", "dns"]);
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
