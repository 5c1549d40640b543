//! check_spf against a real DNS server on loopback serving
//! tests/zones/spftest.zone: results, replies (RFC 7372 codes), the header,
//! one evaluation per transaction, the result cache, and the skips. Every
//! answer comes from the rpol binary over its unix socket; the traces are
//! read in-process.

use crate::support::fixture;

use std::time::Duration;

use fixture::dns_server::DEFAULT_ZONES;
use fixture::{Case, DNS_ADDR, Fixture, Spec};
use tokio::time::Instant;

/// A typical RCPT request from 203.0.113.10, which pass.spftest's record
/// lists; each question replaces or adds attributes.
const RCPT: &[(&str, &str)] = &[
    ("protocol_state", "RCPT"),
    ("client_address", "203.0.113.10"),
    ("helo_name", "mail.good.example"),
    ("sender", "someone@pass.spftest"),
    ("recipient", "alice@example.com"),
    ("instance", ""),
];

/// check_spf after an access table, with `spf` appended to `[spf]`
/// (keys, then any subtables); DNS is the default zones and spftest.zone,
/// with SERVFAIL for servfail.spftest.
async fn setup(spf: &str) -> Fixture {
    let s = start(
        "\"check_recipient_access hash:recipients\", \"check_spf\"",
        "",
        spf,
        &[(
            "recipients",
            "busy@example.com DEFER_IF_PERMIT 4.2.1 try later",
        )],
    )
    .await;
    s.dns.inject_servfail("servfail.spftest");
    s
}

/// rpol with `recipient` as the recipient stage (TOML array items), `site`
/// and `spf` appended to `[site]` and `[spf]`, and the table `files`.
async fn start(recipient: &str, site: &str, spf: &str, files: &[(&str, &str)]) -> Fixture {
    let zones = [
        DEFAULT_ZONES,
        &[("spftest.", include_str!("zones/spftest.zone"))],
    ]
    .concat();
    let config = format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n{site}\n\
         [spf]\nreceiver = \"mx.example.com\"\nwhitelist = \"spf_whitelist\"\n{spf}\n\
         [profile.mx]\nrecipient = [{recipient}]\n"
    );
    let lines: Vec<(&str, String)> = files
        .iter()
        .map(|(name, text)| (*name, format!("{text}\n")))
        .collect();
    let mut all = vec![("spf_whitelist", "198.51.100.77\nhelo:mx.friend.example\n")];
    all.extend(lines.iter().map(|(n, t)| (*n, t.as_str())));
    Fixture::start(Spec {
        zones: &zones,
        config: &config,
        files: &all,
        base: RCPT,
    })
    .await
}

/// The client and sender of a request.
fn from(ip: &'static str, sender: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![("client_address", ip), ("sender", sender)]
}

/// check_spf's reply to a MAIL FROM fail (rules/spf.rs `refuse`) without
/// an explanation.
fn fail(sender: &str, ip: &str) -> String {
    format!("550 5.7.23 SPF fail: domain of {sender} does not designate {ip} as permitted sender")
}

/// The whole Received-SPF PREPEND (spf/header.rs): `result (comment)`,
/// then the key-value fields; the HELO is mail.good.example, the receiver
/// mx.example.com, and `last` the `mechanism=` or `problem=` field, if any.
fn received_spf(
    result: &str,
    comment: &str,
    ip: &str,
    sender: &str,
    identity: &str,
    last: &str,
) -> String {
    received_spf_helo(
        result,
        comment,
        ip,
        sender,
        "mail.good.example",
        identity,
        last,
    )
}

/// [`received_spf`] with another HELO name.
fn received_spf_helo(
    result: &str,
    comment: &str,
    ip: &str,
    sender: &str,
    helo: &str,
    identity: &str,
    last: &str,
) -> String {
    let last = if last.is_empty() {
        String::new()
    } else {
        format!(" {last};")
    };
    format!(
        "PREPEND Received-SPF: {result} (mx.example.com: {comment}) client-ip={ip}; \
         envelope-from=\"{sender}\"; helo={helo}; receiver=mx.example.com; identity={identity};{last}"
    )
}

