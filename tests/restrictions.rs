//! The Postfix restrictions rpol reproduces, each reply checked against
//! ../shared/postfix-reference.md (2.1, 2.2) and postfix-observed.md, with
//! every DNS answer coming from a real DNS server on loopback
//! (tests/support/dns.rs serving tests/zones/).
//!
//! The policy is called from smtpd_recipient_restrictions (the default
//! `called_from`), so replies of the client, helo and sender stages carry
//! that stage's Postfix wording in their text. Every answer comes from the
//! rpol binary over its unix socket; the traces are read in-process.

#[path = "support/rpol.rs"]
mod daemon;
#[path = "support/dns.rs"]
mod dns_server;

use std::path::Path;
use std::time::{Duration, Instant};

use dns_server::TestDns;
use rpol::config;
use rpol::policy::{Policy, evaluate};
use rpol::protocol::Request;
use rpol::state::State;

const MAILBOXES: &str =
    "alice@example.com  example.com/alice/\nbob@example.com  example.com/bob/\n";
const ALIASES: &str = "postmaster@example.com alice@example.com\nshared@example.com alice@example.com, bob@example.com\n";

struct Setup {
    dns: TestDns,
    /// The same configuration loaded in-process, for traces, with its
    /// own runtime state.
    policy: Policy,
    state: State,
    daemon: daemon::Rpol,
}

