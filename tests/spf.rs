//! check_spf against a real DNS server on loopback serving
//! tests/zones/spftest.zone: results, replies (RFC 7372 codes), the header,
//! one evaluation per transaction, the result cache, and the skips. Every
//! answer comes from the rpol binary over its unix socket; the traces are
//! read in-process.

#[path = "support/rpol.rs"]
mod daemon;
#[path = "support/dns.rs"]
mod dns_server;

use dns_server::{DEFAULT_ZONES, TestDns};
use rpol::config;
use rpol::policy::{Policy, evaluate};
use rpol::protocol::Request;
use rpol::state::State;

struct Setup {
    dns: TestDns,
    /// The same configuration loaded in-process, for traces, with its
    /// own runtime state.
    policy: Policy,
    state: State,
    daemon: daemon::Rpol,
}

async fn setup(spf: &str) -> Setup {
    let mut zones = DEFAULT_ZONES.to_vec();
    zones.push(("spftest.", include_str!("zones/spftest.zone")));
    let dns = TestDns::start(&zones).await;
    dns.inject_servfail("servfail.spftest");
    let text = format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [spf]\nreceiver = \"mx.example.com\"\nwhitelist = \"spf_whitelist\"\n{spf}\n\
         [profile.mx]\nrecipient = [\"check_recipient_access hash:recipients\", \"check_spf\"]\n",
        dns.addr
    );
    let setup = daemon::Setup::new(&text)
        .file("spf_whitelist", "198.51.100.77\nhelo:mx.friend.example\n")
        .file(
            "recipients",
            "busy@example.com DEFER_IF_PERMIT 4.2.1 try later\n",
        );
    let policy = config::load(&setup.config)
        .unwrap_or_else(|e| panic!("{e}"))
        .policy;
    Setup {
        dns,
        state: rpol::server::runtime_state(&policy).expect("runtime state"),
        policy,
        daemon: setup.start(),
    }
}

/// A typical RCPT request with `pairs` replacing or adding attributes.
fn pairs<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![
        ("protocol_state", "RCPT"),
        ("client_address", "203.0.113.10"),
        ("helo_name", "mail.good.example"),
        ("sender", "someone@pass.spftest"),
        ("recipient", "alice@example.com"),
        ("instance", ""),
    ];
    for &(k, v) in pairs {
        all.retain(|(name, _)| *name != k);
        all.push((k, v));
    }
    all
}

fn request(attrs: &[(&str, &str)]) -> Request {
    Request::from_pairs(pairs(attrs))
}

