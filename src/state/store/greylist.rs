//! The greylisting operation, as postgrey 1.37 does it
//! (`smtpd_access_policy`), on two records: the triplet's (first seen,
//! last seen) and the client's auto-whitelist (count, last increment).
//! Each backend runs [`decide`] (or its Lua twin in redis.rs) atomically:
//! one redb write transaction, one Redis script.
//!
//! Times are wall-clock seconds since the epoch: the records outlive the
//! process and are shared between hosts.

use sha2::{Digest, Sha256};

/// A triplet's key: SHA-256 of its length-prefixed parts, so a record has
/// a fixed size whatever the client sends, and no choice of local part can
/// make two triplets share one key (each part carries its own length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TripletKey(pub [u8; 32]);

impl TripletKey {
    /// `client_net`, the normalised sender and the recipient, lowercased
    /// as postgrey does (`lc "$client_net/$sender/$recipient"`).
    pub fn new(client_net: &str, sender: &str, recipient: &str) -> TripletKey {
        let mut h = Sha256::new();
        for part in [client_net, sender, recipient] {
            let part = part.to_lowercase();
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        TripletKey(h.finalize().into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Longest address a triplet's details keep (RFC 5321's path limit); a
/// longer one is cut to this with `...` at its end, so a hostile 64 KB
/// sender costs what a 256-byte one costs.
pub const MAX_DETAIL_ADDRESS: usize = 256;
/// Longest sender domain kept (RFC 1035's name limit).
pub const MAX_DETAIL_DOMAIN: usize = 255;
/// Longest client network kept (an IPv6 address is at most 39).
pub const MAX_DETAIL_NETWORK: usize = 45;
/// The most a triplet's details take, encoded: a report costs at most
/// this beside each triplet's 32-byte key and two times.
pub const MAX_DETAILS: usize = MAX_DETAIL_NETWORK + MAX_DETAIL_DOMAIN + 2 * MAX_DETAIL_ADDRESS + 3;

/// What a report shows of a triplet beside its times (postgreyreport's
/// columns): the client network, the sender's domain, and the sender and
/// recipient, in full or, with `[greylist] privacy`, as digests. Each
/// field is bounded and holds no tab or control character, so the encoded
/// form ([`Self::encode`], tab-separated) is at most [`MAX_DETAILS`]
/// bytes and safe to print.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TripletInfo {
    pub net: String,
    pub sender_domain: String,
    pub sender: String,
    pub recipient: String,
}

/// `s` without control characters, at most `max` bytes (cut at a character
/// boundary, `...` marking the cut).
fn bounded(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    let mut end = max - 3;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &clean[..end])
}

/// An address as `privacy` keeps it: `sha256:` and the first 16 bytes of
/// the digest of the lowercased address, in hex (postgrey --privacy keeps
/// SHA-1 digests).
pub fn private_address(address: &str) -> String {
    let d = Sha256::digest(address.to_lowercase().as_bytes());
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl TripletInfo {
    /// The details of the triplet of `net`, the normalised `sender` and
    /// `recipient`, lowercased as the key is; with `privacy` the two
    /// addresses are digests (the domain and network stay readable).
    pub fn new(net: &str, sender: &str, recipient: &str, privacy: bool) -> TripletInfo {
        let (sender, recipient) = (sender.to_lowercase(), recipient.to_lowercase());
        let domain = sender.rsplit_once('@').map_or("", |(_, d)| d);
        let address = |a: &str| {
            if privacy {
                private_address(a)
            } else {
                bounded(a, MAX_DETAIL_ADDRESS)
            }
        };
        TripletInfo {
            net: bounded(net, MAX_DETAIL_NETWORK),
            sender_domain: bounded(domain, MAX_DETAIL_DOMAIN),
            sender: address(&sender),
            recipient: address(&recipient),
        }
    }

    /// Tab-separated fields, as both backends store them.
    pub fn encode(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}",
            self.net, self.sender_domain, self.sender, self.recipient
        )
    }

    /// The fields of [`Self::encode`]d text; `None` for anything else (a
    /// record written without details).
    pub fn decode(text: &str) -> Option<TripletInfo> {
        let mut f = text.split('\t');
        let info = TripletInfo {
            net: f.next()?.to_string(),
            sender_domain: f.next()?.to_string(),
            sender: f.next()?.to_string(),
            recipient: f.next()?.to_string(),
        };
        f.next().is_none().then_some(info)
    }
}

/// The settings one check uses, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreylistParams {
    pub now: u64,
    pub delay: u64,
    pub retry_window: u64,
    pub max_age: u64,
    /// Passes after which a client skips greylisting; 0: off.
    pub auto_whitelist_clients: u64,
}

