//! An in-process authoritative DNS server for rpol's tests: hickory-server
//! serving RFC 1035 zone text on 127.0.0.1 (UDP, and TCP on the same port
//! for truncated answers), with query counting and fault injection
//! (SERVFAIL, or silence so that clients time out).
//!
//! Include it from an integration test with
//! `use crate::support::dns as dns_server;` (tests/suite.rs builds it once; a binary of its own includes it with `#[path = "support/dns.rs"] mod dns_server;`). Tests must only ever point
//! a resolver at [`TestDns::addr`]: /etc/resolv.conf names an off-machine
//! server (see shared/TESTING.md).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{NS, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// The standard test zones under tests/zones/, as (origin, text).
pub const DEFAULT_ZONES: &[(&str, &str)] = &[
    ("example.", include_str!("../zones/example.zone")),
    (
        "113.0.203.in-addr.arpa.",
        include_str!("../zones/113.0.203.in-addr.arpa.zone"),
    ),
    (
        "100.51.198.in-addr.arpa.",
        include_str!("../zones/100.51.198.in-addr.arpa.zone"),
    ),
    (
        "8.b.d.0.1.0.0.2.ip6.arpa.",
        include_str!("../zones/8.b.d.0.1.0.0.2.ip6.arpa.zone"),
    ),
];

/// Name answered with SERVFAIL by [`TestDns::start_default`].
pub const SERVFAIL_NAME: &str = "servfail.example";
/// Name never answered by [`TestDns::start_default`].
pub const TIMEOUT_NAME: &str = "timeout.example";

/// Idle time after which the server closes a TCP connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Tries at binding TCP on the port the kernel gave the UDP socket.
const BIND_TRIES: usize = 20;

/// A running test DNS server; it stops when dropped.
pub struct TestDns {
    /// Where to send queries (UDP and TCP).
    pub addr: SocketAddr,
    state: Arc<State>,
    _server: Server<Handler>,
}

#[derive(Default)]
struct State {
    queries: AtomicU64,
    per_name: Mutex<HashMap<String, u64>>,
    servfail: Mutex<Vec<LowerName>>,
    silent: Mutex<Vec<LowerName>>,
    /// Exact names never answered, but for the listed types.
    silent_exact: Mutex<Vec<(LowerName, Vec<RecordType>)>>,
}

struct Handler {
    catalog: Catalog,
    state: Arc<State>,
}

fn lower(name: &str) -> LowerName {
    let mut n = Name::from_ascii(name).expect("test name parses");
    n.set_fqdn(true);
    LowerName::new(&n)
}

/// `text` as a fully qualified name whose labels are taken byte for byte
/// (no syntax check, no IDNA), for test data with odd names: spaces, `%`,
/// upper case. `None` if a label is empty or longer than 63 bytes, or the
/// name longer than 255 bytes.
pub fn raw_name(text: &str) -> Option<Name> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let labels: Vec<&[u8]> = text.split('.').map(str::as_bytes).collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return None;
    }
    let mut name = Name::from_labels(labels).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn fqdn(name: &Name) -> Name {
    let mut n = name.clone();
    n.set_fqdn(true);
    n
}

