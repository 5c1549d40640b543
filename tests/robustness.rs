//! Hostile clients and bad days (issue "Hostile clients, faults and
//! privileges"): what a client sends cannot forge log lines, a request no
//! profile serves is not answered in silence, and --check-config says when
//! requests would go unchecked. Everything over the daemon's real socket.

use crate::support::dns;
use crate::support::rpol;

use rpol::{Setup, ask, response};

const CONFIG: &str = r#"[dns]
nameservers = ["127.0.0.1:9"]

[site]
domains = ["example.com"]

[profile.mx]
match = { server_port = 25 }
recipient = ["reject"]

[profile.submission]
match = { policy_context = "submission" }
recipient = ["permit"]
"#;

fn rcpt<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut attrs = vec![
        ("protocol_state", "RCPT"),
        ("client_address", "203.0.113.9"),
        ("client_name", "unknown"),
        ("sender", "a@example.org"),
        ("recipient", "b@example.com"),
        ("server_port", "25"),
    ];
    for &(k, v) in extra {
        attrs.retain(|(name, _)| *name != k);
        attrs.push((k, v));
    }
    attrs
}

/// The decision lines the daemon logged so far.
fn decision_lines(rpol: &rpol::Rpol) -> Vec<String> {
    rpol.stderr()
        .lines()
        .filter(|l| l.contains("action="))
        .map(str::to_string)
        .collect()
}

#[test]
fn client_text_cannot_forge_log_lines() {
    let rpol = Setup::new(CONFIG).start();
    // CR (a value cannot hold LF: it ends the attribute), VT, ESC, NEL,
    // U+2028 and U+2029, and a backslash, in values the decision line
    // repeats.
    let helo = "mx.example\rNOQUEUE: action=OK forged\u{b}\u{1b}[31m\u{85}\u{2028}\u{2029}\\r";
    let sender = "x\u{202e}gpj.exe@example.org";
    let reply = ask(
        &mut rpol.connect(),
        &rcpt(&[("helo_name", helo), ("sender", sender)]),
    );
    assert_eq!(reply, response("554 5.7.1 Access denied"));
    let from = rpol.stderr().len();
    rpol.wait_for_log("profile=mx", 0);
    let lines = decision_lines(&rpol);
    assert_eq!(lines.len(), 1, "one request, one decision line: {lines:#?}");
    let line = &lines[0];
    assert!(
        line.ends_with(
            "helo=<mx.example\\rNOQUEUE: action=OK forged\\x0b\\x1b[31m\\x85\\u{2028}\\u{2029}\\\\r> \
             sasl_username=<> protocol_state=RCPT instance= profile=mx rule=\"recipient: reject\""
        ),
        "{line}"
    );
    assert!(
        line.contains("from=<x\\u{202e}gpj.exe@example.org>"),
        "{line}"
    );
    let all = rpol.stderr();
    for bad in [
        '\r', '\u{b}', '\u{1b}', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}',
    ] {
        assert!(!all.contains(bad), "{bad:?} reached the log:\n{all}");
    }
    // stderr is a pipe here: no colour codes (journald would store them).
    assert!(!all[..from].contains('\u{1b}'));
}

#[test]
fn a_request_no_profile_serves_is_logged_once_per_port_and_context() {
    let rpol = Setup::new(CONFIG).start();
    let port465 = rcpt(&[("server_port", "465")]);
    for _ in 0..3 {
        assert_eq!(ask(&mut rpol.connect(), &port465), response("DUNNO"));
    }
    let line = rpol.wait_for_log("matches no profile", 0);
    assert!(
        line.contains(
            "a request with server_port=\"465\" policy_context=\"\" matches no profile and is answered \
             DUNNO unchecked; profiles: mx (server_port=25), submission (policy_context=submission)"
        ),
        "{line}"
    );
    // Another port is another warning; the same one is not repeated.
    assert_eq!(
        ask(&mut rpol.connect(), &rcpt(&[("server_port", "2525")])),
        response("DUNNO")
    );
    rpol.wait_for_log("server_port=\"2525\"", 0);
    let warnings = rpol.stderr().matches("matches no profile").count();
    assert_eq!(warnings, 2, "{}", rpol.stderr());
    // A client inventing ports cannot make the warnings endless.
    let mut conn = rpol.connect();
    for port in 3000..3100 {
        let port = port.to_string();
        assert_eq!(
            ask(&mut conn, &rcpt(&[("server_port", &port)])),
            response("DUNNO")
        );
    }
    let warnings = rpol.stderr().matches("matches no profile").count();
    assert!(warnings <= 32, "{warnings} warnings");
}