/// postgrey counts a client's pass at most once an hour.
pub const AWL_INCREMENT_EVERY: u64 = 3600;

/// A triplet's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triplet {
    pub first: u64,
    pub last: u64,
}

/// A client's auto-whitelist record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub count: u64,
    pub last: u64,
}

/// What the store says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The client passed greylisting often enough (postgrey "client AWL").
    AutoWhitelisted { count: u64 },
    /// Too early: `missing` seconds are left (postgrey "new" when
    /// `first_seen`, else "early-retry").
    Greylisted { missing: u64, first_seen: bool },
    /// The first pass after waiting `delayed` seconds: the message gets the
    /// X-Greylist header. `whitelisted_now`: this pass made the client
    /// reach the auto-whitelist count.
    Passed { delayed: u64, whitelisted_now: bool },
    /// The triplet passed before (postgrey "triplet found").
    Known,
    /// A new triplet, deferred as new but not stored: its retry is new
    /// again, so it stays deferred until there is room (never accepted).
    NotStored { missing: u64, why: NotStored },
}

/// Why a new triplet was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Its client network holds `max_unconfirmed_per_network` unconfirmed
    /// triplets and none of them is indexed to make room (an embedded
    /// file from before the per-network index).
    NetworkCap,
    /// `max_triplets` are held and none is indexed to make room.
    Full,
}

impl NotStored {
    /// Its code in the Redis script's answer.
    pub fn code(self) -> u64 {
        match self {
            NotStored::NetworkCap => 1,
            NotStored::Full => 2,
        }
    }

    pub fn from_code(code: u64) -> NotStored {
        if code == 1 {
            NotStored::NetworkCap
        } else {
            NotStored::Full
        }
    }
}

impl std::fmt::Display for NotStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotStored::NetworkCap => {
                "its client network holds max_unconfirmed_per_network unconfirmed triplets"
            }
            NotStored::Full => "max_triplets reached, and no triplet indexed to make room",
        })
    }
}

/// What [`decide`] wants written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writes {
    pub triplet: Option<Triplet>,
    pub client: Option<Client>,
}

/// A record older than `max_age` counts as absent: the sweep removes it
/// eventually, and until it does it must not count (postgrey's nightly
/// maintenance has the same effect).
fn alive<T>(record: Option<T>, last: impl Fn(&T) -> u64, p: &GreylistParams) -> Option<T> {
    record.filter(|r| p.now.saturating_sub(last(r)) <= p.max_age)
}

/// postgrey's algorithm over the two records as stored.
pub fn decide(
    triplet: Option<Triplet>,
    client: Option<Client>,
    p: &GreylistParams,
) -> (Verdict, Writes) {
    let now = p.now;
    let triplet = alive(triplet, |t| t.last, p);
    let client = alive(client, |c| c.last, p);
    let awl = p.auto_whitelist_clients;
    if awl > 0
        && let Some(c) = client
        && c.count >= awl
    {
        // Counted on for statistics, once an hour (or when the clock went back).
        let client = (now >= c.last + AWL_INCREMENT_EVERY || c.last > now).then_some(Client {
            count: c.count + 1,
            last: now,
        });
        return (
            Verdict::AutoWhitelisted { count: c.count },
            Writes {
                triplet: None,
                client,
            },
        );
    }
    let (first, was_successful) = match triplet {
        Some(t) if t.last.saturating_sub(t.first) >= p.delay => (t.first.min(now), true),
        // The first retry beyond the retry window starts over.
        Some(t) if now.saturating_sub(t.first) > p.retry_window => (now, false),
        Some(t) => (t.first.min(now), false),
        None => (now, false),
    };
    let mut writes = Writes {
        triplet: Some(Triplet { first, last: now }),
        client: None,
    };
    let waited = now - first;
    if waited < p.delay {
        let verdict = Verdict::Greylisted {
            missing: p.delay - waited,
            first_seen: first == now,
        };
        return (verdict, writes);
    }
    if was_successful {
        return (Verdict::Known, writes);
    }
    let mut whitelisted_now = false;
    if awl > 0 {
        let counts = client.is_none_or(|c| now >= c.last + AWL_INCREMENT_EVERY);
        if counts {
            let count = client.map_or(0, |c| c.count) + 1;
            writes.client = Some(Client { count, last: now });
            whitelisted_now = count == awl;
        }
    }
    (
        Verdict::Passed {
            delayed: waited,
            whitelisted_now,
        },
        writes,
    )
}

