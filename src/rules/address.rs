//! Sender and recipient address restrictions, which Postfix implements
//! once for both: `reject_non_fqdn_*`, `reject_unknown_*_domain`,
//! `reject_unlisted_*`, and the destination checks
//! `reject_unauth_destination`, `defer_unauth_destination`,
//! `permit_auth_destination`.

use super::Context;
use super::dnscheck::{self, HostStatus};
use super::helo::tempfail;
use crate::dns::{RecordKind, Resolver};
use crate::protocol::{ProtocolState, Request};
use crate::site::Site;
use crate::syntax::{strip_one_dot, valid_fqdn};
use crate::vocab::Stage;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;

/// Sender or recipient, the only two address subjects.
fn address<'a>(ctx: &Context<'a>, subject: Stage) -> &'a str {
    if subject == Stage::Sender {
        &ctx.request.sender
    } else {
        &ctx.request.recipient
    }
}

/// The domain part, if the address has an `@`.
fn domain_of(address: &str) -> Option<&str> {
    crate::syntax::split_address(address).map(|(_, d)| d)
}

/// `reject_non_fqdn_sender` / `reject_non_fqdn_recipient`: the domain part
/// (empty without `@`) must be a valid host name with a dot; address
/// literals pass; the null address is not checked. Reply
/// `$non_fqdn_reject_code 5.5.2 need fully-qualified address`.
pub fn reject_non_fqdn_sender(ctx: &mut Context<'_>) -> Outcome {
    reject_non_fqdn_address(ctx, Stage::Sender)
}

pub fn reject_non_fqdn_recipient(ctx: &mut Context<'_>) -> Outcome {
    reject_non_fqdn_address(ctx, Stage::Recipient)
}

fn reject_non_fqdn_address(ctx: &mut Context<'_>, subject: Stage) -> Outcome {
    let address = address(ctx, subject);
    if address.is_empty() {
        ctx.note(|| "null address: not checked".into());
        return Outcome::Dunno;
    }
    let domain = strip_one_dot(domain_of(address).unwrap_or(""));
    if domain.starts_with('[') || valid_fqdn(domain) {
        return Outcome::Dunno;
    }
    Outcome::Reject(Reply::new(
        ctx.site.codes.non_fqdn_reject_code,
        "5.5.2",
        "need fully-qualified address",
    ))
}

/// `reject_unknown_sender_domain` / `reject_unknown_recipient_domain`: the
/// domain has an MX, A or AAAA record (looked up in that order). Skipped for
/// the null address, an address without a domain, an address literal and
/// our own domains. A null MX rejects: `550 5.7.27` (sender) / `556 5.1.10`
/// (recipient) `Domain D does not accept mail (nullMX)`. Not found:
/// `$unknown_address_reject_code 4.1.8` / `4.1.2 Domain not found`;
/// temporary failure: `$unknown_address_tempfail_action` with `450`.
pub async fn reject_unknown_sender_domain(ctx: &mut Context<'_>) -> Outcome {
    reject_unknown_domain(ctx, Stage::Sender).await
}

pub async fn reject_unknown_recipient_domain(ctx: &mut Context<'_>) -> Outcome {
    reject_unknown_domain(ctx, Stage::Recipient).await
}

/// The first query of `reject_unknown_sender_domain` /
/// `reject_unknown_recipient_domain` (`subject`), sent without waiting
/// ([`super::Rule::prefetch`]): the domain's MX, when the rule checks it.
pub fn prefetch_unknown_domain(request: &Request, site: &Site, subject: Stage, dns: &Resolver) {
    let address = if subject == Stage::Sender {
        &request.sender
    } else {
        &request.recipient
    };
    if let Some(domain) = domain_of(address).map(strip_one_dot)
        && !domain.is_empty()
        && !domain.starts_with('[')
        && !site.is_local_domain(domain)
    {
        dns.prefetch(domain, RecordKind::Mx);
    }
}

async fn reject_unknown_domain(ctx: &mut Context<'_>, subject: Stage) -> Outcome {
    let address = address(ctx, subject);
    let Some(domain) = domain_of(address).map(strip_one_dot) else {
        ctx.note(|| "no domain part: not checked".into());
        return Outcome::Dunno;
    };
    if domain.is_empty() || domain.starts_with('[') {
        return Outcome::Dunno;
    }
    if ctx.site.is_local_domain(domain) {
        ctx.note(|| format!("{domain} is one of our domains: not checked"));
        return Outcome::Dunno;
    }
    // The first of these is the one prefetch_unknown_domain sends.
    let kinds = [RecordKind::Mx, RecordKind::A, RecordKind::Aaaa];
    let status = dnscheck::lookup_host(ctx, domain, &kinds, true).await;
    let codes = &ctx.site.codes;
    let (not_found_dsn, null_mx_code, null_mx_dsn) = match subject {
        Stage::Sender => ("4.1.8", 550, "5.7.27"),
        _ => ("4.1.2", 556, "5.1.10"),
    };
    match status {
        HostStatus::Found => Outcome::Dunno,
        HostStatus::NullMx => {
            Outcome::Reject(Reply::new(null_mx_code, null_mx_dsn, null_mx_text(domain)))
        }
        HostStatus::NotFound => Outcome::Reject(Reply::new(
            codes.unknown_address_reject_code,
            not_found_dsn,
            "Domain not found",
        )),
        HostStatus::TempFail => tempfail(
            codes.unknown_address_tempfail_action,
            Reply::new(450, not_found_dsn, "Domain not found"),
        ),
    }
}

