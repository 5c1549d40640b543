//! Integration tests of rpol's DNS layer against the in-process test server
//! (tests/support/dns.rs, zones in tests/zones/). Every resolver here names
//! the loopback test server explicitly; nothing resolves through
//! /etc/resolv.conf.

use crate::support::dns as dns_server;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns_server::TestDns;
use rpol::dns::{Answer, DnsConfig, Mx, Outcome, RecordKind, Resolver};

/// Generous bound for "fails quickly": far above the configured timeouts,
/// far below anything that would look like a hang.
const SLOW: Duration = Duration::from_secs(5);

fn config(dns: &TestDns) -> DnsConfig {
    DnsConfig {
        nameservers: vec![dns.addr],
        timeout: Duration::from_secs(2),
        attempts: 1,
        min_ttl: Duration::ZERO,
        ..DnsConfig::default()
    }
}

async fn setup() -> (TestDns, Resolver) {
    let dns = TestDns::start_default().await;
    let resolver = Resolver::new(&config(&dns)).unwrap();
    (dns, resolver)
}

fn found(outcome: &Outcome) -> &Answer {
    match outcome {
        Outcome::Found(a) => a,
        other => panic!("expected records, got {other:?}"),
    }
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[tokio::test]
async fn found_a_and_aaaa() {
    let (_dns, r) = setup().await;
    let l = r.lookup("a-only.example", RecordKind::A).await;
    assert_eq!(&*l.name, "a-only.example");
    assert_eq!(l.kind, RecordKind::A);
    assert!(!l.from_cache);
    assert_eq!(found(&l.outcome), &Answer::A(vec![v4("203.0.113.20")]));

    let l = r.lookup("aaaa-only.example", RecordKind::Aaaa).await;
    let want: Ipv6Addr = "2001:db8::20".parse().unwrap();
    assert_eq!(found(&l.outcome), &Answer::Aaaa(vec![want]));
}

#[tokio::test]
async fn found_mx() {
    let (_dns, r) = setup().await;
    let l = r.lookup("good.example", RecordKind::Mx).await;
    assert_eq!(
        found(&l.outcome),
        &Answer::Mx(vec![Mx {
            preference: 10,
            exchange: "mail.good.example".into()
        }])
    );
    assert!(!found(&l.outcome).is_null_mx());
    assert_eq!(l.describe(), "MX good.example: 10 mail.good.example");

    let l = r.lookup("multi-mx.example", RecordKind::Mx).await;
    let Answer::Mx(mut mxs) = found(&l.outcome).clone() else {
        panic!("not MX")
    };
    mxs.sort_by_key(|m| m.preference);
    let hosts: Vec<_> = mxs
        .iter()
        .map(|m| (m.preference, m.exchange.as_str()))
        .collect();
    assert_eq!(
        hosts,
        [(10, "mx1.multi-mx.example"), (20, "mx2.multi-mx.example")]
    );
}

#[tokio::test]
async fn null_mx_detected() {
    let (_dns, r) = setup().await;
    let l = r.lookup("nullmx.example", RecordKind::Mx).await;
    let answer = found(&l.outcome);
    assert!(answer.is_null_mx(), "{answer:?}");
    assert_eq!(l.describe(), "MX nullmx.example: 0 .");
}

#[tokio::test]
async fn found_txt_one_entry_per_record() {
    let (_dns, r) = setup().await;
    let l = r.lookup("good.example", RecordKind::Txt).await;
    let Answer::Txt(mut txts) = found(&l.outcome).clone() else {
        panic!("not TXT")
    };
    txts.sort();
    assert_eq!(
        txts,
        vec![
            b"site-verification=rpol-test".to_vec(),
            // two character-strings, concatenated
            b"v=spf1 ip4:203.0.113.0/24 ip6:2001:db8::/32 -all".to_vec(),
        ]
    );
}

#[tokio::test]
async fn large_answer_over_tcp() {
    let (dns, r) = setup().await;
    let l = r.lookup("big.example", RecordKind::Txt).await;
    let Answer::Txt(txts) = found(&l.outcome) else {
        panic!("not TXT")
    };
    assert_eq!(txts.len(), 10);
    assert!(txts.iter().all(|t| t.len() == 203));
    // Truncated over UDP, then asked again over TCP.
    assert_eq!(dns.queries_for("big.example"), 2);
}

#[tokio::test]
async fn ptr_and_forward_confirmation() {
    let (_dns, r) = setup().await;
    // 203.0.113.10: PTR and A agree.
    let l = r.lookup_ptr(IpAddr::V4(v4("203.0.113.10"))).await;
    assert_eq!(&*l.name, "10.113.0.203.in-addr.arpa");
    assert_eq!(
        found(&l.outcome),
        &Answer::Ptr(vec!["mail.good.example".into()])
    );
    let a = r.lookup("mail.good.example", RecordKind::A).await;
    assert_eq!(found(&a.outcome), &Answer::A(vec![v4("203.0.113.10")]));

    // 203.0.113.11: PTR name's A points elsewhere.
    let l = r.lookup_ptr(IpAddr::V4(v4("203.0.113.11"))).await;
    assert_eq!(
        found(&l.outcome),
        &Answer::Ptr(vec!["mismatch.example".into()])
    );
    let a = r.lookup("mismatch.example", RecordKind::A).await;
    assert_eq!(found(&a.outcome), &Answer::A(vec![v4("198.51.100.20")]));

    // 203.0.113.12: no PTR at all.
    let l = r.lookup_ptr(IpAddr::V4(v4("203.0.113.12"))).await;
    assert_eq!(l.outcome, Outcome::NxDomain);

    // IPv6, nibble form.
    let l = r.lookup_ptr("2001:db8::10".parse().unwrap()).await;
    assert_eq!(
        found(&l.outcome),
        &Answer::Ptr(vec!["mail.good.example".into()])
    );
}

#[tokio::test]
async fn nxdomain_and_nodata_are_distinct() {
    let (_dns, r) = setup().await;
    let l = r.lookup("nx.example", RecordKind::A).await;
    assert_eq!(l.outcome, Outcome::NxDomain);
    assert_eq!(l.describe(), "A nx.example: NXDOMAIN");
    let l = r.lookup("mx-only.example", RecordKind::A).await;
    assert_eq!(l.outcome, Outcome::NoData);
    let l = r.lookup("a-only.example", RecordKind::Mx).await;
    assert_eq!(l.outcome, Outcome::NoData);
    let l = r.lookup("aaaa-only.example", RecordKind::A).await;
    assert_eq!(l.outcome, Outcome::NoData);
}

#[tokio::test]
async fn cname_is_followed() {
    let (_dns, r) = setup().await;
    let l = r.lookup("alias.example", RecordKind::A).await;
    assert_eq!(&*l.name, "alias.example");
    assert_eq!(found(&l.outcome), &Answer::A(vec![v4("203.0.113.10")]));
}

#[tokio::test]
async fn servfail_is_tempfail_and_not_cached() {
    let (dns, r) = setup().await;
    let l = r.lookup("servfail.example", RecordKind::A).await;
    assert_eq!(l.outcome, Outcome::TempFail("SERVFAIL".into()));
    let before = dns.queries_for("servfail.example");
    assert!(before >= 1);
    let l = r.lookup("servfail.example", RecordKind::A).await;
    assert!(!l.from_cache);
    assert!(matches!(l.outcome, Outcome::TempFail(_)));
    assert!(dns.queries_for("servfail.example") > before);
}

#[tokio::test]
async fn silent_server_is_tempfail_within_timeout() {
    let dns = TestDns::start_default().await;
    let cfg = DnsConfig {
        timeout: Duration::from_millis(300),
        attempts: 1,
        ..config(&dns)
    };
    let r = Resolver::new(&cfg).unwrap();
    let start = Instant::now();
    let l = r.lookup("timeout.example", RecordKind::A).await;
    let elapsed = start.elapsed();
    assert!(matches!(l.outcome, Outcome::TempFail(_)), "{:?}", l.outcome);
    assert!(elapsed < SLOW, "took {elapsed:?}");
    assert!(
        l.describe()
            .starts_with("A timeout.example: temporary failure (")
    );
}

#[tokio::test]
async fn unreachable_server_is_tempfail() {
    // A port nobody listens on: bind, note the port, close.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = DnsConfig {
        nameservers: vec![addr],
        timeout: Duration::from_millis(300),
        attempts: 1,
        ..DnsConfig::default()
    };
    let r = Resolver::new(&cfg).unwrap();
    let start = Instant::now();
    let l = r.lookup("good.example", RecordKind::A).await;
    assert!(matches!(l.outcome, Outcome::TempFail(_)), "{:?}", l.outcome);
    assert!(start.elapsed() < SLOW);
}

