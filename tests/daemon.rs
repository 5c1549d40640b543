//! The daemon over real sockets: framing, pipelining, concurrency, protocol
//! limits, timeouts, signals and reload, the connection limit, every
//! listener kind (unix, tcp, systemd socket activation) and `--stdio`.
//! Requests and responses are raw bytes, compared whole. The command-line
//! modes that answer and exit are in tests/cli.rs; the connection handler
//! alone, in-process (exact read sizes, timeouts on the paused clock), in
//! tests/connection.rs.

use crate::support::port587;
use crate::support::rpol;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use port587::{DUNNO, ERROR_RESPONSE, SUBMISSION, exchanges, rejected, submission};
use rpol::{
    Setup, WAIT_TIMEOUT, ask, connect, raw_request, read_response, read_to_close, request,
    response, silent_for,
};

#[test]
fn many_requests_on_one_connection() {
    let rpol = Setup::new(SUBMISSION).start();
    let mut conn = rpol.connect();
    for i in 0..200 {
        let addr = format!("198.51.100.{}", i % 250);
        let authenticated = i % 2 == 0;
        let expected = if authenticated {
            DUNNO.to_string()
        } else {
            rejected(&addr)
        };
        assert_eq!(
            ask(&mut conn, &submission(&addr, authenticated)),
            expected,
            "request {i}"
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let rpol = Setup::new(SUBMISSION).start();
    let mut conn = rpol.connect();
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..8 {
        let addr = format!("198.51.100.{i}");
        let authenticated = i % 3 == 0;
        bytes.extend_from_slice(&request(&submission(&addr, authenticated)));
        expected.push(if authenticated {
            DUNNO.to_string()
        } else {
            rejected(&addr)
        });
    }
    conn.write_all(&bytes).unwrap();
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&read_response(&mut conn), want, "response {i}");
    }
    // Nothing more follows, and the connection is still usable.
    assert!(silent_for(&mut conn, Duration::from_millis(200)));
    assert_eq!(ask(&mut conn, &submission("198.51.100.1", true)), DUNNO);
}

#[test]
fn concurrent_connections_are_all_answered() {
    concurrent_connections_answered(SUBMISSION);
}

/// Several connection threads (`[server] threads`): every connection is
/// answered, on whichever thread took it, and a stop still waits for them.
#[test]
fn concurrent_connections_on_four_threads_are_all_answered() {
    concurrent_connections_answered(&format!("[server]\nthreads = 4\n{SUBMISSION}"));
}

