//! A tiny raw DNS responder for fault injection: UDP only, on 127.0.0.1,
//! answering from a function of (name, type), or misbehaving on purpose:
//! late answers, SERVFAIL, the TC bit with nothing on TCP, random bytes,
//! a wrong message id, a wrong question, or silence. hickory-server
//! (tests/support/dns.rs) cannot send malformed packets; this can.
//!
//! Include it with `use crate::support::faulty_dns;` (tests/suite.rs builds it once; a binary of its own includes it with `#[path = "support/faulty_dns.rs"] mod faulty_dns;`).
//! Only ever point rpol at [`FaultyDns::addr`] or [`closed_port`]: never at
//! the host's resolver (shared/TESTING.md).
#![allow(dead_code)] // each test binary uses a different subset

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

/// How often the server thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(50);
/// TTL of every record served.
const TTL: u32 = 300;
/// Largest datagram read.
const MAX_QUERY: usize = 4096;

/// How the responder treats each query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Correct answers at once.
    None,
    /// Correct answers, sent after this delay.
    Slow(Duration),
    /// RCODE 2 (SERVFAIL), no records.
    ServFail,
    /// The TC bit and no records; nothing listens on TCP at this port.
    Truncated,
    /// Random bytes of random length (1..=512), from the right address.
    Garbage,
    /// The query's own id followed by random bytes: passes the id check,
    /// then fails to parse.
    GarbageWithId,
    /// A correct answer with the id off by one.
    WrongId,
    /// The right id, but the question and the answer are for another name.
    WrongQuestion,
    /// Nothing at all.
    Silent,
}

/// Record data of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Mx(u16, String),
    Txt(String),
    Ptr(String),
}

/// What the zone says about a (name, type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    Found(Vec<Rdata>),
    NoData,
    NxDomain,
    /// No answer to this question at all, whatever the fault: a name
    /// whose servers never reply, beside names that are answered.
    Silent,
}

/// The zone: (lowercase name without trailing dot, QTYPE) -> records.
pub type Zone = fn(&str, u16) -> Records;

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_MX: u16 = 15;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;

