//! Rate limits (issue 14) through real sockets: the rpol binary, its
//! embedded store in a temporary directory or a real redis-server, raw
//! policy requests as Postfix's submission service sends them (RCPT, then
//! END-OF-MESSAGE for an accepted message).
//!
//! Budgets: 2 messages, 5 recipients, 2 distinct client networks an hour
//! per login.

use crate::support::redis;
use crate::support::rpol;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Barrier;

use rpol::{Rpol, Setup, ask_action};

const LIMIT: &str = r#"[[rate_limit]]
name = "per_login"
key = "sasl_username"
messages = 2
recipients = 5
distinct_clients = 2
window = "1h"
"#;

/// A config with `store` (a `[store]` body), `limits` and the submission
/// profile; `senders` is a table that rejects spam@example.com.
fn config(store: &str, limits: &str) -> String {
    format!(
        r#"[dns]
nameservers = ["127.0.0.1:9"]

[store]
{store}

{limits}

[metrics]
listen = "127.0.0.1:0"

[tables]
senders = "senders"

[profile.submission]
match = {{ server_port = 587 }}
client = ["permit_sasl_authenticated", "reject"]
sender = ["check_rate_limit per_login", "check_sender_access senders"]

[profile.default]
client = ["dunno"]
"#
    )
}

fn embedded(path: &Path) -> String {
    format!("path = {:?}", path.display().to_string())
}

fn start(config: &str) -> Rpol {
    Setup::new(config)
        .file("senders", "spam@example.com REJECT\n")
        .start()
}

/// One request of a submission transaction.
#[derive(Clone, Copy)]
struct Msg<'a> {
    login: &'a str,
    client: &'a str,
    instance: &'a str,
    sender: &'a str,
    recipients: &'a str,
}

const ALICE: Msg = Msg {
    login: "alice@example.com",
    client: "203.0.113.5",
    instance: "1.1",
    sender: "alice@example.com",
    recipients: "1",
};

impl Msg<'_> {
    fn attrs(&self, state: &str) -> Vec<(&str, String)> {
        self.attrs_to(state, "someone@example.org")
    }

    fn attrs_to(&self, state: &str, recipient: &str) -> Vec<(&str, String)> {
        let mut a = vec![
            ("protocol_state", state.to_string()),
            ("protocol_name", "ESMTP".into()),
            ("client_address", self.client.into()),
            ("client_name", "unknown".into()),
            ("server_port", "587".into()),
            ("helo_name", "laptop".into()),
            ("sender", self.sender.into()),
            ("instance", self.instance.into()),
            (
                "sasl_method",
                if self.login.is_empty() { "" } else { "PLAIN" }.into(),
            ),
            ("sasl_username", self.login.into()),
        ];
        if state == "END-OF-MESSAGE" {
            a.push(("recipient", String::new()));
            a.push(("recipient_count", self.recipients.into()));
        } else {
            a.push(("recipient", recipient.into()));
            a.push(("recipient_count", "0".into()));
        }
        a
    }

    fn ask(&self, rpol: &Rpol, state: &str) -> String {
        let attrs = self.attrs(state);
        let pairs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ask_action(&mut rpol.connect(), &pairs)
    }

    /// One request on `stream`, a transaction's own connection (smtpd
    /// keeps one per session).
    fn ask_on(&self, stream: &mut UnixStream, state: &str, recipient: &str) -> String {
        let attrs = self.attrs_to(state, recipient);
        let pairs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ask_action(stream, &pairs)
    }

    fn rcpt(&self, rpol: &Rpol) -> String {
        self.ask(rpol, "RCPT")
    }

    /// RCPT (which must pass), then END-OF-MESSAGE.
    fn send(&self, rpol: &Rpol) {
        assert_eq!(
            self.rcpt(rpol),
            "DUNNO",
            "RCPT of instance {}",
            self.instance
        );
        assert_eq!(self.ask(rpol, "END-OF-MESSAGE"), "DUNNO");
    }

    fn with(&self, instance: &'static str) -> Msg<'_> {
        Msg { instance, ..*self }
    }
}

