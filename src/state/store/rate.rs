//! The rate-limit operation: one record per (limit, key) holding a sliding
//! window of [`SLICES`] fixed slices of message and recipient counts, the
//! client networks seen in the window, the last instances counted, and the
//! reservations of transactions under way. Each backend runs [`hold`],
//! [`settle`] and [`release`] (or their Lua twins in redis.rs) atomically:
//! one redb transaction, one Redis script.
//!
//! Why reservations: a budget read at RCPT and counted at END-OF-MESSAGE
//! lets parallel transactions all pass the same reading. So a RCPT holds
//! room (one message per transaction, one recipient per RCPT) only if
//! the counts, the other transactions' reservations and this one fit,
//! in the same atomic step; END-OF-MESSAGE holds the message's real
//! recipient count the same way, and once the chain accepts it the
//! reservation becomes the count ([`settle`]).
//!
//! Why slices and not a token bucket: the record keeps a fixed size, the
//! counts read as "N messages in the last hour" (what the admin and the
//! warning say), and the distinct networks need a window anyway. A count
//! leaves the window one slice (window/12) at a time, between 11/12 of the
//! window and the whole window after it was made.
//!
//! Times are wall-clock seconds since the epoch: the records outlive the
//! process and are shared between hosts.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// Slices of a window: 12 gives a 5-minute step for an hour.
pub const SLICES: u64 = 12;

/// Instances remembered per record so that a repeated END-OF-MESSAGE
/// request (Postfix retries a request once when the connection broke) is
/// not counted twice; a retry follows at once, so a few suffice.
pub const INSTANCES_KEPT: usize = 8;

/// Seconds a transaction's reservation lasts without news: longer than a
/// whole transaction under Postfix's defaults (smtpd_timeout of 300 s per
/// command, the DATA of a large message on a slow line), short enough that
/// a transaction abandoned without a word (QUIT, a dropped connection:
/// Postfix tells the policy server nothing) blocks its budget for minutes,
/// not the window. One that outlives it is checked again at END-OF-MESSAGE.
pub const RESERVATION_TTL: u64 = 900;

/// Reservations one record holds at once: more transactions of one login,
/// client or sender under way together than this is no mail client but a
/// flood; each costs some 60 bytes of the record. A transaction beyond it
/// is deferred, never let through unreserved.
pub const MAX_RESERVATIONS: usize = 64;

/// Networks kept for the warning when a limit has no `distinct_clients`.
pub const NETWORKS_LOGGED: usize = 5;

/// A record's key: SHA-256 of the length-prefixed limit name, key kind and
/// key value, so a record has a fixed size whatever the client sends and
/// no value of one key can name another's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateKey(pub [u8; 32]);

