//! The two servers this binary becomes when started with `--role`: the
//! protocol floor and the loopback DNS server.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    let answered = Arc::new(AtomicU64::new(0));
    let addr = if delay.is_zero() {
        server.addr
    } else {
        runtime.block_on(relay(server.addr, delay, answered.clone()))
    };
    let mut out = std::io::stdout();
    writeln!(out, "{addr}").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        let queries = server.query_count() + answered.load(Ordering::Relaxed);
        writeln!(out, "{queries}").unwrap();
        out.flush().unwrap();
    }
}

/// How long the relay waits for the server's answer to one query.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// A UDP relay on 127.0.0.1 in front of `server`: each query is held for
/// `delay`, then sent from a socket of its own, and the answer returned.
/// A blocklist query for an IPv6 client is answered by the relay itself
/// ([`ipv6_list_miss`], counted in `answered`), after the same delay.
async fn relay(server: SocketAddr, delay: Duration, answered: Arc<AtomicU64>) -> SocketAddr {
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
            if let Some(answer) = ipv6_list_miss(&query) {
                answered.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&answer, from).await;
                });
                continue;
            }
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

/// Labels of an IPv6 address's query name in a DNS list: its 32 nibbles.
const IPV6_NIBBLES: usize = 32;

/// The answer to a query for an IPv6 address in one of [`BLOCKLISTS`]:
/// NXDOMAIN, with the list's SOA (as the zone, which lists IPv4
/// addresses only, answers it), or `None` for any other query.
///
/// hickory-server's in-memory zone answers a name it does not hold by
/// walking up every ancestor for a delegation, then for a wildcard at each
/// ancestor walking them up again: quadratic in the labels, some 1-2 ms of
/// CPU for a 34-label name, so that the one-threaded server saturated at
/// about 500 such queries a second and the blocklist runs measured its
/// queue, not rpol's round trips. This answer is the one it would give.
fn ipv6_list_miss(query: &[u8]) -> Option<Vec<u8>> {
    // Header, then the question: labels, the root, QTYPE, QCLASS.
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push((at, query.get(at + 1..at + 1 + len)?));
        at += 1 + len;
    }
    let question_end = at + 1 + 4;
    if query.len() < question_end || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let in_a_list = BLOCKLISTS.iter().any(|list| {
        let list: Vec<&[u8]> = list.split('.').map(str::as_bytes).collect();
        labels.len() == IPV6_NIBBLES + list.len()
            && labels[IPV6_NIBBLES..]
                .iter()
                .zip(&list)
                .all(|((_, l), want)| l.eq_ignore_ascii_case(want))
    });
    if !in_a_list {
        return None;
    }
    let mut answer = query[..question_end].to_vec();
    // QR, AA, RD as asked; NXDOMAIN; one question, one authority record.
    answer[2] = 0x80 | 0x04 | (query[2] & 0x01);
    answer[3] = 3;
    answer[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]);
    // The SOA's owner: the list's name, where it starts in the question.
    let zone_at = u16::try_from(labels[IPV6_NIBBLES].0).ok()?;
    answer.extend_from_slice(&(0xc000 | zone_at).to_be_bytes());
    answer.extend_from_slice(&[0, 6, 0, 1]);
    answer.extend_from_slice(&3600u32.to_be_bytes());
    let mut rdata = Vec::new();
    for name in ["ns.rbl.test", "hostmaster.rbl.test"] {
        for label in name.split('.') {
            rdata.push(label.len() as u8);
            rdata.extend_from_slice(label.as_bytes());
        }
        rdata.push(0);
    }
    for n in [1u32, 3600, 600, 86_400, 3600] {
        rdata.extend_from_slice(&n.to_be_bytes());
    }
    answer.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    answer.extend_from_slice(&rdata);
    Some(answer)
}
