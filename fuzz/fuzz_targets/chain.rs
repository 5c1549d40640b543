//! The whole chain on arbitrary requests: a fixed policy with every rule
//! family (fixtures/chain/policy.toml), fresh runtime state per input, and
//! an in-process DNS server on 127.0.0.1 that answers from the input.
//!
//! Input: a request in wire form (`name=value` lines, an empty line), then
//! the DNS data, one record a line: `NAME TYPE DATA` with TYPE one of A,
//! AAAA, MX (`PREFERENCE HOST`), TXT (the rest of the line), PTR, CNAME, or
//! `NAME SERVFAIL`. Every other name is NXDOMAIN, every other type of a
//! listed name NODATA. The request is evaluated twice on the same state
//! (the second time from the caches), with a trace on even-length inputs.
//!
//! One runtime, one DNS server and one policy per process; each input
//! swaps in its own zone and gets its own resolver and caches, so the
//! answers depend on that input alone. Nothing here ever reads
//! /etc/resolv.conf: the policy names the server explicitly.

#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};
use libfuzzer_sys::fuzz_target;
use rpol::policy::Policy;
use rpol::protocol::Decoder;
use rpol::protocol::MAX_REPLY_BYTES;
use tokio::net::{TcpListener, UdpSocket};
use tokio::runtime::Runtime;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/chain/policy.toml");
/// TTL of every record served.
const TTL: u32 = 300;
/// Idle time after which the server closes a TCP connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// What the DNS server answers now: one input's records.
struct Zone {
    catalog: Catalog,
    servfail: Vec<LowerName>,
}

/// The zone of the input being run; swapped before each evaluation.
static ZONE: Mutex<Option<Arc<Zone>>> = Mutex::new(None);

struct Handler;

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let zone = ZONE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let servfail = |zone: &Zone| {
            request
                .queries
                .queries()
                .first()
                .is_some_and(|q| zone.servfail.iter().any(|n| n == q.name()))
        };
        match zone {
            Some(zone) if !servfail(&zone) => {
                zone.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
            _ => {
                let response = MessageResponseBuilder::from_message_request(request)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                response_handle
                    .send_response(response)
                    .await
                    .expect("send SERVFAIL")
            }
        }
    }
}

struct Fixture {
    runtime: Runtime,
    policy: Policy,
    /// `RPOL_FUZZ_PRINT=1`: print each decision with its trace, to see
    /// what an input does (`cargo fuzz run chain FILE`).
    print: bool,
}

fn fixture() -> &'static Fixture {
    static FIXTURE_CELL: OnceLock<Fixture> = OnceLock::new();
    FIXTURE_CELL.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let addr = runtime.block_on(serve());
        let text = std::fs::read_to_string(FIXTURE)
            .expect("fixture policy")
            .replace("@DNS@", &addr.to_string());
        let loaded =
            rpol::config::load_str(Path::new(FIXTURE), &text).unwrap_or_else(|e| panic!("{e}"));
        Fixture {
            runtime,
            policy: loaded.policy,
            print: std::env::var_os("RPOL_FUZZ_PRINT").is_some(),
        }
    })
}

/// Starts the DNS server (UDP, and TCP on the same port for truncated
/// answers) on 127.0.0.1; it runs as long as the process.
async fn serve() -> SocketAddr {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let addr = udp.local_addr().expect("local addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            let mut server = Server::new(Handler);
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
            // Dropping it would stop it.
            std::mem::forget(server);
            return addr;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// `text` as a fully qualified name, labels taken byte for byte (hostile
/// names included); `None` if DNS cannot carry it.
fn name(text: &str) -> Option<Name> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Some(Name::root());
    }
    let labels: Vec<&[u8]> = text.split('.').map(str::as_bytes).collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return None;
    }
    let mut name = Name::from_labels(labels).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// One `NAME TYPE DATA` line as a record.
fn record(owner: Name, kind: &str, data: &str) -> Option<Record> {
    let rdata = match kind.to_ascii_uppercase().as_str() {
        "A" => RData::A(A(data.trim().parse::<Ipv4Addr>().ok()?)),
        "AAAA" => RData::AAAA(AAAA(data.trim().parse::<Ipv6Addr>().ok()?)),
        "MX" => {
            let (pref, host) = data.trim().split_once(' ')?;
            RData::MX(MX::new(pref.parse().ok()?, name(host.trim())?))
        }
        // One character-string per 255 bytes, as a long SPF record is
        // published.
        "TXT" => RData::TXT(TXT::from_bytes(data.as_bytes().chunks(255).collect())),
        "PTR" => RData::PTR(PTR(name(data.trim())?)),
        "CNAME" => RData::CNAME(CNAME(name(data.trim())?)),
        _ => return None,
    };
    Some(Record::from_rdata(owner, TTL, rdata))
}

/// The input's DNS lines as a root zone ("."), so that any name works.
fn zone(text: &str) -> Zone {
    let root = Name::root();
    let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        root.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let ns = Name::from_ascii("ns.test.").expect("NS name");
    let soa = SOA::new(
        ns.clone(),
        Name::from_ascii("hostmaster.test.").expect("RNAME"),
        1,
        3600,
        600,
        86_400,
        60,
    );
    handler.upsert_mut(Record::from_rdata(root.clone(), TTL, RData::SOA(soa)), 1);
    handler.upsert_mut(Record::from_rdata(root.clone(), TTL, RData::NS(NS(ns))), 1);
    let mut servfail = Vec::new();
    for line in text.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(owner), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(owner) = name(owner) else {
            continue;
        };
        if kind.eq_ignore_ascii_case("SERVFAIL") {
            servfail.push(LowerName::new(&owner));
        } else if let Some(record) = record(owner, kind, words.next().unwrap_or("")) {
            handler.upsert_mut(record, 1);
        }
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&root), vec![Arc::new(handler)]);
    Zone { catalog, servfail }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let mut buf = data.to_vec();
    let Ok(Some(request)) = Decoder::new().decode(&mut buf) else {
        return;
    };
    let dns = String::from_utf8_lossy(&buf);
    *ZONE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(zone(&dns)));
    let state = rpol::server::runtime_state(&fixture.policy).expect("runtime state");
    let trace = fixture.print || data.len().is_multiple_of(2);
    fixture.runtime.block_on(async {
        for _ in 0..2 {
            let decision = rpol::policy::evaluate(&fixture.policy, &state, &request, trace).await;
            let action = decision.action.to_string();
            assert!(!action.is_empty(), "empty action");
            if fixture.print {
                eprintln!("{decision:#?}");
            }
            // A reject or defer reply leaves room for Postfix's prefix within
            // its 510-character SMTP reply; a PREPEND header is never cut.
            let reply = action.starts_with(|c: char| c.is_ascii_digit())
                || action.starts_with("DEFER_IF_PERMIT ");
            assert!(
                !reply || action.len() <= MAX_REPLY_BYTES,
                "reply of {} bytes",
                action.len()
            );
            // The log line escapes whatever the client sent: one line.
            let line = rpol::server::decision_line(&request, &decision);
            assert!(!line.contains(['\n', '\r']), "{line:?}");
            let wire = rpol::protocol::response_bytes(&decision.action);
            assert!(wire.starts_with(b"action=") && wire.ends_with(b"\n\n"));
            assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 2);
        }
    });
});
