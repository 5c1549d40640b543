//! The site facts rules read: trusted networks, our domains and
//! addresses, who owns which sender, our egress, and the SPF settings.
//! Compiled from policy.toml into the [`crate::policy::Policy`].

use std::collections::HashSet;

use foldhash::fast::RandomState as FastHash;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::greylist::GreylistSettings;
use crate::spf::{ResultActions, SpfAction, SpfSettings};
use crate::tables::addresses::Addresses;
use crate::tables::logins::LoginMap;
use crate::vocab::Codes;

/// Names the admin wrote, looked up with names clients send. foldhash
/// rather than SipHash: only the admin's names are ever inserted, so no
/// client can crowd a bucket, and a lookup runs several times per request.
pub type NameSet = HashSet<String, FastHash>;

/// Facts about the site that rules read.
#[derive(Debug, Clone)]
pub struct Site {
    /// `mynetworks`: the only trusted client networks.
    pub mynetworks: Networks,
    /// `recipient_delimiter`: characters that start an address extension.
    pub recipient_delimiter: String,
    /// Whether `smtpd_access_maps` is in `parent_domain_matches_subdomains`
    /// (Postfix default: yes), i.e. `example.com` in an access table also
    /// matches its subdomains.
    pub access_subdomains: bool,
    /// `smtpd_null_access_lookup_key`, default `<>`.
    pub null_access_key: String,
    pub codes: Codes,
    /// Our final destinations (Postfix virtual_mailbox_domains and
    /// virtual_alias_domains), lowercase: their addresses are listed.
    pub domains: NameSet,
    /// Postfix mydestination, lowercase: ours too, but their recipients
    /// are Postfix's local_recipient_maps to judge, not rpol's lists.
    pub mydestination: NameSet,
    /// Postfix `$myorigin`: the domain an unqualified sender is taken to
    /// be in (default: the first of `domains`).
    pub myorigin: String,
    /// Domains we relay to (Postfix relay_domains; subdomains match too).
    pub relay_domains: Vec<String>,
    /// Mailboxes and aliases of our domains.
    pub addresses: Addresses,
    /// `[spf]`: how check_spf judges.
    pub spf: SpfSettings,
    /// Who owns which sender address (smtpd_sender_login_maps); `None`
    /// when not configured.
    pub logins: Option<LoginMap>,
    /// Registered foreign sender addresses.
    pub foreign_senders: Vec<ForeignSender>,
    /// Our public sending addresses, for check_outbound_spf.
    pub egress: Vec<std::net::IpAddr>,
    /// What check_outbound_spf does per SPF result.
    pub outbound_spf: ResultActions,
    /// `[greylist]`: how check_greylist judges; `None` without the table.
    pub greylist: Option<GreylistSettings>,
    /// The replies of the DNS list restrictions (`maps_rbl_reject_code`,
    /// `default_rbl_reply`, `[dnsbl] reply`).
    pub dnsbl_replies: crate::dnsbl::Replies,
    /// `[dnsbl]`'s probes, circuit breaker and egress watch.
    pub dnsbl_health: crate::dnsbl::health::Settings,
    /// The name our SMTP client says in HELO (`[site] myhostname`, else
    /// Postfix's myhostname with `[site] postfix`; empty: not known):
    /// the egress watch looks it up in the domain blocklists.
    pub myhostname: String,
    /// `[dnsbl] sites` and their thresholds, for check_dnsbl_score and
    /// greylisting by score; `None` when no sites are written.
    pub dnsbl_sites: Option<std::sync::Arc<crate::dnsbl::score::Sites>>,
    /// Where each fact came from, one line each, for `--check-config`;
    /// empty unless read from Postfix (`[site] postfix`).
    pub sources: Vec<String>,
}

/// Networks matched against the client address, several times per
/// request (`permit_mynetworks` in each stage): each is kept with its
/// address and mask as integers, so a match is a mask and a compare.
#[derive(Debug, Clone, Default)]
pub struct Networks {
    nets: Vec<Net>,
}

#[derive(Debug, Clone)]
struct Net {
    net: IpNet,
    v4: bool,
    bits: u128,
    mask: u128,
}

