//! `[metrics] listen`: GET /metrics from the real daemon over TCP. The
//! counters move by exactly what the requests did (profiles and actions,
//! rules and their results, SPF results, the DNS and SPF caches, latency,
//! open connections), survive reloads, and count reloads done and failed;
//! the whole exposition is strictly valid; label values never carry request
//! text; odd, oversized, slow and surplus HTTP clients get their answer (or
//! are closed) without disturbing the policy service.

use crate::support::fixture;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fixture::daemon::{self, Rpol, Setup, ask_action, read_to_close};
use fixture::dns_server::DEFAULT_ZONES;
use fixture::{DNS_ADDR, Fixture, Spec};

/// The address the daemon says it serves metrics on (it was given port 0).
fn metrics_addr(rpol: &Rpol) -> SocketAddr {
    let line = rpol.wait_for_log("serving metrics on http://", 0);
    let rest = line.split("http://").nth(1).expect("address in log line");
    rest.trim_end_matches("/metrics")
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Sends `raw` and returns everything the server sent before closing.
fn http(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    s.write_all(raw).expect("write http request");
    String::from_utf8(read_to_close(&mut s)).expect("UTF-8 response")
}

/// GET /metrics: checks the head, validates the body strictly and returns
/// its samples.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let response = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{head}"
    );
    parse(body)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `k="v",...` into pairs; a label value may hold `\\`, `\"` and `\n`.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label key=\"");
        assert!(valid_name(key), "label name {key:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => match chars.next().expect("escape").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => panic!("bad escape \\{c}"),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.push((key.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

/// The exposition, checked line by line (Prometheus text format 0.0.4):
/// HELP then TYPE before a family's samples, valid names and labels, no
/// sample twice, histogram buckets cumulative and +Inf equal to the count.
/// Returns each sample (`name{labels}` as written) with its value.
fn parse(body: &str) -> BTreeMap<String, f64> {
    assert!(body.ends_with('\n'), "no final newline");
    let mut samples = BTreeMap::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    for line in body.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, text) = help.split_once(' ').expect("HELP name text");
            assert!(valid_name(name) && !text.is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "HELP twice: {line}");
            continue;
        }
        if let Some(ty) = line.strip_prefix("# TYPE ") {
            let (name, kind) = ty.split_once(' ').expect("TYPE name kind");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                typed.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("}"))),
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample without TYPE: {line}");
        assert!(value >= 0.0, "{line}");
        let keys: BTreeSet<&String> = labels.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), labels.len(), "a label twice: {line}");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "sample twice: {line}"
        );
    }
    for (family, kind) in &typed {
        if kind == "histogram" {
            let buckets: Vec<f64> = samples
                .iter()
                .filter(|(s, _)| s.starts_with(&format!("{family}_bucket{{")))
                .map(|(_, v)| *v)
                .collect();
            let inf = samples[&format!("{family}_bucket{{le=\"+Inf\"}}")];
            assert_eq!(inf, samples[&format!("{family}_count")], "{family}");
            assert!(buckets.iter().all(|b| *b <= inf), "{family}");
        }
    }
    samples
}

/// How much `series` grew from `before` to `after` (absent: 0).
fn grew(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    let get = |m: &BTreeMap<String, f64>| m.get(series).copied().unwrap_or(0.0);
    get(after) - get(before)
}

