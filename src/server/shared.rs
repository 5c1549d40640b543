//! What every connection shares: the settings and policy of the current
//! config load, swapped whole on reload, beside the runtime state and the
//! counters that outlive it.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use super::decisions::DecisionLog;
use super::metrics;
use super::reload::{CommandLine, RestartOnly, Stamps, stamps};
use crate::config::{Loaded, ServerSettings};
use crate::dns::Resolver;
use crate::policy::Policy;
use crate::state::State;

/// The server settings and the policy of one config load, swapped together.
pub(super) type Current = (Arc<ServerSettings>, Arc<Policy>);

/// What every connection shares: the swappable settings and policy, and the
/// runtime state that outlives them.
pub struct Shared {
    pub(super) current: RwLock<Current>,
    pub state: State,
    /// Counters that outlive reloads, served on `[metrics] listen`.
    pub metrics: metrics::Metrics,
    pub(super) config_path: PathBuf,
    /// Held through a reload: two at once (SIGHUP and the file watcher)
    /// could swap in the one that read the older files last.
    pub(super) reloading: Mutex<()>,
    /// The decision lines, written as the connections answer.
    pub(super) decisions: DecisionLog,
    /// The files the current policy was built from, stamped as they were
    /// read: what the file watcher compares with.
    pub(super) watched: Mutex<Stamps>,
    /// What the command line decided in place of the file.
    pub(super) command_line: CommandLine,
    /// The restart-only settings the process started with.
    pub(super) running: RestartOnly,
}

impl Shared {
    pub fn new(loaded: Loaded, config_path: PathBuf) -> io::Result<Shared> {
        Shared::started_with(loaded, config_path, CommandLine::default())
    }

    /// [`Shared::new`] for a process whose `command_line` overrides some
    /// restart-only settings.
    pub fn started_with(
        loaded: Loaded,
        config_path: PathBuf,
        command_line: CommandLine,
    ) -> io::Result<Shared> {
        // Before anything else: a file changed from now on is reloaded.
        let watched = Mutex::new(stamps(&loaded.policy.files));
        let state = runtime_state(&loaded.policy)?;
        let running = RestartOnly::of(&loaded.server, &loaded.policy, &command_line);
        let metrics = metrics::Metrics::default();
        let mut policy = loaded.policy;
        metrics.adopt(&mut policy);
        policy.configure_dns_lists();
        Ok(Shared {
            current: RwLock::new((Arc::new(loaded.server), Arc::new(policy))),
            state,
            metrics,
            config_path,
            reloading: Mutex::new(()),
            decisions: DecisionLog::default(),
            watched,
            command_line,
            running,
        })
    }

    pub(super) fn current(&self) -> Current {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current policy. Cheap: a read lock and an `Arc` clone.
    pub fn policy(&self) -> Arc<Policy> {
        self.current().1
    }

    /// The current server settings (timeouts, error action, ...).
    pub fn settings(&self) -> Arc<ServerSettings> {
        self.current().0
    }
}

/// Fresh runtime state for `policy`: its resolver from `[dns]`, its SPF
/// cache sized by `[spf] cache_size`.
pub fn runtime_state(policy: &Policy) -> io::Result<State> {
    let resolver = Resolver::new(&policy.dns_config)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(State::new(resolver, policy.site.spf.cache_size))
}