impl Networks {
    pub fn new(nets: Vec<IpNet>) -> Networks {
        let nets = nets
            .into_iter()
            .map(|net| Net {
                net,
                v4: net.addr().is_ipv4(),
                bits: ip_bits(net.network()),
                mask: ip_bits(net.netmask()),
            })
            .collect();
        Networks { nets }
    }

    /// The first network, in the order written, that holds `ip`; an
    /// IPv4-mapped IPv6 address is taken as its IPv4 address.
    pub fn find(&self, ip: IpAddr) -> Option<&IpNet> {
        let ip = ip.to_canonical();
        let (v4, bits) = (ip.is_ipv4(), ip_bits(ip));
        self.nets
            .iter()
            .find(|n| n.v4 == v4 && bits & n.mask == n.bits)
            .map(|n| &n.net)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.find(ip).is_some()
    }
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// A foreign address a login may send as, relayed through its own
/// provider's submission server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSender {
    pub address: String,
    pub login: String,
    pub relay: String,
}

/// The domain Postfix's default mydestination always holds, which its
/// resolver strips before it routes on (`user%domain@localhost`).
const LOCALHOST: &str = "localhost";

/// Most rewriting rounds of [`Site::resolved_address`]: each round makes
/// the address shorter, and the cap keeps a hostile one's cost fixed. A
/// real address takes two or three; one that needs more is refused.
pub const MAX_RESOLVE_ROUNDS: usize = 16;

impl Site {
    /// The sender as Postfix's own sender checks see it (trivial-rewrite
    /// before smtpd_sender_login_maps): an address without a domain is in
    /// `$myorigin`, and a trailing dot names the same domain. The null
    /// sender stays null.
    pub fn qualified_sender<'s>(&self, sender: &'s str) -> std::borrow::Cow<'s, str> {
        use std::borrow::Cow;
        if sender.is_empty() {
            return Cow::Borrowed(sender);
        }
        match crate::syntax::split_address(sender) {
            None if self.myorigin.is_empty() => Cow::Borrowed(sender),
            None => Cow::Owned(format!("{sender}@{}", self.myorigin)),
            // One dot, as Postfix: not dot-dot (a bogus address stays bogus).
            Some((local, domain)) if domain.ends_with('.') && !domain.ends_with("..") => {
                Cow::Owned(format!("{local}@{}", &domain[..domain.len() - 1]))
            }
            Some(_) => Cow::Borrowed(sender),
        }
    }

    /// `address` as Postfix's resolver (trivial-rewrite's resolve_addr)
    /// sees it before smtpd_sender_login_maps and the unlisted checks look
    /// it up. Until nothing changes: trailing `@`s and one trailing dot of
    /// the domain go; a local part alone routes on by its first `!`
    /// (swap_bangpath = yes) or its last `%` (allow_percent_hack = yes), or
    /// is qualified with myorigin; and a domain of this host (`localhost`
    /// or mydestination) is stripped when what is before it routes on by
    /// `@`, `!` or `%`. So `bob@example.com@`, `bob%example.com@localhost`,
    /// `example.com!bob`, `bob%example.com` and `bob@example.com.` are all
    /// bob@example.com: without this, such a spelling would be owned by
    /// nobody, though Postfix delivers and bounces as bob's. `None` when
    /// the address still routes on after [`MAX_RESOLVE_ROUNDS`]: the
    /// callers refuse it, since what Postfix would make of it is not known
    /// here.
    pub fn resolved_address<'s>(&self, address: &'s str) -> Option<std::borrow::Cow<'s, str>> {
        use std::borrow::Cow;
        if address.is_empty() {
            return Some(Cow::Borrowed(address));
        }
        // Routing in a local part: `site!user` is user@site, `user%site` is
        // user@site (Postfix's rewrite order: the bang path first).
        let route = |local: &str| -> Option<String> {
            if let Some(b) = local.find('!') {
                return Some(format!("{}@{}", &local[b + 1..], &local[..b]));
            }
            let p = local.rfind('%')?;
            Some(format!("{}@{}", &local[..p], &local[p + 1..]))
        };
        let mut out = Cow::Borrowed(address);
        for _ in 0..MAX_RESOLVE_ROUNDS {
            let next = match crate::syntax::split_address(&out) {
                None => match route(&out) {
                    Some(routed) => routed,
                    None if self.myorigin.is_empty() => return Some(out),
                    None => format!("{out}@{}", self.myorigin),
                },
                // Trailing `@`s: what is before them is the address.
                Some((local, "")) => local.trim_end_matches('@').to_string(),
                Some((local, domain)) if domain.ends_with('.') && !domain.ends_with("..") => {
                    format!("{local}@{}", &domain[..domain.len() - 1])
                }
                Some((local, domain)) if self.is_this_host(domain) => {
                    if local.contains('@') {
                        local.to_string()
                    } else if let Some(routed) = route(local) {
                        routed
                    } else {
                        return Some(out);
                    }
                }
                Some(_) => return Some(out),
            };
            out = Cow::Owned(next);
        }
        None
    }

    /// Whether Postfix's resolver strips `domain` as this host's own:
    /// `localhost` or a mydestination domain.
    fn is_this_host(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(LOCALHOST)
            || self
                .mydestination
                .contains(&*crate::syntax::lowercase(domain))
    }

    /// The registered foreign sender entry for `address`, if any.
    pub fn foreign_sender(&self, address: &str) -> Option<&ForeignSender> {
        self.foreign_senders
            .iter()
            .find(|f| f.address.eq_ignore_ascii_case(address))
    }
}