/// Whether the sweep may remove a triplet: older than `max_age`, or never
/// passed and not retried within `retry_window` (postgrey's maintenance).
pub fn triplet_expired(t: &Triplet, now: u64, delay: u64, retry_window: u64, max_age: u64) -> bool {
    let idle = now.saturating_sub(t.last);
    idle > max_age || (t.last.saturating_sub(t.first) < delay && idle > retry_window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(now: u64) -> GreylistParams {
        GreylistParams {
            now,
            delay: 300,
            retry_window: 2 * 86400,
            max_age: 35 * 86400,
            auto_whitelist_clients: 2,
        }
    }

    /// Runs a request against `records` as a backend would.
    fn step(records: &mut (Option<Triplet>, Option<Client>), now: u64) -> Verdict {
        let (v, w) = decide(records.0, records.1, &params(now));
        if w.triplet.is_some() {
            records.0 = w.triplet;
        }
        if w.client.is_some() {
            records.1 = w.client;
        }
        v
    }

    #[test]
    fn postgrey_sequence() {
        let mut r = (None, None);
        let t0 = 1_000_000;
        assert_eq!(
            step(&mut r, t0),
            Verdict::Greylisted {
                missing: 300,
                first_seen: true
            }
        );
        assert_eq!(
            step(&mut r, t0 + 100),
            Verdict::Greylisted {
                missing: 200,
                first_seen: false
            }
        );
        assert_eq!(
            step(&mut r, t0 + 300),
            Verdict::Passed {
                delayed: 300,
                whitelisted_now: false
            }
        );
        assert_eq!(step(&mut r, t0 + 400), Verdict::Known);
        assert_eq!(
            r.1,
            Some(Client {
                count: 1,
                last: t0 + 300
            })
        );
    }

    #[test]
    fn retry_window_and_max_age_start_over() {
        let t0 = 1_000_000;
        let mut r = (None, None);
        step(&mut r, t0);
        let late = t0 + 2 * 86400 + 1;
        assert_eq!(
            step(&mut r, late),
            Verdict::Greylisted {
                missing: 300,
                first_seen: true
            }
        );
        step(&mut r, late + 300);
        let old = late + 300 + 35 * 86400 + 1;
        assert!(matches!(
            step(&mut r, old),
            Verdict::Greylisted {
                first_seen: true,
                ..
            }
        ));
    }

    #[test]
    fn auto_whitelist_counts_once_an_hour() {
        let t0 = 1_000_000;
        let mut r = (None, None);
        step(&mut r, t0);
        step(&mut r, t0 + 300);
        // Another triplet of the same client passes within the hour: no count.
        r.0 = None;
        step(&mut r, t0 + 400);
        assert!(matches!(step(&mut r, t0 + 700), Verdict::Passed { .. }));
        assert_eq!(r.1.map(|c| c.count), Some(1));
        r.0 = None;
        step(&mut r, t0 + 4000);
        assert_eq!(
            step(&mut r, t0 + 4300),
            Verdict::Passed {
                delayed: 300,
                whitelisted_now: true
            }
        );
        r.0 = None;
        assert_eq!(
            step(&mut r, t0 + 5000),
            Verdict::AutoWhitelisted { count: 2 }
        );
    }

    #[test]
    fn details_are_bounded_and_private_on_request() {
        let huge = format!("{}@x.example", "a\t".repeat(32_768));
        let info = TripletInfo::new("203.0.113.0", &huge, "B@Y.example", false);
        assert!(
            info.sender.len() <= MAX_DETAIL_ADDRESS,
            "{}",
            info.sender.len()
        );
        assert!(info.sender.ends_with("..."));
        assert!(!info.sender.contains('\t'));
        assert_eq!(info.sender_domain, "x.example");
        assert_eq!(info.recipient, "b@y.example");
        assert!(info.encode().len() <= MAX_DETAILS);
        assert_eq!(TripletInfo::decode(&info.encode()), Some(info));
        let private = TripletInfo::new("203.0.113.0", "a@x.example", "b@y.example", true);
        assert_eq!(private.sender_domain, "x.example");
        assert_eq!(private.sender, private_address("A@x.example"));
        assert!(private.sender.starts_with("sha256:") && !private.sender.contains('@'));
        assert!(!private.encode().contains("b@y"));
        assert_eq!(TripletInfo::decode("300,400"), None);
    }

    #[test]
    fn keys_have_a_fixed_size_and_parts_cannot_shift() {
        let a = TripletKey::new("203.0.113.0", "a/b@x", "c@y");
        let b = TripletKey::new("203.0.113.0", "a", "b@x/c@y");
        assert_ne!(a, b);
        assert_eq!(a, TripletKey::new("203.0.113.0", "A/B@X", "C@Y"));
        assert_eq!(a.hex().len(), 64);
    }
}
