//! Chain evaluation for the seed's port-25 chain with a warm DNS cache,
//! next to the protocol floor (decoding a request and encoding a reply).
//!
//! The DNS answers come from the in-process test server on loopback
//! (tests/support/dns.rs); every lookup of the measured loop is a cache hit,
//! which the run checks and prints. Figures are printed, never asserted.
//! Run: `cargo bench --bench chain`.

// (The module allows dead_code itself.)
#[path = "../tests/support/dns.rs"]
mod dns_server;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rpol::policy::{Policy, evaluate};
use rpol::protocol::{Action, Decoder, Request, encode_response};

/// A request as Postfix 3.7 sends it at RCPT, from a remote client that
/// Postfix could not name (so the client checks ask the DNS too).
const WIRE: &[u8] = b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
client_address=203.0.113.10\nclient_name=unknown\nclient_port=40000\nreverse_client_name=unknown\n\
server_address=198.51.100.1\nserver_port=25\nhelo_name=mail.good.example\nsender=someone@mx-only.example\n\
recipient=alice@example.com\nrecipient_count=0\nqueue_id=\ninstance=1a2b.5f0e1c2d.3e4f5.0\nsize=1024\n\
etrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n\
ccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=TLSv1.3\n\
encryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\npolicy_context=\n\n";

/// The shipped policy.toml's port-25 chain (SPF aside), with the client
/// checks made strict so that the PTR and forward lookups run too.
fn seed_policy(dir: &std::path::Path, dns: std::net::SocketAddr) -> Policy {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy.toml"))
        .expect("policy.toml");
    let text = shipped
        .replace("nameservers = []", &format!("nameservers = [\"{dns}\"]"))
        .replace(
            "\"reject_unknown_reverse_client_hostname\",",
            "\"reject_unknown_reverse_client_hostname\", \"reject_unknown_client_hostname\",",
        );
    let tables = concat!(env!("CARGO_MANIFEST_DIR"), "/tables");
    std::os::unix::fs::symlink(tables, dir.join("tables")).expect("symlink tables");
    rpol::config::load_str(&dir.join("policy.toml"), &text)
        .expect("seed policy loads")
        .policy
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(dns_server::TestDns::start_default());
    let dir = tempfile::tempdir().unwrap();
    let policy = seed_policy(dir.path(), server.addr);
    let state = rpol::server::runtime_state(&policy).expect("runtime state");
    let request = Decoder::new().decode(&mut WIRE.to_vec()).unwrap().unwrap();

    // Warm the cache and show what the chain does.
    let first = rt.block_on(evaluate(&policy, &state, &request, true));
    println!("seed chain, request from 203.0.113.10:");
    for line in &first.trace {
        println!("  {line}");
    }
    println!("  action={}", first.action);
    let queries = server.query_count();
    let stats = state.resolver().stats();

    let mut group = c.benchmark_group("rpol");
    group.throughput(Throughput::Elements(1));
    group.bench_function("protocol floor: decode + encode", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            let mut buf = WIRE.to_vec();
            let req: Request = Decoder::new().decode(&mut buf).unwrap().unwrap();
            black_box(&req);
            out.clear();
            encode_response(black_box(&Action::Dunno), &mut out);
            black_box(&out);
        })
    });
    group.bench_function("seed port-25 chain, warm cache", |b| {
        b.iter(|| black_box(rt.block_on(evaluate(&policy, &state, black_box(&request), false))))
    });
    group.bench_function("decode + chain + encode, warm cache", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            let mut buf = WIRE.to_vec();
            let req = Decoder::new().decode(&mut buf).unwrap().unwrap();
            let d = rt.block_on(evaluate(&policy, &state, &req, false));
            out.clear();
            encode_response(&d.action, &mut out);
            black_box(&out);
        })
    });
    group.finish();

    // SPF evaluation alone (viaspf through rpol's Lookup), for a policy with
    // include, mx and a mechanisms that ends in fail for this client.
    let mut zones = dns_server::DEFAULT_ZONES.to_vec();
    zones.push(("spftest.", include_str!("../tests/zones/spftest.zone")));
    let spf_server = rt.block_on(dns_server::TestDns::start(&zones));
    let resolver = rpol::dns::Resolver::new(&rpol::dns::DnsConfig {
        nameservers: vec![spf_server.addr],
        min_ttl: Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    let settings = rpol::spf::SpfSettings::default();
    let ip: std::net::IpAddr = "198.51.100.99".parse().unwrap();
    let spf_once = || {
        rt.block_on(rpol::spf::evaluate(
            &resolver,
            &settings,
            ip,
            rpol::spf::Identity::MailFrom,
            "someone@chain.spftest",
            "mail.good.example",
            false,
        ))
    };
    let first = spf_once();
    println!(
        "SPF someone@chain.spftest from {ip}: {} ({} queries)",
        first.result_name(),
        spf_server.query_count()
    );
    let mut group = c.benchmark_group("spf");
    group.throughput(Throughput::Elements(1));
    group.bench_function("SPF evaluation, warm DNS cache", |b| {
        b.iter(|| black_box(spf_once()))
    });
    group.bench_function(
        "SPF evaluation, cold DNS cache (loopback DNS server)",
        |b| {
            b.iter(|| {
                resolver.clear();
                black_box(spf_once())
            })
        },
    );
    group.finish();

    // A plain timed loop for the headline figures.
    let n = 200_000u32;
    let start = Instant::now();
    for _ in 0..n {
        black_box(rt.block_on(evaluate(&policy, &state, black_box(&request), false)));
    }
    let per = start.elapsed() / n;
    let after = state.resolver().stats();
    println!(
        "seed port-25 chain, warm cache: {:.2} us/request, {:.0} requests/s (one core); \
         DNS queries during the loop: {}, cache hits: {}, misses: {}",
        per.as_secs_f64() * 1e6,
        1.0 / per.as_secs_f64().max(f64::MIN_POSITIVE),
        server.query_count() - queries,
        after.hits - stats.hits,
        after.misses - stats.misses,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