/// Outbound defaults: the sending server must never emit mail that fails
/// SPF at the receiver. fail, softfail and permerror reject; neutral and
/// none accept (no receiver rejects on those); temperror defers.
pub fn default_outbound_actions() -> ResultActions {
    ResultActions {
        pass: SpfAction::Accept,
        fail: SpfAction::Reject,
        softfail: SpfAction::Reject,
        neutral: SpfAction::Accept,
        none: SpfAction::Accept,
        temperror: SpfAction::Defer,
        permerror: SpfAction::Reject,
    }
}

impl Site {
    /// Whether `domain` is one of ours (a final destination).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = crate::syntax::lowercase(domain.trim_end_matches('.'));
        self.domains.contains(&*domain)
    }

    /// Whether mail to `domain` is authorized: ours (mydestination too),
    /// or a relay domain or one of its subdomains (Postfix's default
    /// parent_domain_matches_subdomains includes relay_domains).
    pub fn is_authorized_destination(&self, domain: &str) -> bool {
        if self.is_local_domain(domain) {
            return true;
        }
        let domain = crate::syntax::lowercase(domain.trim_end_matches('.'));
        if self.mydestination.contains(&*domain) {
            return true;
        }
        self.relay_domains.iter().any(|r| {
            domain == *r
                || (domain.len() > r.len()
                    && domain.ends_with(r.as_str())
                    && domain.as_bytes()[domain.len() - r.len() - 1] == b'.')
        })
    }
}

