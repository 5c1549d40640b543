//! Issue 29 item 1: under systemd (stderr is the journal) or with
//! `--journal`, rpol writes its records to journald natively, each with
//! its priority and the decision's parts as fields. journald does not run
//! here, so the test is journald: rpol runs in a mount namespace of its
//! own (`unshare -m`) in which /run/systemd/journal is a directory of the
//! test's, where the test listens on the datagram socket `socket`; each
//! datagram is one record in journald's native protocol (TESTING.md).
//! Needs root (unshare, mount), as CI runs it.

use crate::support::rpol;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rpol::{Rpol, Setup, ask, require_root};

const CONFIG: &str = r#"
[profile.default]
client = ["check_client_access inline"]

[tables]
inline = "clients"
"#;

/// One record: its fields (the last value of a repeated one).
type Record = HashMap<String, Vec<u8>>;

/// Parses one datagram of journald's native protocol: `NAME=value\n`, or
/// `NAME\n`, a 64-bit little-endian length, the value and `\n`.
fn parse(mut data: &[u8]) -> Record {
    let mut record = Record::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'\n').expect("a field ends");
        let line = &data[..end];
        data = &data[end + 1..];
        match line.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let name = String::from_utf8(line[..eq].to_vec()).unwrap();
                record.insert(name, line[eq + 1..].to_vec());
            }
            None => {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
                record.insert(name, data[8..8 + len].to_vec());
                assert_eq!(data[8 + len], b'\n', "a binary field ends with a newline");
                data = &data[8 + len + 1..];
            }
        }
    }
    record
}

/// The journal's socket for one rpol, and the records sent to it.
struct Journal {
    dir: tempfile::TempDir,
    socket: UnixDatagram,
    records: Vec<Record>,
}

impl Journal {
    fn new() -> Journal {
        let dir = tempfile::tempdir().unwrap();
        let socket = UnixDatagram::bind(dir.path().join("socket")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Journal {
            dir,
            socket,
            records: Vec::new(),
        }
    }

    /// `rpol ARGS` (with the setup's config) where /run/systemd/journal is
    /// this journal's directory.
    fn command(&self, setup: &Setup, args: &[&str]) -> Command {
        let mut inner = setup.command();
        inner.args(args);
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && \
                 mount --bind \"$0\" /run/systemd/journal && exec \"$@\"",
            )
            .arg(self.dir.path())
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Waits (bounded) for a record whose MESSAGE contains `needle`.
    fn wait_for(&mut self, needle: &str) -> Record {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.records.iter().find(|r| {
                r.get("MESSAGE")
                    .is_some_and(|m| String::from_utf8_lossy(m).contains(needle))
            }) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no record with {needle:?}: {:#?}",
                self.messages()
            );
            let mut buf = vec![0; 65536];
            if let Ok(n) = self.socket.recv(&mut buf) {
                // tracing-journald's probe at start is empty.
                if n > 0 {
                    self.records.push(parse(&buf[..n]));
                }
            }
        }
    }

    fn messages(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| String::from_utf8_lossy(&r["MESSAGE"]).into_owned())
            .collect()
    }
}

fn field(record: &Record, name: &str) -> String {
    String::from_utf8_lossy(
        record
            .get(name)
            .unwrap_or_else(|| panic!("no {name}: {record:?}")),
    )
    .into_owned()
}

