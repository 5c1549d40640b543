//! The weighted DNS list score of postscreen (postscreen_dnsbl.c,
//! postscreen_early.c): `[dnsbl] sites` in postscreen_dnsbl_sites syntax,
//! `domain[=filter][*weight]`, each site's weight added once when the
//! list's answer holds a record its filter matches (any record when it
//! has none), negative weights for allowlists. A domain named twice is
//! queried once and each of its filters counts on its own.
//!
//! rpol's differences, both on the safe side: an answer in
//! 127.255.255.0/24 is an error code, never a listing, and a site whose
//! DNS fails or answers an error code adds nothing; the score then also
//! says how high or low the failed sites could have taken it
//! ([`Score::highest`], [`Score::lowest`]), so that no failure turns into
//! a reject, an allowlisting or a skipped greylisting.

use std::net::IpAddr;
#[cfg(test)]
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use super::{Filter, List, Listing, Name, Replies, Template};
use crate::dns::{RecordKind, Resolver};
use crate::vocab::reply::Reply;

/// postscreen_dnsbl_threshold's default.
pub const DEFAULT_THRESHOLD: i64 = 1;
/// postscreen_dnsbl_min_ttl's default.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(60);
/// postscreen_dnsbl_max_ttl's default (`postscreen_dnsbl_ttl`, 1h).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3_600);
/// postscreen's reply under `postscreen_dnsbl_action = enforce`
/// (postscreen_early.c, PSC_DNSBL_FORMAT), as a template.
pub const SCORE_REPLY: &str =
    "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain";
/// postscreen's reply code under `postscreen_dnsbl_action = enforce`.
pub const SCORE_REJECT_CODE: u16 = 550;
/// postscreen's word for what is listed (`client [IP]`).
pub const SCORE_CLASS: &str = "client";

/// One entry of `sites`: a filter and a weight on one list.
#[derive(Debug, Clone)]
pub struct Site {
    /// The entry as written (lowercase), for traces.
    pub written: String,
    /// The index of its list in [`Sites::lists`].
    pub list: usize,
    pub filter: Option<Filter>,
    pub weight: i64,
}

impl Site {
    /// The `[dnsbl] reply` key of this entry: `domain=filter`.
    fn reply_key(&self, domain: &str) -> Option<String> {
        self.filter.as_ref().map(|f| format!("{domain}={f}"))
    }
}

/// `[dnsbl]`'s score settings, compiled.
#[derive(Debug, Clone)]
pub struct Sites {
    /// One list per domain, unfiltered, in the order first written: each
    /// is queried once per client.
    pub lists: Vec<Arc<List>>,
    pub sites: Vec<Site>,
    /// A score at or above it is a listing (postscreen_dnsbl_threshold).
    pub threshold: i64,
    /// A score at or below it allowlists (when below 0; 0 is off, as
    /// postscreen_dnsbl_allowlist_threshold).
    pub allowlist_threshold: i64,
    /// How long a score is kept, whatever its answers' TTLs say.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Tells the scores of these settings from those of others in the
    /// score cache (a reload may change the sites).
    pub id: u64,
}

impl Sites {
    /// Compiles `sites` (each `domain[=filter][*weight]`); the error names
    /// the entry at fault.
    pub fn parse(entries: &[&str]) -> Result<Sites, (usize, String)> {
        let mut lists: Vec<Arc<List>> = Vec::new();
        let mut sites = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let site = parse_site(entry, &mut lists).map_err(|e| (i, e))?;
            sites.push(site);
        }
        let id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for s in &sites {
                s.written.hash(&mut h);
            }
            h.finish()
        };
        Ok(Sites {
            lists,
            sites,
            threshold: DEFAULT_THRESHOLD,
            allowlist_threshold: 0,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            id,
        })
    }

    /// Whether `allowlist_threshold` is on and `score` allowlists for sure.
    pub fn allowlists(&self, score: &Score) -> bool {
        self.allowlist_threshold < 0 && score.highest <= self.allowlist_threshold
    }
}

