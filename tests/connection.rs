//! The connection handler, `rpol::server::connection::serve`, driven
//! in-process: the framing table of support/port587.rs replayed in reads of
//! every size from one byte up and split in two at every byte, each read
//! exactly as scripted. The daemon over a real socket is tests/daemon.rs.

#[path = "support/port587.rs"]
mod port587;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use port587::{DUNNO, Ending, Exchange, SUBMISSION, exchanges, rejected, submission, wire};
use rpol::config;
use rpol::server::Shared;
use rpol::server::connection::{End, serve};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

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
