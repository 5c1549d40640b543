//! Greylisting's settings (`[greylist]`, compiled into the site facts) and
//! the way postgrey 1.37 turns a request into a triplet: the client's
//! network, the sender without what changes from message to message, the
//! recipient. The store's side (records, the algorithm) is
//! [`crate::state`]'s; the rule that joins them is `rules::greylist`.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;

use crate::tables::greylist::{ClientWhitelist, RecipientWhitelist};
use crate::vocab::OnStoreError;
use crate::vocab::reply::Reply;

/// The reply to a greylisted triplet: `DEFER_IF_PERMIT` (a later reject
/// still wins) or `DEFER`, with `%s` (seconds left) and `%r` (the
/// recipient's domain) in its text, as postgrey's --greylist-text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreylistAction {
    pub defer_if_permit: bool,
    pub reply: Reply,
}

/// Default `action`: Postfix answers 450 4.7.1 for it at RCPT. No URL:
/// postgrey's help pages speak of postgrey, not of rpol.
pub const DEFAULT_ACTION: &str =
    "DEFER_IF_PERMIT 4.7.1 Greylisted, see RFC 6647: try again in %s seconds";

/// Default `header`, postgrey's with rpol's name: `%t` seconds delayed,
/// `%v` version, `%h` host name, `%d` date.
pub const DEFAULT_HEADER: &str = "X-Greylist: delayed %t seconds by rpol-%v at %h; %d";

/// `[greylist]`, compiled.
#[derive(Debug, Clone)]
pub struct GreylistSettings {
    pub delay: Duration,
    pub max_age: Duration,
    pub retry_window: Duration,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Passes after which a client skips greylisting; 0: off.
    pub auto_whitelist_clients: u64,
    pub whitelist_clients: ClientWhitelist,
    pub whitelist_recipients: RecipientWhitelist,
    pub action: GreylistAction,
    /// The header template; empty: no header.
    pub header: String,
    /// The host name `%h` stands for (the loader sets this machine's).
    pub hostname: String,
    pub skip_spf_pass: bool,
    pub skip_fcrdns_match: bool,
    pub on_store_error: OnStoreError,
    /// Greylist only clients whose `[dnsbl] sites` score is at least this;
    /// `None`: every client.
    pub min_dnsbl_score: Option<i64>,
    /// Never greylist a client whose score is at or below `[dnsbl]
    /// allowlist_threshold`.
    pub skip_dnswl: bool,
    /// Keep a triplet's sender and recipient as digests in its details
    /// (postgrey --privacy); the network and sender domain stay readable.
    pub privacy: bool,
}

impl Default for GreylistSettings {
    fn default() -> Self {
        GreylistSettings {
            delay: Duration::from_secs(300),
            max_age: Duration::from_secs(35 * 86_400),
            retry_window: Duration::from_secs(2 * 86_400),
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            auto_whitelist_clients: 5,
            whitelist_clients: ClientWhitelist::default(),
            whitelist_recipients: RecipientWhitelist::default(),
            action: GreylistAction {
                defer_if_permit: true,
                reply: Reply::new(
                    450,
                    "4.7.1",
                    "Greylisted, see RFC 6647: try again in %s seconds",
                ),
            },
            header: DEFAULT_HEADER.into(),
            hostname: String::new(),
            skip_spf_pass: false,
            skip_fcrdns_match: false,
            on_store_error: OnStoreError::Dunno,
            min_dnsbl_score: None,
            skip_dnswl: false,
            privacy: false,
        }
    }
}

impl GreylistSettings {
    /// The network a client is looked up by (postgrey --lookup-by-subnet).
    pub fn client_net(&self, ip: IpAddr) -> IpNet {
        let prefix = if ip.is_ipv4() {
            self.ipv4_prefix
        } else {
            self.ipv6_prefix
        };
        IpNet::new(ip, prefix).map_or(IpNet::from(ip), |n| n.trunc())
    }

    /// The reply text for `missing` seconds and `recipient`.
    pub fn reply(&self, missing: u64, recipient: &str) -> Reply {
        let domain = crate::syntax::split_address(recipient).map_or(recipient, |(_, d)| d);
        let domain: String = domain
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect();
        let r = &self.action.reply;
        let text = r
            .text
            .replacen("%s", &missing.to_string(), 1)
            .replacen("%r", &domain, 1);
        Reply::new(r.code, &r.dsn, text)
    }

