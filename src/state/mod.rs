//! Runtime state: what rpol learns while it runs, as opposed to the
//! [`crate::policy::Policy`] the admin wrote. One `State` is owned by the
//! server beside the swappable policy and outlives every reload: the
//! resolver and its cache, the SPF result cache, and the per-transaction
//! memory. Every part is bounded in bytes.

pub mod spf_cache;
pub mod transactions;

use std::sync::RwLock;

use crate::dns::Resolver;
use spf_cache::SpfCache;
use transactions::Transactions;

#[derive(Debug)]
pub struct State {
    /// Replaced only when a reload changes `[dns]`.
    resolver: RwLock<Resolver>,
    pub spf_results: SpfCache,
    pub transactions: Transactions,
}

impl State {
    pub fn new(resolver: Resolver, spf_cache_entries: usize) -> State {
        State {
            resolver: RwLock::new(resolver),
            spf_results: SpfCache::new(spf_cache_entries),
            transactions: Transactions::default(),
        }
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
        match self.resolver.write() {
            Ok(mut r) => *r = resolver,
            Err(poisoned) => *poisoned.into_inner() = resolver,
        }
    }
}
