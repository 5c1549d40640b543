//! Connection slots: at most `max_connections` connections at once, and at
//! most `max_connections_per_address` from one TCP peer. When a new client
//! finds every slot taken, the connection that answered nothing for the
//! longest time is closed to admit it (one waiting for its next request, or
//! one whose request is still trickling in: Postfix writes each request at
//! once, as is one whose answer the client does not take); one being
//! answered is never cut, and its answer has a deadline. A connection told
//! to go starts no other answer, so it goes at its next await. Postfix
//! reconnects by itself, so a crowd of idle, slow or wedged connections
//! cannot lock Postfix out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::lock;

/// How long a new client may wait for a slot when every connection is
/// answering a request (none can be closed); after that it is closed.
pub const ADMIT_WAIT: Duration = Duration::from_secs(1);

/// How often a waiting newcomer looks again for a closable connection.
const RECHECK: Duration = Duration::from_millis(10);

/// `idle_since` of a connection whose request is being answered.
const BUSY: u64 = 0;

/// `idle_since` of a connection told to close for a newcomer. In the same
/// atomic as [`BUSY`], so that a connection is either told to go while
/// idle or turns busy, never both (a connection that turned busy just as
/// it was chosen would otherwise hold a slot that counts as leaving).
const EVICTED: u64 = u64::MAX;

/// One admitted connection.
pub struct Slot {
    address: Option<IpAddr>,
    /// Milliseconds since the registry's start at which the connection
    /// last finished an answer (or connected), plus one; [`BUSY`] while it
    /// answers a request; [`EVICTED`] once told to close.
    idle_since: AtomicU64,
    evict: CancellationToken,
}

struct Inner {
    slots: HashMap<u64, Arc<Slot>>,
    per_address: HashMap<IpAddr, usize>,
    next_id: u64,
    /// Newcomers waiting for room under `max_total`: as many connections
    /// as this are told to go, no more.
    waiting: usize,
}

/// Why a client was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot was answering a request for [`ADMIT_WAIT`].
    Busy,
    /// Its address is at its cap and every one of its connections is busy.
    AddressBusy,
}

pub struct Slots {
    inner: Mutex<Inner>,
    /// Wakes admissions waiting for room: a slot was freed, or a
    /// connection finished an answer and may now be closed.
    freed: Notify,
    start: Instant,
    max_total: usize,
    max_per_address: usize,
}

