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

use crate::support::fixture;

use std::path::Path;

use fixture::dns_server::DEFAULT_ZONES;
use fixture::{DNS_ADDR, Fixture, Spec, UNLISTED_RCPT as RCPT};
use rpol::config;

const ZONES: &[(&str, &str)] = &[
    DEFAULT_ZONES[0],
    ("test.", include_str!("zones/dnsbl.test.zone")),
];

async fn setup(stages: &str, extra: &str) -> Fixture {
    // The probes stay off (world.test lists the world on purpose); an extra
    // `[dnsbl]` joins that table.
    let extra = extra.strip_prefix("[dnsbl]\n").unwrap_or(extra);
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
    let body = s.daemon.metrics();
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

/// `[dnsbl] sites` of the score tests: two blocklists (sc1 filtered,
/// weight 2; sc2 unfiltered, weight 1) and an allowlist (swl, -3).
const SCORE_SITES: &str = "[dnsbl]\n\
    sites = [\"sc1.test=127.0.0.[2..11]*2\", \"sc2.test\", \"swl.test=127.0.10.[0..255]*-3\"]\n\
    threshold = 3\nallowlist_threshold = -2\n";

/// The score fixture: check_dnsbl_score, then `reject` to show whether
/// the client stage went on (DUNNO) or was ended by a permit.
async fn score_setup(extra: &str) -> Fixture {
    let s = setup(
        "client = [\"check_dnsbl_score\", \"reject\"]",
        &format!("{SCORE_SITES}{extra}"),
    )
    .await;
    s.dns.inject_servfail("35.113.0.203.swl.test");
    s.dns.inject_servfail("36.113.0.203.sc1.test");
    s.dns.inject_silence("37.113.0.203.sc1.test");
    for list in ["sc1", "sc2", "swl"] {
        s.dns.inject_servfail(&format!("38.113.0.203.{list}.test"));
    }
    s
}

/// The generic `reject` after check_dnsbl_score: the stage went on.
fn went_on(ip: &str) -> String {
    format!("554 5.7.1 <mail.good.example[{ip}]>: Client host rejected: Access denied")
}

/// postscreen's reply (postscreen_early.c, PSC_DNSBL_FORMAT with
/// postscreen_dnsbl_action = enforce: "%s 5.7.1 Service unavailable;
/// client [%s] blocked using %s", code 550).
fn blocked(ip: &str, list: &str) -> String {
    format!("550 5.7.1 Service unavailable; client [{ip}] blocked using {list}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_dnsbl_score_weights_and_thresholds() {
    let s = score_setup("").await;
    s.check(&[
        (
            "2 (two sc1 records, one pattern: once) + 1 = 3: at the threshold",
            client("203.0.113.30"),
            blocked("203.0.113.30", "sc1.test"),
        ),
        (
            "2: below the threshold",
            client("203.0.113.31"),
            went_on("203.0.113.31"),
        ),
        (
            "-3: at or below the allowlist threshold",
            client("203.0.113.32"),
            "DUNNO".into(),
        ),
        (
            "2 - 3 = -1: neither",
            client("203.0.113.33"),
            went_on("203.0.113.33"),
        ),
        (
            "0: nothing listed",
            client("203.0.113.50"),
            went_on("203.0.113.50"),
        ),
        (
            "127.0.0.12 is outside sc1's filter: sc2's 1 only",
            client("203.0.113.39"),
            went_on("203.0.113.39"),
        ),
        (
            "sc2's error code adds nothing (postscreen would add 1: 3)",
            client("203.0.113.34"),
            went_on("203.0.113.34"),
        ),
        (
            "3, but the allowlist failed: a temporary reply, never a reject",
            client("203.0.113.35"),
            "450 4.7.1 Service unavailable; client [203.0.113.35] blocked using sc1.test".into(),
        ),
        (
            "-3 but sc1 failed (it could make -1): no permit",
            client("203.0.113.36"),
            went_on("203.0.113.36"),
        ),
        (
            "sc1 silent: sc2's 1",
            client("203.0.113.37"),
            went_on("203.0.113.37"),
        ),
        (
            "every list fails: 0, DUNNO",
            client("203.0.113.38"),
            went_on("203.0.113.38"),
        ),
        (
            "IPv6 queried by nibbles, not listed",
            client("2001:db8::77"),
            went_on("2001:db8::77"),
        ),
    ]);
    // The trace lists each list's answer and each site's weight.
    let trace = s.trace(&client("203.0.113.34")).await;
    for want in [
        "34.113.0.203.sc1.test: 127.0.0.2; sc1.test=127.0.0.[2..11]*2 weight 2: matched",
        "34.113.0.203.sc2.test: error code 127.255.255.254 (not a listing; the list cannot answer); sc2.test weight 1: adds nothing",
        "34.113.0.203.swl.test: not listed; swl.test=127.0.10.[0..255]*-3 weight -3: not matched",
        "DNS list score 2 (between 2 and 3 had the failed lists answered)",
    ] {
        assert!(trace.contains(want), "{want}\n{trace}");
    }
    let trace = s.trace(&client("203.0.113.37")).await;
    assert!(
        trace.contains("37.113.0.203.sc1.test: lookup failed"),
        "{trace}"
    );
}

/// The lists of one client are asked at once: three silent lists cost
/// one timeout, not three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_dnsbl_score_asks_every_list_at_once() {
    let _alone = crate::one_at_a_time();
    let s = score_setup("").await;
    for list in ["sc1", "sc2", "swl"] {
        s.dns.inject_silence(&format!("40.113.0.203.{list}.test"));
    }
    let started = std::time::Instant::now();
    assert_eq!(s.ask(&client("203.0.113.40")), went_on("203.0.113.40"));
    // [dns] timeout is 300 ms with one attempt: one after the other would
    // take 900 ms at least.
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_millis(850), "{took:?}");
    // Each list was asked once.
    for list in ["sc1", "sc2", "swl"] {
        assert_eq!(
            s.dns.queries_for(&format!("40.113.0.203.{list}.test")),
            1,
            "{list}"
        );
    }
}

