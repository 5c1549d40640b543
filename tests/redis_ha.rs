//! The Redis store as several MX hosts run it (issue 29 item 7): the
//! master a Sentinel names, through a failover while calls run, and TLS
//! with a test CA. Real redis-server processes on loopback
//! (support/redis_ha.rs); ignored unless asked, as every Redis test.

use crate::support::redis_ha;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rpol::common::unix_now;
use rpol::state::store::greylist::{GreylistParams, TripletKey, Verdict};
use rpol::state::store::{Backend, Store, StoreError, StoreSettings};

fn params(now: u64) -> GreylistParams {
    GreylistParams {
        now,
        delay: 300,
        retry_window: 86_400,
        max_age: 10 * 86_400,
        auto_whitelist_clients: 0,
    }
}

fn store(url: &str, tls_ca: Option<std::path::PathBuf>) -> Store {
    Store::open(&StoreSettings {
        backend: Backend::Redis { url: url.into() },
        tls_ca,
        ..StoreSettings::default()
    })
    .expect("store")
}

async fn gl(store: &Store, sender: &str, at: u64) -> Result<Verdict, StoreError> {
    let key = TripletKey::new("203.0.113.0", sender, "rcpt@example.com");
    store
        .greylist(key, "203.0.113.0", "203.0.113.9", params(at))
        .await
}

const NEW: Verdict = Verdict::Greylisted {
    missing: 300,
    first_seen: true,
};

/// Greylists `sender` at `t` and passes it at `t + 300`.
async fn pass(store: &Store, sender: &str, t: u64) {
    assert_eq!(gl(store, sender, t).await, Ok(NEW), "{sender}");
    let v = gl(store, sender, t + 300).await;
    assert!(matches!(v, Ok(Verdict::Passed { .. })), "{sender}: {v:?}");
}

/// Workers calling the store one call after another, each on new
/// triplets, until stopped; each returns whether each call succeeded.
fn workers(
    store: &Arc<Store>,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<bool>>> {
    (0..n)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = gl(&store, &format!("w{w}-{i}@x.example"), unix_now()).await;
                    got.push(r.is_ok());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                got
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server"]
async fn a_sentinel_failover_fails_at_most_the_calls_in_flight() {
    let ha = redis_ha::Sentinel::start();
    let store = Arc::new(store(&ha.url(), None));
    let t = unix_now();
    pass(&store, "before@x.example", t).await;
    ha.wait_replicated();
    let stop = Arc::new(AtomicBool::new(false));
    let running = workers(&store, 4, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let h = tokio::task::spawn_blocking({
        let port = ha.replica.port;
        let ha = std::sync::Mutex::new(ha);
        move || {
            ha.lock().unwrap().failover();
            assert_eq!(ha.lock().unwrap().master_port(), port);
            ha.into_inner().unwrap()
        }
    });
    let ha = h.await.unwrap();
    // Sentinel reconfigures the old master as a replica a few seconds on:
    // the calls keep running through that too.
    redis_ha::wait_until(Duration::from_secs(30), "the old master demoted", || {
        // A connection each time: Sentinel disconnects the demoted one's clients.
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query(&mut ha.master.connection())
            .unwrap_or_default();
        matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"slave")
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for w in running {
        let got = w.await.unwrap();
        assert!(got.len() > 10, "the worker ran: {}", got.len());
        // A failed call is followed by a good one: only the call in flight
        // when the master changed fails, the next finds the new master.
        assert!(
            !got.windows(2).any(|p| !p[0] && !p[1]),
            "two failures in a row: {got:?}"
        );
        assert!(got.last() == Some(&true), "{got:?}");
        failed += got.iter().filter(|ok| !**ok).count();
    }
    assert!(failed <= 4, "{failed} failed calls");
    assert_eq!(store.errors.load(Ordering::Relaxed), failed as u64);
    // The triplet seen before is known on the new master; counts resume.
    assert_eq!(
        gl(&store, "before@x.example", t + 400).await,
        Ok(Verdict::Known)
    );
    pass(&store, "after@x.example", unix_now()).await;
    let mut nc = ha.replica.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rpol:greylist:*")
        .query(&mut nc)
        .unwrap();
    assert!(keys.len() > 2, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server"]
async fn calls_resume_on_the_new_master_after_the_master_dies() {
    let mut ha = redis_ha::Sentinel::start();
    let store = store(&ha.url(), None);
    let t = unix_now();
    pass(&store, "before@x.example", t).await;
    ha.wait_replicated();
    ha.master.kill();
    // No master until Sentinel promotes the replica (down-after 1 s):
    // calls fail within the timeout meanwhile, then work with no restart.
    let start = Instant::now();
    let known = loop {
        let call = Instant::now();
        let v = gl(&store, "before@x.example", t + 400).await;
        assert!(
            call.elapsed() < Duration::from_secs(3),
            "{:?}",
            call.elapsed()
        );
        if v.is_ok() {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no new master: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(known, Ok(Verdict::Known));
    assert_eq!(ha.master_port(), ha.replica.port);
    pass(&store, "after@x.example", unix_now()).await;
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_store_over_tls_greylists() {
    let server = redis_ha::TlsServer::start();
    let store = store(&server.url(), Some(server.ca.clone()));
    pass(&store, "a@x.example", unix_now()).await;
    assert_eq!(store.errors.load(Ordering::Relaxed), 0);
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_server_certificate_from_another_ca_is_refused() {
    let server = redis_ha::TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let other = redis_ha::TestCa::new("other").write(dir.path());
    let store = store(&server.url(), Some(other));
    let e = gl(&store, "a@x.example", unix_now()).await.unwrap_err();
    let text = e.to_string();
    eprintln!("refused: {text}");
    assert!(
        text.contains("TLS: the server's certificate is refused") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert_eq!(store.errors.load(Ordering::Relaxed), 1);
    // Without tls_ca, the system's roots do not know the test CA either.
    let store = store_no_ca(&server.url());
    assert!(gl(&store, "a@x.example", unix_now()).await.is_err());
}

fn store_no_ca(url: &str) -> Store {
    store(url, None)
}