fn wait_accepting(rpol: &mut Rpol, socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(socket).is_err() {
        if let Some(status) = rpol.try_status() {
            panic!("rpol exited ({status}): {}", rpol.stderr());
        }
        assert!(
            Instant::now() < deadline,
            "not accepting: {}",
            rpol.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root (a mount namespace)"]
fn records_reach_the_journal_with_their_priorities_and_fields() {
    require_root();
    let setup = Setup::new(CONFIG).file(
        "clients",
        "203.0.113.9 PREPEND X-Note: a \"quoted\" text\n198.51.100.7 REJECT go away\n",
    );
    let socket = setup.path("rpol.sock");
    let listen = format!("unix:{}", socket.display());
    let mut journal = Journal::new();
    let cmd = journal.command(&setup, &["--journal", "--listen", &listen]);
    let mut rpol = setup.spawn(cmd);
    wait_accepting(&mut rpol, &socket);
    rpol.socket = socket.clone();

    // info: a decision, its parts as fields (LOG_INFO, 6).
    let attrs = [
        ("protocol_state", "RCPT"),
        ("client_address", "198.51.100.7"),
        ("client_name", "mx.example.org"),
        ("sender", "a@example.org"),
        ("recipient", "b@example.com"),
        ("sasl_username", "alice"),
        ("instance", "1a2b.3c4d.5e6f.0"),
        ("queue_id", "4ABC123"),
    ];
    let refusal = "554 5.7.1 <mx.example.org[198.51.100.7]>: Client host rejected: go away";
    assert_eq!(
        ask(&mut rpol.connect(), &attrs),
        format!("action={refusal}\n\n")
    );
    let r = journal.wait_for("rule=");
    assert_eq!(field(&r, "PRIORITY"), "6");
    assert_eq!(field(&r, "SYSLOG_IDENTIFIER"), "rpol");
    assert_eq!(
        field(&r, "MESSAGE"),
        format!(
            "4ABC123: action=\"{refusal}\" client=mx.example.org[198.51.100.7] \
         from=<a@example.org> to=<b@example.com> helo=<> sasl_username=<alice> \
         protocol_state=RCPT instance=1a2b.3c4d.5e6f.0 profile=default \
         rule=\"client: check_client_access inline\""
        )
    );
    for (name, want) in [
        ("RPOL_RULE", "client: check_client_access inline"),
        ("RPOL_ACTION", refusal),
        ("RPOL_PROFILE", "default"),
        ("CLIENT", "mx.example.org[198.51.100.7]"),
        ("SENDER", "a@example.org"),
        ("RECIPIENT", "b@example.com"),
        ("SASL_USERNAME", "alice"),
        ("INSTANCE", "1a2b.3c4d.5e6f.0"),
        ("QUEUE_ID", "4ABC123"),
        ("PROTOCOL_STATE", "RCPT"),
    ] {
        assert_eq!(field(&r, name), want, "{name}");
    }
    // An action with spaces and quotes is quoted and escaped in the line;
    // an attribute the request did not send is no field.
    let attrs = [
        ("protocol_state", "RCPT"),
        ("client_address", "203.0.113.9"),
        ("recipient", "b@example.com"),
    ];
    assert_eq!(
        ask(&mut rpol.connect(), &attrs),
        "action=PREPEND X-Note: a \"quoted\" text\n\n"
    );
    let r = journal.wait_for("X-Note");
    assert!(
        field(&r, "MESSAGE").starts_with(
            "NOQUEUE: action=\"PREPEND X-Note: a \\\"quoted\\\" text\" client=unknown[203.0.113.9] "
        ),
        "{r:?}"
    );
    assert!(!r.contains_key("SASL_USERNAME"), "{r:?}");

    // warning: a malformed request (LOG_WARNING, 4).
    let mut stream = rpol.connect();
    stream.write_all(b"no equals sign\n\n").unwrap();
    let r = journal.wait_for("malformed request");
    assert_eq!(field(&r, "PRIORITY"), "4");

    // error: a reload that fails (LOG_ERR, 3).
    setup_write(&rpol, "[profile.default]\nclient = [\"frobnicate\"]\n");
    rpol.signal(libc::SIGHUP);
    let r = journal.wait_for("reload failed");
    assert_eq!(field(&r, "PRIORITY"), "3");

    // Nothing went to stderr: every record went to the journal.
    assert_eq!(rpol.stderr(), "");
}

/// A child killed when the test ends, also by a failed assertion.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup_write(rpol: &Rpol, config: &str) {
    rpol.setup.write("policy.toml", config);
}

/// Without `--journal`, rpol writes to the journal when systemd made
/// stderr the journal: JOURNAL_STREAM names stderr's device and inode.
/// A JOURNAL_STREAM that names another file (inherited from a parent
/// whose stderr was the journal) leaves the plain lines on stderr.
#[test]
#[ignore = "needs root (a mount namespace)"]
fn journal_stream_naming_stderr_selects_the_journal() {
    require_root();
    for matching in [true, false] {
        let setup = Setup::new(CONFIG).file("clients", "198.51.100.7 REJECT go away\n");
        let socket = setup.path("rpol.sock");
        let listen = format!("unix:{}", socket.display());
        let mut journal = Journal::new();
        let stderr_path = setup.path("stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let meta = stderr.metadata().unwrap();
        let ino = if matching { meta.ino() } else { meta.ino() + 1 };
        let mut cmd = journal.command(&setup, &["--listen", &listen]);
        cmd.env("JOURNAL_STREAM", format!("{}:{ino}", meta.dev()));
        cmd.stderr(stderr);
        let mut child = Killed(cmd.spawn().unwrap());
        let child = &mut child.0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&socket).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "rpol exited");
            assert!(Instant::now() < deadline, "not accepting");
            std::thread::sleep(Duration::from_millis(20));
        }
        let reply = ask(
            &mut rpol::connect(&socket),
            &[
                ("client_address", "198.51.100.7"),
                ("protocol_state", "RCPT"),
            ],
        );
        assert_eq!(
            reply,
            "action=554 5.7.1 <unknown[198.51.100.7]>: Client host rejected: go away\n\n"
        );
        if matching {
            let r = journal.wait_for("rule=");
            assert_eq!(field(&r, "PRIORITY"), "6");
        } else {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read_to_string(&stderr_path)
                .unwrap()
                .contains("rule=")
            {
                assert!(Instant::now() < deadline, "no decision line on stderr");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&stderr_path).unwrap();
        assert_eq!(text.contains("rule="), !matching, "{text}");
        if !matching {
            // Nothing reached the journal but tracing-journald's probe,
            // which is never made without the journal target.
            let mut buf = [0; 1024];
            assert!(journal.socket.recv(&mut buf).is_err(), "a record was sent");
        }
    }
}
