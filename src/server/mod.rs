//! The daemon: listeners, the connection limits, signals, reload.
//!
//! The server knows no rule: it hands each decoded request to
//! [`crate::policy::evaluate`] with the current [`Policy`]. When every
//! connection slot is taken, a new client gets the slot of the connection
//! that answered nothing for the longest time ([`slots`]); while it waits
//! for one, no other client is accepted (back-pressure). SIGHUP builds a
//! new `Policy` and swaps it in; requests in flight finish on the old one;
//! a config that fails to load is logged and the old one kept.

pub mod connection;
pub mod listener;
pub mod metrics;
pub mod privileges;
pub mod shards;
pub mod slots;
mod sockdiag;

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, ListenAddr, Loaded, ServerSettings};
use crate::dns::Resolver;
use crate::log::{Decisions, Escaped, Redacted, Repeats};
use crate::policy::chain::RejectWarning;
use crate::policy::{Decision, Policy};
use crate::protocol::Request;
use crate::state::State;
use crate::state::store::{Backend, Store};
pub use listener::SystemdFds;
use listener::{Listener, Stream};
use slots::Slots;

/// The server settings and the policy of one config load, swapped together.
type Current = (Arc<ServerSettings>, Arc<Policy>);

/// What every connection shares: the swappable settings and policy, and the
/// runtime state that outlives them.
pub struct Shared {
    current: RwLock<Current>,
    pub state: State,
    /// Counters that outlive reloads, served on `[metrics] listen`.
    pub metrics: metrics::Metrics,
    config_path: PathBuf,
    /// (server_port, policy_context) pairs already warned about as matching
    /// no profile; at most [`UNMATCHED_WARNINGS`].
    unmatched: Mutex<HashSet<(String, String)>>,
    /// Held through a reload: two at once (SIGHUP and the file watcher)
    /// could swap in the one that read the older files last.
    reloading: Mutex<()>,
    /// Decision lines of the current window, to fold identical ones.
    decision_lines: Repeats,
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