impl Slots {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                per_address: HashMap::new(),
                next_id: 0,
                waiting: 0,
            }),
            freed: Notify::new(),
            start: Instant::now(),
            max_total: max_total.max(1),
            max_per_address: max_per_address.max(1),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// Admits a connection from `address` (`None`: a unix socket), closing
    /// the longest-idle connection when the limits are reached. Waits at
    /// most [`ADMIT_WAIT`] for a slot when nothing can be closed yet (every
    /// connection answering a request).
    pub async fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<Lease, Refused> {
        let mut waiting = Waiting {
            slots: self,
            counted: false,
        };
        let deadline = Instant::now() + ADMIT_WAIT;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the lock is released, so a slot freed in
            // between still wakes us.
            freed.as_mut().enable();
            {
                let mut inner = lock(&self.inner);
                let from_address = address
                    .and_then(|a| inner.per_address.get(&a).copied())
                    .unwrap_or(0);
                if from_address >= self.max_per_address {
                    // The peer's own longest-idle connection makes room (a
                    // lost race with one turning busy is looked at again).
                    let made_room = (0..EVICT_TRIES).any(|_| self.evict_idlest(&inner, address));
                    if !made_room && !self.evicting(&inner, address) {
                        return Err(Refused::AddressBusy);
                    }
                } else if inner.slots.len() >= self.max_total {
                    if !waiting.counted {
                        waiting.counted = true;
                        inner.waiting += 1;
                    }
                    // One connection told to go per newcomer waiting: one
                    // that has not left yet still makes room for it.
                    if self.evicted(&inner) < inner.waiting {
                        self.evict_idlest(&inner, None);
                    }
                } else {
                    return Ok(self.insert(&mut inner, address));
                }
            }
            // Woken when a slot is freed; a connection that merely
            // finished answering (and became closable) is seen at the next
            // look, which costs nothing on the request path.
            let next_look = (Instant::now() + RECHECK).min(deadline);
            let _ = tokio::time::timeout_at(next_look, freed).await;
            if Instant::now() >= deadline {
                return Err(Refused::Busy);
            }
        }
    }

    fn insert(self: &Arc<Self>, inner: &mut Inner, address: Option<IpAddr>) -> Lease {
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = Arc::new(Slot {
            address,
            idle_since: AtomicU64::new(self.now()),
            evict: CancellationToken::new(),
        });
        inner.slots.insert(id, slot.clone());
        if let Some(a) = address {
            *inner.per_address.entry(a).or_insert(0) += 1;
        }
        Lease {
            slots: self.clone(),
            id,
            slot,
        }
    }

    /// Asks the connection idle the longest (of `address`, or of all) to
    /// close; false when none is idle.
    fn evict_idlest(&self, inner: &Inner, address: Option<IpAddr>) -> bool {
        let idlest = inner
            .slots
            .values()
            .filter(|s| address.is_none() || s.address == address)
            .filter_map(|s| match s.idle_since.load(Ordering::SeqCst) {
                BUSY | EVICTED => None,
                since => Some((since, s)),
            })
            .min_by_key(|(since, _)| *since);
        match idlest {
            // Fails when it turned busy (or finished another answer) since
            // the look: the next look chooses again.
            Some((since, slot)) => slot
                .idle_since
                .compare_exchange(since, EVICTED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok_and(|_| {
                    slot.evict.cancel();
                    true
                }),
            None => false,
        }
    }

    /// Connections told to go that have not left yet.
    fn evicted(&self, inner: &Inner) -> usize {
        inner
            .slots
            .values()
            .filter(|s| s.idle_since.load(Ordering::SeqCst) == EVICTED)
            .count()
    }

    /// Whether a connection of `address` is already on its way out.
    fn evicting(&self, inner: &Inner, address: Option<IpAddr>) -> bool {
        inner
            .slots
            .values()
            .any(|s| s.address == address && s.idle_since.load(Ordering::SeqCst) == EVICTED)
    }

    /// Connections now.
    pub fn len(&self) -> usize {
        lock(&self.inner).slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tries at evicting one of a peer's idle connections when another
/// connection wins the race (turns busy) between the look and the swap.
const EVICT_TRIES: usize = 3;

/// A newcomer counted in [`Inner::waiting`] until its admission ends.
struct Waiting<'a> {
    slots: &'a Slots,
    counted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            lock(&self.slots.inner).waiting -= 1;
        }
    }
}

/// A connection's hold on its slot, released when dropped.
pub struct Lease {
    slots: Arc<Slots>,
    id: u64,
    slot: Arc<Slot>,
}

