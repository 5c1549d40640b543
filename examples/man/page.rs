//! rpol(8): the clap definition (`rpol::cli`) rendered by clap_mangen, with
//! the sections a daemon's page needs that `--help` does not carry.
//! Shared by `cargo run --example man` and the test that keeps man/rpol.8
//! current (tests/man.rs).

use clap_mangen::Man;

/// Where the pages live in the source tree (and what `cargo deb` ships).
pub const RPOL_8: &str = "man/rpol.8";
pub const POLICY_TOML_5: &str = "man/rpol-policy.toml.5";
/// The serde shape of policy.toml, whose keys rpol-policy.toml(5) documents.
pub const SCHEMA: &str = "src/config/schema.rs";

/// DESCRIPTION, after clap's one-line summary.
const DESCRIPTION: &str = r#".PP
Postfix asks rpol, over the policy delegation protocol
(\fBcheck_policy_service\fR), whether to accept each SMTP transaction.
rpol answers from one ordered rule chain per profile, written in
\fIpolicy.toml\fR with Postfix's own restriction names, lookup tables,
reply codes and wording (see \fBrpol-policy.toml\fR(5)), and logs one
line per decision naming the rule that decided.
.PP
Without a mode option rpol serves: it listens on the sockets systemd passes
(socket activation, \fBLISTEN_FDS\fR), else on \fB\-\-listen\fR, else on
\fB[server] listen\fR.
Started as root it binds its sockets and then runs as \fB\-\-user\fR or
\fB[server] user\fR for good; without one it refuses to start
(\fB\-\-user root\fR stays root, with a warning).
Started as another user (systemd \fBUser=rpol\fR) it changes nothing.
The configuration file, its tables and address files are checked every
\fB[server] watch_interval\fR (2 seconds) and reloaded when they change,
as on \fBSIGHUP\fR; a
configuration that does not load is logged and the running one kept.
"#;

