//! The greylisting records of the embedded store: the triplets with their
//! indexes (unconfirmed by first seen, overall and per network; passed by
//! last seen), the clients counted for auto-whitelisting, and the write
//! transactions and sweeps over them.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::super::greylist::{
    self, Client, GreylistParams, NotStored, Triplet, TripletInfo, TripletKey, Verdict,
};
use super::super::{Limits, StoreError};
use super::{SWEEP_BATCH, backend};

/// Triplet digest -> (first seen, last seen).
pub(super) const TRIPLETS: TableDefinition<[u8; 32], (u64, u64)> =
    TableDefinition::new("greylist_triplets");
/// (first seen, triplet digest) -> client network, for each triplet that
/// never passed: the oldest first.
pub(super) const UNCONFIRMED: TableDefinition<(u64, [u8; 32]), &str> =
    TableDefinition::new("greylist_unconfirmed");
/// Client network -> its unconfirmed triplets.
pub(super) const NETWORKS: TableDefinition<&str, u64> = TableDefinition::new("greylist_networks");
/// (client network, first seen, triplet digest), for each unconfirmed
/// triplet: a network at its cap evicts its own oldest.
pub(super) const BY_NETWORK: TableDefinition<(&str, u64, [u8; 32]), ()> =
    TableDefinition::new("greylist_unconfirmed_by_network");
/// (last seen, triplet digest), for each passed triplet: with nothing
/// unconfirmed left, a full store evicts the least recently seen.
pub(super) const PASSED: TableDefinition<(u64, [u8; 32]), ()> =
    TableDefinition::new("greylist_passed");
/// Triplet digest -> (requests seen since its first seen, its
/// [`TripletInfo::encode`]d details), for the reports; at most
/// [`greylist::MAX_DETAILS`] bytes. A triplet stored before this table
/// (or by a call without details) has none until it is seen again.
pub(super) const DETAILS: TableDefinition<[u8; 32], (u64, &str)> =
    TableDefinition::new("greylist_details");
/// Client address -> (passes counted, last counted).
pub(super) const CLIENTS: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("greylist_clients");

/// postgrey's default max_age, for a sweep without `[greylist]`.
pub(super) const DEFAULT_MAX_AGE: u64 = 35 * 86_400;

/// The triplets' indexes, open in one write transaction.
pub(super) struct Indexes<'t> {
    triplets: redb::Table<'t, [u8; 32], (u64, u64)>,
    unconfirmed: redb::Table<'t, (u64, [u8; 32]), &'static str>,
    networks: redb::Table<'t, &'static str, u64>,
    by_network: redb::Table<'t, (&'static str, u64, [u8; 32]), ()>,
    passed: redb::Table<'t, (u64, [u8; 32]), ()>,
    details: redb::Table<'t, [u8; 32], (u64, &'static str)>,
}

