//! `[dns]`: the one resolver's name servers, timeouts and cache bounds,
//! compiled into a [`DnsConfig`].

use std::net::{IpAddr, SocketAddr};

use super::values::{millis, secs};
use super::{Compiler, schema};
use crate::dns::DnsConfig;

impl Compiler<'_> {
    pub(super) fn dns(&mut self, d: schema::DnsSection) -> DnsConfig {
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
        // A query waits at most a minute; TTLs are kept at most a week.
        self.duration(
            timeout,
            "dns.timeout",
            millis(10)..=secs(60),
            &mut out.timeout,
        );
        self.duration(
            min_ttl,
            "dns.min_ttl",
            secs(0)..=secs(86_400),
            &mut out.min_ttl,
        );
        self.duration(
            max_ttl,
            "dns.max_ttl",
            secs(0)..=secs(7 * 86_400),
            &mut out.max_ttl,
        );
        self.duration(
            negative_max_ttl,
            "dns.negative_max_ttl",
            secs(0)..=secs(86_400),
            &mut out.negative_max_ttl,
        );
        self.count(attempts, "dns.attempts", 1..=10, &mut out.attempts);
        self.count(
            cache_size,
            "dns.cache_size",
            1..=10_000_000,
            &mut out.cache_size,
        );
        out
    }
}