#[tokio::test]
async fn second_lookup_is_cached_without_a_query() {
    let (dns, r) = setup().await;
    let first = r.lookup("good.example", RecordKind::A).await;
    assert!(!first.from_cache);
    let count = dns.query_count();
    // Same name, other spelling: same cache entry.
    let second = r.lookup("GOOD.Example.", RecordKind::A).await;
    assert!(second.from_cache);
    assert_eq!(&*second.name, "good.example");
    assert_eq!(second.outcome, first.outcome);
    assert_eq!(dns.query_count(), count);
    assert!(second.describe().ends_with(" (cached)"));
    // Another type of the same name is another entry.
    let mx = r.lookup("good.example", RecordKind::Mx).await;
    assert!(!mx.from_cache);
    let s = r.stats();
    assert_eq!((s.hits, s.misses, s.coalesced, s.entries), (1, 2, 0, 2));
}

#[tokio::test]
async fn negative_answers_are_cached() {
    let (dns, r) = setup().await;
    assert_eq!(
        r.lookup("nx.example", RecordKind::A).await.outcome,
        Outcome::NxDomain
    );
    assert_eq!(
        r.lookup("mx-only.example", RecordKind::A).await.outcome,
        Outcome::NoData
    );
    let count = dns.query_count();
    let nx = r.lookup("nx.example", RecordKind::A).await;
    let nodata = r.lookup("mx-only.example", RecordKind::A).await;
    assert!(nx.from_cache && nodata.from_cache);
    assert_eq!(nx.outcome, Outcome::NxDomain);
    assert_eq!(nodata.outcome, Outcome::NoData);
    assert_eq!(dns.query_count(), count);
}