impl<'t> Indexes<'t> {
    pub(super) fn open(tx: &'t redb::WriteTransaction) -> Result<Indexes<'t>, StoreError> {
        Ok(Indexes {
            triplets: tx.open_table(TRIPLETS).map_err(backend)?,
            unconfirmed: tx.open_table(UNCONFIRMED).map_err(backend)?,
            networks: tx.open_table(NETWORKS).map_err(backend)?,
            by_network: tx.open_table(BY_NETWORK).map_err(backend)?,
            passed: tx.open_table(PASSED).map_err(backend)?,
            details: tx.open_table(DETAILS).map_err(backend)?,
        })
    }

    /// Adds `delta` to a network's count of unconfirmed triplets.
    fn add_network(&mut self, net: &str, delta: i64) -> Result<(), StoreError> {
        let n = self
            .networks
            .get(net)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        match n.saturating_add_signed(delta) {
            0 => self.networks.remove(net).map_err(backend).map(drop),
            n => self.networks.insert(net, n).map_err(backend).map(drop),
        }
    }

    /// Removes a triplet's index entries (unconfirmed or passed).
    fn unindex(&mut self, key: [u8; 32], old: Triplet) -> Result<(), StoreError> {
        self.passed.remove((old.last, key)).map_err(backend)?;
        let net = self
            .unconfirmed
            .remove((old.first, key))
            .map_err(backend)?
            .map(|v| v.value().to_string());
        if let Some(net) = net {
            self.by_network
                .remove((net.as_str(), old.first, key))
                .map_err(backend)?;
            self.add_network(&net, -1)?;
        }
        Ok(())
    }

    /// Removes a triplet, its index entries and its details; whether it
    /// was there.
    pub(super) fn evict(&mut self, key: [u8; 32]) -> Result<bool, StoreError> {
        self.details.remove(key).map_err(backend)?;
        let old = self.triplets.remove(key).map_err(backend)?.map(|v| {
            let (first, last) = v.value();
            Triplet { first, last }
        });
        match old {
            Some(old) => self.unindex(key, old).map(|()| true),
            None => Ok(false),
        }
    }

    /// Unconfirmed triplets `net` holds.
    pub(super) fn held_by(&self, net: &str) -> Result<u64, StoreError> {
        Ok(self
            .networks
            .get(net)
            .map_err(backend)?
            .map_or(0, |v| v.value()))
    }

    /// Whether a triplet is stored.
    pub(super) fn holds(&self, key: [u8; 32]) -> Result<bool, StoreError> {
        Ok(self.triplets.get(key).map_err(backend)?.is_some())
    }

    /// Triplets stored.
    pub(super) fn len(&self) -> Result<u64, StoreError> {
        self.triplets.len().map_err(backend)
    }

    /// The triplet keys from `lo` to `hi`.
    pub(super) fn keys_in(&self, lo: [u8; 32], hi: [u8; 32]) -> Result<Vec<[u8; 32]>, StoreError> {
        self.triplets
            .range(lo..=hi)
            .map_err(backend)?
            .map(|e| e.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    /// Up to `n` triplets last seen before `cutoff`.
    pub(super) fn seen_before(&self, cutoff: u64, n: usize) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut old = Vec::new();
        for entry in self.triplets.iter().map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            if v.value().1 < cutoff {
                old.push(k.value());
                if old.len() >= n {
                    break;
                }
            }
        }
        Ok(old)
    }

    /// Writes an imported triplet's details, seen once.
    pub(super) fn put_details(
        &mut self,
        key: [u8; 32],
        info: &TripletInfo,
    ) -> Result<(), StoreError> {
        self.details
            .insert(key, (1, info.encode().as_str()))
            .map_err(backend)
            .map(drop)
    }

    /// Writes a triplet's details: `info` if given (else the stored
    /// ones), seen once more, or once if the record started over.
    fn note(
        &mut self,
        key: [u8; 32],
        info: Option<&TripletInfo>,
        restarted: bool,
    ) -> Result<(), StoreError> {
        let old = self
            .details
            .get(key)
            .map_err(backend)?
            .map(|v| (v.value().0, v.value().1.to_string()));
        let seen = match &old {
            Some((n, _)) if !restarted => n.saturating_add(1),
            _ => 1,
        };
        let text = match (info, old) {
            (Some(info), _) => info.encode(),
            (None, Some((_, text))) => text,
            (None, None) => return Ok(()),
        };
        self.details
            .insert(key, (seen, text.as_str()))
            .map_err(backend)
            .map(drop)
    }

    /// Writes a triplet with its index entry: unconfirmed (of `net`) while
    /// `pending`, else passed.
    pub(super) fn put(
        &mut self,
        key: [u8; 32],
        t: Triplet,
        net: &str,
        pending: bool,
    ) -> Result<(), StoreError> {
        if pending {
            self.unconfirmed
                .insert((t.first, key), net)
                .map_err(backend)?;
            self.by_network
                .insert((net, t.first, key), ())
                .map_err(backend)?;
            self.add_network(net, 1)?;
        } else {
            self.passed.insert((t.last, key), ()).map_err(backend)?;
        }
        self.triplets
            .insert(key, (t.first, t.last))
            .map_err(backend)
            .map(drop)
    }

    /// Makes room for a new unconfirmed triplet of `net` at its cap: its
    /// oldest unconfirmed one goes. False when none is indexed (a file
    /// from before this index).
    fn evict_oldest_of(&mut self, net: &str) -> Result<bool, StoreError> {
        let oldest = self
            .by_network
            .range((net, 0, [0; 32])..=(net, u64::MAX, [0xff; 32]))
            .map_err(backend)?
            .next()
            .transpose()
            .map_err(backend)?
            .map(|(k, _)| k.value().2);
        match oldest {
            Some(key) => self.evict(key),
            None => Ok(false),
        }
    }

    /// Makes room in a full store: the oldest unconfirmed triplet goes,
    /// else the least recently seen passed one (one sender waits once
    /// more, where refusing would defer every new sender). False when
    /// neither index holds one.
    fn evict_for_room(&mut self) -> Result<bool, StoreError> {
        let oldest = self
            .unconfirmed
            .first()
            .map_err(backend)?
            .map(|(k, _)| k.value().1);
        let oldest = match oldest {
            Some(key) => Some(key),
            None => self
                .passed
                .first()
                .map_err(backend)?
                .map(|(k, _)| k.value().1),
        };
        match oldest {
            Some(key) => self.evict(key),
            None => Ok(false),
        }
    }
}

/// Fills the per-network and passed indexes of a file written before
/// they existed (every triplet is in one of the unconfirmed and passed
/// indexes, so both empty beside triplets means an older file). Once, at
/// start, in the opening transaction.
pub(super) fn build_indexes(ix: &mut Indexes) -> Result<(), StoreError> {
    if ix.triplets.is_empty().map_err(backend)?
        || !ix.by_network.is_empty().map_err(backend)?
        || !ix.passed.is_empty().map_err(backend)?
    {
        return Ok(());
    }
    for entry in ix.unconfirmed.iter().map_err(backend)? {
        let (k, net) = entry.map_err(backend)?;
        let (first, key) = k.value();
        ix.by_network
            .insert((net.value(), first, key), ())
            .map_err(backend)?;
    }
    for entry in ix.triplets.iter().map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let (key, (first, last)) = (k.value(), v.value());
        if ix.unconfirmed.get((first, key)).map_err(backend)?.is_none() {
            ix.passed.insert((last, key), ()).map_err(backend)?;
        }
    }
    Ok(())
}

