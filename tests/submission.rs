//! The submission port (issue: per-port SASL rules, sender ownership,
//! outbound SPF guard) through a real socket: the rpol binary, a loopback
//! DNS server serving tests/zones/spftest.zone, raw policy requests.
//!
//! Egress 198.51.100.7: chain.spftest authorizes it (pass), pass.spftest
//! does not (fail), soft.spftest softfails, neutral.spftest is neutral,
//! tempfail.spftest's include answers SERVFAIL (temperror).

use crate::support::fixture;

use fixture::dns_server::DEFAULT_ZONES;
use fixture::{Case, DNS_ADDR, Fixture, Spec};

const MAILBOXES: &str = "alice@example.com x\nbob@example.com x\ncarol@example.com x\n";
const ALIASES: &str = "shop@example.com alice@example.com\n\
family@example.com alice@example.com, bob@example.com\n";

fn config(submission_sender: &str) -> String {
    format!(
        r#"[dns]
nameservers = ["{DNS_ADDR}"]
timeout = "1s"
attempts = 1

[site]
mynetworks = ["127.0.0.0/8"]
domains = ["example.com"]
recipient_delimiter = "+"
mailboxes = "mailboxes"
aliases = "aliases"
login_from_aliases = true
egress = ["198.51.100.7"]

[[site.foreign_sender]]
address = "alice.private@mail.example.org"
login = "alice@example.com"
relay = "[smtp.mail.example.org]:587"

[profile.smtp]
match = {{ server_port = 25 }}
ignore_sasl = true
client = ["permit_sasl_authenticated", "reject"]

[profile.submission]
match = {{ server_port = 587 }}
client = ["permit_sasl_authenticated", "reject"]
sender = [{submission_sender}]
"#
    )
}

const SEED_SENDER: &str =
    r#""reject_unlisted_sender", "reject_known_sender_login_mismatch", "check_outbound_spf""#;

/// The submission config with `sender_rules`; DNS is the default zones and
/// spftest.zone, SERVFAIL for servfail.spftest, silence for silent.spftest.
/// Every request is whole (see [`submit`]): the base request is empty.
async fn start(sender_rules: &str) -> Fixture {
    let zones = [
        DEFAULT_ZONES,
        &[("spftest.", include_str!("zones/spftest.zone"))],
    ]
    .concat();
    let s = Fixture::start(Spec {
        zones: &zones,
        config: &config(sender_rules),
        files: &[("mailboxes", MAILBOXES), ("aliases", ALIASES)],
        base: &[],
    })
    .await;
    s.dns.inject_servfail("servfail.spftest");
    s.dns.inject_silence("silent.spftest");
    s
}

/// An authenticated (or not, with login "") request on `port`.
fn submit(
    port: &'static str,
    login: &'static str,
    sender: &'static str,
) -> Vec<(&'static str, &'static str)> {
    let mut attrs = vec![
        ("protocol_state", "RCPT"),
        ("server_port", port),
        ("client_address", "198.51.100.50"),
        ("client_name", "unknown"),
        ("helo_name", "laptop"),
        ("sender", sender),
        ("recipient", "friend@elsewhere.example"),
    ];
    if !login.is_empty() {
        attrs.push(("sasl_method", "PLAIN"));
        attrs.push(("sasl_username", login));
    }
    attrs
}

/// What `reject` in the client stage answers the unauthenticated or
/// ignored-SASL client of [`submit`].
const ACCESS_DENIED: &str =
    "554 5.7.1 <unknown[198.51.100.50]>: Client host rejected: Access denied";

fn not_owned(sender: &str, login: &str) -> String {
    format!("553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}")
}

/// check_outbound_spf's refusal of `carol@{domain}`, whose SPF gives
/// `result` for our egress (rules/submission.rs `refuse`).
fn refused(domain: &str, result: &str) -> String {
    format!(
        "550 5.7.23 <carol@{domain}>: Sender address rejected: SPF of {domain} gives {result} for our outgoing \
         address 198.51.100.7: receivers would reject or junk this mail. Send it through {domain}'s own mail \
         server, or ask the postmaster to register the address"
    )
}