/// A running responder; it stops when dropped.
pub struct FaultyDns {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultyDns {
    /// Serves `zone` on a free UDP port of 127.0.0.1 with `fault`.
    pub fn start(fault: Fault, zone: Zone) -> FaultyDns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        socket.set_read_timeout(Some(POLL)).expect("read timeout");
        let addr = socket.local_addr().expect("local addr");
        let fault = Arc::new(Mutex::new(fault));
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (fault, queries, stop) = (fault.clone(), queries.clone(), stop.clone());
            thread::spawn(move || serve(socket, zone, &fault, &queries, &stop))
        };
        FaultyDns {
            addr,
            fault,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    /// Changes the fault for the queries that arrive from now on.
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Queries received so far.
    pub fn query_count(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback UDP (and TCP) address where nothing listens: a port bound,
/// then closed. Queries to it get ICMP port unreachable.
pub fn closed_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    socket.local_addr().expect("local addr")
}

fn serve(
    socket: UdpSocket,
    zone: Zone,
    fault: &Mutex<Fault>,
    queries: &AtomicU64,
    stop: &AtomicBool,
) {
    let socket = Arc::new(socket);
    let mut rng = Rng::seeded();
    let mut buf = [0u8; MAX_QUERY];
    while !stop.load(Ordering::SeqCst) {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        queries.fetch_add(1, Ordering::SeqCst);
        let Some(query) = Query::parse(&buf[..len]) else {
            continue;
        };
        let fault = *fault.lock().unwrap();
        let reply = match fault {
            Fault::None | Fault::Slow(_) => answer(&query, &query.name, zone),
            Fault::ServFail => Some(query.response(2, false, &query.question, &[])),
            Fault::Truncated => Some(query.response(0, true, &query.question, &[])),
            Fault::Garbage => {
                let n = 1 + rng.below(512);
                Some((0..n).map(|_| rng.byte()).collect())
            }
            Fault::GarbageWithId => {
                let mut out = query.id.to_be_bytes().to_vec();
                let n = 10 + rng.below(500);
                out.extend((0..n).map(|_| rng.byte()));
                Some(out)
            }
            Fault::WrongId => answer(&query, &query.name, zone).map(|mut out| {
                let id = query.id.wrapping_add(1).to_be_bytes();
                out[..2].copy_from_slice(&id);
                out
            }),
            Fault::WrongQuestion => {
                let forged = format!("forged.{}", query.name);
                let mut question = encode_name(&forged);
                question.extend_from_slice(&query.question[query.question.len() - 4..]);
                let records = records(zone, &query.name, query.qtype);
                Some(query.response(0, false, &question, &records))
            }
            Fault::Silent => None,
        };
        let Some(reply) = reply else { continue };
        match fault {
            Fault::Slow(delay) => {
                let socket = socket.clone();
                thread::spawn(move || {
                    thread::sleep(delay);
                    let _ = socket.send_to(&reply, peer);
                });
            }
            _ => {
                let _ = socket.send_to(&reply, peer);
            }
        }
    }
}

/// The correct response to `query`, from `zone` (none for a silent name).
fn answer(query: &Query, name: &str, zone: Zone) -> Option<Vec<u8>> {
    match zone(name, query.qtype) {
        Records::NxDomain => Some(query.response(3, false, &query.question, &[])),
        Records::NoData => Some(query.response(0, false, &query.question, &[])),
        Records::Found(rdata) => Some(query.response(0, false, &query.question, &rdata)),
        Records::Silent => None,
    }
}

fn records(zone: Zone, name: &str, qtype: u16) -> Vec<Rdata> {
    match zone(name, qtype) {
        Records::Found(r) => r,
        _ => Vec::new(),
    }
}

/// The parts of a query the responder needs.
struct Query {
    id: u16,
    /// Flags of the query (for RD).
    flags: u16,
    /// The question section as received: QNAME, QTYPE, QCLASS.
    question: Vec<u8>,
    /// QNAME, lowercase, without the trailing dot.
    name: String,
    qtype: u16,
}

impl Query {
    fn parse(packet: &[u8]) -> Option<Query> {
        if packet.len() < 12 {
            return None;
        }
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        let flags = u16::from_be_bytes([packet[2], packet[3]]);
        let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
        if qdcount != 1 || flags & 0x8000 != 0 {
            return None;
        }
        let mut pos = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*packet.get(pos)?);
            pos += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            let label = packet.get(pos..pos + len)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            pos += len;
        }
        let qtype = u16::from_be_bytes([*packet.get(pos)?, *packet.get(pos + 1)?]);
        let end = pos + 4;
        let question = packet.get(12..end)?.to_vec();
        Some(Query {
            id,
            flags,
            question,
            name: labels.join("."),
            qtype,
        })
    }

    /// A response with `rcode`, the TC bit if `truncated`, `question` as
    /// the question section, and `answers` owned by that question's name.
    fn response(&self, rcode: u16, truncated: bool, question: &[u8], answers: &[Rdata]) -> Vec<u8> {
        // QR, AA, RD as asked, RA.
        let mut flags = 0x8000 | 0x0400 | (self.flags & 0x0100) | 0x0080 | rcode;
        if truncated {
            flags |= 0x0200;
        }
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(question);
        for rdata in answers {
            // The owner: a pointer to the question's name at offset 12.
            out.extend_from_slice(&[0xc0, 0x0c]);
            let (rtype, data) = match rdata {
                Rdata::A(ip) => (TYPE_A, ip.octets().to_vec()),
                Rdata::Mx(pref, host) => {
                    let mut d = pref.to_be_bytes().to_vec();
                    d.extend(encode_name(host));
                    (TYPE_MX, d)
                }
                Rdata::Txt(text) => {
                    let mut d = Vec::new();
                    for chunk in text.as_bytes().chunks(255) {
                        d.push(chunk.len() as u8);
                        d.extend_from_slice(chunk);
                    }
                    (TYPE_TXT, d)
                }
                Rdata::Ptr(host) => (TYPE_PTR, encode_name(host)),
            };
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
        }
        out
    }
}

/// `name` in wire format, uncompressed.
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// xorshift64*: random enough for garbage, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