/// The action rpol's server answers, over its socket.
async fn ask(s: &Setup, attrs: &[(&str, &str)]) -> String {
    daemon::ask_action(&mut s.daemon.connect(), &pairs(attrs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_prepends_received_spf() {
    let s = setup("").await;
    assert_eq!(
        ask(&s, &[]).await,
        "PREPEND Received-SPF: pass (mx.example.com: domain of someone@pass.spftest designates \
         203.0.113.10 as permitted sender) client-ip=203.0.113.10; envelope-from=\"someone@pass.spftest\"; \
         helo=mail.good.example; receiver=mx.example.com; identity=mailfrom; mechanism=\"ip4:203.0.113.0/24\";"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_replies() {
    let s = setup("").await;
    let from =
        |ip: &'static str, sender: &'static str| [("client_address", ip), ("sender", sender)];
    assert_eq!(
        ask(&s, &from("198.51.100.9", "a@pass.spftest")).await,
        "550 5.7.23 SPF fail: domain of a@pass.spftest does not designate 198.51.100.9 as permitted sender"
    );
    // The domain's explanation (exp=, macros expanded) is part of the reply.
    assert_eq!(
        ask(&s, &from("198.51.100.9", "a@explained.spftest")).await,
        "550 5.7.23 SPF fail: domain of a@explained.spftest does not designate 198.51.100.9 as permitted sender: \
         198.51.100.9 is not one of explained.spftest's mail servers"
    );
    assert!(
        ask(&s, &from("198.51.100.9", "a@soft.spftest"))
            .await
            .starts_with("PREPEND Received-SPF: softfail "),
    );
    assert!(
        ask(&s, &from("198.51.100.9", "a@neutral.spftest"))
            .await
            .starts_with("PREPEND Received-SPF: neutral "),
    );
    assert!(
        ask(&s, &from("198.51.100.9", "a@nospf.spftest"))
            .await
            .starts_with("PREPEND Received-SPF: none "),
    );
    let permerror = ask(&s, &from("198.51.100.9", "a@broken.spftest")).await;
    assert!(
        permerror.starts_with("PREPEND Received-SPF: permerror "),
        "{permerror}"
    );
    assert!(permerror.contains("problem="), "{permerror}");
    // temperror is defer_if_permit by default: a later reject still wins.
    assert_eq!(
        ask(&s, &from("198.51.100.9", "a@tempfail.spftest")).await,
        "DEFER_IF_PERMIT 4.7.24 SPF temporary error for domain of a@tempfail.spftest: DNS lookup failed; try again later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_actions() {
    let s = setup(
        "[spf.mail_from]\nsoftfail = \"reject\"\npermerror = \"reject\"\ntemperror = \"defer\"",
    )
    .await;
    let from = |sender: &'static str| [("client_address", "198.51.100.9"), ("sender", sender)];
    assert_eq!(
        ask(&s, &from("a@soft.spftest")).await,
        "550 5.7.23 SPF softfail: domain of a@soft.spftest does not designate 198.51.100.9 as permitted sender"
    );
    assert!(
        ask(&s, &from("a@broken.spftest"))
            .await
            .starts_with("550 5.7.24 SPF permanent error for domain of a@broken.spftest: ")
    );
    assert_eq!(
        ask(&s, &from("a@tempfail.spftest")).await,
        "451 4.7.24 SPF temporary error for domain of a@tempfail.spftest: DNS lookup failed; try again later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_identity() {
    let s = setup("").await;
    // The HELO name's own policy fails: rejected even with a passing sender.
    assert_eq!(
        ask(
            &s,
            &[
                ("client_address", "198.51.100.9"),
                ("helo_name", "helo-fail.spftest"),
                ("sender", "a@nospf.spftest")
            ]
        )
        .await,
        "550 5.7.23 SPF fail: HELO helo-fail.spftest does not designate 198.51.100.9 as permitted sender"
    );
    // The null sender is judged by the HELO identity (RFC 7208 2.4).
    let null = ask(&s, &[("helo_name", "helo-pass.spftest"), ("sender", "")]).await;
    assert!(null.starts_with("PREPEND Received-SPF: pass (mx.example.com: domain of helo-pass.spftest designates 203.0.113.10"), "{null}");
    assert!(null.contains("identity=helo"), "{null}");
    // With check_helo = false the HELO fail alone does not reject.
    let s = setup("check_helo = false").await;
    let a = ask(
        &s,
        &[
            ("client_address", "203.0.113.10"),
            ("helo_name", "helo-fail.spftest"),
        ],
    )
    .await;
    assert!(a.starts_with("PREPEND Received-SPF: pass "), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_evaluation_and_one_header_per_transaction() {
    let s = setup("").await;
    let first = ask(
        &s,
        &[("instance", "abc.1"), ("recipient", "alice@example.com")],
    )
    .await;
    assert!(first.starts_with("PREPEND Received-SPF: pass "), "{first}");
    let queries = s.dns.query_count();
    assert_eq!(
        ask(
            &s,
            &[("instance", "abc.1"), ("recipient", "bob@example.com")]
        )
        .await,
        "DUNNO"
    );
    assert_eq!(s.dns.query_count(), queries);
    // A failing transaction rejects every recipient the same way.
    let fail = [("instance", "abc.2"), ("client_address", "198.51.100.9")];
    let a = ask(&s, &fail).await;
    assert!(a.starts_with("550 5.7.23 "), "{a}");
    assert_eq!(ask(&s, &fail).await, a);
    // A new transaction with the same client, sender and HELO: the cached
    // result, no query, and its own header.
    let again = ask(&s, &[("instance", "abc.3")]).await;
    assert_eq!(again, first);
    assert_eq!(s.dns.query_count(), queries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_part_macros_are_cached_per_address() {
    let s = setup("").await;
    let alice = ask(
        &s,
        &[
            ("client_address", "198.51.100.9"),
            ("sender", "alice@local.spftest"),
        ],
    )
    .await;
    assert!(alice.starts_with("PREPEND Received-SPF: pass "), "{alice}");
    let bob = ask(
        &s,
        &[
            ("client_address", "198.51.100.9"),
            ("sender", "bob@local.spftest"),
        ],
    )
    .await;
    assert!(bob.starts_with("550 5.7.23 "), "{bob}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skips() {
    let s = setup("").await;
    let before = s.dns.query_count();
    let fail_sender = ("sender", "a@pass.spftest");
    assert_eq!(
        ask(&s, &[("client_address", "127.0.0.1"), fail_sender]).await,
        "DUNNO"
    );
    assert_eq!(
        ask(
            &s,
            &[
                ("client_address", "198.51.100.9"),
                ("sasl_method", "PLAIN"),
                ("sasl_username", "alice"),
                fail_sender
            ]
        )
        .await,
        "DUNNO"
    );
    assert_eq!(
        ask(&s, &[("client_address", "198.51.100.77"), fail_sender]).await,
        "DUNNO"
    );
    assert_eq!(s.dns.query_count(), before, "skipped checks make no query");
    // A whitelisted HELO name that does not resolve to the client is a
    // claim, not a fact: SPF is checked (tests/identity.rs has the rest).
    let claimed = ask(
        &s,
        &[
            ("client_address", "198.51.100.9"),
            ("helo_name", "mx.friend.example"),
            fail_sender,
        ],
    )
    .await;
    assert!(claimed.starts_with("550 5.7.23 "), "{claimed}");
    // Each skip is shown in the trace.
    let d = evaluate(
        &s.policy,
        &s.state,
        &request(&[("client_address", "127.0.0.1")]),
        true,
    )
    .await;
    assert!(
        d.trace
            .join("\n")
            .contains("skipped: 127.0.0.1 is in mynetworks"),
        "{:?}",
        d.trace
    );
    // And can be switched off.
    let s = setup("skip_mynetworks = false").await;
    assert!(
        ask(&s, &[("client_address", "127.0.0.1"), fail_sender])
            .await
            .starts_with("550 5.7.23 ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_result_mechanism_lookups_and_header() {
    let s = setup("").await;
    let d = evaluate(&s.policy, &s.state, &request(&[]), true).await;
    let trace = d.trace.join("\n");
    assert!(
        trace.contains("SPF mailfrom someone@pass.spftest: pass, matched ip4:203.0.113.0/24"),
        "{trace}"
    );
    assert!(
        trace.contains("DNS TXT pass.spftest: \"v=spf1 ip4:203.0.113.0/24 -all\" (queried)"),
        "{trace}"
    );
    assert!(trace.contains("header: Received-SPF: pass "), "{trace}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_results_header() {
    let s = setup("header = \"authentication-results\"\nauthserv_id = \"mx.example.com\"").await;
    assert_eq!(
        ask(&s, &[]).await,
        "PREPEND Authentication-Results: mx.example.com; spf=pass (mx.example.com: domain of someone@pass.spftest \
         designates 203.0.113.10 as permitted sender) smtp.mailfrom=someone@pass.spftest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_header_at_end_of_message() {
    let s = setup("").await;
    assert_eq!(
        ask(&s, &[("protocol_state", "END-OF-MESSAGE")]).await,
        "DUNNO"
    );
    let fail = ask(
        &s,
        &[
            ("protocol_state", "END-OF-MESSAGE"),
            ("client_address", "198.51.100.9"),
        ],
    )
    .await;
    assert!(fail.starts_with("550 5.7.23 "), "{fail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_a_deferral_displaced_goes_out_with_the_next_recipient() {
    let s = setup("").await;
    // RCPT 1 is deferred: the response carries DEFER_IF_PERMIT, not the header.
    assert_eq!(
        ask(
            &s,
            &[("instance", "t.1"), ("recipient", "busy@example.com")]
        )
        .await,
        "DEFER_IF_PERMIT 4.2.1 try later"
    );
    // RCPT 2 is accepted and carries the header; RCPT 3 does not repeat it.
    let second = ask(
        &s,
        &[("instance", "t.1"), ("recipient", "alice@example.com")],
    )
    .await;
    assert!(
        second.starts_with("PREPEND Received-SPF: pass "),
        "{second}"
    );
    assert_eq!(
        ask(&s, &[("instance", "t.1"), ("recipient", "bob@example.com")]).await,
        "DUNNO"
    );
}
