//! `[site] postfix = DIR`: the site facts read from a real main.cf tree in
//! a temporary directory, through the postfix package's postconf: domains,
//! networks, mailboxes and aliases as Postfix resolves them, at start and
//! at every reload; `[site]` keys override; what rpol cannot read is a
//! config error naming the parameter.

use crate::support::dns;
use crate::support::rpol;

use std::path::Path;
use std::time::{Duration, Instant};

use rpol::{Setup, ask, response};

/// A Postfix configuration directory as an MX with virtual domains has it;
/// `@DIR@` is replaced by the directory itself.
const MAIN_CF: &str = "compatibility_level = 3.6
myhostname = mx.real.example
mydomain = real.example
mydestination = $myhostname, localhost.$mydomain, localhost
virtual_mailbox_domains = real.example, hash:@DIR@/vdomains
virtual_mailbox_maps = hash:@DIR@/vmailbox
virtual_alias_maps = texthash:@DIR@/virtual
relay_domains = relayed.example
mynetworks = 127.0.0.0/8 [::1]/128 203.0.113.0/28
recipient_delimiter = -
";

const MASTER_CF: &str = "smtp      inet  n       -       y       -       -       smtpd\n";

/// A Postfix directory in a temporary directory (with postmap source files
/// only: rpol never opens the .db files).
struct PostfixDir {
    dir: tempfile::TempDir,
}

impl PostfixDir {
    fn new(main_cf: &str) -> PostfixDir {
        let dir = tempfile::tempdir().unwrap();
        let p = PostfixDir { dir };
        p.write("main.cf", main_cf);
        p.write("master.cf", MASTER_CF);
        p.write("vdomains", "second.example  OK\n");
        p.write(
            "vmailbox",
            "alice@real.example  real.example/alice/\nbob@second.example second.example/bob/\n",
        );
        p.write(
            "virtual",
            "postmaster@real.example alice@real.example\nroot@mx.real.example alice@real.example\n",
        );
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        let text = text.replace("@DIR@", &self.path().display().to_string());
        // Replaced whole, as an editor saves: never read half-written.
        let tmp = self.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        // Dated a few seconds back, as a file an admin saved is by the
        // time it is read: postconf rereads a main.cf modified within the
        // last second or so every 300 ms until it is older (Postfix's
        // dict_load_file waits for a file to settle).
        let written = std::fs::File::options().write(true).open(&tmp).unwrap();
        written
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        drop(written);
        std::fs::rename(&tmp, self.path().join(name)).unwrap();
    }
}

fn config(postfix: &PostfixDir, site: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"127.0.0.1:9\"]\n\
         [site]\npostfix = \"{}\"\n{site}\n\
         [profile.mx]\n\
         recipient = [\"permit_mynetworks\", \"reject_unlisted_recipient\", \"reject_unauth_destination\"]\n",
        postfix.path().display()
    )
}

fn rcpt(recipient: &str) -> Vec<(&'static str, String)> {
    vec![
        ("protocol_state", "RCPT".into()),
        ("client_address", "198.51.100.9".into()),
        ("client_name", "mx.partner.example".into()),
        ("recipient", recipient.into()),
    ]
}

fn ask_for(rpol: &rpol::Rpol, recipient: &str) -> String {
    ask_attrs(rpol, &rcpt(recipient))
}

