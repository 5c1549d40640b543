//! Runs the real `rpol` binary for integration tests: a config and its
//! table files in a temporary directory, the daemon listening on a unix
//! socket there, and raw-byte helpers to talk the policy protocol to it.
//!
//! Included by test files with `use crate::support::rpol;` (tests/suite.rs builds it once; a binary of its own includes it with `#[path = "support/rpol.rs"] mod rpol;`).
//! Every wait is bounded; the process is killed when the handle drops.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Path of the binary under test.
pub const RPOL: &str = env!("CARGO_BIN_EXE_rpol");

/// How long the daemon may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Read timeout of test connections: a missing answer fails the test
/// instead of hanging it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound for anything else the tests wait for (exit, log lines).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A config file and its tables in a fresh temporary directory.
pub struct Setup {
    pub dir: TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// Writes `config` as `policy.toml` in a new temporary directory.
    pub fn new(config: &str) -> Setup {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let setup = Setup {
            config: dir.path().join("policy.toml"),
            dir,
        };
        setup.write("policy.toml", config);
        setup
    }

    /// Adds a file (a table) at `rel`, relative to the config's directory.
    pub fn file(self, rel: &str, contents: &str) -> Setup {
        self.write(rel, contents);
        self
    }

    /// Writes (or overwrites) a file relative to the config's directory.
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create table directory");
        }
        std::fs::write(&path, contents).expect("write test file");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `rpol --config <policy.toml> [--user root]` with `RUST_LOG=info`,
    /// stdin closed.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(RPOL);
        cmd.arg("--config").arg(&self.config).args(run_as_args());
        cmd.env("RUST_LOG", "info")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        cmd
    }

    /// `rpol --config <policy.toml>` as systemd starts a socket-activated
    /// service: the listening sockets `fds` become fds 3, 4, ... and
    /// LISTEN_PID and LISTEN_FDS say so. Spawn it with [`Setup::spawn`].
    pub fn systemd_command(&self, fds: &[std::os::fd::RawFd]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                r#"LISTEN_PID=$$ LISTEN_FDS={} exec "$0" --config "$@""#,
                fds.len()
            ))
            .arg(RPOL)
            .arg(&self.config)
            .args(run_as_args())
            .env("RUST_LOG", "info")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        let fds = fds.to_vec();
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between
        // fork and exec. Each fd is first copied above the targets, so that
        // placing one cannot close another; dup2 clears FD_CLOEXEC.
        unsafe {
            cmd.pre_exec(move || {
                let base = 3 + fds.len() as i32;
                for (i, fd) in fds.iter().enumerate() {
                    let high = libc::fcntl(*fd, libc::F_DUPFD, base + 16);
                    if high < 0 || libc::dup2(high, 3 + i as i32) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::close(high);
                }
                Ok(())
            });
        }
        cmd
    }

    /// Starts the daemon on `rpol.sock` in the temporary directory and
    /// waits until the socket accepts.
    pub fn start(self) -> Rpol {
        let socket = self.path("rpol.sock");
        self.start_on(&socket)
    }

    /// Starts the daemon on the unix socket `socket` and waits until it
    /// accepts.
    pub fn start_on(self, socket: &Path) -> Rpol {
        let mut cmd = self.command();
        cmd.arg("--listen")
            .arg(format!("unix:{}", socket.display()));
        let mut rpol = self.spawn(cmd);
        rpol.socket = socket.to_path_buf();
        rpol.wait_until_accepting();
        rpol
    }

    /// Spawns `cmd` (from [`Setup::command`]) with stderr captured; no
    /// readiness wait.
    pub fn spawn(self, mut cmd: Command) -> Rpol {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rpol");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Rpol {
            socket: self.path("rpol.sock"),
            setup: self,
            child,
            stderr,
            status: None,
        }
    }
}

