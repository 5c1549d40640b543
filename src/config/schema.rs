//! The serde shape of policy.toml. Every struct denies unknown keys; no
//! untagged or flattened enums (they would disable that check).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub site: SiteSection,
    #[serde(default)]
    pub postfix: PostfixSection,
    /// Named access tables: `name = "[type:]path"`.
    #[serde(default)]
    pub tables: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub profile: BTreeMap<String, Spanned<ProfileSection>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Vec<Spanned<String>>>,
    pub socket_mode: Option<Spanned<String>>,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    pub max_connections: Option<Spanned<usize>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub error_action: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    #[serde(default)]
    pub mynetworks: Vec<Spanned<String>>,
    #[serde(default)]
    pub recipient_delimiter: String,
}

/// Postfix main.cf parameters rpol reproduces, with Postfix's names and
/// defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostfixSection {
    pub access_map_reject_code: Spanned<u16>,
    pub access_map_defer_code: Spanned<u16>,
    pub reject_code: Spanned<u16>,
    pub defer_code: Spanned<u16>,
    pub parent_domain_matches_subdomains: Vec<String>,
    pub smtpd_null_access_lookup_key: String,
}

impl Default for PostfixSection {
    fn default() -> Self {
        PostfixSection {
            access_map_reject_code: Spanned::new(0..0, 554),
            access_map_defer_code: Spanned::new(0..0, 450),
            reject_code: Spanned::new(0..0, 554),
            defer_code: Spanned::new(0..0, 450),
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSection {
    #[serde(rename = "match")]
    pub matcher: Option<MatchSection>,
    pub called_from: Option<Spanned<String>>,
    #[serde(default)]
    pub client: Vec<Spanned<String>>,
    #[serde(default)]
    pub helo: Vec<Spanned<String>>,
    #[serde(default)]
    pub sender: Vec<Spanned<String>>,
    #[serde(default)]
    pub recipient: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    pub server_port: Option<u16>,
    pub policy_context: Option<String>,
}