/// The reply Postfix shows for a limit in the sender stage (rpol adds the
/// stage's wording; Postfix prefixes its own for the recipient list).
fn refused(budget: &str) -> String {
    format!(
        "450 4.7.1 <alice@example.com>: Sender address rejected: Rate limit \"per_login\" reached: {budget} per 1h; try again later"
    )
}

#[test]
fn a_spent_budget_refuses_at_mail_and_rcpt_and_other_logins_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let rpol = start(&config(&embedded(&dir.path().join("s.redb")), LIMIT));
    ALICE.with("1.1").send(&rpol);
    ALICE.with("1.2").send(&rpol);
    assert_eq!(ALICE.with("1.3").rcpt(&rpol), refused("2 messages"));
    assert_eq!(ALICE.with("1.3").ask(&rpol, "MAIL"), refused("2 messages"));
    // Case does not make another login.
    let shouting = Msg {
        login: "ALICE@example.com",
        ..ALICE.with("1.4")
    };
    assert_eq!(shouting.rcpt(&rpol), refused("2 messages"));
    let bob = Msg {
        login: "bob@example.com",
        sender: "alice@example.com",
        ..ALICE.with("2.1")
    };
    bob.send(&rpol);
    // No login: the login limit does not apply (the client stage rejects).
    let anonymous = Msg {
        login: "",
        ..ALICE.with("3.1")
    };
    assert_eq!(
        anonymous.rcpt(&rpol),
        "554 5.7.1 <unknown[203.0.113.5]>: Client host rejected: Access denied"
    );
    // One warning for the key and window, naming login, count and networks.
    let line = rpol.wait_for_log("rate limit \"per_login\"", 0);
    assert!(
        line.contains("WARN")
            && line.contains("sasl_username=alice@example.com reached its budget")
            && line.contains(
                "2 message(s), 2 recipient(s) in the last 1h from 1 network(s): 203.0.113.0/24"
            )
            && line.contains("client 203.0.113.5"),
        "{line}"
    );
    assert_eq!(rpol.stderr().matches("reached its budget").count(), 1);
    let body = rpol.metrics();
    assert!(
        body.contains("rpol_rate_limit_exceeded_total{limit=\"per_login\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("rpol_store_errors_total 0\n"), "{body}");
}

#[test]
fn transactions_that_end_before_or_at_a_refusal_count_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let mut rpol = start(&config(&embedded(&path), LIMIT));
    // Transactions refused at RCPT by a later rule (the sender table):
    // each releases the reservation its RCPT made, so more of them than
    // the budget holds spend nothing.
    let spam_refused = "554 5.7.1 <spam@example.com>: Sender address rejected: Access denied";
    for i in 0..5 {
        let instance = format!("b.{i}");
        let spam = Msg {
            sender: "spam@example.com",
            instance: &instance,
            ..ALICE
        };
        assert_eq!(spam.rcpt(&rpol), spam_refused);
        // A message the chain refuses at END-OF-MESSAGE is not counted either.
        assert_eq!(spam.ask(&rpol, "END-OF-MESSAGE"), spam_refused);
    }
    ALICE.with("c.1").send(&rpol);
    // The same instance again (Postfix retrying the request) counts once.
    assert_eq!(ALICE.with("c.1").ask(&rpol, "END-OF-MESSAGE"), "DUNNO");
    ALICE.with("c.2").send(&rpol);
    assert_eq!(ALICE.with("c.3").rcpt(&rpol), refused("2 messages"));
    // Transactions abandoned after RCPT (RSET, QUIT: Postfix tells rpol
    // nothing) hold their message until the reservation lapses.
    let bob = |instance| Msg {
        login: "bob@example.com",
        instance,
        ..ALICE
    };
    assert_eq!(bob("a.1").rcpt(&rpol), "DUNNO");
    assert_eq!(bob("a.2").rcpt(&rpol), "DUNNO");
    assert_eq!(bob("a.3").rcpt(&rpol), refused("2 messages"));
    rpol.signal(libc::SIGTERM);
    rpol.wait_exit();
    use ::rpol::state::store::rate::{Exceeded, RESERVATION_TTL};
    use ::rpol::state::store::{Backend, StoreSettings};
    let settings = StoreSettings {
        backend: Backend::Embedded { path },
        ..StoreSettings::default()
    };
    let at = |later| {
        let c = login_check(&settings, "bob@example.com", later);
        (c.exceeded, c.usage.messages, c.usage.held_messages)
    };
    assert_eq!(at(0), (Some(Exceeded::Messages), 0, 2));
    assert_eq!(at(RESERVATION_TTL), (None, 0, 0));
}