    fn current(&self) -> Current {
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

/// Fresh runtime state for `policy`: its resolver from `[dns]`, its SPF
/// cache sized by `[spf] cache_size`.
pub fn runtime_state(policy: &Policy) -> io::Result<State> {
    let resolver = Resolver::new(&policy.dns_config)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(State::new(resolver, policy.site.spf.cache_size))
}

/// Opens `[store]`, if configured, into the runtime state. A file that
/// cannot be opened stops the start; Redis is connected on first use.
fn open_store(shared: &Shared, settings: &ServerSettings) -> io::Result<()> {
    let Some(store) = &settings.store else {
        return Ok(());
    };
    let opened = Store::open(store).map_err(|e| io::Error::other(format!("[store]: {e}")))?;
    match &store.backend {
        Backend::Embedded { path } => tracing::info!("store: {}", path.display()),
        // The URL may carry a Redis user and password.
        Backend::Redis { url } => tracing::info!("store: {}", Redacted(url)),
    }
    shared.state.set_store(Arc::new(opened));
    Ok(())
}

/// How often the embedded store drops expired records (Redis expires
/// keys itself). Expired records never count in the meantime.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Sweeps the store every [`SWEEP_EVERY`], with the current policy's
/// greylisting times.
async fn sweep_store(shared: Arc<Shared>) {
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

/// Whom to run as: `--user` over `[server] user`.
fn run_as(user: Option<String>, settings: &ServerSettings) -> privileges::RunAs {
    privileges::RunAs {
        user: user.or_else(|| settings.user.clone()),
        group: settings.group.clone(),
    }
}

/// How to serve.
pub struct ServeOptions {
    pub config_path: PathBuf,
    /// `--listen` addresses; when non-empty they replace `[server] listen`.
    pub listen: Vec<ListenAddr>,
    /// Sockets from systemd; when present, listen addresses are ignored.
    pub systemd: SystemdFds,
    /// `--user`: replaces `[server] user`.
    pub user: Option<String>,
}

/// The decision line, Postfix-style: queue id first, then the action and
/// who it concerns.
pub fn decision_line(req: &Request, decision: &Decision) -> String {
    line(
        req,
        decision,
        "",
        &decision.action.to_string(),
        decision.rule.as_deref(),
    )
}

/// The line of a refusal logged instead of answered: the decision line
/// it would have been, marked as Postfix marks one (`NOQUEUE:
/// reject_warning: ...`).
pub fn reject_warning_line(req: &Request, decision: &Decision, warning: &RejectWarning) -> String {
    line(
        req,
        decision,
        "reject_warning: ",
        &warning.action.to_string(),
        Some(&warning.rule),
    )
}

fn line(
    req: &Request,
    decision: &Decision,
    mark: &str,
    action: &str,
    rule: Option<&str>,
) -> String {
    let queue_id = if req.queue_id.is_empty() {
        "NOQUEUE"
    } else {
        &req.queue_id
    };
    // Everything but the mark, the profile and rule names came from the client.
    format!(
        "{}: {mark}action={} client={} from=<{}> to=<{}> helo=<{}> profile={} rule={}",
        Escaped(queue_id),
        Escaped(action),
        Escaped(&req.client_label()),
        Escaped(&req.sender),
        Escaped(&req.recipient),
        Escaped(&req.helo_name),
        decision
            .profile
            .as_deref()
            .unwrap_or(crate::policy::NO_PROFILE),
        rule.map_or("-".to_string(), |r| format!("\"{r}\"")),
    )
}

impl Shared {
    /// Logs one decision as `[log] decisions` asks; a line identical to
    /// one already written in this window is only counted
    /// ([`Repeats`]), so a flood of one request costs a line a second.
    /// Would-be refusals (`reject_warning`) are refusals here: each has a
    /// line of its own before the decision's.
    pub fn log_decision(&self, req: &Request, decision: &Decision) {
        let all = match self.settings().log_decisions {
            Decisions::All => true,
            Decisions::Refusals => false,
            Decisions::None => return,
        };
        for warning in &decision.reject_warnings {
            self.log_line(reject_warning_line(req, decision, warning));
        }
        if all || decision.action.refuses() {
            self.log_line(decision_line(req, decision));
        }
    }

    fn log_line(&self, line: String) {
        let (summaries, write) = self.decision_lines.note(&line, std::time::Instant::now());
        log_summaries(summaries);
        if write {
            tracing::info!(target: "rpol::decision", "{line}");
        }
    }

    /// Writes the counts of the window of decision lines, when it is over
    /// (or at once, with `force`).
    pub fn flush_decision_lines(&self, force: bool) {
        log_summaries(self.decision_lines.flush(std::time::Instant::now(), force));
    }
}

fn log_summaries(summaries: Vec<String>) {
    for s in summaries {
        tracing::info!(target: "rpol::decision", "{s}");
    }
}

/// Writes the counts of folded decision lines once their window is over,
/// also when no request comes to close it.
async fn flush_decision_lines(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(crate::log::REPEAT_WINDOW).await;
        shared.flush_decision_lines(false);
    }
}

/// Hands the memory this thread freed back to the system now. mimalloc
/// (the binary's allocator) returns freed pages lazily, on the thread's
/// later allocations; after a config load, whose big tables leave as much
/// garbage as they keep, the loading thread goes quiet and would hold it
/// (a 1,000,000-entry table: 497 MB resident rather than 231).
/// Harmless under another allocator (tests): mimalloc's own heap is empty.
fn return_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may be called at any time
    // from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: ServeOptions) -> io::Result<()> {
    let signals = Signals::new()?;
    let loaded = config::load(&options.config_path)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    // Taken now, not when the watcher starts: a file changed meanwhile is
    // reloaded at its first check.
    let stamps = file_stamps(&loaded.policy.files);
    let settings = loaded.server.clone();
    let drop_plan = privileges::plan(&run_as(options.user.clone(), &settings))?;
    let shared = Arc::new(Shared::new(loaded, options.config_path.clone())?);
    return_freed_memory();

    let listeners = if !options.systemd.is_empty() {
        options.systemd.listeners()?
    } else {
        let addrs = if options.listen.is_empty() {
            &settings.listen
        } else {
            &options.listen
        };
        let mut out = Vec::new();
        for addr in addrs {
            out.push(listener::bind(addr, &settings).await?);
        }
        out
    };
    if listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "nothing to listen on",
        ));
    }
    let metrics_listener = match settings.metrics {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on metrics {addr}: {e}"))
        })?),
        None => None,
    };
    // Every socket is bound: root is not needed any more.
    privileges::apply(drop_plan)?;
    // Opened as the run-as account, which must own the file.
    open_store(&shared, &settings)?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let slots = Slots::new(
        settings.max_connections,
        settings.max_connections_per_address,
    );
    let shards = Arc::new(shards::Shards::start(settings.threads)?);
    let mut accept_tasks = Vec::new();
    for l in listeners {
        tracing::info!("listening on {}", l.label());
        accept_tasks.push(tokio::spawn(accept_loop(
            l,
            Serving {
                shared: shared.clone(),
                slots: slots.clone(),
                shards: shards.clone(),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
            },
        )));
    }
    if let Some(l) = metrics_listener {
        tracing::info!("serving metrics on http://{}/metrics", l.local_addr()?);
        tokio::spawn(metrics::serve(l, shared.clone(), shutdown.clone()));
    }
    notify_systemd("READY=1");
    let watcher = tokio::spawn(watch_files(shared.clone(), stamps, shutdown.clone()));
    let sweeper = tokio::spawn(sweep_store(shared.clone()));
    let flusher = tokio::spawn(flush_decision_lines(shared.clone()));

    wait_for_signals(signals, &shared, &shutdown).await;
    watcher.abort();
    sweeper.abort();
    tracing::info!("stopping: no new connections; waiting for requests in flight");
    notify_systemd("STOPPING=1");
    for task in accept_tasks {
        let _ = task.await;
    }
    tracker.close();
    let grace = shared.settings().shutdown_timeout;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            "{} connection(s) still busy after {grace:?}; exiting",
            tracker.len()
        );
    }
    let _ = tokio::task::spawn_blocking(move || shards.stop()).await;
    flusher.abort();
    shared.flush_decision_lines(true);
    log_stats(&shared);
    tracing::info!("stopped");
    Ok(())
}

