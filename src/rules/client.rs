//! Client restrictions: `permit_mynetworks`,
//! `reject_unknown_client_hostname`, `reject_unknown_reverse_client_hostname`.

use super::Context;
use super::dnscheck::{self, HostStatus, Ptr};
use crate::dns::{RecordKind, Resolver};
use crate::protocol::Request;
use crate::syntax::valid_hostname;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;

/// `permit_mynetworks`: OK when the client address is inside one of
/// `[site] mynetworks` (Postfix `$mynetworks`), else DUNNO. A request
/// without a usable client address never matches.
pub fn permit_mynetworks(ctx: &mut Context<'_>) -> Outcome {
    let Some(ip) = ctx.request.client_ip() else {
        let addr = ctx.request.client_address.clone();
        ctx.note(|| format!("client address {addr:?} is not an IP address"));
        return Outcome::Dunno;
    };
    let ip = ip.to_canonical();
    match ctx.site.mynetworks.find(ip) {
        Some(net) => {
            let net = *net;
            ctx.note(|| format!("{ip} is in mynetworks {net}"));
            Outcome::Permit
        }
        None => {
            ctx.note(|| format!("{ip} is not in mynetworks"));
            Outcome::Dunno
        }
    }
}

/// Why the client's hostname could not be confirmed.
enum Unknown {
    Permanent,
    Temporary,
}

/// `reject_unknown_client_hostname`: the client IP must have a PTR whose
/// name resolves back to that IP. Reply `$unknown_client_reject_code 4.7.25
/// Client host rejected: cannot find your hostname, [ip]`; a temporary DNS
/// failure is always `450` and immediate (Postfix: no defer_if_permit for
/// this check).
///
/// Postfix already did this lookup: `client_name` is the verified name or
/// `unknown`. A verified name is trusted (no query). `unknown` does not
/// say whether the failure was temporary, so rpol looks again rather than
/// turn a temporary failure into a permanent reject.
pub async fn reject_unknown_client_hostname(ctx: &mut Context<'_>) -> Outcome {
    let request = ctx.request;
    let name = request.client_name.as_str();
    if !name.is_empty() && !name.eq_ignore_ascii_case("unknown") {
        ctx.note(|| format!("client_name {name:?} was verified by Postfix"));
        return Outcome::Dunno;
    }
    let Some(ip) = ctx.request.client_ip() else {
        return not_an_ip(ctx);
    };
    let ip = ip.to_canonical();
    let status = match dnscheck::lookup_ptr(ctx, ip).await {
        Ptr::TempFail => Some(Unknown::Temporary),
        Ptr::NotFound => Some(Unknown::Permanent),
        Ptr::Names(names) => {
            // Postfix's cut: the first names of the answer; a name that is
            // no host name counts as one that does not resolve.
            let names = names
                .into_iter()
                .take(dnscheck::MAX_PTR_NAMES)
                .filter(|n| valid_hostname(n))
                .collect();
            let checked = dnscheck::forward_confirm_names(ctx, names, ip, true).await;
            let worst = checked.iter().map(|(_, status)| *status).max();
            match worst {
                Some(HostStatus::Found) => None,
                Some(HostStatus::TempFail) => Some(Unknown::Temporary),
                _ => Some(Unknown::Permanent),
            }
        }
    };
    let code = ctx.site.codes.unknown_client_reject_code;
    let text = format!("cannot find your hostname, [{ip}]");
    match status {
        None => Outcome::Dunno,
        Some(Unknown::Permanent) => Outcome::Reject(Reply::unnamed(code, "4.7.25", text)),
        Some(Unknown::Temporary) => Outcome::Reject(Reply::unnamed(450, "4.7.25", text)),
    }
}

/// `reject_unknown_reverse_client_hostname`: the client IP must have a PTR
/// record (its name need not resolve back). Reply
/// `$unknown_client_reject_code 4.7.1 Client host rejected: cannot find
/// your reverse hostname, [ip]`; temporary failure: `450`, immediate.
/// A `reverse_client_name` other than `unknown` from Postfix is trusted.
pub async fn reject_unknown_reverse_client_hostname(ctx: &mut Context<'_>) -> Outcome {
    let request = ctx.request;
    let name = request.reverse_client_name.as_str();
    if !name.is_empty() && !name.eq_ignore_ascii_case("unknown") {
        ctx.note(|| format!("reverse_client_name {name:?} was found by Postfix"));
        return Outcome::Dunno;
    }
    let Some(ip) = ctx.request.client_ip() else {
        return not_an_ip(ctx);
    };
    let ip = ip.to_canonical();
    let code = match dnscheck::lookup_ptr(ctx, ip).await {
        Ptr::Names(_) => return Outcome::Dunno,
        Ptr::NotFound => ctx.site.codes.unknown_client_reject_code,
        Ptr::TempFail => 450,
    };
    Outcome::Reject(Reply::unnamed(
        code,
        "4.7.1",
        format!("cannot find your reverse hostname, [{ip}]"),
    ))
}

/// The first query of `reject_unknown_client_hostname` (`name`: the
/// request's `client_name`) and of `reject_unknown_reverse_client_hostname`
/// (its `reverse_client_name`), sent without waiting
/// ([`super::Rule::prefetch`]): the client's PTR, unless Postfix found
/// the name.
pub fn prefetch_ptr(request: &Request, name: &str, dns: &Resolver) {
    if !name.is_empty() && !name.eq_ignore_ascii_case("unknown") {
        return;
    }
    if let Some(ip) = request.client_ip() {
        dns.prefetch(&crate::dns::ptr_name(ip.to_canonical()), RecordKind::Ptr);
    }
}

fn not_an_ip(ctx: &mut Context<'_>) -> Outcome {
    let addr = ctx.request.client_address.clone();
    ctx.note(|| format!("client address {addr:?} is not an IP address: nothing to check"));
    Outcome::Dunno
}
