//! What `rpol store ...` reads and changes, on either backend: counts,
//! listings of triplets (postgreyreport's columns), auto-whitelisted
//! clients and rate records, deletions by key or age, and records
//! imported from postgrey. None of this runs in the daemon: the commands
//! open the store themselves.

use super::greylist::{TripletInfo, TripletKey};
use super::{Inner, Store, StoreError, cap_network};

/// Records held, per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub triplets: u64,
    /// Triplets that never passed (waiting for a retry).
    pub unconfirmed: u64,
    pub passed: u64,
    /// Triplets with details (network, sender domain, addresses).
    pub with_details: u64,
    /// Auto-whitelist records.
    pub clients: u64,
    pub rate_records: u64,
}

/// One triplet as `rpol store list --greylist` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripletRow {
    /// The key's SHA-256, in hex (what `rpol store delete` takes).
    pub key: String,
    pub first: u64,
    pub last: u64,
    /// Requests seen since first seen; `None` for a record from before
    /// rpol kept details.
    pub seen: Option<u64>,
    /// Passed greylisting (else waiting for a retry).
    pub passed: bool,
    pub info: Option<TripletInfo>,
}

/// One auto-whitelist record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub address: String,
    /// Passes counted (at most one an hour).
    pub count: u64,
    pub last: u64,
}

/// One rate-limit record (its key is a digest of limit, kind and value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRow {
    pub key: String,
    /// When it expires (seconds since the epoch).
    pub expires: u64,
    /// Counts within the window.
    pub messages: u64,
    pub recipients: u64,
    pub networks: u64,
}

/// One record to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    Triplet {
        key: TripletKey,
        info: Option<TripletInfo>,
        /// The network it counts against ([`cap_network`]).
        cap_net: String,
        first: u64,
        last: u64,
        /// Never passed (waits for a retry).
        pending: bool,
    },
    Client {
        address: String,
        count: u64,
        last: u64,
    },
}

impl Import {
    /// A triplet of client network `net` (an address, as the key has it).
    pub fn triplet(
        net: &str,
        sender: &str,
        recipient: &str,
        privacy: bool,
        (first, last): (u64, u64),
        delay: u64,
    ) -> Import {
        Import::Triplet {
            key: TripletKey::new(net, sender, recipient),
            info: Some(TripletInfo::new(net, sender, recipient, privacy)),
            cap_net: cap_network(net),
            first,
            last,
            pending: last.saturating_sub(first) < delay,
        }
    }
}

/// What an import wrote and left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    pub triplets: u64,
    pub clients: u64,
    /// Already held (rpol's own record kept).
    pub known: u64,
    /// Beyond a budget (`max_triplets`, `max_unconfirmed_per_network`,
    /// `max_clients`).
    pub no_room: u64,
}

impl Imported {
    pub fn add(&mut self, other: &Imported) {
        self.triplets += other.triplets;
        self.clients += other.clients;
        self.known += other.known;
        self.no_room += other.no_room;
    }
}

impl Store {
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        match &self.inner {
            Inner::Embedded(e) => e.stats().await,
            Inner::Redis(r) => r.stats().await,
        }
    }

    pub async fn triplets(&self) -> Result<Vec<TripletRow>, StoreError> {
        match &self.inner {
            Inner::Embedded(e) => e.triplets().await,
            Inner::Redis(r) => r.triplets().await,
        }
    }

    pub async fn clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        match &self.inner {
            Inner::Embedded(e) => e.clients().await,
            Inner::Redis(r) => r.clients().await,
        }
    }

    pub async fn rates(&self, now: u64) -> Result<Vec<RateRow>, StoreError> {
        match &self.inner {
            Inner::Embedded(e) => e.rates(now).await,
            Inner::Redis(r) => r.rates(now).await,
        }
    }

    /// Removes what `key` names: the triplets and rate records whose hex
    /// key starts with it (8 digits at least), or a client's
    /// auto-whitelist record. How many went.
    pub async fn delete(&self, key: &str) -> Result<u64, StoreError> {
        match &self.inner {
            Inner::Embedded(e) => e.delete(key.to_string()).await,
            Inner::Redis(r) => r.delete(key).await,
        }
    }

    /// Removes the triplets and clients last seen before `cutoff`.
    pub async fn delete_older_than(&self, cutoff: u64) -> Result<u64, StoreError> {
        match &self.inner {
            Inner::Embedded(e) => e.delete_older_than(cutoff).await,
            Inner::Redis(r) => r.delete_older_than(cutoff).await,
        }
    }

    /// Writes `batch`; records already held stay as they are.
    pub async fn import(
        &self,
        batch: Vec<Import>,
        max_age: u64,
        retry_window: u64,
        now: u64,
    ) -> Result<Imported, StoreError> {
        match &self.inner {
            Inner::Embedded(e) => e.import(batch).await,
            Inner::Redis(r) => r.import(batch, max_age, retry_window, now).await,
        }
    }
}
