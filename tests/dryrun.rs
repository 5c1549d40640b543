//! A dry run in Postfix's words (issue 25 item 3) and profiles that fit
//! real setups (item 4), against the rpol binary over its unix socket and
//! a real loopback DNS server:
//!
//! - `warn_if_reject` before a rule: that rule's reject, defer or
//!   defer_if_permit is logged as `reject_warning` and the chain goes on;
//! - `mode = "warn"`: the profile's refusal is logged the same way and the
//!   answer is what the chain had passed through (Received-SPF), else
//!   DUNNO; `rpol_reject_warnings_total` counts it;
//! - `server_port` and `policy_context` lists, `like`, and the overlap of
//!   two profiles' matches refused at load.

use crate::support::fixture;

use std::path::Path;

use fixture::dns_server::DEFAULT_ZONES;
use fixture::{DNS_ADDR, Fixture, RCPT, Spec};

/// The same chain enforced (policy_context "mx") and dry-run ("trial",
/// taken with `like`).
fn config() -> String {
    format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"500ms\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [spf]\nreceiver = \"mx.example.com\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [profile.mx]\nmatch = {{ policy_context = \"mx\" }}\n\
         recipient = [\"check_spf\", \"reject_unauth_destination\"]\n\
         [profile.trial]\nmatch = {{ policy_context = \"trial\" }}\nlike = \"mx\"\nmode = \"warn\"\n"
    )
}

async fn start() -> Fixture {
    Fixture::start(Spec {
        zones: DEFAULT_ZONES,
        config: &config(),
        files: &[],
        base: RCPT,
    })
    .await
}

