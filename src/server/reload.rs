//! Reloading: the config loaded again on SIGHUP or when a file it was
//! built from changes, compared with what runs, and swapped in. A load
//! (tables of a million entries take most of a second) runs on the
//! blocking pool, never on an async worker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Shared;
use super::signals::notify_systemd;
use crate::common::lock;
use crate::config::{self, ListenAddr, Loaded, ServerSettings};
use crate::policy::Policy;
use crate::state::store::StoreSettings;

/// What starts a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// SIGHUP: always.
    Signal,
    /// The file watcher: only when a file changed since the last load.
    FileChange,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
        }
    }
}

/// What the command line decided in place of the config file: a key it
/// overrides is what runs whatever the file says.
#[derive(Debug, Clone, Default)]
pub struct CommandLine {
    /// `--user`.
    pub user: Option<String>,
    /// `--listen` or systemd's sockets: `[server] listen` is not used.
    pub listen: bool,
}

/// Declares [`RestartOnly`]: each field with the key it is written as.
macro_rules! restart_only {
    ($($field:ident: $ty:ty => $key:literal,)*) => {
        /// The settings a reload cannot change, as one load has them:
        /// compared as parsed values with those of the running process.
        #[derive(Debug, Clone, PartialEq)]
        pub(super) struct RestartOnly {
            $($field: $ty,)*
        }

        impl RestartOnly {
            /// The keys whose value in `self` is not the one in `running`.
            fn differences(&self, running: &RestartOnly) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$field != running.$field {
                    keys.push($key);
                })*
                keys
            }
        }
    };
}

restart_only! {
    listen: Option<Vec<ListenAddr>> => "server.listen",
    socket_mode: u32 => "server.socket_mode",
    socket_owner: Option<String> => "server.socket_owner",
    socket_group: Option<String> => "server.socket_group",
    user: Option<String> => "server.user",
    group: Option<String> => "server.group",
    max_connections: usize => "server.max_connections",
    max_connections_per_address: usize => "server.max_connections_per_address",
    threads: usize => "server.threads",
    spf_cache_size: usize => "spf.cache_size",
    metrics: Option<SocketAddr> => "metrics.listen",
    store: Option<StoreSettings> => "store",
}

impl RestartOnly {
    /// The restart-only settings of one load, with what `command_line`
    /// overrides in place of the file's.
    pub(super) fn of(
        server: &ServerSettings,
        policy: &Policy,
        command_line: &CommandLine,
    ) -> RestartOnly {
        RestartOnly {
            listen: (!command_line.listen).then(|| server.listen.clone()),
            socket_mode: server.socket_mode,
            socket_owner: server.socket_owner.clone(),
            socket_group: server.socket_group.clone(),
            user: command_line.user.clone().or_else(|| server.user.clone()),
            group: server.group.clone(),
            max_connections: server.max_connections,
            max_connections_per_address: server.max_connections_per_address,
            threads: server.threads,
            spf_cache_size: policy.site.spf.cache_size,
            metrics: server.metrics,
            store: server.store.clone(),
        }
    }
}

/// The files a policy was built from, each with its stamp as it was
/// before they were read: compared as a set, whatever order a load lists
/// them in.
pub(super) type Stamps = BTreeMap<PathBuf, Stamp>;

/// A file's modification time and size; `None` when it cannot be read.
pub(super) type Stamp = Option<(std::time::SystemTime, u64)>;

fn stamp(file: &std::path::Path) -> Stamp {
    std::fs::metadata(file)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// The stamps of `files` now.
pub(super) fn stamps<'a>(files: impl IntoIterator<Item = &'a PathBuf>) -> Stamps {
    files.into_iter().map(|f| (f.clone(), stamp(f))).collect()
}

