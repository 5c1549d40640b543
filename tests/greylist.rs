//! check_greylist over the daemon's socket, with the loopback DNS server
//! (tests/zones) and real stores: a redb file, and a throw-away
//! redis-server shared by two rpol processes. The store keeps wall-clock
//! seconds, so the tests wait for a `delay` of 1-2 s.

use crate::support::fixture;
use crate::support::redis as redis_server;

use std::time::Duration;

use fixture::dns_server::DEFAULT_ZONES;
use fixture::{DNS_ADDR, Fixture, Spec, daemon};

/// A RCPT request from 198.51.100.9 (no PTR in the test zones).
const RCPT: &[(&str, &str)] = &[
    ("protocol_state", "RCPT"),
    ("client_address", "198.51.100.9"),
    ("client_name", "unknown"),
    ("helo_name", "mail.sender.example"),
    ("sender", "someone@sender.example"),
    ("recipient", "alice@example.com"),
    ("instance", ""),
];

const DEFER_2: &str = "DEFER_IF_PERMIT 4.7.1 Greylisted, see RFC 6647: try again in 2 seconds";

/// The daemon serving check_greylist with `greylist` appended to
/// `[greylist]` and `store` as `[store]` (default: a redb file beside the
/// config).
async fn setup(greylist: &str, store: &str, files: &[(&str, &str)]) -> Fixture {
    let store = if store.is_empty() {
        "path = \"greylist.redb\"\n"
    } else {
        store
    };
    let config = format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [store]\n{store}\n\
         [greylist]\ndelay = \"2s\"\n{greylist}\n\
         [profile.mx]\nrecipient = [\"check_greylist\"]\n"
    );
    Fixture::start(Spec {
        zones: DEFAULT_ZONES,
        config: &config,
        files,
        base: RCPT,
    })
    .await
}

/// What a row shows, the attributes that differ, the action.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

fn wait_delay() {
    std::thread::sleep(Duration::from_millis(2_100));
}