impl RateKey {
    pub fn new(limit: &str, kind: &str, value: &str) -> RateKey {
        let mut h = Sha256::new();
        for part in [limit, kind, value] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        RateKey(h.finalize().into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A client's network as the limit counts it: the /24 of an IPv4 address,
/// the /64 of an IPv6 one (what one site or one customer line holds).
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return network_of(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// An instance as the record keeps it: 64 bits of its SHA-256, in hex (Lua
/// numbers cannot hold 64-bit integers). Empty: no instance, not deduplicated.
pub fn instance_tag(instance: &str) -> String {
    if instance.is_empty() {
        return String::new();
    }
    let d = Sha256::digest(instance.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One limit's settings for one call, in seconds; 0 means "no such limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateParams {
    pub now: u64,
    pub window: u64,
    pub messages: u64,
    pub recipients: u64,
    pub distinct_clients: u64,
}

impl RateParams {
    /// Seconds per slice (the window rounded up to whole slices).
    pub fn slice_len(&self) -> u64 {
        self.window.div_ceil(SLICES).max(1)
    }

    /// How long a count stays in the window at most: 12 whole slices
    /// (the window, or a few seconds more when it is not a multiple of 12 s).
    pub fn span(&self) -> u64 {
        self.slice_len() * SLICES
    }

    /// How long a record written now is kept: its newest count's span, or
    /// a reservation's life if that is longer.
    pub fn keep(&self) -> u64 {
        self.span().max(RESERVATION_TTL)
    }

    fn slice(&self) -> u64 {
        self.now / self.slice_len()
    }

    /// Networks a record keeps: one beyond the limit, so the crossing shows.
    pub fn networks_kept(&self) -> usize {
        match self.distinct_clients {
            0 => NETWORKS_LOGGED,
            n => usize::try_from(n).unwrap_or(usize::MAX).saturating_add(1),
        }
    }
}

/// A key's record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Index of the newest slice (seconds since the epoch / slice length).
    pub slice: u64,
    /// Counts per slice, by slice index modulo [`SLICES`].
    pub messages: [u32; SLICES as usize],
    pub recipients: [u32; SLICES as usize],
    /// Client networks with when each was last counted, oldest first.
    pub networks: Vec<(String, u64)>,
    /// The last instance tags counted, oldest first.
    pub instances: Vec<String>,
    /// Transactions under way, oldest first, at most [`MAX_RESERVATIONS`].
    pub reservations: Vec<Reservation>,
}

/// The room one transaction holds: one message, its recipients so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reservation {
    /// The transaction's [`instance_tag`].
    pub tag: String,
    /// When it lapses (seconds since the epoch).
    pub expires: u64,
    pub recipients: u32,
    /// The client's network, for `distinct_clients`.
    pub network: String,
    /// The tag of the last recipient held ([`instance_tag`] of the
    /// address): a RCPT repeated (Postfix retrying it) holds no more.
    pub last: String,
}

/// What a request holds in its transaction's reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Nothing: would one more recipient of this transaction fit (MAIL)?
    Probe,
    /// One more recipient, by its tag (RCPT).
    Rcpt(String),
    /// The whole message: its recipient count (END-OF-MESSAGE).
    Message(u32),
}

/// What a key used in the window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    pub messages: u64,
    pub recipients: u64,
    pub networks: Vec<String>,
    /// Live reservations: transactions under way and their recipients.
    pub held_messages: u64,
    pub held_recipients: u64,
}

/// Which budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Messages,
    Recipients,
    DistinctClients,
    /// [`MAX_RESERVATIONS`] transactions under way already.
    Transactions,
}

impl Exceeded {
    /// Its code in the Redis script's answer (0: none).
    pub fn code(e: Option<Exceeded>) -> u64 {
        match e {
            None => 0,
            Some(Exceeded::Messages) => 1,
            Some(Exceeded::Recipients) => 2,
            Some(Exceeded::DistinctClients) => 3,
            Some(Exceeded::Transactions) => 5,
        }
    }

    pub fn from_code(code: u64) -> Option<Exceeded> {
        match code {
            1 => Some(Exceeded::Messages),
            2 => Some(Exceeded::Recipients),
            3 => Some(Exceeded::DistinctClients),
            5 => Some(Exceeded::Transactions),
            _ => None,
        }
    }
}

/// The answer to a check or a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub usage: Usage,
    pub exceeded: Option<Exceeded>,
    /// This call made the transaction's reservation (its first hold).
    pub created: bool,
}

/// The answer to a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub usage: Usage,
    /// The instance was counted before: nothing was added.
    pub repeated: bool,
}

/// The record as of `p.now`: slices older than the window emptied,
/// networks not seen within it dropped, lapsed reservations dropped. A
/// clock that went back keeps the newer slice.
fn current(record: Option<Record>, p: &RateParams) -> Record {
    let mut r = record.unwrap_or_default();
    let cur = p.slice();
    if cur > r.slice {
        if cur - r.slice >= SLICES {
            r.messages = Default::default();
            r.recipients = Default::default();
        } else {
            for s in r.slice + 1..=cur {
                r.messages[(s % SLICES) as usize] = 0;
                r.recipients[(s % SLICES) as usize] = 0;
            }
        }
        r.slice = cur;
    }
    r.networks
        .retain(|(_, seen)| p.now.saturating_sub(*seen) < p.window);
    r.reservations.retain(|h| h.expires > p.now);
    r
}

fn usage(r: &Record) -> Usage {
    Usage {
        messages: r.messages.iter().map(|n| u64::from(*n)).sum(),
        recipients: r.recipients.iter().map(|n| u64::from(*n)).sum(),
        networks: r.networks.iter().map(|(n, _)| n.clone()).collect(),
        held_messages: r.reservations.len() as u64,
        held_recipients: r.reservations.iter().map(|h| u64::from(h.recipients)).sum(),
    }
}

fn counted(r: &Record, tag: &str) -> bool {
    !tag.is_empty() && r.instances.iter().any(|t| t == tag)
}

fn reservation(r: &Record, tag: &str) -> Option<usize> {
    if tag.is_empty() {
        return None;
    }
    r.reservations.iter().position(|h| h.tag == tag)
}