#[tokio::test]
async fn ttl_expiry_and_floor() {
    let dns = TestDns::start_default().await;
    let exact = Resolver::new(&config(&dns)).unwrap(); // min_ttl 0
    let floored = Resolver::new(&DnsConfig {
        min_ttl: Duration::from_secs(30),
        ..config(&dns)
    })
    .unwrap();
    for r in [&exact, &floored] {
        assert!(!r.lookup("ttl1.example", RecordKind::A).await.from_cache);
        assert!(r.lookup("ttl1.example", RecordKind::A).await.from_cache);
    }
    assert_eq!(dns.queries_for("ttl1.example"), 2);
    // The cache's clock is tokio's: move it past the 1 s TTL without
    // waiting (paused only while it moves, so queries keep real timeouts).
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(1500)).await;
    tokio::time::resume();
    // TTL 1 s has run out: queried again.
    let l = exact.lookup("ttl1.example", RecordKind::A).await;
    assert!(!l.from_cache);
    assert_eq!(found(&l.outcome), &Answer::A(vec![v4("203.0.113.30")]));
    // The floor keeps it.
    assert!(
        floored
            .lookup("ttl1.example", RecordKind::A)
            .await
            .from_cache
    );
    assert_eq!(dns.queries_for("ttl1.example"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_share_one_query() {
    let (dns, r) = setup().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let r = r.clone();
        tasks.spawn(async move { r.lookup("a-only.example", RecordKind::A).await });
    }
    while let Some(l) = tasks.join_next().await {
        assert_eq!(
            found(&l.unwrap().outcome),
            &Answer::A(vec![v4("203.0.113.20")])
        );
    }
    assert_eq!(dns.queries_for("a-only.example"), 1);
    let s = r.stats();
    assert_eq!(s.misses, 1);
    assert_eq!(s.hits + s.coalesced, 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_distinct_names() {
    let (dns, r) = setup().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let r = r.clone();
        tasks.spawn(async move { r.lookup(&format!("nx{i}.example"), RecordKind::A).await });
    }
    while let Some(l) = tasks.join_next().await {
        let l = l.unwrap();
        assert_eq!(l.outcome, Outcome::NxDomain, "{}", l.describe());
    }
    assert_eq!(dns.query_count(), 200);
    assert_eq!(r.stats().entries, 200);
}

#[tokio::test]
async fn cancelled_leader_does_not_strand_followers() {
    let dns = TestDns::start_default().await;
    let r = Resolver::new(&DnsConfig {
        timeout: Duration::from_millis(300),
        ..config(&dns)
    })
    .unwrap();
    let r1 = r.clone();
    let leader = tokio::spawn(async move { r1.lookup("timeout.example", RecordKind::A).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r2 = r.clone();
    let follower = tokio::spawn(async move { r2.lookup("timeout.example", RecordKind::A).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    leader.abort();
    let start = Instant::now();
    let l = tokio::time::timeout(SLOW, follower)
        .await
        .expect("follower finished")
        .unwrap();
    assert!(matches!(l.outcome, Outcome::TempFail(_)), "{:?}", l.outcome);
    assert!(start.elapsed() < SLOW);
    let s = r.stats();
    assert_eq!((s.misses, s.coalesced), (1, 1));
}

#[tokio::test]
async fn lru_bound_is_respected() {
    let dns = TestDns::start_default().await;
    let r = Resolver::new(&DnsConfig {
        cache_size: 3,
        ..config(&dns)
    })
    .unwrap();
    for h in ["h1", "h2", "h3", "h4", "h5"] {
        let l = r.lookup(&format!("{h}.example"), RecordKind::A).await;
        assert!(matches!(l.outcome, Outcome::Found(_)));
    }
    assert_eq!(r.stats().entries, 3);
    assert!(r.lookup("h5.example", RecordKind::A).await.from_cache);
    assert!(!r.lookup("h1.example", RecordKind::A).await.from_cache);
    assert_eq!(dns.queries_for("h1.example"), 2);
    assert_eq!(r.stats().entries, 3);
}

#[tokio::test]
async fn clear_drops_entries() {
    let (dns, r) = setup().await;
    r.lookup("good.example", RecordKind::A).await;
    assert_eq!(r.stats().entries, 1);
    r.clear();
    assert_eq!(r.stats().entries, 0);
    assert!(!r.lookup("good.example", RecordKind::A).await.from_cache);
    assert_eq!(dns.queries_for("good.example"), 2);
}

#[tokio::test]
async fn invalid_name_needs_no_query() {
    let (dns, r) = setup().await;
    let long = "a".repeat(64) + ".example";
    let l = r.lookup(&long, RecordKind::A).await;
    assert_eq!(l.outcome, Outcome::NxDomain);
    assert_eq!(dns.query_count(), 0);
}

#[tokio::test]
async fn found_answers_are_shared_not_copied() {
    let (_dns, r) = setup().await;
    let a = r.lookup("good.example", RecordKind::A).await;
    let b = r.lookup("good.example", RecordKind::A).await;
    match (&a.outcome, &b.outcome) {
        (Outcome::Found(x), Outcome::Found(y)) => assert!(Arc::ptr_eq(x, y)),
        other => panic!("{other:?}"),
    }
}

/// A prefetch's answer, read by the first lookup after it arrived, is
/// that lookup's own query (a miss, not from the cache), as it would have
/// been without the prefetch; the next lookup is a hit. Nothing is asked
/// twice.
#[tokio::test]
async fn a_prefetched_answer_is_the_first_readers_query() {
    let (dns, r) = setup().await;
    assert!(r.prefetch("a-only.example", RecordKind::A));
    let deadline = Instant::now() + SLOW;
    while r.cached_ttl("a-only.example", RecordKind::A).is_none() {
        assert!(Instant::now() < deadline, "the prefetch never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!r.prefetch("a-only.example", RecordKind::A), "cached");
    assert_eq!(r.stats().misses, 0, "a prefetch counts nothing");
    let first = r.lookup("a-only.example", RecordKind::A).await;
    assert!(!first.from_cache);
    assert_eq!(found(&first.outcome), &Answer::A(vec![v4("203.0.113.20")]));
    let again = r.lookup("a-only.example", RecordKind::A).await;
    assert!(again.from_cache);
    let s = r.stats();
    assert_eq!((s.misses, s.hits, s.coalesced), (1, 1, 0));
    assert_eq!(dns.query_count(), 1);
}