impl Default for Site {
    fn default() -> Self {
        Site {
            mynetworks: Networks::default(),
            recipient_delimiter: String::new(),
            access_subdomains: true,
            null_access_key: "<>".into(),
            codes: Codes::default(),
            domains: NameSet::default(),
            mydestination: NameSet::default(),
            myorigin: String::new(),
            relay_domains: Vec::new(),
            addresses: Addresses::default(),
            spf: SpfSettings::default(),
            logins: None,
            foreign_senders: Vec::new(),
            egress: Vec::new(),
            outbound_spf: default_outbound_actions(),
            greylist: None,
            dnsbl_replies: crate::dnsbl::Replies::default(),
            dnsbl_health: crate::dnsbl::health::Settings::default(),
            myhostname: String::new(),
            dnsbl_sites: None,
            sources: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::from(std::net::Ipv6Addr::from(a))),
            // IPv4-mapped IPv6: must match as its IPv4 address.
            any::<u32>().prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a).to_ipv6_mapped())),
        ]
    }

    fn net() -> impl Strategy<Value = IpNet> {
        (ip(), 0u8..=128).prop_map(|(ip, len)| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            IpNet::new(ip, len.min(max)).unwrap().trunc()
        })
    }

    proptest! {
        /// The same first match as ipnet's `contains` on the canonical
        /// address, which it replaces.
        #[test]
        fn find_agrees_with_ipnet(nets in prop::collection::vec(net(), 0..6), ip in ip()) {
            // Near misses too: the address itself inside the first network.
            let probes = [ip, nets.first().map_or(ip, |n| n.addr())];
            let networks = Networks::new(nets.clone());
            for ip in probes {
                let canonical = ip.to_canonical();
                let want = nets.iter().find(|n| n.contains(&canonical));
                prop_assert_eq!(networks.find(ip), want);
            }
        }
    }

    #[test]
    fn edges_of_a_network() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let nets = Networks::new(vec![n("127.0.0.0/8"), n("::1/128"), n("0.0.0.0/0")]);
        assert_eq!(nets.find(ip("127.255.255.255")), Some(&n("127.0.0.0/8")));
        assert_eq!(nets.find(ip("::ffff:127.0.0.1")), Some(&n("127.0.0.0/8")));
        assert_eq!(nets.find(ip("128.0.0.0")), Some(&n("0.0.0.0/0")));
        assert_eq!(nets.find(ip("::1")), Some(&n("::1/128")));
        assert_eq!(nets.find(ip("::2")), None);
        // ::/0 is not 0.0.0.0/0: an IPv6 address is never in an IPv4 network.
        assert_eq!(nets.find(ip("::")), None);
        let local = Networks::new(vec![n("127.0.0.0/8"), n("::1/128")]);
        assert!(!local.contains(ip("10.0.0.1")));
        assert!(!local.contains(ip("::ffff:10.0.0.1")));
        assert!(local.contains(ip("::1")));
        assert!(!Networks::default().contains(ip("127.0.0.1")));
    }

    /// Issue 24 item 11: the spellings Postfix's resolver turns into one
    /// address are that address for the login and unlisted checks.
    #[test]
    fn addresses_resolve_as_postfix_resolves_them() {
        let site = Site {
            myorigin: "example.com".into(),
            mydestination: ["mx.example.org".to_string()].into_iter().collect(),
            ..Site::default()
        };
        for (given, want) in [
            ("bob@example.com", "bob@example.com"),
            (
                "bob@example.com@@@@@@@@@@@@@@@@@@@@@@@@@",
                "bob@example.com",
            ),
            ("bob", "bob@example.com"),
            ("bob@example.com.", "bob@example.com"),
            ("bob@example.com@", "bob@example.com"),
            ("bob@example.com@@", "bob@example.com"),
            ("bob@", "bob@example.com"),
            ("bob%example.com@localhost", "bob@example.com"),
            ("bob%example.com@mx.example.org", "bob@example.com"),
            ("example.com!bob@localhost", "bob@example.com"),
            ("example.com!bob", "bob@example.com"),
            ("bob%example.com", "bob@example.com"),
            ("a!b!bob", "b!bob@a"),
            ("bob%example.com@LOCALHOST.", "bob@example.com"),
            ("bob@example.com@localhost", "bob@example.com"),
            ("a%b%example.org@localhost", "a%b@example.org"),
            // Routing through a domain that is not localhost stays as it is.
            ("bob%example.com@example.org", "bob%example.com@example.org"),
            ("bob@example.com..", "bob@example.com.."),
            ("", ""),
        ] {
            assert_eq!(
                site.resolved_address(given).as_deref(),
                Some(want),
                "{given:?}"
            );
        }
        // An address that routes on and on is not resolved (and refused).
        let deep = format!(
            "bob%example.com{}@localhost",
            "%localhost".repeat(MAX_RESOLVE_ROUNDS)
        );
        assert_eq!(site.resolved_address(&deep), None);
        let long = format!("x{}", "@".repeat(10_000));
        assert_eq!(
            site.resolved_address(&long).as_deref(),
            Some("x@example.com")
        );
    }
}
