//! policy.toml: loading and compiling it into the server settings and a
//! [`Policy`].
//!
//! Every value a later check may refuse is kept as `toml::Spanned`, and
//! unknown keys are collected with their paths, so each error reads
//! `file:line:col: key: message`. The loader collects every error it can
//! find instead of stopping at the first. Relative paths resolve against the
//! config file's directory. This file owns the entry points and the order of
//! compilation; each section compiles in its own file (schema.rs is the
//! serde shape, errors.rs the errors and their positions).

mod dns;
mod dnsbl;
mod errors;
mod greylist;
mod host;
mod postfix;
mod postfix_site;
mod profiles;
mod ratelimit;
mod schema;
mod server;
mod site;
mod spf;
mod store;
mod values;

use std::path::{Path, PathBuf};

use crate::dns::Resolver;
use crate::policy::Policy;
use schema::ConfigFile;

pub use errors::{ConfigError, ConfigErrors};
pub use server::{DEFAULT_ERROR_ACTION, ListenAddr, ServerSettings};
pub use values::parse_duration;

/// Default config path when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/rpol/policy.toml";

/// What a config file compiles to: how the daemon serves, and the policy
/// it serves (swapped whole on reload).
#[derive(Debug)]
pub struct Loaded {
    pub server: ServerSettings,
    pub policy: Policy,
}

/// How the rpol that loads the config serves: the store it may open
/// depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// One long-running process (listeners, systemd sockets).
    Listener,
    /// `--stdio`: Postfix's spawn(8) starts one process per connection, so
    /// several run at once.
    Spawned,
}

/// Reads and compiles a config file for a long-running rpol.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_for(path, Serving::Listener)
}

/// Reads and compiles a config file for the way rpol will serve it.
pub fn load_for(path: &Path, serving: Serving) -> Result<Loaded, ConfigErrors> {
    load_str_for(path, &read(path)?, serving)
}

/// `--check-config`: reads and compiles a config file as [`load_for`]
/// does, then checks what it needs of this host (host.rs: the accounts
/// it names, the store, socket directories and files that the account rpol
/// serves as must reach). `user` is `--user`.
pub fn check(path: &Path, serving: Serving, user: Option<&str>) -> Result<Loaded, ConfigErrors> {
    let text = read(path)?;
    let loaded = load_str_for(path, &text, serving)?;
    let mut cx = Compiler::new(path, &text);
    cx.host(&loaded, user);
    cx.errors.sort_by_key(|e| (e.line, e.column));
    if cx.errors.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigErrors(cx.errors))
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        // No text to point into: the error is about the whole file (line 0).
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config: {e}"),
        }])
    })
}

/// Compiles config text; `path` names it in errors and anchors relative paths.
pub fn load_str(path: &Path, text: &str) -> Result<Loaded, ConfigErrors> {
    load_str_for(path, text, Serving::Listener)
}