/// Parses one `domain[=filter][*weight]` as psc_dnsbl_add_site does: the
/// weight after the first `*`, then the filter after the first `=`.
fn parse_site(entry: &str, lists: &mut Vec<Arc<List>>) -> Result<Site, String> {
    let written = entry.trim().to_ascii_lowercase();
    let (rest, weight) = match written.split_once('*') {
        Some((rest, w)) => {
            let weight: i64 = w
                .parse()
                .ok()
                .filter(|w: &i64| i32::try_from(*w).is_ok())
                .ok_or_else(|| format!("bad DNSBL weight factor {w:?} in {entry:?}"))?;
            (rest, weight)
        }
        None => (written.as_str(), 1),
    };
    let (domain, filter) = match rest.split_once('=') {
        Some((d, f)) => (
            d,
            Some(Filter::parse(f).map_err(|e| format!("bad DNSBL filter syntax: {e}"))?),
        ),
        None => (rest, None),
    };
    let list = List::parse(domain)?;
    let index = match lists.iter().position(|l| l.domain == list.domain) {
        Some(i) => i,
        None => {
            lists.push(Arc::new(list));
            lists.len() - 1
        }
    };
    Ok(Site {
        written: written.clone(),
        list: index,
        filter,
        weight,
    })
}

/// A client's score, with every list's answer.
#[derive(Debug, Clone)]
pub struct Score {
    /// The sum of the weights of the sites that matched.
    pub total: i64,
    /// `total` plus the positive weights of the sites whose list failed:
    /// the most the score could be.
    pub highest: i64,
    /// `total` plus the negative weights of the sites whose list failed:
    /// the least the score could be.
    pub lowest: i64,
    /// The site of the highest weight among those that matched (the first
    /// written among equals): the one the reply names.
    pub top: Option<usize>,
    /// Each list's answer, by [`Sites::lists`] index.
    pub answers: Vec<Listing>,
    /// Each site's match, by [`Sites::sites`] index.
    pub matched: Vec<bool>,
    /// Whether every list answered (a score with a failure is not cached).
    pub complete: bool,
    /// How long the score may be kept: postscreen's TTL (the least TTL of
    /// the answers that made it a pass or a fail), within min_ttl and
    /// max_ttl.
    pub ttl: Duration,
}

impl Score {
    /// Bytes the score holds beyond its own size, for the cache's bound.
    pub fn weight(&self) -> usize {
        let answers: usize = self
            .answers
            .iter()
            .map(|a| {
                std::mem::size_of::<Listing>()
                    + match a {
                        Listing::Listed { addrs, reason } => addrs.len() * 4 + reason.len(),
                        Listing::Failed(why) => why.len(),
                        _ => 0,
                    }
            })
            .sum();
        answers + self.matched.len() + std::mem::size_of::<Score>()
    }