fn ask_attrs(rpol: &rpol::Rpol, attrs: &[(&'static str, String)]) -> String {
    let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ask(&mut rpol.connect(), &attrs)
}

const DUNNO: &str = "DUNNO";
const UNKNOWN: &str = "550 5.1.1 User unknown in virtual mailbox table";
const RELAY_DENIED: &str = "554 5.7.1 Relay access denied";

/// The domains, mailboxes and aliases of main.cf are rpol's: mail for them
/// passes, unknown users of them and other domains are refused, as Postfix
/// itself would.
#[test]
fn facts_come_from_main_cf_as_postfix_resolves_them() {
    let postfix = PostfixDir::new(MAIN_CF);
    let rpol = Setup::new(&config(&postfix, "")).start();
    for (rcpt, want) in [
        // virtual_mailbox_domains, its mailbox and its alias.
        ("alice@real.example", DUNNO),
        ("postmaster@real.example", DUNNO),
        ("nobody@real.example", UNKNOWN),
        // recipient_delimiter = - in main.cf.
        ("alice-news@real.example", DUNNO),
        ("alice+news@real.example", UNKNOWN),
        // A domain listed in a hash: table of virtual_mailbox_domains.
        ("bob@second.example", DUNNO),
        ("carol@second.example", UNKNOWN),
        // mydestination ($myhostname expanded): ours, its users are
        // Postfix's local_recipient_maps' to judge.
        ("root@mx.real.example", DUNNO),
        ("anyone@localhost.real.example", DUNNO),
        // relay_domains, subdomains included.
        ("x@relayed.example", DUNNO),
        ("x@sub.relayed.example", DUNNO),
        ("x@elsewhere.example", RELAY_DENIED),
    ] {
        assert_eq!(ask_for(&rpol, rcpt), response(want), "{rcpt}");
    }
    // mynetworks, written in main.cf: trusted.
    let mut trusted = rcpt("x@elsewhere.example");
    trusted[1].1 = "203.0.113.9".into();
    assert_eq!(ask_attrs(&rpol, &trusted), response("DUNNO"));
}

/// Keys written in [site] win over what Postfix says.
#[test]
fn site_keys_override_postfix() {
    let postfix = PostfixDir::new(MAIN_CF);
    let setup = Setup::new(&config(
        &postfix,
        "domains = [\"own.example\"]\nmydestination = []\nrelay_domains = []\n\
         mynetworks = [\"127.0.0.0/8\"]\nrecipient_delimiter = \"+\"\nmailboxes = \"mailboxes\"\n",
    ))
    .file("mailboxes", "dave@own.example x\n");
    let rpol = setup.start();
    for (rcpt, want) in [
        ("dave@own.example", DUNNO),
        ("dave+tag@own.example", DUNNO),
        ("erin@own.example", UNKNOWN),
        ("alice@real.example", RELAY_DENIED),
        ("root@mx.real.example", RELAY_DENIED),
        ("x@relayed.example", RELAY_DENIED),
    ] {
        assert_eq!(ask_for(&rpol, rcpt), response(want), "{rcpt}");
    }
    let mut lan = rcpt("x@elsewhere.example");
    lan[1].1 = "203.0.113.9".into();
    assert_eq!(ask_attrs(&rpol, &lan), response(RELAY_DENIED));
}

/// A mynetworks that main.cf does not set is derived by Postfix from the
/// machine's interfaces (mynetworks_style = subnet before compatibility
/// level 2): rpol never trusts a LAN it was not told about.
#[test]
fn a_derived_mynetworks_trusts_only_loopback() {
    let postfix = PostfixDir::new("mydestination = localhost\n");
    let setup = Setup::new(&config(&postfix, ""));
    let out = setup.command().arg("--check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("mynetworks = 127.0.0.0/8, ::1/128 (")
            && stdout.contains("not trusted: write [site] mynetworks"),
        "{stdout}"
    );
}

/// `--check-config` says what it read and from where.
#[test]
fn check_config_prints_the_facts_and_where_from() {
    let postfix = PostfixDir::new(MAIN_CF);
    let setup = Setup::new(&config(&postfix, "relay_domains = [\"r.example\"]\n"));
    let out = setup.command().arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = postfix.path().display().to_string();
    for line in [
        format!(
            "  domains = real.example, second.example (Postfix {dir}/main.cf: virtual_mailbox_domains, virtual_alias_domains)"
        ),
        format!(
            "  mydestination = mx.real.example, localhost.real.example, localhost (Postfix {dir}/main.cf: mydestination)"
        ),
        "  relay_domains = r.example ([site] relay_domains)".to_string(),
        format!(
            "  mynetworks = 127.0.0.0/8, ::1/128, 203.0.113.0/28 (Postfix {dir}/main.cf: mynetworks)"
        ),
        format!(
            "  mailboxes = 2 from {dir}/vmailbox (Postfix {dir}/main.cf: virtual_mailbox_maps)"
        ),
        format!("  aliases = 2 from {dir}/virtual (Postfix {dir}/main.cf: virtual_alias_maps)"),
        format!("  recipient_delimiter = - (Postfix {dir}/main.cf: recipient_delimiter)"),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line}\nnot in\n{stdout}"
        );
    }
    assert!(stdout.ends_with(&format!("{}: ok\n", setup.config.display())));
}

fn check_config_errors(setup: &Setup) -> Vec<String> {
    let out = setup.command().arg("--check-config").output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(String::from)
        .collect()
}

/// A map rpol cannot read (mysql, ldap, ...) is an error naming the
/// parameter and what to write instead, at the position of `postfix`.
#[test]
fn other_map_types_are_a_config_error_naming_the_parameter() {
    let postfix = PostfixDir::new(&MAIN_CF.replace(
        "texthash:@DIR@/virtual",
        "hash:@DIR@/virtual, mysql:/etc/postfix/mysql-aliases.cf",
    ));
    let setup = Setup::new(&config(&postfix, ""));
    let file = setup.config.display().to_string();
    // virtual_alias_domains is $virtual_alias_maps by default: Postfix
    // looks domains up in that map too.
    let read = "rpol reads hash, lmdb, cdb and texthash maps (from their source file)";
    assert_eq!(
        check_config_errors(&setup),
        [
            format!(
                "{file}:4:11: site.postfix: virtual_alias_domains = mysql:/etc/postfix/mysql-aliases.cf: \
                 {read}: write [site] domains = [\"DOMAIN\", ...] instead"
            ),
            format!(
                "{file}:4:11: site.postfix: virtual_alias_maps = mysql:/etc/postfix/mysql-aliases.cf: \
                 {read}: write [site] aliases = \"FILE\" with the addresses instead"
            )
        ]
    );
    // Written in [site], the keys are not taken from Postfix at all.
    let site = "aliases = \"aliases\"\ndomains = [\"real.example\"]\n";
    let setup = Setup::new(&config(&postfix, site))
        .file("aliases", "postmaster@real.example alice@real.example\n");
    let out = setup.command().arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A Postfix directory that cannot be read is an error at start, never an
/// empty domain list; so is a map source that is missing.
#[test]
fn an_unreadable_postfix_directory_is_an_error_at_start() {
    let postfix = PostfixDir::new(MAIN_CF);
    std::fs::remove_file(postfix.path().join("main.cf")).unwrap();
    let setup = Setup::new(&config(&postfix, ""));
    let file = setup.config.display().to_string();
    let errors = check_config_errors(&setup);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("{file}:4:11: site.postfix: postconf: "))
            && errors[0].contains("main.cf"),
        "{errors:?}"
    );
    let cmd = setup.command();
    let mut rpol = setup.spawn(cmd);
    assert!(!rpol.wait_exit().success());

    let postfix = PostfixDir::new(MAIN_CF);
    std::fs::remove_file(postfix.path().join("vmailbox")).unwrap();
    let setup = Setup::new(&config(&postfix, ""));
    let file = setup.config.display().to_string();
    let errors = check_config_errors(&setup);
    assert!(
        errors.len() == 1
            && errors[0].starts_with(&format!(
                "{file}:4:11: site.postfix: virtual_mailbox_maps: "
            ))
            && errors[0].contains("vmailbox: cannot read"),
        "{errors:?}"
    );
}

