//! SPF results remembered between requests, so that one evaluation serves
//! every RCPT of a transaction and the next transactions of the same client.
//!
//! A result is kept only under a key that covers everything it depended
//! on: the client address, the identity, the domain, the HELO name (the
//! `%{h}` macro), and the local part too when a record or explanation used
//! the `%{l}`/`%{s}` macros. Results that come from a failure (temporary
//! errors, an identity that could not be evaluated, an internal error) are
//! never kept: see [`Evaluation::cacheable`]. The key is kept as a keyed
//! digest of those parts ([`super::digest`]): fixed in size, and no
//! client can make its entry answer for another's.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::digest::{Digest, Digester};
use crate::bounded::BoundedLru;
use crate::common::lock;
use crate::spf::{self, Evaluation, Identity};

/// Bytes of memory the SPF result cache may use, whatever `[spf]
/// cache_size` says: an entry holds client-chosen names and a DNS-chosen
/// explanation (each bounded by the request and DNS limits).
pub const SPF_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The digest of: client, identity, domain, HELO (both lowercase, without
/// a trailing dot), and the local part when it mattered.
type Key = Digest;

pub struct SpfCache {
    results: Mutex<BoundedLru<Key, (Instant, Evaluation)>>,
    digester: Digester,
    /// Results the rules used, by [`IDENTITIES`] and [`spf::RESULT_NAMES`]
    /// (cached ones included); relaxed atomics, read by the metrics.
    used: [[AtomicU64; spf::RESULT_NAMES.len()]; IDENTITIES.len()],
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The identities, in the order [`SpfCache::used`] counts them.
pub const IDENTITIES: [Identity; 2] = [Identity::MailFrom, Identity::Helo];

/// A result's place in the cache: see [`SpfCache::slot`].
pub struct Slot<'a> {
    ip: IpAddr,
    identity: Identity,
    /// The local part and the domain.
    parts: (&'a str, &'a str),
    helo: &'a str,
    domain_key: Key,
}

impl std::fmt::Debug for SpfCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpfCache")
    }
}