/// One write transaction: read both records, decide, make room for a new
/// triplet within the budgets, write back.
pub(super) fn greylist_tx(
    tx: &WriteTransaction,
    key: TripletKey,
    info: Option<&TripletInfo>,
    net: &str,
    client: &str,
    p: &GreylistParams,
    limits: Limits,
) -> Result<Verdict, StoreError> {
    let verdict = {
        let mut ix = Indexes::open(tx)?;
        let mut clients = tx.open_table(CLIENTS).map_err(backend)?;
        let old_t = ix
            .triplets
            .get(key.0)
            .map_err(backend)?
            .map(|v| v.value())
            .map(|(first, last)| Triplet { first, last });
        let old_c = clients
            .get(client)
            .map_err(backend)?
            .map(|v| v.value())
            .map(|(count, last)| Client { count, last });
        let (mut verdict, mut writes) = greylist::decide(old_t, old_c, p);
        let pending = matches!(verdict, Verdict::Greylisted { .. });
        if let (Some(_), None) = (writes.triplet, old_t) {
            let held_by_net = ix
                .networks
                .get(net)
                .map_err(backend)?
                .map_or(0, |v| v.value());
            let mut not_stored = None;
            if pending && held_by_net >= limits.unconfirmed_per_network {
                if !ix.evict_oldest_of(net)? {
                    not_stored = Some(NotStored::NetworkCap);
                }
            } else if ix.triplets.len().map_err(backend)? >= limits.triplets
                && !ix.evict_for_room()?
            {
                not_stored = Some(NotStored::Full);
            }
            if let Some(why) = not_stored {
                writes.triplet = None;
                if let Verdict::Greylisted { missing, .. } = verdict {
                    verdict = Verdict::NotStored { missing, why };
                }
            }
        }
        if let Some(t) = writes.triplet {
            if let Some(old) = old_t {
                ix.unindex(key.0, old)?;
            }
            ix.put(key.0, t, net, pending)?;
            ix.note(key.0, info, old_t.is_none_or(|o| o.first != t.first))?;
        }
        if writes.client.is_some()
            && old_c.is_none()
            && clients.len().map_err(backend)? >= limits.clients
        {
            // Not counted: the client waits for auto-whitelisting.
            writes.client = None;
            if let Verdict::Passed { delayed, .. } = verdict {
                verdict = Verdict::Passed {
                    delayed,
                    whitelisted_now: false,
                };
            }
        }
        if let Some(c) = writes.client {
            clients.insert(client, (c.count, c.last)).map_err(backend)?;
        }
        verdict
    };
    Ok(verdict)
}

