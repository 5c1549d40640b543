//! DNS list scores remembered between requests (`[dnsbl] sites`): a
//! client's score is kept for its TTL, postscreen_dnsbl_min_ttl and
//! max_ttl's way ([`crate::dnsbl::score::Score::ttl`]), so its next
//! RCPTs and connections ask no list again. The resolver's own cache is
//! not enough for this: it keeps each answer for that answer's TTL within
//! `[dns]`'s bounds, where postscreen keeps the score at least min_ttl
//! (lists publish TTLs of seconds) and at most max_ttl. A score in which a
//! list failed is never kept. Keyed by the client address and the sites'
//! [`crate::dnsbl::score::Sites::id`], so a reload that changes the sites
//! uses none of the old scores; bounded in entries and bytes.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::bounded::BoundedLru;
use crate::common::lock;
use crate::dnsbl::score::Score;

/// Most scores kept.
pub const SCORE_CACHE_ENTRIES: usize = 50_000;
/// Most bytes the kept scores may use.
pub const SCORE_CACHE_BYTES: usize = 8 * 1024 * 1024;

type Key = (IpAddr, u64);

pub struct ScoreCache {
    scores: Mutex<BoundedLru<Key, (Instant, Arc<Score>)>>,
}

impl Default for ScoreCache {
    fn default() -> Self {
        ScoreCache {
            scores: Mutex::new(BoundedLru::new(SCORE_CACHE_ENTRIES, SCORE_CACHE_BYTES)),
        }
    }
}

impl std::fmt::Debug for ScoreCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScoreCache")
    }
}

impl ScoreCache {
    /// The kept score of `ip` under the sites `id`, if not expired.
    pub fn get(&self, ip: IpAddr, id: u64) -> Option<Arc<Score>> {
        let now = Instant::now();
        let mut scores = lock(&self.scores);
        match scores.get(&(ip, id)) {
            Some((expires, score)) if *expires > now => Some(score.clone()),
            Some(_) => {
                scores.pop(&(ip, id));
                None
            }
            None => None,
        }
    }

    /// Keeps `score` for its TTL, when every list answered.
    pub fn put(&self, ip: IpAddr, id: u64, score: Arc<Score>) {
        if !score.complete || score.ttl.is_zero() {
            return;
        }
        let expires = Instant::now() + score.ttl;
        let weight = score.weight();
        lock(&self.scores).put((ip, id), (expires, score), weight);
    }

    /// Forgets every score (the name servers changed).
    pub fn clear(&self) {
        lock(&self.scores).clear();
    }

    /// Scores kept now (expired ones included until touched).
    pub fn len(&self) -> usize {
        lock(&self.scores).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
