//! The rate-limit operation: one record per (limit, key) holding a sliding
//! window of [`SLICES`] fixed slices of message and recipient counts, the
//! client networks seen in the window, and the last instances counted.
//! Each backend runs [`check`] and [`count`] (or their Lua twins in
//! redis.rs) atomically: one redb transaction, one Redis script.
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
}

/// What a key used in the window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    pub messages: u64,
    pub recipients: u64,
    pub networks: Vec<String>,
}

/// Which budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Messages,
    Recipients,
    DistinctClients,
}

impl Exceeded {
    /// Its code in the Redis script's answer (0: none).
    pub fn code(e: Option<Exceeded>) -> u64 {
        match e {
            None => 0,
            Some(Exceeded::Messages) => 1,
            Some(Exceeded::Recipients) => 2,
            Some(Exceeded::DistinctClients) => 3,
        }
    }

    pub fn from_code(code: u64) -> Option<Exceeded> {
        match code {
            1 => Some(Exceeded::Messages),
            2 => Some(Exceeded::Recipients),
            3 => Some(Exceeded::DistinctClients),
            _ => None,
        }
    }
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub usage: Usage,
    pub exceeded: Option<Exceeded>,
}

/// The answer to a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub usage: Usage,
    /// The instance was counted before: nothing was added.
    pub repeated: bool,
}

/// The record as of `p.now`: slices older than the window emptied,
/// networks not seen within it dropped. A clock that went back keeps the
/// newer slice.
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
    r
}

fn usage(r: &Record) -> Usage {
    Usage {
        messages: r.messages.iter().map(|n| u64::from(*n)).sum(),
        recipients: r.recipients.iter().map(|n| u64::from(*n)).sum(),
        networks: r.networks.iter().map(|(n, _)| n.clone()).collect(),
    }
}

/// Whether one more message from `network` fits the budgets (read-only).
pub fn check(record: Option<Record>, p: &RateParams, network: &str) -> Check {
    let r = current(record, p);
    let usage = usage(&r);
    let new_network = !usage.networks.iter().any(|n| n == network);
    let exceeded = if p.messages > 0 && usage.messages >= p.messages {
        Some(Exceeded::Messages)
    } else if p.recipients > 0 && usage.recipients >= p.recipients {
        Some(Exceeded::Recipients)
    } else if p.distinct_clients > 0
        && new_network
        && usage.networks.len() as u64 >= p.distinct_clients
    {
        Some(Exceeded::DistinctClients)
    } else {
        None
    };
    Check { usage, exceeded }
}

/// Counts one message of `recipients` recipients from `network`, unless
/// `tag` (an [`instance_tag`]) was counted before. Returns the answer and
/// the record to write (none for a repeat).
pub fn count(
    record: Option<Record>,
    p: &RateParams,
    network: &str,
    recipients: u32,
    tag: &str,
) -> (Counted, Option<Record>) {
    let mut r = current(record, p);
    if !tag.is_empty() && r.instances.iter().any(|t| t == tag) {
        let usage = usage(&r);
        return (
            Counted {
                usage,
                repeated: true,
            },
            None,
        );
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
/// rings, then the networks and instances, each length-prefixed. Bounded:
/// networks by `distinct_clients` + 1 (at most [`crate`]'s config limit),
/// instances by [`INSTANCES_KEPT`].
const VERSION: u8 = 1;

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        out.extend_from_slice(&self.slice.to_be_bytes());
        for n in self.messages.iter().chain(&self.recipients) {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&(self.networks.len() as u16).to_be_bytes());
        for (net, seen) in &self.networks {
            out.push(net.len().min(255) as u8);
            out.extend_from_slice(&net.as_bytes()[..net.len().min(255)]);
            out.extend_from_slice(&seen.to_be_bytes());
        }
        out.push(self.instances.len().min(255) as u8);
        for t in self.instances.iter().take(255) {
            out.push(t.len().min(255) as u8);
            out.extend_from_slice(&t.as_bytes()[..t.len().min(255)]);
        }
        out
    }

    /// `None` for bytes this version did not write (the record starts over).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let mut rd = Reader(bytes);
        if rd.take(1)?[0] != VERSION {
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
        Some(r)
    }
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
        let (c, w) = count(record.clone(), &params(now), net, rcpts, tag);
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
            assert_eq!(check(r.clone(), &params(t0 + at), "a").exceeded, None);
            let c = add(&mut r, t0 + at, "a", 1, &format!("i{n}"));
            assert_eq!(c.usage.messages, n as u64 + 1);
        }
        assert_eq!(
            check(r.clone(), &params(t0 + 30), "a").exceeded,
            Some(Exceeded::Messages)
        );
        // Still within the window 11 slices later; out of it at 12.
        assert_eq!(
            check(r.clone(), &params(t0 + 11 * 300), "a").exceeded,
            Some(Exceeded::Messages)
        );
        assert_eq!(check(r.clone(), &params(t0 + 3600), "a").exceeded, None);
    }

    #[test]
    fn recipients_and_networks() {
        let t0 = 3600 * 1000;
        let mut r = None;
        add(&mut r, t0, "a", 4, "");
        assert_eq!(check(r.clone(), &params(t0), "a").exceeded, None);
        add(&mut r, t0, "b", 1, "");
        // Two networks seen: a third is one too many, the known ones are not.
        assert_eq!(
            check(r.clone(), &params(t0), "c").exceeded,
            Some(Exceeded::Recipients)
        );
        let mut r2 = None;
        add(&mut r2, t0, "a", 1, "");
        add(&mut r2, t0 + 1, "b", 1, "");
        assert_eq!(check(r2.clone(), &params(t0 + 2), "a").exceeded, None);
        assert_eq!(
            check(r2.clone(), &params(t0 + 2), "c").exceeded,
            Some(Exceeded::DistinctClients)
        );
        // A network not seen for a window is forgotten.
        assert_eq!(check(r2, &params(t0 + 3601), "c").exceeded, None);
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
        let r = r.unwrap();
        assert_eq!(r.networks.len(), 3, "distinct_clients + 1");
        assert_eq!(r.instances.len(), INSTANCES_KEPT);
        assert_eq!(Record::decode(&r.encode()), Some(r));
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
