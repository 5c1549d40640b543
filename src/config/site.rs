//! `[site]`: what rpol knows about the mail system it guards (networks,
//! domains, mailboxes and aliases, logins, egress addresses, registered
//! foreign senders), compiled into a [`Site`].

use std::path::PathBuf;

use toml::Spanned;

use super::postfix::Postfix;
use super::{Compiler, schema};
use crate::site::{ForeignSender, Networks, Site};
use crate::spf::SpfSettings;
use crate::tables::addresses::Addresses;
use crate::tables::logins::LoginMap;

impl Compiler<'_> {
    pub(super) fn site(
        &mut self,
        s: schema::SiteSection,
        postfix: Postfix,
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
        let Postfix {
            codes,
            access_subdomains,
            null_access_key,
        } = postfix;
        let mynetworks = Networks::new(self.networks(mynetworks, "site.mynetworks"));
        let domains = self.domains(domains, "site.domains");
        let myorigin = match myorigin {
            Some(m) => self
                .domains(vec![m], "site.myorigin")
                .pop()
                .unwrap_or_default(),
            None => domains.first().cloned().unwrap_or_default(),
        };
        let relay_domains = self.domains(relay_domains, "site.relay_domains");
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
        let egress = self.ip_addrs(egress, "site.egress");
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
            myorigin,
            relay_domains,
            addresses,
            spf: SpfSettings::default(),
            logins,
            foreign_senders,
            egress,
            outbound_spf: crate::site::default_outbound_actions(),
            greylist: None,
        }
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