    /// One trace line per list: its answer, and each of its sites'
    /// weight and whether it matched; then the sum.
    pub fn describe(&self, sites: &Sites, ip: IpAddr) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, list) in sites.lists.iter().enumerate() {
            let query = super::address_query(ip, &list.domain);
            let answer = self
                .answers
                .get(i)
                .map_or_else(|| format!("{query}: not asked"), |a| describe(&query, a));
            let mut line = answer;
            for (j, site) in sites.sites.iter().enumerate().filter(|(_, s)| s.list == i) {
                let state = match (&self.answers.get(i), self.matched.get(j)) {
                    (Some(Listing::Failed(_) | Listing::ErrorCode(_)), _) => "adds nothing",
                    (_, Some(true)) => "matched",
                    _ => "not matched",
                };
                line.push_str(&format!(
                    "; {} weight {}: {state}",
                    site.written, site.weight
                ));
            }
            lines.push(line);
        }
        let mut sum = format!("DNS list score {}", self.total);
        if self.highest != self.total || self.lowest != self.total {
            sum.push_str(&format!(
                " (between {} and {} had the failed lists answered)",
                self.lowest, self.highest
            ));
        }
        lines.push(sum);
        lines
    }

    /// The reply to a score at or above the threshold: postscreen's
    /// `550 5.7.1 Service unavailable; client [IP] blocked using DOMAIN`,
    /// DOMAIN the top site's, or that site's `[dnsbl] reply` template
    /// (by `domain=filter`, then by domain), which can name a public domain
    /// in place of a query domain holding a secret key, as
    /// postscreen_dnsbl_reply_map does. `temporary`: 450 4.7.1 instead.
    pub fn reply(&self, sites: &Sites, replies: &Replies, ip: IpAddr, temporary: bool) -> Reply {
        let Some(site) = self.top.and_then(|t| sites.sites.get(t)) else {
            return Reply::bare(450, "4.7.1", "Service unavailable");
        };
        let domain = &sites.lists[site.list].domain;
        let default = Template::parse(SCORE_REPLY).expect("postscreen's reply parses");
        let template = site
            .reply_key(domain)
            .and_then(|k| replies.by_list.get(&k))
            .or_else(|| replies.by_list.get(domain))
            .unwrap_or(&default);
        let what = ip.to_string();
        let text = template.expand(&|name| match name {
            Name::Code => SCORE_REJECT_CODE.to_string(),
            Name::Domain => domain.clone(),
            Name::What | Name::ClientAddress => what.clone(),
            Name::Class => SCORE_CLASS.into(),
            _ => String::new(),
        });
        let reply = super::reply_from_text(&text);
        if temporary && !reply.is_temporary() {
            return Reply::bare(450, "4.7.1", reply.text);
        }
        reply
    }
}

/// One trace line for a list's answer (the A records: the score asks for
/// no TXT record).
fn describe(query: &str, listing: &Listing) -> String {
    match listing {
        Listing::Listed { addrs, .. } => {
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            format!("{query}: {}", addrs.join(", "))
        }
        other => other.describe(query),
    }
}

/// Asks every list about `ip` at once (each lookup cached and
/// single-flight in the resolver), within one lookup's time
/// ([`Resolver::lookup_bound`]: a list not answered by then failed), and
/// adds up the weights.
pub async fn compute(dns: &Resolver, sites: &Sites, ip: IpAddr) -> Score {
    let ip = ip.to_canonical();
    let queries: Vec<String> = sites
        .lists
        .iter()
        .map(|l| super::address_query(ip, &l.domain))
        .collect();
    let deadline = tokio::time::Instant::now() + dns.lookup_bound();
    // Tasks of their own, so that they wait together; dropping the set
    // (the client gone, the answer late) stops the waiting.
    let mut lookups = tokio::task::JoinSet::new();
    for (i, (list, query)) in sites.lists.iter().zip(&queries).enumerate() {
        let (dns, list, query) = (dns.clone(), list.clone(), query.clone());
        lookups.spawn(async move {
            let listing = super::look_up_addresses(&dns, &list, &query).await;
            let ttl = dns.cached_ttl(&query, RecordKind::A);
            (i, listing, ttl)
        });
    }
    let mut answers: Vec<Option<(Listing, Option<Duration>)>> = vec![None; sites.lists.len()];
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, lookups.join_next()).await {
        // A lookup task that panicked leaves its list unanswered.
        if let Ok((i, listing, ttl)) = joined {
            answers[i] = Some((listing, ttl));
        }
    }
    drop(lookups);
    let answers: Vec<(Listing, Option<Duration>)> = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| (Listing::Failed("not answered in time".into()), None)))
        .collect();
    tally(sites, answers)
}