/// A MAIL-like check of `login`'s record `later` seconds from now under
/// LIMIT's budgets, with the store opened anew (rpol stopped or not).
fn login_check(
    settings: &::rpol::state::store::StoreSettings,
    login: &str,
    later: u64,
) -> ::rpol::state::store::rate::Check {
    use ::rpol::state::store::Store;
    use ::rpol::state::store::rate::{RateKey, RateParams};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(settings).unwrap();
        let key = RateKey::new("per_login", "sasl_username", login);
        let p = RateParams {
            now: ::rpol::common::unix_now() + later,
            window: 3600,
            messages: 2,
            recipients: 5,
            distinct_clients: 2,
        };
        store
            .rate_check(key, "203.0.113.0/24", "", p)
            .await
            .unwrap()
    })
}

#[test]
fn recipients_count_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let rpol = start(&config(&embedded(&dir.path().join("s.redb")), LIMIT));
    let big = Msg {
        recipients: "5",
        ..ALICE.with("r.1")
    };
    big.send(&rpol);
    assert_eq!(ALICE.with("r.2").rcpt(&rpol), refused("5 recipients"));
    // A hostile recipient_count does not fit the budget: refused at
    // END-OF-MESSAGE, and it spends nothing, not even its own key's.
    let bob = Msg {
        login: "bob@example.com",
        recipients: "99999999999999999999",
        ..ALICE.with("r.3")
    };
    assert_eq!(bob.rcpt(&rpol), "DUNNO");
    assert_eq!(bob.ask(&rpol, "END-OF-MESSAGE"), refused("5 recipients"));
    Msg {
        recipients: "5",
        ..bob.with("r.6")
    }
    .send(&rpol);
    assert_eq!(ALICE.with("r.4").rcpt(&rpol), refused("5 recipients"));
    let carol = Msg {
        login: "carol@example.com",
        ..ALICE.with("r.5")
    };
    assert_eq!(carol.rcpt(&rpol), "DUNNO");
}

/// A message whose RCPTs filled the budget exactly passes DATA (Postfix
/// asks there when a header waits): DATA adds no recipient.
#[test]
fn data_adds_nothing_to_what_the_rcpts_hold() {
    let dir = tempfile::tempdir().unwrap();
    let rpol = start(&config(&embedded(&dir.path().join("s.redb")), LIMIT));
    Msg {
        recipients: "4",
        ..ALICE.with("d.1")
    }
    .send(&rpol);
    let last = ALICE.with("d.2");
    assert_eq!(last.rcpt(&rpol), "DUNNO");
    assert_eq!(last.ask(&rpol, "DATA"), "DUNNO");
    assert_eq!(last.ask(&rpol, "END-OF-MESSAGE"), "DUNNO");
    assert_eq!(ALICE.with("d.3").rcpt(&rpol), refused("2 messages"));
}

