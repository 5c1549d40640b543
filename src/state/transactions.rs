//! Per-transaction memory: which PREPEND actions already went out, so a
//! header reaches a message once however many RCPTs ask for it, and the
//! headers a response could not carry (one action per response), kept
//! until a later request of the transaction (the next RCPT, or DATA) can.
//!
//! A transaction is `instance` *and* client address *and* sender: Postfix
//! keeps one instance until the MAIL stage, and a local client may send any
//! instance, so the instance alone would let one transaction see another's
//! memory. Keys and actions are kept as keyed 128-bit digests
//! ([`super::digest`]), so an entry has a fixed size whatever the client
//! sends, and a client cannot forge a collision it cannot compute.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::digest::{Digest, Digester};
use crate::bounded::BoundedLru;
use crate::common::lock;
use crate::protocol::{Action, Request};

/// Bytes of memory the per-transaction store may use. A transaction lives
/// for seconds; at ~200 bytes an entry this keeps about 20,000 of them.
pub const TRANSACTION_MEMORY_BYTES: usize = 4 * 1024 * 1024;

/// Distinct PREPEND actions remembered per transaction; one response
/// carries one action, so a transaction rarely has more than two.
pub const PREPENDS_PER_TRANSACTION: usize = 8;

/// Bytes of one action kept for a later request: rpol's own headers
/// (Received-SPF with a 450-byte comment, X-Greylist) fit; a longer one is
/// not kept, so a client's long values cannot make an entry large.
pub const MAX_PENDING_HEADER_BYTES: usize = 1024;

/// What one transaction has been sent, and what waits to be.
#[derive(Default)]
struct Memory {
    prepended: Vec<Digest>,
    /// PREPEND actions due but not sent yet, oldest first.
    pending: Vec<Kept>,
}

/// A header kept for later. It counts itself in [`Transactions::kept`]
/// while it lives, wherever it goes (sent, or evicted with its entry).
struct Kept {
    digest: Digest,
    action: Action,
    /// Lower goes first (the chain's rank of the action).
    priority: u8,
    _count: KeptCount,
}

struct KeptCount(Arc<AtomicUsize>);

impl KeptCount {
    fn new(count: &Arc<AtomicUsize>) -> KeptCount {
        count.fetch_add(1, Ordering::Relaxed);
        KeptCount(count.clone())
    }
}

impl Drop for KeptCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Memory {
    fn weight(&self) -> usize {
        MEMORY_WEIGHT
            + self
                .pending
                .iter()
                .map(|k| text_len(&k.action))
                .sum::<usize>()
    }

    fn sent(&mut self, action: Digest) {
        self.pending.retain(|k| k.digest != action);
        if self.prepended.len() >= PREPENDS_PER_TRANSACTION {
            self.prepended.remove(0);
        }
        self.prepended.push(action);
    }
}

/// Bytes of a pass-through action's text.
fn text_len(action: &Action) -> usize {
    action.passed_text().map_or(0, str::len)
}

/// One action of one transaction, as digests.
pub struct Ticket {
    transaction: Digest,
    action: Digest,
}

pub struct Transactions {
    seen: Mutex<BoundedLru<Digest, Memory>>,
    digester: Digester,
    /// Headers kept for later, in all transactions.
    kept: Arc<AtomicUsize>,
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
            kept: Arc::default(),
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

    /// The request's transaction and `action`, hashed once for
    /// [`Transactions::was_sent`] and [`Transactions::record`]; `None` when
    /// the request names no instance, or the action is no pass-through
    /// (nothing is remembered then).
    pub fn ticket(&self, req: &Request, action: &Action) -> Option<Ticket> {
        let text = action.passed_text()?;
        Some(Ticket {
            transaction: self.key(req)?,
            action: self.digest(&[text]),
        })
    }

    /// Whether the ticket's action already went out in its transaction.
    pub fn was_sent(&self, ticket: &Ticket) -> bool {
        lock(&self.seen)
            .get(&ticket.transaction)
            .is_some_and(|m| m.prepended.contains(&ticket.action))
    }

    /// Records that the ticket's action goes out now.
    pub fn record(&self, ticket: Ticket) {
        let Ticket {
            transaction,
            action,
        } = ticket;
        self.update(transaction, |m| m.sent(action));
    }

