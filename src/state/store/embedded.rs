//! The embedded backend: one redb file. redb is pure Rust (no C toolchain,
//! unlike SQLite through rusqlite), ACID with one writer, and crash-safe by
//! copy-on-write; rpol needs key-value records, not SQL.
//!
//! Calls run on tokio's blocking pool. Updates commit with
//! `Durability::Eventual`: written to the file at once (a crash of rpol
//! loses nothing) but not fsynced, so a power loss may lose the last
//! seconds of greylisting state; that costs a retry at worst, where an
//! fsync per RCPT would cost throughput. The sweep commits with an fsync.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::StoreError;
use super::greylist::{self, Client, GreylistParams, Triplet, TripletKey, Verdict};
use super::rate::{self, Check, Counted, RateKey, RateParams, Record};

/// Triplet digest -> (first seen, last seen).
const TRIPLETS: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("greylist_triplets");
/// Client address -> (passes counted, last counted).
const CLIENTS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("greylist_clients");
/// Rate-limit key digest -> expiry (8 bytes, big-endian) + [`Record::encode`].
const RATES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("rate_limits");

pub struct Embedded {
    db: Arc<Database>,
    max_entries: u64,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl Embedded {
    /// Opens (or creates) the file and its tables.
    pub fn open(path: &Path, max_entries: u64) -> Result<Embedded, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(TRIPLETS).map_err(backend)?;
        tx.open_table(CLIENTS).map_err(backend)?;
        tx.open_table(RATES).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Embedded {
            db: Arc::new(db),
            max_entries,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("store task: {e}")))?
    }

    pub async fn greylist(
        &self,
        key: TripletKey,
        client: &str,
        p: GreylistParams,
    ) -> Result<Verdict, StoreError> {
        let client = client.to_string();
        let max = self.max_entries;
        self.blocking(move |db| greylist_tx(db, key, &client, &p, max))
            .await
    }

    pub async fn sweep(&self, p: Option<GreylistParams>) -> Result<u64, StoreError> {
        self.blocking(move |db| sweep_tx(db, p)).await
    }

    pub async fn entries(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(TRIPLETS).map_err(backend)?.len();
            let c = tx.open_table(CLIENTS).map_err(backend)?.len();
            let r = tx.open_table(RATES).map_err(backend)?.len();
            Ok(t.map_err(backend)? + c.map_err(backend)? + r.map_err(backend)?)
        })
        .await
    }
}

/// One write transaction: read both records, decide, write back.
fn greylist_tx(
    db: &Database,
    key: TripletKey,
    client: &str,
    p: &GreylistParams,
    max_entries: u64,
) -> Result<Verdict, StoreError> {
    let mut tx = db.begin_write().map_err(backend)?;
    tx.set_durability(Durability::Eventual);
    let verdict = {
        let mut triplets = tx.open_table(TRIPLETS).map_err(backend)?;
        let mut clients = tx.open_table(CLIENTS).map_err(backend)?;
        let old_t = triplets
            .get(key.0)
            .map_err(backend)?
            .map(|v| v.value())
            .map(|(first, last)| Triplet { first, last });
        let old_c = clients
            .get(client)
            .map_err(backend)?
            .map(|v| v.value())
            .map(|(count, last)| Client { count, last });
        let (verdict, writes) = greylist::decide(old_t, old_c, p);
        let new_records = u64::from(writes.triplet.is_some() && old_t.is_none())
            + u64::from(writes.client.is_some() && old_c.is_none());
        if new_records > 0 {
            let held = triplets.len().map_err(backend)? + clients.len().map_err(backend)?;
            if held + new_records > max_entries {
                return Err(StoreError::Full(max_entries));
            }
        }
        if let Some(t) = writes.triplet {
            triplets.insert(key.0, (t.first, t.last)).map_err(backend)?;
        }
        if let Some(c) = writes.client {
            clients.insert(client, (c.count, c.last)).map_err(backend)?;
        }
        verdict
    };
    tx.commit().map_err(backend)?;
    Ok(verdict)
}

/// Removes what postgrey's maintenance removes; without greylist settings
/// (no `[greylist]`), records older than postgrey's default max_age.
fn sweep_tx(db: &Database, p: Option<GreylistParams>) -> Result<u64, StoreError> {
    let now = super::unix_now();
    let (delay, retry_window, max_age) = match p {
        Some(p) => (p.delay, p.retry_window, p.max_age),
        None => (0, u64::MAX, 35 * 86_400),
    };
    let tx = db.begin_write().map_err(backend)?;
    let mut removed = 0;
    {
        let mut triplets = tx.open_table(TRIPLETS).map_err(backend)?;
        triplets
            .retain(|_, (first, last)| {
                let gone = greylist::triplet_expired(
                    &Triplet { first, last },
                    now,
                    delay,
                    retry_window,
                    max_age,
                );
                removed += u64::from(gone);
                !gone
            })
            .map_err(backend)?;
        let mut clients = tx.open_table(CLIENTS).map_err(backend)?;
        clients
            .retain(|_, (_, last)| {
                let gone = now.saturating_sub(last) > max_age;
                removed += u64::from(gone);
                !gone
            })
            .map_err(backend)?;
        removed += sweep_rates(&tx, now)?;
    }
    tx.commit().map_err(backend)?;
    Ok(removed)
}

