//! Keyed 128-bit digests: fixed-size keys for runtime state that clients
//! fill (transactions, SPF results), whatever the size of what they send.
//! The key is random per process, so a client cannot compute, let alone
//! forge, a collision that would make its entry answer for another's.

use std::hash::{BuildHasher, Hash, RandomState};

use siphasher::sip128::{Hasher128, SipHasher13};

pub type Digest = u128;

/// SipHash-1-3 with a 128-bit output (one pass; std's `RandomState` gives
/// 64 bits), keyed at random.
pub struct Digester {
    keys: (u64, u64),
}

impl Default for Digester {
    fn default() -> Self {
        // std's RandomState is seeded from the OS's random source; what it
        // hashes a constant to, under two such seeds, is a random key.
        let key = || RandomState::new().hash_one(0x7270_6f6c_u64);
        Digester {
            keys: (key(), key()),
        }
    }
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digester")
    }
}

impl Digester {
    /// The digest of `value` as `Hash` writes it: strings are followed by
    /// 0xff and slices by their length first, so distinct tuples of
    /// strings never write the same bytes.
    pub fn digest(&self, value: &impl Hash) -> Digest {
        let mut hasher = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        value.hash(&mut hasher);
        hasher.finish128().as_u128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_and_separate_their_parts() {
        let a = Digester::default();
        let b = Digester::default();
        let parts: &[&str] = &["ab", "c"];
        assert_eq!(a.digest(&parts), a.digest(&parts));
        assert_ne!(a.digest(&parts), b.digest(&parts), "another key");
        let moved: &[&str] = &["a", "bc"];
        assert_ne!(a.digest(&parts), a.digest(&moved));
        let joined: &[&str] = &["abc"];
        assert_ne!(a.digest(&parts), a.digest(&joined));
    }
}
