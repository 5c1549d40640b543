//! Who may talk to rpol, what its log may show, and how much of it: a TCP
//! peer outside `[server] allow`, and a unix-socket or loopback TCP peer of
//! a uid that is neither root, the socket's owner, rpol's own (unless
//! nobody) nor in `allow_users` are closed unanswered, logged and counted; the Redis URL's user and
//! password reach no log line; `[log] decisions` picks which decision
//! lines are written, and a flood of identical ones is summarised.
//! Everything against the real binary over real sockets.

use crate::support::port587;
use crate::support::redis as redis_server;
use crate::support::rpol;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use port587::{DUNNO, SUBMISSION, rejected, submission};
use rpol::{Rpol, Setup, WAIT_TIMEOUT, ask, read_to_close, request, require_root};

/// rpol listening on `tcp:127.0.0.1:0`; returns it and the port it took.
fn tcp_daemon(config: &str) -> (Rpol, u16) {
    let setup = Setup::new(config);
    let mut cmd = setup.command();
    cmd.args(["--listen", "tcp:127.0.0.1:0"]);
    tcp_port(setup.spawn(cmd))
}

/// Waits for `rpol` to listen on TCP; returns it and the port it took.
fn tcp_port(rpol: Rpol) -> (Rpol, u16) {
    let line = rpol.wait_for_log("listening on tcp:127.0.0.1:", 0);
    let port = line
        .rsplit_once("listening on tcp:127.0.0.1:")
        .and_then(|(_, p)| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (rpol, port)
}

/// A TCP connection to `127.0.0.1:port` from the local address `from`.
fn connect_from(from: &str, port: u16) -> TcpStream {
    use std::os::fd::{FromRawFd, OwnedFd};
    let sockaddr = |ip: &str, port: u16| {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        }
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (local, remote) = (sockaddr(from, 0), sockaddr("127.0.0.1", port));
    // SAFETY: a new socket we own; bind and connect read `len` bytes of
    // the sockaddr_in values above.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let rc = libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&local as *const libc::sockaddr_in).cast(),
            len,
        );
        assert_eq!(rc, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let rc = libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&remote as *const libc::sockaddr_in).cast(),
            len,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        fd
    };
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(rpol::READ_TIMEOUT)).unwrap();
    stream
}

/// What the server sends a peer that writes one request and then waits
/// for the connection's end: the response bytes, or nothing when refused.
fn forged(stream: &mut TcpStream, attrs: &[(&str, &str)]) -> Vec<u8> {
    // The peer may be closed before the write lands: that is the point.
    let _ = stream.write_all(&request(attrs));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    read_to_close(stream)
}

/// The forged END-OF-MESSAGE of the audit: another login's count.
fn forged_count() -> Vec<(&'static str, &'static str)> {
    let mut attrs = submission("198.51.100.66", true);
    attrs.retain(|(k, _)| *k != "protocol_state" && *k != "recipient_count");
    attrs.push(("protocol_state", "END-OF-MESSAGE"));
    attrs.push(("recipient_count", "100000"));
    attrs
}

/// The refusal counters of GET /metrics, as `reason count` lines.
fn refusals_counted(rpol: &Rpol) -> Vec<String> {
    let line = rpol.wait_for_log("serving metrics on http://", 0);
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(rpol::READ_TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    String::from_utf8(read_to_close(&mut s))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("rpol_connections_refused_total{reason=\""))
        .map(|l| l.replace("\"}", ""))
        .collect()
}

#[test]
fn tcp_peer_outside_allow_is_closed_unanswered_and_logged() {
    let config = format!(
        "[server]\nallow = [\"127.0.0.1/32\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n{SUBMISSION}"
    );
    let (rpol, port) = tcp_daemon(&config);

    let mut stranger = connect_from("127.0.0.2", port);
    assert_eq!(forged(&mut stranger, &forged_count()), b"");
    let line = rpol.wait_for_log("not in [server] allow", 0);
    assert!(
        line.contains("WARN") && line.contains("127.0.0.2"),
        "{line}"
    );
    assert_eq!(refusals_counted(&rpol), ["address 1", "user 0"]);

    // The allowed peer is served as ever.
    let mut postfix = connect_from("127.0.0.1", port);
    assert_eq!(
        ask(&mut postfix, &submission("198.51.100.4", false)),
        rejected("198.51.100.4")
    );
}

