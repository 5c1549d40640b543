//! Site files and tables are reloaded when they change, without SIGHUP; a
//! file that disappears keeps the old data and logs the error; a reload
//! keeps the runtime state. One SIGHUP or one change is one reload; a
//! restart-only key is warned about while it differs from what runs; the
//! load runs off the async workers.

use crate::support::dns;
use crate::support::rpol;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpol::{Setup, ask, response};

const CONFIG: &str = r#"[server]
watch_interval = "100ms"

[dns]
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

/// The file watcher looks every 100 ms (`[server] watch_interval`, the
/// smallest allowed); a bound for a busy machine.
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
        std::thread::sleep(Duration::from_millis(20));
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

/// How long the file watcher (a look every 100 ms, `[server]
/// watch_interval` in [`six_tables`]) is given to reload unasked: five
/// looks.
const WATCHER_LOOKS: Duration = Duration::from_millis(500);

/// How many times `needle` is in the log after byte `from`.
fn count_in_log(rpol: &rpol::Rpol, needle: &str, from: usize) -> usize {
    rpol.stderr()
        .get(from..)
        .unwrap_or("")
        .matches(needle)
        .count()
}

/// Six tables of six sizes: the files a policy was built from were listed
/// in another order at each load (a HashMap's), which the watcher took for
/// a change as soon as two stamps side by side differed.
fn six_tables() -> Setup {
    let mut config = String::from(
        "[server]\nwatch_interval = \"100ms\"\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\n[tables]\n",
    );
    let mut rules = Vec::new();
    for i in 0..6 {
        config.push_str(&format!("t{i} = \"t{i}\"\n"));
        rules.push(format!("\"check_client_access t{i}\""));
    }
    config.push_str(&format!("[profile.mx]\nclient = [{}]\n", rules.join(", ")));
    let mut setup = Setup::new(&config);
    for i in 0..6 {
        let text = format!("192.0.2.{i} REJECT t{i}{}\n", "x".repeat(i));
        setup = setup.file(&format!("t{i}"), &text);
    }
    setup
}

#[test]
fn one_sighup_or_one_change_is_one_reload() {
    let rpol = six_tables().start();
    let from = rpol.stderr().len();
    rpol.signal(libc::SIGHUP);
    rpol.wait_for_log("SIGHUP: reloaded", from);
    std::thread::sleep(WATCHER_LOOKS);
    let log = rpol.stderr();
    assert_eq!(count_in_log(&rpol, "reloaded", from), 1, "{}", &log[from..]);
    let from = rpol.stderr().len();
    rpol.setup.write("t3", "192.0.2.3 REJECT t3 again\n");
    rpol.wait_for_log("file change: reloaded", from);
    std::thread::sleep(WATCHER_LOOKS);
    assert_eq!(count_in_log(&rpol, "reloaded", from), 1);
}

/// The config with `[server] user` (the account rpol runs as) and
/// `threads`.
fn server_config(user: &str, threads: usize) -> String {
    format!(
        "[server]\nuser = \"{user}\"\nthreads = {threads}\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\n\
         [profile.mx]\nrecipient = [\"reject\"]\n"
    )
}

#[test]
fn a_restart_only_key_is_warned_about_while_it_differs_from_what_runs() {
    // Without --user, so that `[server] user` is what runs: this account.
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .expect("the test's own account")
        .name;
    let setup = Setup::new(&server_config(&me, 1));
    let socket = setup.path("rpol.sock");
    let mut cmd = Command::new(rpol::RPOL);
    cmd.arg("--config")
        .arg(&setup.config)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .env("RUST_LOG", "info")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    let rpol = setup.spawn(cmd);
    rpol.wait_for_log("listening on", 0);
    let reload = |text: &str| {
        let from = rpol.stderr().len();
        rpol.setup.write("policy.toml", text);
        rpol.signal(libc::SIGHUP);
        rpol.wait_for_log("SIGHUP: reloaded", from);
        from
    };

    let from = reload(&server_config("nobody", 2));
    let warning = rpol.wait_for_log("takes effect only after a restart", from);
    assert!(warning.contains("server.user"), "{warning}");
    assert!(warning.contains("server.threads"), "{warning}");

    // Still different at the next reload: still said.
    let from = reload(&server_config("nobody", 1));
    let warning = rpol.wait_for_log("takes effect only after a restart", from);
    assert!(warning.contains("server.user"), "{warning}");
    assert!(!warning.contains("server.threads"), "{warning}");

    // Back to what runs: nothing to say.
    let from = reload(&server_config(&me, 1));
    assert_eq!(
        count_in_log(&rpol, "takes effect only after a restart", from),
        0,
        "{}",
        &rpol.stderr()[from..]
    );
}

/// A table big enough that loading it takes a while.
fn big_table(entries: usize) -> String {
    let mut text = String::with_capacity(entries * 32);
    for i in 0..entries {
        text.push_str(&format!("host{i}.example REJECT big\n"));
    }
    text
}

/// Loading and compiling the policy leaves the async worker free: a task
/// on the same single-threaded runtime runs while the load does.
#[test]
fn a_reload_loads_off_the_async_workers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("policy.toml");
    std::fs::write(
        &config,
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\n\
         [tables]\nbig = \"big\"\n\
         [profile.mx]\nclient = [\"check_client_access big\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("big"), big_table(20_000)).unwrap();
    let loaded = ::rpol::config::load(&config).expect("config loads");
    let shared = Arc::new(::rpol::server::Shared::new(loaded, config).expect("runtime state"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (reloaded_at, ticked_at) = runtime.block_on(async {
        let reload = async {
            shared.reload().await.expect("reloads");
            Instant::now()
        };
        let tick = async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Instant::now()
        };
        tokio::join!(reload, tick)
    });
    assert!(
        ticked_at < reloaded_at,
        "the runtime's one worker was held by the load"
    );
}