fn null_mx_text(domain: &str) -> String {
    format!("Domain {domain} does not accept mail (nullMX)")
}

/// `reject_unlisted_sender` / `reject_unlisted_recipient`: an address in
/// one of our domains must be a mailbox or an alias. Other domains are not
/// checked, nor is the null sender. Reply
/// `$unknown_virtual_mailbox_reject_code` with `5.1.0` (sender) / `5.1.1`
/// (recipient) `User unknown in virtual mailbox table`.
pub fn reject_unlisted_sender(ctx: &mut Context<'_>) -> Outcome {
    reject_unlisted_address(ctx, Stage::Sender)
}

pub fn reject_unlisted_recipient(ctx: &mut Context<'_>) -> Outcome {
    reject_unlisted_address(ctx, Stage::Recipient)
}

fn reject_unlisted_address(ctx: &mut Context<'_>, subject: Stage) -> Outcome {
    // As Postfix's resolver gives it: `bob`, `bob@example.com.` and
    // `bob%example.com@localhost` are bob@example.com.
    let Some(address) = ctx.site.resolved_address(address(ctx, subject)) else {
        ctx.note(|| "routes on beyond what rpol resolves: refused".into());
        return unknown_address(ctx, subject);
    };
    let address = address.as_ref();
    let Some(domain) = domain_of(address) else {
        ctx.note(|| "null address or no domain: not checked".into());
        return Outcome::Dunno;
    };
    if !ctx.site.is_local_domain(domain) {
        ctx.note(|| format!("{domain} is not one of our domains: not checked"));
        return Outcome::Dunno;
    }
    match ctx
        .site
        .addresses
        .find(address, &ctx.site.recipient_delimiter)
    {
        Some(listed) => {
            ctx.note(|| format!("listed as {listed:?}"));
            Outcome::Dunno
        }
        None => unknown_address(ctx, subject),
    }
}

/// `$unknown_virtual_mailbox_reject_code 5.1.0/5.1.1 User unknown in
/// virtual mailbox table`.
fn unknown_address(ctx: &Context<'_>, subject: Stage) -> Outcome {
    let dsn = if subject == Stage::Sender {
        "5.1.0"
    } else {
        "5.1.1"
    };
    Outcome::Reject(Reply::new(
        ctx.site.codes.unknown_virtual_mailbox_reject_code,
        dsn,
        "User unknown in virtual mailbox table",
    ))
}

/// Whether the recipient may be accepted without relaying for someone:
/// its domain is ours or a relay domain, and its local part holds no
/// sender-specified routing (`@`, `%`, `!`; Postfix
/// allow_untrusted_routing = no).
pub(super) fn authorized_destination(ctx: &mut Context<'_>) -> bool {
    let rcpt = ctx.request.recipient.as_str();
    let Some((local, domain)) = crate::syntax::split_address(rcpt) else {
        // Postfix appends its own domain to a bare local part.
        return true;
    };
    if local.contains(['@', '%', '!']) {
        ctx.note(|| "sender-specified routing in the local part".into());
        return false;
    }
    let ok = ctx.site.is_authorized_destination(domain);
    ctx.note(|| {
        let what = if ok { "is" } else { "is not" };
        format!("{domain} {what} one of our domains or relay domains")
    });
    ok
}

/// `reject_unauth_destination`: `$relay_domains_reject_code 5.7.1 Relay
/// access denied` unless the destination is authorized.
pub fn reject_unauth_destination(ctx: &mut Context<'_>) -> Outcome {
    if authorized_destination(ctx) {
        return Outcome::Dunno;
    }
    Outcome::Reject(Reply::new(
        ctx.site.codes.relay_domains_reject_code,
        "5.7.1",
        "Relay access denied",
    ))
}

/// `defer_unauth_destination`: as reject_unauth_destination with
/// `$relay_domains_reject_code - 100` (454 4.7.1).
pub fn defer_unauth_destination(ctx: &mut Context<'_>) -> Outcome {
    if authorized_destination(ctx) {
        return Outcome::Dunno;
    }
    Outcome::Reject(Reply::new(
        ctx.site.codes.relay_domains_reject_code - 100,
        "4.7.1",
        "Relay access denied",
    ))
}

/// `permit_auth_destination`: OK when the destination is authorized.
pub fn permit_auth_destination(ctx: &mut Context<'_>) -> Outcome {
    if authorized_destination(ctx) {
        Outcome::Permit
    } else {
        Outcome::Dunno
    }
}
/// `reject_multi_recipient_bounce`: `$multi_recipient_bounce_reject_code
/// 5.5.3 Multi-recipient bounce` for the null sender with more than one
/// recipient. A policy request carries the count (`recipient_count`) only
/// at DATA and END-OF-MESSAGE; elsewhere the rule does nothing, as Postfix
/// documents it outside smtpd_data_restrictions and
/// smtpd_end_of_data_restrictions.
pub fn reject_multi_recipient_bounce(ctx: &mut Context<'_>) -> Outcome {
    let req = ctx.request;
    let counted = matches!(
        req.state(),
        ProtocolState::Data | ProtocolState::EndOfMessage
    );
    let recipients: u64 = req.recipient_count.parse().unwrap_or(0);
    if !req.sender.is_empty() || !counted || recipients < 2 {
        return Outcome::Dunno;
    }
    ctx.note(|| format!("the null sender, {recipients} recipients"));
    Outcome::Reject(Reply::new(
        ctx.site.codes.multi_recipient_bounce_reject_code,
        "5.5.3",
        "Multi-recipient bounce",
    ))
}