fn matches(list: &Mutex<Vec<LowerName>>, name: &LowerName) -> bool {
    list.lock().unwrap().iter().any(|z| z.zone_of(name))
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.state.queries.fetch_add(1, Ordering::SeqCst);
        let query = request.queries.queries().first();
        let qname = query.map(|q| q.name().clone());
        let qtype = query.map(|q| q.query_type());
        if let Some(name) = &qname {
            let key = name.to_string().trim_end_matches('.').to_ascii_lowercase();
            *self.state.per_name.lock().unwrap().entry(key).or_default() += 1;
            let silent_here = self
                .state
                .silent_exact
                .lock()
                .unwrap()
                .iter()
                .any(|(n, answered)| n == name && qtype.is_some_and(|t| !answered.contains(&t)));
            if silent_here || matches(&self.state.silent, name) {
                // Say nothing; the client has to time out.
                return ResponseInfo::from(Header {
                    metadata: Metadata::response_from_request(&request.metadata),
                    counts: HeaderCounts::default(),
                });
            }
            if matches(&self.state.servfail, name) {
                let response = MessageResponseBuilder::from_message_request(request)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                return response_handle
                    .send_response(response)
                    .await
                    .expect("send SERVFAIL");
            }
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

impl TestDns {
    /// Serve the zones in [`DEFAULT_ZONES`], with SERVFAIL for
    /// [`SERVFAIL_NAME`] and silence for [`TIMEOUT_NAME`].
    pub async fn start_default() -> TestDns {
        let dns = TestDns::start(DEFAULT_ZONES).await;
        dns.inject_servfail(SERVFAIL_NAME);
        dns.inject_silence(TIMEOUT_NAME);
        dns
    }

    /// Serve `zones`, each (origin, RFC 1035 zone text with its SOA), on
    /// 127.0.0.1 at a free port, UDP and TCP.
    pub async fn start(zones: &[(&str, &str)]) -> TestDns {
        let mut catalog = Catalog::new();
        for (origin, text) in zones {
            let origin = Name::from_ascii(origin).expect("zone origin parses");
            let (origin, records) = Parser::new(*text, None, Some(origin))
                .parse()
                .unwrap_or_else(|e| panic!("zone text parses: {e}"));
            let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                origin.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .expect("zone loads");
            catalog.upsert(LowerName::new(&origin), vec![Arc::new(handler)]);
        }
        TestDns::serve(catalog).await
    }

    async fn serve(catalog: Catalog) -> TestDns {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let mut server = Server::new(Handler {
            catalog,
            state: state.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        TestDns {
            addr,
            state,
            _server: server,
        }
    }

    /// Serve `records` from one root zone ("."), so that any name works, on
    /// 127.0.0.1 at a free port, UDP and TCP. An SOA and an NS are added at
    /// the root; names without records answer NXDOMAIN, names with records
    /// of other types NODATA. Identical records of a name are served once.
    pub async fn start_records(records: impl IntoIterator<Item = Record>) -> TestDns {
        let root = Name::root();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            root.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let ns = Name::from_ascii("ns.test.").expect("NS name parses");
        let soa = SOA::new(
            ns.clone(),
            Name::from_ascii("hostmaster.test.").expect("RNAME parses"),
            1,
            3600,
            600,
            86_400,
            60,
        );
        zone.upsert_mut(Record::from_rdata(root.clone(), 300, RData::SOA(soa)), 1);
        zone.upsert_mut(Record::from_rdata(root.clone(), 300, RData::NS(NS(ns))), 1);
        for record in records {
            zone.upsert_mut(record, 1);
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&root), vec![Arc::new(zone)]);
        TestDns::serve(catalog).await
    }

    /// Answer SERVFAIL for `name` and every name below it.
    pub fn inject_servfail(&self, name: &str) {
        self.state.servfail.lock().unwrap().push(lower(name));
    }

    /// Never answer for `name` and every name below it.
    pub fn inject_silence(&self, name: &str) {
        self.state.silent.lock().unwrap().push(lower(name));
    }

    /// Never answer queries for exactly `name` (not the names below it),
    /// except those for the types in `answered`.
    pub fn inject_silence_except(&self, name: &Name, answered: &[RecordType]) {
        self.state
            .silent_exact
            .lock()
            .unwrap()
            .push((LowerName::new(&fqdn(name)), answered.to_vec()));
    }

    /// Remove every injected fault.
    pub fn clear_faults(&self) {
        self.state.servfail.lock().unwrap().clear();
        self.state.silent.lock().unwrap().clear();
        self.state.silent_exact.lock().unwrap().clear();
    }

    /// Queries received so far (UDP and TCP, answered or not).
    pub fn query_count(&self) -> u64 {
        self.state.queries.load(Ordering::SeqCst)
    }

    /// Queries received so far for `name` (any type; case and trailing dot
    /// ignored).
    pub fn queries_for(&self, name: &str) -> u64 {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        self.state
            .per_name
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0)
    }
}

/// A UDP socket and a TCP listener on the same loopback port.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..BIND_TRIES {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let addr = udp.local_addr().expect("local addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}
