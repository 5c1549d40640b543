//! The submission port (issue: per-port SASL rules, sender ownership,
//! outbound SPF guard) through a real socket: the rpol binary, a loopback
//! DNS server serving tests/zones/spftest.zone, raw policy requests.
//!
//! Egress 198.51.100.7: chain.spftest authorizes it (pass), pass.spftest
//! does not (fail), soft.spftest softfails, neutral.spftest is neutral,
//! tempfail.spftest's include answers SERVFAIL (temperror).

#[path = "support/dns.rs"]
mod dns_server;
#[path = "support/rpol.rs"]
mod rpol;

use dns_server::{DEFAULT_ZONES, TestDns};
use rpol::{Rpol, Setup, ask, response};

const MAILBOXES: &str = "alice@example.com x\nbob@example.com x\ncarol@example.com x\n";
const ALIASES: &str = "shop@example.com alice@example.com\n\
family@example.com alice@example.com, bob@example.com\n";

fn config(dns: &TestDns, submission_sender: &str) -> String {
    format!(
        r#"[dns]
nameservers = ["{}"]
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
"#,
        dns.addr
    )
}

const SEED_SENDER: &str =
    r#""reject_unlisted_sender", "reject_known_sender_login_mismatch", "check_outbound_spf""#;

async fn start(sender_rules: &str) -> (TestDns, Rpol) {
    let mut zones = DEFAULT_ZONES.to_vec();
    zones.push(("spftest.", include_str!("zones/spftest.zone")));
    let dns = TestDns::start(&zones).await;
    dns.inject_servfail("servfail.spftest");
    dns.inject_silence("silent.spftest");
    let rpol = Setup::new(&config(&dns, sender_rules))
        .file("mailboxes", MAILBOXES)
        .file("aliases", ALIASES)
        .start();
    (dns, rpol)
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

fn not_owned(sender: &str, login: &str) -> String {
    response(&format!(
        "553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_client_is_rejected_on_submission() {
    let (_dns, rpol) = start(SEED_SENDER).await;
    let mut c = rpol.connect();
    assert_eq!(
        ask(&mut c, &submit("587", "", "alice@example.com")),
        response("554 5.7.1 <unknown[198.51.100.50]>: Client host rejected: Access denied")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_is_ignored_on_port_25() {
    let (_dns, rpol) = start(SEED_SENDER).await;
    let mut c = rpol.connect();
    // The same permit_sasl_authenticated, reject: AUTH counts on 587 only.
    assert_eq!(
        ask(
            &mut c,
            &submit("25", "alice@example.com", "alice@example.com")
        ),
        response("554 5.7.1 <unknown[198.51.100.50]>: Client host rejected: Access denied")
    );
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "alice@example.com", "alice@example.com")
        ),
        response("DUNNO")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_of_our_addresses() {
    let (dns, rpol) = start(SEED_SENDER).await;
    let mut c = rpol.connect();
    let before = dns.query_count();
    // A login owns its mailbox and the aliases that resolve to it.
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "alice@example.com", "shop@example.com")
        ),
        response("DUNNO")
    );
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "alice@example.com", "alice+news@example.com")
        ),
        response("DUNNO")
    );
    // Not someone else's.
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "bob@example.com", "shop@example.com")
        ),
        not_owned("shop@example.com", "bob@example.com")
    );
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "bob@example.com", "alice@example.com")
        ),
        not_owned("alice@example.com", "bob@example.com")
    );
    // An address of two users is owned by both, and by nobody else.
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "alice@example.com", "family@example.com")
        ),
        response("DUNNO")
    );
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "BOB@example.com", "family@example.com")
        ),
        response("DUNNO")
    );
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "carol@example.com", "family@example.com")
        ),
        not_owned("family@example.com", "carol@example.com")
    );
    // An address of ours that does not exist.
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "alice@example.com", "nobody@example.com")
        ),
        response(
            "550 5.1.0 <nobody@example.com>: Sender address rejected: User unknown in virtual mailbox table"
        )
    );
    assert_eq!(
        dns.query_count(),
        before,
        "our own domains need no SPF lookup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_foreign_address() {
    let (dns, rpol) = start(SEED_SENDER).await;
    let mut c = rpol.connect();
    let before = dns.query_count();
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "alice@example.com", "alice.private@mail.example.org")
        ),
        response("DUNNO")
    );
    assert_eq!(
        dns.query_count(),
        before,
        "relayed through its own server: no SPF check"
    );
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "bob@example.com", "alice.private@mail.example.org")
        ),
        not_owned("alice.private@mail.example.org", "bob@example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_spf_guard() {
    let (_dns, rpol) = start(SEED_SENDER).await;
    let mut c = rpol.connect();
    let login = "carol@example.com";
    // Egress authorised.
    assert_eq!(
        ask(&mut c, &submit("587", login, "carol@chain.spftest")),
        response("DUNNO")
    );
    assert_eq!(
        ask(&mut c, &submit("587", login, "carol@neutral.spftest")),
        response("DUNNO")
    );
    // Not authorised: fail, softfail.
    let refused = |domain: &str, result: &str| {
        response(&format!(
            "550 5.7.23 <carol@{domain}>: Sender address rejected: SPF of {domain} gives {result} for our outgoing \
             address 198.51.100.7: receivers would reject or junk this mail. Send it through {domain}'s own mail \
             server, or ask the postmaster to register the address"
        ))
    };
    assert_eq!(
        ask(&mut c, &submit("587", login, "carol@pass.spftest")),
        refused("pass.spftest", "fail")
    );
    assert_eq!(
        ask(&mut c, &submit("587", login, "carol@soft.spftest")),
        refused("soft.spftest", "softfail")
    );
    // DNS down: try again later, never an accept.
    assert_eq!(
        ask(&mut c, &submit("587", login, "carol@tempfail.spftest")),
        response(
            "451 4.7.24 <carol@tempfail.spftest>: Sender address rejected: cannot check the SPF record of \
             tempfail.spftest for our outgoing address 198.51.100.7 (DNS lookup failed); try again later"
        )
    );
    let silent = ask(&mut c, &submit("587", login, "carol@silent.spftest"));
    assert!(silent.starts_with("action=451 4.7.24 "), "{silent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_exact_alternative_rejects_unregistered_foreign_addresses() {
    let (_dns, rpol) = start(r#""reject_authenticated_sender_login_mismatch""#).await;
    let mut c = rpol.connect();
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "carol@example.com", "carol@chain.spftest")
        ),
        not_owned("carol@chain.spftest", "carol@example.com")
    );
    assert_eq!(
        ask(
            &mut c,
            &submit("587", "alice@example.com", "shop@example.com")
        ),
        response("DUNNO")
    );
}

#[test]
fn login_rules_need_a_login_map_and_outbound_spf_needs_egress() {
    let setup = Setup::new(
        "[profile.submission]\nsender = [\"reject_sender_login_mismatch\", \"check_outbound_spf\"]\n",
    );
    let out = setup
        .command()
        .arg("--check-config")
        .output()
        .expect("rpol runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:11: profile.submission.sender: needs a login map"),
        "{err}"
    );
    assert!(
        err.contains(":2:43: profile.submission.sender: needs [site] egress"),
        "{err}"
    );
}

#[test]
fn postfix_config_matches_the_shipped_policy() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rpol"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policy.toml"),
            "--postfix-config",
        ])
        .output()
        .expect("rpol runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "    check_policy_service inet:127.0.0.1:10040",
        "sender_dependent_relayhost_maps = hash:/etc/postfix/rpol_sender_relay",
        "smtp_sasl_password_maps = hash:/etc/postfix/rpol_sasl_passwd",
        "submission inet n - y - - smtpd",
        "  -o { smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:10040, permit_sasl_authenticated, reject }",
        "alice.private@mail.example.org\t[smtp.mail.example.org]:587",
        "alice.private@mail.example.org\talice.private@mail.example.org:PASSWORD",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}