    /// Keeps `action` (the ticket's) for a later request of its
    /// transaction, unless it went out already, waits already, or is
    /// longer than [`MAX_PENDING_HEADER_BYTES`]. Of those kept, a lower
    /// `priority` goes out first.
    pub fn keep_for_later(&self, ticket: Ticket, action: &Action, priority: u8) {
        if text_len(action) > MAX_PENDING_HEADER_BYTES {
            return;
        }
        let Ticket {
            transaction,
            action: digest,
        } = ticket;
        self.update(transaction, |m| {
            let known =
                m.prepended.contains(&digest) || m.pending.iter().any(|k| k.digest == digest);
            if !known && m.pending.len() < PREPENDS_PER_TRANSACTION {
                m.pending.push(Kept {
                    digest,
                    action: action.clone(),
                    priority,
                    _count: KeptCount::new(&self.kept),
                });
            }
        });
    }

    /// The action kept for the request's transaction with the lowest
    /// priority below `below` (the oldest of equals), recorded as sent
    /// now; `None` when none waits.
    pub fn take_kept(&self, req: &Request, below: u8) -> Option<Action> {
        // Most requests find nothing: no digest, no lock for them.
        if self.kept.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let transaction = self.key(req)?;
        let mut seen = lock(&self.seen);
        let best = |m: &Memory| {
            (m.pending.iter().enumerate())
                .filter(|(_, k)| k.priority < below)
                .min_by_key(|(i, k)| (k.priority, *i))
                .map(|(i, _)| i)
        };
        best(seen.get(&transaction)?)?;
        let mut memory = seen.pop(&transaction)?;
        let taken = best(&memory).map(|i| {
            let kept = memory.pending.remove(i);
            memory.sent(kept.digest);
            kept.action
        });
        let weight = memory.weight();
        seen.put(transaction, memory, weight);
        taken
    }

    /// Changes a transaction's memory (made empty if new) and charges its
    /// new weight.
    fn update(&self, transaction: Digest, change: impl FnOnce(&mut Memory)) {
        let mut seen = lock(&self.seen);
        let mut memory = seen.pop(&transaction).unwrap_or_default();
        change(&mut memory);
        let weight = memory.weight();
        seen.put(transaction, memory, weight);
    }

    /// Transactions remembered now, and the bytes they are charged.
    pub fn usage(&self) -> (usize, usize) {
        let seen = lock(&self.seen);
        (seen.len(), seen.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: &Transactions, req: &Request, action: &str) {
        if let Some(ticket) = t.ticket(req, &Action::parse(action)) {
            t.record(ticket);
        }
    }

    fn sent(t: &Transactions, req: &Request, action: &str) -> bool {
        t.ticket(req, &Action::parse(action))
            .is_some_and(|k| t.was_sent(&k))
    }

    fn keep(t: &Transactions, req: &Request, action: &str, priority: u8) {
        let action = Action::parse(action);
        t.keep_for_later(t.ticket(req, &action).unwrap(), &action, priority);
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

    #[test]
    fn a_header_kept_goes_out_once_with_a_later_request() {
        let t = Transactions::default();
        let a = req("a", "203.0.113.1", "x@example.com");
        for action in ["PREPEND X: 1", "PREPEND Y: 2", "PREPEND X: 1"] {
            keep(&t, &a, action, 1);
        }
        // Sent meanwhile by its own rule: not sent again.
        rec(&t, &a, "PREPEND X: 1");
        // Kept later, but first: a lower priority.
        keep(&t, &a, "HOLD", 0);
        assert_eq!(
            t.take_kept(&a, 1),
            Some("HOLD".into()),
            "nothing below 1 but HOLD"
        );
        assert_eq!(t.take_kept(&a, 1), None, "Y is not below 1");
        assert_eq!(
            t.take_kept(&a, u8::MAX).map(|k| k.to_string()).as_deref(),
            Some("PREPEND Y: 2")
        );
        assert!(sent(&t, &a, "PREPEND Y: 2"));
        assert_eq!(t.take_kept(&a, u8::MAX), None);
        // Another transaction sees none of it.
        let b = req("b", "203.0.113.1", "x@example.com");
        keep(&t, &a, "PREPEND Z: 3", 1);
        assert_eq!(t.take_kept(&b, u8::MAX), None);
        // A header longer than the bound is not kept.
        let long = format!("PREPEND L: {}", "l".repeat(MAX_PENDING_HEADER_BYTES));
        keep(&t, &b, &long, 1);
        assert_eq!(t.take_kept(&b, u8::MAX), None);
        // Z still waits; evicted with its transaction, it is no longer counted.
        assert_eq!(t.kept.load(Ordering::Relaxed), 1);
        for n in 0..100_000 {
            rec(
                &t,
                &req(&format!("e{n}"), "203.0.113.1", "x@example.com"),
                "PREPEND X: 1",
            );
        }
        assert_eq!(t.kept.load(Ordering::Relaxed), 0);
    }
}