/// Whether this transaction (`tag`, from `network`) holding `hold` fits
/// the budgets beside the counts and the other transactions' live
/// reservations; when it does and `tag` is not empty, the record to write
/// with the reservation made or updated. The END-OF-MESSAGE of an
/// instance counted before (Postfix retrying it) fits and changes nothing;
/// at other stages such an instance is checked like any (it cannot be a
/// retry there). Without an instance nothing can be held, so it is only
/// checked.
pub fn hold(
    record: Option<Record>,
    p: &RateParams,
    network: &str,
    tag: &str,
    hold: &Hold,
) -> (Check, Option<Record>) {
    let mut r = current(record, p);
    let before = usage(&r);
    if counted(&r, tag) && matches!(hold, Hold::Message(_)) {
        let check = Check {
            usage: before,
            exceeded: None,
            created: false,
        };
        return (check, None);
    }
    let mine = reservation(&r, tag).map(|j| r.reservations[j].clone());
    let (mine_rcpts, last) = mine
        .as_ref()
        .map_or((0, ""), |h| (h.recipients, h.last.as_str()));
    let (recipients, last) = match hold {
        Hold::Probe => (mine_rcpts.saturating_add(1), last.to_string()),
        Hold::Rcpt(to) if !to.is_empty() && mine.is_some() && to == last => {
            (mine_rcpts, to.clone())
        }
        Hold::Rcpt(to) => (mine_rcpts.saturating_add(1), to.clone()),
        Hold::Message(n) => (*n, last.to_string()),
    };
    let others = r.reservations.iter().filter(|h| h.tag != tag);
    let other_messages = before.held_messages - u64::from(mine.is_some());
    let other_recipients = before.held_recipients - u64::from(mine_rcpts);
    let mut networks: Vec<&str> = before.networks.iter().map(String::as_str).collect();
    for h in others {
        if !networks.contains(&h.network.as_str()) {
            networks.push(&h.network);
        }
    }
    let exceeded = if p.messages > 0 && before.messages + other_messages + 1 > p.messages {
        Some(Exceeded::Messages)
    } else if p.recipients > 0
        && before.recipients + other_recipients + u64::from(recipients) > p.recipients
    {
        Some(Exceeded::Recipients)
    } else if p.distinct_clients > 0
        && !networks.contains(&network)
        && networks.len() as u64 >= p.distinct_clients
    {
        Some(Exceeded::DistinctClients)
    } else if mine.is_none() && other_messages >= MAX_RESERVATIONS as u64 {
        Some(Exceeded::Transactions)
    } else {
        None
    };
    if exceeded.is_some() || tag.is_empty() || *hold == Hold::Probe {
        let check = Check {
            usage: before,
            exceeded,
            created: false,
        };
        return (check, None);
    }
    r.reservations.retain(|h| h.tag != tag);
    r.reservations.push(Reservation {
        tag: tag.to_string(),
        expires: p.now + RESERVATION_TTL,
        recipients,
        network: network.to_string(),
        last,
    });
    let check = Check {
        usage: usage(&r),
        exceeded: None,
        created: mine.is_none(),
    };
    (check, Some(r))
}

/// Whether one more message from `network` fits the budgets (read-only):
/// [`hold`] of [`Hold::Probe`].
pub fn check(record: Option<Record>, p: &RateParams, network: &str, tag: &str) -> Check {
    hold(record, p, network, tag, &Hold::Probe).0
}

/// Drops `tag`'s reservation (its transaction was refused); the record to
/// write, none when there was nothing to drop.
pub fn release(record: Option<Record>, p: &RateParams, tag: &str) -> Option<Record> {
    let mut r = current(record, p);
    let j = reservation(&r, tag)?;
    r.reservations.remove(j);
    Some(r)
}

