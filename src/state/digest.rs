//! Keyed 128-bit digests: fixed-size keys for runtime state that clients
//! fill (transactions, SPF results), whatever the size of what they send.
//! The key is random per process, so a client cannot compute, let alone
//! forge, a collision that would make its entry answer for another's.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};

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
        let mut hasher = Buffered {
            sip: SipHasher13::new_with_keys(self.keys.0, self.keys.1),
            buf: [0; BUFFER],
            len: 0,
        };
        value.hash(&mut hasher);
        hasher.flush();
        hasher.sip.finish128().as_u128()
    }
}

/// Bytes gathered before they reach SipHash: `Hash` writes many small
/// pieces (a length, a tag byte, a short name), and each `write` of the
/// hasher costs far more than a copy. The digest is the same: SipHash
/// reads one stream of bytes however it is cut.
const BUFFER: usize = 256;

struct Buffered {
    sip: SipHasher13,
    buf: [u8; BUFFER],
    len: usize,
}

impl Buffered {
    fn flush(&mut self) {
        self.sip.write(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Hasher for Buffered {
    fn write(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > BUFFER {
            self.flush();
            if bytes.len() > BUFFER {
                self.sip.write(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn finish(&self) -> u64 {
        let mut sip = self.sip;
        sip.write(&self.buf[..self.len]);
        sip.finish()
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

    /// Buffering changes nothing: the digest is SipHash-1-3 of the bytes
    /// `Hash` writes, for values shorter and longer than the buffer.
    #[test]
    fn buffered_digest_is_siphash_of_the_stream() {
        let d = Digester::default();
        let lengths = [
            0,
            1,
            7,
            8,
            100,
            BUFFER - 1,
            BUFFER,
            BUFFER + 1,
            3 * BUFFER + 5,
        ];
        for len in lengths {
            let long = "x".repeat(len);
            let value = (7u8, long.as_str(), Some("tail"), [1u16, 2, 3]);
            let mut plain = SipHasher13::new_with_keys(d.keys.0, d.keys.1);
            value.hash(&mut plain);
            assert_eq!(d.digest(&value), plain.finish128().as_u128(), "len {len}");
        }
    }
}