/// The sections after OPTIONS.
const AFTER_OPTIONS: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Reload the configuration and its tables (systemctl reload rpol).
Keys that only a restart applies are named in the log while they differ
from what runs.
.TP
.BR SIGTERM ", " SIGINT
Stop accepting connections, let requests in flight finish
(at most \fB[server] shutdown_timeout\fR), exit.
.SH ENVIRONMENT
.TP
.B RUST_LOG
Log level and filter, default \fBinfo\fR; \fBdebug\fR shows connections
and DNS lookups.
.TP
.BR LISTEN_FDS ", " LISTEN_PID ", " LISTEN_FDNAMES
Sockets passed by systemd socket activation; they replace every listen
address.
.TP
.B JOURNAL_STREAM
Set by systemd when standard error is the journal; rpol then writes to
the journal natively (when it names standard error's device and inode).
.TP
.B NOTIFY_SOCKET
Set by systemd for \fBType=notify\fR: rpol reports READY, RELOADING and
STOPPING.
.SH LOGGING
Under systemd (standard error is the journal: \fBJOURNAL_STREAM\fR) or
with \fB\-\-journal\fR, records go to the journal in its native protocol,
each with its priority (error 3, warning 4, info 6, debug 7:
\fBjournalctl \-p warning \-u rpol\fR shows every warning and error).
Otherwise they go to standard error (without colour codes unless it is a
terminal), or with \fB\-\-syslog\fR and always with \fB\-\-stdio\fR to
syslog, facility mail.
One line per decision:
.PP
.EX
NOQUEUE: action="554 5.7.1 ..." client=unknown[203.0.113.9] from=<> \e
  to=<a@example.com> helo=<> sasl_username=<> protocol_state=RCPT \e
  instance=1a2b.3c4d.5e6f.0 profile=submission rule="client: reject"
.EE
.PP
Text that came from the client is escaped, so it cannot forge a line; the
action is quoted, a \fB"\fR in it written \fB\e"\fR.
\fB[log] decisions\fR chooses which answers get one (\fBall\fR,
\fBrefusals\fR, \fBnone\fR). Identical lines within one second are
written once, then counted in one \fBrepeated\fR \fIN\fR \fBmore
time(s):\fR \fILINE\fR, so a flood of one request costs two lines a
second.
In the journal a decision also carries its parts as fields:
\fBRPOL_RULE\fR, \fBRPOL_ACTION\fR, \fBRPOL_PROFILE\fR, \fBCLIENT\fR,
\fBSENDER\fR, \fBRECIPIENT\fR, \fBSASL_USERNAME\fR, \fBINSTANCE\fR,
\fBQUEUE_ID\fR and \fBPROTOCOL_STATE\fR (those the request left empty are
left out), e.g. \fBjournalctl RPOL_RULE="client: reject"\fR.
.SH EXIT STATUS
0 when the server stopped on a signal, or when \fB\-\-check\-config\fR found
the configuration valid; 1 on an error, which is printed as
\fBrpol:\fR \fImessage\fR (configuration errors as
\fIFILE\fR:\fILINE\fR:\fICOLUMN\fR: \fIkey\fR: \fImessage\fR).
.SH FILES
.TP
.I /etc/rpol/policy.toml
The default configuration; \fBrpol-policy.toml\fR(5).
.TP
.I /etc/rpol/tables/
Access tables and address files the shipped configuration names.
.TP
.I /var/spool/postfix/private/rpol
The policy socket of the Debian package (\fBrpol.socket\fR), which
Postfix names \fBcheck_policy_service unix:private/rpol\fR.
.TP
.I /lib/systemd/system/rpol.service, /lib/systemd/system/rpol.socket
The units of the Debian package.
.SH EXAMPLES
Check a configuration, then ask it what it would answer to a request
(attributes as Postfix sends them, one per line, an empty line at the end;
those left out read as empty):
.PP
.EX
rpol \-\-config /etc/rpol/policy.toml \-\-check\-config
cat >request <<EOF
protocol_state=RCPT
server_port=587
client_address=203.0.113.9
recipient=a@example.com

EOF
rpol \-\-config /etc/rpol/policy.toml \-\-test\-request request
.EE
.PP
The response goes to standard output exactly as the server would send it;
the trace (the profile, each rule with its outcome and what it looked at,
the rule that decided) to standard error.
.PP
Print the main.cf and master.cf lines for a configuration:
.PP
.EX
rpol \-\-config /etc/rpol/policy.toml \-\-postfix\-config
.EE
.SH POSTFIX
\fB\-\-postfix\-config\fR prints the main.cf and master.cf lines that
call rpol for a configuration, and the maps its registered foreign
senders need; it is the one source of them. By hand, the parts are:
.TP
a socket rpol creates
\fB[server] listen = ["unix:/var/spool/postfix/private/rpol"]\fR with
\fBsocket_owner = "postfix"\fR; rpol, started as root, creates the socket
as \fBpostfix\fR in Postfix's \fBprivate/\fR, then runs as
\fB[server] user\fR. main.cf calls it after its own relay guard:
\fBsmtpd_recipient_restrictions = permit_mynetworks,
reject_unauth_destination, check_policy_service unix:private/rpol\fR,
with \fBsmtpd_policy_service_max_idle = 300s\fR.
The Debian package has systemd create the socket instead
(\fBrpol.socket\fR).
.TP
over TCP
\fBcheck_policy_service inet:127.0.0.1:10040\fR, with \fB[server] listen
= ["tcp:127.0.0.1:10040"]\fR.
.TP
submission with its own profile
a master.cf service with \fB\-o
smtpd_policy_service_policy_context=submission\fR, and, when the profile
uses \fBcheck_rate_limit\fR (it counts at END\-OF\-MESSAGE), \fB\-o {
smtpd_end_of_data_restrictions = check_policy_service unix:private/rpol
}\fR.
.TP
spawn mode
one rpol per connection, no daemon (no metrics then):
.EX
rpol  unix  \-  n  n  \-  0  spawn
  user=rpol argv=/usr/sbin/rpol \-\-config /etc/rpol/policy.toml \-\-stdio
.EE
and in main.cf \fBrpol_time_limit = 3600\fR.
.SH SEE ALSO
\fBrpol-policy.toml\fR(5), \fBpostconf\fR(5), \fBaccess\fR(5),
\fBcidr_table\fR(5), \fBspawn\fR(8), \fBsystemd.socket\fR(5),
/usr/share/doc/rpol/README.md
"#;

/// rpol(8) as roff.
/// Text for roff: backslashes and hyphens escaped.
fn roff(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// STORE COMMANDS: each `rpol store` subcommand from the clap definition,
/// with its arguments, and what the page must add (what is stored, the
/// running daemon, postgrey's files).
fn store_commands(out: &mut Vec<u8>) {
    let cli = rpol::cli::command();
    let store = cli.find_subcommand("store").expect("rpol store");
    out.extend_from_slice(b".SH STORE COMMANDS\n");
    out.extend_from_slice(STORE_INTRO.as_bytes());
    for sub in store.get_subcommands() {
        let mut synopsis = format!("\\fBrpol store {}\\fR", roff(sub.get_name()));
        for arg in sub.get_arguments() {
            if arg.is_hide_set() || matches!(arg.get_id().as_str(), "help" | "config") {
                continue;
            }
            match arg.get_long() {
                Some(long) => {
                    let value = arg
                        .get_value_names()
                        .filter(|_| arg.get_action().takes_values())
                        .map(|v| format!(" \\fI{}\\fR", v.join(" ")))
                        .unwrap_or_default();
                    synopsis.push_str(&format!(" [\\fB\\-\\-{}\\fR{value}]", roff(long)));
                }
                None => {
                    let name = arg
                        .get_value_names()
                        .map_or_else(|| arg.get_id().to_string(), |v| v.join(" "));
                    let name = format!("\\fI{}\\fR", roff(&name));
                    if arg.is_required_set() {
                        synopsis.push_str(&format!(" {name}"));
                    } else {
                        synopsis.push_str(&format!(" [{name}]"));
                    }
                }
            }
        }
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.extend_from_slice(format!(".TP\n{synopsis}\n{}\n", roff(&about)).as_bytes());
    }
    out.extend_from_slice(STORE_OUTRO.as_bytes());
}

/// Before the store subcommands.
const STORE_INTRO: &str = r#".PP
\fBrpol store\fR reads \fB[store]\fR and \fB[greylist]\fR of the configuration
(\fB\-c\fR) and works on the embedded file or on Redis.
The embedded file is opened by one process at a time: while rpol runs, the
commands refuse, naming its pid; stop it (\fBsystemctl stop rpol\fR), run
the command, start it again. Redis needs no stop.
.PP
What is stored per greylisting triplet: its key (a SHA\-256 of client
network, normalised sender and recipient), first and last seen, the
requests seen since first seen, and for the listing the client network,
the sender's domain, and the sender and recipient (each cut at 256 bytes;
with \fB[greylist] privacy = true\fR only as \fBsha256:\fR digests).
Per auto\-whitelisted client: its address, passes counted, last counted.
Rate\-limit records hold counts and networks, keyed by a digest.
"#;

/// After the store subcommands.
const STORE_OUTRO: &str = r#".PP
\fBimport\-postgrey\fR runs \fBdb_dump \-p\fR (Debian's \fIdb\-util\fR) on
\fIpostgrey.db\fR ("net/sender/recipient" \(-> "first,last") and
\fIpostgrey_clients.db\fR (client \(-> "count,last"), at most 300 seconds
each. Stop postgrey first. Records already held, expired ones, and keys
postgrey hashed (\fB\-\-privacy\fR) are not imported, and the budgets of
\fB[store]\fR hold; the command says how many of each.
"#;

pub fn render() -> Vec<u8> {
    let man = Man::new(rpol::cli::command())
        .section("8")
        .manual("System Manager's Manual");
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    man.render_title(&mut out).expect("render");
    man.render_name_section(&mut out).expect("render");
    man.render_synopsis_section(&mut out).expect("render");
    out.extend_from_slice(b".SH DESCRIPTION\n");
    out.extend_from_slice(DESCRIPTION.as_bytes());
    man.render_options_section(&mut out).expect("render");
    store_commands(&mut out);
    out.extend_from_slice(AFTER_OPTIONS.as_bytes());
    man.render_version_section(&mut out).expect("render");
    out
}