/// Asserts the PREPEND of a first pass after the 2 s delay (a busy
/// machine may take a few seconds more), with its date in HTTP form.
fn assert_passed(action: &str, what: &str) {
    let tail = format!(
        " seconds by rpol-{} at {}; ",
        env!("CARGO_PKG_VERSION"),
        rpol::spf::hostname()
    );
    let delayed = action
        .strip_prefix("PREPEND X-Greylist: delayed ")
        .and_then(|rest| rest.split_once(&tail))
        .and_then(|(n, date)| Some((n.parse::<u64>().ok()?, date)));
    match delayed {
        Some((n, date)) if (2..=6).contains(&n) && date.ends_with(" GMT") => {}
        _ => panic!("{what}: {action}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_seen_early_retry_and_the_retry_after_the_delay() {
    let f = setup("", "", &[]).await;
    assert_eq!(f.ask(&[]), DEFER_2, "first seen");
    let early = f.ask(&[]);
    assert!(
        early == DEFER_2 || early == DEFER_2.replace("2 seconds", "1 seconds"),
        "early retry: {early}"
    );
    wait_delay();
    assert_passed(&f.ask(&[]), "retry after the delay");
    // Passed before: nothing more, no second header.
    assert_eq!(f.ask(&[]), "DUNNO");
    // Another recipient is another triplet.
    assert_eq!(f.ask(&[("recipient", "bob@example.com")]), DEFER_2);
    // The reply's %r and DSN as written.
    let g = setup(
        "action = \"DEFER_IF_PERMIT 4.2.0 Greylisted for %r, %s s\"\nheader = \"\"\n",
        "",
        &[],
    )
    .await;
    assert_eq!(
        g.ask(&[]),
        "DEFER_IF_PERMIT 4.2.0 Greylisted for example.com, 2 s"
    );
    wait_delay();
    assert_eq!(g.ask(&[]), "DUNNO", "header = \"\": no header");
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_are_looked_up_by_subnet() {
    let f = setup("ipv6_prefix = 64\n", "", &[]).await;
    for client in ["198.51.100.9", "2001:db8:0:1::5"] {
        assert_eq!(f.ask(&[("client_address", client)]), DEFER_2, "{client}");
    }
    wait_delay();
    // Same /24, same /64: the same triplet.
    assert_passed(&f.ask(&[("client_address", "198.51.100.200")]), "same /24");
    assert_passed(
        &f.ask(&[("client_address", "2001:db8:0:1::ffff")]),
        "same /64",
    );
    // Another /24, another /64: new triplets.
    assert_eq!(f.ask(&[("client_address", "198.51.101.9")]), DEFER_2);
    assert_eq!(f.ask(&[("client_address", "2001:db8:0:2::5")]), DEFER_2);
}

#[tokio::test(flavor = "multi_thread")]
async fn senders_are_normalised_as_postgrey_does() {
    let f = setup("", "", &[]).await;
    let firsts = [
        "bounce-1234-77@lists.sender.example",
        "user+one@sender.example",
        "prvs=0123456789=user2@sender.example",
        "SRS0=HhHh=T1=origin.example=user@fwd.example",
    ];
    let retries = [
        "bounce-5678-78@lists.sender.example",
        "user+two@sender.example",
        "prvs=9876543210=user2@sender.example",
        "SRS0=XxXx=T9=origin.example=user@fwd.example",
    ];
    for s in firsts {
        assert_eq!(f.ask(&[("sender", s)]), DEFER_2, "{s}");
    }
    wait_delay();
    for s in retries {
        assert_passed(&f.ask(&[("sender", s)]), s);
    }
    // Text moved between the parts of a triplet is another triplet.
    assert_eq!(
        f.ask(&[
            ("sender", "user"),
            ("recipient", "one@sender.example/alice@example.com")
        ]),
        DEFER_2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_passed_often_enough_are_auto_whitelisted() {
    let f = setup("auto_whitelist_clients = 1\n", "", &[]).await;
    let g = setup("auto_whitelist_clients = 2\n", "", &[]).await;
    for fx in [&f, &g] {
        for s in ["a@sender.example", "b@sender.example"] {
            assert_eq!(fx.ask(&[("sender", s)]), DEFER_2);
        }
    }
    wait_delay();
    for fx in [&f, &g] {
        assert_passed(&fx.ask(&[("sender", "a@sender.example")]), "a");
    }
    // One pass is enough for f: its next new triplet skips greylisting.
    assert_eq!(f.ask(&[("sender", "c@sender.example")]), "DUNNO");
    // g counts a client's passes once an hour: b's pass does not count.
    assert_passed(&g.ask(&[("sender", "b@sender.example")]), "b");
    assert_eq!(g.ask(&[("sender", "c@sender.example")]), DEFER_2);
    // 0 turns it off.
    let h = setup("auto_whitelist_clients = 0\n", "", &[]).await;
    assert_eq!(h.ask(&[]), DEFER_2);
    wait_delay();
    assert_passed(&h.ask(&[]), "h");
    assert_eq!(h.ask(&[("sender", "c@sender.example")]), DEFER_2);
}

#[tokio::test(flavor = "multi_thread")]
async fn whitelists_and_what_a_client_cannot_claim() {
    let f = setup(
        "whitelist_clients = [\"clients\"]\nwhitelist_recipients = [\"recipients\"]\n",
        "",
        &[
            (
                "clients",
                "# postgrey's format\ngood.example\nmismatch.example\n/^evil/\n198.51.100.64/26\n2001:db8:5::/48\n",
            ),
            ("recipients", "postmaster@\nabuse@example.com\n"),
        ],
    )
    .await;
    let cases: &[Case] = &[
        (
            "PTR mail.good.example, forward-confirmed, under good.example",
            vec![("client_address", "203.0.113.10")],
            "DUNNO",
        ),
        (
            "a whitelisted network",
            vec![("client_address", "198.51.100.70")],
            "DUNNO",
        ),
        (
            "a whitelisted IPv6 network",
            vec![("client_address", "2001:db8:5::1")],
            "DUNNO",
        ),
        (
            "PTR mismatch.example does not resolve back",
            vec![("client_address", "203.0.113.11")],
            DEFER_2,
        ),
        (
            "a claimed client_name and HELO buy nothing",
            vec![
                ("client_name", "mail.good.example"),
                ("helo_name", "mail.good.example"),
            ],
            DEFER_2,
        ),
        (
            "a claimed reverse name buys nothing",
            // A triplet of its own: a retry of the case above would be
            // told the time left, which depends on how fast DNS was.
            vec![
                ("reverse_client_name", "evil.example"),
                ("sender", "reverse@sender.example"),
            ],
            DEFER_2,
        ),
        (
            "postmaster@ in any domain",
            vec![("recipient", "postmaster+x@example.com")],
            "DUNNO",
        ),
        (
            "abuse@example.com",
            vec![("recipient", "abuse@example.com")],
            "DUNNO",
        ),
        (
            "abuse@ elsewhere",
            vec![("recipient", "abuse@example.net")],
            DEFER_2,
        ),
    ];
    for (what, attrs, want) in cases {
        assert_eq!(f.ask(attrs), *want, "{what}");
    }
    let trace = f.trace(&[("client_address", "203.0.113.10")]).await;
    assert!(
        trace.contains(
            "not greylisted: client name mail.good.example (forward-confirmed) in whitelist_clients"
        ),
        "{trace}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mynetworks_authenticated_spf_pass_and_fcrdns_match_skip() {
    let plain = setup("", "", &[]).await;
    assert_eq!(plain.ask(&[("client_address", "127.0.0.1")]), "DUNNO");
    assert_eq!(
        plain.ask(&[("sasl_method", "plain"), ("sasl_username", "u")]),
        "DUNNO"
    );
    let trace = plain
        .trace(&[("sasl_method", "plain"), ("sasl_username", "u")])
        .await;
    assert!(
        trace.contains("not greylisted: authenticated as \"u\""),
        "{trace}"
    );
    // good.example's SPF lists 203.0.113.0/24; .50 has no PTR.
    let spf = [
        ("client_address", "203.0.113.50"),
        ("sender", "x@good.example"),
    ];
    assert_eq!(plain.ask(&spf), DEFER_2, "switches are off by default");
    let s = setup("skip_spf_pass = true\n", "", &[]).await;
    assert_eq!(s.ask(&spf), "DUNNO");
    let trace = s.trace(&spf).await;
    assert!(
        trace.contains("not greylisted: SPF pass for x@good.example from 203.0.113.50"),
        "{trace}"
    );
    assert_eq!(s.ask(&[("sender", "x@good.example")]), DEFER_2, "SPF fail");
    // 203.0.113.10 is mail.good.example, forward-confirmed.
    let fcrdns = [
        ("client_address", "203.0.113.10"),
        ("sender", "x@good.example"),
    ];
    let n = setup("skip_fcrdns_match = true\n", "", &[]).await;
    assert_eq!(n.ask(&fcrdns), "DUNNO");
    let trace = n.trace(&fcrdns).await;
    assert!(
        trace.contains("is under the sender domain good.example"),
        "{trace}"
    );
    assert_eq!(
        n.ask(&[
            ("client_address", "203.0.113.10"),
            ("sender", "x@other.example")
        ]),
        DEFER_2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_the_state() {
    let mut f = setup("", "", &[]).await;
    assert_eq!(f.ask(&[]), DEFER_2);
    f.daemon.signal(libc::SIGTERM);
    assert!(f.daemon.wait_exit().success());
    wait_delay();
    // A new process on the same file (the first one's directory stays).
    let file = f.daemon.setup.path("greylist.redb");
    let text = std::fs::read_to_string(&f.daemon.setup.config)
        .unwrap()
        .replace(
            "\"greylist.redb\"",
            &format!("{:?}", file.display().to_string()),
        );
    let again = daemon::Setup::new(&text).start();
    assert_passed(
        &daemon::ask_action(&mut again.connect(), &f.pairs(&[])),
        "after the restart",
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server"]
async fn two_rpol_processes_share_one_redis() {
    let redis = redis_server::start();
    let store = format!(
        "backend = \"redis\"\nurl = \"{}\"\nprefix = \"mx:\"\n",
        redis.url
    );
    let mx1 = setup("", &store, &[]).await;
    let mx2 = setup("", &store, &[]).await;
    assert_eq!(mx1.ask(&[]), DEFER_2, "mx1 sees it first");
    let early = mx2.ask(&[]);
    assert!(early.starts_with("DEFER_IF_PERMIT"), "mx2, early: {early}");
    wait_delay();
    assert_passed(&mx2.ask(&[]), "mx2 after the delay");
    assert_eq!(mx1.ask(&[]), "DUNNO", "mx1 knows it passed");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server"]
async fn redis_down_follows_on_store_error() {
    let port = redis_server::free_port();
    let store =
        format!("backend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/\"\ntimeout = \"500ms\"\n");
    let dunno = setup("", &store, &[]).await;
    assert_eq!(dunno.ask(&[]), "DUNNO");
    dunno
        .daemon
        .wait_for_log("store (redis): greylist failed", 0);
    let defer = setup("on_store_error = \"defer\"\n", &store, &[]).await;
    assert_eq!(
        defer.ask(&[]),
        "DEFER_IF_PERMIT 4.3.0 Greylisting temporarily unavailable, try again later"
    );
    // Redis comes up: greylisting works without a restart.
    // Stopped when dropped (a bare Child would outlive the test).
    let _redis = redis_server::start_on(port);
    let mut got = String::new();
    for _ in 0..40 {
        got = defer.ask(&[("sender", "new@sender.example")]);
        if got == DEFER_2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(got, DEFER_2, "after Redis came up");
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_triplets_cost_what_small_ones_cost() {
    let huge = setup("", "", &[]).await;
    let small = setup("", "", &[]).await;
    let big = "x".repeat(3_000);
    let mut sizes = Vec::new();
    for (f, part) in [(&huge, big.as_str()), (&small, "x")] {
        let mut conn = f.daemon.connect();
        for n in 0..300 {
            let sender = format!("{part}{n}@sender.example");
            let rcpt = format!("{part}{n}@example.com");
            let pairs = f.pairs(&[("sender", &sender), ("recipient", &rcpt)]);
            assert_eq!(daemon::ask_action(&mut conn, &pairs), DEFER_2);
        }
        let file = f.daemon.setup.path("greylist.redb");
        sizes.push(std::fs::metadata(file).unwrap().len());
    }
    // Raw, the huge triplets alone would take 1.8 MB more.
    assert!(sizes[0] <= sizes[1] + 256 * 1024, "{sizes:?}");
}

/// A config serving check_greylist on port 25 and a login's budget of 3
/// messages an hour on port 587, over `store` (a `[store]` body).
fn flood_config(store: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [store]\n{store}\n\
         [greylist]\ndelay = \"2s\"\n\
         [[rate_limit]]\nname = \"per_login\"\nkey = \"sasl_username\"\nmessages = 3\nwindow = \"1h\"\n\
         [profile.submission]\nmatch = {{ server_port = 587 }}\n\
         sender = [\"check_rate_limit per_login\"]\n\
         [profile.mx]\nrecipient = [\"check_greylist\"]\n"
    )
}

/// One message of `login` on port 587: the RCPT's answer, and when it
/// passed, END-OF-MESSAGE's.
fn submit(f: &Fixture, login: &str, instance: &str) -> String {
    let sub = [
        ("server_port", "587"),
        ("sasl_method", "PLAIN"),
        ("sasl_username", login),
        ("sender", login),
        ("client_address", "198.51.100.25"),
        ("instance", instance),
    ];
    let rcpt = f.ask(&sub);
    if rcpt != "DUNNO" {
        return rcpt;
    }
    let mut eom = sub.to_vec();
    eom.extend([
        ("protocol_state", "END-OF-MESSAGE"),
        ("recipient", ""),
        ("recipient_count", "1"),
    ]);
    f.ask(&eom)
}

/// Issue 24 items 1: a flood of new triplets, from one network and from
/// many, fills the store's triplet budget. It must switch off neither
/// greylisting nor the rate limits: every flood triplet and a new
/// spammer's are deferred (never DUNNO), a triplet that passed before the
/// flood still passes, and a login's count survives and still refuses.
async fn a_flood_of_triplets_switches_no_defence_off(store: &str, flood: usize) {
    let f = Fixture::start(Spec {
        zones: DEFAULT_ZONES,
        config: &flood_config(store),
        files: &[],
        base: RCPT,
    })
    .await;
    let legit = [("sender", "friend@sender.example")];
    assert_eq!(f.ask(&legit), DEFER_2);
    assert_eq!(submit(&f, "alice@example.com", "a.1"), "DUNNO");
    assert_eq!(submit(&f, "alice@example.com", "a.2"), "DUNNO");
    wait_delay();
    assert_passed(&f.ask(&legit), "the legitimate retry");
    // New senders from one network, then one from each of as many networks.
    let mut conn = f.daemon.connect();
    let half = flood / 2;
    for n in 0..flood {
        let sender = format!("spam{n}@flood.example");
        let client = if n < half {
            format!("203.0.113.{}", n % 250 + 1)
        } else {
            let m = n - half;
            format!("198.{}.{}.{}", 18 + (m >> 16), m >> 8 & 255, m & 255)
        };
        let pairs = f.pairs(&[("sender", &sender), ("client_address", &client)]);
        let got = daemon::ask_action(&mut conn, &pairs);
        assert!(got.starts_with("DEFER_IF_PERMIT"), "flood #{n}: {got}");
    }
    // (a) A new spammer's triplet is greylisted.
    let spammer = [
        ("sender", "new@spammer.example"),
        ("client_address", "198.51.100.66"),
    ];
    assert_eq!(f.ask(&spammer), DEFER_2, "a new spammer's triplet");
    let from_flood = [
        ("sender", "one-more@flood.example"),
        ("client_address", "203.0.113.77"),
    ];
    assert!(f.ask(&from_flood).starts_with("DEFER_IF_PERMIT"));
    // (b) The triplet that passed before the flood still passes.
    assert_eq!(f.ask(&legit), "DUNNO", "the confirmed triplet");
    // (c) alice's count survived: one more message, then refused; a login
    // first seen after the flood is counted too.
    assert_eq!(submit(&f, "alice@example.com", "a.3"), "DUNNO");
    let refused = submit(&f, "alice@example.com", "a.4");
    assert!(
        refused.starts_with("450 4.7.1"),
        "alice's 4th: {refused}\n{}",
        f.daemon.stderr()
    );
    for n in 1..=3 {
        assert_eq!(submit(&f, "bob@example.com", &format!("b.{n}")), "DUNNO");
    }
    let refused = submit(&f, "bob@example.com", "b.4");
    assert!(refused.starts_with("450 4.7.1"), "bob's 4th: {refused}");
}

/// The flood tests' budgets, which the floods overflow.
const CAPS: &str = "max_triplets = 200\nmax_unconfirmed_per_network = 50\n\
                    max_clients = 50\nmax_rate_records = 50\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_triplets_fills_no_budget_but_its_own_embedded() {
    a_flood_of_triplets_switches_no_defence_off(&format!("path = \"greylist.redb\"\n{CAPS}"), 600)
        .await;
}

/// As rpol-policy.toml(5) recommends: `maxmemory` with `noeviction`, rpol's own caps
/// under it. The memory is small: the flood's triplets alone, uncapped,
/// would take more (6,000 records of over 200 bytes each, before their
/// indexes), so rpol's caps, not Redis's, must hold.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server"]
async fn a_flood_of_triplets_fills_no_budget_but_its_own_redis() {
    let redis = redis_server::start();
    let mut con = ::redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = ::redis::cmd("INFO").arg("memory").query(&mut con).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 1024 * 1024)
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query(&mut con)
        .unwrap();
    let store = format!("backend = \"redis\"\nurl = \"{}\"\n{CAPS}", redis.url);
    a_flood_of_triplets_switches_no_defence_off(&store, 6000).await;
}

/// Issue 24 item 11: skip_spf_pass ignores a record that authorises
/// everyone (+all, a /0 under ?all, a wildcard exists:) or a range wider
/// than a /8 (IPv6: /16); a record no wider still skips.
#[tokio::test(flavor = "multi_thread")]
async fn skip_spf_pass_ignores_records_that_pass_everyone() {
    const WIDE: &str = "$ORIGIN wide.test.\n$TTL 300\n\
        @ IN SOA ns.wide.test. hostmaster.wide.test. ( 1 3600 600 86400 60 )\n\
        @ IN NS ns.wide.test.\nns IN A 198.51.100.53\n\
        everyone IN TXT \"v=spf1 +all\"\n\
        zero IN TXT \"v=spf1 ip4:0.0.0.0/0 ?all\"\n\
        half IN TXT \"v=spf1 ip4:128.0.0.0/1 -all\"\n\
        wild IN TXT \"v=spf1 exists:%{i}.w.wide.test -all\"\n\
        *.w IN A 127.0.0.2\n\
        pick IN TXT \"v=spf1 exists:%{i}.p.wide.test -all\"\n\
        203.0.113.50.p IN A 127.0.0.2\n\
        eight IN TXT \"v=spf1 ip4:203.0.0.0/8 -all\"\n\
        six IN TXT \"v=spf1 ip6:2001:db8::/16 -all\"\n\
        sixwide IN TXT \"v=spf1 ip6:2000::/15 -all\"\n";
    let zones = [DEFAULT_ZONES, &[("wide.test.", WIDE)]].concat();
    let config = format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [store]\npath = \"greylist.redb\"\n\
         [greylist]\ndelay = \"2s\"\nskip_spf_pass = true\n\
         [profile.mx]\nrecipient = [\"check_greylist\"]\n"
    );
    let s = Fixture::start(Spec {
        zones: &zones,
        config: &config,
        files: &[],
        base: RCPT,
    })
    .await;
    for (client, sender, want) in [
        ("203.0.113.50", "x@everyone.wide.test", DEFER_2),
        ("203.0.113.50", "x@zero.wide.test", DEFER_2),
        ("203.0.113.50", "x@half.wide.test", DEFER_2),
        ("203.0.113.50", "x@wild.wide.test", DEFER_2),
        // Yes for this client alone: the sender's DNS decides per client.
        ("203.0.113.50", "x@pick.wide.test", DEFER_2),
        ("203.0.113.50", "x@eight.wide.test", "DUNNO"),
        ("2001:db8::50", "x@six.wide.test", "DUNNO"),
        ("2001:db8::50", "x@sixwide.wide.test", DEFER_2),
    ] {
        let attrs = [("client_address", client), ("sender", sender)];
        assert_eq!(s.ask(&attrs), want, "{sender} from {client}");
    }
    let trace = s
        .trace(&[
            ("client_address", "203.0.113.51"),
            ("sender", "x@everyone.wide.test"),
        ])
        .await;
    assert!(
        trace.contains(
            "SPF pass for x@everyone.wide.test ignored: its record also passes 202.0.113.51"
        ),
        "{trace}"
    );
}

/// Issue 25 item 5 (and 24's "the header moves to the next stage"): a
/// greylisted retry of a one-recipient message has two headers due at its
/// RCPT, Received-SPF and X-Greylist. One answer carries one; the other
/// goes out at DATA (Postfix asks there when --postfix-config says so),
/// and neither twice.
#[tokio::test(flavor = "multi_thread")]
async fn two_headers_for_one_recipient_go_out_at_rcpt_and_data() {
    let config = format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [spf]\nreceiver = \"mx.example.com\"\n\
         [store]\npath = \"greylist.redb\"\n\
         [greylist]\ndelay = \"2s\"\n\
         [profile.mx]\nrecipient = [\"check_spf\", \"check_greylist\"]\n"
    );
    let f = Fixture::start(Spec {
        zones: DEFAULT_ZONES,
        config: &config,
        files: &[],
        base: RCPT,
    })
    .await;
    let from = |instance: &'static str, state: &'static str| {
        vec![
            ("client_address", "203.0.113.50"),
            ("sender", "x@good.example"),
            ("instance", instance),
            ("protocol_state", state),
        ]
    };
    assert_eq!(f.ask(&from("g.1", "RCPT")), DEFER_2);
    wait_delay();
    let spf = f.ask(&from("g.2", "RCPT"));
    assert!(
        spf.starts_with("PREPEND Received-SPF: pass (mx.example.com: domain of x@good.example"),
        "{spf}"
    );
    assert_passed(&f.ask(&from("g.2", "DATA")), "X-Greylist at DATA");
    assert_eq!(f.ask(&from("g.2", "END-OF-MESSAGE")), "DUNNO");
    // The next message: the triplet is known, one header, nothing kept.
    assert_eq!(f.ask(&from("g.3", "RCPT")), spf);
    assert_eq!(f.ask(&from("g.3", "DATA")), "DUNNO");
}

/// Store review item 3: passed triplets fill `max_triplets`; a new
/// sender's triplet is still stored (the least recently seen passed one
/// makes room), so its retry after the delay passes instead of being
/// deferred for as long as the passed triplets live.
async fn passed_triplets_do_not_lock_out_new_senders_on(store: &str) {
    let f = setup("", &format!("{store}max_triplets = 3\n"), &[]).await;
    let senders = ["a@one.example", "b@two.example", "c@three.example"];
    for s in senders {
        assert_eq!(f.ask(&[("sender", s)]), DEFER_2, "{s}");
    }
    wait_delay();
    for s in senders {
        assert_passed(&f.ask(&[("sender", s)]), s);
    }
    let new = [("sender", "new@four.example")];
    assert_eq!(f.ask(&new), DEFER_2, "a new sender in a full store");
    wait_delay();
    assert_passed(&f.ask(&new), "the new sender's retry");
}

/// Store review items 8 and 9, over the daemon: a network at
/// `max_unconfirmed_per_network` evicts its own oldest unconfirmed
/// triplet. A neighbour's flood in a sender's /24 no longer keeps the
/// sender's triplet unstored (its retry passes), and the /64s of one IPv6
/// /48 share one budget (the first /64's triplet went).
async fn a_network_at_its_cap_churns_its_own_triplets_on(store: &str) {
    let f = setup(
        "",
        &format!("{store}max_unconfirmed_per_network = 2\n"),
        &[],
    )
    .await;
    let ask = |sender: &str, client: &str| f.ask(&[("sender", sender), ("client_address", client)]);
    assert_eq!(ask("x@flood.example", "198.51.100.10"), DEFER_2);
    assert_eq!(ask("y@flood.example", "198.51.100.11"), DEFER_2);
    assert_eq!(ask("real@sender.example", "198.51.100.9"), DEFER_2);
    for n in 1..=3 {
        let client = format!("2001:db8:1:{n}::9");
        assert_eq!(ask("v6@sender.example", &client), DEFER_2, "{client}");
    }
    wait_delay();
    assert_passed(
        &ask("real@sender.example", "198.51.100.9"),
        "the neighbour's sender",
    );
    let evicted = ask("v6@sender.example", "2001:db8:1:1::9");
    assert!(
        evicted.starts_with("DEFER_IF_PERMIT"),
        "the /48's oldest: {evicted}"
    );
    assert_passed(
        &ask("v6@sender.example", "2001:db8:1:3::9"),
        "the /48's newest",
    );
}

/// `case` with a redb file as its `[store]`.
async fn on_embedded(case: impl AsyncFn(&str)) {
    case("path = \"greylist.redb\"\n").await;
}

/// `case` with a throw-away redis-server as its `[store]`.
async fn on_redis(case: impl AsyncFn(&str)) {
    let redis = redis_server::start();
    case(&format!("backend = \"redis\"\nurl = \"{}\"\n", redis.url)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn passed_triplets_do_not_lock_out_new_senders() {
    on_embedded(passed_triplets_do_not_lock_out_new_senders_on).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server"]
async fn passed_triplets_do_not_lock_out_new_senders_redis() {
    on_redis(passed_triplets_do_not_lock_out_new_senders_on).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_at_its_cap_churns_its_own_triplets() {
    on_embedded(a_network_at_its_cap_churns_its_own_triplets_on).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server"]
async fn a_network_at_its_cap_churns_its_own_triplets_redis() {
    on_redis(a_network_at_its_cap_churns_its_own_triplets_on).await;
}

/// The DNS lists of the score (tests/zones/dnsbl.test.zone: sc1 weight 2,
/// sc2 weight 1, swl -3) beside the standard zones.
const SCORE_ZONES: &[(&str, &str)] = &[
    DEFAULT_ZONES[0],
    ("test.", include_str!("zones/dnsbl.test.zone")),
];

/// check_greylist with `[dnsbl] sites` and `greylist` in `[greylist]`.
async fn score_setup(greylist: &str) -> Fixture {
    let config = format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"300ms\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [store]\npath = \"greylist.redb\"\n\
         [dnsbl]\nsites = [\"sc1.test=127.0.0.[2..11]*2\", \"sc2.test\", \"swl.test=127.0.10.[0..255]*-3\"]\n\
         threshold = 3\nallowlist_threshold = -2\n\
         [greylist]\ndelay = \"2s\"\n{greylist}\n\
         [profile.mx]\nrecipient = [\"check_greylist\"]\n"
    );
    let f = Fixture::start(Spec {
        zones: SCORE_ZONES,
        config: &config,
        files: &[],
        base: RCPT,
    })
    .await;
    f.dns.inject_servfail("36.113.0.203.sc1.test");
    f.dns.inject_silence("37.113.0.203.sc1.test");
    f
}

/// A request from `ip`, to a recipient of its own (the clients share one
/// /24, so one triplet but for the recipient).
fn from(ip: &'static str) -> Vec<(&'static str, &'static str)> {
    let recipient = match ip {
        "203.0.113.31" => "r31@example.com",
        "203.0.113.32" => "r32@example.com",
        "203.0.113.33" => "r33@example.com",
        "203.0.113.36" => "r36@example.com",
        "203.0.113.37" => "r37@example.com",
        _ => "r50@example.com",
    };
    vec![("client_address", ip), ("recipient", recipient)]
}

/// An embedded store of the in-process policy's own (the daemon holds the
/// one its config names), for counting what the rule writes.
fn own_store(f: &Fixture, dir: &std::path::Path) -> std::sync::Arc<rpol::state::store::Store> {
    let settings = rpol::state::store::StoreSettings {
        backend: rpol::state::store::Backend::Embedded {
            path: dir.join("own.redb"),
        },
        ..Default::default()
    };
    let store = std::sync::Arc::new(rpol::state::store::Store::open(&settings).expect("store"));
    f.state.set_store(store.clone());
    store
}

/// `min_dnsbl_score`: only clients whose score reaches it are greylisted;
/// a list that fails never spares one; the store is not written for the
/// others; the trace says why.
#[tokio::test(flavor = "multi_thread")]
async fn min_dnsbl_score_greylists_only_the_suspicious() {
    let f = score_setup("min_dnsbl_score = 2\n").await;
    let rows: &[Case<'_>] = &[
        ("score 0 < 2: not greylisted", from("203.0.113.50"), "DUNNO"),
        ("score 2 >= 2: greylisted", from("203.0.113.31"), DEFER_2),
        (
            "score 1, but sc1 timed out (it could be 3): greylisted",
            from("203.0.113.37"),
            DEFER_2,
        ),
    ];
    for (what, attrs, want) in rows {
        assert_eq!(f.ask(attrs), *want, "{what}");
    }
    let trace = f.trace(&from("203.0.113.50")).await;
    assert!(
        trace.contains("not greylisted: min_dnsbl_score: DNS list score 0 < 2"),
        "{trace}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = own_store(&f, dir.path());
    f.decide(&from("203.0.113.50")).await;
    f.decide(&from("203.0.113.50")).await;
    assert_eq!(
        store.entries().await,
        Some(0),
        "no record for a client not greylisted"
    );
    let trace = f.trace(&from("203.0.113.31")).await;
    assert!(
        trace.contains("min_dnsbl_score: DNS list score 2 >= 2: greylisting applies"),
        "{trace}"
    );
    assert!(trace.contains("greylisted (new)"), "{trace}");
    assert!(store.entries().await.unwrap_or(0) > 0);
}

/// `skip_dnswl`: a client at or below the allowlist threshold is never
/// greylisted (unless an allowlisting rests on a list that failed); the
/// others are, as without it.
#[tokio::test(flavor = "multi_thread")]
async fn skip_dnswl_spares_allowlisted_clients() {
    let f = score_setup("skip_dnswl = true\n").await;
    let rows: &[Case<'_>] = &[
        (
            "score -3 <= -2: not greylisted",
            from("203.0.113.32"),
            "DUNNO",
        ),
        ("score -1: greylisted", from("203.0.113.33"), DEFER_2),
        (
            "score -3, but sc1 failed (it could be -1): greylisted",
            from("203.0.113.36"),
            DEFER_2,
        ),
        (
            "score 0: greylisted, as without skip_dnswl",
            from("203.0.113.50"),
            DEFER_2,
        ),
    ];
    for (what, attrs, want) in rows {
        assert_eq!(f.ask(attrs), *want, "{what}");
    }
    let trace = f.trace(&from("203.0.113.32")).await;
    assert!(
        trace.contains("not greylisted: skip_dnswl: DNS list score -3 <= allowlist_threshold -2"),
        "{trace}"
    );
    let trace = f.trace(&from("203.0.113.33")).await;
    assert!(
        trace.contains("skip_dnswl: DNS list score -1 is above allowlist_threshold -2"),
        "{trace}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = own_store(&f, dir.path());
    f.decide(&from("203.0.113.32")).await;
    assert_eq!(
        store.entries().await,
        Some(0),
        "no record for an allowlisted client"
    );
}
