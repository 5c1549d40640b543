//! HELO restrictions: `reject_invalid_helo_hostname`,
//! `reject_non_fqdn_helo_hostname`, `reject_unknown_helo_hostname`, and
//! the `helo_required` profile setting (Postfix smtpd_helo_required).
//! The chain skips the helo stage when the client sent no HELO, as Postfix
//! does, so these rules always see a name.

use super::Context;
use super::dnscheck::{self, HostStatus};
use crate::dns::{RecordKind, Resolver};
use crate::protocol::Request;
use crate::syntax::{address_literal, strip_one_dot, valid_fqdn, valid_hostaddr, valid_hostname};
use crate::vocab::TempfailAction;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;

/// A `[...]` name must be a valid address literal, else
/// `$invalid_hostname_reject_code 5.5.2 invalid ip address`.
fn check_literal(ctx: &mut Context<'_>, name: &str) -> Outcome {
    if address_literal(name).is_some() {
        ctx.note(|| format!("{name:?} is a valid address literal"));
        Outcome::Dunno
    } else {
        Outcome::Reject(Reply::new(
            ctx.site.codes.invalid_hostname_reject_code,
            "5.5.2",
            "invalid ip address",
        ))
    }
}

/// `reject_invalid_helo_hostname`: a valid host name, a bare IP address
/// (accepted by Postfix "for compatibility"), or a valid address literal.
/// Reply `$invalid_hostname_reject_code 5.5.2 Invalid name`.
pub fn reject_invalid_helo_hostname(ctx: &mut Context<'_>) -> Outcome {
    let request = ctx.request;
    let helo = request.helo_name.as_str();
    if helo.starts_with('[') {
        return check_literal(ctx, helo);
    }
    let name = strip_one_dot(helo);
    if valid_hostname(name) || valid_hostaddr(name) {
        Outcome::Dunno
    } else {
        Outcome::Reject(Reply::new(
            ctx.site.codes.invalid_hostname_reject_code,
            "5.5.2",
            "Invalid name",
        ))
    }
}

/// `reject_non_fqdn_helo_hostname`: a valid host name with a dot (so a bare
/// IP address fails), or a valid address literal. Reply
/// `$non_fqdn_reject_code 5.5.2 need fully-qualified hostname`.
pub fn reject_non_fqdn_helo_hostname(ctx: &mut Context<'_>) -> Outcome {
    let request = ctx.request;
    let helo = request.helo_name.as_str();
    if helo.starts_with('[') {
        return check_literal(ctx, helo);
    }
    let name = strip_one_dot(helo);
    if valid_fqdn(name) {
        Outcome::Dunno
    } else {
        Outcome::Reject(Reply::new(
            ctx.site.codes.non_fqdn_reject_code,
            "5.5.2",
            "need fully-qualified hostname",
        ))
    }
}

/// `reject_unknown_helo_hostname`: the name has an A, AAAA or MX record
/// (any, a null MX included). Address literals are only syntax-checked.
/// Not found: `$unknown_hostname_reject_code 4.7.1 Host not found`;
/// temporary failure: `$unknown_helo_hostname_tempfail_action` with
/// `450 4.7.1 Host not found`.
pub async fn reject_unknown_helo_hostname(ctx: &mut Context<'_>) -> Outcome {
    let request = ctx.request;
    let helo = request.helo_name.as_str();
    if helo.starts_with('[') {
        return check_literal(ctx, helo);
    }
    let kinds = [RecordKind::A, RecordKind::Aaaa, RecordKind::Mx];
    match dnscheck::lookup_host(ctx, strip_one_dot(helo), &kinds, false).await {
        HostStatus::Found | HostStatus::NullMx => Outcome::Dunno,
        HostStatus::NotFound => Outcome::Reject(Reply::new(
            ctx.site.codes.unknown_hostname_reject_code,
            "4.7.1",
            "Host not found",
        )),
        HostStatus::TempFail => tempfail(
            ctx.site.codes.unknown_helo_hostname_tempfail_action,
            Reply::new(450, "4.7.1", "Host not found"),
        ),
    }
}

/// The first query of `reject_unknown_helo_hostname`, sent without
/// waiting ([`super::Rule::prefetch`]): the HELO name's A record.
pub fn prefetch_unknown_helo_hostname(request: &Request, dns: &Resolver) {
    let helo = request.helo_name.as_str();
    if !helo.is_empty() && !helo.starts_with('[') {
        dns.prefetch(strip_one_dot(helo), RecordKind::A);
    }
}

/// A temporary DNS failure, as the `*_tempfail_action` parameter says.
pub fn tempfail(action: TempfailAction, reply: Reply) -> Outcome {
    match action {
        TempfailAction::DeferIfPermit => Outcome::DeferIfPermit(reply),
        TempfailAction::Defer => Outcome::Reject(reply),
    }
}