/// A flood of refused connections is one warning (per 10 s) with a count,
/// not one line each, and an allowed client is served meanwhile.
#[test]
fn refused_tcp_peers_are_warned_about_at_a_bounded_rate() {
    let config = format!("[server]\nallow = [\"127.0.0.1/32\"]\n{SUBMISSION}");
    let (rpol, port) = tcp_daemon(&config);
    for _ in 0..200 {
        let mut stranger = connect_from("127.0.0.2", port);
        assert_eq!(forged(&mut stranger, &forged_count()), b"");
    }
    let mut postfix = connect_from("127.0.0.1", port);
    assert_eq!(ask(&mut postfix, &submission("198.51.100.4", true)), DUNNO);
    let warnings = rpol
        .stderr()
        .lines()
        .filter(|l| l.contains("not in [server] allow"))
        .count();
    assert_eq!(warnings, 1, "{}", rpol.stderr());
}

#[test]
fn default_allow_is_loopback() {
    let (_rpol, port) = tcp_daemon(SUBMISSION);
    for from in ["127.0.0.1", "127.0.0.2"] {
        let mut conn = connect_from(from, port);
        assert_eq!(
            ask(&mut conn, &submission("198.51.100.4", true)),
            DUNNO,
            "from {from}"
        );
    }
}

/// Runs python3 as `uid` (gid 65534): connects to `to` (a unix socket's
/// path, or `127.0.0.1:PORT`), sends one forged request and, unless
/// `close_at_once`, prints what came back until the server closed.
fn peer_as(uid: u32, to: &str, close_at_once: bool) -> Vec<u8> {
    let script = "import socket,sys\n\
                  to=sys.argv[1]\n\
                  if to.startswith('/'): s=socket.socket(socket.AF_UNIX); a=to\n\
                  else: h,p=to.rsplit(':',1); s=socket.socket(socket.AF_INET); a=(h,int(p))\n\
                  s.settimeout(5)\n\
                  s.connect(a)\n\
                  try:\n s.sendall(sys.stdin.buffer.read())\n s.shutdown(socket.SHUT_WR)\n\
                  except OSError: pass\n\
                  if sys.argv[2]=='1': sys.exit(0)\n\
                  out=b''\n\
                  while True:\n\
                  \x20try: b=s.recv(4096)\n\
                  \x20except ConnectionResetError: break\n\
                  \x20if not b: break\n\
                  \x20out+=b\n\
                  sys.stdout.buffer.write(out)\n";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(to)
        .arg(if close_at_once { "1" } else { "0" })
        .uid(uid)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&request(&forged_count()))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`peer_as`] on the unix socket `path`.
fn unix_peer_as(uid: u32, path: &std::path::Path) -> Vec<u8> {
    peer_as(uid, path.to_str().unwrap(), false)
}

/// [`peer_as`] over TCP to `127.0.0.1:port`.
fn tcp_peer_as(uid: u32, port: u16) -> Vec<u8> {
    peer_as(uid, &format!("127.0.0.1:{port}"), false)
}