/// The score of the lists' answers (with each answer's remaining TTL).
fn tally(sites: &Sites, answers: Vec<(Listing, Option<Duration>)>) -> Score {
    let (mut total, mut up, mut down) = (0i64, 0i64, 0i64);
    let mut top: Option<usize> = None;
    let mut matched = vec![false; sites.sites.len()];
    // postscreen's pass and fail TTLs: the least of the answers that made
    // the client pass (a blocklist's no, an allowlist's yes) or fail.
    let (mut pass_ttl, mut fail_ttl): (Option<Duration>, Option<Duration>) = (None, None);
    let mut complete = true;
    let least = |slot: &mut Option<Duration>, ttl: Option<Duration>| {
        if let Some(t) = ttl {
            *slot = Some(slot.map_or(t, |s| s.min(t)));
        }
    };
    for (j, site) in sites.sites.iter().enumerate() {
        let (answer, ttl) = &answers[site.list];
        match answer {
            Listing::Listed { addrs, .. } => {
                let hit = match &site.filter {
                    Some(f) => addrs.iter().any(|a| f.matches(*a)),
                    None => true,
                };
                if hit {
                    matched[j] = true;
                    total += site.weight;
                    if top.is_none_or(|t| sites.sites[t].weight < site.weight) {
                        top = Some(j);
                    }
                }
                // As psc_dnsbl_receive: a record found is the fail TTL of
                // a blocklist and the pass TTL of an allowlist.
                if site.weight > 0 {
                    least(&mut fail_ttl, *ttl);
                } else {
                    least(&mut pass_ttl, *ttl);
                }
            }
            Listing::NotListed => {
                if site.weight > 0 {
                    least(&mut pass_ttl, *ttl);
                } else {
                    least(&mut fail_ttl, *ttl);
                }
            }
            Listing::ErrorCode(_) | Listing::Failed(_) => {
                complete = false;
                if site.weight > 0 {
                    up += site.weight;
                } else {
                    down += site.weight;
                }
            }
        }
    }
    let ttl = if total > 0 { fail_ttl } else { pass_ttl };
    let ttl = ttl
        .unwrap_or(Duration::ZERO)
        .max(sites.min_ttl)
        .min(sites.max_ttl);
    Score {
        total,
        highest: total + up,
        lowest: total + down,
        top,
        answers: answers.into_iter().map(|(a, _)| a).collect(),
        matched,
        complete,
        ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address in an answer.
    fn a(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, last)
    }

    fn sites(entries: &[&str]) -> Sites {
        Sites::parse(entries).unwrap()
    }

    fn listed(addrs: &[Ipv4Addr]) -> Listing {
        Listing::Listed {
            addrs: addrs.to_vec(),
            reason: String::new(),
        }
    }

    #[test]
    fn postscreen_site_syntax() {
        let s = sites(&[
            "zen.example=127.0.0.[2..11]*3",
            "zen.example=127.0.0.[10;11]*-2",
            "wl.example*-5",
            "bl.example",
        ]);
        assert_eq!(s.lists.len(), 3, "a domain named twice is queried once");
        assert_eq!(s.sites[0].weight, 3);
        assert_eq!(s.sites[1].weight, -2);
        assert_eq!((s.sites[1].list, s.sites[2].list), (0, 1));
        assert_eq!(s.sites[3].weight, 1, "no weight: 1");
        assert!(s.lists.iter().all(|l| l.filter.is_none()));
        for (bad, why) in [
            ("zen.example*x", "bad DNSBL weight factor"),
            ("zen.example*3x", "bad DNSBL weight factor"),
            ("zen.example*", "bad DNSBL weight factor"),
            ("zen.example=127.0.0.[x]*2", "bad DNSBL filter syntax"),
            ("not a domain*2", "is not a DNS list domain"),
            ("zen.example*99999999999", "bad DNSBL weight factor"),
        ] {
            let e = Sites::parse(&["ok.example", bad]).unwrap_err();
            assert_eq!(e.0, 1);
            assert!(e.1.contains(why), "{bad}: {}", e.1);
        }
        assert_ne!(sites(&["a.example"]).id, sites(&["b.example"]).id);
    }

    #[test]
    fn weights_add_once_per_pattern() {
        let s = sites(&[
            "zen.example=127.0.0.[2..11]*3",
            "zen.example=127.0.0.4*2",
            "wl.example*-5",
        ]);
        let ttl = Some(Duration::from_secs(120));
        // Two records matching the first pattern count it once.
        let score = tally(
            &s,
            vec![(listed(&[a(2), a(3)]), ttl), (Listing::NotListed, ttl)],
        );
        assert_eq!((score.total, score.top), (3, Some(0)));
        assert!(score.complete);
        assert_eq!(score.ttl, Duration::from_secs(120));
        // Both patterns of one list count, each once.
        let score = tally(&s, vec![(listed(&[a(4)]), ttl), (Listing::NotListed, ttl)]);
        assert_eq!((score.total, score.top), (5, Some(0)));
        // An allowlist takes its weight off.
        let score = tally(&s, vec![(listed(&[a(4)]), ttl), (listed(&[a(2)]), ttl)]);
        assert_eq!(score.total, 0);
        // A failed list adds nothing, and says how far it could have gone.
        let score = tally(
            &s,
            vec![
                (Listing::Failed("timeout".into()), None),
                (listed(&[a(2)]), ttl),
            ],
        );
        assert_eq!((score.total, score.highest, score.lowest), (-5, 0, -5));
        assert!(!score.complete);
        let score = tally(
            &s,
            vec![
                (listed(&[a(2)]), ttl),
                (Listing::ErrorCode(Ipv4Addr::new(127, 255, 255, 254)), None),
            ],
        );
        assert_eq!((score.total, score.highest, score.lowest), (3, 3, -2));
    }

    #[test]
    fn ttls_as_postscreen_takes_them() {
        let mut s = sites(&["bl.example*2", "wl.example*-1"]);
        let short = Some(Duration::from_secs(10));
        let long = Some(Duration::from_secs(7_200));
        // A pass: the blocklist's "no" and allowlist's "no" (the fail
        // TTL): the pass TTL is the blocklist's, clamped up to min_ttl.
        let score = tally(
            &s,
            vec![(Listing::NotListed, short), (Listing::NotListed, long)],
        );
        assert_eq!(score.ttl, DEFAULT_MIN_TTL);
        // A fail, listed for long: clamped down to max_ttl.
        let score = tally(
            &s,
            vec![(listed(&[a(2)]), long), (Listing::NotListed, long)],
        );
        assert_eq!(score.ttl, DEFAULT_MAX_TTL);
        s.min_ttl = Duration::from_secs(5);
        let score = tally(
            &s,
            vec![(listed(&[a(2)]), short), (Listing::NotListed, long)],
        );
        assert_eq!(score.ttl, Duration::from_secs(10));
        // No TTL known (evicted, not cached): min_ttl.
        let score = tally(
            &s,
            vec![(Listing::NotListed, None), (Listing::NotListed, None)],
        );
        assert_eq!(score.ttl, Duration::from_secs(5));
    }

    #[test]
    fn the_reply_names_the_heaviest_site() {
        let s = sites(&["a.example*2", "b.example=127.0.0.2*3", "c.example*3"]);
        let all = || (listed(&[a(2)]), None);
        let score = tally(&s, vec![all(), all(), all()]);
        assert_eq!(score.top, Some(1), "the first written among equals");
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let replies = Replies::default();
        assert_eq!(
            score.reply(&s, &replies, ip, false),
            Reply::bare(
                550,
                "5.7.1",
                "Service unavailable; client [203.0.113.5] blocked using b.example"
            )
        );
        assert_eq!(
            score.reply(&s, &replies, ip, true),
            Reply::bare(
                450,
                "4.7.1",
                "Service unavailable; client [203.0.113.5] blocked using b.example"
            )
        );
        // A template keyed by domain=filter, then by domain, hides it.
        let mut replies = Replies::default();
        replies.by_list.insert(
            "b.example".into(),
            Template::parse("$rbl_code 5.7.1 blocked using public.example ($rbl_what)").unwrap(),
        );
        assert_eq!(
            score.reply(&s, &replies, ip, false),
            Reply::bare(550, "5.7.1", "blocked using public.example (203.0.113.5)")
        );
        replies.by_list.insert(
            "b.example=127.0.0.2".into(),
            Template::parse(
                "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using other.example",
            )
            .unwrap(),
        );
        assert_eq!(
            score.reply(&s, &replies, ip, false).text,
            "Service unavailable; client [203.0.113.5] blocked using other.example"
        );
    }
}
