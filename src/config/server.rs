//! `[server]`: how the daemon listens and serves, compiled into
//! [`ServerSettings`]. They are not part of the policy: the server keeps
//! them beside it, and a reload names the ones only a restart can apply.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::values::{millis, secs};
use super::{Compiler, schema};
use crate::log::Decisions;
use crate::protocol::{Action, ActionClass};
use crate::state::store::StoreSettings;
use crate::vocab::outcome::{AccessCodes, parse_action};

/// A listen address: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Tcp(String),
}

impl ListenAddr {
    /// Parses `unix:/path` (relative paths against `base`) or
    /// `tcp:host:port` (also `tcp:[::1]:port`).
    pub fn parse(text: &str, base: &Path) -> Result<ListenAddr, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("empty socket path".into());
            }
            Ok(ListenAddr::Unix(base.join(path)))
        } else if let Some(addr) = text
            .strip_prefix("tcp:")
            .or_else(|| text.strip_prefix("inet:"))
        {
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(ListenAddr::Tcp(addr.to_string()))
                }
                _ => Err(format!("{text:?}: expected tcp:HOST:PORT")),
            }
        } else {
            Err(format!("{text:?}: expected unix:PATH or tcp:HOST:PORT"))
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Most connections `max_connections` may allow: each holds a file
/// descriptor and a task, and Postfix opens at most one per smtpd process.
pub const MAX_CONNECTIONS: usize = 100_000;

/// `[server]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: Vec<ListenAddr>,
    /// Permission bits of unix sockets rpol creates.
    pub socket_mode: u32,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    /// Started as root, rpol binds its sockets and then runs as this
    /// account (`--user` overrides it); `group` replaces its group.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Connections served at once. A new client beyond it gets the slot of
    /// the connection that answered nothing for the longest time.
    pub max_connections: usize,
    /// Connections from one TCP address at once (default: max_connections);
    /// beyond it, that address's own longest-idle connection makes room.
    pub max_connections_per_address: usize,
    /// Threads serving connections, each with its connections pinned to it
    /// (server/shards.rs). One by default: it does the most requests per
    /// CPU second, and far more per second than Postfix asks.
    pub threads: usize,
    /// Close a connection idle this long between requests
    /// (Postfix smtpd_policy_service_max_idle, 300 s).
    pub idle_timeout: Duration,
    /// Give up on a request that started but did not finish in this time
    /// (Postfix smtpd_policy_service_timeout, 100 s).
    pub request_timeout: Duration,
    /// Longest a request's evaluation may take, from its last byte; then it
    /// is answered `error_action` (see [`answer_timeout_default`]).
    pub answer_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// `[server] watch_interval`: how often the config file, its tables
    /// and address lists are checked for changes (then reloaded).
    pub watch_interval: Duration,
    /// Answer to a request that cannot be decoded.
    pub error_action: Action,
    /// `[metrics] listen`: where GET /metrics is served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// `[metrics] timeout`: a scrape connection's whole life.
    pub metrics_timeout: Duration,
    /// `[store]`, when configured.
    pub store: Option<StoreSettings>,
    /// TCP peers served: anyone else who can reach the port is closed at
    /// once (a forged request can lock a login out or pass a triplet).
    pub allow: Vec<IpNet>,
    /// uids served on a unix socket and over loopback TCP besides root,
    /// the socket file's owner and rpol's own (`allow_users`, resolved
    /// when loaded; by default [`default_allow_uids`]).
    pub allow_uids: Vec<u32>,
    /// `[log] decisions`.
    pub log_decisions: Decisions,
}

/// Default `[server] allow`: the machine itself, where Postfix runs.
pub fn default_allow() -> Vec<IpNet> {
    vec![
        IpNet::new(IpAddr::from([127, 0, 0, 0]), 8).unwrap_or_default(),
        IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ]
}

/// The account Postfix's smtpd runs as (its default `mail_owner`).
pub const POSTFIX_ACCOUNT: &str = "postfix";