impl Lease {
    /// The connection finished an answer: from now on it may be closed to
    /// make room (a newcomer already waiting sees it at its next look,
    /// within [`RECHECK`]: no lock on the request path).
    pub fn idle(&self) {
        let now = self.slots.now();
        // Only from busy: a connection told to go stays told.
        let _ =
            self.slot
                .idle_since
                .compare_exchange(BUSY, now, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// A request is to be answered: the connection is not closed for
    /// others from now on. False when it was told to go already: then it
    /// must not start the answer, but close.
    pub fn busy(&self) -> bool {
        self.slot
            .idle_since
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |since| {
                (since != EVICTED).then_some(BUSY)
            })
            .is_ok()
    }

    /// Resolves when the connection is asked to close for a newcomer.
    pub async fn evicted(&self) {
        self.slot.evict.cancelled().await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = lock(&self.slots.inner);
        inner.slots.remove(&self.id);
        if let Some(a) = self.slot.address
            && let Some(n) = inner.per_address.get_mut(&a)
        {
            *n -= 1;
            if *n == 0 {
                inner.per_address.remove(&a);
            }
        }
        drop(inner);
        self.slots.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([198, 51, 100, last]))
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_makes_room() {
        let slots = Slots::new(2, 2);
        let a = slots.admit(ip(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let b = slots.admit(ip(2)).await.unwrap();
        // Full: the newcomer asks `a` (idle longest) to go, and gets its
        // slot once `a` has closed.
        let slots2 = slots.clone();
        let newcomer = tokio::spawn(async move { slots2.admit(ip(3)).await });
        tokio::task::yield_now().await;
        assert!(a.slot.evict.is_cancelled());
        assert!(!b.slot.evict.is_cancelled());
        drop(a);
        let c = newcomer.await.unwrap().unwrap();
        assert_eq!(slots.len(), 2);
        drop((b, c));
        assert!(slots.is_empty());
    }

    /// One newcomer waiting tells one connection to go, however long that
    /// one takes to leave (its thread may be busy): not one more per look.
    #[tokio::test(start_paused = true)]
    async fn a_newcomer_waits_for_one_eviction_not_many() {
        let slots = Slots::new(5, 5);
        let mut held = Vec::new();
        for n in 1..=5 {
            held.push(slots.admit(ip(n)).await.unwrap());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let slots2 = slots.clone();
        let newcomer = tokio::spawn(async move { slots2.admit(ip(9)).await });
        // Many looks while the evicted connection has not left.
        tokio::time::sleep(RECHECK * 20).await;
        let told: Vec<bool> = held.iter().map(|l| l.slot.evict.is_cancelled()).collect();
        assert_eq!(told, [true, false, false, false, false]);
        held.remove(0);
        assert!(newcomer.await.unwrap().is_ok());
        assert!(held.iter().all(|l| !l.slot.evict.is_cancelled()));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_are_never_closed() {
        let slots = Slots::new(1, 1);
        let a = slots.admit(None).await.unwrap();
        a.busy();
        assert_eq!(slots.admit(None).await.err(), Some(Refused::Busy));
        assert!(!a.slot.evict.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_finishes_its_answer_makes_room() {
        let slots = Slots::new(1, 1);
        let a = slots.admit(None).await.unwrap();
        a.busy();
        let slots2 = slots.clone();
        let newcomer = tokio::spawn(async move { slots2.admit(None).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!a.slot.evict.is_cancelled());
        a.idle();
        tokio::time::sleep(RECHECK * 2).await;
        assert!(a.slot.evict.is_cancelled());
        drop(a);
        assert!(newcomer.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_at_its_cap_makes_room_from_its_own() {
        let slots = Slots::new(10, 2);
        let a1 = slots.admit(ip(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let other = slots.admit(ip(2)).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let a2 = slots.admit(ip(1)).await.unwrap();
        let slots2 = slots.clone();
        let a3 = tokio::spawn(async move { slots2.admit(ip(1)).await });
        tokio::task::yield_now().await;
        assert!(a1.slot.evict.is_cancelled());
        assert!(!other.slot.evict.is_cancelled() && !a2.slot.evict.is_cancelled());
        drop(a1);
        let _a3 = a3.await.unwrap().unwrap();
        // At its cap with every connection busy: refused at once.
        a2.busy();
        _a3.busy();
        assert_eq!(slots.admit(ip(1)).await.err(), Some(Refused::AddressBusy));
    }

    /// A connection chosen to make room while idle cannot then start an
    /// answer (which would hold the slot, never cut, while the newcomer
    /// waits for it); one that turned busy first is not chosen.
    #[tokio::test(start_paused = true)]
    async fn a_connection_told_to_go_starts_no_answer() {
        let slots = Slots::new(1, 1);
        let a = slots.admit(None).await.unwrap();
        let slots2 = slots.clone();
        let newcomer = tokio::spawn(async move { slots2.admit(None).await });
        tokio::task::yield_now().await;
        assert!(a.slot.evict.is_cancelled());
        assert!(!a.busy(), "told to go, yet it turned busy");
        // Nor does finishing an answer make it stay.
        a.idle();
        assert!(!a.busy());
        drop(a);
        let b = newcomer.await.unwrap().unwrap();
        assert!(b.busy());
        assert_eq!(slots.admit(None).await.err(), Some(Refused::Busy));
        assert!(!b.slot.evict.is_cancelled());
    }
}
