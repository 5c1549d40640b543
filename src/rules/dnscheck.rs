//! DNS lookups as Postfix's restrictions combine them (dns_lookup_l):
//! several record types tried in order, the first hit wins, otherwise the
//! "worst" status does, ranked NOTFOUND < NULLMX < RETRY < OK, so that a
//! temporary failure on one type is never reported as "not found".

use super::Context;
use crate::dns::{Answer, Outcome as DnsOutcome, RecordKind};

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

pub async fn lookup_ptr(ctx: &mut Context<'_>, ip: std::net::IpAddr) -> Ptr {
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

/// Forward-confirms `name` for `ip`: its A (IPv4) or AAAA (IPv6) records
/// contain the address.
pub async fn forward_confirms(
    ctx: &mut Context<'_>,
    name: &str,
    ip: std::net::IpAddr,
) -> HostStatus {
    let kind = if ip.is_ipv4() {
        RecordKind::A
    } else {
        RecordKind::Aaaa
    };
    let lookup = ctx.dns.lookup(name, kind).await;
    ctx.note(|| format!("DNS {}{}", lookup.describe(), cached(lookup.from_cache)));
    match &lookup.outcome {
        DnsOutcome::Found(answer) => {
            let found = match &**answer {
                Answer::A(v) => v.iter().any(|a| std::net::IpAddr::V4(*a) == ip),
                Answer::Aaaa(v) => v.iter().any(|a| std::net::IpAddr::V6(*a) == ip),
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