/// Default `allow_users`: the `postfix` account when this machine has one.
/// Postfix's smtpd connects as it, over TCP as over a unix socket, and the
/// seed configuration listens on loopback TCP: without it, Postfix would
/// be refused out of the box. An `allow_users` list replaces it.
pub fn default_allow_uids() -> Vec<u32> {
    uid_of(POSTFIX_ACCOUNT).into_iter().collect()
}

/// `answer_timeout` when not set: 3/5 of `request_timeout`, so 60 s of
/// Postfix's 100 s smtpd_policy_service_timeout. That timeout covers
/// Postfix's connect, write and read too, and a request queued behind
/// others on a busy rpol: an answer after it is never read (Postfix has
/// answered `smtpd_policy_service_default_action` by then). 60 s still
/// holds several DNS lookups at the default `[dns]` (10.5 s each at
/// most) and an SPF evaluation (20 s).
pub fn answer_timeout_default(request_timeout: Duration) -> Duration {
    request_timeout * 3 / 5
}

/// Most `[server] threads`: beyond the cores of any mail host.
pub const MAX_THREADS: usize = 256;

/// Default answer to a malformed request: Postfix's later restrictions may
/// still reject, otherwise the client is told to retry.
pub const DEFAULT_ERROR_ACTION: &str = "DEFER_IF_PERMIT 4.3.5 Policy service error";

/// [`DEFAULT_ERROR_ACTION`] as the action it is.
pub fn default_error_action() -> Action {
    Action::defer_if_permit("4.3.5", "Policy service error".into())
}

impl ServerSettings {
    /// The answer to a request whose checks ran out of `answer_timeout`:
    /// `error_action` when that is a temporary failure (DEFER,
    /// DEFER_IF_PERMIT, 4xx), else
    /// [`DEFAULT_ERROR_ACTION`]. An admin may let malformed requests
    /// through (`error_action = "DUNNO"`), but a check that could not
    /// finish is never an accept: otherwise slowing the DNS or the store
    /// would switch the defences off.
    pub fn timeout_action(&self) -> Action {
        // Not DEFER_IF_REJECT: with nothing rejecting later, an accept.
        let temporary = matches!(
            self.error_action.class(),
            ActionClass::Defer | ActionClass::DeferIfPermit
        );
        if temporary {
            self.error_action.clone()
        } else {
            default_error_action()
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: vec![ListenAddr::Tcp("127.0.0.1:10040".into())],
            socket_mode: 0o666,
            socket_owner: None,
            socket_group: None,
            user: None,
            group: None,
            max_connections: 100,
            max_connections_per_address: 100,
            threads: 1,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(100),
            answer_timeout: answer_timeout_default(Duration::from_secs(100)),
            shutdown_timeout: Duration::from_secs(10),
            watch_interval: Duration::from_secs(2),
            error_action: default_error_action(),
            metrics: None,
            // Prometheus's own default scrape timeout.
            metrics_timeout: Duration::from_secs(10),
            store: None,
            allow: default_allow(),
            allow_uids: default_allow_uids(),
            log_decisions: Decisions::default(),
        }
    }
}

