//! The connection handler, `rpol::server::connection::serve`, driven
//! in-process: the framing table of support/port587.rs replayed in reads of
//! every size from one byte up and split in two at every byte, each read
//! exactly as scripted; and the idle and request timeouts on tokio's paused
//! clock, so 300 s and 100 s are proven without waiting. The daemon over a
//! real socket, including one real-time test per timeout, is
//! tests/daemon.rs.

use crate::support::port587;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use port587::{DUNNO, Ending, Exchange, SUBMISSION, exchanges, rejected, submission, wire};
use rpol::config;
use rpol::server::Shared;
use rpol::server::connection::{End, serve};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Postfix's smtpd_policy_service_max_idle, rpol's default idle_timeout.
const DEFAULT_IDLE: Duration = Duration::from_secs(300);
/// Postfix's smtpd_policy_service_timeout, rpol's default request_timeout.
const DEFAULT_REQUEST: Duration = Duration::from_secs(100);

/// The port-587 policy with `server` as its `[server]` lines. The
/// resolver names a server that is never asked: the policy has no DNS rule.
fn shared(server: &str) -> Arc<Shared> {
    let text = format!("[server]\n{server}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n{SUBMISSION}");
    let path = PathBuf::from("policy.toml");
    let loaded = config::load_str(&path, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Arc::new(Shared::new(loaded, path).expect("runtime state"))
}

/// A client whose bytes reach the handler in reads of exactly the
/// scripted lengths (the last read takes what is left), then end of input.
/// What the handler writes is kept.
struct Scripted {
    input: Vec<u8>,
    at: usize,
    /// Lengths of the reads to come; the last one repeats.
    reads: Vec<usize>,
    /// Lengths the handler was given, end of input (0) included.
    given: Vec<usize>,
    output: Vec<u8>,
}

impl Scripted {
    fn new(input: &[u8], reads: Vec<usize>) -> Scripted {
        assert!(reads.iter().all(|&n| n > 0));
        Scripted {
            input: input.to_vec(),
            at: 0,
            reads,
            given: Vec::new(),
            output: Vec::new(),
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = if self.reads.len() > 1 {
            self.reads.remove(0)
        } else {
            self.reads[0]
        };
        let n = want.min(self.input.len() - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.input[at..at + n]);
        self.at += n;
        self.given.push(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn end_of(ending: Ending) -> End {
    match ending {
        Ending::Closed => End::Closed,
        Ending::ClosedMidRequest => End::ClosedMidRequest,
        Ending::Refused => End::Protocol,
    }
}

/// Serves `exchange` in reads of the lengths `reads` and checks the whole
/// answer and how the connection ended; returns the read lengths given.
async fn replay(shared: &Arc<Shared>, exchange: &Exchange, reads: Vec<usize>) -> Vec<usize> {
    let what = format!("{} in reads of {reads:?}", exchange.name);
    let mut client = Scripted::new(&exchange.wire, reads);
    let end = serve(
        &mut client,
        "test",
        shared.clone(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&client.output),
        exchange.answer,
        "{what}"
    );
    assert_eq!(end, end_of(exchange.ending), "{what}");
    client.given
}

#[tokio::test]
async fn table_at_every_read_size() {
    let shared = shared("");
    for exchange in exchanges() {
        let len = exchange.wire.len();
        for size in 1..=len {
            let given = replay(&shared, &exchange, vec![size]).await;
            // The handler was given reads of exactly `size` bytes, the rest,
            // then end of input (or stopped reading at a malformed request).
            let mut script = vec![size; len / size];
            script.extend((len % size != 0).then_some(len % size));
            script.push(0);
            assert!(script.starts_with(&given), "{given:?}");
        }
    }
}

#[tokio::test]
async fn table_split_in_two_at_every_byte() {
    let shared = shared("");
    for exchange in exchanges() {
        let len = exchange.wire.len();
        for cut in 1..len {
            replay(&shared, &exchange, vec![cut, len - cut]).await;
        }
    }
}

#[tokio::test]
async fn requests_split_across_the_empty_line() {
    let shared = shared("");
    let first = wire(&submission("198.51.100.31", false));
    let second = wire(&submission("198.51.100.31", true));
    let single = Exchange {
        name: "the empty line alone",
        wire: first.clone(),
        answer: rejected("198.51.100.31"),
        ending: Ending::Closed,
    };
    replay(&shared, &single, vec![first.len() - 1, 1]).await;
    let pipelined = Exchange {
        name: "the empty line with the next request",
        wire: [first.clone(), second.clone()].concat(),
        answer: format!("{}{DUNNO}", rejected("198.51.100.31")),
        ending: Ending::Closed,
    };
    // The first request's last line, then its empty line and the whole
    // second request; then the empty line alone between the two.
    replay(&shared, &pipelined, vec![first.len() - 1, second.len() + 1]).await;
    replay(&shared, &pipelined, vec![first.len() - 1, 1, second.len()]).await;
}

/// The handler serving one end of an in-memory pipe; the test holds the
/// other.
fn spawn_serve(shared: Arc<Shared>) -> (DuplexStream, JoinHandle<End>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task =
        tokio::spawn(async move { serve(server, "test", shared, CancellationToken::new()).await });
    (client, task)
}

/// Reads one whole response (up to its empty line) from `client`.
async fn read_response(client: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    while !out.ends_with(b"\n\n") {
        let byte = client.read_u8().await.expect("a whole response");
        out.push(byte);
    }
    String::from_utf8(out).expect("UTF-8")
}

/// Sends one submission request that the policy answers DUNNO, and reads
/// the answer.
async fn ask_dunno(client: &mut DuplexStream) {
    client
        .write_all(&wire(&submission("198.51.100.41", true)))
        .await
        .unwrap();
    assert_eq!(read_response(client).await, DUNNO);
}

/// Starts a request and leaves it unfinished; asserts the handler closes
/// the connection exactly request_timeout (100 s) later, as SlowRequest.
async fn cut_after_request_timeout(client: &mut DuplexStream, task: JoinHandle<End>) {
    let started = Instant::now();
    client
        .write_all(b"request=smtpd_access_policy\nclient_addr")
        .await
        .unwrap();
    let (end, took) = ends_after(task, started, DEFAULT_REQUEST).await;
    assert_eq!((end, took), (End::SlowRequest, DEFAULT_REQUEST));
}

/// Waits until `task` ends; asserts it did not end before `after` had
/// passed since `since`, and returns its end and the time since `since`.
async fn ends_after(task: JoinHandle<End>, since: Instant, after: Duration) -> (End, Duration) {
    tokio::time::sleep_until(since + after - Duration::from_millis(1)).await;
    assert!(!task.is_finished(), "closed before {after:?}");
    let end = task.await.expect("serve");
    (end, since.elapsed())
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_defaults_to_300s_between_requests() {
    let (mut client, task) = spawn_serve(shared(""));
    ask_dunno(&mut client).await;
    let answered = Instant::now();
    // Far past request_timeout (100 s): between requests only the idle
    // timeout counts.
    let (end, idle) = ends_after(task, answered, DEFAULT_IDLE).await;
    assert_eq!((end, idle), (End::Idle, DEFAULT_IDLE));
    // Closed without a word.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"");
}

/// The idle timeout counts from the last answer, however long the
/// connection has been busy: a client asking every 200 s keeps it open for
/// 1,000 s (past the first 300 s, when the handler's one timer fires early
/// and is moved), and it closes 300 s after the last answer, not earlier.
#[tokio::test(start_paused = true)]
async fn idle_timeout_counts_from_the_last_answer_of_a_busy_connection() {
    let (mut client, task) = spawn_serve(shared(""));
    for _ in 0..5 {
        ask_dunno(&mut client).await;
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(!task.is_finished(), "closed while the client was busy");
    }
    ask_dunno(&mut client).await;
    let answered = Instant::now();
    let (end, idle) = ends_after(task, answered, DEFAULT_IDLE).await;
    assert_eq!((end, idle), (End::Idle, DEFAULT_IDLE));
}

/// A request started late in a long idle wait still gets request_timeout
/// (100 s) from its first byte, not the rest of the idle timeout.
#[tokio::test(start_paused = true)]
async fn request_timeout_counts_from_a_request_started_late_in_the_idle_wait() {
    let (mut client, task) = spawn_serve(shared(""));
    ask_dunno(&mut client).await;
    // 250 s into the 300 s idle wait: the request must finish by 350 s.
    tokio::time::sleep(Duration::from_secs(250)).await;
    cut_after_request_timeout(&mut client, task).await;
}

#[tokio::test(start_paused = true)]
async fn request_timeout_defaults_to_100s_once_a_request_starts() {
    let (mut client, task) = spawn_serve(shared(""));
    cut_after_request_timeout(&mut client, task).await;
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"");
}

/// Was a real-time test of the daemon (tests/server.rs) until the paused
/// clock: the same configuration and the same trickle, one byte every
/// 150 ms, now also showing when the request is cut.
#[tokio::test(start_paused = true)]
async fn request_timeout_bounds_the_whole_request() {
    // request_timeout = 1s: a request that would take ~4 s in total must be
    // cut even though no single read waits longer than 150 ms.
    let (mut client, task) =
        spawn_serve(shared("idle_timeout = \"60s\"\nrequest_timeout = \"1s\""));
    let started = Instant::now();
    let mut sent = 0;
    for byte in b"request=smtpd_access_policy\n" {
        if task.is_finished() || client.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        task.is_finished(),
        "still open after {:?}",
        started.elapsed()
    );
    assert_eq!(task.await.unwrap(), End::SlowRequest);
    // Bytes at 0, 150, ..., 900 ms and the one at 1050 ms too late.
    assert_eq!(sent, 7);
}

/// A client that pipelines requests and never reads the answers: once the
/// answers fill the pipe, the write waits, and the connection is closed
/// request_timeout (100 s) after that write began, not left for ever.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_is_closed_after_request_timeout() {
    // Room for a few answers only.
    let (mut client, server) = tokio::io::duplex(256);
    let shared = shared("");
    let task =
        tokio::spawn(async move { serve(server, "test", shared, CancellationToken::new()).await });
    let request = wire(&submission("198.51.100.41", true));
    let writer = tokio::spawn(async move {
        // Fails once the handler has closed its end.
        for _ in 0..1000 {
            if client.write_all(&request).await.is_err() {
                break;
            }
        }
        client
    });
    let started = Instant::now();
    let end = tokio::time::timeout(DEFAULT_REQUEST * 2, task)
        .await
        .expect("still serving a client that never reads")
        .expect("serve");
    assert_eq!((end, started.elapsed()), (End::SlowReader, DEFAULT_REQUEST));
    writer.await.unwrap();
}
