//! Work on a timer beside the requests: the store's sweep, the DNS cache
//! counters in the log, the DNS lists' probes and the egress watch.

use std::sync::Arc;

use super::Shared;

/// How often the embedded store drops expired records (Redis expires
/// keys itself). Expired records never count in the meantime.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Sweeps the store every [`SWEEP_EVERY`], with the current policy's
/// greylisting times.
pub(super) async fn sweep_store(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(store) = shared.state.store() else {
            return;
        };
        let params = shared
            .policy()
            .site
            .greylist
            .as_ref()
            .map(|g| crate::rules::greylist::params(g, crate::common::unix_now()));
        if let Ok(n) = store.sweep(params).await
            && n > 0
        {
            tracing::info!("store: swept {n} expired record(s)");
        }
    }
}

/// How often the DNS cache counters are logged.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Logs the DNS cache counters every [`STATS_EVERY`].
pub(super) async fn log_stats_periodically(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(STATS_EVERY).await;
        log_stats(&shared);
    }
}

/// One line with the DNS cache counters.
pub fn log_stats(shared: &Shared) {
    let s = shared.state.resolver().stats();
    tracing::info!(
        "dns cache: hits={} misses={} coalesced={} entries={}",
        s.hits,
        s.misses,
        s.coalesced,
        s.entries
    );
}

/// How long one round of probes or of the egress watch may take, in
/// lookups (a probe's A queries go out at once; a listing adds a TXT).
const ROUND_LOOKUPS: u32 = 3;

/// Probes the policy's DNS lists at start and every `[dnsbl]
/// probe_interval`, and looks our egress up in them after the first
/// probes and every `watch_interval`; each round on the one resolver,
/// within a deadline. The settings and lists are the current policy's
/// at each round.
pub(super) async fn watch_dns_lists(shared: Arc<Shared>) {
    use crate::dnsbl::health;
    use tokio::time::{Instant, sleep_until, timeout};
    let (mut next_probe, mut next_watch) = (Instant::now(), Instant::now());
    loop {
        sleep_until(next_probe.min(next_watch)).await;
        let policy = shared.policy();
        let settings = policy.site.dnsbl_health.clone();
        let lists = policy.dns_lists();
        let dns = shared.state.resolver();
        let deadline = dns.lookup_bound() * ROUND_LOOKUPS;
        let now = Instant::now();
        if now >= next_probe {
            if settings.probe && !lists.is_empty() {
                health::probe_all(&dns, &lists, deadline).await;
            }
            next_probe = Instant::now() + settings.probe_every;
        }
        if now >= next_watch {
            let site = &policy.site;
            let helo = (!site.myhostname.is_empty()).then_some(site.myhostname.as_str());
            if settings.watch_egress && (!site.egress.is_empty() || helo.is_some()) {
                // Each lookup has its deadline; this bounds the round too.
                let round = health::watch_egress(&dns, &lists, &site.egress, helo, deadline);
                let _ = timeout(deadline * 2, round).await;
            }
            next_watch = Instant::now() + settings.watch_every;
        }
    }
}