#[test]
fn a_third_client_network_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limit = LIMIT.replace("messages = 2", "messages = 100");
    let rpol = start(&config(&embedded(&dir.path().join("s.redb")), &limit));
    Msg {
        client: "203.0.113.5",
        ..ALICE.with("n.1")
    }
    .send(&rpol);
    Msg {
        client: "2001:db8:1:2::7",
        ..ALICE.with("n.2")
    }
    .send(&rpol);
    // The same /24 and the same /64 are the same networks.
    for client in ["203.0.113.200", "2001:db8:1:2:ffff::1"] {
        Msg {
            client,
            ..ALICE.with("n.3")
        }
        .send(&rpol);
    }
    let third = Msg {
        client: "198.51.100.9",
        ..ALICE.with("n.4")
    };
    assert_eq!(third.rcpt(&rpol), refused("2 distinct client networks"));
    let line = rpol.wait_for_log("reached its budget", 0);
    assert!(
        line.contains("3 message(s), 3 recipient(s) in the last 1h from 2 network(s): 2001:db8:1:2::/64 203.0.113.0/24; client 198.51.100.9"),
        "{line}"
    );
}

#[test]
fn counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(&embedded(&dir.path().join("s.redb")), LIMIT);
    let mut first = start(&text);
    ALICE.with("s.1").send(&first);
    ALICE.with("s.2").send(&first);
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit().success());
    let second = start(&text);
    assert_eq!(ALICE.with("s.3").rcpt(&second), refused("2 messages"));
}

/// Senders as keys are the client's choice: the store keeps at most
/// max_rate_records records, none evicted while its window lasts. A new
/// key beyond them is deferred at RCPT (never let through uncounted), and
/// logged and counted as a store error.
#[test]
fn many_senders_as_keys_do_not_grow_the_store_beyond_max_rate_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let limit = LIMIT.replace("sasl_username", "sender");
    let store = format!("{}\nmax_rate_records = 5", embedded(&path));
    let mut rpol = start(&config(&store, &limit));
    let senders: Vec<String> = (0..12).map(|n| format!("s{n}@example.org")).collect();
    for (n, sender) in senders.iter().enumerate() {
        let instance = format!("m.{n}");
        let msg = Msg {
            sender,
            instance: &instance,
            ..ALICE
        };
        if n < 5 {
            msg.send(&rpol);
        } else {
            assert_eq!(
                msg.rcpt(&rpol),
                format!("451 4.3.0 <{sender}>: Sender address rejected: Temporary lookup failure")
            );
        }
    }
    // The first senders' records still count.
    let first = Msg {
        sender: &senders[0],
        ..ALICE.with("m.0b")
    };
    first.send(&rpol);
    assert_eq!(
        first.with("m.0c").rcpt(&rpol).split(':').next(),
        Some("450 4.7.1 <s0@example.org>")
    );
    rpol.wait_for_log(
        "rate limit check failed: full: 5 rate-limit records (max_rate_records)",
        0,
    );
    let body = rpol.metrics();
    assert!(body.contains("rpol_store_errors_total 7\n"), "{body}");
    rpol.signal(libc::SIGTERM);
    rpol.wait_exit();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let entries = rt.block_on(async {
        use ::rpol::state::store::{Backend, Store, StoreSettings};
        let settings = StoreSettings {
            backend: Backend::Embedded { path: path.clone() },
            ..StoreSettings::default()
        };
        let store = Store::open(&settings).unwrap();
        store.entries().await
    });
    assert_eq!(entries, Some(5));
}

#[test]
#[ignore = "needs redis-server"]
fn two_instances_on_one_redis_count_together() {
    let server = redis::redis_server();
    let store = format!(
        "backend = \"redis\"\nurl = {:?}\nprefix = \"t2:\"",
        server.url
    );
    let text = config(&store, LIMIT);
    let a = start(&text);
    let b = start(&text);
    ALICE.with("x.1").send(&a);
    ALICE.with("x.2").send(&b);
    assert_eq!(ALICE.with("x.3").rcpt(&a), refused("2 messages"));
    assert_eq!(ALICE.with("x.3").rcpt(&b), refused("2 messages"));
    // The instance counted on one host is known to the other.
    let bob = Msg {
        login: "bob@example.com",
        ..ALICE.with("y.1")
    };
    bob.send(&a);
    assert_eq!(bob.ask(&b, "END-OF-MESSAGE"), "DUNNO");
    assert_eq!(bob.with("y.2").rcpt(&b), "DUNNO");
}