impl Embedded {
    pub async fn rate_check(
        &self,
        key: RateKey,
        network: String,
        p: RateParams,
    ) -> Result<Check, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(RATES).map_err(backend)?;
            let record = table
                .get(key.0)
                .map_err(backend)?
                .and_then(|v| live_record(v.value(), p.now));
            Ok(rate::check(record, &p, &network))
        })
        .await
    }

    pub async fn rate_count(
        &self,
        key: RateKey,
        network: String,
        recipients: u32,
        tag: String,
        p: RateParams,
    ) -> Result<Counted, StoreError> {
        let max = self.max_entries;
        self.blocking(move |db| rate_count_tx(db, key, &network, recipients, &tag, &p, max))
            .await
    }
}

/// A stored rate record, unless it expired (the sweep has not run yet) or
/// cannot be read (it starts over).
fn live_record(value: &[u8], now: u64) -> Option<Record> {
    let (expires, record) = value.split_first_chunk::<8>()?;
    (u64::from_be_bytes(*expires) > now)
        .then(|| Record::decode(record))
        .flatten()
}

/// One write transaction: read the record, count, write it back with its
/// expiry (when its newest count leaves the window).
fn rate_count_tx(
    db: &Database,
    key: RateKey,
    network: &str,
    recipients: u32,
    tag: &str,
    p: &RateParams,
    max_entries: u64,
) -> Result<Counted, StoreError> {
    let mut tx = db.begin_write().map_err(backend)?;
    tx.set_durability(Durability::Eventual);
    let counted = {
        let mut rates = tx.open_table(RATES).map_err(backend)?;
        let stored = rates
            .get(key.0)
            .map_err(backend)?
            .map(|v| v.value().to_vec());
        let old = stored.as_deref().and_then(|v| live_record(v, p.now));
        let (counted, write) = rate::count(old, p, network, recipients, tag);
        if let Some(record) = write {
            if stored.is_none() {
                let held = tx
                    .open_table(TRIPLETS)
                    .map_err(backend)?
                    .len()
                    .map_err(backend)?
                    + tx.open_table(CLIENTS)
                        .map_err(backend)?
                        .len()
                        .map_err(backend)?
                    + rates.len().map_err(backend)?;
                if held >= max_entries {
                    return Err(StoreError::Full(max_entries));
                }
            }
            let mut value = (p.now + p.span()).to_be_bytes().to_vec();
            value.extend_from_slice(&record.encode());
            rates.insert(key.0, value.as_slice()).map_err(backend)?;
        }
        counted
    };
    tx.commit().map_err(backend)?;
    Ok(counted)
}

/// Drops rate records whose window is over.
fn sweep_rates(tx: &redb::WriteTransaction, now: u64) -> Result<u64, StoreError> {
    let mut removed = 0;
    let mut rates = tx.open_table(RATES).map_err(backend)?;
    rates
        .retain(|_, v| {
            let gone = live_record(v, now).is_none();
            removed += u64::from(gone);
            !gone
        })
        .map_err(backend)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(now: u64) -> GreylistParams {
        GreylistParams {
            now,
            delay: 300,
            retry_window: 86_400,
            max_age: 10 * 86_400,
            auto_whitelist_clients: 5,
        }
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let key = TripletKey::new("203.0.113.0", "a@x.example", "b@y.example");
        let now = super::super::unix_now();
        {
            let s = Embedded::open(&path, 100).unwrap();
            let v = s.greylist(key, "203.0.113.5", params(now)).await.unwrap();
            assert!(matches!(
                v,
                Verdict::Greylisted {
                    first_seen: true,
                    ..
                }
            ));
        }
        let s = Embedded::open(&path, 100).unwrap();
        let v = s.greylist(key, "203.0.113.5", params(now + 300)).await;
        assert!(
            matches!(v, Ok(Verdict::Passed { delayed: 300, .. })),
            "{v:?}"
        );
        assert_eq!(s.entries().await, Ok(2));
    }

    #[tokio::test]
    async fn rate_records_expire_with_their_window_and_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(&dir.path().join("s.redb"), 100).unwrap();
        let now = super::super::unix_now();
        let p = |now| RateParams {
            now,
            window: 3600,
            messages: 1,
            recipients: 0,
            distinct_clients: 0,
        };
        let key = RateKey::new("l", "sender", "a@x.example");
        let net = || "203.0.113.0/24".to_string();
        s.rate_count(key, net(), 1, String::new(), p(now - 3601))
            .await
            .unwrap();
        // Expired: read as empty before the sweep, gone after it.
        let c = s.rate_check(key, net(), p(now)).await.unwrap();
        assert_eq!((c.exceeded, c.usage.messages), (None, 0));
        assert_eq!(s.sweep(None).await, Ok(1));
        s.rate_count(key, net(), 1, String::new(), p(now))
            .await
            .unwrap();
        assert_eq!(s.sweep(None).await, Ok(0));
        let c = s.rate_check(key, net(), p(now)).await.unwrap();
        assert_eq!(c.exceeded, Some(rate::Exceeded::Messages));
    }

    #[tokio::test]
    async fn full_refuses_new_triplets_until_a_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(&dir.path().join("s.redb"), 3).unwrap();
        let now = super::super::unix_now();
        for n in 0..3 {
            let key = TripletKey::new("203.0.113.0", &format!("{n}@x.example"), "b@y.example");
            s.greylist(key, "203.0.113.5", params(now - 2 * 86_400))
                .await
                .unwrap();
        }
        let key = TripletKey::new("203.0.113.0", "new@x.example", "b@y.example");
        assert_eq!(
            s.greylist(key, "203.0.113.5", params(now)).await,
            Err(StoreError::Full(3))
        );
        // Never passed and idle beyond retry_window: swept.
        assert_eq!(s.sweep(Some(params(now))).await, Ok(3));
        assert!(s.greylist(key, "203.0.113.5", params(now)).await.is_ok());
    }
}
