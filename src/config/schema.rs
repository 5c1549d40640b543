//! The serde shape of policy.toml. Unknown keys are collected by the loader
//! (serde_ignored) and each is reported with its position and key path, so
//! one run shows every mistake; no untagged or flattened enums (they would
//! hide unknown keys). The compiler destructures every struct here whole,
//! without `..`, so a new field does not compile until it is handled.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::values::OneOrMany;

#[derive(Debug, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub site: SiteSection,
    #[serde(default)]
    pub postfix: PostfixSection,
    #[serde(default)]
    pub dns: DnsSection,
    #[serde(default)]
    pub spf: SpfSection,
    /// Actions per SPF result of check_outbound_spf.
    #[serde(default)]
    pub outbound_spf: SpfActionsSection,
    /// Where greylisting state lives (server settings, not policy).
    pub store: Option<StoreSection>,
    /// check_greylist's settings.
    pub greylist: Option<Spanned<GreylistSection>>,
    /// Named access tables: `name = "[type:]path"`.
    #[serde(default)]
    pub tables: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub profile: BTreeMap<String, Spanned<ProfileSection>>,
    /// `[metrics]`: the Prometheus endpoint; absent, none is served.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// `[log]`: what is logged (server settings, not policy).
    #[serde(default)]
    pub log: LogSection,
    /// `[[rate_limit]]`: budgets that check_rate_limit NAME applies.
    #[serde(default)]
    pub rate_limit: Vec<Spanned<RateLimitSection>>,
    /// `[dnsbl]`: the DNS lists' replies.
    #[serde(default)]
    pub dnsbl: DnsblSection,
}

/// `[dnsbl]`.
#[derive(Debug, Default, Deserialize)]
pub struct DnsblSection {
    /// Postfix's rbl_reply_maps: a reply template per `domain=filter` or
    /// per domain.
    #[serde(default)]
    pub reply: BTreeMap<String, Spanned<String>>,
    /// Probe each list with RFC 5782's test entries (default true).
    pub probe: Option<bool>,
    pub probe_interval: Option<Spanned<String>>,
    /// Look our egress up in the blocklists (default true).
    pub watch_egress: Option<bool>,
    pub watch_interval: Option<Spanned<String>>,
    /// How long a list that keeps timing out is skipped.
    pub timeout_pause: Option<Spanned<String>>,
    /// postscreen_dnsbl_sites: `domain[=filter][*weight]`, scored by
    /// check_dnsbl_score.
    pub sites: Option<Spanned<Vec<Spanned<String>>>>,
    /// postscreen_dnsbl_threshold.
    pub threshold: Option<Spanned<i64>>,
    /// postscreen_dnsbl_allowlist_threshold.
    pub allowlist_threshold: Option<Spanned<i64>>,
    /// postscreen_dnsbl_min_ttl and max_ttl.
    pub min_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
}

