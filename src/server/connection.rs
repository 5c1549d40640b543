//! One client connection: read requests, answer each, until the client
//! leaves, idles out, sends something malformed, or the server stops.
//!
//! Timeouts follow Postfix's client side: `idle_timeout` between requests
//! (smtpd_policy_service_max_idle), `request_timeout` once a request has
//! started (smtpd_policy_service_timeout). A malformed request is answered
//! with the configured error action and the connection is closed, since the
//! decoder cannot know where the next request starts.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::slots::Lease;
use crate::policy::evaluate;
use crate::protocol::{Decoder, ProtocolError, Request, encode_response};

/// Room made in the buffer before each read. Bytes are read straight into
/// the request buffer (no second buffer per connection): an idle
/// connection costs a few KiB, which at thousands of connections is most
/// of rpol's memory. Postfix's requests are under 1 KiB.
const READ_RESERVE: usize = 2 * 1024;

/// Buffer capacity an idle connection keeps at most.
const KEEP_CAPACITY: usize = 8 * 1024;

/// Why a connection ended, for the log and for tests.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed the connection between requests.
    Closed,
    /// The client closed it in the middle of a request.
    ClosedMidRequest,
    /// No request within idle_timeout.
    Idle,
    /// A request started but did not finish within request_timeout.
    SlowRequest,
    /// A malformed request was answered with the error action.
    Protocol,
    /// The server is stopping.
    Shutdown,
    /// Closed between requests to make room for a new client.
    Evicted,
    /// A read or write failed.
    Io,
}

/// Serves `stream` until it ends; returns why.
pub async fn serve<S>(
    stream: S,
    peer: &str,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    serve_in_slot(stream, peer, shared, shutdown, None).await
}

/// [`serve`] for a connection holding a slot: it tells the slot when it is
/// idle (and may be closed for a newcomer) and when it is busy.
pub async fn serve_in_slot<S>(
    mut stream: S,
    peer: &str,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    lease: Option<Lease>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let evicted = async {
        match &lease {
            Some(lease) => lease.evicted().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(evicted);
    // Made once, not per read: each new one would join and leave the
    // token's waiter list, under its lock, on every request.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let _open = shared.metrics.connection();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_RESERVE);
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let mut decoder = Decoder::new();
    // When the request being read must be complete: request_timeout counts
    // from its first bytes, not per read, so trickling bytes cannot hold it.
    let mut request_deadline: Option<Instant> = None;
    let mut last_answer = Instant::now();
    // One timer for the connection's life. Moving it on every request
    // would take it out of the timer wheel and put it back each time; it
    // is moved only when a deadline comes earlier than it (a request's
    // first bytes), or when it fires before the deadline that counts
    // (the client kept busy), to that deadline.
    let timer = tokio::time::sleep_until(last_answer + shared.settings().idle_timeout);
    tokio::pin!(timer);
    loop {
        // Answer every complete request already buffered (pipelining).
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => {
                    let decoded = Instant::now();
                    request_deadline = None;
                    out.clear();
                    if let Err(e) = request.check_kind(true) {
                        let end = refuse(&mut stream, peer, &e, &shared, &mut out).await;
                        return end;
                    }
                    // Not closed for a newcomer while a request is answered.
                    if let Some(lease) = &lease {
                        lease.busy();
                    }
                    answer(&request, &shared, &mut out).await;
                    decoder.recycle(request);
                    // Idle from here: the client may see the answer at once,
                    // and a newcomer right behind it must find us closable.
                    if let Some(lease) = &lease {
                        lease.idle();
                    }
                    if let Err(e) = write_all(&mut stream, &out).await {
                        tracing::warn!(peer, "write failed: {e}");
                        return End::Io;
                    }
                    last_answer = Instant::now();
                    shared.metrics.latency.observe(last_answer - decoded);
                }
                Ok(None) => {
                    // A large request (up to 64 KiB) leaves a large buffer:
                    // an idle connection gives it back.
                    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
                        buf.shrink_to(READ_RESERVE);
                    }
                    break;
                }
                Err(e) => {
                    out.clear();
                    return refuse(&mut stream, peer, &e, &shared, &mut out).await;
                }
            }
        }
        let mid_request = !buf.is_empty();
        let (limit, deadline) = {
            let settings = shared.settings();
            if mid_request {
                let limit = settings.request_timeout;
                let deadline = *request_deadline.get_or_insert_with(|| Instant::now() + limit);
                (limit, deadline)
            } else {
                let limit = settings.idle_timeout;
                (limit, last_answer + limit)
            }
        };
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        // Reading first: bytes already received when the server stops are
        // a request in flight, to be finished and answered, not dropped.
        let read = tokio::select! {
            biased;
            r = read_more(&mut stream, &mut buf) => r,
            () = &mut timer => {
                if Instant::now() < deadline {
                    timer.as_mut().reset(deadline);
                    continue;
                }
                if mid_request {
                    tracing::warn!(peer, "request not finished within {limit:?}: closing");
                    return End::SlowRequest;
                }
                tracing::debug!(peer, "idle for {limit:?}: closing");
                return End::Idle;
            }
            _ = &mut cancelled, if !mid_request => return End::Shutdown,
            // Also a request still trickling in: Postfix writes a request
            // at once, so one that is slow to arrive is not Postfix's.
            _ = &mut evicted => {
                tracing::debug!(peer, "closed to make room for a new client");
                return End::Evicted;
            }
        };
        match read {
            Ok(0) if mid_request => {
                tracing::warn!(peer, "connection closed in the middle of a request");
                return End::ClosedMidRequest;
            }
            Ok(0) => return End::Closed,
            // Appended to buf already.
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(peer, "read failed: {e}");
                return End::Io;
            }
        }
    }
}

/// Evaluates one request, logs the decision, and encodes the response.
async fn answer(request: &Request, shared: &Shared, out: &mut Vec<u8>) {
    let policy = shared.policy();
    let decision = evaluate(&policy, &shared.state, request, false).await;
    if decision.profile.is_none() {
        shared.warn_unmatched(request, &policy);
    }
    shared.log_decision(request, &decision);
    encode_response(&decision.action, out);
}

/// Answers a malformed request with the error action and ends the connection.
async fn refuse<S>(
    stream: &mut S,
    peer: &str,
    error: &ProtocolError,
    shared: &Shared,
    out: &mut Vec<u8>,
) -> End
where
    S: AsyncWrite + Unpin,
{
    shared.metrics.malformed();
    let action = shared.settings().error_action.clone();
    tracing::warn!(
        peer,
        "malformed request: {error}; answering {action:?} and closing"
    );
    encode_response(&action, out);
    let _ = write_all(stream, out).await;
    let _ = stream.shutdown().await;
    End::Protocol
}

/// Reads what is there onto the end of `buf` (cancel-safe: bytes are
/// appended only when a read completes).
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    buf.reserve(READ_RESERVE);
    stream.read_buf(buf).await
}

async fn write_all<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}