/// check_outbound_spf's answer when the SPF of `carol@{domain}` cannot be
/// checked: `problem` is viaspf's error cause.
fn cannot_check(domain: &str, problem: &str) -> String {
    format!(
        "451 4.7.24 <carol@{domain}>: Sender address rejected: cannot check the SPF record of {domain} for our \
         outgoing address 198.51.100.7 ({problem}); try again later"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_client_is_rejected_on_submission() {
    let s = start(SEED_SENDER).await;
    s.check(&[(
        "no AUTH on 587",
        submit("587", "", "alice@example.com"),
        ACCESS_DENIED.into(),
    )]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_is_ignored_on_port_25() {
    let s = start(SEED_SENDER).await;
    // The same permit_sasl_authenticated, reject: AUTH counts on 587 only.
    s.check(&[
        (
            "AUTH on 25",
            submit("25", "alice@example.com", "alice@example.com"),
            ACCESS_DENIED.into(),
        ),
        (
            "AUTH on 587",
            submit("587", "alice@example.com", "alice@example.com"),
            "DUNNO".into(),
        ),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_of_our_addresses() {
    let s = start(SEED_SENDER).await;
    let before = s.dns.query_count();
    let cases: &[Case] = &[
        // A login owns its mailbox and the aliases that resolve to it.
        (
            "alias of the login",
            submit("587", "alice@example.com", "shop@example.com"),
            "DUNNO".into(),
        ),
        (
            "mailbox with an extension",
            submit("587", "alice@example.com", "alice+news@example.com"),
            "DUNNO".into(),
        ),
        // Not someone else's.
        (
            "someone else's alias",
            submit("587", "bob@example.com", "shop@example.com"),
            not_owned("shop@example.com", "bob@example.com"),
        ),
        (
            "someone else's mailbox",
            submit("587", "bob@example.com", "alice@example.com"),
            not_owned("alice@example.com", "bob@example.com"),
        ),
        // An address of two users is owned by both, and by nobody else.
        (
            "shared alias, first owner",
            submit("587", "alice@example.com", "family@example.com"),
            "DUNNO".into(),
        ),
        (
            "shared alias, second owner in upper case",
            submit("587", "BOB@example.com", "family@example.com"),
            "DUNNO".into(),
        ),
        (
            "shared alias, not an owner",
            submit("587", "carol@example.com", "family@example.com"),
            not_owned("family@example.com", "carol@example.com"),
        ),
        // An address of ours that does not exist.
        (
            "unlisted address of ours",
            submit("587", "alice@example.com", "nobody@example.com"),
            "550 5.1.0 <nobody@example.com>: Sender address rejected: User unknown in virtual mailbox table"
                .into(),
        ),
    ];
    s.check(cases);
    assert_eq!(
        s.dns.query_count(),
        before,
        "our own domains need no SPF lookup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_foreign_address() {
    let s = start(SEED_SENDER).await;
    let before = s.dns.query_count();
    s.check(&[(
        "its registered login",
        submit("587", "alice@example.com", "alice.private@mail.example.org"),
        "DUNNO".into(),
    )]);
    assert_eq!(
        s.dns.query_count(),
        before,
        "relayed through its own server: no SPF check"
    );
    s.check(&[(
        "another login",
        submit("587", "bob@example.com", "alice.private@mail.example.org"),
        not_owned("alice.private@mail.example.org", "bob@example.com"),
    )]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_spf_guard() {
    let s = start(SEED_SENDER).await;
    let login = "carol@example.com";
    let cases: &[Case] = &[
        // Egress authorised.
        (
            "pass",
            submit("587", login, "carol@chain.spftest"),
            "DUNNO".into(),
        ),
        (
            "neutral",
            submit("587", login, "carol@neutral.spftest"),
            "DUNNO".into(),
        ),
        // Not authorised: fail, softfail.
        (
            "fail",
            submit("587", login, "carol@pass.spftest"),
            refused("pass.spftest", "fail"),
        ),
        (
            "softfail",
            submit("587", login, "carol@soft.spftest"),
            refused("soft.spftest", "softfail"),
        ),
        // DNS down: try again later, never an accept.
        (
            "SERVFAIL",
            submit("587", login, "carol@tempfail.spftest"),
            cannot_check("tempfail.spftest", "DNS lookup failed"),
        ),
        // A query that times out fails the record lookup: viaspf says
        // "DNS lookup failed" (its "timed out" is for the whole evaluation).
        (
            "silence",
            submit("587", login, "carol@silent.spftest"),
            cannot_check("silent.spftest", "DNS lookup failed"),
        ),
    ];
    s.check(cases);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_exact_alternative_rejects_unregistered_foreign_addresses() {
    let s = start(r#""reject_authenticated_sender_login_mismatch""#).await;
    s.check(&[
        (
            "foreign address",
            submit("587", "carol@example.com", "carol@chain.spftest"),
            not_owned("carol@chain.spftest", "carol@example.com"),
        ),
        (
            "alias of the login",
            submit("587", "alice@example.com", "shop@example.com"),
            "DUNNO".into(),
        ),
    ]);
}

/// Issue 24 item 11: the spellings Postfix's resolver turns into one of
/// our addresses (a second `@`, `%` routing through localhost, a trailing
/// dot, no domain) are that address for ownership: never a way around it,
/// and never refused as unknown when the login owns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_syntax_does_not_escape_ownership() {
    let s = start(SEED_SENDER).await;
    let mut cases: Vec<Case> = Vec::new();
    for sender in [
        "alice@example.com@",
        "alice%example.com@localhost",
        "alice@example.com@localhost",
        "alice",
        "alice%example.com",
        "example.com!alice",
        "example.com!alice@localhost",
    ] {
        cases.push((
            "another login's address, respelled",
            submit("587", "bob@example.com", sender),
            not_owned(sender, "bob@example.com"),
        ));
        cases.push((
            "the login's own address, respelled",
            submit("587", "alice@example.com", sender),
            "DUNNO".into(),
        ));
    }
    cases.push((
        "trailing dot: the login's own address",
        submit("587", "alice@example.com", "alice@example.com."),
        "DUNNO".into(),
    ));
    cases.push((
        "trailing dot: another login's address",
        submit("587", "bob@example.com", "alice@example.com."),
        not_owned("alice@example.com.", "bob@example.com"),
    ));
    // Routing beyond what rpol resolves: nobody's, refused even for alice
    // (by reject_unlisted_sender, the first rule of the chain).
    let deep: &'static str = Box::leak(
        format!("alice%example.com{}@localhost", "%localhost".repeat(16)).into_boxed_str(),
    );
    cases.push((
        "routing too deep to resolve",
        submit("587", "alice@example.com", deep),
        format!(
            "550 5.1.0 <{deep}>: Sender address rejected: User unknown in virtual mailbox table"
        ),
    ));
    cases.push((
        "unqualified and unlisted",
        submit("587", "alice@example.com", "nobody"),
        "550 5.1.0 <nobody>: Sender address rejected: User unknown in virtual mailbox table".into(),
    ));
    s.check(&cases);
}
