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
use crate::dns::{RecordKind, Resolver};
use crate::protocol::{Action, ProtocolState, Request};
use crate::site::Site;
use crate::spf::dmarc::{self, Discovery};
use crate::spf::{self, Evaluation, HeaderKind, Identity, SpfAction, header};
use crate::state::State;
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

/// The first queries of check_spf, sent without waiting
/// ([`super::Rule::prefetch`]): the TXT records of the HELO name (the
/// HELO identity) and of the sender's domain (MAIL FROM), each only when
/// the rule would evaluate that identity and the SPF result cache does
/// not hold its result. viaspf reads a domain's record through rpol's
/// resolver (`spf::lookup`), under the same cache key, so its first
/// lookup joins this query.
pub fn prefetch_check_spf(req: &Request, site: &Site, state: &State, dns: &Resolver) {
    let settings = &site.spf;
    let Some(ip) = req.client_ip().map(|ip| ip.to_canonical()) else {
        return;
    };
    if settings.skip_mynetworks && site.mynetworks.contains(ip)
        || settings.skip_authenticated && req.is_authenticated()
        || settings.whitelist.networks.iter().any(|n| n.contains(&ip))
    {
        return;
    }
    let helo = req.helo_name.trim_end_matches('.');
    let sender = site.qualified_sender(&req.sender);
    let ask = |identity: Identity, who: &str| {
        let cache = &state.spf_results;
        let parts = spf::identity_parts(identity, who);
        let (_, domain) = parts;
        if valid_fqdn(domain)
            && !cache.holds(&cache.slot(ip, identity, parts, helo), settings.cache_ttl)
        {
            dns.prefetch(domain, RecordKind::Txt);
        }
    };
    // As judge_identities: the HELO identity when checked, or for the
    // null sender; MAIL FROM for any other.
    if valid_fqdn(helo) && (settings.check_helo || sender.is_empty()) {
        ask(Identity::Helo, helo);
    }
    if !sender.is_empty() {
        ask(Identity::MailFrom, &sender);
    }
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
    // policyd-spf's Reject_Not_Pass_Domains, whatever the table says;
    // temperror and permerror keep their own actions, as there.
    let not_pass = matches!(
        e.result,
        SpfResult::Fail(_) | SpfResult::Softfail | SpfResult::Neutral | SpfResult::None
    );
    if matches!(actions, Actions::MailFrom) && not_pass && settings.must_pass(&e.domain) {
        let domain = e.domain.clone();
        ctx.note(|| format!("{domain} is in reject_not_pass_domains: its mail must pass SPF"));
        return Err(refuse_not_pass(&e, ip));
    }
    match table.for_result(&e.result) {
        SpfAction::Accept => Ok(e),
        SpfAction::RejectUnlessDmarc => unless_dmarc(ctx, e, ip).await,
        action => Err(refuse(action, &e, ip)),
    }
}

/// `reject_unless_dmarc`: the evaluation (accepted with its header) when
/// the domain or its organisational domain publishes a DMARC policy, so
/// that the DMARC verifier after DATA decides (DKIM may pass where a
/// forwarder broke SPF, RFC 7489 10.1); the reject of `"reject"` when
/// neither does; a temporary failure when the DNS cannot say.
async fn unless_dmarc(
    ctx: &mut Context<'_>,
    e: Evaluation,
    ip: IpAddr,
) -> Result<Evaluation, Outcome> {
    // A fail or softfail was evaluated for a valid domain, so this is
    // always there; were it not, nothing could publish a policy for it.
    let Some(domain) = spf::ascii_domain(&e.domain) else {
        return Err(refuse(SpfAction::Reject, &e, ip));
    };
    let (dns, settings) = (ctx.dns, &ctx.site.spf);
    let mut lookups = ctx.notes.is_some().then(Vec::new);
    let found = dmarc::discover(dns, &settings.public_suffix_list, &domain, lookups.as_mut()).await;
    ctx.note(|| {
        let verdict = match &found {
            Discovery::Published { name, record } => format!(
                "DMARC policy at {name} ({:?}): not rejected, the DMARC verifier after DATA decides",
                record
            ),
            Discovery::Absent(why) => format!("DMARC: {why} for {domain}: rejected"),
            Discovery::Unknown { name, why } => {
                format!("DMARC: the lookup of {name} failed ({why}): temporary failure")
            }
        };
        let mut line = format!("reject_unless_dmarc: {verdict}");
        for l in lookups.unwrap_or_default() {
            line.push_str(&format!("\n        DNS {l}"));
        }
        line
    });
    match found {
        Discovery::Published { .. } => Ok(e),
        Discovery::Absent(_) => Err(refuse(SpfAction::Reject, &e, ip)),
        Discovery::Unknown { name, why } => {
            // The SPF rule's temporary-failure action, but never an accept
            // (the fail unchecked) nor a reject (our DNS's fault).
            let action = match ctx.site.spf.mail_from.temperror {
                SpfAction::Defer => SpfAction::Defer,
                _ => SpfAction::DeferIfPermit,
            };
            let text = format!(
                "{}; DMARC record lookup of {name} failed ({why}); try again later",
                result_text(&e, ip)
            );
            Err(answer(action, "5.7.24", text))
        }
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
    // RFC 7372: x.7.23 SPF validation failed, x.7.24 SPF validation error.
    let dsn = match &e.result {
        SpfResult::Fail(_) | SpfResult::Softfail => "5.7.23",
        SpfResult::Temperror | SpfResult::Permerror => "5.7.24",
        _ => "5.7.1",
    };
    answer(action, dsn, result_text(e, ip))
}

/// `reject_not_pass_domains`: policyd-spf's "Receiver policy for SPF
/// Neutral" in rpol's words, with policyd-spf's 550 5.7.23.
fn refuse_not_pass(e: &Evaluation, ip: IpAddr) -> Outcome {
    let mut text = format!(
        "Receiver policy for SPF {}: {} must designate {ip} as permitted sender",
        e.result_name(),
        who(e)
    );
    if let SpfResult::Fail(viaspf::ExplanationString::External(exp)) = &e.result {
        text.push_str(": ");
        text.push_str(&ascii(exp));
    }
    Outcome::Reject(Reply::new(550, "5.7.23", text))
}

/// The identity a reply speaks of.
fn who(e: &Evaluation) -> String {
    match e.identity {
        Identity::MailFrom => format!("domain of {}", e.sender),
        Identity::Helo => format!("HELO {}", e.domain),
    }
}

/// What a refusal says of the result.
fn result_text(e: &Evaluation, ip: IpAddr) -> String {
    let who = who(e);
    match &e.result {
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
    }
}

/// `text` answered as `action` says.
fn answer(action: SpfAction, dsn: &str, text: String) -> Outcome {
    match action {
        SpfAction::Reject | SpfAction::RejectUnlessDmarc => {
            Outcome::Reject(Reply::new(550, dsn, text))
        }
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
