//! policy.toml: the schema, its validation, and its compilation into a
//! [`Policy`].
//!
//! Every struct denies unknown keys, and every value a later check may
//! refuse is kept as `toml::Spanned`, so each error reads
//! `file:line:col: key: message`. The loader collects every error it can
//! find instead of stopping at the first. Relative paths resolve against the
//! config file's directory.

mod schema;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use crate::dns::{DnsConfig, Resolver};
use crate::policy::{ChainRule, Match, Policy, Profile};
use crate::rules::{self, TableResolver};
use crate::site::{ForeignSender, Site};
use crate::spf::{HeaderKind, ResultActions, SpfAction, SpfSettings, Whitelist};
use crate::tables::addresses::Addresses;
use crate::tables::logins::LoginMap;
use crate::tables::{self, AccessTable, TableSpec};
use crate::vocab::outcome::AccessCodes;
use crate::vocab::{Codes, Stage, TempfailAction};
use schema::{ConfigFile, ProfileSection};

/// Default config path when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/rpol/policy.toml";

/// One configuration error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All the errors of one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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

/// `[server]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: Vec<ListenAddr>,
    /// Permission bits of unix sockets rpol creates.
    pub socket_mode: u32,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Close a connection idle this long between requests
    /// (Postfix smtpd_policy_service_max_idle, 300 s).
    pub idle_timeout: Duration,
    /// Give up on a request that started but did not finish in this time
    /// (Postfix smtpd_policy_service_timeout, 100 s).
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Answer to a request that cannot be decoded.
    pub error_action: String,
}

/// Default answer to a malformed request: Postfix's later restrictions may
/// still reject, otherwise the client is told to retry.
pub const DEFAULT_ERROR_ACTION: &str = "DEFER_IF_PERMIT 4.3.5 Policy service error";

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: vec![ListenAddr::Tcp("127.0.0.1:10040".into())],
            socket_mode: 0o666,
            socket_owner: None,
            socket_group: None,
            max_connections: 100,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(100),
            shutdown_timeout: Duration::from_secs(10),
            error_action: DEFAULT_ERROR_ACTION.into(),
        }
    }
}

/// What a config file compiles to: how the daemon serves, and the policy
/// it serves (swapped whole on reload).
#[derive(Debug)]
pub struct Loaded {
    pub server: ServerSettings,
    pub policy: Policy,
}

/// Reads and compiles a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config: {e}"),
        }])
    })?;
    load_str(path, &text)
}

/// Compiles config text; `path` names it in errors and anchors relative paths.
pub fn load_str(path: &Path, text: &str) -> Result<Loaded, ConfigErrors> {
    let mut cx = Compiler {
        path: path.to_path_buf(),
        base: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        text,
        errors: Vec::new(),
    };
    let parsed = toml::Deserializer::parse(text).and_then(|de| {
        let mut unknown = Vec::new();
        let file: ConfigFile =
            serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))?;
        Ok((file, unknown))
    });
    let file = match parsed {
        Ok((file, unknown)) => {
            for path in unknown {
                // serde_ignored names Option and Spanned wrappers too.
                let key = path
                    .split('.')
                    .filter(|s| *s != "?" && !s.starts_with("$__serde_spanned"))
                    .collect::<Vec<_>>()
                    .join(".");
                cx.error(key_span(text, &key), &key, "unknown key");
            }
            file
        }
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.error(span, "", e.message().trim_end().to_string());
            return Err(ConfigErrors(cx.errors));
        }
    };
    let loaded = cx.compile(file);
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
    errors: Vec<ConfigError>,
}

