//! One client connection: read requests, answer each, until the client
//! leaves, idles out, sends something malformed, or the server stops.
//!
//! Timeouts follow Postfix's client side: `idle_timeout` between requests
//! (smtpd_policy_service_max_idle), `request_timeout` once a request has
//! started (smtpd_policy_service_timeout) and for the client to take its
//! answer. The checks of one request get `answer_timeout`, then it is
//! answered `error_action`; they are dropped as soon as the client hangs
//! up. A malformed request is answered with the configured error action and
//! the connection is closed, since the decoder cannot know where the next
//! request starts.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::slots::Lease;
use crate::config::ServerSettings;
use crate::policy::evaluate;
use crate::protocol::{Decoder, ProtocolError, Request, encode_response};

/// Room made in the buffer before each read. Bytes are read straight into
/// the request buffer (no second buffer per connection): an idle
/// connection costs a few KiB, which at thousands of connections is most
/// of rpol's memory. Postfix's requests are under 1 KiB.
const READ_RESERVE: usize = 2 * 1024;

/// Buffer capacity an idle connection keeps at most.
const KEEP_CAPACITY: usize = 8 * 1024;

/// How often a connection whose answer waits (for the DNS, the store)
/// looks whether its client hung up, to drop the work then: often enough
/// that a client gone costs little, rarely enough that thousands of
/// waiting answers cost few system calls. An answer ready sooner never
/// looks.
const HANGUP_CHECK: Duration = Duration::from_millis(200);

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
    /// The client did not take its answer within request_timeout.
    SlowReader,
    /// The client hung up while its request was being answered: the work
    /// was dropped.
    Gone,
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
    serve_on(stream, peer, shared, shutdown, None, None).await
}

/// [`serve`] for a socket holding a slot: it tells the slot when it is
/// idle (and may be closed for a newcomer) and when it is busy, and it
/// drops a request's work when the client hangs up.
pub async fn serve_in_slot<S>(
    stream: S,
    peer: &str,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    lease: Option<Lease>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + AsRawFd,
{
    let socket = stream.as_raw_fd();
    serve_on(stream, peer, shared, shutdown, lease, Some(socket)).await
}

/// The serve loop: a request read, answered in time, the answer written,
/// until the connection ends. `socket`: the stream's descriptor, watched
/// for a hang-up while a request is answered (it lives as long as
/// `stream`).
async fn serve_on<S>(
    stream: S,
    peer: &str,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    lease: Option<Lease>,
    socket: Option<RawFd>,
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
    let mut conn = Connection::new(stream, peer, shared.settings().idle_timeout);
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let limits = || Limits::of(&shared.settings());
    loop {
        let gone = (evicted.as_mut(), cancelled.as_mut());
        let request = match conn.read_request(limits, gone).await {
            Ok(request) => request,
            Err(Unread::End(end)) => return end,
            Err(Unread::Malformed(e)) => {
                let gone = (evicted.as_mut(), cancelled.as_mut());
                return refuse(&mut conn, &e, &shared, &mut out, gone).await;
            }
        };
        let decoded = Instant::now();
        out.clear();
        if let Err(e) = request.check_kind(true) {
            let gone = (evicted.as_mut(), cancelled.as_mut());
            return refuse(&mut conn, &e, &shared, &mut out, gone).await;
        }
        // Not closed for a newcomer while a request is answered; one told
        // to go (a pipelined request) answers no more.
        if let Some(lease) = &lease
            && !lease.busy()
        {
            tracing::debug!(peer, "closed to make room for a new client");
            return End::Evicted;
        }
        // One look at the settings per request: a read lock and two
        // reference counts.
        let settings = shared.settings();
        let answered = answer_in_time(&request, peer, &shared, &settings, &mut out, socket).await;
        conn.recycle(request);
        // Idle from here: the client may see the answer at once, and a
        // newcomer right behind it must find us closable, also while the
        // write waits for a client that does not read.
        if let Some(lease) = &lease {
            lease.idle();
        }
        if !answered {
            return End::Gone;
        }
        let gone = (evicted.as_mut(), cancelled.as_mut());
        match conn
            .write_answer(&out, settings.request_timeout, gone)
            .await
        {
            Ok(written) => shared.metrics.latency.observe(written - decoded),
            Err(end) => return end,
        }
    }
}

/// What the connection gives way to while it waits: its slot wanted for a
/// newcomer, and the server stopping.
type Gone<'a, E, C> = (Pin<&'a mut E>, Pin<&'a mut C>);

/// The read timeouts, read from the current settings at each wait, so
/// that a reload applies to connections already waiting.
#[derive(Clone, Copy)]
struct Limits {
    /// `idle_timeout`: between requests.
    idle: Duration,
    /// `request_timeout`: from a request's first bytes.
    request: Duration,
}

impl Limits {
    fn of(settings: &ServerSettings) -> Limits {
        Limits {
            idle: settings.idle_timeout,
            request: settings.request_timeout,
        }
    }
}

/// Why [`Connection::read_request`] has no request.
enum Unread {
    /// The connection ended.
    End(End),
    /// The bytes are no request: answered `error_action`, then closed.
    Malformed(ProtocolError),
}

/// One client's socket with its buffer and deadlines: requests in, each
/// within its time, answers out, each within its time.
struct Connection<'p, S> {
    stream: S,
    peer: &'p str,
    /// Bytes read and not decoded yet (several requests when pipelined).
    buf: Vec<u8>,
    decoder: Decoder,
    /// When the request being read must be complete: request_timeout
    /// counts from its first bytes, not per read, so trickling bytes
    /// cannot hold it.
    request_deadline: Option<Instant>,
    last_answer: Instant,
    /// One timer for the connection's life. Moving it on every request
    /// would take it out of the timer wheel and put it back each time; it
    /// is moved only when a deadline comes earlier than it (a request's
    /// first bytes), or when it fires before the deadline that counts (the
    /// client kept busy), to that deadline.
    timer: Pin<Box<Sleep>>,
}