/// Serves one connection on stdin/stdout (Postfix spawn(8)). Logging must
/// already go to syslog: spawn connects stderr to the client socket.
pub async fn run_stdio(config_path: PathBuf, user: Option<String>) -> io::Result<()> {
    let signals = Signals::new()?;
    let loaded = config::load_for(&config_path, config::Serving::Spawned)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if let Some(addr) = loaded.server.metrics {
        // A process per connection: each would bind the same port.
        tracing::warn!("[metrics] listen = \"{addr}\" is not served with --stdio");
    }
    privileges::apply(privileges::plan(&run_as(user, &loaded.server))?)?;
    let settings = loaded.server.clone();
    let shared = Arc::new(Shared::new(loaded, config_path)?);
    open_store(&shared, &settings)?;
    let shutdown = CancellationToken::new();
    let stream = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let signal_task = {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { wait_for_signals(signals, &shared, &shutdown).await })
    };
    let flusher = tokio::spawn(flush_decision_lines(shared.clone()));
    let end = connection::serve(stream, "stdio", shared.clone(), shutdown).await;
    tracing::debug!("stdio connection ended: {end:?}");
    signal_task.abort();
    flusher.abort();
    shared.flush_decision_lines(true);
    Ok(())
}

/// What an accept loop hands each connection.
struct Serving {
    shared: Arc<Shared>,
    slots: Arc<Slots>,
    shards: Arc<shards::Shards>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

async fn accept_loop(listener: Listener, serving: Serving) {
    let Serving {
        shared,
        slots,
        shards,
        shutdown,
        tracker,
    } = serving;
    let mut refused = crate::common::Throttled::default();
    let mut strangers = crate::common::Throttled::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer, address)) => {
                // Before a slot: a stranger must not close an idle client.
                if let Err(why) = listener.admits(&stream, address, &shared.settings()) {
                    shared.metrics.refused(why.reason());
                    strangers.warn(|n| format!("{n} connection(s) refused, latest {peer}: {why}"));
                    continue;
                }
                // No other client is accepted while this one waits.
                let lease = tokio::select! {
                    l = slots.admit(address) => l,
                    _ = shutdown.cancelled() => break,
                };
                let lease = match lease {
                    Ok(lease) => lease,
                    Err(why) => {
                        refused.warn(|n| {
                            format!("{n} connection(s) closed at once, latest {peer}: {why:?} (every slot answering a request)")
                        });
                        continue;
                    }
                };
                // Served on a shard: off this runtime's reactor, onto its.
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(peer, "cannot hand the connection over: {e}");
                        continue;
                    }
                };
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                shards.spawn(tracker.track_future(async move {
                    tracing::debug!(peer, "connection opened");
                    let lease = Some(lease);
                    let end = match stream.into_tokio() {
                        Ok(Stream::Unix(s)) => {
                            connection::serve_in_slot(s, &peer, shared, shutdown, lease).await
                        }
                        Ok(Stream::Tcp(s)) => {
                            connection::serve_in_slot(s, &peer, shared, shutdown, lease).await
                        }
                        Err(e) => {
                            tracing::warn!(peer, "cannot take the connection over: {e}");
                            return;
                        }
                    };
                    tracing::debug!(peer, "connection ended: {end:?}");
                }));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!("accept on {} failed: {e}", listener.label());
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    listener.cleanup();
}

/// The signals the daemon handles. Registered before any socket is bound:
/// until then SIGTERM and SIGHUP keep their default action, which kills the
/// process, so a reload sent as soon as the socket accepts would be fatal.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Waits for SIGTERM/SIGINT (then cancels `shutdown`), reloading on SIGHUP.
async fn wait_for_signals(signals: Signals, shared: &Shared, shutdown: &CancellationToken) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                reload(shared, "SIGHUP");
            }
        }
    }
    shutdown.cancel();
}

/// Reloads and logs the outcome; a failed load keeps the old policy.
fn reload(shared: &Shared, why: &str) {
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
async fn watch_files(shared: Arc<Shared>, mut seen: Vec<Stamp>, shutdown: CancellationToken) {
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

/// DNS cache counters are logged every 150 file checks (5 minutes).
const STATS_EVERY: u64 = 150;

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

type Stamp = Option<(std::time::SystemTime, u64)>;

fn file_stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::debug!("sd_notify {state}: {e}");
    }
}
