//! DNS lookups as Postfix's restrictions combine them (dns_lookup_l):
//! several record types tried in order, the first hit wins, otherwise the
//! "worst" status does, ranked NOTFOUND < NULLMX < RETRY < OK, so that a
//! temporary failure on one type is never reported as "not found".

use std::net::IpAddr;

use super::Context;
use crate::dns::{Answer, Lookup, Outcome as DnsOutcome, RecordKind};

/// The combined result of a multi-type lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostStatus {
    NotFound,
    NullMx,
    TempFail,
    Found,
}

/// Looks `name` up as the given types, in order, recording each lookup in
/// the trace. `null_mx_stops`: a null MX (RFC 7505) ends the search with
/// [`HostStatus::NullMx`] (address checks); otherwise it counts as a hit
/// (HELO checks). An NXDOMAIN ends the search too: the name has no record
/// of any type, so the other queries could only repeat it.
pub async fn lookup_host(
    ctx: &mut Context<'_>,
    name: &str,
    kinds: &[RecordKind],
    null_mx_stops: bool,
) -> HostStatus {
    let mut worst = HostStatus::NotFound;
    for &kind in kinds {
        let lookup = ctx.dns.lookup(name, kind).await;
        ctx.note(|| format!("DNS {}{}", lookup.describe(), cached(lookup.from_cache)));
        match &lookup.outcome {
            DnsOutcome::Found(answer) if answer.is_null_mx() => {
                if null_mx_stops {
                    return HostStatus::NullMx;
                }
                return HostStatus::Found;
            }
            DnsOutcome::Found(_) => return HostStatus::Found,
            DnsOutcome::NxDomain => return worst.max(HostStatus::NotFound),
            DnsOutcome::NoData => {}
            DnsOutcome::TempFail(_) => worst = worst.max(HostStatus::TempFail),
        }
    }
    worst
}

/// The client's reverse name: PTR names, or why there are none.
pub enum Ptr {
    Names(Vec<String>),
    NotFound,
    TempFail,
}

pub async fn lookup_ptr(ctx: &mut Context<'_>, ip: IpAddr) -> Ptr {
    let lookup = ctx.dns.lookup_ptr(ip).await;
    ctx.note(|| format!("DNS {}{}", lookup.describe(), cached(lookup.from_cache)));
    match &lookup.outcome {
        DnsOutcome::Found(answer) => match &**answer {
            Answer::Ptr(names) if !names.is_empty() => Ptr::Names(names.clone()),
            _ => Ptr::NotFound,
        },
        DnsOutcome::NxDomain | DnsOutcome::NoData => Ptr::NotFound,
        DnsOutcome::TempFail(_) => Ptr::TempFail,
    }
}

/// PTR names of one client that are forward-confirmed at most. Postfix
/// looks at one: getnameinfo() gives it the first PTR name of the answer,
/// and only that one is looked up forward (smtpd_peer.c). rpol takes a
/// few, so that a host with several names is not judged by the order of
/// the answer; the client's reverse zone chooses how many there are, and
/// each costs a lookup.
pub const MAX_PTR_NAMES: usize = 5;

/// Forward-confirms `names` for `ip` (at most the first [`MAX_PTR_NAMES`]):
/// their A (IPv4) or AAAA (IPv6) records must contain the address. The
/// lookups run at once, within one lookup's time
/// ([`crate::dns::Resolver::lookup_bound`]); a name not answered by then
/// is a temporary failure. With `first_found`, the first name confirmed
/// ends the wait. Returns each name checked with its status, in order.
pub async fn forward_confirm_names(
    ctx: &mut Context<'_>,
    names: Vec<String>,
    ip: IpAddr,
    first_found: bool,
) -> Vec<(String, HostStatus)> {
    let kind = if ip.is_ipv4() {
        RecordKind::A
    } else {
        RecordKind::Aaaa
    };
    let names: Vec<String> = names.into_iter().take(MAX_PTR_NAMES).collect();
    let deadline = tokio::time::Instant::now() + ctx.dns.lookup_bound();
    // Tasks of their own, so that they wait together; dropping the set (the
    // client gone, the answer late, a name confirmed) stops the waiting.
    let mut lookups = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (dns, name) = (ctx.dns.clone(), name.clone());
        lookups.spawn(async move { (i, dns.lookup(&name, kind).await) });
    }
    let mut answers: Vec<Option<Lookup>> = names.iter().map(|_| None).collect();
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, lookups.join_next()).await {
        // A lookup task that panicked leaves its name unanswered.
        let Ok((i, lookup)) = joined else { continue };
        let found = confirms(&lookup, ip) == HostStatus::Found;
        answers[i] = Some(lookup);
        if found && first_found {
            break;
        }
    }
    drop(lookups);
    let mut out = Vec::with_capacity(names.len());
    for (name, answer) in names.into_iter().zip(answers) {
        let status = match &answer {
            Some(lookup) => {
                ctx.note(|| format!("DNS {}{}", lookup.describe(), cached(lookup.from_cache)));
                confirms(lookup, ip)
            }
            None => {
                ctx.note(|| format!("DNS {} {name}: not answered in time", kind.as_str()));
                HostStatus::TempFail
            }
        };
        out.push((name, status));
    }
    out
}

/// Forward-confirms one name for `ip`.
pub async fn forward_confirms(ctx: &mut Context<'_>, name: &str, ip: IpAddr) -> HostStatus {
    let checked = forward_confirm_names(ctx, vec![name.to_string()], ip, true).await;
    checked
        .first()
        .map_or(HostStatus::TempFail, |(_, status)| *status)
}

/// Whether `lookup` (of a name's addresses) holds `ip`.
fn confirms(lookup: &Lookup, ip: IpAddr) -> HostStatus {
    match &lookup.outcome {
        DnsOutcome::Found(answer) => {
            let found = match &**answer {
                Answer::A(v) => v.iter().any(|a| IpAddr::V4(*a) == ip),
                Answer::Aaaa(v) => v.iter().any(|a| IpAddr::V6(*a) == ip),
                _ => false,
            };
            if found {
                HostStatus::Found
            } else {
                HostStatus::NotFound
            }
        }
        DnsOutcome::NxDomain | DnsOutcome::NoData => HostStatus::NotFound,
        DnsOutcome::TempFail(_) => HostStatus::TempFail,
    }
}

fn cached(from_cache: bool) -> &'static str {
    if from_cache { "" } else { " (queried)" }
}
