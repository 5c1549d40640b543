//! The DNS lists a compiled policy uses: the one place that says which
//! list domains the probes, the circuit breaker's settings and the egress
//! watch cover.

use super::Policy;
use crate::dnsbl::health::Watched;

impl Policy {
    /// Every list domain a rule or `[dnsbl] sites` names, once, in domain
    /// order, with how they query it.
    pub fn dns_lists(&self) -> Vec<Watched> {
        let mut out: Vec<Watched> = Vec::new();
        let rules = self.profiles.iter().flat_map(|p| p.stages.iter().flatten());
        for rule in rules {
            let Some((list, kind)) = rule.rule.dns_list() else {
                continue;
            };
            let w = watched(&mut out, list);
            if kind.by_address() {
                w.addresses = true;
            } else {
                w.names = true;
            }
            w.blocks |= !kind.allows();
        }
        // The score's sites are client addresses; a site blocks when one of
        // its entries weighs more than nothing.
        if let Some(sites) = &self.site.dnsbl_sites {
            for (i, list) in sites.lists.iter().enumerate() {
                let w = watched(&mut out, list);
                w.addresses = true;
                w.blocks |= sites.sites.iter().any(|s| s.list == i && s.weight > 0);
            }
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        out
    }

    /// Gives each list's health the breaker pause of this policy; runs at
    /// start and at reload.
    pub fn configure_dns_lists(&self) {
        let pause = self.site.dnsbl_health.timeout_pause;
        for list in self.dns_lists() {
            list.health().set_pause(pause);
        }
    }
}

/// The entry of `list`'s domain in `out`, added when it is not there yet.
fn watched<'a>(out: &'a mut Vec<Watched>, list: &crate::dnsbl::List) -> &'a mut Watched {
    let i = match out.iter().position(|w| w.domain == list.domain) {
        Some(i) => i,
        None => {
            out.push(Watched {
                domain: list.domain.clone(),
                counters: list.counters.clone(),
                addresses: false,
                names: false,
                blocks: false,
            });
            out.len() - 1
        }
    };
    &mut out[i]
}
