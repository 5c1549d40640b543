//! Per-transaction memory: which PREPEND actions already went out, so a
//! header reaches a message once however many RCPTs ask for it, and a
//! header a response could not carry (one action per response) goes out
//! with a later one.
//!
//! A transaction is `instance` *and* client address *and* sender: Postfix
//! keeps one instance until the MAIL stage, and a local client may send any
//! instance, so the instance alone would let one transaction see another's
//! memory. Keys and actions are kept as keyed 128-bit digests
//! ([`super::digest`]), so an entry has a fixed size whatever the client
//! sends, and a client cannot forge a collision it cannot compute.

use std::sync::Mutex;

use super::digest::{Digest, Digester};
use crate::bounded::BoundedLru;
use crate::protocol::Request;

/// Bytes of memory the per-transaction store may use. A transaction lives
/// for seconds; at ~200 bytes an entry this keeps about 20,000 of them.
pub const TRANSACTION_MEMORY_BYTES: usize = 4 * 1024 * 1024;

/// Distinct PREPEND actions remembered per transaction; one response
/// carries one action, so a transaction rarely has more than two.
pub const PREPENDS_PER_TRANSACTION: usize = 8;

/// What one transaction has been sent.
#[derive(Default)]
struct Memory {
    prepended: Vec<Digest>,
}

/// One action of one transaction, as digests.
pub struct Ticket {
    transaction: Digest,
    action: Digest,
}

pub struct Transactions {
    seen: Mutex<BoundedLru<Digest, Memory>>,
    digester: Digester,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transactions")
    }
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions {
            seen: Mutex::new(BoundedLru::new(usize::MAX, TRANSACTION_MEMORY_BYTES)),
            digester: Digester::default(),
        }
    }
}

/// Weight of one entry: its action digests (the key and the vector header
/// are part of the fixed overhead).
const MEMORY_WEIGHT: usize = std::mem::size_of::<Digest>() * (PREPENDS_PER_TRANSACTION + 2);

impl Transactions {
    fn digest(&self, parts: &[&str]) -> Digest {
        self.digester.digest(&parts)
    }

    /// The transaction a request belongs to, or `None` when it names no
    /// instance (nothing is remembered then).
    fn key(&self, req: &Request) -> Option<Digest> {
        if req.instance.is_empty() {
            return None;
        }
        Some(self.digest(&[&req.instance, &req.client_address, &req.sender]))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoundedLru<Digest, Memory>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request's transaction and `action`, hashed once for
    /// [`Transactions::was_sent`] and [`Transactions::record`]; `None` when
    /// the request names no instance (nothing is remembered then).
    pub fn ticket(&self, req: &Request, action: &str) -> Option<Ticket> {
        Some(Ticket {
            transaction: self.key(req)?,
            action: self.digest(&[action]),
        })
    }

    /// Whether the ticket's action already went out in its transaction.
    pub fn was_sent(&self, ticket: &Ticket) -> bool {
        self.lock()
            .get(&ticket.transaction)
            .is_some_and(|m| m.prepended.contains(&ticket.action))
    }

    /// Records that the ticket's action goes out now.
    pub fn record(&self, ticket: Ticket) {
        let Ticket {
            transaction,
            action,
        } = ticket;
        let mut seen = self.lock();
        if let Some(m) = seen.get_mut(&transaction) {
            if m.prepended.len() >= PREPENDS_PER_TRANSACTION {
                m.prepended.remove(0);
            }
            m.prepended.push(action);
            return;
        }
        let mut prepended = Vec::with_capacity(PREPENDS_PER_TRANSACTION);
        prepended.push(action);
        seen.put(transaction, Memory { prepended }, MEMORY_WEIGHT);
    }

    /// Transactions remembered now, and the bytes they are charged.
    pub fn usage(&self) -> (usize, usize) {
        let seen = self.lock();
        (seen.len(), seen.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: &Transactions, req: &Request, action: &str) {
        if let Some(ticket) = t.ticket(req, action) {
            t.record(ticket);
        }
    }

    fn sent(t: &Transactions, req: &Request, action: &str) -> bool {
        t.ticket(req, action).is_some_and(|k| t.was_sent(&k))
    }

    fn req(instance: &str, client: &str, sender: &str) -> Request {
        Request::from_pairs([
            ("instance", instance),
            ("client_address", client),
            ("sender", sender),
        ])
    }

    #[test]
    fn once_per_transaction() {
        let t = Transactions::default();
        let a = req("a", "203.0.113.1", "x@example.com");
        assert!(!sent(&t, &a, "PREPEND X: 1"));
        rec(&t, &a, "PREPEND X: 1");
        assert!(sent(&t, &a, "PREPEND X: 1"));
        assert!(!sent(&t, &a, "PREPEND Y: 2"));
        assert!(!sent(
            &t,
            &req("b", "203.0.113.1", "x@example.com"),
            "PREPEND X: 1"
        ));
        let none = req("", "203.0.113.1", "x@example.com");
        rec(&t, &none, "PREPEND X: 1");
        assert!(!sent(&t, &none, "PREPEND X: 1"));
    }

    #[test]
    fn an_instance_reused_by_another_client_or_sender_is_another_transaction() {
        let t = Transactions::default();
        rec(
            &t,
            &req("a", "203.0.113.1", "x@example.com"),
            "PREPEND X: 1",
        );
        assert!(!sent(
            &t,
            &req("a", "203.0.113.2", "x@example.com"),
            "PREPEND X: 1"
        ));
        assert!(!sent(
            &t,
            &req("a", "203.0.113.1", "y@example.com"),
            "PREPEND X: 1"
        ));
    }

    #[test]
    fn huge_instances_cost_a_fixed_size() {
        let t = Transactions::default();
        let big = "i".repeat(8 * 1024);
        for n in 0..100_000 {
            let r = req(&format!("{big}{n}"), "203.0.113.1", "x@example.com");
            rec(&t, &r, "PREPEND X: 1");
        }
        let (entries, bytes) = t.usage();
        assert!(bytes <= TRANSACTION_MEMORY_BYTES, "{bytes}");
        assert!(entries > 10_000, "{entries}");
    }
}