/// A temporary directory others may enter, for a socket they may reach.
fn open_setup(config: &str) -> Setup {
    let setup = Setup::new(config);
    std::fs::set_permissions(setup.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    setup
}

const NOBODY: u32 = 65534;
/// A uid with no account: a local user rpol knows nothing of.
const STRANGER: u32 = 64999;

#[test]
#[ignore = "needs root"]
fn unix_peer_of_another_uid_is_refused_and_logged() {
    require_root();
    // Mode 0666: the file system lets anyone connect; rpol must not.
    let rpol = open_setup(SUBMISSION).start();
    assert_eq!(unix_peer_as(STRANGER, &rpol.socket), b"");
    let line = rpol.wait_for_log("uid 64999", 0);
    assert!(line.contains("WARN") && line.contains("refused"), "{line}");
    // Root (this test) is served.
    let mut conn = rpol.connect();
    assert_eq!(ask(&mut conn, &submission("198.51.100.4", true)), DUNNO);
}

#[test]
#[ignore = "needs root"]
fn unix_socket_owner_and_allow_users_are_served() {
    require_root();
    // The socket's owner: nobody, as Postfix's socket is postfix's.
    let setup = open_setup(&format!(
        "[server]\nsocket_owner = \"nobody\"\n{SUBMISSION}"
    ));
    let dir = setup.path("private");
    std::fs::create_dir(&dir).unwrap();
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
    let socket = dir.join("rpol");
    let rpol = setup.start_on(&socket);
    let answer = unix_peer_as(NOBODY, &rpol.socket);
    assert!(answer.starts_with(b"action="), "{answer:?}");
    assert_eq!(unix_peer_as(STRANGER, &rpol.socket), b"");
    rpol.wait_for_log("uid 64999", 0);

    // A root-owned socket, with nobody named in allow_users.
    let rpol = open_setup(&format!(
        "[server]\nallow_users = [\"nobody\"]\n{SUBMISSION}"
    ))
    .start();
    let answer = unix_peer_as(NOBODY, &rpol.socket);
    assert!(answer.starts_with(b"action="), "{answer:?}");
    assert_eq!(unix_peer_as(STRANGER, &rpol.socket), b"");
}

#[test]
fn an_unknown_allow_user_is_a_config_error() {
    let setup = Setup::new(&format!(
        "[server]\nallow_users = [\"no-such-user-here\"]\n{SUBMISSION}"
    ));
    let out = setup.command().arg("--check-config").output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}:2:16: server.allow_users: no user \"no-such-user-here\"\n",
            setup.config.display()
        )
    );
}

/// The audit's attack: a compromised web application (another uid) on the
/// same machine reaches the loopback port the default `allow` admits.
#[test]
#[ignore = "needs root"]
fn loopback_tcp_peer_of_another_uid_is_refused_and_logged() {
    require_root();
    let config = format!("[metrics]\nlisten = \"127.0.0.1:0\"\n{SUBMISSION}");
    let (rpol, port) = tcp_daemon(&config);
    assert_eq!(tcp_peer_as(STRANGER, port), b"");
    let line = rpol.wait_for_log("uid 64999", 0);
    assert!(line.contains("WARN") && line.contains("refused"), "{line}");
    assert_eq!(refusals_counted(&rpol), ["address 0", "user 1"]);
    // Root (this test) is served.
    let mut conn = connect_from("127.0.0.1", port);
    assert_eq!(ask(&mut conn, &submission("198.51.100.4", true)), DUNNO);
}