fn load_str_for(path: &Path, text: &str, serving: Serving) -> Result<Loaded, ConfigErrors> {
    let mut cx = Compiler::new(path, text);
    let parsed = toml::Deserializer::parse(text).and_then(|de| {
        let mut unknown = Vec::new();
        let file: ConfigFile =
            serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))?;
        Ok((file, unknown))
    });
    // Parsed once for the positions of keys (see errors::key_span).
    let document = toml::de::DeTable::parse(text).ok();
    let file = match parsed {
        Ok((file, unknown)) => {
            for path in unknown {
                // serde_ignored names Option and Spanned wrappers too.
                let key = path
                    .split('.')
                    .filter(|s| *s != "?" && !s.starts_with("$__serde_spanned"))
                    .collect::<Vec<_>>()
                    .join(".");
                let span = document
                    .as_ref()
                    .map_or(0..0, |d| errors::key_span(d.get_ref(), &key));
                cx.error(span, &key, "unknown key");
            }
            file
        }
        Err(e) => {
            // serde names no key and Rust's types: the key is found by the
            // value's position, the types said in TOML's words.
            let span = e.span().unwrap_or(0..0);
            let key = document
                .as_ref()
                .map_or(String::new(), |d| errors::key_at(d.get_ref(), span.start));
            cx.error(span, &key, errors::toml_message(e.message().trim_end()));
            return Err(ConfigErrors(cx.errors));
        }
    };
    let loaded = cx.compile(file);
    if serving == Serving::Spawned
        && let Some(Loaded { server, .. }) = &loaded
        && let Some(store) = &server.store
        && matches!(store.backend, crate::state::store::Backend::Embedded { .. })
    {
        // redb locks its file for one process: every other spawned rpol
        // would exit unanswered (Postfix: 451), and one open session would
        // hold off all the others.
        let span = document.as_ref().map_or(0..0, |d| {
            let backend = errors::key_span(d.get_ref(), "store.backend");
            if backend.is_empty() {
                errors::key_span(d.get_ref(), "store")
            } else {
                backend
            }
        });
        cx.error(
            span,
            "store.backend",
            "the embedded store is opened by one process at a time, and with --stdio \
             Postfix's spawn(8) runs one rpol per connection: use backend = \"redis\", \
             or run rpol as a listener (check_policy_service unix:private/rpol)",
        );
    }
    cx.errors.sort_by_key(|e| (e.line, e.column));
    match loaded {
        Some(loaded) if cx.errors.is_empty() => Ok(loaded),
        _ => Err(ConfigErrors(cx.errors)),
    }
}

struct Compiler<'t> {
    path: PathBuf,
    base: PathBuf,
    text: &'t str,
    positions: errors::Positions,
    errors: Vec<ConfigError>,
}