/// A score is kept for at least min_ttl though its answer's TTL (1 s) has
/// run out, and is computed once per request however many rules ask; a
/// score with a failed list is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_are_kept_for_their_ttl_and_computed_once() {
    let s = Fixture::start(Spec {
        zones: ZONES,
        config: &format!(
            "{SCORE_SITES}min_ttl = \"30s\"\n\
             [dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"300ms\"\nattempts = 1\nmin_ttl = \"1s\"\n\
             [site]\ndomains = [\"example.com\"]\n[profile.test]\n\
             client = [\"check_dnsbl_score\"]\nrecipient = [\"check_dnsbl_score\"]\n"
        ),
        files: &[],
        base: RCPT,
    })
    .await;
    let first = s.trace(&client("203.0.113.31")).await;
    assert!(first.contains("DNS list score 2\n"), "{first}");
    assert!(
        first.contains("DNS list score 2 (scored earlier in this request)"),
        "{first}"
    );
    let asked = s.dns.queries_for("31.113.0.203.sc1.test");
    assert_eq!(asked, 1, "{first}");
    // The A record's TTL (1 s, and [dns] min_ttl 1 s) runs out; the score
    // (min_ttl 30 s) stays.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let again = s.trace(&client("203.0.113.31")).await;
    assert!(
        again.contains("DNS list score 2 (kept from an earlier request)"),
        "{again}"
    );
    assert_eq!(s.dns.queries_for("31.113.0.203.sc1.test"), asked);
    // A failed list: asked again by the next request, once per request.
    s.dns.inject_servfail("41.113.0.203.sc1.test");
    s.trace(&client("203.0.113.41")).await;
    s.trace(&client("203.0.113.41")).await;
    assert_eq!(s.dns.queries_for("41.113.0.203.sc1.test"), 2);
}

/// `[dnsbl] reply` words the score's reply as it does reject_rbl_client's:
/// a secret query domain is not shown (postscreen_dnsbl_reply_map).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_dnsbl_score_reply_map() {
    let s = score_setup(
        "[dnsbl.reply]\n\"sc1.test\" = \"$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using zen.example\"\n",
    )
    .await;
    s.check(&[(
        "the template by domain",
        client("203.0.113.30"),
        blocked("203.0.113.30", "zen.example"),
    )]);
    let s = score_setup(
        "[dnsbl.reply]\n\"sc1.test=127.0.0.[2..11]\" = \"$rbl_code 5.7.25 listed, see https://lists.example/$rbl_what\"\n",
    )
    .await;
    s.check(&[(
        "the template by domain=filter",
        client("203.0.113.30"),
        "550 5.7.25 listed, see https://lists.example/203.0.113.30".into(),
    )]);
}