#[test]
fn check_config_warns_when_requests_would_go_unchecked() {
    let check = |config: &str| {
        let setup = Setup::new(config);
        let out = setup.command().arg("--check-config").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let path = setup.config.display().to_string();
        String::from_utf8_lossy(&out.stderr).replace(&path, "policy.toml")
    };
    assert_eq!(
        check(CONFIG),
        "policy.toml: warning: no default profile (one without match): a request that matches none of \
         mx (server_port=25), submission (policy_context=submission) is answered DUNNO unchecked\n"
    );
    assert_eq!(
        check(&format!("{CONFIG}\n[profile.other]\nclient = []\n")),
        "policy.toml: warning: the default profile other has no rules: requests that match no other \
         profile are answered DUNNO unchecked (write client = [\"dunno\"] if that is meant)\n"
    );
    assert_eq!(
        check(&format!(
            "{CONFIG}\n[profile.other]\nclient = [\"dunno\"]\n"
        )),
        ""
    );
}

/// Raises this process's open-file limit to its hard limit (a crowd of
/// clients needs more descriptors than some defaults allow).
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

#[test]
fn a_crowd_of_idle_connections_cannot_lock_postfix_out() {
    let _alone = crate::one_at_a_time();
    const CROWD: usize = 2_000;
    assert!(
        raise_fd_limit() > CROWD as u64 + 100,
        "too few file descriptors"
    );
    let config = format!("[server]\nmax_connections = 100\n{CONFIG}");
    let rpol = Setup::new(&config).start();
    // Postfix's connection: answered, then idle like the crowd.
    let mut postfix = rpol.connect();
    assert_eq!(
        ask(&mut postfix, &rcpt(&[])),
        response("554 5.7.1 Access denied")
    );
    // 2,000 local clients connect and say nothing.
    let crowd: Vec<_> = (0..CROWD).map(|_| rpol.connect()).collect();
    // A new client (Postfix reconnecting) is answered within a second.
    let start = std::time::Instant::now();
    let mut fresh = rpol.connect();
    assert_eq!(
        ask(&mut fresh, &rcpt(&[])),
        response("554 5.7.1 Access denied")
    );
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    // The old idle connection was closed to make room (Postfix reconnects
    // on its own): it reads end-of-file, not a hang.
    assert_eq!(rpol::read_to_close(&mut postfix), b"");
    drop(crowd);
}

/// Peak resident memory of a process, from /proc (VmHWM), in KiB.
fn peak_rss_kib(pid: libc::pid_t) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn a_flood_of_huge_instance_values_stays_within_its_memory_bound() {
    let _alone = crate::one_at_a_time();
    const REQUESTS: usize = 40_000;
    const BATCH: usize = 100;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut zones = dns::DEFAULT_ZONES.to_vec();
    zones.push(("spftest.", include_str!("zones/spftest.zone")));
    let dns = runtime.block_on(dns::TestDns::start(&zones));
    let config = format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [spf]\nreceiver = \"mx.example.com\"\n\
         [profile.mx]\nrecipient = [\"check_spf\"]\n",
        dns.addr
    );
    let rpol = Setup::new(&config).start();
    let mut conn = rpol.connect();
    // Answers read through a buffer: a read per byte would cost the test
    // more than the daemon's work.
    let mut answers = std::io::BufReader::new(conn.try_clone().unwrap());
    let padding = "i".repeat(8 * 1024 - 64);
    let mut sent = 0;
    while sent < REQUESTS {
        let mut batch = Vec::new();
        for n in sent..sent + BATCH {
            let instance = format!("{padding}{n}");
            batch.extend(rpol::request(&[
                ("protocol_state", "RCPT"),
                ("client_address", "203.0.113.10"),
                ("helo_name", "mail.good.example"),
                ("sender", "someone@pass.spftest"),
                ("recipient", "a@example.com"),
                ("instance", &instance),
            ]));
        }
        std::io::Write::write_all(&mut conn, &batch).unwrap();
        for _ in 0..BATCH {
            let answer = rpol::read_response(&mut answers);
            // Every transaction is new: each gets its own header.
            assert!(
                answer.starts_with("action=PREPEND Received-SPF: pass "),
                "{answer}"
            );
        }
        sent += BATCH;
    }
    let peak = peak_rss_kib(rpol.pid());
    println!(
        "peak RSS after {REQUESTS} requests with 8 KiB instances: {} KiB",
        peak
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    drop(dns);
}
