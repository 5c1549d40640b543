//! The accept loop of one listener: who may connect, a slot for each
//! connection, and its hand-over to a connection thread.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listener::{Listener, Stream};
use super::slots::Slots;
use super::{Shared, connection, shards};

/// What an accept loop hands each connection.
pub(super) struct Serving {
    pub(super) shared: Arc<Shared>,
    pub(super) slots: Arc<Slots>,
    pub(super) shards: Arc<shards::Shards>,
    pub(super) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
}

pub(super) async fn accept_loop(listener: Listener, serving: Serving) {
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
