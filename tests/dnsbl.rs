//! Postfix's DNS list restrictions (reject_rbl_client, reject_rhsbl_*,
//! permit_dnswl_client, permit_rhswl_client) against lists served by a
//! real DNS server on loopback (tests/zones/dnsbl.test.zone): each reply
//! whole, as Postfix's smtpd_check.c words it (rbl_reject_reply with
//! default_rbl_reply), and the failure behaviour: a blocklist that fails
//! or answers an error code never rejects, an allowlist that fails sets
//! defer_if_reject.
//!
//! The policy is called from smtpd_recipient_restrictions (the default
//! `called_from`); a DNS list's reply text carries no `<name>: <Class>
//! rejected:` prefix whichever stage it sits in, as in Postfix.

#[path = "support/fixture.rs"]
mod fixture;

use std::path::Path;

use fixture::dns_server::DEFAULT_ZONES;
use fixture::{DNS_ADDR, Fixture, Spec};
use rpol::config;

const ZONES: &[(&str, &str)] = &[
    DEFAULT_ZONES[0],
    ("test.", include_str!("zones/dnsbl.test.zone")),
];

/// A RCPT request from an unlisted client; each question changes it.
const RCPT: &[(&str, &str)] = &[
    ("protocol_state", "RCPT"),
    ("client_address", "203.0.113.50"),
    ("client_name", "mail.good.example"),
    ("reverse_client_name", "mail.good.example"),
    ("helo_name", "mail.good.example"),
    ("sender", "someone@good.example"),
    ("recipient", "alice@example.com"),
];

async fn setup(stages: &str, extra: &str) -> Fixture {
    let config = format!(
        "[dnsbl]\nprobe = false\n{extra}\n[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"300ms\"\nattempts = 1\n\
         [site]\ndomains = [\"example.com\"]\n[profile.test]\n{stages}\n"
    );
    let s = Fixture::start(Spec {
        zones: ZONES,
        config: &config,
        files: &[],
        base: RCPT,
    })
    .await;
    s.dns.inject_servfail("8.113.0.203.bl.test");
    s.dns.inject_silence("9.113.0.203.bl.test");
    s.dns.inject_servfail("8.113.0.203.wl.test");
    s.dns.inject_servfail("servfail.example.dbl.test");
    s
}