#[test]
fn a_store_that_is_down_follows_on_store_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let store =
        format!("backend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/\"\ntimeout = \"300ms\"");
    let rpol = start(&config(&store, LIMIT));
    assert_eq!(ALICE.rcpt(&rpol), "DUNNO");
    assert_eq!(ALICE.ask(&rpol, "END-OF-MESSAGE"), "DUNNO");
    rpol.wait_for_log("store (redis): rate limit check failed", 0);
    let deferring = LIMIT.to_string() + "on_store_error = \"defer\"\n";
    let rpol = start(&config(&store, &deferring));
    assert_eq!(
        ALICE.rcpt(&rpol),
        "451 4.3.0 <alice@example.com>: Sender address rejected: Temporary lookup failure"
    );
    // After the data the message is accepted anyway: it is only not counted.
    assert_eq!(ALICE.ask(&rpol, "END-OF-MESSAGE"), "DUNNO");
}

#[test]
fn postfix_config_calls_rpol_at_end_of_data_for_profiles_that_count() {
    let dir = tempfile::tempdir().unwrap();
    let setup =
        Setup::new(&config(&embedded(&dir.path().join("s.redb")), LIMIT)).file("senders", "");
    let out = std::process::Command::new(rpol::RPOL)
        .arg("--config")
        .arg(&setup.config)
        .arg("--postfix-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l
            == "  -o { smtpd_end_of_data_restrictions = check_policy_service inet:127.0.0.1:10040 }"),
        "{text}"
    );
    // Port 25 (main.cf) does not count here: no main.cf line.
    assert!(!text.contains("\nsmtpd_end_of_data_restrictions"), "{text}");
}