/// rpol running as nobody shares that account with other daemons: being
/// nobody earns no trust, over TCP or on a unix socket.
#[test]
#[ignore = "needs root"]
fn rpol_running_as_nobody_does_not_trust_nobody() {
    require_root();
    let setup = open_setup(SUBMISSION);
    let socket = setup.path("rpol.sock");
    let mut cmd = std::process::Command::new(rpol::RPOL);
    cmd.arg("--config")
        .arg(&setup.config)
        .args(["--listen", "tcp:127.0.0.1:0", "--listen"])
        .arg(format!("unix:{}", socket.display()))
        .args(["--user", "nobody"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    let (rpol, port) = tcp_port(setup.spawn(cmd));
    rpol.wait_for_log("listening on unix:", 0);
    assert_eq!(tcp_peer_as(NOBODY, port), b"");
    rpol.wait_for_log("uid 65534", 0);
    assert_eq!(unix_peer_as(NOBODY, &socket), b"");
    let mut root = connect_from("127.0.0.1", port);
    assert_eq!(ask(&mut root, &submission("198.51.100.4", true)), DUNNO);
    let warned = rpol.stderr().matches("uid 65534").count();
    assert!(warned >= 1, "{}", rpol.stderr());
}

/// The uid of the `postfix` account, when this machine has one.
fn postfix_uid() -> Option<u32> {
    nix::unistd::User::from_name("postfix")
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// Postfix's smtpd runs as `postfix`: without `allow_users` it is served
/// over loopback TCP; an `allow_users` list replaces that default.
#[test]
#[ignore = "needs root and a postfix account"]
fn postfix_is_served_over_loopback_tcp_unless_allow_users_says_otherwise() {
    require_root();
    let postfix = postfix_uid().expect("a postfix account (apt-get install postfix)");
    let (_rpol, port) = tcp_daemon(SUBMISSION);
    let answer = tcp_peer_as(postfix, port);
    assert!(answer.starts_with(b"action="), "{answer:?}");

    let config = format!("[server]\nallow_users = [\"nobody\"]\n{SUBMISSION}");
    let (rpol, port) = tcp_daemon(&config);
    assert_eq!(tcp_peer_as(postfix, port), b"");
    rpol.wait_for_log(&format!("uid {postfix}"), 0);
    let answer = tcp_peer_as(NOBODY, port);
    assert!(answer.starts_with(b"action="), "{answer:?}");
}

/// A peer that wrote its request and closed its socket before rpol took
/// the connection leaves the kernel a bare TIME-WAIT entry that names uid
/// 0, not the peer's: it must not pass for root.
#[test]
#[ignore = "needs root"]
fn a_peer_gone_before_accept_does_not_pass_for_root() {
    require_root();
    let (rpol, port) = tcp_daemon(SUBMISSION);
    // Stopped, rpol accepts nothing: the kernel completes the handshake,
    // queues the request, and the peer's close runs to its end.
    rpol.signal(libc::SIGSTOP);
    let sent = peer_as(STRANGER, &format!("127.0.0.1:{port}"), true);
    assert_eq!(sent, b"");
    std::thread::sleep(Duration::from_millis(300));
    rpol.signal(libc::SIGCONT);
    rpol.wait_for_log("refused", 0);
    // Root's request is logged after the forged one would have been.
    let mut root = connect_from("127.0.0.1", port);
    assert_eq!(ask(&mut root, &submission("198.51.100.4", true)), DUNNO);
    rpol.wait_for_log("198.51.100.4", 0);
    let log = rpol.stderr();
    assert!(
        !log.contains("198.51.100.66"),
        "the forged request was served:\n{log}"
    );
}

/// Each accepted loopback connection costs one exact kernel lookup of its
/// peer's socket, whatever the number of sockets: a storm of 1,000 held
/// connections is served in about the time of 1,000 requests, the last
/// ones as fast as the first.
#[test]
fn a_storm_of_loopback_connections_costs_one_lookup_each() {
    const STORM: usize = 1_000;
    const BATCH: usize = 100;
    let config = format!("[server]\nmax_connections = 2000\n{SUBMISSION}");
    let (_rpol, port) = tcp_daemon(&config);
    let started = Instant::now();
    let mut held = Vec::with_capacity(STORM);
    let mut batches = Vec::new();
    let mut batch = Instant::now();
    for i in 0..STORM {
        let mut conn = connect_from("127.0.0.1", port);
        assert_eq!(ask(&mut conn, &submission("198.51.100.4", true)), DUNNO);
        held.push(conn);
        if (i + 1) % BATCH == 0 {
            batches.push(batch.elapsed());
            batch = Instant::now();
        }
    }
    let total = started.elapsed();
    eprintln!("{STORM} connections: {total:?}, per {BATCH}: {batches:?}");
    assert!(total < Duration::from_secs(20), "{total:?}");
    let (first, last) = (batches[0], batches[batches.len() - 1]);
    assert!(
        last < first * 5 + Duration::from_millis(500),
        "the last connections cost more: {batches:?}"
    );
}

/// The store section of a check_greylist policy that never looks up DNS.
fn greylist_config(store: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [store]\n{store}\n\
         [greylist]\ndelay = \"2s\"\nskip_spf_pass = false\nskip_fcrdns_match = false\n\
         [profile.mx]\nrecipient = [\"check_greylist\"]\n"
    )
}

const SECRET: &str = "s3cr3t-Pa55";
const REDIS_USER: &str = "rpol-login";

#[test]
#[ignore = "needs redis-server"]
fn the_redis_password_and_user_never_reach_the_log() {
    let redis = redis_server::start();
    // Redis wants another password: every store call fails and is logged.
    let url = format!("redis://{REDIS_USER}:{SECRET}@127.0.0.1:{}/", redis.port);
    let rpol = Setup::new(&greylist_config(&format!(
        "backend = \"redis\"\nurl = \"{url}\"\ntimeout = \"500ms\"\n"
    )))
    .start();
    let mut conn = rpol.connect();
    let rcpt = [
        ("protocol_state", "RCPT"),
        ("client_address", "198.51.100.9"),
        ("client_name", "unknown"),
        ("helo_name", "mail.sender.example"),
        ("sender", "someone@sender.example"),
        ("recipient", "alice@example.com"),
    ];
    assert_eq!(ask(&mut conn, &rcpt), "action=DUNNO\n\n");
    rpol.wait_for_log("store (redis): greylist failed", 0);
    let line = rpol.wait_for_log("store: redis", 0);
    assert!(
        line.ends_with(&format!("store: redis://***@127.0.0.1:{}/", redis.port)),
        "{line}"
    );
    let log = rpol.stderr();
    assert!(
        !log.contains(SECRET) && !log.contains(REDIS_USER),
        "the log shows the Redis login:\n{log}"
    );

    // --check-config and a failed start show it neither.
    for bad in [
        format!("url = \"{url}\"\nprefix = \"a b\"\n"),
        format!("backend = \"redis\"\nurl = \"{url}\"\nprefix = \"a b\"\n"),
        format!("backend = \"redis\"\nurl = \"{url}\" \"{url}\"\n"),
    ] {
        let setup = Setup::new(&greylist_config(&bad));
        let out = setup.command().arg("--check-config").output().unwrap();
        assert!(!out.status.success(), "{bad}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !text.contains(SECRET) && !text.contains(REDIS_USER),
            "{bad}: {text}"
        );
    }
}

#[test]
fn redis_unix_urls_lose_their_credentials_too() {
    let setup = Setup::new(&greylist_config(&format!(
        "backend = \"redis\"\nurl = \"redis+unix:///run/redis.sock?db=2&user={REDIS_USER}&pass={SECRET}\"\n"
    )));
    let rpol = setup.start();
    let line = rpol.wait_for_log("store: redis", 0);
    assert!(
        line.ends_with("store: redis+unix:///run/redis.sock?db=2&user=***&pass=***"),
        "{line}"
    );
}

/// Decision lines on stderr (one per request unless summarised).
fn decision_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("rpol::decision"))
        .collect()
}

