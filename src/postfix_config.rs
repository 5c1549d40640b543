//! `--postfix-config`: the Postfix lines that match a policy.toml, so one
//! file stays the truth: main.cf and master.cf entries that call rpol, and
//! for registered foreign senders the sender_dependent_relayhost_maps and
//! smtp_sasl_password_maps sources (passwords left as placeholders).

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{ListenAddr, ServerSettings};
use crate::policy::{Policy, Profile};

/// Postfix's queue directory, which `unix:private/NAME` is relative to.
const QUEUE_DIRECTORY: &str = "/var/spool/postfix";
/// Source files written for the foreign senders.
const RELAY_MAP: &str = "/etc/postfix/rpol_sender_relay";
const SASL_MAP: &str = "/etc/postfix/rpol_sasl_passwd";

/// The check_policy_service endpoint for rpol's first listen address.
pub fn endpoint(server: &ServerSettings) -> String {
    match server.listen.first() {
        Some(ListenAddr::Unix(path)) => match path.strip_prefix(QUEUE_DIRECTORY) {
            Ok(rel) => format!("unix:{}", rel.display()),
            Err(_) => format!("unix:{}", path.display()),
        },
        Some(ListenAddr::Tcp(hostport)) => format!("inet:{hostport}"),
        None => "inet:127.0.0.1:10040".into(),
    }
}

/// Whether a profile counts messages with check_rate_limit: Postfix must
/// then also call rpol at END-OF-MESSAGE.
fn counts_messages(p: &Profile) -> bool {
    p.stages
        .iter()
        .flatten()
        .any(|r| r.rule.name() == "check_rate_limit")
}

/// Whether a profile may have two headers due for one recipient: a
/// response carries one, and the other then waits for DATA (a message
/// with one recipient has no second RCPT), so Postfix must ask there too.
fn may_keep_a_header(p: &Profile, policy: &Policy) -> bool {
    let header_rules = p
        .stages
        .iter()
        .flatten()
        .filter(|r| match r.rule.name() {
            "check_spf" => policy.site.spf.header != crate::spf::HeaderKind::None,
            "check_greylist" => policy
                .site
                .greylist
                .as_ref()
                .is_some_and(|g| !g.header.is_empty()),
            name => name.starts_with("check_") && name.ends_with("_access"),
        })
        .count();
    header_rules >= 2
}

/// The comment above the data line.
const DATA: &str =
    "# A header that an RCPT answer could not carry goes out at DATA (one action per answer).";

/// The comment above the end-of-data line.
const END_OF_DATA: &str = "# check_rate_limit counts each accepted message at END-OF-MESSAGE.";

