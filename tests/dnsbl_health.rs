//! DNS lists that fail safe, against lists served by a real DNS server on
//! loopback (tests/zones/dnsbl-health.test.zone): the RFC 5782 probes
//! switch off a list that lists the world or whose test entry is missing
//! and switch it back on when it recovers; the circuit breaker skips a
//! list that keeps timing out; the egress watch finds our own address and
//! HELO name on a list, in the log, in GET /metrics and in
//! `--check-config`. The timers run at `[dnsbl]`'s shortest intervals.

use crate::support::fixture;

use std::time::Duration;

use fixture::dns_server::DEFAULT_ZONES;
use fixture::{DNS_ADDR, Fixture, Spec, UNLISTED_RCPT as RCPT};

const ZONES: &[(&str, &str)] = &[
    DEFAULT_ZONES[0],
    ("lists.", include_str!("zones/dnsbl-health.test.zone")),
];

/// The config, with [`DNS_ADDR`] for the server; `site` goes in `[site]`.
fn config(stages: &str, site: &str, extra: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"300ms\"\nattempts = 1\nmin_ttl = \"0s\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [site]\ndomains = [\"example.com\"]\n{site}\n{extra}\n[profile.test]\n{stages}\n"
    )
}

async fn setup(stages: &str, extra: &str) -> Fixture {
    start(&config(stages, "", extra)).await
}

async fn start(config: &str) -> Fixture {
    Fixture::start(Spec {
        zones: ZONES,
        config,
        files: &[],
        base: RCPT,
    })
    .await
}

fn client(addr: &str) -> Vec<(&str, &str)> {
    vec![("client_address", addr)]
}

fn blocked(ip: &str, list: &str) -> String {
    format!("554 5.7.1 Service unavailable; Client host [{ip}] blocked using {list}")
}

/// The metrics lines of `name` as `labels value`, from GET /metrics.
fn metric(s: &Fixture, name: &str) -> Vec<String> {
    s.daemon
        .metrics()
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .collect()
}

/// A list that lists 127.0.0.1 is switched off at the first probe; one
/// whose 127.0.0.2 test entry is missing after three probes; one whose
/// probes fail (SERVFAIL) is off after three and back on at the first
/// good probe. While off, its rules pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_switch_lists_off_and_on() {
    let s = setup(
        "client = [\"reject_rbl_client world.lists\", \"reject_rbl_client notest.lists\", \
         \"reject_rbl_client flaky.lists\", \"reject_rbl_client good.lists\"]",
        "[dnsbl]\nprobe_interval = \"1s\"",
    )
    .await;
    s.dns.inject_servfail("2.0.0.127.flaky.lists");
    s.daemon.wait_for_log(
        "DNS list world.lists switched off: it lists the world (1.0.0.127.world.lists answered 127.0.0.2)",
        0,
    );
    s.daemon.wait_for_log(
        "DNS list notest.lists switched off: 3 probes failed in a row (last: the test entry 2.0.0.127.notest.lists is not listed)",
        0,
    );
    s.daemon.wait_for_log(
        "DNS list flaky.lists switched off: 3 probes failed in a row (last: lookup failed (SERVFAIL))",
        0,
    );
    s.check(&[
        (
            "world.lists is off: no reject",
            client("203.0.113.50"),
            "DUNNO".into(),
        ),
        ("notest.lists is off", client("203.0.113.6"), "DUNNO".into()),
        (
            "flaky.lists is off",
            client("203.0.113.5"),
            format!(
                "{}; Listed for the test",
                blocked("203.0.113.5", "good.lists")
            ),
        ),
    ]);
    assert_eq!(
        metric(&s, "rpol_dnsbl_disabled"),
        [
            "{site=\"flaky.lists\"} 1",
            "{site=\"good.lists\"} 0",
            "{site=\"notest.lists\"} 1",
            "{site=\"world.lists\"} 1",
        ]
    );
    // The skipped lookups count as failures.
    let failed = metric(&s, "rpol_dnsbl_lookups_total");
    assert!(
        failed.contains(&"{site=\"world.lists\",answer=\"failed\"} 3".to_string()),
        "{failed:?}"
    );
    // flaky.lists recovers: the next probe switches it back on.
    let from = s.daemon.stderr().len();
    s.dns.clear_faults();
    s.daemon
        .wait_for_log("DNS list flaky.lists is back on", from);
    assert_eq!(
        s.ask(&client("203.0.113.5")),
        blocked("203.0.113.5", "flaky.lists")
    );
    assert!(metric(&s, "rpol_dnsbl_disabled").contains(&"{site=\"flaky.lists\"} 0".to_string()));
}

