//! Site files and tables are reloaded when they change, without SIGHUP; a
//! file that disappears keeps the old data and logs the error.

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