impl<'p, S: AsyncRead + AsyncWrite + Unpin> Connection<'p, S> {
    fn new(stream: S, peer: &'p str, idle_timeout: Duration) -> Self {
        let now = Instant::now();
        Connection {
            stream,
            peer,
            buf: Vec::with_capacity(READ_RESERVE),
            decoder: Decoder::new(),
            request_deadline: None,
            last_answer: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
        }
    }

    /// The next request: one already buffered (pipelining), else one read
    /// within `idle_timeout` of the last answer, completed within
    /// `request_timeout` of its first bytes. Between requests the
    /// connection gives way to `gone`; a request begun is finished even
    /// when the server stops.
    async fn read_request<E, C>(
        &mut self,
        limits: impl Fn() -> Limits,
        gone: Gone<'_, E, C>,
    ) -> Result<Request, Unread>
    where
        E: Future<Output = ()>,
        C: Future<Output = ()>,
    {
        let (mut evicted, mut cancelled) = gone;
        let peer = self.peer;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(request)) => {
                    self.request_deadline = None;
                    return Ok(request);
                }
                // A large request (up to 64 KiB) leaves a large buffer: an
                // idle connection gives it back.
                Ok(None) if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY => {
                    self.buf.shrink_to(READ_RESERVE);
                }
                Ok(None) => {}
                Err(e) => return Err(Unread::Malformed(e)),
            }
            let mid_request = !self.buf.is_empty();
            let (limit, deadline) = {
                let limits = limits();
                if mid_request {
                    let limit = limits.request;
                    let deadline = *self
                        .request_deadline
                        .get_or_insert_with(|| Instant::now() + limit);
                    (limit, deadline)
                } else {
                    (limits.idle, self.last_answer + limits.idle)
                }
            };
            if deadline < self.timer.deadline() {
                self.timer.as_mut().reset(deadline);
            }
            // Reading first: bytes already received when the server stops
            // are a request in flight, to be finished and answered, not
            // dropped.
            let read = tokio::select! {
                biased;
                r = read_more(&mut self.stream, &mut self.buf) => r,
                () = &mut self.timer => {
                    if Instant::now() < deadline {
                        self.timer.as_mut().reset(deadline);
                        continue;
                    }
                    if mid_request {
                        tracing::warn!(peer, "request not finished within {limit:?}: closing");
                        return Err(Unread::End(End::SlowRequest));
                    }
                    tracing::debug!(peer, "idle for {limit:?}: closing");
                    return Err(Unread::End(End::Idle));
                }
                _ = cancelled.as_mut(), if !mid_request => return Err(Unread::End(End::Shutdown)),
                // Also a request still trickling in: Postfix writes a
                // request at once, so one that is slow to arrive is not
                // Postfix's.
                _ = evicted.as_mut() => {
                    tracing::debug!(peer, "closed to make room for a new client");
                    return Err(Unread::End(End::Evicted));
                }
            };
            match read {
                Ok(0) if mid_request => {
                    tracing::warn!(peer, "connection closed in the middle of a request");
                    return Err(Unread::End(End::ClosedMidRequest));
                }
                Ok(0) => return Err(Unread::End(End::Closed)),
                // Appended to buf already.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(peer, "read failed: {e}");
                    return Err(Unread::End(End::Io));
                }
            }
        }
    }

    /// Gives a request's buffers back to the decoder, for the next one.
    fn recycle(&mut self, request: Request) {
        self.decoder.recycle(request);
    }

    /// Writes `answer` within `limit` (`request_timeout`): a client that
    /// does not take its answer (pipelining without reading) is not
    /// Postfix. Gives way to `gone`, so a wedged client holds no slot.
    /// Returns when the answer was written.
    async fn write_answer<E, C>(
        &mut self,
        answer: &[u8],
        limit: Duration,
        gone: Gone<'_, E, C>,
    ) -> Result<Instant, End>
    where
        E: Future<Output = ()>,
        C: Future<Output = ()>,
    {
        deliver(&mut self.stream, self.peer, answer, limit, gone).await?;
        self.last_answer = Instant::now();
        Ok(self.last_answer)
    }
}