/// Counts one accepted message of `recipients` recipients from `network`
/// in place of its reservation, unless `tag` (an [`instance_tag`]) was
/// counted before. No budget is checked: the message is accepted, and
/// its hold at END-OF-MESSAGE made the room. Returns the answer and the
/// record to write (none for a repeat that held nothing).
pub fn settle(
    record: Option<Record>,
    p: &RateParams,
    network: &str,
    recipients: u32,
    tag: &str,
) -> (Counted, Option<Record>) {
    let mut r = current(record, p);
    let held = reservation(&r, tag);
    if let Some(j) = held {
        r.reservations.remove(j);
    }
    if counted(&r, tag) {
        // A repeat holds nothing either (its RCPT may have reserved).
        let counted = Counted {
            usage: usage(&r),
            repeated: true,
        };
        return (counted, held.map(|_| r));
    }
    let i = (r.slice % SLICES) as usize;
    r.messages[i] = r.messages[i].saturating_add(1);
    r.recipients[i] = r.recipients[i].saturating_add(recipients);
    match r.networks.iter().position(|(n, _)| n == network) {
        Some(k) => {
            r.networks.remove(k);
        }
        None if r.networks.len() >= p.networks_kept() => {
            r.networks.remove(0);
        }
        None => {}
    }
    r.networks.push((network.to_string(), p.now));
    if !tag.is_empty() {
        if r.instances.len() >= INSTANCES_KEPT {
            r.instances.remove(0);
        }
        r.instances.push(tag.to_string());
    }
    (
        Counted {
            usage: usage(&r),
            repeated: false,
        },
        Some(r),
    )
}

/// Record encoding for the embedded store: version, slice, the two count
/// rings, then the networks, instances and reservations, each
/// length-prefixed. Bounded: networks by `distinct_clients` + 1 (at most
/// [`crate`]'s config limit), instances by [`INSTANCES_KEPT`],
/// reservations by [`MAX_RESERVATIONS`]. Version 1 had no reservations;
/// its records are read on.
const VERSION: u8 = 2;

impl Record {
    /// When the record may go: its newest count's span (or a reservation's
    /// life, if longer) from now while it holds counts; with reservations
    /// alone, when the last of them lapses; `None` when it holds nothing
    /// (a released RCPT's record: kept, every refused attempt of a new
    /// key would take one of `max_rate_records` for the whole window).
    pub fn expires(&self, p: &RateParams) -> Option<u64> {
        let counts = !self.networks.is_empty()
            || !self.instances.is_empty()
            || self.messages.iter().chain(&self.recipients).any(|n| *n > 0);
        if counts {
            return Some(p.now + p.keep());
        }
        self.reservations.iter().map(|h| h.expires).max()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        out.extend_from_slice(&self.slice.to_be_bytes());
        for n in self.messages.iter().chain(&self.recipients) {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&(self.networks.len() as u16).to_be_bytes());
        for (net, seen) in &self.networks {
            text(&mut out, net);
            out.extend_from_slice(&seen.to_be_bytes());
        }
        out.push(self.instances.len().min(255) as u8);
        for t in self.instances.iter().take(255) {
            text(&mut out, t);
        }
        out.push(self.reservations.len().min(255) as u8);
        for h in self.reservations.iter().take(255) {
            text(&mut out, &h.tag);
            out.extend_from_slice(&h.expires.to_be_bytes());
            out.extend_from_slice(&h.recipients.to_be_bytes());
            text(&mut out, &h.network);
            text(&mut out, &h.last);
        }
        out
    }

    /// `None` for bytes this version did not write (the record starts over).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let mut rd = Reader(bytes);
        let version = rd.take(1)?[0];
        if version != 1 && version != VERSION {
            return None;
        }
        let mut r = Record {
            slice: rd.u64()?,
            ..Record::default()
        };
        for n in r.messages.iter_mut().chain(r.recipients.iter_mut()) {
            *n = u32::from_be_bytes(rd.take(4)?.try_into().ok()?);
        }
        let nets = u16::from_be_bytes(rd.take(2)?.try_into().ok()?);
        for _ in 0..nets {
            let net = rd.text()?;
            r.networks.push((net, rd.u64()?));
        }
        let tags = rd.take(1)?[0];
        for _ in 0..tags {
            r.instances.push(rd.text()?);
        }
        if version == 1 {
            return Some(r);
        }
        let held = rd.take(1)?[0];
        for _ in 0..held {
            r.reservations.push(Reservation {
                tag: rd.text()?,
                expires: rd.u64()?,
                recipients: u32::from_be_bytes(rd.take(4)?.try_into().ok()?),
                network: rd.text()?,
                last: rd.text()?,
            });
        }
        Some(r)
    }
}