impl SpfCache {
    pub fn new(max_entries: usize) -> SpfCache {
        SpfCache {
            results: Mutex::new(BoundedLru::new(max_entries, SPF_CACHE_BYTES)),
            digester: Digester::default(),
            used: Default::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Counts a result a rule used, whether evaluated or cached.
    pub fn count_used(&self, e: &Evaluation) {
        let identity = IDENTITIES.iter().position(|i| *i == e.identity);
        if let Some(row) = identity.and_then(|i| self.used.get(i)) {
            row[spf::result_index(&e.result)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How often rules used `result_index` for `identity`.
    pub fn used(&self, identity: Identity, result_index: usize) -> u64 {
        let i = IDENTITIES.iter().position(|i| *i == identity).unwrap_or(0);
        self.used[i]
            .get(result_index)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Lookups answered from the cache, and not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Where results for `local@domain` (`parts`) evaluated for `ip` with
    /// `helo` are kept: computed once for [`SpfCache::get`] and then
    /// [`SpfCache::put`].
    pub fn slot<'a>(
        &self,
        ip: IpAddr,
        identity: Identity,
        parts: (&'a str, &'a str),
        helo: &'a str,
    ) -> Slot<'a> {
        let (_, domain) = parts;
        Slot {
            ip,
            identity,
            parts,
            helo,
            domain_key: self.key(ip, identity, domain, helo, None),
        }
    }

    /// The slot's result, if younger than `ttl`, speaking of the slot's
    /// identity ([`Evaluation::for_identity`]). The domain's entry says
    /// whether the local part mattered; if it did, only an entry for this
    /// very local part answers.
    pub fn get(&self, slot: &Slot<'_>, ttl: Duration) -> Option<Evaluation> {
        let found = self.find(slot, ttl);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether [`SpfCache::get`] would answer for the slot now, without
    /// counting a hit or a miss (check_spf's prefetch asks, to send no
    /// query for a result it holds).
    pub fn holds(&self, slot: &Slot<'_>, ttl: Duration) -> bool {
        self.find(slot, ttl).is_some()
    }

    fn find(&self, slot: &Slot<'_>, ttl: Duration) -> Option<Evaluation> {
        let now = Instant::now();
        let mut cache = lock(&self.results);
        match cache.get(&slot.domain_key) {
            Some((at, e)) if now.duration_since(*at) < ttl => {
                if !e.uses_local_part {
                    return Some(e.for_identity(slot.parts));
                }
            }
            Some(_) => {
                cache.pop(&slot.domain_key);
                return None;
            }
            None => return None,
        }
        drop(cache);
        let full_key = self.local_key(slot);
        match lock(&self.results).get(&full_key) {
            Some((at, e)) if now.duration_since(*at) < ttl => Some(e.for_identity(slot.parts)),
            _ => None,
        }
    }

    fn key(
        &self,
        ip: IpAddr,
        identity: Identity,
        domain: &str,
        helo: &str,
        local: Option<&str>,
    ) -> Key {
        self.digester
            .digest(&(ip, identity, Normal(domain), Normal(helo), local))
    }

    fn local_key(&self, slot: &Slot<'_>) -> Key {
        let (local, domain) = slot.parts;
        self.key(slot.ip, slot.identity, domain, slot.helo, Some(local))
    }

    /// Keeps `e`, evaluated for the slot, if it may be reused (see
    /// [`Evaluation::cacheable`]).
    pub fn put(&self, slot: &Slot<'_>, e: &Evaluation) {
        if !e.cacheable {
            return;
        }
        let stored = e.to_cached();
        let weight = stored.heap_bytes();
        let full_key = e.uses_local_part.then(|| self.local_key(slot));
        let now = Instant::now();
        let mut cache = lock(&self.results);
        if let Some(full_key) = full_key {
            // The domain entry only tells that the local part matters.
            cache.put(full_key, (now, stored.clone()), weight);
        }
        cache.put(slot.domain_key, (now, stored), weight);
    }

    pub fn clear(&self) {
        lock(&self.results).clear();
    }

    /// Entries kept now, and the bytes they are charged.
    pub fn usage(&self) -> (usize, usize) {
        let cache = lock(&self.results);
        (cache.len(), cache.bytes())
    }
}

/// A name as the key holds it: lowercase (ASCII only, as viaspf compares
/// names), without the trailing dot. It hashes as that string would
/// (`str`'s bytes, then 0xff), lowercased on the way into the hasher
/// rather than copied first.
struct Normal<'a>(&'a str);

impl Hash for Normal<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let name = self.0.trim_end_matches('.').as_bytes();
        let mut chunk = [0u8; 64];
        for piece in name.chunks(chunk.len()) {
            let lower = &mut chunk[..piece.len()];
            lower.copy_from_slice(piece);
            lower.make_ascii_lowercase();
            state.write(lower);
        }
        state.write_u8(0xff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(local: &str, domain: &str) -> Evaluation {
        Evaluation {
            identity: Identity::MailFrom,
            sender: format!("{local}@{domain}"),
            domain: domain.into(),
            result: viaspf::SpfResult::Pass,
            mechanism: Some("ip4:192.0.2.0/24".into()),
            problem: None,
            uses_local_part: false,
            cacheable: true,
            lookups: vec![format!("TXT {domain}: v=spf1 ip4:192.0.2.0/24 -all")],
        }
    }

    /// A result is stored without the identity's texts (a hit writes its
    /// request's own) and without the trace: a long local part costs the
    /// cache nothing, and a hit for another spelling names that spelling.
    #[test]
    fn results_are_stored_without_identity_texts_and_hits_name_their_request() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let helo = "mail.example.com";
        let mut bytes = Vec::new();
        for local in ["a", &"x".repeat(200)] {
            let cache = SpfCache::new(100);
            let slot = cache.slot(ip, Identity::MailFrom, (local, "Example.COM"), helo);
            cache.put(&slot, &evaluation(local, "Example.COM"));
            bytes.push(cache.usage().1);
            let other = cache.slot(ip, Identity::MailFrom, ("Bob", "example.com"), helo);
            let hit = cache.get(&other, Duration::from_secs(60)).expect("a hit");
            assert_eq!(hit.sender, "Bob@example.com");
            assert_eq!(hit.domain, "example.com");
            assert_eq!(hit.result, viaspf::SpfResult::Pass);
            assert_eq!(hit.mechanism.as_deref(), Some("ip4:192.0.2.0/24"));
            assert!(hit.lookups.is_empty());
        }
        assert_eq!(
            bytes[0], bytes[1],
            "the local part's length changed the charge"
        );
    }

    /// A name hashes as its lowercase form without trailing dots would,
    /// as a `str`, whatever its length (the chunks are 64 bytes).
    #[test]
    fn normal_hashes_as_the_lowercase_string() {
        let digester = Digester::default();
        let long = "Ab".repeat(100);
        for name in [
            "",
            ".",
            "Mail.Example.COM.",
            "mail.example.com",
            &long,
            "x\u{e9}Y..",
        ] {
            let plain = name.trim_end_matches('.').to_ascii_lowercase();
            assert_eq!(
                digester.digest(&(1u8, Normal(name), 2u8)),
                digester.digest(&(1u8, plain.as_str(), 2u8)),
                "{name:?}"
            );
        }
    }
}
