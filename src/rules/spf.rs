//! `check_spf`: SPF (RFC 7208) on inbound mail, for the HELO identity and
//! the MAIL FROM identity (the HELO one stands for the null sender, 2.4).
//!
//! One evaluation serves a whole transaction and the next ones of the same
//! client: results are cached per client, sender and HELO for `[spf]
//! cache_ttl` (state::spf_cache), and the chain sends the header once per
//! transaction (state::transactions).

use std::net::IpAddr;

use super::Context;
use super::dnscheck::{
    HostStatus, MAX_PTR_NAMES, Ptr, forward_confirm_names, forward_confirms, lookup_ptr,
};
use crate::protocol::{Action, ProtocolState};
use crate::spf::{self, Evaluation, HeaderKind, Identity, SpfAction, header};
use crate::syntax::{valid_fqdn, valid_hostname};
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;
use viaspf::SpfResult;

pub async fn check_spf(ctx: &mut Context<'_>) -> Outcome {
    let req = ctx.request;
    let settings = &ctx.site.spf;
    let Some(ip) = req.client_ip().map(|ip| ip.to_canonical()) else {
        let addr = req.client_address.clone();
        ctx.note(|| format!("client address {addr:?} is not an IP address: not checked"));
        return Outcome::Dunno;
    };
    if settings.skip_mynetworks && ctx.site.mynetworks.contains(ip) {
        ctx.note(|| format!("skipped: {ip} is in mynetworks"));
        return Outcome::Dunno;
    }
    if settings.skip_authenticated && req.is_authenticated() {
        let user = req.sasl_username.clone();
        ctx.note(|| format!("skipped: authenticated as {user:?}"));
        return Outcome::Dunno;
    }
    let helo = req.helo_name.trim_end_matches('.');
    if let Some(why) = whitelisted(ctx, ip, helo).await {
        ctx.note(|| format!("skipped: whitelisted ({why})"));
        return Outcome::Dunno;
    }
    decide(ctx, ip, helo).await
}

/// The whitelist entry that covers this client, as the fact rpol verified;
/// `None` when none does (a DNS failure verifies nothing).
async fn whitelisted(ctx: &mut Context<'_>, ip: IpAddr, helo: &str) -> Option<String> {
    let list = &ctx.site.spf.whitelist;
    if let Some(net) = list.networks.iter().find(|n| n.contains(&ip)) {
        return Some(format!("client {ip} in {net}"));
    }
    let helo = helo.to_ascii_lowercase();
    if list.helo_names.contains(&helo)
        && forward_confirms(ctx, &helo, ip).await == HostStatus::Found
    {
        return Some(format!("HELO {helo} resolves to {ip}"));
    }
    if !list.ptr_domains.is_empty()
        && let Ptr::Names(names) = lookup_ptr(ctx, ip).await
    {
        let ptr_domains = ctx.site.spf.whitelist.ptr_domains.clone();
        let under = |name: &str| ptr_domains.iter().find(|d| spf::is_under(name, d));
        // Only names under a listed domain cost a lookup; at most
        // MAX_PTR_NAMES of them, all at once.
        let names = names
            .into_iter()
            .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
            .filter(|name| under(name).is_some() && valid_hostname(name))
            .take(MAX_PTR_NAMES)
            .collect();
        let checked = forward_confirm_names(ctx, names, ip, true).await;
        if let Some((name, _)) = checked.iter().find(|(_, s)| *s == HostStatus::Found)
            && let Some(d) = under(name)
        {
            return Some(format!(
                "PTR {name} of {ip} is forward-confirmed, under {d}"
            ));
        }
    }
    for d in ctx.site.spf.whitelist.spf_domains.clone() {
        let what = || format!("whitelist: SPF of {d}");
        let e = evaluation(ctx, ip, Identity::MailFrom, &format!("@{d}"), &helo, what).await;
        if e.result == SpfResult::Pass {
            return Some(format!("{ip} passes the SPF record of {d}"));
        }
    }
    None
}

async fn decide(ctx: &mut Context<'_>, ip: IpAddr, helo: &str) -> Outcome {
    // Postfix delivers an unqualified sender as sender@$myorigin: that
    // domain is the one to check (and the header's envelope-from), not the
    // local part read as a domain.
    let (req, site) = (ctx.request, ctx.site);
    let sender = site.qualified_sender(&req.sender);
    match judge_identities(ctx, ip, helo, &sender).await {
        Ok(Some(e)) => accept(ctx, ip, &e, &sender),
        Ok(None) => Outcome::Dunno,
        Err(refusal) => refusal,
    }
}

/// Which action table applies to an evaluation.
#[derive(Clone, Copy)]
enum Actions {
    Helo,
    MailFrom,
}

/// Evaluates the identities in RFC 7208 order; `Err` is the first refusal,
/// `Ok` the evaluation the header reports (if any).
async fn judge_identities(
    ctx: &mut Context<'_>,
    ip: IpAddr,
    helo: &str,
    sender: &str,
) -> Result<Option<Evaluation>, Outcome> {
    let check_helo = ctx.site.spf.check_helo;
    let helo_is_domain = valid_fqdn(helo);
    let mut for_header = None;
    if check_helo && helo_is_domain {
        for_header = Some(judge(ctx, ip, Identity::Helo, helo, helo, Actions::Helo).await?);
    }
    if !sender.is_empty() {
        for_header =
            Some(judge(ctx, ip, Identity::MailFrom, sender, helo, Actions::MailFrom).await?);
    } else if for_header.is_none() {
        if !helo_is_domain {
            ctx.note(|| "null sender and no usable HELO name: nothing to check".into());
            return Ok(None);
        }
        // RFC 7208 2.4: for the null sender, MAIL FROM is postmaster@helo.
        for_header = Some(judge(ctx, ip, Identity::Helo, helo, helo, Actions::MailFrom).await?);
    }
    Ok(for_header)
}