/// A policy whose only profile has `stages` (TOML lines), with `extra`
/// TOML prepended, resolving through the test DNS server.
async fn setup(stages: &str, extra: &str) -> Setup {
    let dns = TestDns::start_default().await;
    let text = format!(
        "{extra}\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\nmin_ttl = \"0s\"\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\nrecipient_delimiter = \"+\"\n\
         mailboxes = \"mailboxes\"\naliases = \"aliases\"\n[profile.test]\n{stages}\n",
        dns.addr
    );
    let setup = daemon::Setup::new(&text)
        .file("mailboxes", MAILBOXES)
        .file("aliases", ALIASES);
    let policy = config::load(&setup.config)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
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
        ("client_name", "mail.good.example"),
        ("reverse_client_name", "mail.good.example"),
        ("helo_name", "mail.good.example"),
        ("sender", "someone@good.example"),
        ("recipient", "alice@example.com"),
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
async fn reject_unknown_client_hostname() {
    let s = setup(
        "client = [\"reject_unknown_client_hostname\"]",
        "[postfix]\nunknown_client_reject_code = 550",
    )
    .await;
    let unknown = [
        ("client_name", "unknown"),
        ("reverse_client_name", "unknown"),
    ];
    // Forward-confirmed: PTR mail.good.example, A back to the address.
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.10"));
    assert_eq!(ask(&s, &q).await, "DUNNO");
    // PTR whose name resolves elsewhere: permanent, $unknown_client_reject_code.
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.11"));
    assert_eq!(
        ask(&s, &q).await,
        "550 5.7.25 Client host rejected: cannot find your hostname, [203.0.113.11]"
    );
    // No PTR at all.
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.12"));
    assert_eq!(
        ask(&s, &q).await,
        "550 5.7.25 Client host rejected: cannot find your hostname, [203.0.113.12]"
    );
    // Temporary failure: always 450, at once, whatever the reject code.
    s.dns.inject_servfail("13.113.0.203.in-addr.arpa");
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.13"));
    assert_eq!(
        ask(&s, &q).await,
        "450 4.7.25 Client host rejected: cannot find your hostname, [203.0.113.13]"
    );
    // A name Postfix verified is trusted: no query.
    let before = s.dns.query_count();
    assert_eq!(
        ask(
            &s,
            &[
                ("client_address", "203.0.113.99"),
                ("client_name", "mail.good.example")
            ]
        )
        .await,
        "DUNNO"
    );
    assert_eq!(s.dns.query_count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_unknown_reverse_client_hostname() {
    let s = setup("client = [\"reject_unknown_reverse_client_hostname\"]", "").await;
    let unknown = [
        ("client_name", "unknown"),
        ("reverse_client_name", "unknown"),
    ];
    // A PTR that does not resolve back still passes (postfix-observed 9).
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.11"));
    assert_eq!(ask(&s, &q).await, "DUNNO");
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.12"));
    assert_eq!(
        ask(&s, &q).await,
        "450 4.7.1 Client host rejected: cannot find your reverse hostname, [203.0.113.12]"
    );
    s.dns.inject_servfail("14.113.0.203.in-addr.arpa");
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.14"));
    assert_eq!(
        ask(&s, &q).await,
        "450 4.7.1 Client host rejected: cannot find your reverse hostname, [203.0.113.14]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_syntax_checks() {
    let s = setup(
        "helo = [\"reject_invalid_helo_hostname\", \"reject_non_fqdn_helo_hostname\"]",
        "",
    )
    .await;
    let before = s.dns.query_count();
    assert_eq!(
        ask(&s, &[("helo_name", "bad_host!")]).await,
        "501 5.5.2 <bad_host!>: Helo command rejected: Invalid name"
    );
    assert_eq!(
        ask(&s, &[("helo_name", "[300.1.1.1]")]).await,
        "501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address"
    );
    // A bare IP passes the syntax check but is not fully qualified
    // (postfix-observed 4).
    assert_eq!(
        ask(&s, &[("helo_name", "203.0.113.5")]).await,
        "504 5.5.2 <203.0.113.5>: Helo command rejected: need fully-qualified hostname"
    );
    assert_eq!(
        ask(&s, &[("helo_name", "localhost")]).await,
        "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    );
    assert_eq!(ask(&s, &[("helo_name", "[203.0.113.5]")]).await, "DUNNO");
    assert_eq!(
        ask(&s, &[("helo_name", "[IPv6:2001:db8::5]")]).await,
        "DUNNO"
    );
    assert_eq!(
        ask(&s, &[("helo_name", "mail.good.example.")]).await,
        "DUNNO"
    );
    assert_eq!(s.dns.query_count(), before, "syntax checks need no DNS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_unknown_helo_hostname() {
    let s = setup("helo = [\"reject_unknown_helo_hostname\"]", "").await;
    assert_eq!(
        ask(&s, &[("helo_name", "mail.good.example")]).await,
        "DUNNO"
    );
    // An MX alone satisfies it (postfix-observed 5), and so does a null MX.
    assert_eq!(ask(&s, &[("helo_name", "mx-only.example")]).await, "DUNNO");
    assert_eq!(ask(&s, &[("helo_name", "nullmx.example")]).await, "DUNNO");
    assert_eq!(
        ask(&s, &[("helo_name", "aaaa-only.example")]).await,
        "DUNNO"
    );
    assert_eq!(
        ask(&s, &[("helo_name", "nx.example")]).await,
        "450 4.7.1 <nx.example>: Helo command rejected: Host not found"
    );
    assert_eq!(
        ask(&s, &[("helo_name", "servfail.example")]).await,
        "DEFER_IF_PERMIT 4.7.1 <servfail.example>: Helo command rejected: Host not found"
    );
    let start = Instant::now();
    assert_eq!(
        ask(&s, &[("helo_name", "timeout.example")]).await,
        "DEFER_IF_PERMIT 4.7.1 <timeout.example>: Helo command rejected: Host not found"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let before = s.dns.query_count();
    assert_eq!(ask(&s, &[("helo_name", "[203.0.113.5]")]).await, "DUNNO");
    assert_eq!(s.dns.query_count(), before, "address literals need no DNS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_required() {
    let s = setup("helo_required = true\nhelo = []", "").await;
    assert_eq!(
        ask(&s, &[("helo_name", "")]).await,
        "503 5.5.1 Helo command rejected: Error: send HELO/EHLO first"
    );
    assert_eq!(ask(&s, &[("helo_name", "x.example")]).await, "DUNNO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_syntax_and_domain() {
    let s = setup(
        "sender = [\"reject_non_fqdn_sender\", \"reject_unknown_sender_domain\"]",
        "",
    )
    .await;
    assert_eq!(
        ask(&s, &[("sender", "user@localhost")]).await,
        "504 5.5.2 <user@localhost>: Sender address rejected: need fully-qualified address"
    );
    assert_eq!(
        ask(&s, &[("sender", "user")]).await,
        "504 5.5.2 <user>: Sender address rejected: need fully-qualified address"
    );
    assert_eq!(ask(&s, &[("sender", "")]).await, "DUNNO", "the null sender");
    assert_eq!(ask(&s, &[("sender", "u@[203.0.113.5]")]).await, "DUNNO");
    for ok in [
        "a@a-only.example",
        "a@mx-only.example",
        "a@aaaa-only.example",
    ] {
        assert_eq!(ask(&s, &[("sender", ok)]).await, "DUNNO", "{ok}");
    }
    assert_eq!(
        ask(&s, &[("sender", "a@nullmx.example")]).await,
        "550 5.7.27 <a@nullmx.example>: Sender address rejected: Domain nullmx.example does not accept mail (nullMX)"
    );
    assert_eq!(
        ask(&s, &[("sender", "a@nx.example")]).await,
        "450 4.1.8 <a@nx.example>: Sender address rejected: Domain not found"
    );
    assert_eq!(
        ask(&s, &[("sender", "a@servfail.example")]).await,
        "DEFER_IF_PERMIT 4.1.8 <a@servfail.example>: Sender address rejected: Domain not found"
    );
    // Our own domains are not looked up.
    let before = s.dns.query_count();
    assert_eq!(ask(&s, &[("sender", "nobody@example.com")]).await, "DUNNO");
    assert_eq!(s.dns.query_count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempfail_action_defer_answers_at_once() {
    let s = setup(
        "sender = [\"reject_unknown_sender_domain\"]\nrecipient = [\"reject\"]",
        "[postfix]\nunknown_address_tempfail_action = \"defer\"",
    )
    .await;
    assert_eq!(
        ask(&s, &[("sender", "a@servfail.example")]).await,
        "450 4.1.8 <a@servfail.example>: Sender address rejected: Domain not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_sender_and_recipient() {
    let s = setup(
        "sender = [\"reject_unlisted_sender\"]\nrecipient = [\"reject_unlisted_recipient\"]",
        "",
    )
    .await;
    assert_eq!(ask(&s, &[("sender", "alice@example.com")]).await, "DUNNO");
    assert_eq!(ask(&s, &[("sender", "shared@example.com")]).await, "DUNNO");
    assert_eq!(
        ask(&s, &[("sender", "nobody@example.com")]).await,
        "550 5.1.0 <nobody@example.com>: Sender address rejected: User unknown in virtual mailbox table"
    );
    assert_eq!(ask(&s, &[("sender", "x@elsewhere.example")]).await, "DUNNO");
    assert_eq!(ask(&s, &[("sender", "")]).await, "DUNNO");
    assert_eq!(
        ask(&s, &[("recipient", "alice+tag@example.com")]).await,
        "DUNNO"
    );
    assert_eq!(
        ask(&s, &[("recipient", "postmaster@example.com")]).await,
        "DUNNO"
    );
    assert_eq!(
        ask(&s, &[("recipient", "nobody@example.com")]).await,
        "550 5.1.1 User unknown in virtual mailbox table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_syntax_domain_and_destination() {
    let s = setup(
        "recipient = [\"reject_non_fqdn_recipient\", \"reject_unknown_recipient_domain\", \"reject_unauth_destination\"]",
        "",
    )
    .await;
    assert_eq!(
        ask(&s, &[("recipient", "bob@localhost")]).await,
        "504 5.5.2 need fully-qualified address"
    );
    assert_eq!(
        ask(&s, &[("recipient", "a@nullmx.example")]).await,
        "556 5.1.10 Domain nullmx.example does not accept mail (nullMX)"
    );
    assert_eq!(
        ask(&s, &[("recipient", "a@nx.example")]).await,
        "450 4.1.2 Domain not found"
    );
    assert_eq!(
        ask(&s, &[("recipient", "a@good.example")]).await,
        "554 5.7.1 Relay access denied"
    );
    assert_eq!(
        ask(&s, &[("recipient", "alice@example.com")]).await,
        "DUNNO"
    );
    // Sender-specified routing through our domain is a relay attempt.
    assert_eq!(
        ask(&s, &[("recipient", "a%good.example@example.com")]).await,
        "554 5.7.1 Relay access denied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_destination_variants() {
    let s = setup(
        "recipient = [\"permit_auth_destination\", \"defer_unauth_destination\"]",
        "",
    )
    .await;
    assert_eq!(
        ask(&s, &[("recipient", "alice@example.com")]).await,
        "DUNNO"
    );
    assert_eq!(
        ask(&s, &[("recipient", "a@good.example")]).await,
        "454 4.7.1 Relay access denied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defer_if_permit_loses_to_a_later_reject() {
    // postfix-observed 3: a SERVFAIL on the sender domain followed by an
    // unknown recipient gives the 550.
    let s = setup(
        "sender = [\"reject_unknown_sender_domain\"]\nrecipient = [\"reject_unlisted_recipient\"]",
        "",
    )
    .await;
    assert_eq!(
        ask(
            &s,
            &[
                ("sender", "a@servfail.example"),
                ("recipient", "nobody@example.com")
            ]
        )
        .await,
        "550 5.1.1 User unknown in virtual mailbox table"
    );
    assert_eq!(
        ask(
            &s,
            &[
                ("sender", "a@servfail.example"),
                ("recipient", "alice@example.com")
            ]
        )
        .await,
        "DEFER_IF_PERMIT 4.1.8 <a@servfail.example>: Sender address rejected: Domain not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_identical_request_makes_no_query() {
    let s = setup(
        "client = [\"reject_unknown_client_hostname\"]\nhelo = [\"reject_unknown_helo_hostname\"]\nsender = [\"reject_unknown_sender_domain\"]",
        "",
    )
    .await;
    let q = [
        ("client_name", "unknown"),
        ("client_address", "203.0.113.10"),
        ("helo_name", "mail.good.example"),
        ("sender", "a@mx-only.example"),
    ];
    assert_eq!(ask(&s, &q).await, "DUNNO");
    let after_first = s.dns.query_count();
    assert!(
        after_first >= 3,
        "PTR, A and MX were queried: {after_first}"
    );
    assert_eq!(ask(&s, &q).await, "DUNNO");
    assert_eq!(s.dns.query_count(), after_first, "all from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_dns_answers() {
    let s = setup("sender = [\"reject_unknown_sender_domain\"]", "").await;
    let req = request(&[("sender", "a@mx-only.example")]);
    let first = evaluate(&s.policy, &s.state, &req, true)
        .await
        .trace
        .join("\n");
    assert!(
        first.contains("DNS MX mx-only.example: 10 mail.good.example (queried)"),
        "{first}"
    );
    let second = evaluate(&s.policy, &s.state, &req, true)
        .await
        .trace
        .join("\n");
    assert!(
        second.contains("DNS MX mx-only.example: 10 mail.good.example (cached)"),
        "{second}"
    );
}

#[test]
fn missing_site_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let err = config::load_str(
        &path,
        "[dns]\nnameservers = [\"127.0.0.1:53\"]\n[site]\naliases = \"nope\"\n",
    )
    .unwrap_err()
    .to_string();
    let expected_prefix = format!(
        "{}:4:11: site.aliases: {}: cannot read",
        path.display(),
        Path::new(dir.path()).join("nope").display()
    );
    assert!(err.starts_with(&expected_prefix), "{err}");
}