pub fn render(server: &ServerSettings, policy: &Policy, source: &Path) -> String {
    let ep = endpoint(server);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Postfix configuration for rpol, from {}",
        source.display()
    );
    let _ = writeln!(out, "\n# ---- main.cf ----");
    let _ = writeln!(
        out,
        "# Port 25: Postfix's own relay guard first; rpol answers DUNNO when it\n\
         # has no objection, never OK.\n\
         smtpd_recipient_restrictions =\n    permit_mynetworks,\n    reject_unauth_destination,\n    check_policy_service {ep}\n\
         smtpd_policy_service_max_idle = {}s\nsmtpd_policy_service_timeout = {}s",
        server.idle_timeout.as_secs(),
        server.request_timeout.as_secs()
    );
    if !policy.site.foreign_senders.is_empty() {
        let _ = writeln!(
            out,
            "# Registered foreign senders leave through their provider's server.\n\
             sender_dependent_relayhost_maps = hash:{RELAY_MAP}\n\
             smtp_sender_dependent_authentication = yes\n\
             smtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = hash:{SASL_MAP}\n\
             smtp_sasl_security_options = noanonymous\n\
             smtp_tls_security_level = may"
        );
    }
    let is_service = |p: &&Profile| {
        p.matcher.server_port.iter().any(|port| *port != 25) || !p.matcher.policy_context.is_empty()
    };
    if policy
        .profiles
        .iter()
        .filter(|p| !is_service(p))
        .any(counts_messages)
    {
        let _ = writeln!(
            out,
            "{END_OF_DATA}\nsmtpd_end_of_data_restrictions = check_policy_service {ep}"
        );
    }
    let data_line = policy
        .profiles
        .iter()
        .filter(|p| !is_service(p))
        .any(|p| may_keep_a_header(p, policy));
    if data_line {
        let _ = writeln!(
            out,
            "{DATA}\nsmtpd_data_restrictions = check_policy_service {ep}"
        );
    }
    // One service per port of a profile (one profile may serve 465 and
    // 587); port 25 is main.cf's smtpd, unless a context asks for it.
    let services: Vec<(&Profile, Option<u16>)> = policy
        .profiles
        .iter()
        .filter(is_service)
        .flat_map(|p| {
            let ports = &p.matcher.server_port;
            let with_context = !p.matcher.policy_context.is_empty();
            let ports: Vec<Option<u16>> = if ports.is_empty() {
                vec![None]
            } else {
                ports
                    .iter()
                    .filter(|port| **port != 25 || with_context)
                    .map(|port| Some(*port))
                    .collect()
            };
            ports.into_iter().map(move |port| (p, port))
        })
        .collect();
    if !services.is_empty() {
        let _ = writeln!(out, "\n# ---- master.cf ----");
    }
    for (p, port) in services {
        let (service, wrapper) = match port {
            Some(465) => ("submissions", true),
            Some(587) | None => ("submission", false),
            Some(port) => {
                let _ = writeln!(
                    out,
                    "# profile {:?}: a service listening on port {port}",
                    p.name
                );
                ("", false)
            }
        };
        let name = if service.is_empty() {
            format!("{}", port.unwrap_or(0))
        } else {
            service.to_string()
        };
        let _ = writeln!(out, "# profile {:?} ({})", p.name, p.matcher);
        let _ = writeln!(out, "{name} inet n - y - - smtpd");
        let _ = writeln!(out, "  -o syslog_name=postfix/{name}");
        if wrapper {
            let _ = writeln!(out, "  -o smtpd_tls_wrappermode=yes");
        } else {
            let _ = writeln!(out, "  -o smtpd_tls_security_level=encrypt");
        }
        let _ = writeln!(out, "  -o smtpd_sasl_auth_enable=yes");
        if let Some(ctx) = p.matcher.policy_context.first() {
            let _ = writeln!(out, "  -o smtpd_policy_service_policy_context={ctx}");
        }
        let _ = writeln!(
            out,
            "  -o {{ smtpd_recipient_restrictions = check_policy_service {ep}, permit_sasl_authenticated, reject }}"
        );
        let _ = writeln!(
            out,
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
        );
        if counts_messages(p) {
            let _ = writeln!(
                out,
                "  -o {{ smtpd_end_of_data_restrictions = check_policy_service {ep} }}"
            );
        }
        if data_line && !may_keep_a_header(p, policy) {
            // main.cf's DATA call is for port 25's headers.
            let _ = writeln!(out, "  -o smtpd_data_restrictions=");
        } else if !data_line && may_keep_a_header(p, policy) {
            let _ = writeln!(
                out,
                "  -o {{ smtpd_data_restrictions = check_policy_service {ep} }}"
            );
        }
    }
    if !policy.site.foreign_senders.is_empty() {
        let _ = writeln!(out, "\n# ---- {RELAY_MAP} (then: postmap {RELAY_MAP}) ----");
        for f in &policy.site.foreign_senders {
            let _ = writeln!(out, "{}\t{}", f.address, f.relay);
        }
        let _ = writeln!(
            out,
            "\n# ---- {SASL_MAP} (chmod 600, then: postmap {SASL_MAP}) ----"
        );
        for f in &policy.site.foreign_senders {
            let _ = writeln!(out, "{}\t{}:PASSWORD", f.address, f.address);
        }
    }
    out
}