impl Compiler<'_> {
    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.path.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
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
            tables,
            profile,
        } = file;
        let server = self.server(server);
        let codes = self.codes(&postfix);
        let mut files = vec![self.path.clone()];
        let mut site = self.site(site, postfix, codes, &mut files);
        site.spf = self.spf(spf, &mut files);
        site.outbound_spf = self.spf_actions(
            outbound_spf,
            "outbound_spf",
            crate::site::default_outbound_actions(),
        );
        let dns_config = self.dns(dns);
        let mut resolver = Tables {
            named: HashMap::new(),
            loaded: HashMap::new(),
            base: self.base.clone(),
            codes: codes.access,
            errors: Vec::new(),
        };
        for (name, spec) in &tables {
            match tables::parse_spec(spec.get_ref(), &self.base) {
                Ok(spec) => {
                    resolver.named.insert(name.clone(), spec);
                }
                Err(e) => self.error(spec.span(), &format!("tables.{name}"), e),
            }
        }
        let mut profiles = Vec::new();
        for (name, section) in profile {
            let span = section.span();
            if let Some(p) = self.profile(&name, section, &mut resolver, &site) {
                profiles.push((p, span));
            }
        }
        self.check_matches(&profiles);
        files.extend(resolver.loaded.keys().map(|spec| spec.path.clone()));
        // Built once to check [dns] as serving would; the server's runtime
        // state builds the resolver it uses.
        if let Err(e) = Resolver::new(&dns_config) {
            self.error(0..0, "dns", e.to_string());
            return None;
        }
        let policy = Policy {
            source: self.path.clone(),
            site,
            profiles: profiles.into_iter().map(|(p, _)| p).collect(),
            dns_config,
            files,
        };
        Some(Loaded { server, policy })
    }

    fn server(&mut self, s: schema::ServerSection) -> ServerSettings {
        let schema::ServerSection {
            listen,
            socket_mode,
            socket_owner,
            socket_group,
            max_connections,
            idle_timeout,
            request_timeout,
            shutdown_timeout,
            error_action,
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
        if let Some(n) = max_connections {
            if *n.get_ref() == 0 {
                self.error(n.span(), "server.max_connections", "must be at least 1");
            } else {
                out.max_connections = *n.get_ref();
            }
        }
        for (value, key, slot) in [
            (idle_timeout, "server.idle_timeout", &mut out.idle_timeout),
            (
                request_timeout,
                "server.request_timeout",
                &mut out.request_timeout,
            ),
            (
                shutdown_timeout,
                "server.shutdown_timeout",
                &mut out.shutdown_timeout,
            ),
        ] {
            if let Some(v) = value {
                match parse_duration(v.get_ref()) {
                    Ok(d) if !d.is_zero() => *slot = d,
                    Ok(_) => {
                        self.errors
                            .push(self.positioned(v.span(), key, "must be more than zero"))
                    }
                    Err(e) => self.errors.push(self.positioned(v.span(), key, e)),
                }
            }
        }
        if let Some(action) = error_action {
            let a = action.get_ref().trim();
            if a.is_empty() || a.contains('\n') {
                self.error(
                    action.span(),
                    "server.error_action",
                    "must be one non-empty line",
                );
            } else {
                out.error_action = a.to_string();
            }
        }
        out
    }

    fn positioned(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError {
            file: self.path.clone(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    fn codes(&mut self, p: &schema::PostfixSection) -> Codes {
        // (value, key, allowed first digits)
        let mut code = |v: &Spanned<u16>, key: &str, classes: &[u16]| -> u16 {
            let c = *v.get_ref();
            if !classes.contains(&(c / 100)) {
                let want = if classes.len() == 1 {
                    format!("a {}xx code", classes[0])
                } else {
                    "a 4xx or 5xx code".to_string()
                };
                self.error(
                    v.span(),
                    &format!("postfix.{key}"),
                    format!("must be {want}"),
                );
            }
            c
        };
        let any = &[4, 5][..];
        let codes = Codes {
            access: AccessCodes {
                reject: code(&p.access_map_reject_code, "access_map_reject_code", &[5]),
                defer: code(&p.access_map_defer_code, "access_map_defer_code", &[4]),
            },
            reject_code: code(&p.reject_code, "reject_code", &[5]),
            defer_code: code(&p.defer_code, "defer_code", &[4]),
            unknown_client_reject_code: code(
                &p.unknown_client_reject_code,
                "unknown_client_reject_code",
                any,
            ),
            unknown_hostname_reject_code: code(
                &p.unknown_hostname_reject_code,
                "unknown_hostname_reject_code",
                any,
            ),
            unknown_address_reject_code: code(
                &p.unknown_address_reject_code,
                "unknown_address_reject_code",
                any,
            ),
            invalid_hostname_reject_code: code(
                &p.invalid_hostname_reject_code,
                "invalid_hostname_reject_code",
                any,
            ),
            non_fqdn_reject_code: code(&p.non_fqdn_reject_code, "non_fqdn_reject_code", any),
            relay_domains_reject_code: code(
                &p.relay_domains_reject_code,
                "relay_domains_reject_code",
                &[5],
            ),
            unknown_virtual_mailbox_reject_code: code(
                &p.unknown_virtual_mailbox_reject_code,
                "unknown_virtual_mailbox_reject_code",
                any,
            ),
            unknown_virtual_alias_reject_code: code(
                &p.unknown_virtual_alias_reject_code,
                "unknown_virtual_alias_reject_code",
                any,
            ),
            unknown_helo_hostname_tempfail_action: TempfailAction::DeferIfPermit,
            unknown_address_tempfail_action: TempfailAction::DeferIfPermit,
        };
        let base = self.tempfail(&p.reject_tempfail_action, "reject_tempfail_action");
        let inherit = |cx: &mut Self, v: &Option<Spanned<String>>, key: &str| match v {
            Some(v) => cx.tempfail(v, key),
            None => base,
        };
        Codes {
            unknown_helo_hostname_tempfail_action: inherit(
                self,
                &p.unknown_helo_hostname_tempfail_action,
                "unknown_helo_hostname_tempfail_action",
            ),
            unknown_address_tempfail_action: inherit(
                self,
                &p.unknown_address_tempfail_action,
                "unknown_address_tempfail_action",
            ),
            ..codes
        }
    }

    fn tempfail(&mut self, v: &Spanned<String>, key: &str) -> TempfailAction {
        TempfailAction::parse(v.get_ref()).unwrap_or_else(|| {
            self.error(
                v.span(),
                &format!("postfix.{key}"),
                "expected \"defer_if_permit\" or \"defer\"",
            );
            TempfailAction::DeferIfPermit
        })
    }

    fn dns(&mut self, d: schema::DnsSection) -> DnsConfig {
        let schema::DnsSection {
            nameservers,
            timeout,
            attempts,
            cache_size,
            min_ttl,
            max_ttl,
            negative_max_ttl,
        } = d;
        let mut out = DnsConfig::default();
        for ns in nameservers {
            let text = ns.get_ref().trim();
            let parsed = text
                .parse::<SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
            match parsed {
                Ok(addr) => out.nameservers.push(addr),
                Err(_) => self.error(
                    ns.span(),
                    "dns.nameservers",
                    format!("{text:?}: expected IP or IP:PORT ([IPv6]:PORT)"),
                ),
            }
        }
        for (value, key, slot) in [
            (timeout, "dns.timeout", &mut out.timeout),
            (min_ttl, "dns.min_ttl", &mut out.min_ttl),
            (max_ttl, "dns.max_ttl", &mut out.max_ttl),
            (
                negative_max_ttl,
                "dns.negative_max_ttl",
                &mut out.negative_max_ttl,
            ),
        ] {
            if let Some(v) = value {
                match parse_duration(v.get_ref()) {
                    Ok(d) => *slot = d,
                    Err(e) => self.errors.push(self.positioned(v.span(), key, e)),
                }
            }
        }
        for (value, key, slot) in [
            (attempts, "dns.attempts", &mut out.attempts),
            (cache_size, "dns.cache_size", &mut out.cache_size),
        ] {
            if let Some(v) = value {
                if *v.get_ref() == 0 {
                    self.errors
                        .push(self.positioned(v.span(), key, "must be at least 1"));
                } else {
                    *slot = *v.get_ref();
                }
            }
        }
        if out.timeout.is_zero() {
            self.error(0..0, "dns.timeout", "must be more than zero");
        }
        out
    }

    fn site(
        &mut self,
        s: schema::SiteSection,
        p: schema::PostfixSection,
        codes: Codes,
        files: &mut Vec<PathBuf>,
    ) -> Site {
        let schema::SiteSection {
            mynetworks,
            recipient_delimiter,
            domains,
            myorigin,
            relay_domains,
            mailboxes,
            aliases,
            login_map,
            login_from_aliases,
            egress,
            foreign_sender,
        } = s;
        let schema::PostfixSection {
            parent_domain_matches_subdomains,
            smtpd_null_access_lookup_key,
            ..
        } = p;
        let mut nets: Vec<IpNet> = Vec::new();
        for n in mynetworks {
            match crate::syntax::parse_network(n.get_ref()) {
                Some(net) => nets.push(net),
                None => self.error(
                    n.span(),
                    "site.mynetworks",
                    format!("bad CIDR {:?} (expected address/prefix with no host bits set, or an address)", n.get_ref()),
                ),
            }
        }
        let domain_list = |list: Vec<Spanned<String>>, key: &str, cx: &mut Self| {
            let mut out = Vec::new();
            for d in list {
                let name = d.get_ref().trim().trim_end_matches('.').to_lowercase();
                if crate::syntax::valid_hostname(&name) {
                    out.push(name);
                } else {
                    cx.error(
                        d.span(),
                        key,
                        format!("{:?} is not a valid domain name", d.get_ref()),
                    );
                }
            }
            out
        };
        let domains = domain_list(domains, "site.domains", self);
        let myorigin = match myorigin {
            Some(m) => domain_list(vec![m], "site.myorigin", self)
                .pop()
                .unwrap_or_default(),
            None => domains.first().cloned().unwrap_or_default(),
        };
        let relay_domains = domain_list(relay_domains, "site.relay_domains", self);
        let path_of = |v: &Option<Spanned<String>>| v.as_ref().map(|v| self.base.join(v.get_ref()));
        let mailbox_path = path_of(&mailboxes);
        let alias_path = path_of(&aliases);
        let addresses = match Addresses::load(mailbox_path.as_deref(), alias_path.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                let (key, value) = if Some(&e.path) == mailbox_path.as_ref() {
                    ("site.mailboxes", &mailboxes)
                } else {
                    ("site.aliases", &aliases)
                };
                let span = value.as_ref().map_or(0..0, Spanned::span);
                self.error(span, key, e.to_string());
                Addresses::default()
            }
        };
        files.extend(mailbox_path);
        files.extend(alias_path);
        let mut logins = self.logins(login_map, login_from_aliases, &addresses, files);
        let mut egress_ips = Vec::new();
        for e in egress {
            match e.get_ref().trim().parse::<IpAddr>() {
                Ok(ip) => egress_ips.push(ip),
                Err(_) => self.error(
                    e.span(),
                    "site.egress",
                    format!("{:?} is not an IP address", e.get_ref()),
                ),
            }
        }
        let mut foreign_senders: Vec<ForeignSender> = Vec::new();
        for f in foreign_sender {
            let span = f.span();
            let schema::ForeignSenderSection {
                address,
                login,
                relay,
            } = f.into_inner();
            let address = address.trim().to_lowercase();
            if !address.contains('@') || address.starts_with('@') {
                self.error(
                    span.clone(),
                    "site.foreign_sender.address",
                    format!("{address:?} is not an address"),
                );
            }
            if login.trim().is_empty() || relay.trim().is_empty() {
                self.error(
                    span.clone(),
                    "site.foreign_sender",
                    "login and relay must not be empty",
                );
            }
            if foreign_senders.iter().any(|o| o.address == address) {
                self.error(
                    span,
                    "site.foreign_sender.address",
                    format!("{address:?} is registered twice"),
                );
                continue;
            }
            foreign_senders.push(ForeignSender {
                address,
                login: login.trim().to_lowercase(),
                relay: relay.trim().to_string(),
            });
        }
        // A registered foreign address is owned by its login, so the
        // sender-login checks protect it from other users too.
        if !foreign_senders.is_empty() {
            let map = logins.get_or_insert_with(LoginMap::default);
            for f in &foreign_senders {
                map.add(&f.address, &f.login);
            }
        }
        Site {
            mynetworks: nets,
            recipient_delimiter,
            access_subdomains: parent_domain_matches_subdomains
                .iter()
                .any(|s| s == "smtpd_access_maps"),
            null_access_key: smtpd_null_access_lookup_key,
            codes,
            domains: domains.into_iter().collect(),
            myorigin,
            relay_domains,
            addresses,
            spf: SpfSettings::default(),
            logins,
            foreign_senders,
            egress: egress_ips,
            outbound_spf: crate::site::default_outbound_actions(),
        }
    }

    /// The login map: a smtpd_sender_login_maps file and/or ownership
    /// derived from the alias table; `None` when neither is configured.
    fn logins(
        &mut self,
        file: Option<Spanned<String>>,
        from_aliases: bool,
        addresses: &Addresses,
        files: &mut Vec<PathBuf>,
    ) -> Option<LoginMap> {
        if file.is_none() && !from_aliases {
            return None;
        }
        let mut map = LoginMap::default();
        if from_aliases {
            map.add_from_aliases(addresses);
        }
        if let Some(f) = file {
            let path = self.base.join(f.get_ref());
            if let Err(e) = map.load_file(&path) {
                self.error(f.span(), "site.login_map", e.to_string());
            }
            files.push(path);
        }
        Some(map)
    }

    fn spf(&mut self, s: schema::SpfSection, files: &mut Vec<PathBuf>) -> SpfSettings {
        let schema::SpfSection {
            check_helo,
            receiver,
            header,
            authserv_id,
            skip_mynetworks,
            skip_authenticated,
            whitelist,
            timeout,
            cache_ttl,
            cache_size,
            mail_from,
            helo,
        } = s;
        let mut out = SpfSettings::default();
        if let Some(v) = check_helo {
            out.check_helo = v;
        }
        if let Some(r) = receiver {
            out.authserv_id = r.clone();
            out.receiver = r;
        }
        if let Some(a) = authserv_id {
            out.authserv_id = a;
        }
        if let Some(h) = header {
            out.header = match h.get_ref().as_str() {
                "received-spf" => HeaderKind::ReceivedSpf,
                "authentication-results" => HeaderKind::AuthenticationResults,
                "none" => HeaderKind::None,
                _ => {
                    self.error(
                        h.span(),
                        "spf.header",
                        "expected \"received-spf\", \"authentication-results\" or \"none\"",
                    );
                    HeaderKind::ReceivedSpf
                }
            };
        }
        if let Some(v) = skip_mynetworks {
            out.skip_mynetworks = v;
        }
        if let Some(v) = skip_authenticated {
            out.skip_authenticated = v;
        }
        if let Some(w) = whitelist {
            let path = self.base.join(w.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(text) => match Whitelist::parse(&text) {
                    Ok(list) => out.whitelist = list,
                    Err((line, msg)) => self.error(
                        w.span(),
                        "spf.whitelist",
                        format!("{}:{line}: {msg}", path.display()),
                    ),
                },
                Err(e) => self.error(
                    w.span(),
                    "spf.whitelist",
                    format!("{}: cannot read: {e}", path.display()),
                ),
            }
            files.push(path);
        }
        for (value, key, slot) in [
            (timeout, "spf.timeout", &mut out.timeout),
            (cache_ttl, "spf.cache_ttl", &mut out.cache_ttl),
        ] {
            if let Some(v) = value {
                match parse_duration(v.get_ref()) {
                    Ok(d) => *slot = d,
                    Err(e) => self.errors.push(self.positioned(v.span(), key, e)),
                }
            }
        }
        if let Some(n) = cache_size {
            if *n.get_ref() == 0 {
                self.error(n.span(), "spf.cache_size", "must be at least 1");
            } else {
                out.cache_size = *n.get_ref();
            }
        }
        if let Some(a) = mail_from {
            out.mail_from = self.spf_actions(a, "spf.mail_from", out.mail_from);
        }
        if let Some(a) = helo {
            out.helo = self.spf_actions(a, "spf.helo", out.helo);
        }
        out
    }

    fn spf_actions(
        &mut self,
        a: schema::SpfActionsSection,
        section: &str,
        mut out: ResultActions,
    ) -> ResultActions {
        let schema::SpfActionsSection {
            pass,
            fail,
            softfail,
            neutral,
            none,
            temperror,
            permerror,
        } = a;
        for (value, name, slot) in [
            (pass, "pass", &mut out.pass),
            (fail, "fail", &mut out.fail),
            (softfail, "softfail", &mut out.softfail),
            (neutral, "neutral", &mut out.neutral),
            (none, "none", &mut out.none),
            (temperror, "temperror", &mut out.temperror),
            (permerror, "permerror", &mut out.permerror),
        ] {
            if let Some(v) = value {
                match SpfAction::parse(v.get_ref()) {
                    Some(action) => *slot = action,
                    None => self.errors.push(self.positioned(
                        v.span(),
                        &format!("{section}.{name}"),
                        "expected \"accept\", \"reject\", \"defer\" or \"defer_if_permit\"",
                    )),
                }
            }
        }
        out
    }

    fn profile(
        &mut self,
        name: &str,
        section: Spanned<ProfileSection>,
        tables: &mut Tables,
        site: &Site,
    ) -> Option<Profile> {
        let ProfileSection {
            matcher,
            called_from,
            helo_required,
            ignore_sasl,
            client,
            helo,
            sender,
            recipient,
        } = section.into_inner();
        let matcher = matcher.map_or_else(Match::default, |m| Match {
            server_port: m.server_port,
            policy_context: m.policy_context,
        });
        let called_from = match called_from {
            None => Stage::Recipient,
            Some(s) => match Stage::parse(s.get_ref()) {
                Some(stage) => stage,
                None => {
                    self.error(
                        s.span(),
                        &format!("profile.{name}.called_from"),
                        "expected client, helo, sender or recipient",
                    );
                    Stage::Recipient
                }
            },
        };
        let mut stages: [Vec<ChainRule>; 4] = Default::default();
        let before = self.errors.len();
        for (stage, list) in [
            (Stage::Client, client),
            (Stage::Helo, helo),
            (Stage::Sender, sender),
            (Stage::Recipient, recipient),
        ] {
            for rule in list {
                let key = format!("profile.{name}.{stage}");
                match rules::compile(rule.get_ref(), stage, tables, site) {
                    Ok(compiled) => stages[stage as usize].push(ChainRule {
                        text: rule
                            .get_ref()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" "),
                        rule: compiled,
                    }),
                    Err(e) => self.error(rule.span(), &key, e.to_string()),
                }
                for e in tables.errors.drain(..) {
                    self.error(rule.span(), &key, e);
                }
            }
        }
        (self.errors.len() == before).then(|| Profile {
            name: name.to_string(),
            matcher,
            called_from,
            helo_required,
            ignore_sasl,
            stages,
        })
    }

    /// Two profiles with the same match could never both be chosen.
    fn check_matches(&mut self, profiles: &[(Profile, Range<usize>)]) {
        for (i, (a, span)) in profiles.iter().enumerate() {
            if let Some((b, _)) = profiles[..i].iter().find(|(b, _)| b.matcher == a.matcher) {
                self.error(
                    span.clone(),
                    &format!("profile.{}.match", a.name),
                    format!(
                        "same match ({}) as profile {:?}: only one of them could ever be chosen",
                        a.matcher, b.name
                    ),
                );
            }
        }
    }
}

/// Table references of the rules: names from `[tables]` or inline specs,
/// each file loaded once.
struct Tables {
    named: HashMap<String, TableSpec>,
    loaded: HashMap<TableSpec, Arc<AccessTable>>,
    base: PathBuf,
    codes: AccessCodes,
    errors: Vec<String>,
}

impl TableResolver for Tables {
    fn table(&mut self, arg: &str) -> Result<Arc<AccessTable>, String> {
        let spec = match self.named.get(arg) {
            Some(spec) => spec.clone(),
            None if arg.contains(':') || arg.contains('/') => tables::parse_spec(arg, &self.base)?,
            None => {
                return Err(format!(
                    "no table named {arg:?} in [tables] (write a path or type:path to use a file directly)"
                ));
            }
        };
        if let Some(t) = self.loaded.get(&spec) {
            return Ok(t.clone());
        }
        let table =
            AccessTable::load(&spec.path, spec.kind, self.codes).map_err(|e| e.to_string())?;
        let table = Arc::new(table);
        self.loaded.insert(spec, table.clone());
        Ok(table)
    }
}

/// Where the key at dotted `path` is written, for unknown-key errors.
fn key_span(text: &str, path: &str) -> Range<usize> {
    use toml::de::{DeTable, DeValue};
    let Ok(root) = DeTable::parse(text) else {
        return 0..0;
    };
    let mut table = root.get_ref();
    let mut span = 0..0;
    for segment in path.split('.') {
        let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == segment) else {
            break;
        };
        span = key.span();
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    span
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// Parses a Postfix-style time: a number with an optional unit `ms`, `s`
/// (default), `m`, `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad time {text:?}: expected a number with a unit, e.g. \"300s\""))?;
    let secs = |mult: u64| Duration::from_secs(n.saturating_mul(mult));
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(secs(1)),
        "m" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        "d" => Ok(secs(86400)),
        "w" => Ok(secs(7 * 86400)),
        other => Err(format!(
            "bad time unit {other:?} in {text:?} (use ms, s, m, h, d or w)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("100"), Ok(Duration::from_secs(100)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

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

    fn errors(text: &str) -> Vec<String> {
        match load_str(Path::new("p.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_section_denies_unknown_keys() {
        for (section, extra) in [
            ("", "bogus = 1\n"),
            ("[server]\n", "bogus = 1\n"),
            ("[site]\n", "bogus = 1\n"),
            ("[postfix]\n", "bogus = 1\n"),
            ("[profile.a]\n", "bogus = 1\n"),
            ("[profile.a.match]\n", "bogus = 1\n"),
        ] {
            let errs = errors(&format!("{section}{extra}"));
            assert_eq!(errs.len(), 1, "{section}: {errs:?}");
            assert!(errs[0].contains("bogus"), "{errs:?}");
            assert!(errs[0].starts_with("p.toml:"), "{errs:?}");
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

    #[test]
    fn duplicate_matches_are_refused() {
        let errs =
            errors("[profile.a.match]\nserver_port = 25\n[profile.b.match]\nserver_port = 25\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("same match"), "{errs:?}");
    }
}
