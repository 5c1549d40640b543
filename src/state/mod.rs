//! Runtime state: what rpol learns while it runs, as opposed to the
//! [`crate::policy::Policy`] the admin wrote. One `State` is owned by the
//! server beside the swappable policy and outlives every reload: the
//! resolver and its cache, the SPF result cache, the DNS list scores, and the per-transaction
//! memory, and the greylisting store. Every part is bounded in bytes (the
//! store by its per-kind budgets and expiry).

pub mod digest;
pub mod dnsbl_scores;
pub mod rate_events;
pub mod spf_cache;
pub mod store;
pub mod transactions;

use std::sync::{Arc, OnceLock, RwLock};

use crate::dns::Resolver;
use spf_cache::SpfCache;
use store::Store;
use transactions::Transactions;

#[derive(Debug)]
pub struct State {
    /// Replaced only when a reload changes `[dns]`.
    resolver: RwLock<Resolver>,
    pub spf_results: SpfCache,
    /// `[dnsbl] sites` scores by client.
    pub dnsbl_scores: dnsbl_scores::ScoreCache,
    pub transactions: Transactions,
    /// Rate limits: warned keys and crossings counted.
    pub rate_events: rate_events::RateEvents,
    /// Set once at start when `[store]` is configured, after dropping
    /// root (the file belongs to the account rpol runs as).
    store: OnceLock<Arc<Store>>,
}

impl State {
    pub fn new(resolver: Resolver, spf_cache_entries: usize) -> State {
        State {
            resolver: RwLock::new(resolver),
            spf_results: SpfCache::new(spf_cache_entries),
            dnsbl_scores: Default::default(),
            transactions: Transactions::default(),
            rate_events: Default::default(),
            store: OnceLock::new(),
        }
    }

    /// The store, when one is open.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.get()
    }

    /// Installs the store; only the first call counts.
    pub fn set_store(&self, store: Arc<Store>) {
        let _ = self.store.set(store);
    }

    /// The resolver every rule uses (a cheap handle on the shared cache).
    pub fn resolver(&self) -> Resolver {
        match self.resolver.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a resolver built from new `[dns]` settings; its cache
    /// starts empty, since the servers or TTL bounds changed.
    pub fn replace_resolver(&self, resolver: Resolver) {
        self.dnsbl_scores.clear();
        match self.resolver.write() {
            Ok(mut r) => *r = resolver,
            Err(poisoned) => *poisoned.into_inner() = resolver,
        }
    }
}