/// The header of a MAIL FROM pass by `mechanism`.
fn pass(sender: &str, ip: &str, mechanism: &str) -> String {
    received_spf(
        "pass",
        &format!("domain of {sender} designates {ip} as permitted sender"),
        ip,
        sender,
        "mailfrom",
        &format!("mechanism=\"{mechanism}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_prepends_received_spf() {
    let s = setup("").await;
    assert_eq!(
        s.ask(&[]),
        "PREPEND Received-SPF: pass (mx.example.com: domain of someone@pass.spftest designates \
         203.0.113.10 as permitted sender) client-ip=203.0.113.10; envelope-from=\"someone@pass.spftest\"; \
         helo=mail.good.example; receiver=mx.example.com; identity=mailfrom; mechanism=\"ip4:203.0.113.0/24\";"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_replies() {
    let s = setup("").await;
    let ip = "198.51.100.9";
    let cases: &[Case] = &[
        ("fail", from(ip, "a@pass.spftest"), fail("a@pass.spftest", ip)),
        // The domain's explanation (exp=, macros expanded) is part of the reply.
        (
            "fail with an explanation",
            from(ip, "a@explained.spftest"),
            format!(
                "{}: 198.51.100.9 is not one of explained.spftest's mail servers",
                fail("a@explained.spftest", ip)
            ),
        ),
        (
            "softfail",
            from(ip, "a@soft.spftest"),
            received_spf(
                "softfail",
                "domain of transitioning a@soft.spftest does not designate 198.51.100.9 as permitted sender",
                ip,
                "a@soft.spftest",
                "mailfrom",
                "mechanism=all",
            ),
        ),
        (
            "neutral",
            from(ip, "a@neutral.spftest"),
            received_spf(
                "neutral",
                "198.51.100.9 is neither permitted nor denied by domain of a@neutral.spftest",
                ip,
                "a@neutral.spftest",
                "mailfrom",
                "mechanism=all",
            ),
        ),
        (
            "none",
            from(ip, "a@nospf.spftest"),
            received_spf(
                "none",
                "domain of a@nospf.spftest does not designate permitted sender hosts",
                ip,
                "a@nospf.spftest",
                "mailfrom",
                "",
            ),
        ),
        (
            "permerror",
            from(ip, "a@broken.spftest"),
            received_spf(
                "permerror",
                "permanent error in processing domain of a@broken.spftest: invalid SPF record found",
                ip,
                "a@broken.spftest",
                "mailfrom",
                "problem=\"invalid SPF record found\"",
            ),
        ),
        // temperror is defer_if_permit by default: a later reject still wins.
        (
            "temperror",
            from(ip, "a@tempfail.spftest"),
            "DEFER_IF_PERMIT 4.7.24 SPF temporary error for domain of a@tempfail.spftest: DNS lookup failed; \
             try again later"
                .into(),
        ),
    ];
    s.check(cases);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_actions() {
    let s = setup(
        "[spf.mail_from]\nsoftfail = \"reject\"\npermerror = \"reject\"\ntemperror = \"defer\"",
    )
    .await;
    let ip = "198.51.100.9";
    let cases: &[Case] = &[
        (
            "softfail = reject",
            from(ip, "a@soft.spftest"),
            "550 5.7.23 SPF softfail: domain of a@soft.spftest does not designate 198.51.100.9 as permitted sender"
                .into(),
        ),
        (
            "permerror = reject",
            from(ip, "a@broken.spftest"),
            "550 5.7.24 SPF permanent error for domain of a@broken.spftest: invalid SPF record found".into(),
        ),
        (
            "temperror = defer",
            from(ip, "a@tempfail.spftest"),
            "451 4.7.24 SPF temporary error for domain of a@tempfail.spftest: DNS lookup failed; try again later"
                .into(),
        ),
    ];
    s.check(cases);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_identity() {
    let s = setup("").await;
    let cases: &[Case] = &[
        // The HELO name's own policy fails: rejected even with a passing sender.
        (
            "HELO fail",
            vec![
                ("client_address", "198.51.100.9"),
                ("helo_name", "helo-fail.spftest"),
                ("sender", "a@nospf.spftest"),
            ],
            "550 5.7.23 SPF fail: HELO helo-fail.spftest does not designate 198.51.100.9 as permitted sender"
                .into(),
        ),
        // The null sender is judged by the HELO identity (RFC 7208 2.4).
        (
            "null sender",
            vec![("helo_name", "helo-pass.spftest"), ("sender", "")],
            received_spf_helo(
                "pass",
                "domain of helo-pass.spftest designates 203.0.113.10 as permitted sender",
                "203.0.113.10",
                "",
                "helo-pass.spftest",
                "helo",
                "mechanism=a",
            ),
        ),
    ];
    s.check(cases);
    // With check_helo = false the HELO fail alone does not reject.
    let s = setup("check_helo = false").await;
    s.check(&[(
        "HELO fail, check_helo = false",
        vec![
            ("client_address", "203.0.113.10"),
            ("helo_name", "helo-fail.spftest"),
        ],
        received_spf_helo(
            "pass",
            "domain of someone@pass.spftest designates 203.0.113.10 as permitted sender",
            "203.0.113.10",
            "someone@pass.spftest",
            "helo-fail.spftest",
            "mailfrom",
            "mechanism=\"ip4:203.0.113.0/24\"",
        ),
    )]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_evaluation_and_one_header_per_transaction() {
    let s = setup("").await;
    let header = pass("someone@pass.spftest", "203.0.113.10", "ip4:203.0.113.0/24");
    assert_eq!(
        s.ask(&[("instance", "abc.1"), ("recipient", "alice@example.com")]),
        header
    );
    let queries = s.dns.query_count();
    assert_eq!(
        s.ask(&[("instance", "abc.1"), ("recipient", "bob@example.com")]),
        "DUNNO"
    );
    assert_eq!(s.dns.query_count(), queries);
    // A failing transaction rejects every recipient the same way.
    let failing = [("instance", "abc.2"), ("client_address", "198.51.100.9")];
    assert_eq!(
        s.ask(&failing),
        fail("someone@pass.spftest", "198.51.100.9")
    );
    assert_eq!(
        s.ask(&failing),
        fail("someone@pass.spftest", "198.51.100.9")
    );
    // A new transaction with the same client, sender and HELO: the cached
    // result, no query, and its own header.
    assert_eq!(s.ask(&[("instance", "abc.3")]), header);
    assert_eq!(s.dns.query_count(), queries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_part_macros_are_cached_per_address() {
    let s = setup("").await;
    let ip = "198.51.100.9";
    s.check(&[
        (
            "alice exists",
            from(ip, "alice@local.spftest"),
            pass(
                "alice@local.spftest",
                ip,
                "exists:%{l}.allowed.local.spftest",
            ),
        ),
        // After alice's pass is cached for local.spftest.
        (
            "bob does not",
            from(ip, "bob@local.spftest"),
            fail("bob@local.spftest", ip),
        ),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skips() {
    let s = setup("").await;
    let before = s.dns.query_count();
    let fail_sender = ("sender", "a@pass.spftest");
    s.check(&[
        (
            "mynetworks",
            vec![("client_address", "127.0.0.1"), fail_sender],
            "DUNNO".into(),
        ),
        (
            "authenticated",
            vec![
                ("client_address", "198.51.100.9"),
                ("sasl_method", "PLAIN"),
                ("sasl_username", "alice"),
                fail_sender,
            ],
            "DUNNO".into(),
        ),
        (
            "whitelisted address",
            vec![("client_address", "198.51.100.77"), fail_sender],
            "DUNNO".into(),
        ),
    ]);
    assert_eq!(s.dns.query_count(), before, "skipped checks make no query");
    // A whitelisted HELO name that does not resolve to the client is a
    // claim, not a fact: SPF is checked (tests/identity.rs has the rest).
    s.check(&[(
        "claimed whitelisted HELO",
        vec![
            ("client_address", "198.51.100.9"),
            ("helo_name", "mx.friend.example"),
            fail_sender,
        ],
        fail("a@pass.spftest", "198.51.100.9"),
    )]);
    // Each skip is shown in the trace.
    let trace = s.trace(&[("client_address", "127.0.0.1")]).await;
    assert!(
        trace.contains("skipped: 127.0.0.1 is in mynetworks"),
        "{trace}"
    );
    // And can be switched off.
    let s = setup("skip_mynetworks = false").await;
    assert_eq!(
        s.ask(&[("client_address", "127.0.0.1"), fail_sender]),
        fail("a@pass.spftest", "127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_result_mechanism_lookups_and_header() {
    let s = setup("").await;
    let trace = s.trace(&[]).await;
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
        s.ask(&[]),
        "PREPEND Authentication-Results: mx.example.com; spf=pass (mx.example.com: domain of someone@pass.spftest \
         designates 203.0.113.10 as permitted sender) smtp.mailfrom=someone@pass.spftest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_header_at_end_of_message() {
    let s = setup("").await;
    s.check(&[
        (
            "pass",
            vec![("protocol_state", "END-OF-MESSAGE")],
            "DUNNO".into(),
        ),
        (
            "fail",
            vec![
                ("protocol_state", "END-OF-MESSAGE"),
                ("client_address", "198.51.100.9"),
            ],
            fail("someone@pass.spftest", "198.51.100.9"),
        ),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_a_deferral_displaced_goes_out_with_the_next_recipient() {
    let s = setup("").await;
    s.check(&[
        // RCPT 1 is deferred: the response carries DEFER_IF_PERMIT, not the header.
        (
            "RCPT 1",
            vec![("instance", "t.1"), ("recipient", "busy@example.com")],
            "DEFER_IF_PERMIT 4.2.1 try later".into(),
        ),
        // RCPT 2 is accepted and carries the header; RCPT 3 does not repeat it.
        (
            "RCPT 2",
            vec![("instance", "t.1"), ("recipient", "alice@example.com")],
            pass("someone@pass.spftest", "203.0.113.10", "ip4:203.0.113.0/24"),
        ),
        (
            "RCPT 3",
            vec![("instance", "t.1"), ("recipient", "bob@example.com")],
            "DUNNO".into(),
        ),
    ]);
}

/// `[spf] cache_ttl` runs on tokio's clock (state/spf_cache.rs), so a
/// paused clock proves it without waiting: in-process, a result is reused
/// while younger than cache_ttl and evaluated again once cache_ttl has
/// passed. The clock runs for real while DNS is asked (a paused clock would
/// jump over a query in flight to its timeout); it stays paused while the
/// cached result is asked for (no query then), so that the probe 1 ms
/// before expiry is not moved past it by a slow machine. The result is
/// stored between `before` and `after`, so "younger" is measured from
/// `before` and "older" from `after`.
#[tokio::test]
async fn results_are_cached_for_cache_ttl() {
    const TTL: Duration = Duration::from_secs(600);
    let s = setup("cache_ttl = \"600s\"").await;
    let evaluated = "SPF mailfrom someone@pass.spftest: pass, matched ip4:203.0.113.0/24";
    let cached =
        "SPF mailfrom someone@pass.spftest: pass (cached result), matched ip4:203.0.113.0/24";
    let before = Instant::now();
    let trace = s.trace(&[]).await;
    let after = Instant::now();
    assert!(trace.contains(evaluated), "{trace}");
    // Every lookup of the evaluation is in the resolver's cache now (its
    // TTLs run on the real clock), so moving tokio's clock only ages the
    // SPF result.
    let move_clock_to = |at: Instant| tokio::time::advance(at - Instant::now());
    tokio::time::pause();
    move_clock_to(before + TTL - Duration::from_millis(1)).await;
    let trace = s.trace(&[]).await;
    assert!(trace.contains(cached), "{trace}");
    move_clock_to(after + TTL).await;
    tokio::time::resume();
    let trace = s.trace(&[]).await;
    assert!(trace.contains(evaluated), "{trace}");
}

/// Issue 24 item 6: a header that comes first in the chain (Received-SPF)
/// never displaces an admin's HOLD, DISCARD, REDIRECT, FILTER or BCC from
/// a later rule: the enforcement action is answered, and what it
/// displaced goes out with the next requests of the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforcement_action_after_a_header_is_never_dropped() {
    let enforced = [
        ("held@example.com", "HOLD suspicious"),
        ("dropped@example.com", "DISCARD spam trap"),
        ("moved@example.com", "REDIRECT abuse@example.com"),
        ("filtered@example.com", "FILTER scan:[127.0.0.1]:10025"),
        ("copied@example.com", "BCC archive@example.com"),
    ];
    let table: Vec<String> = enforced
        .iter()
        .map(|(rcpt, action)| format!("{rcpt} {action}"))
        .collect();
    // A BCC before the HOLD: among enforcement actions, the one that
    // decides most about the message goes first.
    let s = start(
        "\"check_spf\", \"check_recipient_access hash:copies\", \
         \"check_recipient_access hash:recipients\", \"check_recipient_access hash:headers\"",
        "",
        "",
        &[
            ("copies", "held@example.com BCC copy@example.com"),
            ("recipients", &table.join("\n")),
            ("headers", "held@example.com PREPEND X-Later: yes"),
        ],
    )
    .await;
    let header = pass("someone@pass.spftest", "203.0.113.10", "ip4:203.0.113.0/24");
    for (n, (rcpt, action)) in enforced.iter().enumerate() {
        let instance = format!("e.{n}");
        let ask = |rcpt| s.ask(&[("instance", &instance), ("recipient", rcpt)]);
        assert_eq!(ask(rcpt), *action, "{rcpt}");
        if *rcpt == "held@example.com" {
            // What HOLD displaced waits: the BCC first, then the headers.
            assert_eq!(ask("alice@example.com"), "BCC copy@example.com");
            assert_eq!(ask("bob@example.com"), header);
            assert_eq!(ask("carol@example.com"), "PREPEND X-Later: yes");
        } else {
            // The header was not sent: the next recipient carries it.
            assert_eq!(ask("alice@example.com"), header, "after {rcpt}");
        }
    }
    // What an answer displaced waits for RCPT or DATA only: at MAIL
    // Postfix may still send the previous transaction's instance
    // (smtpd_delay_reject = no), and END-OF-MESSAGE carries no header.
    assert_eq!(
        s.ask(&[("instance", "m.1"), ("recipient", "held@example.com")]),
        "HOLD suspicious"
    );
    for state in ["MAIL", "END-OF-MESSAGE"] {
        let attrs = [
            ("instance", "m.1"),
            ("protocol_state", state),
            ("recipient", ""),
        ];
        assert_eq!(s.ask(&attrs), "DUNNO", "{state}");
    }
    let data = [
        ("instance", "m.1"),
        ("protocol_state", "DATA"),
        ("recipient", ""),
    ];
    assert_eq!(s.ask(&data), "BCC copy@example.com");
    let trace = s
        .trace(&[("instance", "e.9"), ("recipient", "held@example.com")])
        .await;
    assert!(
        trace.contains("\"PREPEND Received-SPF: pass")
            && trace.contains("kept for a later request"),
        "{trace}"
    );
}

/// Issue 24 item 11: an unqualified MAIL FROM (`ceo`) is not a domain.
/// Postfix delivers it as ceo@$myorigin, so that is the identity checked:
/// here myorigin's record does not list the client, and the mail fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unqualified_sender_is_checked_in_myorigin() {
    let s = start("\"check_spf\"", "myorigin = \"pass.spftest\"", "", &[]).await;
    assert_eq!(
        s.ask(&[("client_address", "198.51.100.9"), ("sender", "ceo")]),
        fail("ceo@pass.spftest", "198.51.100.9")
    );
    assert_eq!(
        s.ask(&[("sender", "ceo"), ("instance", "u.1")]),
        received_spf(
            "pass",
            "domain of ceo@pass.spftest designates 203.0.113.10 as permitted sender",
            "203.0.113.10",
            "ceo@pass.spftest",
            "mailfrom",
            "mechanism=\"ip4:203.0.113.0/24\"",
        )
    );
}