/// How an answer came to be.
enum Answered {
    Ready,
    Late,
    Gone,
}

/// Evaluates `request` into `out` within `answer_timeout`, answering
/// [`ServerSettings::timeout_action`] when the time is up (the checks still waiting are
/// dropped: their answers could only come after Postfix stopped waiting).
/// False when the client hung up first: the work was dropped and there is
/// nobody to answer.
async fn answer_in_time(
    request: &Request,
    peer: &str,
    shared: &Shared,
    settings: &ServerSettings,
    out: &mut Vec<u8>,
    socket: Option<RawFd>,
) -> bool {
    let limit = settings.answer_timeout;
    let answered = {
        let answering = answer(request, shared, settings, out);
        tokio::pin!(answering);
        // Most answers are ready at the first poll: the timer and the
        // hang-up checks are then never armed.
        tokio::select! {
            biased;
            () = &mut answering => Answered::Ready,
            () = tokio::time::sleep(limit) => Answered::Late,
            () = hung_up(socket) => Answered::Gone,
        }
    };
    match answered {
        Answered::Ready => true,
        Answered::Late => {
            shared.metrics.abandoned(true);
            let action = settings.timeout_action();
            tracing::warn!(
                peer,
                "no answer within {limit:?}: answering {:?} (client={})",
                action.to_string(),
                crate::log::Escaped(&request.client_label())
            );
            out.clear();
            encode_response(&action, out);
            true
        }
        Answered::Gone => {
            shared.metrics.abandoned(false);
            tracing::info!(
                peer,
                "client gone while its request was answered: work dropped (client={})",
                crate::log::Escaped(&request.client_label())
            );
            false
        }
    }
}

/// Resolves when the client has hung up `socket` (never without one),
/// looking every [`HANGUP_CHECK`]. A hang-up, not an end of input: a
/// client that only shut down its writing side still gets its answers.
/// Over TCP a close is seen only as an end of input, until a reset.
async fn hung_up(socket: Option<RawFd>) {
    let Some(fd) = socket else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(HANGUP_CHECK).await;
        let mut poll = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call; `fd` is the socket of the
        // connection being served, open for as long as it is.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        if ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return;
        }
    }
}

/// Evaluates one request, logs the decision, and encodes the response.
async fn answer(request: &Request, shared: &Shared, settings: &ServerSettings, out: &mut Vec<u8>) {
    let policy = shared.policy();
    let decision = evaluate(&policy, &shared.state, request, false).await;
    if decision.profile.is_none() {
        shared.decisions.warn_unmatched(request, &policy);
    }
    shared
        .decisions
        .log(settings.log_decisions, request, &decision);
    encode_response(&decision.action, out);
}

/// Writes `bytes` to the client within `request_timeout`: a client that
/// does not take its answer (pipelining without reading) is not Postfix.
/// The write gives way when the connection is told to make room or the
/// server stops (`gone`), so a wedged client holds no slot.
async fn deliver<S, E, C>(
    stream: &mut S,
    peer: &str,
    bytes: &[u8],
    limit: Duration,
    gone: Gone<'_, E, C>,
) -> Result<(), End>
where
    S: AsyncWrite + Unpin,
    E: Future<Output = ()>,
    C: Future<Output = ()>,
{
    let (evicted, cancelled) = gone;
    tokio::select! {
        biased;
        written = tokio::time::timeout(limit, write_all(stream, bytes)) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(peer, "write failed: {e}");
                Err(End::Io)
            }
            Err(_) => {
                tracing::warn!(peer, "answer not taken within {limit:?}: closing");
                Err(End::SlowReader)
            }
        },
        () = evicted => {
            tracing::debug!(peer, "closed to make room for a new client");
            Err(End::Evicted)
        }
        () = cancelled => Err(End::Shutdown),
    }
}

/// Answers a malformed request with the error action and ends the connection.
async fn refuse<S, E, C>(
    conn: &mut Connection<'_, S>,
    error: &ProtocolError,
    shared: &Shared,
    out: &mut Vec<u8>,
    gone: Gone<'_, E, C>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: Future<Output = ()>,
    C: Future<Output = ()>,
{
    shared.metrics.malformed();
    out.clear();
    let settings = shared.settings();
    let action = &settings.error_action;
    tracing::warn!(
        peer = conn.peer,
        "malformed request: {error}; answering {:?} and closing",
        action.to_string()
    );
    encode_response(action, out);
    if conn
        .write_answer(out, settings.request_timeout, gone)
        .await
        .is_ok()
    {
        let _ = conn.stream.shutdown().await;
    }
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