/// A running daemon; killed on drop.
pub struct Rpol {
    pub setup: Setup,
    /// The unix socket tests connect to.
    pub socket: PathBuf,
    child: Child,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Rpol {
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Everything the daemon wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) for a stderr line containing `needle` at or after
    /// byte `from` of the stderr text; returns that line.
    pub fn wait_for_log(&self, needle: &str, from: usize) -> String {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let text = self.stderr();
            if let Some(line) = text
                .get(from..)
                .unwrap_or("")
                .lines()
                .find(|l| l.contains(needle))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {WAIT_TIMEOUT:?}; stderr:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole response to GET /metrics (the daemon was given a metrics
    /// port 0: its address is the one it logs).
    pub fn metrics(&self) -> String {
        let line = self.wait_for_log("serving metrics on http://", 0);
        let addr = line
            .split("http://")
            .nth(1)
            .expect("address in the log line")
            .trim_end_matches("/metrics")
            .trim();
        let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("read timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read the metrics");
        out
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rpol did not exit within {WAIT_TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_status() {
                panic!(
                    "rpol exited at start ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not accepting within {START_TIMEOUT:?}; stderr:\n{}",
                self.socket.display(),
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new connection to the daemon's socket, with a read timeout.
    pub fn connect(&self) -> UnixStream {
        connect(&self.socket)
    }
}

impl Drop for Rpol {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// For a test marked `#[ignore = "needs root"]` (run by `cargo test --
/// --ignored`, as CI does): fails at once, saying why, when not root,
/// rather than check nothing and pass.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test needs root (it is run by `cargo test -- --ignored`)"
    );
}

/// `--user root` when the tests run as root (as on CI): the explicit way
/// to let a daemon stay root; tests/privileges.rs covers the rest.
pub fn run_as_args() -> &'static [&'static str] {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        &["--user", "root"]
    } else {
        &[]
    }
}

/// A blocking connection to `path` with [`READ_TIMEOUT`].
pub fn connect(path: &Path) -> UnixStream {
    let stream =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set read timeout");
    stream
}

/// The wire bytes of one request: `request=smtpd_access_policy`, then
/// `attrs` as `name=value` lines, then the empty line.
pub fn request(attrs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"request=smtpd_access_policy\n".to_vec();
    out.extend_from_slice(&raw_request(attrs));
    out
}

/// The wire bytes of `attrs` as given (no `request=` added), with the
/// terminating empty line.
pub fn raw_request(attrs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in attrs {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Writes one request (see [`request`]) and reads exactly one response.
pub fn ask<S: Read + Write>(stream: &mut S, attrs: &[(&str, &str)]) -> String {
    stream.write_all(&request(attrs)).expect("write request");
    read_response(stream)
}

/// Like [`ask`], but returns only the action: the text after `action=`,
/// without the framing (panics on anything that is not one response).
pub fn ask_action<S: Read + Write>(stream: &mut S, attrs: &[(&str, &str)]) -> String {
    let wire = ask(stream, attrs);
    wire.strip_prefix("action=")
        .and_then(|a| a.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not a response: {wire:?}"))
        .to_string()
}

/// Reads one response, up to and including its empty line, and nothing
/// more (byte by byte, so pipelined responses stay in the socket).
pub fn read_response<S: Read>(stream: &mut S) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\n\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed after {:?} instead of a whole response",
                String::from_utf8_lossy(&out)
            ),
            Ok(_) => out.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "reading a response failed after {:?}: {e}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8(out).expect("response is UTF-8")
}

/// Reads until the server closes the connection; panics if it does not
/// within the read timeout. A reset counts as closed: Linux reports
/// ECONNRESET on a unix socket whose peer closed with bytes unread, after
/// the bytes it did send.
pub fn read_to_close<S: Read>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!(
                "server did not close the connection ({e}) after {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Whether the server sent nothing within `wait`: true on a read timeout,
/// false if bytes (or EOF) arrived. Restores [`READ_TIMEOUT`].
pub fn silent_for(stream: &mut UnixStream, wait: Duration) -> bool {
    stream
        .set_read_timeout(Some(wait))
        .expect("set read timeout");
    let mut byte = [0u8; 1];
    let silent = match stream.read(&mut byte) {
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    };
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set read timeout");
    silent
}

/// The response bytes rpol sends for `action`.
pub fn response(action: &str) -> String {
    format!("action={action}\n\n")
}