/// Polls the exposition until `series` equals `want` (bounded).
fn wait_for(addr: SocketAddr, series: &str, want: f64) {
    let deadline = Instant::now() + daemon::WAIT_TIMEOUT;
    loop {
        let now = scrape(addr).get(series).copied();
        if now == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {now:?}, not {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const RCPT: &[(&str, &str)] = &[
    ("protocol_state", "RCPT"),
    ("client_address", "203.0.113.10"),
    ("helo_name", "mail.good.example"),
    ("sender", "someone@pass.spftest"),
    ("recipient", "alice@example.com"),
    ("instance", "1"),
];

/// A table, then check_spf (MAIL FROM only), over tests/zones/spftest.zone.
async fn spf_fixture() -> Fixture {
    let zones = [
        DEFAULT_ZONES,
        &[("spftest.", include_str!("zones/spftest.zone"))],
    ]
    .concat();
    let config = format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [spf]\nreceiver = \"mx.example.com\"\ncheck_helo = false\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [profile.mx]\nrecipient = [\"check_recipient_access hash:recipients\", \"check_spf\"]\n"
    );
    Fixture::start(Spec {
        zones: &zones,
        config: &config,
        files: &[("recipients", "busy@example.com REJECT busy\n")],
        base: RCPT,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_what_the_requests_did() {
    let f = spf_fixture().await;
    let addr = metrics_addr(&f.daemon);
    let before = scrape(addr);

    let prepend = |a: &str| a.starts_with("PREPEND Received-SPF: pass ");
    // SPF pass: evaluated, one DNS query.
    assert!(prepend(&f.ask(&[])));
    // The same client and sender in another transaction: the SPF cache.
    assert!(prepend(&f.ask(&[("instance", "2")])));
    // Another client of the same network: evaluated, the TXT record cached.
    assert!(prepend(
        &f.ask(&[("instance", "3"), ("client_address", "203.0.113.11")])
    ));
    // SPF fail: evaluated, the DNS cache again.
    let fail = f.ask(&[("instance", "4"), ("client_address", "198.51.100.7")]);
    assert!(fail.starts_with("550 5.7.23 SPF fail"), "{fail}");
    // The table rejects before check_spf runs.
    let busy = f.ask(&[("instance", "5"), ("recipient", "busy@example.com")]);
    assert_eq!(busy, "554 5.7.1 busy");

    // Latency is observed once the answer is written: maybe after the
    // client read it.
    let count = "rpol_request_duration_seconds_count";
    wait_for(addr, count, before[count] + 5.0);
    let after = scrape(addr);
    let want: &[(&str, f64)] = &[
        (r#"rpol_requests_total{profile="mx",action="PREPEND"}"#, 3.0),
        (r#"rpol_requests_total{profile="mx",action="REJECT"}"#, 2.0),
        (r#"rpol_requests_total{profile="mx",action="DUNNO"}"#, 0.0),
        (r#"rpol_requests_total{profile="-",action="DUNNO"}"#, 0.0),
        (
            r#"rpol_rule_decisions_total{rule="check_recipient_access",result="dunno"}"#,
            4.0,
        ),
        (
            r#"rpol_rule_decisions_total{rule="check_recipient_access",result="reject"}"#,
            1.0,
        ),
        (
            r#"rpol_rule_decisions_total{rule="check_spf",result="pass"}"#,
            3.0,
        ),
        (
            r#"rpol_rule_decisions_total{rule="check_spf",result="reject"}"#,
            1.0,
        ),
        (
            r#"rpol_spf_results_total{identity="mailfrom",result="pass"}"#,
            3.0,
        ),
        (
            r#"rpol_spf_results_total{identity="mailfrom",result="fail"}"#,
            1.0,
        ),
        (
            r#"rpol_spf_results_total{identity="helo",result="pass"}"#,
            0.0,
        ),
        ("rpol_spf_cache_hits_total", 1.0),
        ("rpol_spf_cache_misses_total", 3.0),
        ("rpol_dns_cache_misses_total", 1.0),
        ("rpol_dns_cache_hits_total", 2.0),
        ("rpol_dns_cache_coalesced_total", 0.0),
        ("rpol_dns_cache_entries", 1.0),
        ("rpol_request_duration_seconds_count", 5.0),
        (r#"rpol_request_duration_seconds_bucket{le="10"}"#, 5.0),
        (r#"rpol_request_duration_seconds_bucket{le="+Inf"}"#, 5.0),
        ("rpol_malformed_requests_total", 0.0),
        (r#"rpol_reloads_total{result="done"}"#, 0.0),
    ];
    for (series, n) in want {
        assert!(after.contains_key(*series), "{series} missing");
        assert_eq!(grew(&before, &after, series), *n, "{series}");
    }
    // Rules the policy does not use are not listed.
    assert!(!after.keys().any(|k| k.contains("permit_mynetworks")));

    // An open connection is counted while it is open.
    let mut held = f.daemon.connect();
    ask_action(&mut held, &f.pairs(&[("instance", "6")]));
    wait_for(addr, "rpol_open_connections", 1.0);
    drop(held);
    wait_for(addr, "rpol_open_connections", 0.0);
}

/// Two requests at once whose SPF record does not answer: one query, the
/// second lookup joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_name_are_coalesced() {
    let f = spf_fixture().await;
    f.dns.inject_silence("quiet.spftest");
    let addr = metrics_addr(&f.daemon);
    let before = scrape(addr);
    let attrs = f.pairs(&[("sender", "someone@quiet.spftest")]);
    let mut both: Vec<_> = (0..2).map(|_| f.daemon.connect()).collect();
    for s in &mut both {
        s.write_all(&daemon::request(&attrs)).expect("write");
    }
    for s in &mut both {
        let action = daemon::read_response(s);
        assert!(
            action.starts_with("action=DEFER_IF_PERMIT 4.7.24 SPF temporary error"),
            "{action}"
        );
    }
    let after = scrape(addr);
    for (series, n) in [
        ("rpol_dns_cache_misses_total", 1.0),
        ("rpol_dns_cache_coalesced_total", 1.0),
        ("rpol_dns_cache_hits_total", 0.0),
        (
            r#"rpol_spf_results_total{identity="mailfrom",result="temperror"}"#,
            2.0,
        ),
        ("rpol_spf_cache_misses_total", 2.0),
        (
            r#"rpol_requests_total{profile="mx",action="DEFER_IF_PERMIT"}"#,
            2.0,
        ),
        (
            r#"rpol_rule_decisions_total{rule="check_spf",result="defer_if_permit"}"#,
            2.0,
        ),
    ] {
        assert_eq!(grew(&before, &after, series), n, "{series}");
    }
}

const RELOAD_CONFIG: &str = "[server]\nwatch_interval = \"100ms\"\n\
    [dns]\nnameservers = [\"127.0.0.1:9\"]\n\
    [site]\nmynetworks = [\"127.0.0.0/8\"]\n\
    [metrics]\nlisten = \"127.0.0.1:0\"\n\
    [profile.mx]\nrecipient = [\"permit_mynetworks\", \"reject\"]\n";

fn rcpt(client: &str) -> Vec<(&str, &str)> {
    vec![
        ("protocol_state", "RCPT"),
        ("client_address", client),
        ("sender", "a@example.org"),
        ("recipient", "b@example.org"),
    ]
}

#[test]
fn counters_survive_reloads_which_are_counted() {
    let rpol = Setup::new(RELOAD_CONFIG).start();
    let addr = metrics_addr(&rpol);
    let ask = |client: &str| ask_action(&mut rpol.connect(), &rcpt(client));
    let series =
        |p: &str, a: &str| format!("rpol_requests_total{{profile=\"{p}\",action=\"{a}\"}}");
    assert_eq!(ask("127.0.0.1"), "DUNNO");
    assert_eq!(ask("198.51.100.7"), "554 5.7.1 Access denied");

    let from = rpol.stderr().len();
    rpol.signal(libc::SIGHUP);
    rpol.wait_for_log("SIGHUP: reloaded", from);
    let m = scrape(addr);
    assert_eq!(m[&series("mx", "DUNNO")], 1.0);
    assert_eq!(m[&series("mx", "REJECT")], 1.0);
    assert_eq!(m[r#"rpol_reloads_total{result="done"}"#], 1.0);
    assert_eq!(m[r#"rpol_reloads_total{result="failed"}"#], 0.0);
    assert_eq!(
        m[r#"rpol_rule_decisions_total{rule="reject",result="reject"}"#],
        1.0
    );

    // The profile renamed, [metrics] moved: mx keeps its counts, mx2
    // starts at zero, and the old endpoint stays until a restart.
    let from = rpol.stderr().len();
    rpol.setup.write(
        "policy.toml",
        &RELOAD_CONFIG
            .replace("[profile.mx]", "[profile.mx2]")
            .replace("127.0.0.1:0", "127.0.0.1:1"),
    );
    rpol.wait_for_log("file change: reloaded", from);
    let warning = rpol.wait_for_log("takes effect only after a restart", from);
    assert!(warning.contains("metrics.listen changed"), "{warning}");
    assert_eq!(ask("198.51.100.7"), "554 5.7.1 Access denied");
    let m = scrape(addr);
    assert_eq!(m[&series("mx", "REJECT")], 1.0);
    assert_eq!(m[&series("mx2", "REJECT")], 1.0);
    assert_eq!(m[&series("mx2", "DUNNO")], 0.0);
    assert_eq!(
        m[r#"rpol_rule_decisions_total{rule="reject",result="reject"}"#],
        2.0
    );
    assert_eq!(m[r#"rpol_reloads_total{result="done"}"#], 2.0);

    // A broken file: counted as failed, by the watcher and by SIGHUP; the
    // old policy answers on.
    let from = rpol.stderr().len();
    rpol.setup.write("policy.toml", "[profile.mx2\n");
    rpol.wait_for_log("file change: reload failed", from);
    let from = rpol.stderr().len();
    rpol.signal(libc::SIGHUP);
    rpol.wait_for_log("SIGHUP: reload failed", from);
    assert_eq!(ask("127.0.0.1"), "DUNNO");
    let m = scrape(addr);
    assert_eq!(m[r#"rpol_reloads_total{result="failed"}"#], 2.0);
    assert_eq!(m[r#"rpol_reloads_total{result="done"}"#], 2.0);
    assert_eq!(m[&series("mx2", "DUNNO")], 1.0);
}

/// Label values allowed for each label name.
fn allowed_labels(profiles: &[&str]) -> BTreeMap<&'static str, BTreeSet<String>> {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    BTreeMap::from([
        ("profile", words(profiles)),
        (
            "action",
            words(&[
                "DUNNO",
                "REJECT",
                "DEFER",
                "DEFER_IF_PERMIT",
                "PREPEND",
                "WARN",
                "INFO",
                "HOLD",
                "FILTER",
                "REDIRECT",
                "BCC",
                "HANGUP",
                "DISCARD",
                "OTHER",
            ]),
        ),
        ("rule", words(&["check_sender_access", "reject"])),
        (
            "result",
            words(&[
                "dunno",
                "permit",
                "reject",
                "defer",
                "defer_if_permit",
                "defer_if_reject",
                "pass",
                "discard",
                "fail",
                "softfail",
                "neutral",
                "none",
                "temperror",
                "permerror",
                "done",
                "failed",
            ]),
        ),
        ("identity", words(&["mailfrom", "helo"])),
        ("reason", words(&["address", "user", "late", "client_gone"])),
    ])
}

#[test]
fn request_text_never_becomes_a_label() {
    let rpol = Setup::new(
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [profile.sub]\nmatch = { server_port = 587 }\n\
         sender = [\"check_sender_access hash:senders\", \"reject\"]\n",
    )
    .file("senders", "evil\"}@example.org REJECT x\n")
    .start();
    let addr = metrics_addr(&rpol);
    let hostile = [
        ("policy_context", "x\",profile=\"evil"),
        ("sasl_username", "a\\\"b{}\u{7f}\u{e9}"),
        ("sender", "evil\"}@example.org"),
        ("helo_name", "rpol_requests_total{} 99"),
    ];
    for port in ["25", "587"] {
        let mut attrs = rcpt("198.51.100.7");
        attrs.extend(hostile);
        attrs.push(("server_port", port));
        ask_action(&mut rpol.connect(), &attrs);
    }
    // A malformed request is counted, and only counted.
    let mut s = rpol.connect();
    s.write_all(b"request=smtpd_access_policy\nno equals sign\n\n")
        .expect("write");
    let answer = read_to_close(&mut s);
    assert!(answer.starts_with(b"action=DEFER_IF_PERMIT"), "{answer:?}");

    let response = http(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    let body = response.split_once("\r\n\r\n").expect("body").1;
    for (_, value) in hostile {
        assert!(!body.contains(value), "{value:?} in\n{body}");
    }
    assert!(!body.contains("evil"), "{body}");
    let allowed = allowed_labels(&["sub", "-"]);
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.rsplit_once(' ').unwrap().0.split_once('{') else {
            continue;
        };
        for (key, value) in parse_labels(labels.strip_suffix('}').unwrap()) {
            if key == "le" {
                assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
                continue;
            }
            let ok = allowed
                .get(key.as_str())
                .is_some_and(|v| v.contains(&value));
            assert!(ok, "label {key}={value:?} in {line}");
        }
    }
    let m = parse(body);
    assert_eq!(m[r#"rpol_requests_total{profile="-",action="DUNNO"}"#], 1.0);
    assert_eq!(
        m[r#"rpol_requests_total{profile="sub",action="REJECT"}"#],
        1.0
    );
    assert_eq!(m["rpol_malformed_requests_total"], 1.0);
}

#[test]
fn odd_http_clients_get_their_answer_and_policy_goes_on() {
    let _alone = crate::one_at_a_time();
    // A scrape's whole life, shorter than the 10 s default, so that the
    // clients that never finish are closed sooner.
    const TIMEOUT: Duration = Duration::from_millis(1_500);
    let config = RELOAD_CONFIG.replace("[metrics]\n", "[metrics]\ntimeout = \"1500ms\"\n");
    let rpol = Setup::new(&config).start();
    let addr = metrics_addr(&rpol);
    let status = |raw: &[u8]| {
        let r = http(addr, raw);
        r.split("\r\n").next().unwrap_or("").to_string()
    };
    assert_eq!(
        status(b"GET /other HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
    let post = http(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"),
        "{post}"
    );
    assert_eq!(
        status(b"\x16\x03\x01 garbage\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 9 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        status(&huge),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let head = http(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    let (head, body) = head.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Length: "), "{head}");
    assert_eq!(body, "");
    // A query string is ignored.
    assert_eq!(
        status(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 200 OK"
    );

    // Sixteen clients that never finish: each is closed after the
    // timeout; a seventeenth meanwhile is closed at once, unanswered
    // (well within the timeout); policy requests are answered all the
    // while.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /metr").expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut surplus = TcpStream::connect(addr).expect("connect");
    surplus.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_eq!(read_to_close(&mut surplus), b"");
    assert!(started.elapsed() < TIMEOUT / 2, "{:?}", started.elapsed());
    assert_eq!(ask_action(&mut rpol.connect(), &rcpt("127.0.0.1")), "DUNNO");
    for s in &mut slow {
        s.set_read_timeout(Some(TIMEOUT * 3 / 2)).expect("timeout");
        assert_eq!(read_to_close(s), b"");
    }
    let waited = started.elapsed();
    assert!(waited >= TIMEOUT * 9 / 10, "closed after {waited:?}");
    // Room again.
    let m = scrape(addr);
    assert_eq!(
        m[r#"rpol_requests_total{profile="mx",action="DUNNO"}"#],
        1.0
    );
}

#[test]
fn a_busy_metrics_address_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let config = RELOAD_CONFIG.replace("127.0.0.1:0", &addr.to_string());
    let setup = Setup::new(&config);
    let cmd = {
        let mut c = setup.command();
        c.arg("--listen")
            .arg(format!("unix:{}", setup.path("rpol.sock").display()));
        c
    };
    let mut rpol = setup.spawn(cmd);
    assert!(!rpol.wait_exit().success());
    let want = format!("cannot listen on metrics {addr}: ");
    assert!(rpol.stderr().contains(&want), "{}", rpol.stderr());
}

/// Started as root, rpol binds the metrics port before it drops root: a
/// port below 1024 works for an account that could not bind it.
#[test]
#[ignore = "needs root"]
fn the_metrics_port_is_bound_before_root_is_dropped() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test needs root (it is run by `cargo test -- --ignored`)"
    );
    let port = (900..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let config = RELOAD_CONFIG.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let setup = Setup::new(&config);
    let socket = setup.path("rpol.sock");
    let mut cmd = std::process::Command::new(daemon::RPOL);
    cmd.arg("--config")
        .arg(&setup.config)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(["--user", "nobody"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null());
    let rpol = setup.spawn(cmd);
    rpol.wait_for_log("running as nobody", 0);
    let addr = metrics_addr(&rpol);
    assert_eq!(addr.port(), port);
    let m = scrape(addr);
    assert_eq!(
        m[r#"rpol_requests_total{profile="mx",action="DUNNO"}"#],
        0.0
    );
}