/// How many requests the decision lines of `log` account for: one per
/// line, plus the repeats each summary names.
fn requests_logged(log: &str) -> u64 {
    decision_lines(log)
        .iter()
        .map(|l| match l.split_once("repeated ") {
            Some((_, rest)) => rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count in {l:?}")),
            None => 1,
        })
        .sum()
}

/// Sends `requests` pipelined on one connection, reads their DUNNO
/// answers, waits until the log accounts for each; returns the log.
fn pipelined(requests: &[Vec<u8>]) -> String {
    let rpol = Setup::new(SUBMISSION).start();
    let mut conn = rpol.connect();
    let wire: Vec<u8> = requests.concat();
    let mut writer = conn.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&wire).unwrap());
    let mut answers = vec![0u8; DUNNO.len() * requests.len()];
    conn.read_exact(&mut answers).unwrap();
    sending.join().unwrap();
    assert!(answers == DUNNO.repeat(requests.len()).as_bytes());

    let deadline = Instant::now() + WAIT_TIMEOUT;
    while requests_logged(&rpol.stderr()) < requests.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {} requests logged:\n{}",
            requests_logged(&rpol.stderr()),
            requests.len(),
            rpol.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = rpol.stderr();
    assert_eq!(requests_logged(&log), requests.len() as u64, "{log}");
    log
}

#[test]
fn a_pipelined_flood_of_identical_requests_is_summarised() {
    const FLOOD: usize = 20_000;
    let one = request(&submission("198.51.100.4", true));
    let log = pipelined(&vec![one; FLOOD]);
    // Every request is accounted for, in a handful of lines.
    let lines = decision_lines(&log);
    assert!(lines.len() <= 40, "{} lines:\n{log}", lines.len());
    assert!(log.len() < 20_000, "{} bytes of log", log.len());
}

