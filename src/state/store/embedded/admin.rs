//! `rpol store ...` on the embedded file: counts, listings, deletions and
//! the postgrey import, each a bounded read or write transaction (writes
//! of [`SWEEP_BATCH`] records at most, as the sweep's).

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::super::admin::{ClientRow, Import, Imported, RateRow, Stats, TripletRow};
use super::super::greylist::{self, TripletInfo};
use super::super::{Limits, StoreError};
use super::triplets::{CLIENTS, DETAILS, Indexes, PASSED, TRIPLETS, UNCONFIRMED};
use super::{Embedded, RATES, SWEEP_BATCH, backend, live_record};

impl Embedded {
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        self.read(|db| {
            let tx = db.begin_read().map_err(backend)?;
            let len = |n: Result<u64, redb::StorageError>| n.map_err(backend);
            Ok(Stats {
                triplets: len(tx.open_table(TRIPLETS).map_err(backend)?.len())?,
                unconfirmed: len(tx.open_table(UNCONFIRMED).map_err(backend)?.len())?,
                passed: len(tx.open_table(PASSED).map_err(backend)?.len())?,
                with_details: match tx.open_table(DETAILS) {
                    Ok(t) => len(t.len())?,
                    Err(_) => 0,
                },
                clients: len(tx.open_table(CLIENTS).map_err(backend)?.len())?,
                rate_records: len(tx.open_table(RATES).map_err(backend)?.len())?,
            })
        })
        .await
    }

    /// Every triplet with its details (none for one stored before them).
    pub async fn triplets(&self) -> Result<Vec<TripletRow>, StoreError> {
        self.read(|db| {
            let tx = db.begin_read().map_err(backend)?;
            let triplets = tx.open_table(TRIPLETS).map_err(backend)?;
            let unconfirmed = tx.open_table(UNCONFIRMED).map_err(backend)?;
            let details = tx.open_table(DETAILS).map_err(backend)?;
            let mut rows = Vec::new();
            for entry in triplets.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let (key, (first, last)) = (k.value(), v.value());
                let d = details.get(key).map_err(backend)?.map(|d| d.value().0);
                let info = details
                    .get(key)
                    .map_err(backend)?
                    .and_then(|d| TripletInfo::decode(d.value().1));
                rows.push(TripletRow {
                    key: hex(&key),
                    first,
                    last,
                    seen: d,
                    passed: unconfirmed.get((first, key)).map_err(backend)?.is_none(),
                    info,
                });
            }
            Ok(rows)
        })
        .await
    }

    pub async fn clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        self.read(|db| {
            let tx = db.begin_read().map_err(backend)?;
            let clients = tx.open_table(CLIENTS).map_err(backend)?;
            let mut rows = Vec::new();
            for entry in clients.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let (count, last) = v.value();
                rows.push(ClientRow {
                    address: k.value().to_string(),
                    count,
                    last,
                });
            }
            Ok(rows)
        })
        .await
    }

    pub async fn rates(&self, now: u64) -> Result<Vec<RateRow>, StoreError> {
        self.read(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let rates = tx.open_table(RATES).map_err(backend)?;
            let mut rows = Vec::new();
            for entry in rates.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let value = v.value();
                let expires = value
                    .split_first_chunk::<8>()
                    .map_or(0, |(e, _)| u64::from_be_bytes(*e));
                let record = live_record(value, now);
                rows.push(RateRow {
                    key: hex(&k.value()),
                    expires,
                    messages: record
                        .as_ref()
                        .map_or(0, |r| r.messages.iter().map(|n| u64::from(*n)).sum()),
                    recipients: record
                        .as_ref()
                        .map_or(0, |r| r.recipients.iter().map(|n| u64::from(*n)).sum()),
                    networks: record.as_ref().map_or(0, |r| r.networks.len() as u64),
                });
            }
            Ok(rows)
        })
        .await
    }

    /// Removes the triplets and rate records whose key starts with the hex
    /// `prefix`, or the client `address`; how many went.
    pub async fn delete(&self, key: String) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let gone = {
                let mut gone = 0;
                if let Some((lo, hi)) = hex_range(&key) {
                    let mut ix = Indexes::open(tx)?;
                    let keys = ix.keys_in(lo, hi)?;
                    for k in keys {
                        gone += u64::from(ix.evict(k)?);
                    }
                    let mut rates = tx.open_table(RATES).map_err(backend)?;
                    let keys: Vec<[u8; 32]> = rates
                        .range(lo..=hi)
                        .map_err(backend)?
                        .map(|e| e.map(|(k, _)| k.value()))
                        .collect::<Result<_, _>>()
                        .map_err(backend)?;
                    for k in keys {
                        gone += u64::from(rates.remove(k).map_err(backend)?.is_some());
                    }
                }
                let mut clients = tx.open_table(CLIENTS).map_err(backend)?;
                gone += u64::from(clients.remove(key.as_str()).map_err(backend)?.is_some());
                gone
            };
            Ok(gone)
        })
        .await
    }

    /// Removes the triplets and clients last seen before `cutoff`,
    /// [`SWEEP_BATCH`] a transaction; how many went.
    pub async fn delete_older_than(&self, cutoff: u64) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let n = self
                .write(move |tx| {
                    let n = {
                        let mut ix = Indexes::open(tx)?;
                        let old = ix.seen_before(cutoff, SWEEP_BATCH)?;
                        for k in &old {
                            ix.evict(*k)?;
                        }
                        let mut clients = tx.open_table(CLIENTS).map_err(backend)?;
                        let mut gone = Vec::new();
                        for entry in clients.iter().map_err(backend)? {
                            let (k, v) = entry.map_err(backend)?;
                            if v.value().1 < cutoff {
                                gone.push(k.value().to_string());
                                if gone.len() + old.len() >= SWEEP_BATCH {
                                    break;
                                }
                            }
                        }
                        for k in &gone {
                            clients.remove(k.as_str()).map_err(backend)?;
                        }
                        (old.len() + gone.len()) as u64
                    };
                    Ok(n)
                })
                .await?;
            removed += n;
            if n == 0 {
                return Ok(removed);
            }
        }
    }

    /// Writes imported triplets and clients, a batch a transaction; one
    /// rpol already holds is kept, and the budgets hold as for new ones
    /// (beyond them a record is not imported).
    pub async fn import(&self, batch: Vec<Import>) -> Result<Imported, StoreError> {
        let limits = self.limits;
        let mut total = Imported::default();
        let mut rest = batch;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(SWEEP_BATCH));
            let chunk = std::mem::replace(&mut rest, tail);
            let done = self.write(move |tx| import_tx(tx, &chunk, limits)).await?;
            total.add(&done);
        }
        Ok(total)
    }
}