/// One identity, evaluated (or from the cache) and held against its
/// actions: `Err` carries the refusal.
async fn judge(
    ctx: &mut Context<'_>,
    ip: IpAddr,
    identity: Identity,
    sender: &str,
    helo: &str,
    actions: Actions,
) -> Result<Evaluation, Outcome> {
    let what = || format!("SPF {} {sender}", identity.name());
    let e = evaluation(ctx, ip, identity, sender, helo, what).await;
    let settings = &ctx.site.spf;
    let table = match actions {
        Actions::Helo => &settings.helo,
        Actions::MailFrom => &settings.mail_from,
    };
    match table.for_result(&e.result) {
        SpfAction::Accept => Ok(e),
        action => Err(refuse(action, &e, ip)),
    }
}

/// The accepted evaluation's header, as a PREPEND.
fn accept(ctx: &mut Context<'_>, ip: IpAddr, e: &Evaluation, sender: &str) -> Outcome {
    let settings = &ctx.site.spf;
    // Built after the action word, in the action's own string.
    let action = match settings.header {
        HeaderKind::None => return Outcome::Dunno,
        HeaderKind::ReceivedSpf => Action::prepend_with(312, |out| {
            header::push_received_spf(
                out,
                e,
                ip,
                sender,
                &ctx.request.helo_name,
                &settings.receiver,
            );
        }),
        HeaderKind::AuthenticationResults => Action::prepend_with(312, |out| {
            out.push_str(&header::authentication_results(
                e,
                ip,
                &settings.authserv_id,
            ));
        }),
    };
    let line = action.header().unwrap_or_default();
    // Postfix ignores PREPEND at END-OF-MESSAGE (with a warning).
    if ctx.request.state() == ProtocolState::EndOfMessage {
        ctx.note(|| format!("no header at END-OF-MESSAGE (Postfix would ignore it): {line}"));
        return Outcome::Dunno;
    }
    ctx.note(|| format!("header: {line}"));
    Outcome::Pass(action)
}

/// One identity, from the cache or evaluated now; traced either way, as
/// `what: result` (`what` is only called for a trace). Shared with
/// check_outbound_spf.
pub(super) async fn evaluation(
    ctx: &mut Context<'_>,
    ip: IpAddr,
    identity: Identity,
    sender: &str,
    helo: &str,
    what: impl FnOnce() -> String,
) -> Evaluation {
    let settings = &ctx.site.spf;
    let cache = &ctx.state.spf_results;
    let parts = spf::identity_parts(identity, sender);
    let slot = cache.slot(ip, identity, parts, helo);
    let cached = cache.get(&slot, settings.cache_ttl);
    let from_cache = cached.is_some();
    let e = match cached {
        // Speaking of this request's identity already.
        Some(e) => e,
        None => {
            let want = ctx.notes.is_some();
            let e = spf::evaluate(ctx.dns, settings, ip, identity, sender, helo, want).await;
            cache.put(&slot, &e);
            e
        }
    };
    cache.count_used(&e);
    ctx.note(|| {
        let mut line = format!(
            "{}: {}{}",
            what(),
            e.result_name(),
            if from_cache { " (cached result)" } else { "" }
        );
        if let Some(m) = &e.mechanism {
            line.push_str(&format!(", matched {m}"));
        }
        if let Some(p) = &e.problem {
            line.push_str(&format!(", problem: {p}"));
        }
        if let SpfResult::Fail(viaspf::ExplanationString::External(exp)) = &e.result {
            line.push_str(&format!(", explanation: {exp:?}"));
        }
        for l in &e.lookups {
            line.push_str(&format!("\n        DNS {l}"));
        }
        line
    });
    e
}

/// The reply for a result whose action is not accept.
fn refuse(action: SpfAction, e: &Evaluation, ip: IpAddr) -> Outcome {
    let who = match e.identity {
        Identity::MailFrom => format!("domain of {}", e.sender),
        Identity::Helo => format!("HELO {}", e.domain),
    };
    let text = match &e.result {
        SpfResult::Fail(exp) => {
            let mut t = format!("SPF fail: {who} does not designate {ip} as permitted sender");
            if let viaspf::ExplanationString::External(exp) = exp {
                t.push_str(": ");
                t.push_str(&ascii(exp));
            }
            t
        }
        SpfResult::Softfail => {
            format!("SPF softfail: {who} does not designate {ip} as permitted sender")
        }
        SpfResult::Temperror => format!(
            "SPF temporary error for {who}: {}; try again later",
            e.problem.as_deref().unwrap_or("DNS error")
        ),
        SpfResult::Permerror => format!(
            "SPF permanent error for {who}: {}",
            e.problem.as_deref().unwrap_or("invalid record")
        ),
        other => format!("SPF {}: {who}, client {ip}", spf::result_name(other)),
    };
    // RFC 7372: x.7.23 SPF validation failed, x.7.24 SPF validation error.
    let dsn = match &e.result {
        SpfResult::Fail(_) | SpfResult::Softfail => "5.7.23",
        SpfResult::Temperror | SpfResult::Permerror => "5.7.24",
        _ => "5.7.1",
    };
    match action {
        SpfAction::Reject => Outcome::Reject(Reply::new(550, dsn, text)),
        SpfAction::Defer => Outcome::Reject(Reply::new(451, dsn, text)),
        SpfAction::DeferIfPermit => Outcome::DeferIfPermit(Reply::new(451, dsn, text)),
        SpfAction::Accept => Outcome::Dunno,
    }
}

/// An SPF explanation comes from the sender's DNS: keep it printable ASCII
/// (RFC 7208 6.2) for the SMTP reply.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}