/// Up to several rounds of the file watcher (every 2 s by default).
const RELOAD_WAIT: Duration = Duration::from_secs(10);

fn ask_until(rpol: &rpol::Rpol, recipient: &str, want: &str) -> String {
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        let got = ask_for(rpol, recipient);
        if got == response(want) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// main.cf and the map sources are watched like rpol's own files: a
/// change is read without SIGHUP; a main.cf that breaks keeps the old
/// facts.
#[test]
fn main_cf_and_its_maps_are_reloaded_and_a_broken_one_keeps_the_old() {
    let postfix = PostfixDir::new(MAIN_CF);
    // Checked every 200 ms rather than 2 s: the changes are seen sooner.
    let config =
        config(&postfix, "").replace("[site]\n", "[server]\nwatch_interval = \"200ms\"\n[site]\n");
    assert!(config.contains("watch_interval"), "{config}");
    let rpol = Setup::new(&config).start();
    assert_eq!(ask_for(&rpol, "x@new.example"), response(RELAY_DENIED));
    postfix.write(
        "main.cf",
        &MAIN_CF.replace(
            "relay_domains = relayed.example",
            "relay_domains = new.example",
        ),
    );
    assert_eq!(ask_until(&rpol, "x@new.example", DUNNO), response(DUNNO));
    postfix.write(
        "virtual",
        "postmaster@real.example alice@real.example\nsales@real.example alice@real.example\n",
    );
    assert_eq!(
        ask_until(&rpol, "sales@real.example", DUNNO),
        response(DUNNO)
    );
    // A map rpol cannot read: the reload fails, the old facts stay.
    let from = rpol.stderr().len();
    postfix.write(
        "main.cf",
        &MAIN_CF.replace("texthash:@DIR@/virtual", "ldap:/etc/postfix/ldap.cf"),
    );
    rpol.wait_for_log("reload failed", from);
    assert_eq!(ask_for(&rpol, "sales@real.example"), response(DUNNO));
    assert_eq!(ask_for(&rpol, "x@new.example"), response(DUNNO));
}

/// Every new key refuses a misspelling or a wrong type at its position.
#[test]
fn new_keys_are_checked_with_positions() {
    for (site, want) in [
        (
            "postfx = \"/etc/postfix\"\n",
            "6:1: site.postfx: unknown key",
        ),
        (
            "postfix = 1\n",
            "6:11: site.postfix: expected a string, found an integer `1`",
        ),
        (
            "postfix = \"\"\n",
            "6:11: site.postfix: must be an absolute directory",
        ),
        (
            "postfix = \"etc/postfix\"\n",
            "6:11: site.postfix: must be an absolute directory",
        ),
        ("mydestinaton = []\n", "6:1: site.mydestinaton: unknown key"),
        (
            "mydestination = \"a.example\"\n",
            "6:17: site.mydestination: expected an array, found a string \"a.example\"",
        ),
        (
            "mydestination = [\"a..example\"]\n",
            "6:18: site.mydestination: \"a..example\" is not a valid domain name",
        ),
    ] {
        let text = format!(
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\n[site]\ndomains = [\"x.example\"]\nmynetworks = []\n{site}"
        );
        let errors = match rpol_lib::config::load_str(Path::new("p.toml"), &text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(errors.len(), 1, "{site}: {errors:?}");
        assert!(
            errors[0].starts_with(&format!("p.toml:{want}")),
            "{site}: {errors:?}"
        );
    }
}

extern crate rpol as rpol_lib;

/// The package's policy.toml on a Postfix host with its own domains: mail
/// for them passes the port-25 chain with no edit but the directory (and
/// the test's DNS server and listener).
#[test]
fn the_shipped_policy_passes_mail_for_the_hosts_own_domains() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dns = runtime.block_on(dns::TestDns::start_default());
    let postfix = PostfixDir::new(MAIN_CF);
    let repo = env!("CARGO_MANIFEST_DIR");
    let shipped = std::fs::read_to_string(format!("{repo}/packaging/policy.toml")).unwrap();
    let postfix_line = "postfix = \"/etc/postfix\"";
    assert!(
        shipped.lines().any(|l| l == postfix_line),
        "no {postfix_line:?} in packaging/policy.toml"
    );
    // The source tree's [server] (a socket a test can create), not the
    // package's.
    let server = |text: &str| {
        let start = text.find("\n[server]\n").unwrap() + 1;
        let end = start + 1 + text[start + 1..].find("\n[").unwrap() + 1;
        start..end
    };
    let source = std::fs::read_to_string(format!("{repo}/policy.toml")).unwrap();
    let mut shipped = shipped;
    shipped.replace_range(server(&shipped), &source[server(&source)]);
    let text = shipped
        .replace(
            postfix_line,
            &format!("postfix = \"{}\"", postfix.path().display()),
        )
        .replace(
            "nameservers = []",
            &format!("nameservers = [\"{}\"]", dns.addr),
        )
        .replace("\"tables/", &format!("\"{repo}/tables/"));
    let rpol = Setup::new(&text).start();
    let mail = |rcpt: &str| {
        let attrs = [
            ("protocol_state", "RCPT"),
            ("server_port", "25"),
            ("client_address", "203.0.113.10"),
            ("client_name", "mail.good.example"),
            ("reverse_client_name", "mail.good.example"),
            ("helo_name", "mail.good.example"),
            ("sender", "someone@good.example"),
            ("recipient", rcpt),
        ];
        ask(&mut rpol.connect(), &attrs)
    };
    for rcpt in [
        "postmaster@real.example",
        "alice@real.example",
        "bob@second.example",
    ] {
        let got = mail(rcpt);
        assert!(
            got.starts_with("action=DUNNO") || got.starts_with("action=PREPEND Received-SPF"),
            "{rcpt}: {got}"
        );
    }
    assert_eq!(mail("nobody@real.example"), response(UNKNOWN));
    assert_eq!(mail("x@good.example"), response(RELAY_DENIED));
}