fn import_tx(
    tx: &WriteTransaction,
    batch: &[Import],
    limits: Limits,
) -> Result<Imported, StoreError> {
    let mut done = Imported::default();
    {
        let mut ix = Indexes::open(tx)?;
        let mut clients = tx.open_table(CLIENTS).map_err(backend)?;
        for item in batch {
            match item {
                Import::Triplet {
                    key,
                    info,
                    cap_net,
                    first,
                    last,
                    pending,
                } => {
                    if ix.holds(key.0)? {
                        done.known += 1;
                        continue;
                    }
                    let held = ix.held_by(cap_net)?;
                    let (full, capped) = (
                        ix.len()? >= limits.triplets,
                        *pending && held >= limits.unconfirmed_per_network,
                    );
                    if full || capped {
                        done.no_room += 1;
                        continue;
                    }
                    let t = greylist::Triplet {
                        first: *first,
                        last: *last,
                    };
                    ix.put(key.0, t, cap_net, *pending)?;
                    if let Some(info) = info {
                        ix.put_details(key.0, info)?;
                    }
                    done.triplets += 1;
                }
                Import::Client {
                    address,
                    count,
                    last,
                } => {
                    if clients.get(address.as_str()).map_err(backend)?.is_some() {
                        done.known += 1;
                    } else if clients.len().map_err(backend)? >= limits.clients {
                        done.no_room += 1;
                    } else {
                        clients
                            .insert(address.as_str(), (*count, *last))
                            .map_err(backend)?;
                        done.clients += 1;
                    }
                }
            }
        }
    }
    Ok(done)
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The keys a hex prefix of 8 to 64 digits names, as an inclusive range.
fn hex_range(prefix: &str) -> Option<([u8; 32], [u8; 32])> {
    if !(8..=64).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut lo = [0u8; 32];
    let mut hi = [0xffu8; 32];
    for (i, pair) in prefix.as_bytes().chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok()?;
        if pair.len() == 2 {
            let b = u8::from_str_radix(digits, 16).ok()?;
            (lo[i], hi[i]) = (b, b);
        } else {
            let b = u8::from_str_radix(digits, 16).ok()? << 4;
            (lo[i], hi[i]) = (b, b | 0x0f);
        }
    }
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::hex_range;

    #[test]
    fn hex_prefixes_name_ranges() {
        let (lo, hi) = hex_range("0123abcd5").unwrap();
        assert_eq!(&lo[..5], &[0x01, 0x23, 0xab, 0xcd, 0x50]);
        assert_eq!(&hi[..5], &[0x01, 0x23, 0xab, 0xcd, 0x5f]);
        assert_eq!(hi[5], 0xff);
        assert_eq!(hex_range("0123"), None, "too short to be meant");
        assert_eq!(hex_range("203.0.113.9"), None);
    }
}
