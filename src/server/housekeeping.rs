//! Work on a timer beside the requests: the store's sweep, the DNS cache
//! counters in the log.

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