fn client(addr: &str) -> Vec<(&str, &str)> {
    vec![("client_address", addr)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_rbl_client() {
    let s = setup("client = [\"reject_rbl_client bl.test\"]", "").await;
    s.check(&[
        (
            "listed, with a TXT",
            client("203.0.113.5"),
            "554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using bl.test; Listed by bl.test, see https://bl.test/q?203.0.113.5".into(),
        ),
        (
            "listed, no TXT: no reason",
            client("203.0.113.6"),
            "554 5.7.1 Service unavailable; Client host [203.0.113.6] blocked using bl.test"
                .into(),
        ),
        ("not listed", client("203.0.113.50"), "DUNNO".into()),
        (
            "the RFC 5782 test entry",
            client("127.0.0.2"),
            "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; test entry".into(),
        ),
        (
            "IPv6, by nibbles",
            client("2001:db8::5"),
            "554 5.7.1 Service unavailable; Client host [2001:db8::5] blocked using bl.test; v6 listed".into(),
        ),
        (
            "an IPv4-mapped address is its IPv4 address",
            client("::ffff:203.0.113.6"),
            "554 5.7.1 Service unavailable; Client host [203.0.113.6] blocked using bl.test"
                .into(),
        ),
        // Postfix would reject here (any A record is a listing): rpol
        // deliberately does not.
        ("an error code is no listing", client("203.0.113.7"), "DUNNO".into()),
        ("SERVFAIL: passed by", client("203.0.113.8"), "DUNNO".into()),
        ("timeout: passed by", client("203.0.113.9"), "DUNNO".into()),
        ("not an address", client("unknown"), "DUNNO".into()),
    ]);
    // Two TXT records are joined with " / " (the order is the server's);
    // a byte outside ASCII becomes a space (as Postfix 3.7 was seen to
    // answer).
    let two = s.ask(&client("203.0.113.11"));
    let head = "554 5.7.1 Service unavailable; Client host [203.0.113.11] blocked using bl.test; ";
    assert!(
        two == format!("{head}caf   / two") || two == format!("{head}two / caf  "),
        "{two}"
    );
    // Answers are cached: asking again sends no query.
    let before = s.dns.query_count();
    s.ask(&client("203.0.113.5"));
    s.ask(&client("203.0.113.50"));
    assert_eq!(s.dns.query_count(), before);
    // The trace says what each list answered.
    let trace = s.trace(&client("203.0.113.7")).await;
    assert!(
        trace.contains("7.113.0.203.bl.test: error code 127.255.255.254 (not a listing"),
        "{trace}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_filters() {
    let s = setup(
        "client = [\"reject_rbl_client bl.test=127.0.0.[2;3]\", \"reject_rbl_client world.test=127.0.0.[5..7]\"]",
        "",
    )
    .await;
    s.check(&[
        (
            "one of two records matches",
            client("203.0.113.5"),
            "554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using bl.test; Listed by bl.test, see https://bl.test/q?203.0.113.5".into(),
        ),
        ("127.0.0.10 is filtered out", client("203.0.113.6"), "DUNNO".into()),
        ("a filter never admits an error code", client("203.0.113.7"), "DUNNO".into()),
    ]);
    // A list whose filter matches nothing it answers lists nobody.
    assert_eq!(s.ask(&client("203.0.113.77")), "DUNNO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_rhsbl_restrictions() {
    let s = setup(
        "client = [\"reject_rhsbl_client dbl.test\", \"reject_rhsbl_reverse_client dbl.test\"]\n\
         helo = [\"reject_rhsbl_helo dbl.test\"]\n\
         sender = [\"reject_rhsbl_sender dbl.test\"]\n\
         recipient = [\"reject_rhsbl_recipient dbl.test\"]",
        "",
    )
    .await;
    s.check(&[
        ("nothing listed", vec![], "DUNNO".into()),
        (
            "client name",
            vec![("client_name", "mail.spam.example")],
            "554 5.7.1 Service unavailable; Client host [mail.spam.example] blocked using dbl.test; spam host".into(),
        ),
        (
            "reverse client name",
            vec![("client_name", "unknown"), ("reverse_client_name", "mail.spam.example")],
            "554 5.7.1 Service unavailable; Unverified Client host [mail.spam.example] blocked using dbl.test; spam host".into(),
        ),
        (
            "HELO name",
            vec![("helo_name", "spam.example")],
            "554 5.7.1 Service unavailable; Helo command [spam.example] blocked using dbl.test; spam domain".into(),
        ),
        (
            "sender domain; the whole address is $rbl_what",
            vec![("sender", "Bob@Spam.Example")],
            "554 5.7.1 Service unavailable; Sender address [Bob@Spam.Example] blocked using dbl.test; spam domain".into(),
        ),
        (
            "recipient domain",
            vec![("recipient", "x@spam.example")],
            "554 5.7.1 Service unavailable; Recipient address [x@spam.example] blocked using dbl.test; spam domain".into(),
        ),
        ("the null sender", vec![("sender", "")], "DUNNO".into()),
        ("an address literal", vec![("sender", "a@[203.0.113.5]")], "DUNNO".into()),
        ("a numeric last label", vec![("helo_name", "spam.example.123")], "DUNNO".into()),
        ("an unknown client name", vec![("client_name", "unknown")], "DUNNO".into()),
        ("an error code", vec![("sender", "a@good.example")], "DUNNO".into()),
        ("SERVFAIL", vec![("sender", "a@servfail.example")], "DUNNO".into()),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permit_dnswl_client() {
    let s = setup(
        "client = [\"permit_dnswl_client wl.test\", \"reject_rbl_client world.test\"]",
        "",
    )
    .await;
    let world = |ip: &str| {
        format!("554 5.7.1 Service unavailable; Client host [{ip}] blocked using world.test")
    };
    s.check(&[
        (
            "allowlisted: the stage ends",
            client("203.0.113.20"),
            "DUNNO".into(),
        ),
        (
            "not allowlisted",
            client("203.0.113.21"),
            world("203.0.113.21"),
        ),
        // Postfix's DEFER_IF_REJECT for a failed allowlist lookup.
        (
            "allowlist SERVFAIL: a later reject becomes a deferral",
            client("203.0.113.8"),
            "450 4.7.1 <203.0.113.8>: Client host rejected: Service unavailable".into(),
        ),
        // Postfix never allowlists a recipient that is not ours.
        (
            "not our recipient: no allowlisting",
            vec![
                ("client_address", "203.0.113.20"),
                ("recipient", "x@elsewhere.example"),
            ],
            world("203.0.113.20"),
        ),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permit_rhswl_client() {
    let s = setup(
        "client = [\"permit_rhswl_client dbl.test\", \"reject_rbl_client world.test\"]",
        "",
    )
    .await;
    s.check(&[
        (
            "client name listed: the stage ends",
            vec![("client_name", "mail.spam.example")],
            "DUNNO".into(),
        ),
        (
            "not listed",
            vec![("client_name", "mail.good.example")],
            "554 5.7.1 Service unavailable; Client host [203.0.113.50] blocked using world.test"
                .into(),
        ),
        (
            "SERVFAIL: defer_if_reject",
            vec![("client_name", "servfail.example")],
            "450 4.7.1 <servfail.example>: Client host rejected: Service unavailable".into(),
        ),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_templates() {
    let s = setup(
        "client = [\"reject_rbl_client bl.test=127.0.0.[2..11]\", \"reject_rbl_client world.test\"]",
        "[postfix]\nmaps_rbl_reject_code = 550\n\
         [dnsbl.reply]\n\"bl.test=127.0.0.[2..11]\" = \"$rbl_code 5.7.25 see https://bl.test/?ip=$client_address${rbl_reason?: $rbl_reason}\"\n\
         \"world.test\" = \"451 4.7.1 try later, $rbl_class $rbl_what\"",
    )
    .await;
    s.check(&[
        (
            "rbl_reply_maps by domain=filter",
            client("203.0.113.6"),
            "550 5.7.25 see https://bl.test/?ip=203.0.113.6".into(),
        ),
        (
            "with $rbl_reason",
            client("203.0.113.5"),
            "550 5.7.25 see https://bl.test/?ip=203.0.113.5: Listed by bl.test, see https://bl.test/q?203.0.113.5".into(),
        ),
        (
            "a 4xx template",
            client("203.0.113.50"),
            "451 4.7.1 try later, Client host 203.0.113.50".into(),
        ),
    ]);
}

/// Each mistake is a config error at its position.
#[test]
fn config_errors() {
    let errors = |text: &str| match config::load_str(Path::new("p.toml"), text) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    let dns = "[dns]\nnameservers = [\"127.0.0.1:9\"]\n";
    let cases = [
        (
            "client = [\"reject_rbl_client\"]",
            "reject_rbl_client takes exactly one argument",
        ),
        (
            "client = [\"reject_rbl_client bl.test=127.0.0.[x]\"]",
            "need decimal number 0..255",
        ),
        (
            "client = [\"reject_rbl_client localhost\"]",
            "is not a DNS list domain",
        ),
        (
            "client = [\"reject_rhsbl_sender dbl.test\"]",
            "reject_rhsbl_sender cannot work in the client stage",
        ),
    ];
    for (stages, want) in cases {
        let got = errors(&format!("{dns}[profile.p]\n{stages}\n"));
        assert!(got.contains(want), "{stages}: {got}");
    }
    let got = errors(&format!(
        "{dns}[dnsbl.reply]\n\"bl.test\" = \"$rbl_cod x\"\n[profile.p]\nclient = [\"dunno\"]\n"
    ));
    assert!(
        got.contains("p.toml:4:13: dnsbl.reply.bl.test: unknown name $rbl_cod"),
        "{got}"
    );
    let got = errors(&format!(
        "{dns}[postfix]\ndefault_rbl_reply = \"Service unavailable\"\n[profile.p]\nclient = [\"dunno\"]\n"
    ));
    assert!(
        got.contains("postfix.default_rbl_reply: must expand to a 4xx or 5xx code"),
        "{got}"
    );
}

/// GET /metrics: the body.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .expect("read timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_per_list() {
    let s = setup(
        "client = [\"reject_rbl_client bl.test\"]",
        "[metrics]\nlisten = \"127.0.0.1:0\"",
    )
    .await;
    for addr in [
        "203.0.113.5",
        "203.0.113.50",
        "203.0.113.51",
        "203.0.113.7",
        "203.0.113.8",
    ] {
        s.ask(&client(addr));
    }
    let line = s.daemon.wait_for_log("serving metrics on http://", 0);
    let addr = line
        .split("http://")
        .nth(1)
        .expect("address")
        .trim_end_matches("/metrics")
        .trim()
        .to_string();
    let body = scrape(&addr);
    let got: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("rpol_dnsbl_lookups_total{site=\"bl.test\""))
        .collect();
    assert_eq!(
        got,
        [
            "rpol_dnsbl_lookups_total{site=\"bl.test\",answer=\"listed\"} 1",
            "rpol_dnsbl_lookups_total{site=\"bl.test\",answer=\"not_listed\"} 2",
            "rpol_dnsbl_lookups_total{site=\"bl.test\",answer=\"error_code\"} 1",
            "rpol_dnsbl_lookups_total{site=\"bl.test\",answer=\"failed\"} 1",
        ],
        "{body}"
    );
}
