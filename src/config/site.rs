//! `[site]`: what rpol knows about the mail system it guards (networks,
//! domains, mailboxes and aliases, logins, egress addresses, registered
//! foreign senders), compiled into a [`Site`].

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::postfix::Postfix;
use super::postfix_site::Parameters;
use super::{Compiler, schema};
use crate::site::{ForeignSender, Networks, Site};
use crate::spf::SpfSettings;
use crate::tables::addresses::Addresses;
use crate::tables::logins::LoginMap;

/// `[site] postfix`, read: its parameters, and where errors about them
/// point (the key's value).
struct FromPostfix {
    params: Parameters,
    span: Range<usize>,
    /// "Postfix DIR/main.cf", naming the source in `--check-config`.
    origin: String,
}

/// What `--check-config` says for one fact: its value and where from.
fn source_line(key: &str, value: &str, from: &str) -> String {
    let value = if value.is_empty() { "(none)" } else { value };
    format!("{key} = {value} ({from})")
}

impl Compiler<'_> {
    pub(super) fn site(
        &mut self,
        s: schema::SiteSection,
        postfix: Postfix,
        files: &mut Vec<PathBuf>,
    ) -> Site {
        let schema::SiteSection {
            postfix: postfix_dir,
            mynetworks,
            recipient_delimiter,
            domains,
            mydestination,
            myorigin,
            relay_domains,
            mailboxes,
            aliases,
            login_map,
            login_from_aliases,
            egress,
            myhostname,
            foreign_sender,
        } = s;
        let Postfix {
            codes,
            access_subdomains,
            null_access_key,
            // Compiled into the site's DNS list replies by config/dnsbl.rs.
            rbl_code: _,
            default_rbl_reply: _,
        } = postfix;
        let pf = postfix_dir.and_then(|d| self.read_postfix(d, files));
        let mut sources = Vec::new();
        let mut note = |key: &str, value: String, from: &str| {
            if pf.is_some() {
                sources.push(source_line(key, &value, from));
            }
        };
        let written = |key: &str| format!("[site] {key}");
        let joined = |v: &[String]| v.join(", ");

        let nets = match (mynetworks, &pf) {
            (Some(list), _) => {
                let nets = self.networks(list, "site.mynetworks");
                let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
                note("mynetworks", joined(&shown), &written("mynetworks"));
                nets
            }
            (None, Some(pf)) => match pf.params.mynetworks() {
                Ok((read, why)) => {
                    files.extend(read.files);
                    let shown: Vec<String> = read.values.iter().map(ToString::to_string).collect();
                    let from = why.unwrap_or_else(|| format!("{}: mynetworks", pf.origin));
                    note("mynetworks", joined(&shown), &from);
                    read.values
                }
                Err(e) => {
                    self.error(pf.span.clone(), "site.postfix", e);
                    Vec::new()
                }
            },
            (None, None) => Vec::new(),
        };
        let mynetworks = Networks::new(nets);

        const DOMAINS: &[&str] = &["virtual_mailbox_domains", "virtual_alias_domains"];
        let mut domain_list = |key: &str,
                               list: Option<Vec<Spanned<String>>>,
                               params: &[&str],
                               files: &mut Vec<PathBuf>,
                               this: &mut Self| {
            let (values, from) = match (list, &pf) {
                (Some(list), _) => (this.domains(list, &format!("site.{key}")), written(key)),
                (None, Some(pf)) => (
                    this.postfix_domains(pf, params, key, files),
                    format!("{}: {}", pf.origin, params.join(", ")),
                ),
                (None, None) => (Vec::new(), String::new()),
            };
            note(key, joined(&values), &from);
            values
        };
        let domains = domain_list("domains", domains, DOMAINS, files, self);
        let mydestination = domain_list(
            "mydestination",
            mydestination,
            &["mydestination"],
            files,
            self,
        );
        let relay_domains = domain_list(
            "relay_domains",
            relay_domains,
            &["relay_domains"],
            files,
            self,
        );

        let myorigin = match (myorigin, &pf) {
            (Some(m), _) => {
                let m = self
                    .domains(vec![m], "site.myorigin")
                    .pop()
                    .unwrap_or_default();
                note("myorigin", m.clone(), &written("myorigin"));
                m
            }
            (None, Some(pf)) => {
                let m = pf
                    .params
                    .get("myorigin")
                    .trim_end_matches('.')
                    .to_lowercase();
                if !crate::syntax::valid_hostname(&m) {
                    self.error(
                        pf.span.clone(),
                        "site.postfix",
                        format!("myorigin = {m}: not a valid domain name: write [site] myorigin"),
                    );
                }
                note("myorigin", m.clone(), &format!("{}: myorigin", pf.origin));
                m
            }
            (None, None) => domains.first().cloned().unwrap_or_default(),
        };
        let recipient_delimiter = match (recipient_delimiter, &pf) {
            (Some(d), _) => {
                note(
                    "recipient_delimiter",
                    d.clone(),
                    &written("recipient_delimiter"),
                );
                d
            }
            (None, Some(pf)) => {
                let d = pf.params.get("recipient_delimiter").to_string();
                let from = format!("{}: recipient_delimiter", pf.origin);
                note("recipient_delimiter", d.clone(), &from);
                d
            }
            (None, None) => String::new(),
        };

        // The address files: written ones relative to this file, Postfix's
        // the sources of its maps (absolute, as Postfix names them).
        let map_files = |key: &str,
                         value: &Option<Spanned<String>>,
                         param: &str,
                         instead: &str,
                         this: &mut Self|
         -> (Vec<PathBuf>, String) {
            match (value, &pf) {
                (Some(v), _) => (vec![this.base.join(v.get_ref())], written(key)),
                (None, Some(pf)) => match pf.params.maps(param, instead) {
                    Ok(paths) => (paths, format!("{}: {param}", pf.origin)),
                    Err(e) => {
                        this.error(pf.span.clone(), "site.postfix", e);
                        (Vec::new(), String::new())
                    }
                },
                (None, None) => (Vec::new(), String::new()),
            }
        };
        let (mailbox_paths, mailbox_from) = map_files(
            "mailboxes",
            &mailboxes,
            "virtual_mailbox_maps",
            "mailboxes = \"FILE\" with the addresses",
            self,
        );
        let (alias_paths, alias_from) = map_files(
            "aliases",
            &aliases,
            "virtual_alias_maps",
            "aliases = \"FILE\" with the addresses",
            self,
        );
        let addresses = match Addresses::load_all(&mailbox_paths, &alias_paths) {
            Ok(a) => a,
            Err(e) => {
                let mailbox = mailbox_paths.contains(&e.path);
                let (key, value, param) = if mailbox {
                    ("site.mailboxes", &mailboxes, "virtual_mailbox_maps")
                } else {
                    ("site.aliases", &aliases, "virtual_alias_maps")
                };
                match (value, &pf) {
                    (Some(v), _) => self.error(v.span(), key, e.to_string()),
                    (None, Some(pf)) => {
                        self.error(pf.span.clone(), "site.postfix", format!("{param}: {e}"))
                    }
                    (None, None) => self.error(0..0, key, e.to_string()),
                }
                Addresses::default()
            }
        };
        let shown = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let count = |n: usize, paths: &[PathBuf]| {
            if paths.is_empty() {
                String::new()
            } else {
                format!("{n} from {}", shown(paths))
            }
        };
        note(
            "mailboxes",
            count(addresses.mailbox_count(), &mailbox_paths),
            &mailbox_from,
        );
        note(
            "aliases",
            count(addresses.alias_count(), &alias_paths),
            &alias_from,
        );
        files.extend(mailbox_paths);
        files.extend(alias_paths);
        let mut logins = self.logins(login_map, login_from_aliases, &addresses, files);
        let egress = self.ip_addrs(egress, "site.egress");
        let myhostname = match (myhostname, &pf) {
            (Some(m), _) => {
                let m = self
                    .domains(vec![m], "site.myhostname")
                    .pop()
                    .unwrap_or_default();
                note("myhostname", m.clone(), &written("myhostname"));
                m
            }
            (None, Some(pf)) => {
                let m = pf
                    .params
                    .get("myhostname")
                    .trim_end_matches('.')
                    .to_lowercase();
                // Not needed to serve: an odd one is left out, not an error.
                let m = if crate::syntax::valid_hostname(&m) {
                    m
                } else {
                    String::new()
                };
                note(
                    "myhostname",
                    m.clone(),
                    &format!("{}: myhostname", pf.origin),
                );
                m
            }
            (None, None) => String::new(),
        };
        let foreign_senders = self.foreign_senders(foreign_sender);
        // A registered foreign address is owned by its login, so the
        // sender-login checks protect it from other users too.
        if !foreign_senders.is_empty() {
            let map = logins.get_or_insert_with(LoginMap::default);
            for f in &foreign_senders {
                map.add(&f.address, &f.login);
            }
        }
        Site {
            mynetworks,
            recipient_delimiter,
            access_subdomains,
            null_access_key,
            codes,
            domains: domains.into_iter().collect(),
            mydestination: mydestination.into_iter().collect(),
            myorigin,
            relay_domains,
            addresses,
            spf: SpfSettings::default(),
            logins,
            foreign_senders,
            egress,
            outbound_spf: crate::site::default_outbound_actions(),
            greylist: None,
            dnsbl_replies: crate::dnsbl::Replies::default(),
            dnsbl_health: crate::dnsbl::health::Settings::default(),
            myhostname,
            dnsbl_sites: None,
            sources,
        }
    }

    /// Runs postconf on `[site] postfix`; `None` (the error recorded) when
    /// the directory cannot be read: never an empty list of domains. main.cf
    /// is watched from here on, as the files it names are.
    fn read_postfix(
        &mut self,
        dir: Spanned<String>,
        files: &mut Vec<PathBuf>,
    ) -> Option<FromPostfix> {
        let span = dir.span();
        let path = PathBuf::from(dir.get_ref());
        if !path.is_absolute() {
            self.error(
                span,
                "site.postfix",
                "must be an absolute directory (as /etc/postfix)",
            );
            return None;
        }
        files.push(path.join("main.cf"));
        match Parameters::read(&path) {
            Ok(params) => Some(FromPostfix {
                origin: format!("Postfix {}", params.main_cf.display()),
                params,
                span,
            }),
            Err(e) => {
                self.error(span, "site.postfix", e);
                None
            }
        }
    }

    /// The domains of Postfix's `params`, checked and each once, in order.
    fn postfix_domains(
        &mut self,
        pf: &FromPostfix,
        params: &[&str],
        key: &str,
        files: &mut Vec<PathBuf>,
    ) -> Vec<String> {
        let instead = format!("{key} = [\"DOMAIN\", ...]");
        let mut out: Vec<String> = Vec::new();
        for param in params {
            let read = match pf.params.domains(param, &instead) {
                Ok(read) => read,
                Err(e) => {
                    self.error(pf.span.clone(), "site.postfix", e);
                    continue;
                }
            };
            files.extend(read.files);
            for d in read.values {
                let name = d.trim_end_matches('.').to_lowercase();
                if !crate::syntax::valid_hostname(&name) {
                    self.error(
                        pf.span.clone(),
                        "site.postfix",
                        format!("{param}: {d:?} is not a valid domain name: write [site] {instead} instead"),
                    );
                } else if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// `[[site.foreign_sender]]`: each address once, with its login and
    /// relay.
    pub(super) fn foreign_senders(
        &mut self,
        list: Vec<Spanned<schema::ForeignSenderSection>>,
    ) -> Vec<ForeignSender> {
        let mut out: Vec<ForeignSender> = Vec::new();
        for f in list {
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
            if out.iter().any(|o| o.address == address) {
                self.error(
                    span,
                    "site.foreign_sender.address",
                    format!("{address:?} is registered twice"),
                );
                continue;
            }
            out.push(ForeignSender {
                address,
                login: login.trim().to_lowercase(),
                relay: relay.trim().to_string(),
            });
        }
        out
    }

    /// The login map: a smtpd_sender_login_maps file and/or ownership
    /// derived from the alias table; `None` when neither is configured.
    pub(super) fn logins(
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
}