impl<'t> Compiler<'t> {
    fn new(path: &Path, text: &'t str) -> Compiler<'t> {
        Compiler {
            path: path.to_path_buf(),
            base: path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            text,
            positions: errors::Positions::default(),
            errors: Vec::new(),
        }
    }

    /// The policy, or `None` when the resolver could not be built (the
    /// error is recorded with the others).
    fn compile(&mut self, file: ConfigFile) -> Option<Loaded> {
        // Destructured whole so that a new field cannot be forgotten here.
        let ConfigFile {
            server,
            site,
            postfix,
            dns,
            spf,
            outbound_spf,
            store,
            greylist,
            tables,
            profile,
            metrics,
            log,
            rate_limit,
            dnsbl,
        } = file;
        let mut server = self.server(server);
        self.metrics(metrics, &mut server);
        server.log_decisions = self.log(log);
        server.store = self.store(store);
        let postfix = self.postfix(postfix);
        let (rbl_code, default_rbl_reply) = (postfix.rbl_code, postfix.default_rbl_reply.clone());
        let mut files = vec![self.path.clone()];
        let mut site = self.site(site, postfix, &mut files);
        let (dnsbl_replies, dnsbl_health, dnsbl_sites) =
            self.dnsbl(dnsbl, rbl_code, default_rbl_reply);
        site.dnsbl_replies = dnsbl_replies;
        site.dnsbl_health = dnsbl_health;
        site.dnsbl_sites = dnsbl_sites.map(std::sync::Arc::new);
        site.spf = self.spf(spf, &mut files);
        site.outbound_spf = self.outbound_spf(outbound_spf);
        site.greylist = self.greylist(
            greylist,
            server.store.is_some(),
            site.codes.access,
            site.dnsbl_sites.as_deref(),
            &mut files,
        );
        let dns_config = self.dns(dns);
        let mut resolver = self.tables(tables, site.codes.access);
        resolver.rate_limits = self.rate_limits(rate_limit);
        resolver.has_store = server.store.is_some();
        let profiles = self.profiles(profile, &mut resolver, &site);
        files.extend(resolver.files());
        // Built once to check [dns] as serving would; the server's runtime
        // state builds the resolver it uses.
        if let Err(e) = Resolver::new(&dns_config) {
            self.error(0..0, "dns", e.to_string());
            return None;
        }
        let policy = Policy {
            site,
            profiles: profiles.into_iter().map(|(p, _)| p).collect(),
            dns_config,
            files,
            unmatched: Default::default(),
            rule_results: Default::default(),
        };
        Some(Loaded { server, policy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match load_str(Path::new("p.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// reject_unless_dmarc only where DMARC can rescue a result; the
    /// domains and the suffix list checked at load.
    #[test]
    fn spf_dmarc_settings() {
        assert_eq!(
            errors("[spf.helo]\nfail = \"reject_unless_dmarc\"\n"),
            [
                "p.toml:2:8: spf.helo.fail: \"reject_unless_dmarc\" is only for [spf.mail_from] fail and softfail"
            ]
        );
        assert_eq!(
            errors("[spf.mail_from]\nneutral = \"reject_unless_dmarc\"\n"),
            [
                "p.toml:2:11: spf.mail_from.neutral: \"reject_unless_dmarc\" is only for [spf.mail_from] fail and softfail"
            ]
        );
        assert_eq!(
            errors("[outbound_spf]\nfail = \"reject_unless_dmarc\"\n"),
            [
                "p.toml:2:8: outbound_spf.fail: \"reject_unless_dmarc\" is only for [spf.mail_from] fail and softfail"
            ]
        );
        assert_eq!(
            errors("[spf.mail_from]\nfail = \"reject_unless_dmark\"\n"),
            [
                "p.toml:2:8: spf.mail_from.fail: expected \"accept\", \"reject\", \"reject_unless_dmarc\", \"defer\" or \"defer_if_permit\""
            ]
        );
        assert_eq!(
            errors(
                "[spf.mail_from]\nreject_not_pass_domains = [\"ok.example\", \"bad..example\"]\n"
            ),
            [
                "p.toml:2:42: spf.mail_from.reject_not_pass_domains: \"bad..example\" is not a valid domain name"
            ]
        );
        let e = errors("[spf]\npublic_suffix_list = \"/nonexistent/psl.dat\"\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "p.toml:2:22: spf.public_suffix_list: /nonexistent/psl.dat: cannot read:"
            ),
            "{e:?}"
        );
        assert!(errors(
            "[spf.mail_from]\nfail = \"reject_unless_dmarc\"\nsoftfail = \"reject_unless_dmarc\"\n\
             reject_not_pass_domains = [\"bücher.example\"]\n"
        )
        .is_empty());
    }

    /// One spurious key in each table of the schema: the error names its
    /// dotted path and the position of the key itself. A row per table
    /// (and per way of writing it: header, inline, array element).
    #[test]
    fn every_table_denies_unknown_keys() {
        const RELAY: &str = "login = \"a\"\nrelay = \"[smtp.x.example]:587\"\n";
        let foreign_one =
            format!("[[site.foreign_sender]]\naddress = \"a@x.example\"\n{RELAY}bogus = 1\n");
        let foreign_two = format!(
            "[[site.foreign_sender]]\naddress = \"a@x.example\"\n{RELAY}\n[[site.foreign_sender]]\naddress = \"b@x.example\"\n{RELAY}bogus = 1\n"
        );
        let cases: &[(&str, &[&str])] = &[
            ("bogus = 1\n", &["p.toml:1:1: bogus: unknown key"]),
            (
                "[server]\nmax_connections = 5\nbogus = 1\n",
                &["p.toml:3:1: server.bogus: unknown key"],
            ),
            (
                "[site]\ndomains = [\"x.example\"]\nbogus = 1\n",
                &["p.toml:3:1: site.bogus: unknown key"],
            ),
            (
                &foreign_one,
                &["p.toml:5:1: site.foreign_sender.0.bogus: unknown key"],
            ),
            (
                &foreign_two,
                &["p.toml:10:1: site.foreign_sender.1.bogus: unknown key"],
            ),
            (
                "[site]\nforeign_sender = [{ address = \"a@x.example\", login = \"a\", relay = \"r\", bogus = 1 }]\n",
                &["p.toml:2:72: site.foreign_sender.0.bogus: unknown key"],
            ),
            (
                "[postfix]\nreject_code = 550\nbogus = 1\n",
                &["p.toml:3:1: postfix.bogus: unknown key"],
            ),
            (
                "[dns]\ntimeout = \"2s\"\nbogus = 1\n",
                &["p.toml:3:1: dns.bogus: unknown key"],
            ),
            (
                "[spf]\ncheck_helo = true\nbogus = 1\n",
                &["p.toml:3:1: spf.bogus: unknown key"],
            ),
            (
                "[spf.mail_from]\nfail = \"reject\"\nbogus = 1\n",
                &["p.toml:3:1: spf.mail_from.bogus: unknown key"],
            ),
            (
                "[spf.helo]\nfail = \"reject\"\nbogus = 1\n",
                &["p.toml:3:1: spf.helo.bogus: unknown key"],
            ),
            (
                "[spf.helo]\nreject_not_pass_domains = []\n",
                &["p.toml:2:1: spf.helo.reject_not_pass_domains: unknown key"],
            ),
            (
                "[spf]\nhelo = { fail = \"reject\", bogus = 1 }\n",
                &["p.toml:2:27: spf.helo.bogus: unknown key"],
            ),
            (
                "[outbound_spf]\nfail = \"reject\"\nbogus = 1\n",
                &["p.toml:3:1: outbound_spf.bogus: unknown key"],
            ),
            (
                "[store]\nbackend = \"embedded\"\nbogus = 1\n",
                &["p.toml:3:1: store.bogus: unknown key"],
            ),
            (
                "[dnsbl]\nreply = {}\nbogus = 1\n",
                &["p.toml:3:1: dnsbl.bogus: unknown key"],
            ),
            (
                "[store]\n[greylist]\ndelay = \"1s\"\nbogus = 1\n",
                &["p.toml:4:1: greylist.bogus: unknown key"],
            ),
            // [tables] has no fixed keys: each key names a table, so a new
            // name is accepted (an unused table is never opened) ...
            ("[tables]\nbogus = \"hash:/nonexistent\"\n", &[]),
            // ... and its value is checked under its name.
            (
                "[tables]\nbogus = \"frob:x\"\n",
                &["p.toml:2:9: tables.bogus: unsupported table type \"frob\""],
            ),
            (
                "[profile.a]\nclient = [\"permit\"]\nbogus = 1\n",
                &["p.toml:3:1: profile.a.bogus: unknown key"],
            ),
            (
                "[profile.a.match]\nserver_port = 25\nbogus = 1\n",
                &["p.toml:3:1: profile.a.match.bogus: unknown key"],
            ),
            (
                "[profile.a]\nmatch = { server_port = 25, bogus = 1 }\n",
                &["p.toml:2:29: profile.a.match.bogus: unknown key"],
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1:9464\"\nbogus = 1\n",
                &["p.toml:3:1: metrics.bogus: unknown key"],
            ),
            (
                "[log]\ndecisions = \"all\"\nbogus = 1\n",
                &["p.toml:3:1: log.bogus: unknown key"],
            ),
            (
                "[[rate_limit]]\nname = \"a\"\nkey = \"sender\"\nmessages = 1\nwindow = \"1h\"\nbogus = 1\n",
                &["p.toml:6:1: rate_limit.0.bogus: unknown key"],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(errors(text), *want, "{text}");
        }
    }

    #[test]
    fn all_rule_errors_are_reported_with_positions() {
        let errs = errors(
            "[profile.a]\nclient = [\"permit\", \"frobnicate\"]\nhelo = [\"check_recipient_access x\", \"reject_unauth_pipelining\"]\n",
        );
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(
            errs[0],
            "p.toml:2:21: profile.a.client: unknown rule \"frobnicate\""
        );
        assert!(
            errs[1].starts_with(
                "p.toml:3:9: profile.a.helo: check_recipient_access cannot work in the helo stage"
            ),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("keep reject_unauth_pipelining in main.cf"),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_values_are_reported() {
        let errs = errors(
            "[server]\nlisten = [\"udp:1\"]\nidle_timeout = \"5 parsecs\"\n[site]\nmynetworks = [\"10.0.0.1/8\"]\n[postfix]\nreject_code = 450\n[profile.a]\nrecipient = [\"check_recipient_access missing\"]\n",
        );
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(
            errs[0].starts_with("p.toml:2:11: server.listen:"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("p.toml:3:16: server.idle_timeout:"),
            "{errs:?}"
        );
        assert!(
            errs[2].starts_with("p.toml:5:15: site.mynetworks: bad CIDR"),
            "{errs:?}"
        );
        assert!(
            errs[3].starts_with("p.toml:7:15: postfix.reject_code: must be a 5xx code"),
            "{errs:?}"
        );
        assert!(errs[4].contains("no table named \"missing\""), "{errs:?}");
    }

    /// Every kind of bounded value: a time beyond its ceiling (the one
    /// that once made every connection panic), below its floor, a count of
    /// zero or beyond its ceiling, and a limit above the one it refines.
    #[test]
    fn values_out_of_range_are_refused() {
        let cases: &[(&str, &str)] = &[
            (
                "[server]\nidle_timeout = \"18446744073709551615s\"\n",
                "p.toml:2:16: server.idle_timeout: must be between 100ms and 86400s",
            ),
            (
                "[server]\nrequest_timeout = \"0s\"\n",
                "p.toml:2:19: server.request_timeout: must be between 100ms and 3600s",
            ),
            (
                "[server]\nanswer_timeout = \"50ms\"\n",
                "p.toml:2:18: server.answer_timeout: must be between 100ms and 3600s",
            ),
            // Postfix would have given up before such an answer came.
            (
                "[server]\nrequest_timeout = \"30s\"\nanswer_timeout = \"30s\"\n",
                "p.toml:3:18: server.answer_timeout: must be shorter than request_timeout (30s, Postfix's smtpd_policy_service_timeout)",
            ),
            (
                "[server]\nshutdown_timeout = \"2h\"\n",
                "p.toml:2:20: server.shutdown_timeout: must be between 100ms and 3600s",
            ),
            (
                "[server]\nthreads = 0\n",
                "p.toml:2:11: server.threads: must be at least 1",
            ),
            (
                "[server]\nthreads = 257\n",
                "p.toml:2:11: server.threads: must be at most 256",
            ),
            (
                "[server]\nmax_connections = 0\n",
                "p.toml:2:19: server.max_connections: must be at least 1",
            ),
            (
                "[server]\nmax_connections = 1000000\n",
                "p.toml:2:19: server.max_connections: must be at most 100000",
            ),
            (
                "[server]\nmax_connections = 10\nmax_connections_per_address = 11\n",
                "p.toml:3:31: server.max_connections_per_address: must not exceed max_connections (10)",
            ),
            (
                "[dns]\ntimeout = \"0s\"\n",
                "p.toml:2:11: dns.timeout: must be between 10ms and 60s",
            ),
            (
                "[dns]\nmax_ttl = \"30d\"\n",
                "p.toml:2:11: dns.max_ttl: must be between 0s and 604800s",
            ),
            (
                "[dns]\nattempts = 11\n",
                "p.toml:2:12: dns.attempts: must be at most 10",
            ),
            (
                "[dns]\ncache_size = 0\n",
                "p.toml:2:14: dns.cache_size: must be at least 1",
            ),
            (
                "[spf]\ntimeout = \"1w\"\n",
                "p.toml:2:11: spf.timeout: must be between 100ms and 300s",
            ),
            (
                "[spf]\ncache_ttl = \"2d\"\n",
                "p.toml:2:13: spf.cache_ttl: must be between 0s and 86400s",
            ),
            (
                "[spf]\ncache_size = 20000000\n",
                "p.toml:2:14: spf.cache_size: must be at most 10000000",
            ),
            (
                "[store]\ntimeout = \"2m\"\n",
                "p.toml:2:11: store.timeout: must be between 10ms and 60s",
            ),
            (
                "[store]\nmax_triplets = 0\n",
                "p.toml:2:16: store.max_triplets: must be at least 1",
            ),
            (
                "[store]\nmax_rate_records = 100000001\n",
                "p.toml:2:20: store.max_rate_records: must be at most 100000000",
            ),
            (
                "[store]\nmax_entries = 1000000\n",
                "p.toml:2:15: store.max_entries: replaced by max_triplets, max_unconfirmed_per_network, max_clients and max_rate_records: each kind of record has its own budget",
            ),
            (
                "[store]\nbackend = \"redis\"\n",
                "p.toml:2:11: store.url: backend = \"redis\" needs a url",
            ),
            (
                "[store]\nbackend = \"redis\"\nurl = \"http://x\"\n",
                "p.toml:3:7: store.url: expected redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB], redis+unix:///PATH or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]",
            ),
            (
                "[store]\nurl = \"redis://x\"\n",
                "p.toml:2:7: store.url: only with backend = \"redis\"",
            ),
            (
                "[store]\nbackend = \"redis\"\nurl = \"rediss://x/#insecure\"\n",
                "p.toml:3:7: store.url: #insecure turns off the TLS certificate check: give the server's CA as tls_ca instead",
            ),
            (
                "[store]\nbackend = \"redis\"\nurl = \"redis+sentinel://s1:26379,s2\"\n",
                "p.toml:3:7: store.url: names no master: redis+sentinel://HOST:PORT/MASTER",
            ),
            (
                "[store]\nbackend = \"redis\"\nurl = \"redis://x\"\ntls_ca = \"ca.pem\"\n",
                "p.toml:4:10: store.tls_ca: only with a TLS url (rediss:// or rediss+sentinel://)",
            ),
            (
                "[store]\n[greylist]\ndelay = \"0s\"\n",
                "p.toml:3:9: greylist.delay: must be between 1s and 86400s",
            ),
            (
                "[store]\n[greylist]\ndelay = \"2h\"\nretry_window = \"1h\"\n",
                "p.toml:3:9: greylist.delay: must be shorter than retry_window (3600s): no retry could ever pass",
            ),
            (
                "[store]\n[greylist]\nretry_window = \"60s\"\n",
                "p.toml:3:16: greylist.delay: must be shorter than retry_window (60s): no retry could ever pass",
            ),
            (
                "[store]\n[greylist]\nipv4_prefix = 33\n",
                "p.toml:3:15: greylist.ipv4_prefix: must be at most 32",
            ),
            (
                "[store]\n[greylist]\naction = \"REJECT no\"\n",
                "p.toml:3:10: greylist.action: must be DEFER_IF_PERMIT, DEFER or a 4xx reply, with optional text",
            ),
            (
                "[store]\n[greylist]\non_store_error = \"permit\"\n",
                "p.toml:3:18: greylist.on_store_error: expected \"dunno\" or \"defer\"",
            ),
            (
                "[greylist]\n",
                "p.toml:1:1: greylist: needs a [store] for its records (backend = \"embedded\" or \"redis\")",
            ),
            (
                "[profile.a]\nrecipient = [\"check_greylist\"]\n",
                "p.toml:2:14: profile.a.recipient: needs a [greylist] table (and a [store] for its records)",
            ),
            (
                "[store]\n[greylist]\n[profile.a]\nsender = [\"check_greylist\"]\n",
                "p.toml:4:11: profile.a.sender: check_greylist cannot work in the sender stage: it needs the recipient data, which the sender stage runs without (use it in the recipient stage or later)",
            ),
            (
                "[store]\nbackend = \"sqlite\"\n",
                "p.toml:2:11: store.backend: expected \"embedded\" or \"redis\"",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(errors(text), [*want], "{text}");
        }
        // The edges themselves are accepted.
        assert_eq!(
            errors(
                "[server]\nidle_timeout = \"1d\"\nrequest_timeout = \"100ms\"\n[dns]\ntimeout = \"60s\"\nattempts = 10\n"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn duplicate_matches_are_refused() {
        let errs =
            errors("[profile.a.match]\nserver_port = 25\n[profile.b.match]\nserver_port = 25\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("same match"), "{errs:?}");
    }
}
