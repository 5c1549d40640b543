//! The two servers this binary becomes when started with `--role`: the
//! protocol floor and the loopback DNS server.

use std::io::{BufRead, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use rpol::protocol::{Action, Decoder, encode_response};

use super::dns_server;

/// Bytes read from the socket at a time (as rpol's connection does).
const READ_CHUNK: usize = 8 * 1024;

/// `--role floor --listen unix:PATH|tcp:ADDR`: the protocol floor. A tokio
/// server (multi-threaded, one worker per core) with rpol's own decoder
/// (decoding into the previous request's strings, as rpol does), encoder
/// and allocator (this binary's, mimalloc, as rpol's), answering every
/// request `DUNNO`: what rpol would cost if its policy took no time. It
/// has no timeouts, no connection limit and no logging.
pub fn floor(listen: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if let Some(path) = listen.strip_prefix("unix:") {
            let listener = tokio::net::UnixListener::bind(path).expect("floor: bind");
            loop {
                let (stream, _) = listener.accept().await.expect("floor: accept");
                tokio::spawn(floor_connection(stream));
            }
        } else {
            let addr = listen.strip_prefix("tcp:").expect("unix:PATH or tcp:ADDR");
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .expect("floor: bind");
            loop {
                let (stream, _) = listener.accept().await.expect("floor: accept");
                let _ = stream.set_nodelay(true);
                tokio::spawn(floor_connection(stream));
            }
        }
    });
}

/// Reads requests, decodes each with rpol's decoder, answers `DUNNO`.
async fn floor_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::with_capacity(64);
    let mut decoder = Decoder::new();
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => {
                    decoder.recycle(request);
                    out.clear();
                    encode_response(&Action::Dunno, &mut out);
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `--role dns`: tests/support/dns.rs serving tests/zones/ (the default
/// zones and spftest) on 127.0.0.1, on one worker thread. Prints its
/// address, then its query count for every line read from stdin; exits
/// when stdin closes.
pub fn dns() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut zones = dns_server::DEFAULT_ZONES.to_vec();
    zones.push(("spftest.", include_str!("../../tests/zones/spftest.zone")));
    let server = runtime.block_on(dns_server::TestDns::start(&zones));
    let mut out = std::io::stdout();
    writeln!(out, "{}", server.addr).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        writeln!(out, "{}", server.query_count()).unwrap();
        out.flush().unwrap();
    }
}
