//! What the daemon hears from its supervisor (signals) and tells it
//! (sd_notify).

use std::io;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Shared;
use super::reload::{Trigger, reload};

/// The signals the daemon handles. Registered before any socket is bound:
/// until then SIGTERM and SIGHUP keep their default action, which kills the
/// process, so a reload sent as soon as the socket accepts would be fatal.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Waits for SIGTERM/SIGINT (then cancels `shutdown`), reloading on SIGHUP.
pub(super) async fn wait_for_signals(
    signals: Signals,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) {
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
                reload(shared, Trigger::Signal).await;
            }
        }
    }
    shutdown.cancel();
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
pub(super) fn notify_systemd(state: &str) {
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