/// One `[[rate_limit]]`.
#[derive(Debug, Deserialize)]
pub struct RateLimitSection {
    pub name: Option<Spanned<String>>,
    /// `sasl_username`, `client_address` or `sender`.
    pub key: Option<Spanned<String>>,
    pub messages: Option<Spanned<usize>>,
    pub recipients: Option<Spanned<usize>>,
    pub distinct_clients: Option<Spanned<usize>>,
    pub window: Option<Spanned<String>>,
    /// `defer` (default) or `reject`.
    pub action: Option<Spanned<String>>,
    /// `dunno` (default) or `defer`.
    pub on_store_error: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MetricsSection {
    /// `IP:PORT` to serve GET /metrics on.
    pub listen: Option<Spanned<String>>,
    /// A scrape connection's whole life, from accept to answer written.
    pub timeout: Option<Spanned<String>>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
pub struct LogSection {
    /// `all`, `refusals` or `none`: which decision lines are written.
    pub decisions: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerSection {
    pub listen: Option<Vec<Spanned<String>>>,
    pub socket_mode: Option<Spanned<String>>,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    /// The account to run as once the sockets are bound (when started as
    /// root), and its group if not the account's own.
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_connections_per_address: Option<Spanned<usize>>,
    pub threads: Option<Spanned<usize>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub answer_timeout: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    /// How often the config file and its tables are checked for changes.
    pub watch_interval: Option<Spanned<String>>,
    pub error_action: Option<Spanned<String>>,
    /// TCP peers served (networks); unix-socket peers besides root, the
    /// socket's owner and rpol's own account (account names).
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_users: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SiteSection {
    /// A Postfix configuration directory to read the facts below from;
    /// each key written here overrides what Postfix says (hence `Option`:
    /// written empty is not unset).
    pub postfix: Option<Spanned<String>>,
    pub mynetworks: Option<Vec<Spanned<String>>>,
    pub recipient_delimiter: Option<String>,
    /// Our final destinations (virtual mailbox and alias domains).
    pub domains: Option<Vec<Spanned<String>>>,
    /// Postfix mydestination: ours, with local recipients Postfix checks.
    pub mydestination: Option<Vec<Spanned<String>>>,
    /// Postfix `$myorigin` for unqualified senders (default: the first
    /// of `domains`).
    pub myorigin: Option<Spanned<String>>,
    /// Domains we relay to (Postfix relay_domains).
    pub relay_domains: Option<Vec<Spanned<String>>>,
    /// virtual_mailbox_maps source file.
    pub mailboxes: Option<Spanned<String>>,
    /// virtual_alias_maps source file.
    pub aliases: Option<Spanned<String>>,
    /// smtpd_sender_login_maps source file.
    pub login_map: Option<Spanned<String>>,
    /// Derive ownership from the alias table too.
    #[serde(default)]
    pub login_from_aliases: bool,
    /// Where our mail leaves from, as the world sees it.
    #[serde(default)]
    pub egress: Vec<Spanned<String>>,
    /// The name our SMTP client says in HELO (Postfix's myhostname).
    pub myhostname: Option<Spanned<String>>,
    /// Foreign addresses a login may send as, relayed through their own
    /// provider's submission server.
    #[serde(default)]
    pub foreign_sender: Vec<Spanned<ForeignSenderSection>>,
}

#[derive(Debug, Deserialize)]
pub struct ForeignSenderSection {
    pub address: String,
    pub login: String,
    /// Postfix relayhost syntax: `[smtp.provider.example]:587`.
    pub relay: String,
}

/// `[store]`: the greylisting store.
#[derive(Debug, Default, Deserialize)]
pub struct StoreSection {
    /// `embedded` (default) or `redis`.
    pub backend: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    /// CA certificates (PEM) for a TLS url, in place of the system's.
    pub tls_ca: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    /// Refused with a pointer to the per-kind budgets below.
    pub max_entries: Option<Spanned<usize>>,
    pub max_triplets: Option<Spanned<usize>>,
    pub max_unconfirmed_per_network: Option<Spanned<usize>>,
    pub max_clients: Option<Spanned<usize>>,
    pub max_rate_records: Option<Spanned<usize>>,
}

/// `[greylist]`: check_greylist, with postgrey's option names.
#[derive(Debug, Default, Deserialize)]
pub struct GreylistSection {
    pub delay: Option<Spanned<String>>,
    pub max_age: Option<Spanned<String>>,
    pub retry_window: Option<Spanned<String>>,
    pub ipv4_prefix: Option<Spanned<u8>>,
    pub ipv6_prefix: Option<Spanned<u8>>,
    pub auto_whitelist_clients: Option<Spanned<u64>>,
    pub whitelist_clients: Option<Vec<Spanned<String>>>,
    pub whitelist_recipients: Option<Vec<Spanned<String>>>,
    pub action: Option<Spanned<String>>,
    pub header: Option<Spanned<String>>,
    pub skip_spf_pass: Option<bool>,
    pub skip_fcrdns_match: Option<bool>,
    pub on_store_error: Option<Spanned<String>>,
    /// Greylist only clients whose `[dnsbl] sites` score is at least this.
    pub min_dnsbl_score: Option<Spanned<i64>>,
    /// Never greylist a client at or below `[dnsbl] allowlist_threshold`.
    pub skip_dnswl: Option<Spanned<bool>>,
    pub privacy: Option<bool>,
}

/// `[dns]`: the one resolver.
#[derive(Debug, Default, Deserialize)]
pub struct DnsSection {
    /// `IP` or `IP:PORT`; empty: /etc/resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub attempts: Option<Spanned<usize>>,
    pub cache_size: Option<Spanned<usize>>,
    pub min_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
    pub negative_max_ttl: Option<Spanned<String>>,
}

/// `[spf]`: settings of check_spf.
#[derive(Debug, Default, Deserialize)]
pub struct SpfSection {
    pub check_helo: Option<bool>,
    pub receiver: Option<String>,
    pub header: Option<Spanned<String>>,
    pub authserv_id: Option<String>,
    pub skip_mynetworks: Option<bool>,
    pub skip_authenticated: Option<bool>,
    pub whitelist: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub cache_ttl: Option<Spanned<String>>,
    pub cache_size: Option<Spanned<usize>>,
    pub public_suffix_list: Option<Spanned<String>>,
    pub mail_from: Option<SpfMailFromSection>,
    pub helo: Option<SpfActionsSection>,
}

/// `[spf.mail_from]`: the actions per result, and the domains that must
/// pass.
#[derive(Debug, Default, Deserialize)]
pub struct SpfMailFromSection {
    pub pass: Option<Spanned<String>>,
    pub fail: Option<Spanned<String>>,
    pub softfail: Option<Spanned<String>>,
    pub neutral: Option<Spanned<String>>,
    pub none: Option<Spanned<String>>,
    pub temperror: Option<Spanned<String>>,
    pub permerror: Option<Spanned<String>>,
    #[serde(default)]
    pub reject_not_pass_domains: Vec<Spanned<String>>,
}

/// Action per SPF result: accept, reject, defer or defer_if_permit.
#[derive(Debug, Default, Deserialize)]
pub struct SpfActionsSection {
    pub pass: Option<Spanned<String>>,
    pub fail: Option<Spanned<String>>,
    pub softfail: Option<Spanned<String>>,
    pub neutral: Option<Spanned<String>>,
    pub none: Option<Spanned<String>>,
    pub temperror: Option<Spanned<String>>,
    pub permerror: Option<Spanned<String>>,
}

/// Postfix main.cf parameters rpol reproduces, with Postfix's names and
/// defaults.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct PostfixSection {
    pub access_map_reject_code: Spanned<u16>,
    pub access_map_defer_code: Spanned<u16>,
    pub reject_code: Spanned<u16>,
    pub defer_code: Spanned<u16>,
    pub unknown_client_reject_code: Spanned<u16>,
    pub unknown_hostname_reject_code: Spanned<u16>,
    pub unknown_address_reject_code: Spanned<u16>,
    pub invalid_hostname_reject_code: Spanned<u16>,
    pub non_fqdn_reject_code: Spanned<u16>,
    pub relay_domains_reject_code: Spanned<u16>,
    pub unknown_virtual_mailbox_reject_code: Spanned<u16>,
    pub unknown_virtual_alias_reject_code: Spanned<u16>,
    pub multi_recipient_bounce_reject_code: Spanned<u16>,
    pub reject_tempfail_action: Spanned<String>,
    /// Unset: `$reject_tempfail_action`.
    pub unknown_helo_hostname_tempfail_action: Option<Spanned<String>>,
    /// Unset: `$reject_tempfail_action`.
    pub unknown_address_tempfail_action: Option<Spanned<String>>,
    pub parent_domain_matches_subdomains: Vec<String>,
    pub smtpd_null_access_lookup_key: String,
    pub maps_rbl_reject_code: Spanned<u16>,
    pub default_rbl_reply: Spanned<String>,
}

impl Default for PostfixSection {
    fn default() -> Self {
        PostfixSection {
            access_map_reject_code: Spanned::new(0..0, 554),
            access_map_defer_code: Spanned::new(0..0, 450),
            reject_code: Spanned::new(0..0, 554),
            defer_code: Spanned::new(0..0, 450),
            unknown_client_reject_code: Spanned::new(0..0, 450),
            unknown_hostname_reject_code: Spanned::new(0..0, 450),
            unknown_address_reject_code: Spanned::new(0..0, 450),
            invalid_hostname_reject_code: Spanned::new(0..0, 501),
            non_fqdn_reject_code: Spanned::new(0..0, 504),
            relay_domains_reject_code: Spanned::new(0..0, 554),
            unknown_virtual_mailbox_reject_code: Spanned::new(0..0, 550),
            unknown_virtual_alias_reject_code: Spanned::new(0..0, 550),
            multi_recipient_bounce_reject_code: Spanned::new(0..0, 550),
            reject_tempfail_action: Spanned::new(0..0, "defer_if_permit".into()),
            unknown_helo_hostname_tempfail_action: None,
            unknown_address_tempfail_action: None,
            // Postfix's default list; only smtpd_access_maps matters to rpol.
            parent_domain_matches_subdomains: [
                "debug_peer_list",
                "fast_flush_domains",
                "mynetworks",
                "permit_mx_backup_networks",
                "qmqpd_authorized_clients",
                "relay_domains",
                "smtpd_access_maps",
            ]
            .map(String::from)
            .to_vec(),
            smtpd_null_access_lookup_key: "<>".into(),
            maps_rbl_reject_code: Spanned::new(0..0, crate::dnsbl::DEFAULT_REJECT_CODE),
            default_rbl_reply: Spanned::new(0..0, crate::dnsbl::DEFAULT_RBL_REPLY.into()),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ProfileSection {
    #[serde(rename = "match")]
    pub matcher: Option<MatchSection>,
    /// Another profile whose keys (all but `match`) this one takes; a key
    /// written here replaces the one taken.
    pub like: Option<Spanned<String>>,
    /// `enforce` (default) or `warn`: a dry run, refusals logged as
    /// `reject_warning` and answered DUNNO.
    pub mode: Option<Spanned<String>>,
    pub called_from: Option<Spanned<String>>,
    /// Postfix smtpd_helo_required (default false).
    pub helo_required: Option<bool>,
    /// The chain sees no SASL attributes, e.g. on port 25 (default false).
    pub ignore_sasl: Option<bool>,
    pub client: Option<Vec<Spanned<String>>>,
    pub helo: Option<Vec<Spanned<String>>>,
    pub sender: Option<Vec<Spanned<String>>>,
    pub recipient: Option<Vec<Spanned<String>>>,
}

/// Each key one value or a list; a request matches a list when it matches
/// one of its values.
#[derive(Debug, Deserialize)]
pub struct MatchSection {
    pub server_port: Option<Spanned<OneOrMany<u16>>>,
    pub policy_context: Option<Spanned<OneOrMany<String>>>,
}