/// The value of one sample line of an exposition (0 when absent).
fn sample(exposition: &str, series: &str) -> String {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or("0")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warn_mode_profile_passes_what_the_same_chain_refuses() {
    let s = start().await;
    let spf = "PREPEND Received-SPF: pass (mx.example.com: domain of someone@good.example \
               designates 203.0.113.10 as permitted sender) client-ip=203.0.113.10; \
               envelope-from=\"someone@good.example\"; helo=mail.good.example; \
               receiver=mx.example.com; identity=mailfrom; mechanism=\"ip4:203.0.113.0/24\";";
    // Mail both let through: the same answer.
    assert_eq!(s.ask(&[("policy_context", "mx"), ("instance", "a")]), spf);
    assert_eq!(
        s.ask(&[("policy_context", "trial"), ("instance", "b")]),
        spf
    );
    // A relay attempt: refused by the enforcing profile...
    let relay = [("recipient", "friend@example.org")];
    let mut q = relay.to_vec();
    q.extend([("policy_context", "mx"), ("instance", "c")]);
    // (Postfix adds "<friend@example.org>: Recipient address rejected: ".)
    assert_eq!(s.ask(&q), "554 5.7.1 Relay access denied");
    // ...and by the dry run only in the log: the header still goes out.
    let mut q = relay.to_vec();
    q.extend([("policy_context", "trial"), ("instance", "d")]);
    assert_eq!(s.ask(&q), spf);
    let who = "client=mail.good.example[203.0.113.10] from=<someone@good.example> \
               to=<friend@example.org> helo=<mail.good.example> sasl_username=<> \
               protocol_state=RCPT instance=d";
    let line = s
        .daemon
        .wait_for_log("profile=trial rule=\"recipient: reject_unauth", 0);
    assert!(
        line.ends_with(&format!(
            "NOQUEUE: reject_warning: action=\"554 5.7.1 Relay access denied\" \
             {who} profile=trial rule=\"recipient: reject_unauth_destination\""
        )),
        "{line}"
    );
    let line = s.daemon.wait_for_log(
        &format!("{who} profile=trial rule=\"recipient: check_spf\""),
        0,
    );
    assert!(
        line.contains(&format!(
            "NOQUEUE: action=\"{}\" {who}",
            spf.replace('"', "\\\"")
        )),
        "{line}"
    );
    // Counted as a would-be refusal, and answered as what went out.
    let m = s.daemon.metrics();
    let count = |metric: &str, profile: &str, action: &str| {
        let series = format!("rpol_{metric}_total{{profile=\"{profile}\",action=\"{action}\"}}");
        sample(&m, &series)
    };
    assert_eq!(count("reject_warnings", "trial", "REJECT"), "1", "{m}");
    assert_eq!(count("reject_warnings", "trial", "DEFER"), "0", "{m}");
    assert_eq!(count("reject_warnings", "mx", "REJECT"), "0", "{m}");
    assert_eq!(count("requests", "trial", "PREPEND"), "2", "{m}");
    assert_eq!(count("requests", "trial", "REJECT"), "0", "{m}");
    assert_eq!(count("requests", "mx", "REJECT"), "1", "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warn_mode_refusal_with_nothing_passed_is_answered_dunno() {
    // SPF fail is refused before any header: the dry run answers DUNNO.
    let s = start().await;
    let fail = [
        ("client_address", "198.51.100.99"),
        ("client_name", "unknown"),
        ("reverse_client_name", "unknown"),
    ];
    let mut q = fail.to_vec();
    q.push(("policy_context", "mx"));
    let refused = s.ask(&q);
    assert!(refused.starts_with("550 5.7.23 "), "{refused}");
    let mut q = fail.to_vec();
    q.push(("policy_context", "trial"));
    assert_eq!(s.ask(&q), "DUNNO");
    let line = s
        .daemon
        .wait_for_log("reject_warning: action=\"550 5.7.23 ", 0);
    assert!(
        line.contains(&format!(
            "action=\"{}\" client=unknown[198.51.100.99]",
            refused.replace('"', "\\\"")
        )),
        "{line}"
    );
    assert!(
        line.ends_with("profile=trial rule=\"recipient: check_spf\""),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_if_reject_logs_the_next_rules_refusal_and_the_chain_goes_on() {
    let s = Fixture::start(Spec {
        zones: DEFAULT_ZONES,
        config: &format!(
            "[dns]\nnameservers = [\"{DNS_ADDR}\"]\n[site]\ndomains = [\"example.com\"]\n\
             [profile.mx]\nclient = [\"warn_if_reject\", \"defer_if_permit\", \"permit\"]\n\
             recipient = [\"WARN_IF_REJECT\", \"reject_unauth_destination\", \"check_recipient_access inline\"]\n\
             [tables]\ninline = \"access\"\n"
        ),
        files: &[("access", "stranger@example.org REJECT no strangers\n")],
        base: RCPT,
    })
    .await;
    // Relay denied only in the log; the next rule (a table) still decides.
    assert_eq!(s.ask(&[("recipient", "friend@example.org")]), "DUNNO");
    assert_eq!(
        s.ask(&[("recipient", "stranger@example.org")]),
        "554 5.7.1 no strangers"
    );
    // Each refusal logged instead of answered has its line, before the
    // decision's (the defer_if_permit before the permit too).
    s.daemon
        .wait_for_log("rule=\"recipient: check_recipient_access inline\"", 0);
    let lines: Vec<String> = s
        .daemon
        .stderr()
        .lines()
        .filter_map(|l| Some(format!("NOQUEUE: {}", l.split_once("NOQUEUE: ")?.1)))
        .collect();
    let who = |rcpt: &str| {
        format!(
            "client=mail.good.example[203.0.113.10] from=<someone@good.example> to=<{rcpt}> \
             helo=<mail.good.example> sasl_username=<> protocol_state=RCPT instance= profile=mx"
        )
    };
    let mut want = Vec::new();
    for (rcpt, decision) in [
        ("friend@example.org", "action=\"DUNNO\" {who} rule=-"),
        (
            "stranger@example.org",
            "action=\"554 5.7.1 no strangers\" {who} rule=\"recipient: check_recipient_access inline\"",
        ),
    ] {
        let who = who(rcpt);
        want.push(format!(
            "NOQUEUE: reject_warning: action=\"DEFER_IF_PERMIT 4.7.0 <mail.good.example[203.0.113.10]>: \
             Client host rejected: defer_if_permit requested\" {who} rule=\"client: defer_if_permit\""
        ));
        want.push(format!(
            "NOQUEUE: reject_warning: action=\"554 5.7.1 Relay access denied\" {who} \
             rule=\"recipient: reject_unauth_destination\""
        ));
        want.push(format!("NOQUEUE: {}", decision.replace("{who}", &who)));
    }
    assert_eq!(lines, want);
    // Only the rule right after warn_if_reject is softened.
    let trace = s.trace(&[("recipient", "stranger@example.org")]).await;
    assert!(
        trace.contains("warn_if_reject: recipient: reject_unauth_destination would answer \"554 5.7.1 Relay access denied\": reject_warning"),
        "{trace}"
    );
}

/// `--check-config`'s errors for a policy with `profiles` (TOML).
fn check_config(profiles: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.toml");
    std::fs::write(&path, profiles).expect("write");
    match rpol::config::load(&path) {
        Ok(_) => String::new(),
        Err(e) => e
            .to_string()
            .replace(&format!("{}", path.display()), "p.toml"),
    }
}

#[test]
fn new_profile_keys_are_checked_with_their_position() {
    let cases = [
        (
            "[profile.a]\nlike = \"b\"\n",
            "p.toml:2:8: profile.a.like: no profile named \"b\"",
        ),
        (
            "[profile.a]\nlike = \"b\"\nmatch = { server_port = 1 }\n[profile.b]\nlike = \"a\"\n",
            "p.toml:2:8: profile.a.like: a cycle: a -> b -> a\np.toml:5:8: profile.b.like: a cycle: b -> a -> b",
        ),
        (
            "[profile.a]\nlike = \"a\"\n",
            "p.toml:2:8: profile.a.like: a cycle: a -> a",
        ),
        (
            "[profile.a]\nlike = 1\n",
            "p.toml:2:8: profile.a.like: expected a string, found an integer `1`",
        ),
        (
            "[profile.a]\nlikes = \"b\"\n",
            "p.toml:2:1: profile.a.likes: unknown key",
        ),
        (
            "[profile.a]\nmode = \"dry\"\n",
            "p.toml:2:8: profile.a.mode: expected \"enforce\" or \"warn\"",
        ),
        (
            "[profile.a]\nmode = \"dry\"\nmatch = { server_port = 1 }\n[profile.b]\nlike = \"a\"\n",
            "p.toml:2:8: profile.a.mode: expected \"enforce\" or \"warn\"",
        ),
        (
            "[profile.a]\nmode = true\n",
            "p.toml:2:8: profile.a.mode: expected a string, found a boolean `true`",
        ),
        (
            "[profile.a]\nmodes = \"warn\"\n",
            "p.toml:2:1: profile.a.modes: unknown key",
        ),
        (
            "[profile.a]\nmatch = { server_port = [465, \"587\"] }\n",
            "p.toml:2:31: profile.a.match.server_port: expected an integer, found a string \"587\"",
        ),
        (
            "[profile.a]\nmatch = { server_port = [] }\n",
            "p.toml:2:25: profile.a.match.server_port: an empty list matches no request: leave the key out to match any",
        ),
        (
            "[profile.a]\nmatch = { server_port = true }\n",
            "p.toml:2:25: profile.a.match.server_port: expected a port number or a list of them, found a boolean `true`",
        ),
        (
            "[profile.a]\nmatch = { policy_context = [\"a\", 1] }\n",
            "p.toml:2:34: profile.a.match.policy_context: expected a string, found an integer `1`",
        ),
        (
            "[profile.a]\nmatch = { server_ports = [465] }\n",
            "p.toml:2:11: profile.a.match.server_ports: unknown key",
        ),
        (
            "[profile.a]\nclient = [\"permit\", \"warn_if_reject\"]\n",
            "p.toml:2:21: profile.a.client: warn_if_reject must be followed by the rule it applies to",
        ),
        (
            "[profile.a]\nclient = [\"warn_if_reject\", \"warn_if_reject\", \"reject\"]\n",
            "p.toml:2:29: profile.a.client: warn_if_reject twice in a row",
        ),
        (
            "[profile.a]\nclient = [\"warn_if_reject reject\"]\n",
            "p.toml:2:11: profile.a.client: warn_if_reject takes no argument",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(check_config(text), want, "{text}");
    }
}

#[test]
fn two_profiles_matching_one_request_are_refused() {
    assert_eq!(
        check_config(
            "[profile.a]\nmatch = { server_port = [465, 587] }\n\
             [profile.b]\nmatch = { server_port = [587, 2525] }\n\
             [profile.c]\nmatch = { server_port = 587, policy_context = \"x\" }\n\
             [profile.d]\nmatch = { policy_context = [\"x\", \"y\"] }\n"
        ),
        "p.toml:3:1: profile.b.match: a request with server_port=587 matches both this profile \
         (server_port=587,2525) and profile \"a\" (server_port=465,587): say which one serves it"
    );
    // A rule taken with `like` that does not compile is reported once,
    // where it is written.
    assert_eq!(
        check_config(
            "[profile.a]\nmatch = { server_port = 25 }\nclient = [\"frob\"]\n\
             [profile.b]\nlike = \"a\"\nmatch = { server_port = 26 }\n"
        ),
        "p.toml:3:11: profile.a.client: unknown rule \"frob\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_profile_serves_several_ports_and_another_takes_its_stages() {
    let s = Fixture::start(Spec {
        zones: DEFAULT_ZONES,
        config: &format!(
            "[dns]\nnameservers = [\"{DNS_ADDR}\"]\n[site]\ndomains = [\"example.com\"]\n\
             [profile.submission]\nmatch = {{ server_port = [465, 587] }}\n\
             client = [\"permit_sasl_authenticated\", \"reject\"]\n\
             recipient = [\"reject_unauth_destination\"]\n\
             [profile.partners]\nmatch = {{ policy_context = [\"partners\", \"agents\"] }}\nlike = \"submission\"\n\
             client = [\"permit\"]\n\
             [profile.default]\nclient = [\"dunno\"]\n"
        ),
        files: &[],
        base: RCPT,
    })
    .await;
    let denied = "554 5.7.1 <mail.good.example[203.0.113.10]>: Client host rejected: Access denied";
    for port in ["465", "587"] {
        assert_eq!(s.ask(&[("server_port", port)]), denied, "{port}");
        assert_eq!(
            s.ask(&[
                ("server_port", port),
                ("sasl_method", "PLAIN"),
                ("sasl_username", "alice")
            ]),
            "DUNNO",
            "{port}"
        );
    }
    assert_eq!(s.ask(&[("server_port", "25")]), "DUNNO");
    // partners: its own client stage, submission's recipient stage; its
    // context beats the port.
    for ctx in ["partners", "agents"] {
        let q = [("server_port", "587"), ("policy_context", ctx)];
        assert_eq!(s.ask(&q), "DUNNO", "{ctx}");
        let q = [
            ("server_port", "587"),
            ("policy_context", ctx),
            ("recipient", "friend@example.org"),
        ];
        assert_eq!(s.ask(&q), "554 5.7.1 Relay access denied", "{ctx}");
    }
}

#[test]
fn the_shipped_policy_serves_587_and_465_with_one_submission_profile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let loaded = rpol::config::load(&root.join("policy.toml")).expect("shipped policy.toml");
    for port in ["465", "587"] {
        let req = rpol::protocol::Request::from_pairs([("server_port", port)]);
        let name = loaded.policy.select(&req).map(|p| p.name.to_string());
        assert_eq!(name.as_deref(), Some("submission"), "{port}");
    }
    // --postfix-config: a master.cf service for each port.
    let text = rpol::postfix_config::render(&loaded.server, &loaded.policy, Path::new("p"));
    for service in [
        "submissions inet n - y - - smtpd\n  -o syslog_name=postfix/submissions\n  -o smtpd_tls_wrappermode=yes\n",
        "submission inet n - y - - smtpd\n  -o syslog_name=postfix/submission\n  -o smtpd_tls_security_level=encrypt\n",
    ] {
        assert!(text.contains(service), "{service} not in\n{text}");
    }
    // The package's copy says the same (tests/packaging.rs keeps the rest
    // of the two files in step).
    let packaged = std::fs::read_to_string(root.join("packaging/policy.toml")).expect("read");
    assert!(
        packaged.contains("\n[profile.submission]\nmatch = { server_port = [465, 587] }\n"),
        "{packaged}"
    );
}

/// A rate limit in a warn-mode profile: the message its chain would have
/// refused is accepted, so it counts (and the next one is the limit's own
/// would-be refusal). With `[log] decisions = "refusals"` the warnings are
/// logged and the DUNNO answers are not.
#[test]
fn a_warn_mode_profile_counts_what_it_lets_through() {
    let rpol = fixture::daemon::Setup::new(
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\n[log]\ndecisions = \"refusals\"\n\
         [store]\npath = \"state.redb\"\n\
         [[rate_limit]]\nname = \"per_login\"\nkey = \"sasl_username\"\nmessages = 1\nwindow = \"1h\"\n\
         [tables]\nsenders = \"senders\"\n\
         [profile.submission]\nmatch = { server_port = 587 }\nmode = \"warn\"\n\
         client = [\"permit_sasl_authenticated\", \"reject\"]\n\
         sender = [\"check_rate_limit per_login\", \"check_sender_access senders\"]\n",
    )
    .file("senders", "spam@example.com REJECT\n")
    .start();
    let ask = |state: &str, instance: &str| {
        let rcpt = if state == "RCPT" {
            "someone@example.org"
        } else {
            ""
        };
        let attrs = [
            ("protocol_state", state),
            ("client_address", "203.0.113.5"),
            ("client_name", "unknown"),
            ("server_port", "587"),
            ("helo_name", "laptop"),
            ("sender", "spam@example.com"),
            ("recipient", rcpt),
            ("recipient_count", if rcpt.is_empty() { "1" } else { "0" }),
            ("instance", instance),
            ("sasl_method", "PLAIN"),
            ("sasl_username", "alice@example.com"),
        ];
        fixture::daemon::ask_action(&mut rpol.connect(), &attrs)
    };
    // The first message: the table would refuse it at RCPT and at the end.
    assert_eq!(ask("RCPT", "1"), "DUNNO");
    assert_eq!(ask("END-OF-MESSAGE", "1"), "DUNNO");
    // It was accepted, so it counted: the second is over the budget.
    assert_eq!(ask("RCPT", "2"), "DUNNO");
    let limit = rpol.wait_for_log("rule=\"sender: check_rate_limit per_login\"", 0);
    assert!(
        limit.contains(
            "NOQUEUE: reject_warning: action=\"450 4.7.1 <spam@example.com>: Sender address rejected: \
             Rate limit \\\"per_login\\\" reached: 1 messages per 1h; try again later\" client=unknown[203.0.113.5]"
        ),
        "{limit}"
    );
    let text = rpol.stderr();
    let decisions: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("rpol::decision"))
        .collect();
    assert_eq!(decisions.len(), 3, "{text}");
    assert!(
        decisions[..2]
            .iter()
            .all(|l| l.contains("reject_warning: action=\"554 5.7.1 <spam@example.com>: Sender address rejected: Access denied\" ")),
        "{text}"
    );
    assert!(!text.contains("action=\"DUNNO\""), "{text}");
}