/// Five lookups that time out in a row open the breaker: the list is
/// skipped (no query, no reject) for `timeout_pause`; after it the first
/// answer closes the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_skips_a_list_that_times_out() {
    let s = setup(
        "client = [\"reject_rbl_client slow.lists\"]",
        "[dnsbl]\nprobe = false\ntimeout_pause = \"2s\"",
    )
    .await;
    s.dns.inject_silence("slow.lists");
    for i in 1..=5 {
        let ip = format!("203.0.113.{}", 100 + i);
        assert_eq!(s.ask(&client(&ip)), "DUNNO", "timeout {i}");
    }
    s.daemon.wait_for_log(
        "DNS list slow.lists: 5 lookups timed out in a row: skipped for 2s",
        0,
    );
    // Skipped: no query, no reject.
    assert_eq!(s.ask(&client("203.0.113.5")), "DUNNO");
    assert_eq!(s.dns.queries_for("5.113.0.203.slow.lists"), 0);
    let lookups = metric(&s, "rpol_dnsbl_lookups_total");
    assert!(
        lookups.contains(&"{site=\"slow.lists\",answer=\"failed\"} 6".to_string()),
        "{lookups:?}"
    );
    // After the pause, the first answer closes it.
    s.dns.clear_faults();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        s.ask(&client("203.0.113.5")),
        blocked("203.0.113.5", "slow.lists")
    );
    s.daemon
        .wait_for_log("DNS list slow.lists answers again", 0);

    // The trace says a skipped lookup failed (in-process: its own state).
    s.dns.inject_silence("slow.lists");
    for i in 1..=5 {
        let ip = format!("203.0.113.{}", 110 + i);
        let trace = s.trace(&client(&ip)).await;
        assert!(trace.contains("lookup failed (timeout)"), "{trace}");
    }
    let trace = s.trace(&client("203.0.113.120")).await;
    assert!(
        trace.contains(
            "120.113.0.203.slow.lists: lookup failed (skipped: slow.lists timed out 5 times in a row)"
        ),
        "{trace}"
    );
}

const EGRESS: &str = "egress = [\"203.0.113.5\", \"203.0.113.50\"]\n\
                      myhostname = \"mail.listed.example\"\n";

const EGRESS_STAGES: &str = "client = [\"reject_rbl_client good.lists\", \
     \"reject_rbl_client clean.lists\", \"reject_rbl_client world.lists\", \
     \"permit_dnswl_client flaky.lists\"]\nhelo = [\"reject_rhsbl_helo dbl.lists\"]";

/// Our egress address and HELO name on a list: a warning naming the list
/// and its TXT, and `rpol_egress_listed` per blocklist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_watch_finds_our_address_on_a_list() {
    let text = config(EGRESS_STAGES, EGRESS, "[dnsbl]\nwatch_interval = \"1s\"");
    let s = start(&text).await;
    s.daemon.wait_for_log(
        "our egress: 203.0.113.5 is listed by good.lists (127.0.0.2): Listed for the test",
        0,
    );
    s.daemon.wait_for_log(
        "our egress: mail.listed.example is listed by dbl.lists (127.0.1.2): listed HELO name",
        0,
    );
    let stderr = s.daemon.stderr();
    assert!(!stderr.contains("203.0.113.50 is listed"), "{stderr}");
    assert!(!stderr.contains("listed by clean.lists"), "{stderr}");
    // world.lists is off (it lists the world): it is not asked.
    assert!(!stderr.contains("listed by world.lists"), "{stderr}");
    // An allowlist is no blocklist.
    assert!(!stderr.contains("listed by flaky.lists"), "{stderr}");
    assert_eq!(
        metric(&s, "rpol_egress_listed"),
        [
            "{site=\"clean.lists\"} 0",
            "{site=\"dbl.lists\"} 1",
            "{site=\"good.lists\"} 1",
        ]
    );

    // --check-config looks once and says so.
    let setup = fixture::daemon::Setup::new(&text.replace(DNS_ADDR, &s.dns.addr.to_string()));
    let out = setup
        .command()
        .arg("--check-config")
        .output()
        .expect("run --check-config");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = setup.config.display().to_string();
    let want = format!(
        "{path}: egress watch:\n\
         \x20 203.0.113.5 is not listed by clean.lists\n\
         \x20 203.0.113.50 is not listed by clean.lists\n\
         \x20 mail.listed.example is listed by dbl.lists (127.0.1.2): listed HELO name\n\
         \x20 203.0.113.5 is listed by good.lists (127.0.0.2): Listed for the test\n\
         \x20 203.0.113.50 is not listed by good.lists\n\
         \x20 203.0.113.5 could not be looked up in world.lists: the list is switched off\n\
         \x20 203.0.113.50 could not be looked up in world.lists: the list is switched off\n\
         {path}: ok\n"
    );
    assert_eq!(stdout, want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{path}: warning: our egress 203.0.113.5 is listed by good.lists (127.0.0.2): Listed for the test"
        )),
        "{stderr}"
    );
}