    /// The header for a first pass after `delayed` seconds, or `None`.
    pub fn header_line(&self, delayed: u64, now: std::time::SystemTime) -> Option<String> {
        if self.header.is_empty() {
            return None;
        }
        Some(
            self.header
                .replacen("%t", &delayed.to_string(), 1)
                .replacen("%v", env!("CARGO_PKG_VERSION"), 1)
                .replacen("%h", &self.hostname, 1)
                .replacen("%d", &httpdate::fmt_http_date(now), 1),
        )
    }
}

/// The sender as postgrey keys it (do_sender_substitutions), plus SRS:
/// a BATV tag removed, the address extension (`+...`) removed, numbers
/// standing alone (VERP) replaced by `#`, and the hash and timestamp of an
/// SRS address replaced by `#`, so that a sender's retries and next
/// messages share one triplet.
pub fn normalise_sender(sender: &str) -> String {
    static NUMBERS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[0-9]+\b").unwrap());
    let Some((user, domain)) = sender.split_once('@') else {
        return sender.to_string();
    };
    let mut user = batv(user).to_string();
    user = srs(&user);
    if let Some(plus) = user.find('+') {
        user.truncate(plus);
    }
    let user = NUMBERS.replace_all(&user, "#");
    format!("{user}@{domain}")
}

/// BATV `prvs=tag-val=loc-core` (or the other order seen in the wild):
/// the local part without the tag, as postgrey picks it.
fn batv(user: &str) -> &str {
    let lower_prefix = user
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("prvs="));
    if !lower_prefix {
        return user;
    }
    let parts: Vec<&str> = user.split('=').collect();
    if parts.len() != 3 {
        return user;
    }
    let tag = |s: &str| {
        s.len() >= 10
            && s.bytes()
                .take(10)
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    match (tag(parts[1]), tag(parts[2])) {
        (false, true) => parts[1],
        _ => parts[2],
    }
}

/// SRS0=HHH=TT=domain=local and SRS1=HHH=forwarder==HHH=TT=domain=local:
/// the hashes and the timestamp change per message.
fn srs(user: &str) -> String {
    let upper: String = user
        .chars()
        .take(5)
        .collect::<String>()
        .to_ascii_uppercase();
    match upper.as_str() {
        "SRS0=" => {
            let parts: Vec<&str> = user.splitn(5, '=').collect();
            if parts.len() == 5 {
                return format!("SRS0=#=#={}={}", parts[3], parts[4]);
            }
        }
        "SRS1=" => {
            // SRS1=HHH=forwarder==HHH=TT=domain=local
            let parts: Vec<&str> = user.splitn(3, '=').collect();
            if parts.len() == 3
                && let Some(inner) = parts[2].split_once("==")
            {
                return format!("SRS1=#={}=={}", inner.0, srs(&format!("SRS0={}", inner.1)));
            }
        }
        _ => {}
    }
    user.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_as_postgrey_keys_them() {
        for (sender, want) in [
            ("user@example.org", "user@example.org"),
            ("user+tag@example.org", "user@example.org"),
            (
                "bounce-123-456@lists.example.org",
                "bounce-#-#@lists.example.org",
            ),
            ("a1b2@example.org", "a1b2@example.org"),
            ("prvs=0123456789=user@example.org", "user@example.org"),
            ("prvs=user=0123456789@example.org", "user@example.org"),
            (
                "SRS0=HHH=TT=example.org=user@fwd.example",
                "SRS0=#=#=example.org=user@fwd.example",
            ),
            (
                "SRS0=abcd=Q4=example.org=user@fwd.example",
                "SRS0=#=#=example.org=user@fwd.example",
            ),
            (
                "SRS1=x1y=fwd1.example==abcd=Q4=example.org=user@fwd2.example",
                "SRS1=#=fwd1.example==SRS0=#=#=example.org=user@fwd2.example",
            ),
            ("", ""),
            ("nodomain", "nodomain"),
        ] {
            assert_eq!(normalise_sender(sender), want, "{sender}");
        }
    }

    #[test]
    fn client_networks() {
        let s = GreylistSettings::default();
        assert_eq!(
            s.client_net("203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            s.client_net("2001:db8:1:2:3::9".parse().unwrap())
                .to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn reply_and_header_texts() {
        let s = GreylistSettings {
            hostname: "mx.example".into(),
            ..GreylistSettings::default()
        };
        let r = s.reply(299, "a@Ex\u{7f}ample.org");
        assert_eq!(r.text, "Greylisted, see RFC 6647: try again in 299 seconds");
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            s.header_line(300, t).unwrap(),
            format!(
                "X-Greylist: delayed 300 seconds by rpol-{} at mx.example; Tue, 14 Nov 2023 22:13:20 GMT",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
