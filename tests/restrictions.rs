//! The Postfix restrictions rpol reproduces, each reply checked against
//! ../shared/postfix-reference.md (2.1, 2.2) and postfix-observed.md, with
//! every DNS answer coming from a real DNS server on loopback
//! (tests/support/dns.rs serving tests/zones/).
//!
//! The policy is called from smtpd_recipient_restrictions (the default
//! `called_from`), so replies of the client, helo and sender stages carry
//! that stage's Postfix wording in their text. Every answer comes from the
//! rpol binary over its unix socket; the traces are read in-process.
//! Access tables and their lookup order come last (no DNS there).

use crate::support::fixture;

use std::path::Path;
use std::time::{Duration, Instant};

use fixture::daemon::{Setup, ask, response};
use fixture::dns_server::{DEFAULT_ZONES, SERVFAIL_NAME, TIMEOUT_NAME};
use fixture::{DNS_ADDR, Fixture, RCPT, Spec};
use rpol::config;

const MAILBOXES: &str =
    "alice@example.com  example.com/alice/\nbob@example.com  example.com/bob/\n";
const ALIASES: &str = "postmaster@example.com alice@example.com\nshared@example.com alice@example.com, bob@example.com\n";

/// A policy whose only profile has `stages` (TOML lines), with `extra`
/// TOML prepended, resolving through the test DNS server (the default
/// zones, SERVFAIL for servfail.example, silence for timeout.example).
async fn setup(stages: &str, extra: &str) -> Fixture {
    let config = format!(
        "{extra}\n[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"500ms\"\nattempts = 1\nmin_ttl = \"0s\"\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\nrecipient_delimiter = \"+\"\n\
         mailboxes = \"mailboxes\"\naliases = \"aliases\"\n[profile.test]\n{stages}\n"
    );
    let s = Fixture::start(Spec {
        zones: DEFAULT_ZONES,
        config: &config,
        files: &[("mailboxes", MAILBOXES), ("aliases", ALIASES)],
        base: RCPT,
    })
    .await;
    s.dns.inject_servfail(SERVFAIL_NAME);
    s.dns.inject_silence(TIMEOUT_NAME);
    s
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
    assert_eq!(s.ask(&q), "DUNNO");
    // PTR whose name resolves elsewhere: permanent, $unknown_client_reject_code.
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.11"));
    assert_eq!(
        s.ask(&q),
        "550 5.7.25 Client host rejected: cannot find your hostname, [203.0.113.11]"
    );
    // No PTR at all.
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.12"));
    assert_eq!(
        s.ask(&q),
        "550 5.7.25 Client host rejected: cannot find your hostname, [203.0.113.12]"
    );
    // Temporary failure: always 450, at once, whatever the reject code.
    s.dns.inject_servfail("13.113.0.203.in-addr.arpa");
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.13"));
    assert_eq!(
        s.ask(&q),
        "450 4.7.25 Client host rejected: cannot find your hostname, [203.0.113.13]"
    );
    // A name Postfix verified is trusted: no query.
    let before = s.dns.query_count();
    assert_eq!(
        s.ask(&[
            ("client_address", "203.0.113.99"),
            ("client_name", "mail.good.example")
        ]),
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
    assert_eq!(s.ask(&q), "DUNNO");
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.12"));
    assert_eq!(
        s.ask(&q),
        "450 4.7.1 Client host rejected: cannot find your reverse hostname, [203.0.113.12]"
    );
    s.dns.inject_servfail("14.113.0.203.in-addr.arpa");
    let mut q = unknown.to_vec();
    q.push(("client_address", "203.0.113.14"));
    assert_eq!(
        s.ask(&q),
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
        s.ask(&[("helo_name", "bad_host!")]),
        "501 5.5.2 <bad_host!>: Helo command rejected: Invalid name"
    );
    assert_eq!(
        s.ask(&[("helo_name", "[300.1.1.1]")]),
        "501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address"
    );
    // A bare IP passes the syntax check but is not fully qualified
    // (postfix-observed 4).
    assert_eq!(
        s.ask(&[("helo_name", "203.0.113.5")]),
        "504 5.5.2 <203.0.113.5>: Helo command rejected: need fully-qualified hostname"
    );
    assert_eq!(
        s.ask(&[("helo_name", "localhost")]),
        "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    );
    assert_eq!(s.ask(&[("helo_name", "[203.0.113.5]")]), "DUNNO");
    assert_eq!(s.ask(&[("helo_name", "[IPv6:2001:db8::5]")]), "DUNNO");
    assert_eq!(s.ask(&[("helo_name", "mail.good.example.")]), "DUNNO");
    assert_eq!(s.dns.query_count(), before, "syntax checks need no DNS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_unknown_helo_hostname() {
    let s = setup("helo = [\"reject_unknown_helo_hostname\"]", "").await;
    assert_eq!(s.ask(&[("helo_name", "mail.good.example")]), "DUNNO");
    // An MX alone satisfies it (postfix-observed 5), and so does a null MX.
    assert_eq!(s.ask(&[("helo_name", "mx-only.example")]), "DUNNO");
    assert_eq!(s.ask(&[("helo_name", "nullmx.example")]), "DUNNO");
    assert_eq!(s.ask(&[("helo_name", "aaaa-only.example")]), "DUNNO");
    assert_eq!(
        s.ask(&[("helo_name", "nx.example")]),
        "450 4.7.1 <nx.example>: Helo command rejected: Host not found"
    );
    assert_eq!(
        s.ask(&[("helo_name", "servfail.example")]),
        "DEFER_IF_PERMIT 4.7.1 <servfail.example>: Helo command rejected: Host not found"
    );
    let start = Instant::now();
    assert_eq!(
        s.ask(&[("helo_name", "timeout.example")]),
        "DEFER_IF_PERMIT 4.7.1 <timeout.example>: Helo command rejected: Host not found"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let before = s.dns.query_count();
    assert_eq!(s.ask(&[("helo_name", "[203.0.113.5]")]), "DUNNO");
    assert_eq!(s.dns.query_count(), before, "address literals need no DNS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_required() {
    let s = setup("helo_required = true\nhelo = []", "").await;
    assert_eq!(
        s.ask(&[("helo_name", "")]),
        "503 5.5.1 Helo command rejected: Error: send HELO/EHLO first"
    );
    assert_eq!(s.ask(&[("helo_name", "x.example")]), "DUNNO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_syntax_and_domain() {
    let s = setup(
        "sender = [\"reject_non_fqdn_sender\", \"reject_unknown_sender_domain\"]",
        "",
    )
    .await;
    assert_eq!(
        s.ask(&[("sender", "user@localhost")]),
        "504 5.5.2 <user@localhost>: Sender address rejected: need fully-qualified address"
    );
    assert_eq!(
        s.ask(&[("sender", "user")]),
        "504 5.5.2 <user>: Sender address rejected: need fully-qualified address"
    );
    assert_eq!(s.ask(&[("sender", "")]), "DUNNO", "the null sender");
    assert_eq!(s.ask(&[("sender", "u@[203.0.113.5]")]), "DUNNO");
    for ok in [
        "a@a-only.example",
        "a@mx-only.example",
        "a@aaaa-only.example",
    ] {
        assert_eq!(s.ask(&[("sender", ok)]), "DUNNO", "{ok}");
    }
    assert_eq!(
        s.ask(&[("sender", "a@nullmx.example")]),
        "550 5.7.27 <a@nullmx.example>: Sender address rejected: Domain nullmx.example does not accept mail (nullMX)"
    );
    assert_eq!(
        s.ask(&[("sender", "a@nx.example")]),
        "450 4.1.8 <a@nx.example>: Sender address rejected: Domain not found"
    );
    assert_eq!(
        s.ask(&[("sender", "a@servfail.example")]),
        "DEFER_IF_PERMIT 4.1.8 <a@servfail.example>: Sender address rejected: Domain not found"
    );
    // Our own domains are not looked up.
    let before = s.dns.query_count();
    assert_eq!(s.ask(&[("sender", "nobody@example.com")]), "DUNNO");
    assert_eq!(s.dns.query_count(), before);
}

/// Added as ARCHITECTURE.md's "Adding a rule" says (one function, one
/// row): Postfix's reply, and a no-op where no recipient count is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_multi_recipient_bounce() {
    let s = setup("sender = [\"reject_multi_recipient_bounce\"]", "").await;
    let data = |sender: &'static str, count: &'static str| {
        [
            ("protocol_state", "DATA"),
            ("sender", sender),
            ("recipient", ""),
            ("recipient_count", count),
        ]
    };
    assert_eq!(
        s.ask(&data("", "2")),
        "550 5.5.3 <>: Sender address rejected: Multi-recipient bounce"
    );
    assert_eq!(s.ask(&data("", "1")), "DUNNO", "one recipient");
    assert_eq!(s.ask(&data("someone@good.example", "2")), "DUNNO");
    // At RCPT Postfix sends no count: nothing to judge.
    assert_eq!(s.ask(&[("sender", ""), ("recipient_count", "0")]), "DUNNO");
    let eom = [
        ("protocol_state", "END-OF-MESSAGE"),
        ("sender", ""),
        ("recipient", ""),
        ("recipient_count", "3"),
    ];
    assert_eq!(
        s.ask(&eom),
        "550 5.5.3 <>: Sender address rejected: Multi-recipient bounce"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempfail_action_defer_answers_at_once() {
    let s = setup(
        "sender = [\"reject_unknown_sender_domain\"]\nrecipient = [\"reject\"]",
        "[postfix]\nunknown_address_tempfail_action = \"defer\"",
    )
    .await;
    assert_eq!(
        s.ask(&[("sender", "a@servfail.example")]),
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
    assert_eq!(s.ask(&[("sender", "alice@example.com")]), "DUNNO");
    assert_eq!(s.ask(&[("sender", "shared@example.com")]), "DUNNO");
    assert_eq!(
        s.ask(&[("sender", "nobody@example.com")]),
        "550 5.1.0 <nobody@example.com>: Sender address rejected: User unknown in virtual mailbox table"
    );
    assert_eq!(s.ask(&[("sender", "x@elsewhere.example")]), "DUNNO");
    assert_eq!(s.ask(&[("sender", "")]), "DUNNO");
    assert_eq!(s.ask(&[("recipient", "alice+tag@example.com")]), "DUNNO");
    assert_eq!(s.ask(&[("recipient", "postmaster@example.com")]), "DUNNO");
    assert_eq!(
        s.ask(&[("recipient", "nobody@example.com")]),
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
        s.ask(&[("recipient", "bob@localhost")]),
        "504 5.5.2 need fully-qualified address"
    );
    assert_eq!(
        s.ask(&[("recipient", "a@nullmx.example")]),
        "556 5.1.10 Domain nullmx.example does not accept mail (nullMX)"
    );
    assert_eq!(
        s.ask(&[("recipient", "a@nx.example")]),
        "450 4.1.2 Domain not found"
    );
    assert_eq!(
        s.ask(&[("recipient", "a@good.example")]),
        "554 5.7.1 Relay access denied"
    );
    assert_eq!(s.ask(&[("recipient", "alice@example.com")]), "DUNNO");
    // Sender-specified routing through our domain is a relay attempt.
    assert_eq!(
        s.ask(&[("recipient", "a%good.example@example.com")]),
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
    assert_eq!(s.ask(&[("recipient", "alice@example.com")]), "DUNNO");
    assert_eq!(
        s.ask(&[("recipient", "a@good.example")]),
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
        s.ask(&[
            ("sender", "a@servfail.example"),
            ("recipient", "nobody@example.com")
        ]),
        "550 5.1.1 User unknown in virtual mailbox table"
    );
    assert_eq!(
        s.ask(&[
            ("sender", "a@servfail.example"),
            ("recipient", "alice@example.com")
        ]),
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
    assert_eq!(s.ask(&q), "DUNNO");
    let after_first = s.dns.query_count();
    assert!(
        after_first >= 3,
        "PTR, A and MX were queried: {after_first}"
    );
    assert_eq!(s.ask(&q), "DUNNO");
    assert_eq!(s.dns.query_count(), after_first, "all from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_dns_answers() {
    let s = setup("sender = [\"reject_unknown_sender_domain\"]", "").await;
    let q = [("sender", "a@mx-only.example")];
    let first = s.trace(&q).await;
    assert!(
        first.contains("DNS MX mx-only.example: 10 mail.good.example (queried)"),
        "{first}"
    );
    let second = s.trace(&q).await;
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

/// Access tables with Postfix's lookup order, called from the recipient
/// restrictions (profile `default`) or from the sender restrictions
/// (profile `from_sender`, chosen by policy_context).
const ACCESS: &str = r#"
[site]
recipient_delimiter = "+"

[tables]
clients = "tables/clients"
networks = "cidr:tables/networks"
senders = "tables/senders"

[profile.default]
client = ["check_client_access clients", "check_client_access networks"]
sender = ["check_sender_access senders"]

[profile.from_sender]
match = { policy_context = "sender" }
called_from = "sender"
client = ["check_client_access clients", "check_client_access networks"]
sender = ["check_sender_access senders"]
"#;

const CLIENTS: &str = "\
# parent domain entry: matches subdomains (parent_domain_matches_subdomains)
example.org         REJECT
203.0.113           REJECT 5.7.2 Your network is blocked
mail.good.example   OK
";

const NETWORKS: &str = "\
198.51.100.0/24     550 5.7.1 No mail from this network
";

const SENDERS: &str = "\
user@example.com    REJECT 5.7.1 Sender blocked
example.net         REJECT
<>                  550 5.7.0 No bounces here
spam@               REJECT
postmaster@         OK
";

fn access_request<'a>(
    name: &'a str,
    addr: &'a str,
    sender: &'a str,
    context: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("protocol_state", "RCPT"),
        ("client_address", addr),
        ("client_name", name),
        ("helo_name", "helo.example"),
        ("sender", sender),
        ("recipient", "rcpt@example.net"),
        ("server_port", "25"),
        ("policy_context", context),
    ]
}

#[test]
fn access_table_lookup_order() {
    let rpol = Setup::new(ACCESS)
        .file("tables/clients", CLIENTS)
        .file("tables/networks", NETWORKS)
        .file("tables/senders", SENDERS)
        .start();
    let mut conn = rpol.connect();
    let neutral = "a@neutral.test";
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        // (client_name, client_address, sender, policy_context, action)
        (
            "host.sub.example.org",
            "2001:db8::10",
            neutral,
            "",
            "554 5.7.1 <host.sub.example.org[2001:db8::10]>: Client host rejected: Access denied",
        ),
        (
            "unknown",
            "203.0.113.9",
            neutral,
            "",
            "554 5.7.2 <unknown[203.0.113.9]>: Client host rejected: Your network is blocked",
        ),
        (
            "unknown",
            "198.51.100.7",
            neutral,
            "",
            "550 5.7.1 <unknown[198.51.100.7]>: Client host rejected: No mail from this network",
        ),
        // The name is looked up before the address: OK ends the client stage.
        ("mail.good.example", "203.0.113.9", neutral, "", "DUNNO"),
        // Nothing matches: not example.org itself spelt differently.
        (
            "example.org.evil.test",
            "2001:db8::10",
            neutral,
            "",
            "DUNNO",
        ),
        // user+ext@domain falls back to user@domain.
        (
            "unknown",
            "2001:db8::10",
            "user+tag@example.com",
            "",
            "554 5.7.1 <user+tag@example.com>: Sender address rejected: Sender blocked",
        ),
        // A parent domain of the sender's domain.
        (
            "unknown",
            "2001:db8::10",
            "a@mail.example.net",
            "",
            "554 5.7.1 <a@mail.example.net>: Sender address rejected: Access denied",
        ),
        // The domain comes before user@.
        (
            "unknown",
            "2001:db8::10",
            "postmaster@example.net",
            "",
            "554 5.7.1 <postmaster@example.net>: Sender address rejected: Access denied",
        ),
        (
            "unknown",
            "2001:db8::10",
            "spam@anywhere.test",
            "",
            "554 5.7.1 <spam@anywhere.test>: Sender address rejected: Access denied",
        ),
        (
            "unknown",
            "2001:db8::10",
            "postmaster@anywhere.test",
            "",
            "DUNNO",
        ),
        // The null sender is looked up as <>.
        (
            "unknown",
            "2001:db8::10",
            "",
            "",
            "550 5.7.0 <>: Sender address rejected: No bounces here",
        ),
        ("unknown", "2001:db8::10", neutral, "", "DUNNO"),
        // Called from smtpd_sender_restrictions: Postfix adds the sender
        // prefix itself, so rpol does not; the client stage still gets one.
        (
            "unknown",
            "2001:db8::10",
            "user@example.com",
            "sender",
            "554 5.7.1 Sender blocked",
        ),
        (
            "unknown",
            "2001:db8::10",
            "",
            "sender",
            "550 5.7.0 No bounces here",
        ),
        (
            "unknown",
            "203.0.113.200",
            "user@example.com",
            "sender",
            "554 5.7.2 <unknown[203.0.113.200]>: Client host rejected: Your network is blocked",
        ),
    ];
    for (name, addr, sender, context, action) in cases {
        assert_eq!(
            ask(&mut conn, &access_request(name, addr, sender, context)),
            response(action),
            "client {name}[{addr}] sender <{sender}> context {context:?}"
        );
    }
}