impl Compiler<'_> {
    pub(super) fn server(&mut self, s: schema::ServerSection) -> ServerSettings {
        let schema::ServerSection {
            listen,
            socket_mode,
            socket_owner,
            socket_group,
            user,
            group,
            max_connections,
            max_connections_per_address,
            threads,
            idle_timeout,
            request_timeout,
            answer_timeout,
            shutdown_timeout,
            watch_interval,
            error_action,
            allow,
            allow_users,
        } = s;
        let mut out = ServerSettings::default();
        if let Some(listen) = listen {
            out.listen.clear();
            for addr in listen {
                match ListenAddr::parse(addr.get_ref(), &self.base) {
                    Ok(a) => out.listen.push(a),
                    Err(e) => self.error(addr.span(), "server.listen", e),
                }
            }
        }
        if let Some(mode) = socket_mode {
            match u32::from_str_radix(mode.get_ref().trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 => out.socket_mode = m,
                _ => self.error(
                    mode.span(),
                    "server.socket_mode",
                    "expected octal permission bits such as \"0660\"",
                ),
            }
        }
        out.socket_owner = socket_owner;
        out.socket_group = socket_group;
        for (value, key, slot) in [
            (user, "server.user", &mut out.user),
            (group, "server.group", &mut out.group),
        ] {
            if let Some(v) = value {
                let name = v.get_ref().trim();
                if name.is_empty() || name.contains(char::is_whitespace) {
                    self.error(v.span(), key, "must be an account name");
                } else {
                    *slot = Some(name.to_string());
                }
            }
        }
        self.count(
            max_connections,
            "server.max_connections",
            1..=MAX_CONNECTIONS,
            &mut out.max_connections,
        );
        out.max_connections_per_address = out.max_connections;
        if let Some(n) = &max_connections_per_address
            && *n.get_ref() > out.max_connections
        {
            self.error(
                n.span(),
                "server.max_connections_per_address",
                format!("must not exceed max_connections ({})", out.max_connections),
            );
        }
        self.count(
            max_connections_per_address,
            "server.max_connections_per_address",
            1..=MAX_CONNECTIONS,
            &mut out.max_connections_per_address,
        );
        self.count(threads, "server.threads", 1..=MAX_THREADS, &mut out.threads);
        // Postfix gives up on an idle policy connection after 300 s and on
        // a request after 100 s: allow well beyond both, never unbounded.
        self.duration(
            idle_timeout,
            "server.idle_timeout",
            millis(100)..=secs(86_400),
            &mut out.idle_timeout,
        );
        self.duration(
            watch_interval,
            "server.watch_interval",
            millis(100)..=secs(3_600),
            &mut out.watch_interval,
        );
        self.duration(
            request_timeout,
            "server.request_timeout",
            millis(100)..=secs(3_600),
            &mut out.request_timeout,
        );
        out.answer_timeout = answer_timeout_default(out.request_timeout);
        if let Some(answer) = answer_timeout {
            let span = answer.span();
            let mut value = Duration::ZERO;
            self.duration(
                Some(answer),
                "server.answer_timeout",
                millis(100)..=secs(3_600),
                &mut value,
            );
            if value >= out.request_timeout {
                // Postfix would have given up before the answer came.
                self.error(
                    span,
                    "server.answer_timeout",
                    format!(
                        "must be shorter than request_timeout ({:?}, Postfix's \
                         smtpd_policy_service_timeout)",
                        out.request_timeout
                    ),
                );
            } else if !value.is_zero() {
                out.answer_timeout = value;
            }
        }
        self.duration(
            shutdown_timeout,
            "server.shutdown_timeout",
            millis(100)..=secs(3_600),
            &mut out.shutdown_timeout,
        );
        if let Some(action) = error_action {
            let a = action.get_ref().trim();
            if a.is_empty() || a.contains('\n') {
                self.error(
                    action.span(),
                    "server.error_action",
                    "must be one non-empty line",
                );
            } else if let Err(e) = parse_action(a, AccessCodes::default()) {
                // Sent to Postfix as it is: one it cannot parse would turn
                // each failure into Postfix's own 451 "Server configuration
                // problem", found only on the first bad day.
                self.error(
                    action.span(),
                    "server.error_action",
                    format!("must be an access(5) action: {e}"),
                );
            } else {
                out.error_action = Action::parse(a);
            }
        }
        if let Some(allow) = allow {
            let span = allow.span();
            let list = allow.into_inner();
            if list.is_empty() {
                // A TCP listener no one may use: a mistake, not a setting.
                self.error(
                    span,
                    "server.allow",
                    "must name at least one network (to serve no TCP client, listen on none)",
                );
            }
            out.allow = self.networks(list, "server.allow");
        }
        if allow_users.is_some() {
            out.allow_uids.clear();
        }
        for user in allow_users.unwrap_or_default() {
            match uid_of(user.get_ref()) {
                Some(uid) => out.allow_uids.push(uid),
                None => self.error(
                    user.span(),
                    "server.allow_users",
                    format!("no user {:?}", user.get_ref()),
                ),
            }
        }
        out
    }

    /// `[log]`.
    pub(super) fn log(&mut self, l: schema::LogSection) -> Decisions {
        let schema::LogSection { decisions } = l;
        let Some(d) = decisions else {
            return Decisions::default();
        };
        match d.get_ref().as_str() {
            "all" => Decisions::All,
            "refusals" => Decisions::Refusals,
            "none" => Decisions::None,
            _ => {
                self.error(
                    d.span(),
                    "log.decisions",
                    "expected \"all\", \"refusals\" or \"none\"",
                );
                Decisions::default()
            }
        }
    }
}