/// More distinct lines than a window keeps do not open it to a flood:
/// the line seen least lately makes room.
#[test]
fn a_flood_after_many_distinct_requests_is_summarised_too() {
    const DISTINCT: usize = 100;
    const FLOOD: usize = 5_000;
    let mut requests: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|i| request(&submission(&format!("198.51.100.{}", i + 1), true)))
        .collect();
    requests.extend(vec![request(&submission("203.0.113.4", true)); FLOOD]);
    let log = pipelined(&requests);
    let lines = decision_lines(&log);
    assert!(
        lines.len() <= DISTINCT + 40,
        "{} lines:\n{log}",
        lines.len()
    );
}

#[test]
fn decisions_all_refusals_or_none() {
    let ask_three = |rpol: &Rpol| {
        let mut conn = rpol.connect();
        assert_eq!(ask(&mut conn, &submission("198.51.100.1", true)), DUNNO);
        assert_eq!(
            ask(&mut conn, &submission("198.51.100.2", false)),
            rejected("198.51.100.2")
        );
        // A third request: once it is logged (or not) the others were.
        assert_eq!(
            ask(&mut conn, &submission("198.51.100.3", false)),
            rejected("198.51.100.3")
        );
    };
    for (setting, logged) in [
        ("", vec!["198.51.100.1", "198.51.100.2", "198.51.100.3"]),
        (
            "decisions = \"all\"\n",
            vec!["198.51.100.1", "198.51.100.2", "198.51.100.3"],
        ),
        (
            "decisions = \"refusals\"\n",
            vec!["198.51.100.2", "198.51.100.3"],
        ),
        ("decisions = \"none\"\n", vec![]),
    ] {
        let rpol = Setup::new(&format!("[log]\n{setting}{SUBMISSION}")).start();
        ask_three(&rpol);
        // The reload's line comes after every decision line on the pipe.
        rpol.signal(libc::SIGHUP);
        rpol.wait_for_log("SIGHUP: reloaded", 0);
        let log = rpol.stderr();
        let clients: Vec<&str> = decision_lines(&log)
            .iter()
            .map(|l| {
                l.split_once("client=mail.example.com[")
                    .and_then(|(_, r)| r.split_once(']'))
                    .map_or("?", |(c, _)| c)
            })
            .collect();
        assert_eq!(clients, logged, "{setting:?}:\n{log}");
    }
}

#[test]
fn a_bad_decisions_value_is_a_config_error() {
    let setup = Setup::new(&format!("[log]\ndecisions = \"some\"\n{SUBMISSION}"));
    let out = setup.command().arg("--check-config").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}:2:13: log.decisions: expected \"all\", \"refusals\" or \"none\"\n",
            setup.config.display()
        )
    );
}

/// Sockets from systemd get the checks of their address family: a TCP
/// socket its `allow`, a unix socket its file's owner.
#[test]
#[ignore = "needs root"]
fn systemd_sockets_are_checked_by_their_family() {
    require_root();
    let setup = open_setup(&format!(
        "[server]\nallow = [\"127.0.0.1/32\"]\n{SUBMISSION}"
    ));
    let unix_path = setup.path("activated.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    std::fs::set_permissions(&unix_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let cmd = setup.systemd_command(&[
        std::os::fd::AsRawFd::as_raw_fd(&unix),
        std::os::fd::AsRawFd::as_raw_fd(&tcp),
    ]);
    let rpol = setup.spawn(cmd);
    drop((unix, tcp));
    rpol.wait_for_log("listening on systemd:fd4", 0);

    assert_eq!(unix_peer_as(STRANGER, &unix_path), b"");
    rpol.wait_for_log("uid 64999", 0);
    let mut root = rpol::connect(&unix_path);
    assert_eq!(ask(&mut root, &submission("198.51.100.4", true)), DUNNO);

    let mut stranger = connect_from("127.0.0.2", port);
    assert_eq!(forged(&mut stranger, &forged_count()), b"");
    rpol.wait_for_log("127.0.0.2 is not in [server] allow", 0);
    let mut postfix = connect_from("127.0.0.1", port);
    assert_eq!(ask(&mut postfix, &submission("198.51.100.4", true)), DUNNO);
}
