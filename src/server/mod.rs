//! The daemon: listeners, the connection limits, signals, reload.
//!
//! The server knows no rule: it hands each decoded request to
//! [`crate::policy::evaluate`] with the current [`Policy`]. When every
//! connection slot is taken, a new client gets the slot of the connection
//! that answered nothing for the longest time ([`slots`]); while it waits
//! for one, no other client is accepted (back-pressure). SIGHUP builds a
//! new `Policy` and swaps it in; requests in flight finish on the old one;
//! a config that fails to load is logged and the old one kept.

mod accept;
pub mod connection;
mod decisions;
mod housekeeping;
pub mod listener;
pub mod metrics;
pub mod privileges;
mod reload;
pub mod shards;
mod shared;
mod signals;
pub mod slots;
mod sockdiag;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, ListenAddr, ServerSettings};
use crate::log::Redacted;
use crate::state::store::{Backend, Store};
use accept::{Serving, accept_loop};
use decisions::flush_decision_lines;
pub use decisions::{decision_line, reject_warning_line};
use housekeeping::{log_stats, log_stats_periodically, sweep_store, watch_dns_lists};
pub use listener::SystemdFds;
pub use reload::CommandLine;
use reload::{return_freed_memory, watch_files};
pub use shared::{Shared, runtime_state};
use signals::{Signals, notify_systemd, wait_for_signals};
use slots::Slots;

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

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: ServeOptions) -> io::Result<()> {
    let signals = Signals::new()?;
    let loaded = config::load(&options.config_path)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let settings = loaded.server.clone();
    let drop_plan = privileges::plan(&run_as(options.user.clone(), &settings))?;
    let command_line = CommandLine {
        user: options.user.clone(),
        listen: !options.listen.is_empty() || !options.systemd.is_empty(),
    };
    // Its file stamps taken now, not when the watcher starts: a file
    // changed meanwhile is reloaded at the watcher's first look.
    let shared = Arc::new(Shared::started_with(
        loaded,
        options.config_path.clone(),
        command_line,
    )?);
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
    let watcher = tokio::spawn(watch_files(shared.clone(), shutdown.clone()));
    let sweeper = tokio::spawn(sweep_store(shared.clone()));
    let stats = tokio::spawn(log_stats_periodically(shared.clone()));
    let flusher = tokio::spawn(flush_decision_lines(shared.clone()));
    let dns_lists = tokio::spawn(watch_dns_lists(shared.clone()));

    wait_for_signals(signals, &shared, &shutdown).await;
    watcher.abort();
    sweeper.abort();
    stats.abort();
    dns_lists.abort();
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
    shared.decisions.flush(true);
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
    privileges::apply(privileges::plan(&run_as(user.clone(), &loaded.server))?)?;
    let settings = loaded.server.clone();
    let command_line = CommandLine { user, listen: true };
    let shared = Arc::new(Shared::started_with(loaded, config_path, command_line)?);
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
    shared.decisions.flush(true);
    Ok(())
}