impl Shared {
    /// Loads the config file again and swaps it in, on the blocking pool;
    /// on error the old policy stays, as it does when the new file has no
    /// profile left. Reloads run one at a time. Only the policy is
    /// swapped: the runtime state stays, but for the resolver when `[dns]`
    /// changed, and cached SPF results when the receiver name they may
    /// have expanded (`%{r}`) changed.
    pub async fn reload(self: &Arc<Self>) -> Result<(), config::ConfigErrors> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.reload_if(false))
            .await
            .unwrap_or_else(|e| Some(Err(stopped(&self.config_path, &e))))
            .unwrap_or(Ok(()))
    }

    /// Reloads, unless `only_if_changed` and no file the running policy
    /// was built from changed since it was loaded (then `None`). Blocks:
    /// for the blocking pool.
    fn reload_if(&self, only_if_changed: bool) -> Option<Result<(), config::ConfigErrors>> {
        let _one_at_a_time = lock(&self.reloading);
        let watched = self.watched();
        // Taken before the files are read: one replaced while it is being
        // read is loaded again at the watcher's next look.
        let before = stamps(watched.keys());
        if only_if_changed && before == watched {
            return None;
        }
        notify_systemd("RELOADING=1");
        let result = self.load_and_swap();
        return_freed_memory();
        // After a failed load too: what was read is what the watcher
        // compares with, so it tries again only when a file changes again.
        let files = self.policy().files.clone();
        let now = files
            .iter()
            .map(|f| {
                let s = before.get(f).cloned().unwrap_or_else(|| stamp(f));
                (f.clone(), s)
            })
            .collect();
        *lock(&self.watched) = now;
        notify_systemd("READY=1");
        Some(result)
    }

    /// The stamps the watcher compares with.
    fn watched(&self) -> Stamps {
        lock(&self.watched).clone()
    }

    /// One load compared with what runs and swapped in.
    fn load_and_swap(&self) -> Result<(), config::ConfigErrors> {
        let Loaded {
            server: new_server,
            policy: mut new,
        } = config::load(&self.config_path)?;
        let (_, old) = self.current();
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
        // Against what runs, not the last load: a key set back is quiet.
        let differences =
            RestartOnly::of(&new_server, &new, &self.command_line).differences(&self.running);
        if !differences.is_empty() {
            tracing::warn!(
                "{} changed: takes effect only after a restart",
                differences.join(", ")
            );
        }
        self.metrics.adopt(&mut new);
        new.configure_dns_lists();
        let swapped = (Arc::new(new_server), Arc::new(new));
        match self.current.write() {
            Ok(mut c) => *c = swapped,
            Err(poisoned) => *poisoned.into_inner() = swapped,
        }
        Ok(())
    }
}

/// A reload task that did not finish (it panicked), as a config error.
fn stopped(config_path: &std::path::Path, e: &tokio::task::JoinError) -> config::ConfigErrors {
    config::ConfigErrors(vec![config::ConfigError {
        file: config_path.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("the reload stopped: {e}"),
    }])
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

/// Reloads for `trigger` on the blocking pool and logs the outcome; a
/// failed load keeps the old policy.
pub(super) async fn reload(shared: &Arc<Shared>, trigger: Trigger) {
    let shared = shared.clone();
    let task = tokio::task::spawn_blocking(move || {
        let Some(result) = shared.reload_if(trigger == Trigger::FileChange) else {
            return;
        };
        shared.metrics.reloaded(result.is_ok());
        let why = trigger.label();
        match result {
            Ok(()) => tracing::info!("{why}: reloaded {}", shared.config_path.display()),
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("reload: {e}");
                }
                tracing::error!("{why}: reload failed: keeping the previous configuration");
            }
        }
    });
    if let Err(e) = task.await {
        tracing::error!("reload: {e}");
    }
}

/// Reloads when the config file, a table or an address list changes
/// (modification time, size or existence), so an edited whitelist or alias
/// file takes effect without a SIGHUP. Checked every `[server]
/// watch_interval`, as the running configuration says.
pub(super) async fn watch_files(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let interval = shared.settings().watch_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        reload(&shared, Trigger::FileChange).await;
    }
}
