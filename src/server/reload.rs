//! Reloading: the config loaded again on SIGHUP or when a file it was
//! built from changes, compared with what runs, and swapped in.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Shared;
use super::housekeeping::{STATS_EVERY, log_stats};
use super::signals::notify_systemd;
use crate::config::{self, Loaded};

impl Shared {
    /// Reloads the config file; on error the old policy stays, as it does
    /// when the new file has no profile left. Reloads run one at a time.
    /// Only the policy is swapped: the runtime state stays, but for the
    /// resolver when `[dns]` changed, and cached SPF results when the
    /// receiver name they may have expanded (`%{r}`) changed.
    pub fn reload(&self) -> Result<(), config::ConfigErrors> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let Loaded {
            server: new_server,
            policy: mut new,
        } = config::load(&self.config_path)?;
        let (old_server, old) = self.current();
        if new.profiles.is_empty() && !old.profiles.is_empty() {
            // Valid TOML, but nothing would be checked any more: what a
            // truncating write leaves for a moment, or for good on a full
            // disk. Only a restart starts rpol without profiles.
            return Err(config::ConfigErrors(vec![config::ConfigError {
                file: self.config_path.clone(),
                line: 0,
                column: 0,
                key: String::new(),
                message: "no profile: every request would be answered DUNNO unchecked (a file \
                          emptied or cut short?); a restart loads it as it is"
                    .into(),
            }]));
        }
        if new.dns_config != old.dns_config {
            match self.state.resolver().rebuilt(&new.dns_config) {
                Ok(resolver) => self.state.replace_resolver(resolver),
                // load() built one from the same settings a moment ago.
                Err(e) => tracing::error!(
                    "[dns] changed but cannot be used: {e}; keeping the old resolver"
                ),
            }
        }
        if new.site.spf.receiver != old.site.spf.receiver {
            self.state.spf_results.clear();
        }
        let (n, o) = (&new_server, &*old_server);
        let restart_only: Vec<&str> = [
            ("server.listen", n.listen != o.listen),
            ("server.socket_mode", n.socket_mode != o.socket_mode),
            ("server.socket_owner", n.socket_owner != o.socket_owner),
            ("server.socket_group", n.socket_group != o.socket_group),
            (
                "server.max_connections",
                n.max_connections != o.max_connections,
            ),
            (
                "server.max_connections_per_address",
                n.max_connections_per_address != o.max_connections_per_address,
            ),
            ("server.threads", n.threads != o.threads),
            (
                "spf.cache_size",
                new.site.spf.cache_size != old.site.spf.cache_size,
            ),
            ("metrics.listen", n.metrics != o.metrics),
            ("store", n.store != o.store),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !restart_only.is_empty() {
            tracing::warn!(
                "{} changed: takes effect only after a restart",
                restart_only.join(", ")
            );
        }
        self.metrics.adopt(&mut new);
        let swapped = (Arc::new(new_server), Arc::new(new));
        match self.current.write() {
            Ok(mut c) => *c = swapped,
            Err(poisoned) => *poisoned.into_inner() = swapped,
        }
        Ok(())
    }
}

/// Hands the memory this thread freed back to the system now. mimalloc
/// (the binary's allocator) returns freed pages lazily, on the thread's
/// later allocations; after a config load, whose big tables leave as much
/// garbage as they keep, the loading thread goes quiet and would hold it
/// (a 1,000,000-entry table: 497 MB resident rather than 231).
/// Harmless under another allocator (tests): mimalloc's own heap is empty.
pub(super) fn return_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may be called at any time
    // from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Reloads and logs the outcome; a failed load keeps the old policy.
pub(super) fn reload(shared: &Shared, why: &str) {
    notify_systemd("RELOADING=1");
    let result = shared.reload();
    return_freed_memory();
    shared.metrics.reloaded(result.is_ok());
    match result {
        Ok(()) => tracing::info!("{why}: reloaded {}", shared.config_path.display()),
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("reload: {e}");
            }
            tracing::error!("{why}: reload failed: keeping the previous configuration");
        }
    }
    notify_systemd("READY=1");
}

/// How often the files a policy was built from are checked for changes.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads when the config file, a table or an address list changes
/// (modification time, size or existence), so an edited whitelist or alias
/// file takes effect without a SIGHUP. `seen`: the stamps of the files as
/// the running policy was loaded.
/// Also logs the DNS cache counters every [`STATS_EVERY`] checks.
pub(super) async fn watch_files(
    shared: Arc<Shared>,
    mut seen: Vec<Stamp>,
    shutdown: CancellationToken,
) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        ticks += 1;
        if ticks.is_multiple_of(STATS_EVERY) {
            log_stats(&shared);
        }
        let files = shared.policy().files.clone();
        let now = file_stamps(&files);
        if now != seen {
            reload(&shared, "file change");
            // The stamps from before the load, so that a file replaced
            // while it was being read is loaded again at the next check.
            // After a failed reload too: retry only when a file changes again.
            let reloaded = shared.policy();
            seen = if reloaded.files == files {
                now
            } else {
                file_stamps(&reloaded.files)
            };
        }
    }
}

pub(super) type Stamp = Option<(std::time::SystemTime, u64)>;

pub(super) fn file_stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}
