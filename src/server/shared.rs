//! What every connection shares: the settings and policy of the current
//! config load, swapped whole on reload, beside the runtime state and the
//! counters that outlive it.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use super::metrics;
use crate::config::{Loaded, ServerSettings};
use crate::dns::Resolver;
use crate::log::{Escaped, Repeats};
use crate::policy::Policy;
use crate::protocol::Request;
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
    /// (server_port, policy_context) pairs already warned about as matching
    /// no profile; at most [`UNMATCHED_WARNINGS`].
    pub(super) unmatched: Mutex<HashSet<(String, String)>>,
    /// Held through a reload: two at once (SIGHUP and the file watcher)
    /// could swap in the one that read the older files last.
    pub(super) reloading: Mutex<()>,
    /// Decision lines of the current window, to fold identical ones.
    pub(super) decision_lines: Repeats,
}

/// Distinct unmatched (port, policy_context) pairs warned about; a client
/// choosing new values cannot make the set, or the log, grow without end.
const UNMATCHED_WARNINGS: usize = 32;

impl Shared {
    pub fn new(loaded: Loaded, config_path: PathBuf) -> io::Result<Shared> {
        let state = runtime_state(&loaded.policy)?;
        let metrics = metrics::Metrics::default();
        let mut policy = loaded.policy;
        metrics.adopt(&mut policy);
        Ok(Shared {
            current: RwLock::new((Arc::new(loaded.server), Arc::new(policy))),
            state,
            metrics,
            config_path,
            unmatched: Mutex::new(HashSet::new()),
            reloading: Mutex::new(()),
            decision_lines: Repeats::default(),
        })
    }

    /// Warns, once per server_port and policy_context, that a request
    /// matched no profile and was answered DUNNO unchecked.
    pub fn warn_unmatched(&self, req: &Request, policy: &Policy) {
        let key = (req.server_port.clone(), req.policy_context.clone());
        {
            let mut seen = self.unmatched.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= UNMATCHED_WARNINGS || !seen.insert(key) {
                return;
            }
        }
        let profiles: Vec<String> = policy
            .profiles
            .iter()
            .map(|p| format!("{} ({})", p.name, p.matcher))
            .collect();
        tracing::warn!(
            "a request with server_port=\"{}\" policy_context=\"{}\" matches no profile and is answered DUNNO unchecked; profiles: {}; add a profile without match for a default",
            Escaped(&req.server_port),
            Escaped(&req.policy_context),
            profiles.join(", ")
        );
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