/// One sweep transaction over the triplets after `after`: removes those
/// postgrey's maintenance removes (without greylist settings, those unseen
/// beyond its default max_age), with their index entries. Returns how many
/// went, and where to go on (`None`: done).
pub(super) fn sweep_triplets(
    tx: &WriteTransaction,
    after: Option<[u8; 32]>,
    now: u64,
    p: Option<GreylistParams>,
) -> Result<(u64, Option<[u8; 32]>), StoreError> {
    let (delay, retry_window, max_age) = match p {
        Some(p) => (p.delay, p.retry_window, p.max_age),
        None => (0, u64::MAX, DEFAULT_MAX_AGE),
    };
    let (gone, next) = {
        let mut ix = Indexes::open(tx)?;
        let mut gone = Vec::new();
        let mut last = None;
        let mut seen = 0;
        let range = match after {
            Some(k) => ix
                .triplets
                .range::<[u8; 32]>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => ix.triplets.range::<[u8; 32]>(..),
        }
        .map_err(backend)?;
        for entry in range.take(SWEEP_BATCH) {
            let (k, v) = entry.map_err(backend)?;
            let (first, last_seen) = v.value();
            let t = Triplet {
                first,
                last: last_seen,
            };
            seen += 1;
            last = Some(k.value());
            if greylist::triplet_expired(&t, now, delay, retry_window, max_age) {
                gone.push(k.value());
            }
        }
        for k in &gone {
            ix.evict(*k)?;
        }
        (gone.len() as u64, last.filter(|_| seen == SWEEP_BATCH))
    };
    Ok((gone, next))
}

/// One sweep transaction over the clients after `after`: removes those
/// not counted within max_age.
pub(super) fn sweep_clients(
    tx: &WriteTransaction,
    after: Option<&str>,
    now: u64,
    max_age: u64,
) -> Result<(u64, Option<String>), StoreError> {
    let (gone, next) = {
        let mut clients = tx.open_table(CLIENTS).map_err(backend)?;
        let mut gone = Vec::new();
        let mut last = None;
        let mut seen = 0;
        let range = match after {
            Some(k) => {
                clients.range::<&str>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
            }
            None => clients.range::<&str>(..),
        }
        .map_err(backend)?;
        for entry in range.take(SWEEP_BATCH) {
            let (k, v) = entry.map_err(backend)?;
            seen += 1;
            last = Some(k.value().to_string());
            if now.saturating_sub(v.value().1) > max_age {
                gone.push(k.value().to_string());
            }
        }
        for k in &gone {
            clients.remove(k.as_str()).map_err(backend)?;
        }
        (gone.len() as u64, last.filter(|_| seen == SWEEP_BATCH))
    };
    Ok((gone, next))
}