/// Each mistake in `[dnsbl]`'s score keys is a config error at its place.
#[test]
fn score_config_errors() {
    let errors = |text: &str| match config::load_str(Path::new("p.toml"), text) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    let tail = "[dns]\nnameservers = [\"127.0.0.1:9\"]\n[profile.p]\nclient = [\"dunno\"]\n";
    for (text, want) in [
        (
            "[dnsbl]\nsites = [\"a.test\", \"b.test*x\"]\n",
            "p.toml:2:20: dnsbl.sites: bad DNSBL weight factor \"x\" in \"b.test*x\"",
        ),
        (
            "[dnsbl]\nsites = [\"a.test=127.0.0.[2..x]\"]\n",
            "p.toml:2:10: dnsbl.sites: bad DNSBL filter syntax",
        ),
        (
            "[dnsbl]\nsites = [\"a.test\"]\nthreshold = 0\n",
            "p.toml:3:13: dnsbl.threshold: must be between 1 and 1000000",
        ),
        (
            "[dnsbl]\nsites = [\"a.test\"]\nallowlist_threshold = 1\n",
            "p.toml:3:23: dnsbl.allowlist_threshold: must be between -1000000 and 0",
        ),
        (
            "[dnsbl]\nsites = [\"a.test\"]\nmin_ttl = \"2h\"\n",
            "p.toml:2:9: dnsbl.max_ttl: must not be less than min_ttl (7200s)",
        ),
        (
            "[dnsbl]\nthreshold = 2\n",
            "p.toml:2:13: dnsbl.threshold: needs [dnsbl] sites",
        ),
        (
            "[store]\n[greylist]\nmin_dnsbl_score = 1\n",
            "p.toml:3:19: greylist.min_dnsbl_score: needs [dnsbl] sites",
        ),
        (
            "[store]\n[greylist]\nskip_dnswl = true\n",
            "p.toml:3:14: greylist.skip_dnswl: needs [dnsbl] sites",
        ),
        (
            "[dnsbl]\nsites = [\"a.test\"]\n[store]\n[greylist]\nskip_dnswl = true\n",
            "p.toml:5:14: greylist.skip_dnswl: needs [dnsbl] allowlist_threshold",
        ),
    ] {
        let got = errors(&format!("{text}{tail}"));
        assert!(got.contains(want), "{text}: {got}");
    }
    let got = errors(
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\n[profile.p]\nclient = [\"check_dnsbl_score\"]\n",
    );
    assert!(
        got.contains("p.toml:4:11: profile.p.client: needs [dnsbl] sites"),
        "{got}"
    );
}

/// The commented `[dnsbl]` example of the shipped policy.toml (kept in
/// step with packaging/policy.toml by tests/packaging.rs) compiles once
/// uncommented, with check_dnsbl_score in the client list.
#[test]
fn the_shipped_commented_score_example_compiles() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut out, mut in_block, mut uncommented) = (String::new(), false, 0);
    for line in text.lines() {
        in_block = line == "# [dnsbl]" || (in_block && line.starts_with("# "));
        let line = match line.strip_prefix("# ") {
            Some(rest) if in_block => {
                uncommented += 1;
                rest.to_string()
            }
            _ if line.trim() == "# \"check_dnsbl_score\"," => {
                uncommented += 1;
                "  \"check_dnsbl_score\",".to_string()
            }
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(uncommented, 7, "{out}");
    let loaded = config::load_str(&path, &out).unwrap_or_else(|e| panic!("{e}"));
    let sites = loaded.policy.site.dnsbl_sites.expect("[dnsbl] sites");
    let written: Vec<(&str, i64)> = sites
        .sites
        .iter()
        .map(|s| (s.written.as_str(), s.weight))
        .collect();
    assert_eq!(
        written,
        [
            ("zen.spamhaus.org=127.0.0.[2..11]*3", 3),
            ("list.dnswl.org=127.0.[0..255].[1..3]*-2", -2)
        ]
    );
    assert_eq!((sites.threshold, sites.allowlist_threshold), (3, -1));
}

/// The score's sites are lists of the policy like those the rules name:
/// probed, behind the circuit breaker and watched for our egress (as
/// address lists; a blocklist when an entry weighs more than nothing).
#[tokio::test(flavor = "multi_thread")]
async fn the_scores_sites_are_probed_and_watched() {
    let s = score_setup("").await;
    let lists: Vec<(String, bool, bool, bool)> = s
        .policy
        .dns_lists()
        .into_iter()
        .map(|w| (w.domain, w.addresses, w.names, w.blocks))
        .collect();
    assert_eq!(
        lists,
        [
            ("sc1.test".to_string(), true, false, true),
            ("sc2.test".to_string(), true, false, true),
            ("swl.test".to_string(), true, false, false),
        ]
    );
}