/// The commented default in the shipped policy.toml works once uncommented
/// (with a [store]).
#[test]
fn the_shipped_commented_default_compiles() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let keys = [
        "[[rate_limit]]",
        "name =",
        "key =",
        "messages =",
        "recipients =",
        "distinct_clients =",
        "window =",
        "action =",
        "on_store_error =",
    ];
    let mut uncommented = 0;
    let mut out = String::new();
    // Only the [[rate_limit]] block: other commented tables ([greylist])
    // have keys of the same names.
    let mut in_block = false;
    for line in text.lines() {
        in_block = line == "# [[rate_limit]]" || (in_block && line.starts_with("# "));
        let line = match line.strip_prefix("# ") {
            Some(rest) if in_block && keys.iter().any(|k| rest.starts_with(k)) => {
                uncommented += 1;
                rest.to_string()
            }
            _ if line.trim()
                == "# \"check_rate_limit per_login\",           # see [[rate_limit]] above" =>
            {
                uncommented += 1;
                "  \"check_rate_limit per_login\",".to_string()
            }
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(uncommented, 10, "{out}");
    out.push_str("[store]\npath = \"/nonexistent/rpol.redb\"\n");
    let loaded = ::rpol::config::load_str(&path, &out).unwrap_or_else(|e| panic!("{e}"));
    let submission = loaded
        .policy
        .profiles
        .iter()
        .find(|p| &*p.name == "submission")
        .unwrap();
    assert_eq!(
        &*submission.stages[2][0].label,
        "sender: check_rate_limit per_login"
    );
}

/// Transactions the parallel tests run at once, each on its own connection.
const PARALLEL: usize = 20;
/// RCPTs each of those transactions sends.
const RCPTS: usize = 4;

/// Issue 24 item 4: `PARALLEL` transactions of one login, each with
/// `RCPTS` RCPTs, all answered before any END-OF-MESSAGE, then every
/// END-OF-MESSAGE at once. Returns (messages, recipients) accepted in all.
fn parallel_transactions(rpol: &Rpol) -> (u64, u64) {
    let rcpts_done = Barrier::new(PARALLEL);
    let accepted: Vec<(u64, u64)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|t| {
                let rcpts_done = &rcpts_done;
                s.spawn(move || {
                    let instance = format!("p.{t}");
                    let msg = Msg {
                        instance: &instance,
                        ..ALICE
                    };
                    let mut stream = rpol.connect();
                    let mut rcpts = 0;
                    for r in 0..RCPTS {
                        let to = format!("r{r}@example.org");
                        if msg.ask_on(&mut stream, "RCPT", &to) == "DUNNO" {
                            rcpts += 1;
                        }
                    }
                    rcpts_done.wait();
                    // Postfix has no DATA without an accepted recipient.
                    if rcpts == 0 {
                        return (0, 0);
                    }
                    let count = rcpts.to_string();
                    let eom = Msg {
                        recipients: &count,
                        ..msg
                    };
                    match eom.ask_on(&mut stream, "END-OF-MESSAGE", "").as_str() {
                        "DUNNO" => (1, rcpts),
                        _ => (0, 0),
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    accepted
        .into_iter()
        .fold((0, 0), |(m, r), (am, ar)| (m + am, r + ar))
}

/// Budgets of 3 messages (then of 5 recipients) on `store`: parallel
/// transactions accept no more than that in all, and the record says so.
fn parallel_cannot_overspend(store: &str, settings: &::rpol::state::store::StoreSettings) {
    let three = LIMIT
        .replace("messages = 2", "messages = 3")
        .replace("recipients = 5", "recipients = 1000");
    let mut rpol = start(&config(store, &three));
    let (messages, _) = parallel_transactions(&rpol);
    assert!(
        messages <= 3,
        "{messages} messages accepted of a budget of 3"
    );
    assert_eq!(messages, 3, "the budget is spent, not lost");
    rpol.signal(libc::SIGTERM);
    rpol.wait_exit();
    let u = login_check(settings, "alice@example.com", 0).usage;
    assert_eq!((u.messages, u.recipients), (3, 3 * RCPTS as u64));
}

fn parallel_cannot_overspend_recipients(
    store: &str,
    settings: &::rpol::state::store::StoreSettings,
) {
    let five = LIMIT.replace("messages = 2", "messages = 1000");
    let mut rpol = start(&config(store, &five));
    let (_, recipients) = parallel_transactions(&rpol);
    assert!(
        recipients <= 5,
        "{recipients} recipients accepted of a budget of 5"
    );
    assert_eq!(recipients, 5, "the budget is spent, not lost");
    rpol.signal(libc::SIGTERM);
    rpol.wait_exit();
    let u = login_check(settings, "alice@example.com", 0).usage;
    assert_eq!(u.recipients, recipients);
}

#[test]
fn parallel_transactions_cannot_overspend_the_embedded_store() {
    use ::rpol::state::store::{Backend, StoreSettings};
    for recipients in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let settings = StoreSettings {
            backend: Backend::Embedded { path: path.clone() },
            ..StoreSettings::default()
        };
        if recipients {
            parallel_cannot_overspend_recipients(&embedded(&path), &settings);
        } else {
            parallel_cannot_overspend(&embedded(&path), &settings);
        }
    }
}

#[test]
#[ignore = "needs redis-server"]
fn parallel_transactions_cannot_overspend_redis() {
    use ::rpol::state::store::{Backend, StoreSettings};
    let server = redis::redis_server();
    for (prefix, recipients) in [("t3:", false), ("t4:", true)] {
        let store = format!(
            "backend = \"redis\"\nurl = {:?}\nprefix = {prefix:?}",
            server.url
        );
        let settings = StoreSettings {
            backend: Backend::Redis {
                url: server.url.clone(),
            },
            prefix: prefix.into(),
            ..StoreSettings::default()
        };
        if recipients {
            parallel_cannot_overspend_recipients(&store, &settings);
        } else {
            parallel_cannot_overspend(&store, &settings);
        }
    }
}