/// A length-prefixed text of at most 255 bytes.
fn text(out: &mut Vec<u8>, t: &str) {
    out.push(t.len().min(255) as u8);
    out.extend_from_slice(&t.as_bytes()[..t.len().min(255)]);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn text(&mut self) -> Option<String> {
        let n = self.take(1)?[0] as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(now: u64) -> RateParams {
        RateParams {
            now,
            window: 3600,
            messages: 3,
            recipients: 5,
            distinct_clients: 2,
        }
    }

    /// Runs a count against `record` as a backend would.
    fn add(record: &mut Option<Record>, now: u64, net: &str, rcpts: u32, tag: &str) -> Counted {
        let (c, w) = settle(record.clone(), &params(now), net, rcpts, tag);
        if w.is_some() {
            *record = w;
        }
        c
    }

    #[test]
    fn messages_are_spent_and_age_out_slice_by_slice() {
        let t0 = 3600 * 1000;
        let mut r = None;
        for (n, at) in [0, 10, 20].into_iter().enumerate() {
            assert_eq!(check(r.clone(), &params(t0 + at), "a", "").exceeded, None);
            let c = add(&mut r, t0 + at, "a", 1, &format!("i{n}"));
            assert_eq!(c.usage.messages, n as u64 + 1);
        }
        assert_eq!(
            check(r.clone(), &params(t0 + 30), "a", "").exceeded,
            Some(Exceeded::Messages)
        );
        // Still within the window 11 slices later; out of it at 12.
        assert_eq!(
            check(r.clone(), &params(t0 + 11 * 300), "a", "").exceeded,
            Some(Exceeded::Messages)
        );
        assert_eq!(check(r.clone(), &params(t0 + 3600), "a", "").exceeded, None);
    }

    #[test]
    fn recipients_and_networks() {
        let t0 = 3600 * 1000;
        let mut r = None;
        add(&mut r, t0, "a", 4, "");
        assert_eq!(check(r.clone(), &params(t0), "a", "").exceeded, None);
        add(&mut r, t0, "b", 1, "");
        // Two networks seen: a third is one too many, the known ones are not.
        assert_eq!(
            check(r.clone(), &params(t0), "c", "").exceeded,
            Some(Exceeded::Recipients)
        );
        let mut r2 = None;
        add(&mut r2, t0, "a", 1, "");
        add(&mut r2, t0 + 1, "b", 1, "");
        assert_eq!(check(r2.clone(), &params(t0 + 2), "a", "").exceeded, None);
        assert_eq!(
            check(r2.clone(), &params(t0 + 2), "c", "").exceeded,
            Some(Exceeded::DistinctClients)
        );
        // A network not seen for a window is forgotten.
        assert_eq!(check(r2, &params(t0 + 3601), "c", "").exceeded, None);
    }

    #[test]
    fn an_instance_counts_once_and_networks_stay_bounded() {
        let t0 = 3600 * 1000;
        let mut r = None;
        add(&mut r, t0, "a", 2, "x");
        let again = add(&mut r, t0, "a", 2, "x");
        assert!(again.repeated);
        assert_eq!(again.usage.messages, 1);
        assert_eq!(again.usage.recipients, 2);
        for n in 0..50 {
            add(&mut r, t0, &format!("net{n}"), 1, &format!("t{n}"));
        }
        let mut r = r.unwrap();
        assert_eq!(r.networks.len(), 3, "distinct_clients + 1");
        assert_eq!(r.instances.len(), INSTANCES_KEPT);
        assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
        // Reservations round-trip; a version 1 record (none) is read on.
        let v1 = r.encode();
        let (c, held) = hold(
            Some(r.clone()),
            &RateParams {
                messages: 0,
                recipients: 0,
                distinct_clients: 0,
                ..params(t0)
            },
            "a",
            "h1",
            &Hold::Rcpt("x".into()),
        );
        assert!(c.created);
        let held = held.unwrap();
        assert_eq!(Record::decode(&held.encode()), Some(held));
        let mut v1 = v1[..v1.len() - 1].to_vec();
        v1[0] = 1;
        r.reservations.clear();
        assert_eq!(Record::decode(&v1), Some(r));
        assert_eq!(Record::decode(b"\x02junk"), None);
        assert_eq!(Record::decode(b""), None);
    }

    #[test]
    fn keys_networks_and_tags() {
        assert_ne!(
            RateKey::new("l", "sender", "a"),
            RateKey::new("l", "sende", "ra")
        );
        assert_ne!(RateKey::new("l", "k", "a"), RateKey::new("m", "k", "a"));
        assert_eq!(
            network_of("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            network_of("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            network_of("::ffff:198.51.100.9".parse().unwrap()),
            "198.51.100.0/24"
        );
        assert_eq!(instance_tag("").len(), 0);
        assert_eq!(instance_tag("1a2b.3c").len(), 16);
    }
}
