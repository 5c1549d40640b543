//! The two servers this binary becomes when started with `--role`: the
//! protocol floor and the loopback DNS server.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

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

/// The DNS lists of the blocklist runs, each its own zone under
/// `rbl.test`: three client lists (`reject_rbl_client`).
pub const BLOCKLISTS: &[&str] = &["bl1.rbl.test", "bl2.rbl.test", "bl3.rbl.test"];

/// One blocklist zone: RFC 5782's test entry (the health probe needs it),
/// and one of every 17th (bl1), 19th, 23rd address of 203.0.113.0/24
/// listed; everything else is NXDOMAIN, cached for an hour (SOA minimum).
fn blocklist_zone(origin: &str, every: u32) -> String {
    let mut z = format!(
        "$ORIGIN {origin}.\n$TTL 3600\n\
         @ IN SOA ns.rbl.test. hostmaster.rbl.test. ( 1 3600 600 86400 3600 )\n\
         @ IN NS ns.rbl.test.\n\
         2.0.0.127 IN A 127.0.0.2\n2.0.0.127 IN TXT \"test entry\"\n"
    );
    for host in (every..255).step_by(every as usize) {
        z.push_str(&format!("{host}.113.0.203 IN A 127.0.0.2\n"));
    }
    z
}

/// The never-seen domains of the cold mix: every name under `bulk.test`
/// has an address, a mail exchanger and an SPF record without lookups.
const BULK_ZONE_TEXT: &str = "$ORIGIN bulk.test.\n$TTL 3600\n\
    @ IN SOA ns.bulk.test. hostmaster.bulk.test. ( 1 3600 600 86400 3600 )\n\
    @ IN NS ns.bulk.test.\n\
    ns IN A 198.51.100.53\n\
    mx IN A 198.51.100.25\n\
    * IN A 198.51.100.25\n\
    * IN MX 10 mx.bulk.test.\n\
    * IN TXT \"v=spf1 ip4:198.51.100.0/24 ?all\"\n";

/// `--role dns [--delay-ms N]`: tests/support/dns.rs serving tests/zones/
/// (the default zones and spftest), the blocklists and bulk.test on
/// 127.0.0.1, on one worker thread; with a delay, behind a UDP relay that
/// holds every query that long before passing it on (each query on its
/// own, so no query waits behind another). Prints its address, then its
/// query count for every line read from stdin; exits when stdin closes.
pub fn dns(delay: Duration) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let lists: Vec<(String, String)> = BLOCKLISTS
        .iter()
        .zip([17, 19, 23])
        .map(|(l, every)| (format!("{l}."), blocklist_zone(l, every)))
        .collect();
    let mut zones = dns_server::DEFAULT_ZONES.to_vec();
    zones.push(("spftest.", include_str!("../../tests/zones/spftest.zone")));
    zones.push(("bulk.test.", BULK_ZONE_TEXT));
    for (origin, text) in &lists {
        zones.push((origin, text));
    }
    let server = runtime.block_on(dns_server::TestDns::start(&zones));
    let addr = if delay.is_zero() {
        server.addr
    } else {
        runtime.block_on(relay(server.addr, delay))
    };
    let mut out = std::io::stdout();
    writeln!(out, "{addr}").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        writeln!(out, "{}", server.query_count()).unwrap();
        out.flush().unwrap();
    }
}

/// How long the relay waits for the server's answer to one query.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// A UDP relay on 127.0.0.1 in front of `server`: each query is held for
/// `delay`, then sent from a socket of its own, and the answer returned.
async fn relay(server: SocketAddr, delay: Duration) -> SocketAddr {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("relay: bind"));
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let query = buf[..n].to_vec();
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                    return;
                };
                if up.send_to(&query, server).await.is_err() {
                    return;
                }
                let mut answer = vec![0u8; 4096];
                if let Ok(Ok(n)) = tokio::time::timeout(RELAY_TIMEOUT, up.recv(&mut answer)).await {
                    let _ = socket.send_to(&answer[..n], from).await;
                }
            });
        }
    });
    addr
}