fn concurrent_connections_answered(config: &str) {
    let rpol = Setup::new(config).start();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let mut conn = rpol.connect();
            thread::spawn(move || {
                for i in 0..50 {
                    // Each thread's rejects name its own client, so a
                    // response sent to the wrong connection shows.
                    let addr = format!("10.{t}.{i}.1");
                    let authenticated = (t + i) % 2 == 0;
                    let expected = if authenticated {
                        DUNNO.to_string()
                    } else {
                        rejected(&addr)
                    };
                    assert_eq!(
                        ask(&mut conn, &submission(&addr, authenticated)),
                        expected,
                        "thread {t} request {i}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

/// Writes `bytes`, expects exactly `expected` then the server closing the
/// connection, and checks that a new connection is served normally.
fn refused(rpol: &rpol::Rpol, bytes: &[u8], expected: &str) {
    let mut conn = rpol.connect();
    // The server may close before reading everything: a failed write is
    // fine, the answer is what counts.
    let _ = conn.write_all(bytes);
    let got = read_to_close(&mut conn);
    assert_eq!(String::from_utf8_lossy(&got), expected);
    let mut next = rpol.connect();
    assert_eq!(
        ask(&mut next, &submission("198.51.100.7", false)),
        rejected("198.51.100.7")
    );
}

#[test]
fn line_over_8_kib_is_refused() {
    let rpol = Setup::new(SUBMISSION).start();
    let mut bytes = b"request=smtpd_access_policy\nsender=".to_vec();
    bytes.extend(std::iter::repeat_n(b'a', 9 * 1024));
    bytes.extend_from_slice(b"\n\n");
    refused(&rpol, &bytes, ERROR_RESPONSE);
}

#[test]
fn line_of_8_kib_is_accepted() {
    // The limit counts the newline: a line of exactly 8192 bytes passes.
    let rpol = Setup::new(SUBMISSION).start();
    let mut conn = rpol.connect();
    let value = "a".repeat(8 * 1024 - "x_long=".len() - 1);
    let mut attrs = submission("198.51.100.8", false);
    attrs.push(("x_long", &value));
    assert_eq!(ask(&mut conn, &attrs), rejected("198.51.100.8"));
}

#[test]
fn request_over_64_kib_is_refused() {
    let rpol = Setup::new(SUBMISSION).start();
    let value = "v".repeat(7000);
    let mut bytes = b"request=smtpd_access_policy\n".to_vec();
    for i in 0..10 {
        bytes.extend_from_slice(format!("x_{i}={value}\n").as_bytes());
    }
    bytes.push(b'\n');
    assert!(bytes.len() > 64 * 1024);
    refused(&rpol, &bytes, ERROR_RESPONSE);
}

#[test]
fn more_than_256_attributes_are_refused() {
    let rpol = Setup::new(SUBMISSION).start();
    let mut bytes = b"request=smtpd_access_policy\n".to_vec();
    for i in 0..300 {
        bytes.extend_from_slice(format!("x_{i}=1\n").as_bytes());
    }
    bytes.push(b'\n');
    refused(&rpol, &bytes, ERROR_RESPONSE);
}

#[test]
fn line_without_equals_is_refused() {
    let rpol = Setup::new(SUBMISSION).start();
    refused(
        &rpol,
        b"request=smtpd_access_policy\nclient_address=198.51.100.1\ngarbage\n\n",
        ERROR_RESPONSE,
    );
}

#[test]
fn invalid_utf8_is_refused() {
    let rpol = Setup::new(SUBMISSION).start();
    refused(
        &rpol,
        b"request=smtpd_access_policy\nsender=caf\xe9@example.com\n\n",
        ERROR_RESPONSE,
    );
}

#[test]
fn other_request_type_is_refused() {
    let rpol = Setup::new(SUBMISSION).start();
    refused(
        &rpol,
        &raw_request(&[("request", "other"), ("client_address", "198.51.100.1")]),
        ERROR_RESPONSE,
    );
}

#[test]
fn missing_request_attribute_is_refused() {
    let rpol = Setup::new(SUBMISSION).start();
    refused(
        &rpol,
        &raw_request(&submission("198.51.100.1", false)),
        ERROR_RESPONSE,
    );
}

#[test]
fn malformed_request_after_good_ones_is_refused() {
    // The good requests are answered first; the connection ends at the bad one.
    let rpol = Setup::new(SUBMISSION).start();
    let mut bytes = request(&submission("198.51.100.9", true));
    bytes.extend_from_slice(&request(&submission("198.51.100.9", false)));
    bytes.extend_from_slice(b"request=smtpd_access_policy\nnonsense\n\n");
    let expected = format!("{DUNNO}{}{ERROR_RESPONSE}", rejected("198.51.100.9"));
    refused(&rpol, &bytes, &expected);
}

#[test]
fn configured_error_action_is_sent() {
    let config = format!(
        "[server]\nerror_action = \"451 4.3.5 Server configuration problem\"\n{SUBMISSION}"
    );
    let rpol = Setup::new(&config).start();
    refused(
        &rpol,
        b"request=smtpd_access_policy\nno equals sign here\n\n",
        "action=451 4.3.5 Server configuration problem\n\n",
    );
}

#[test]
fn client_closing_mid_request_disturbs_no_one() {
    let rpol = Setup::new(SUBMISSION).start();
    let mut steady = rpol.connect();
    assert_eq!(ask(&mut steady, &submission("198.51.100.1", true)), DUNNO);
    for _ in 0..5 {
        let mut quitter = rpol.connect();
        quitter
            .write_all(b"request=smtpd_access_policy\nclient_address=198.51.100.66\nsend")
            .unwrap();
        drop(quitter);
    }
    assert_eq!(
        ask(&mut steady, &submission("198.51.100.2", false)),
        rejected("198.51.100.2")
    );
    let mut fresh = rpol.connect();
    assert_eq!(
        ask(&mut fresh, &submission("198.51.100.3", false)),
        rejected("198.51.100.3")
    );
}

#[test]
fn half_closed_client_still_gets_its_answer() {
    // `nc -N` style: the request, then end of input at once.
    let rpol = Setup::new(SUBMISSION).start();
    let mut conn = rpol.connect();
    conn.write_all(&request(&submission("198.51.100.11", false)))
        .unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut conn)),
        rejected("198.51.100.11")
    );
}

#[test]
fn crlf_line_ends_are_understood() {
    // Postfix sends bare LF; a person typing into a terminal may not.
    let rpol = Setup::new(SUBMISSION).start();
    let mut conn = rpol.connect();
    let lf = request(&submission("198.51.100.12", false));
    let crlf = String::from_utf8(lf).unwrap().replace('\n', "\r\n");
    conn.write_all(crlf.as_bytes()).unwrap();
    assert_eq!(read_response(&mut conn), rejected("198.51.100.12"));
    assert_eq!(ask(&mut conn, &submission("198.51.100.12", true)), DUNNO);
}

/// The framing table of support/port587.rs through the real listener:
/// each exchange on its own connection, in writes of 1, 2, 3, ... bytes up
/// to the whole, then end of input. The kernel may merge writes, so the
/// read sizes the daemon sees are not controlled here; tests/connection.rs
/// replays the same table in-process in reads of exactly each size.
#[test]
fn table_in_writes_of_every_size() {
    let rpol = Setup::new(SUBMISSION).start();
    for exchange in exchanges() {
        for size in 1..=exchange.wire.len() {
            let mut conn = rpol.connect();
            for chunk in exchange.wire.chunks(size) {
                // After a malformed request the server may close first.
                if conn.write_all(chunk).is_err() {
                    break;
                }
            }
            let _ = conn.shutdown(std::net::Shutdown::Write);
            assert_eq!(
                String::from_utf8_lossy(&read_to_close(&mut conn)),
                exchange.answer,
                "{} in writes of {size}",
                exchange.name
            );
        }
    }
}

#[test]
fn idle_connection_is_closed() {
    let config = format!("[server]\nidle_timeout = \"1s\"\n{SUBMISSION}");
    let rpol = Setup::new(&config).start();
    let mut conn = rpol.connect();
    assert_eq!(ask(&mut conn, &submission("198.51.100.1", true)), DUNNO);
    let start = Instant::now();
    // Closed without a word (Postfix retries on a fresh connection).
    assert_eq!(read_to_close(&mut conn), b"");
    // Not before the idle time; read_to_close bounds it from above.
    assert!(start.elapsed() >= Duration::from_millis(500));
}

#[test]
fn unfinished_request_is_closed() {
    let config =
        format!("[server]\nidle_timeout = \"60s\"\nrequest_timeout = \"1s\"\n{SUBMISSION}");
    let rpol = Setup::new(&config).start();
    let mut conn = rpol.connect();
    assert_eq!(ask(&mut conn, &submission("198.51.100.1", true)), DUNNO);
    conn.write_all(b"request=smtpd_access_policy\nclient_addr")
        .unwrap();
    let start = Instant::now();
    assert_eq!(read_to_close(&mut conn), b"");
    assert!(start.elapsed() >= Duration::from_millis(500));
}

#[test]
fn sighup_reloads_and_keeps_old_config_on_error() {
    let setup = Setup::new(SUBMISSION);
    let config = setup.config.clone();
    let rpol = setup.start();
    let mut conn = rpol.connect();
    let unauth = submission("198.51.100.1", false);
    assert_eq!(ask(&mut conn, &unauth), rejected("198.51.100.1"));

    // A broken config is refused and the old one stays.
    std::fs::write(&config, "[profile.submission\nclient = [").unwrap();
    let mark = rpol.stderr().len();
    rpol.signal(libc::SIGHUP);
    rpol.wait_for_log("reload failed: keeping the previous configuration", mark);
    assert_eq!(ask(&mut conn, &unauth), rejected("198.51.100.1"));
    let mut fresh = rpol.connect();
    assert_eq!(ask(&mut fresh, &unauth), rejected("198.51.100.1"));

    // A valid one is taken, by open connections too.
    std::fs::write(
        &config,
        "[profile.submission]\nmatch = { server_port = 587 }\nclient = [\"defer\"]\n",
    )
    .unwrap();
    rpol.signal(libc::SIGHUP);
    let deferred = response(
        "450 4.3.2 <mail.example.com[198.51.100.1]>: Client host rejected: Try again later",
    );
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let got = ask(&mut conn, &unauth);
        if got == deferred {
            break;
        }
        assert_eq!(
            got,
            rejected("198.51.100.1"),
            "neither the old nor the new answer"
        );
        assert!(
            Instant::now() < deadline,
            "reload not seen; stderr:\n{}",
            rpol.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ask(&mut fresh, &unauth), deferred);
}

/// Writes a whole request and the start of another in one write, and reads
/// the first answer: the server read both together, so from then on it is
/// surely in the middle of the second request (no race with a signal).
fn start_second_request(conn: &mut UnixStream, second_start: &[u8]) {
    let mut bytes = request(&submission("198.51.100.1", true));
    bytes.extend_from_slice(second_start);
    conn.write_all(&bytes).unwrap();
    assert_eq!(read_response(conn), DUNNO);
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits() {
    let mut rpol = Setup::new(SUBMISSION).start();
    let socket = rpol.socket.clone();
    let mut idle = rpol.connect();
    assert_eq!(ask(&mut idle, &submission("198.51.100.2", true)), DUNNO);
    let mut busy = rpol.connect();
    let whole = request(&submission("198.51.100.3", false));
    let (first, rest) = whole.split_at(40);
    start_second_request(&mut busy, first);

    let mark = rpol.stderr().len();
    rpol.signal(libc::SIGTERM);
    rpol.wait_for_log("stopping", mark);
    // The idle connection is closed at once, without a word.
    assert_eq!(read_to_close(&mut idle), b"");
    // The started request is finished and answered, then the connection ends.
    busy.write_all(rest).unwrap();
    assert_eq!(read_response(&mut busy), rejected("198.51.100.3"));
    assert_eq!(read_to_close(&mut busy), b"");

    let status = rpol.wait_exit();
    assert!(status.success(), "{status}; stderr:\n{}", rpol.stderr());
    assert!(!socket.exists(), "socket file left behind");
}

#[test]
fn sigterm_gives_up_on_a_stalled_request_after_shutdown_timeout() {
    let config = format!("[server]\nshutdown_timeout = \"1s\"\n{SUBMISSION}");
    let mut rpol = Setup::new(&config).start();
    let mut stalled = rpol.connect();
    start_second_request(
        &mut stalled,
        b"request=smtpd_access_policy\nclient_address=198.51.100.1\n",
    );
    let mark = rpol.stderr().len();
    rpol.signal(libc::SIGTERM);
    let status = rpol.wait_exit();
    assert!(status.success(), "{status}; stderr:\n{}", rpol.stderr());
    let warning = rpol.wait_for_log("still busy", mark);
    assert!(
        warning.ends_with("1 connection(s) still busy after 1s; exiting"),
        "{warning}"
    );
    assert_eq!(read_to_close(&mut stalled), b"");
}

#[test]
fn signals_right_after_start_are_handled() {
    // SIGHUP's default action kills the process: the handler must be in
    // place before the socket accepts. The race is narrow, so a few starts,
    // each signalled the moment a connect succeeds.
    for _ in 0..10 {
        let setup = Setup::new(SUBMISSION);
        let socket = setup.path("rpol.sock");
        let mut cmd = setup.command();
        cmd.arg("--listen")
            .arg(format!("unix:{}", socket.display()));
        let mut rpol = setup.spawn(cmd);
        let deadline = Instant::now() + rpol::START_TIMEOUT;
        let mut conn = loop {
            if let Ok(conn) = UnixStream::connect(&socket) {
                break conn;
            }
            assert!(rpol.try_status().is_none(), "{}", rpol.stderr());
            assert!(Instant::now() < deadline, "{}", rpol.stderr());
            thread::yield_now();
        };
        rpol.signal(libc::SIGHUP);
        conn.set_read_timeout(Some(rpol::READ_TIMEOUT)).unwrap();
        assert_eq!(
            ask(&mut conn, &submission("198.51.100.1", false)),
            rejected("198.51.100.1")
        );
        rpol.signal(libc::SIGTERM);
        let status = rpol.wait_exit();
        assert!(status.success(), "{status}; stderr:\n{}", rpol.stderr());
    }
}

#[test]
fn max_connections_closes_the_longest_idle_to_admit_a_new_client() {
    let config = format!("[server]\nmax_connections = 1\n{SUBMISSION}");
    let rpol = Setup::new(&config).start();
    let mut a = rpol.connect();
    assert_eq!(ask(&mut a, &submission("198.51.100.1", true)), DUNNO);

    // B finds the only slot taken by A, idle between requests: A is closed
    // (Postfix reconnects by itself) and B is served at once.
    let mut b = rpol.connect();
    assert_eq!(
        ask(&mut b, &submission("198.51.100.2", false)),
        rejected("198.51.100.2")
    );
    assert_eq!(read_to_close(&mut a), b"");
    assert_eq!(ask(&mut b, &submission("198.51.100.2", true)), DUNNO);
}

#[test]
fn tcp_listener() {
    let setup = Setup::new(SUBMISSION);
    let mut cmd = setup.command();
    cmd.args(["--listen", "tcp:127.0.0.1:0"]);
    let rpol = setup.spawn(cmd);
    let line = rpol.wait_for_log("listening on tcp:127.0.0.1:", 0);
    let port: u16 = line
        .rsplit_once("listening on tcp:127.0.0.1:")
        .map(|(_, p)| p.trim())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert_ne!(port, 0);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(rpol::READ_TIMEOUT)).unwrap();
    assert_eq!(
        ask(&mut conn, &submission("198.51.100.4", false)),
        rejected("198.51.100.4")
    );
    assert_eq!(ask(&mut conn, &submission("198.51.100.4", true)), DUNNO);
}

#[test]
fn systemd_socket_activation() {
    let config = format!("[server]\nlisten = [\"unix:configured.sock\"]\n{SUBMISSION}");
    let setup = Setup::new(&config);
    let activated = setup.path("activated.sock");
    let configured = setup.path("configured.sock");
    let listener = UnixListener::bind(&activated).unwrap();
    let cmd = setup.systemd_command(&[listener.as_raw_fd()]);
    let rpol = setup.spawn(cmd);
    drop(listener);
    rpol.wait_for_log("listening on systemd:", 0);

    let mut conn = connect(&activated);
    assert_eq!(
        ask(&mut conn, &submission("198.51.100.5", false)),
        rejected("198.51.100.5")
    );
    assert!(
        !configured.exists(),
        "configured listen address created despite socket activation"
    );
}

#[test]
fn stale_socket_is_replaced() {
    let setup = Setup::new(SUBMISSION);
    let socket = setup.path("rpol.sock");
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let rpol = setup.start_on(&socket);
    let mut conn = rpol.connect();
    assert_eq!(
        ask(&mut conn, &submission("198.51.100.6", false)),
        rejected("198.51.100.6")
    );
}

#[test]
fn live_socket_is_not_taken_over() {
    let first = Setup::new(SUBMISSION).start();
    let second = Setup::new(SUBMISSION);
    let out = second
        .command()
        .arg("--listen")
        .arg(format!("unix:{}", first.socket.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "rpol: {} is in use by a running server\n",
            first.socket.display()
        )
    );
    let mut conn = first.connect();
    assert_eq!(
        ask(&mut conn, &submission("198.51.100.7", false)),
        rejected("198.51.100.7")
    );
}

#[test]
fn non_socket_file_is_not_replaced() {
    let setup = Setup::new(SUBMISSION);
    let path = setup.path("rpol.sock");
    std::fs::write(&path, "precious\n").unwrap();
    let out = setup
        .command()
        .arg("--listen")
        .arg(format!("unix:{}", path.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("rpol: {} exists and is not a socket\n", path.display())
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious\n");
}

#[test]
fn socket_mode_is_applied() {
    let config = format!("[server]\nsocket_mode = \"0600\"\n{SUBMISSION}");
    let rpol = Setup::new(&config).start();
    let mode = std::fs::metadata(&rpol.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
}

#[test]
fn default_socket_mode_is_0666() {
    let rpol = Setup::new(SUBMISSION).start();
    let mode = std::fs::metadata(&rpol.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o666);
}

#[test]
fn stdio_mode() {
    let setup = Setup::new(SUBMISSION);
    let mut child = setup
        .command()
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let errors = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });

    let mut both = request(&submission("198.51.100.8", false));
    both.extend_from_slice(&request(&submission("198.51.100.8", true)));
    stdin.write_all(&both).unwrap();
    stdin.flush().unwrap();
    let expected = format!("{}{DUNNO}", rejected("198.51.100.8"));
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(e) => panic!("{e}: only {:?}", String::from_utf8_lossy(&got)),
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), expected);

    drop(stdin);
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("--stdio did not exit at end of input");
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // Nothing more on stdout, and nothing at all on stderr (it is the
    // client's socket under spawn(8)).
    assert!(matches!(
        rx.recv_timeout(WAIT_TIMEOUT),
        Err(mpsc::RecvTimeoutError::Disconnected)
    ));
    assert_eq!(String::from_utf8_lossy(&errors.join().unwrap()), "");
}