/// The uid of an account name, or a number taken as a uid (an account
/// only a container's processes have).
fn uid_of(user: &str) -> Option<u32> {
    let user = user.trim();
    if !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()) {
        return user.parse().ok();
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Some(u.uid.as_raw()),
        _ => None,
    }
}

impl Compiler<'_> {
    /// `[metrics]`: an IP address and port (no host name: nothing is
    /// resolved to decide where rpol listens).
    pub(super) fn metrics(&mut self, m: schema::MetricsSection, out: &mut ServerSettings) {
        let schema::MetricsSection { listen, timeout } = m;
        self.duration(
            timeout,
            "metrics.timeout",
            millis(100)..=secs(3_600),
            &mut out.metrics_timeout,
        );
        let Some(listen) = listen else {
            return;
        };
        match listen.get_ref().trim().parse::<SocketAddr>() {
            Ok(addr) => out.metrics = Some(addr),
            Err(_) => {
                self.error(
                    listen.span(),
                    "metrics.listen",
                    format!(
                        "{:?}: expected IP:PORT, such as \"127.0.0.1:9464\" or \"[::1]:9464\"",
                        listen.get_ref()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let base = Path::new("/etc/rpol");
        assert_eq!(
            ListenAddr::parse("unix:private/rpol", base),
            Ok(ListenAddr::Unix("/etc/rpol/private/rpol".into()))
        );
        assert_eq!(
            ListenAddr::parse("tcp:[::1]:10040", base),
            Ok(ListenAddr::Tcp("[::1]:10040".into()))
        );
        assert!(ListenAddr::parse("tcp:10040", base).is_err());
        assert!(ListenAddr::parse("udp:x:1", base).is_err());
    }

    #[test]
    fn answer_timeout_defaults_to_three_fifths_of_request_timeout() {
        let load = |text: &str| {
            crate::config::load_str(Path::new("p.toml"), text)
                .map(|l| l.server.answer_timeout)
                .map_err(|e| e.to_string())
        };
        assert_eq!(load(""), Ok(Duration::from_secs(60)));
        assert_eq!(
            load("[server]\nrequest_timeout = \"10s\"\n"),
            Ok(Duration::from_secs(6))
        );
        assert_eq!(
            load("[server]\nanswer_timeout = \"99s\"\n"),
            Ok(Duration::from_secs(99))
        );
    }
}

#[cfg(test)]
mod access_tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Result<ServerSettings, Vec<String>> {
        match crate::config::load_str(Path::new("p.toml"), text) {
            Ok(l) => Ok(l.server),
            Err(e) => Err(e.0.iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn allow_is_loopback_unless_set() {
        let nets = |s: &ServerSettings| s.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(nets(&load("").unwrap()), ["127.0.0.0/8", "::1/128"]);
        assert_eq!(
            nets(&load("[server]\nallow = [\"10.1.0.0/16\", \"2001:db8::7\"]\n").unwrap()),
            ["10.1.0.0/16", "2001:db8::7/128"]
        );
        assert_eq!(
            load("[server]\nallow = [\"10.1.0.1/16\", \"any\"]\n").unwrap_err(),
            [
                "p.toml:2:10: server.allow: bad CIDR \"10.1.0.1/16\" (expected address/prefix with no host bits set, or an address)",
                "p.toml:2:25: server.allow: bad CIDR \"any\" (expected address/prefix with no host bits set, or an address)",
            ]
        );
        assert_eq!(
            load("[server]\nallow = []\n").unwrap_err(),
            [
                "p.toml:2:9: server.allow: must name at least one network (to serve no TCP client, listen on none)"
            ]
        );
    }

    #[test]
    fn allow_users_are_accounts_or_uids() {
        assert_eq!(
            load("[server]\nallow_users = [\"root\", \"4242\"]\n")
                .unwrap()
                .allow_uids,
            [0, 4242]
        );
        assert_eq!(
            load("[server]\nallow_users = [\"\"]\n").unwrap_err(),
            ["p.toml:2:16: server.allow_users: no user \"\""]
        );
    }

    /// Issue 29 item 3: an action Postfix could not parse is found when
    /// the config is loaded, not on the first failure it should answer.
    #[test]
    fn error_action_is_an_access_action() {
        for good in [
            "DUNNO",
            "451 4.3.5 Server configuration problem",
            "DEFER_IF_PERMIT x",
        ] {
            let text = format!("[server]\nerror_action = \"{good}\"\n");
            assert_eq!(load(&text).unwrap().error_action, good);
        }
        assert_eq!(
            load("[server]\nerror_action = \"DEFFER later\"\n").unwrap_err(),
            [
                "p.toml:2:16: server.error_action: must be an access(5) action: \"DEFFER later\" is \
                 not an access(5) action; restriction classes in table results are not supported by rpol"
            ]
        );
        assert_eq!(
            load("[server]\nerror_action = \"451\"\n").unwrap_err(),
            [
                "p.toml:2:16: server.error_action: must be an access(5) action: \"451\" needs text \
                 after the code, else Postfix reads it as OK"
            ]
        );
    }

    #[test]
    fn log_decisions() {
        assert_eq!(load("").unwrap().log_decisions, Decisions::All);
        for (word, want) in [
            ("all", Decisions::All),
            ("refusals", Decisions::Refusals),
            ("none", Decisions::None),
        ] {
            let text = format!("[log]\ndecisions = \"{word}\"\n");
            assert_eq!(load(&text).unwrap().log_decisions, want);
        }
    }
}

#[cfg(test)]
mod metrics_tests {
    use std::path::Path;

    fn load(text: &str) -> Result<Option<std::net::SocketAddr>, Vec<String>> {
        match crate::config::load_str(Path::new("p.toml"), text) {
            Ok(l) => Ok(l.server.metrics),
            Err(e) => Err(e.0.iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn metrics_listen_is_an_address_and_port() {
        assert_eq!(load(""), Ok(None));
        assert_eq!(
            load("[metrics]\nlisten = \"127.0.0.1:9464\"\n"),
            Ok(Some("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(
            load("[metrics]\nlisten = \"[::1]:9464\"\n"),
            Ok(Some("[::1]:9464".parse().unwrap()))
        );
        for bad in ["localhost:9464", "127.0.0.1", ":9464", "tcp:127.0.0.1:9464"] {
            assert_eq!(
                load(&format!("[metrics]\nlisten = \"{bad}\"\n")),
                Err(vec![format!(
                    "p.toml:2:10: metrics.listen: \"{bad}\": expected IP:PORT, such as \"127.0.0.1:9464\" or \"[::1]:9464\""
                )])
            );
        }
    }

    #[test]
    fn the_no_profile_name_is_reserved() {
        let errors = load("[profile.\"-\"]\nclient = [\"permit\"]\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("p.toml:")
                && errors[0].contains(": profile.-: the name \"-\" is reserved"),
            "{errors:?}"
        );
    }
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn a_timeout_is_never_answered_with_an_accept() {
        let with = |action: &str| ServerSettings {
            error_action: action.into(),
            ..ServerSettings::default()
        };
        for (error_action, timeout) in [
            ("DUNNO", DEFAULT_ERROR_ACTION),
            ("OK", DEFAULT_ERROR_ACTION),
            ("PREPEND X-Policy: broken", DEFAULT_ERROR_ACTION),
            ("550 5.7.1 no", DEFAULT_ERROR_ACTION),
            ("defer try later", "defer try later"),
            ("DEFER_IF_REJECT later", DEFAULT_ERROR_ACTION),
            ("451 4.3.0 later", "451 4.3.0 later"),
            (DEFAULT_ERROR_ACTION, DEFAULT_ERROR_ACTION),
        ] {
            assert_eq!(
                with(error_action).timeout_action(),
                timeout,
                "{error_action}"
            );
        }
    }
}
