//! The store's request path (greylisting, rate limits, the sweep) on an
//! arbitrary sequence of calls, against the embedded store with small
//! budgets, so every budget fills and every eviction path runs.
//!
//! Input: 4 bytes per call: what (greylist, rate check, rate settle, hold
//! or release, sweep), a client network (one of 4), a sender or key (one of 256), and
//! seconds to move the clock on (times 10). Checks besides "no panic":
//! greylisting never fails and never passes a triplet on its first sight
//! (auto-whitelisting is off); a rate call fails only for a new key when
//! the rate budget is full; no kind of record outgrows its budget.
//!
//! The body of the fuzz target of the same name, shared with the replay of
//! its regressions in tests/fuzz_regressions.rs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rpol::state::store::greylist::{GreylistParams, TripletKey, Verdict};
use rpol::state::store::rate::{Hold, MAX_RESERVATIONS, RateKey, RateParams};
use rpol::state::store::{Backend, Limits, Store, StoreError, StoreSettings};

/// Calls one input makes at most: enough to fill every budget many times.
const MAX_CALLS: usize = 2_000;

const LIMITS: Limits = Limits {
    triplets: 8,
    unconfirmed_per_network: 3,
    clients: 4,
    rate_records: 4,
};

const NETS: [&str; 4] = ["203.0.113.0", "198.51.100.0", "192.0.2.0", "2001:db8::"];

/// One input of the target.
pub fn run(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!(
        "rpol-fuzz-store-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("s.redb");
    let _ = std::fs::remove_file(&path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(calls(data, &path));
    let _ = std::fs::remove_file(&path);
}

async fn calls(data: &[u8], path: &std::path::Path) {
    let settings = StoreSettings {
        backend: Backend::Embedded {
            path: path.to_path_buf(),
        },
        timeout: Duration::from_secs(5),
        limits: LIMITS,
        ..StoreSettings::default()
    };
    let store = Store::open(&settings).expect("open");
    let mut now: u64 = 1_700_000_000;
    let mut seen = HashSet::new();
    // Rate keys counted, with when: live for a window after.
    let mut keys = HashMap::new();
    for call in data.chunks_exact(4).take(MAX_CALLS) {
        let [what, net, who, step] = [call[0], call[1], call[2], call[3]];
        now += u64::from(step) * 10;
        let net = NETS[usize::from(net) % NETS.len()];
        let p = GreylistParams {
            now,
            delay: 300,
            retry_window: 3_600,
            max_age: 86_400,
            auto_whitelist_clients: 0,
        };
        match what % 4 {
            0 => {
                let sender = format!("s{who}@x.example");
                let key = TripletKey::new(net, &sender, "r@y.example");
                let v = store.greylist(key, net, net, p).await;
                let first = seen.insert(key.0);
                match v {
                    Ok(Verdict::Passed { .. } | Verdict::Known) => {
                        assert!(!first, "a triplet passed at first sight")
                    }
                    Ok(_) => {}
                    Err(e) => panic!("greylist failed: {e}"),
                }
            }
            1 | 2 => {
                let rp = RateParams {
                    now,
                    window: 3_600,
                    messages: 5,
                    recipients: 0,
                    distinct_clients: 2,
                };
                let key = RateKey::new("l", "sender", &format!("k{who}"));
                // A transaction of a few per key, so holds meet again.
                let tag = format!("t{}", what / 4 % 4);
                let r = match (what % 4, what / 16 % 3) {
                    (1, _) => store.rate_check(key, net, &tag, rp).await.map(|_| false),
                    (_, 0) => store.rate_settle(key, net, 1, &tag, rp).await.map(|_| true),
                    (_, 1) => {
                        let hold = Hold::Rcpt(format!("r{step}"));
                        let c = store.rate_hold(key, net, &tag, hold, rp).await;
                        c.map(|c| {
                            let held = c.usage.held_messages;
                            assert!(held <= MAX_RESERVATIONS as u64, "{held} held");
                            c.exceeded.is_none()
                        })
                    }
                    _ => store.rate_release(key, &tag, rp).await.map(|()| false),
                };
                match r {
                    Ok(wrote) => {
                        if wrote {
                            keys.insert(key.0, now);
                        }
                    }
                    Err(StoreError::Full(_)) => {
                        let live = keys.get(&key.0).is_some_and(|t| now < t + 3_600);
                        assert!(!live, "a live record was refused");
                    }
                    Err(e) => panic!("rate call failed: {e}"),
                }
            }
            _ => {
                store.sweep(Some(p)).await.expect("sweep");
            }
        }
        let held = store.entries().await.expect("entries");
        assert!(
            held <= LIMITS.triplets + LIMITS.clients + LIMITS.rate_records,
            "{held} records"
        );
    }
}
