//! Site files and tables are reloaded when they change, without SIGHUP; a
//! file that disappears keeps the old data and logs the error; a reload
//! keeps the runtime state.

#[path = "support/dns.rs"]
mod dns;
#[path = "support/rpol.rs"]
mod rpol;

use std::time::{Duration, Instant};

use rpol::{Setup, ask, response};

const CONFIG: &str = r#"[dns]
nameservers = ["127.0.0.1:9"]

[site]
domains = ["example.com"]
mailboxes = "mailboxes"
aliases = "aliases"

[tables]
clients = "clients"

[profile.mx]
client = ["check_client_access clients"]
recipient = ["reject_unlisted_recipient"]
"#;

/// The file watcher checks every 2 s; allow several rounds.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

fn rcpt(recipient: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("protocol_state", "RCPT"),
        ("client_address", "198.51.100.9"),
        ("client_name", "mx.partner.example"),
        ("recipient", recipient),
    ]
}

const UNKNOWN: &str = "550 5.1.1 User unknown in virtual mailbox table";

/// Asks until the answer is `want` or the wait is over; returns the last.
fn ask_until(rpol: &rpol::Rpol, attrs: &[(&str, &str)], want: &str) -> String {
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        let got = ask(&mut rpol.connect(), attrs);
        if got == response(want) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn changed_files_are_reloaded_and_a_missing_one_keeps_the_old_data() {
    let rpol = Setup::new(CONFIG)
        .file("mailboxes", "alice@example.com x\n")
        .file("aliases", "postmaster@example.com alice@example.com\n")
        .file("clients", "# empty\n")
        .start();
    assert_eq!(
        ask(&mut rpol.connect(), &rcpt("bob@example.com")),
        response(UNKNOWN)
    );

    // A new mailbox takes effect without a signal.
    rpol.setup
        .write("mailboxes", "alice@example.com x\nbob@example.com x\n");
    assert_eq!(
        ask_until(&rpol, &rcpt("bob@example.com"), "DUNNO"),
        response("DUNNO")
    );

    // So does a new alias, and a new access-table entry.
    assert_eq!(
        ask(&mut rpol.connect(), &rcpt("sales@example.com")),
        response(UNKNOWN)
    );
    rpol.setup.write(
        "aliases",
        "postmaster@example.com alice@example.com\nsales@example.com bob@example.com\n",
    );
    assert_eq!(
        ask_until(&rpol, &rcpt("sales@example.com"), "DUNNO"),
        response("DUNNO")
    );
    rpol.setup
        .write("clients", "partner.example REJECT go away\n");
    let blocked = "554 5.7.1 <mx.partner.example[198.51.100.9]>: Client host rejected: go away";
    assert_eq!(
        ask_until(&rpol, &rcpt("bob@example.com"), blocked),
        response(blocked)
    );

    // A file that vanishes: the error is logged, the old data stays.
    let log_len = rpol.stderr().len();
    std::fs::remove_file(rpol.setup.path("aliases")).unwrap();
    let line = rpol.wait_for_log("reload failed", log_len);
    assert!(
        line.contains("keeping the previous configuration"),
        "{line}"
    );
    let err = rpol.wait_for_log("site.aliases", log_len);
    assert!(err.contains("cannot read"), "{err}");
    rpol.setup.write("clients", "# empty again\n");
    assert_eq!(
        ask(&mut rpol.connect(), &rcpt("sales@example.com")),
        response(blocked)
    );
}

/// A reload swaps the policy, never the runtime state: what a transaction
/// was already sent (an access table's PREPEND, its Received-SPF) is not
/// sent again after a reload.
#[test]
fn a_reload_keeps_what_each_transaction_was_sent() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut zones = dns::DEFAULT_ZONES.to_vec();
    zones.push(("spftest.", include_str!("zones/spftest.zone")));
    let dns = runtime.block_on(dns::TestDns::start(&zones));
    let config = format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [spf]\nreceiver = \"mx.example.com\"\n\
         [tables]\nsenders = \"senders\"\n\
         [profile.mx]\nsender = [\"check_sender_access senders\", \"check_spf\"]\n",
        dns.addr
    );
    let rpol = Setup::new(&config)
        .file("senders", "pass.spftest PREPEND X-Tag: partner\n")
        .start();
    let rcpt = |to: &'static str| {
        vec![
            ("protocol_state", "RCPT"),
            ("client_address", "203.0.113.10"),
            ("helo_name", "mail.good.example"),
            ("sender", "someone@pass.spftest"),
            ("recipient", to),
            ("instance", "r.1"),
        ]
    };
    let reload = |rpol: &rpol::Rpol| {
        let from = rpol.stderr().len();
        rpol.signal(libc::SIGHUP);
        rpol.wait_for_log("SIGHUP: reloaded", from);
    };
    // RCPT 1 carries the table's header; Received-SPF waits (one action
    // per response).
    assert_eq!(
        ask(&mut rpol.connect(), &rcpt("a@example.com")),
        response("PREPEND X-Tag: partner")
    );
    reload(&rpol);
    // RCPT 2, after the reload: not X-Tag again, but the Received-SPF.
    assert_eq!(
        ask(&mut rpol.connect(), &rcpt("b@example.com")),
        response(
            "PREPEND Received-SPF: pass (mx.example.com: domain of someone@pass.spftest designates \
             203.0.113.10 as permitted sender) client-ip=203.0.113.10; envelope-from=\"someone@pass.spftest\"; \
             helo=mail.good.example; receiver=mx.example.com; identity=mailfrom; mechanism=\"ip4:203.0.113.0/24\";"
        )
    );
    reload(&rpol);
    // RCPT 3: both went out already.
    assert_eq!(
        ask(&mut rpol.connect(), &rcpt("c@example.com")),
        response("DUNNO")
    );
    drop(dns);
}
