//! Postfix's DNS list restrictions: `reject_rbl_client`,
//! `reject_rhsbl_client`, `reject_rhsbl_reverse_client`,
//! `reject_rhsbl_helo`, `reject_rhsbl_sender`, `reject_rhsbl_recipient`,
//! `permit_dnswl_client`, `permit_rhswl_client`, each taking `domain` or
//! `domain=filter` (smtpd_check.c: reject_rbl_addr, reject_rbl_domain,
//! permit_dnswl_addr, permit_dnswl_domain).
//!
//! A listing answers `rbl_reply_maps`' template or `default_rbl_reply`:
//! `554 5.7.1 Service unavailable; Client host [IP] blocked using DOMAIN;
//! TXT`, the text without a `<name>: <Class> rejected:` prefix. A
//! blocklist whose DNS fails (or that answers an error code in
//! 127.255.255.0/24) is passed by, as Postfix passes it by; an allowlist
//! whose DNS fails sets defer_if_reject with `450 4.7.1 <what>: Client
//! host rejected: Service unavailable`, as Postfix does.
//!
//! And `check_dnsbl_score`, postscreen's weighted score of `[dnsbl] sites`
//! (dnsbl/score.rs) as a client restriction.

use std::sync::Arc;

use super::Context;
use super::address::authorized_destination;
use crate::dnsbl::score::{self, Score};
use crate::dnsbl::{self, List, Listing, Name, Subject};
use crate::protocol::Request;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;

/// Which of Postfix's DNS list restrictions a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dnsxl {
    RblClient,
    RhsblClient,
    RhsblReverseClient,
    RhsblHelo,
    RhsblSender,
    RhsblRecipient,
    DnswlClient,
    RhswlClient,
}

impl Dnsxl {
    /// Postfix's `$rbl_class` for the restriction (smtpd_dsn_fix.h).
    fn class(self) -> &'static str {
        match self {
            Dnsxl::RblClient | Dnsxl::RhsblClient | Dnsxl::DnswlClient | Dnsxl::RhswlClient => {
                "Client host"
            }
            Dnsxl::RhsblReverseClient => "Unverified Client host",
            Dnsxl::RhsblHelo => "Helo command",
            Dnsxl::RhsblSender => "Sender address",
            Dnsxl::RhsblRecipient => "Recipient address",
        }
    }

    /// Whether the list is queried with the client's address (rather
    /// than a name).
    pub fn by_address(self) -> bool {
        matches!(self, Dnsxl::RblClient | Dnsxl::DnswlClient)
    }

    /// Whether the list is an allowlist.
    pub fn allows(self) -> bool {
        matches!(self, Dnsxl::DnswlClient | Dnsxl::RhswlClient)
    }
}

/// What `kind` looks up in `list` for `request`: the value shown in the
/// reply and the query name; or, when there is nothing to look up, why.
fn subject(kind: Dnsxl, request: &Request, list: &List) -> Result<(String, String), String> {
    match kind {
        Dnsxl::RblClient | Dnsxl::DnswlClient => {
            let Some(ip) = request.client_ip() else {
                let addr = &request.client_address;
                return Err(format!("client address {addr:?} is not an IP address"));
            };
            let ip = ip.to_canonical();
            Ok((ip.to_string(), dnsbl::address_query(ip, &list.domain)))
        }
        _ => {
            let what = match kind {
                Dnsxl::RhsblClient | Dnsxl::RhswlClient => &request.client_name,
                Dnsxl::RhsblReverseClient => &request.reverse_client_name,
                Dnsxl::RhsblHelo => &request.helo_name,
                Dnsxl::RhsblSender => &request.sender,
                _ => &request.recipient,
            };
            // Postfix skips a client name it could not find.
            let unknown = matches!(
                kind,
                Dnsxl::RhsblClient | Dnsxl::RhswlClient | Dnsxl::RhsblReverseClient
            ) && what.eq_ignore_ascii_case("unknown");
            let query = (!unknown)
                .then(|| dnsbl::domain_query(what, &list.domain))
                .flatten();
            match query {
                Some(query) => Ok((what.clone(), query)),
                None => Err(format!("{what:?}: nothing to look up")),
            }
        }
    }
}

/// Starts `kind`'s query in `list` for `request` without waiting
/// ([`dnsbl::prefetch`]: not while the list's health says not to ask):
/// the chain does this for the rules ahead when it reaches the first
/// that waits ([`super::Rule::prefetch`]), so that they are asked in
/// parallel.
pub fn prefetch(kind: Dnsxl, request: &Request, list: &List, dns: &crate::dns::Resolver) {
    if let Ok((_, query)) = subject(kind, request, list) {
        dnsbl::prefetch(dns, list, &query);
    }
}

/// Runs one DNS list restriction.
pub async fn check(kind: Dnsxl, ctx: &mut Context<'_>, list: &Arc<List>) -> Outcome {
    let request = ctx.request;
    let (what, query) = match subject(kind, request, list) {
        Ok(subject) => subject,
        Err(why) => {
            ctx.note(|| why);
            return Outcome::Dunno;
        }
    };
    // Postfix: an allowlist never lets an unauthorized recipient through.
    if kind.allows()
        && request.protocol_state.eq_ignore_ascii_case("RCPT")
        && !request.recipient.is_empty()
        && !authorized_destination(ctx)
    {
        ctx.note(|| "the recipient is not ours: no allowlisting".into());
        return Outcome::Dunno;
    }
    let listing = dnsbl::look_up(ctx.dns, list, &query).await;
    ctx.note(|| listing.describe(&query));
    match (listing, kind.allows()) {
        (Listing::Listed { reason, .. }, false) => {
            let values = |name: Name| request_value(request, name);
            let subject = Subject {
                what: &what,
                class: kind.class(),
                reason: &reason,
                request: &values,
            };
            Outcome::Reject(ctx.site.dnsbl_replies.reply(list, &subject))
        }
        (Listing::Listed { .. }, true) => Outcome::Permit,
        (Listing::NotListed, _) => Outcome::Dunno,
        // A blocklist that cannot answer never rejects.
        (Listing::Failed(_) | Listing::ErrorCode(_), false) => Outcome::Dunno,
        // An allowlist that cannot answer: a later reject becomes a
        // deferral (Postfix's DEFER_IF_REJECT3).
        (Listing::Failed(_) | Listing::ErrorCode(_), true) => Outcome::DeferIfReject(Reply::bare(
            450,
            "4.7.1",
            format!("<{what}>: {} rejected: Service unavailable", kind.class()),
        )),
    }
}

/// The request's value for a template name that is not the list's own.
fn request_value(request: &Request, name: Name) -> String {
    match name {
        Name::ClientAddress => request.client_address.clone(),
        Name::ClientName => request.client_name.clone(),
        Name::ReverseClientName => request.reverse_client_name.clone(),
        Name::HeloName => request.helo_name.clone(),
        Name::Sender => request.sender.clone(),
        Name::Recipient => request.recipient.clone(),
        _ => String::new(),
    }
}

/// The client's `[dnsbl] sites` score: computed once per request however
/// many rules ask (kept in the [`Context`]), and between requests for its
/// TTL (`state::dnsbl_scores`). `None` without sites or without a client
/// IP address. Every list's answer and every site's weight go to the
/// trace.
pub async fn client_score(ctx: &mut Context<'_>) -> Option<Arc<Score>> {
    let sites = ctx.site.dnsbl_sites.clone()?;
    let Some(ip) = ctx.request.client_ip().map(|ip| ip.to_canonical()) else {
        let addr = ctx.request.client_address.clone();
        ctx.note(|| format!("client address {addr:?} is not an IP address: no DNS list score"));
        return None;
    };
    let (score, whence) = if let Some(score) = ctx.dnsbl_score.clone() {
        (score, " (scored earlier in this request)")
    } else if let Some(score) = ctx.state.dnsbl_scores.get(ip, sites.id) {
        (score, " (kept from an earlier request)")
    } else {
        let score = Arc::new(score::compute(ctx.dns, &sites, ip).await);
        ctx.state.dnsbl_scores.put(ip, sites.id, score.clone());
        (score, "")
    };
    *ctx.dnsbl_score = Some(score.clone());
    ctx.note(|| {
        let mut lines = score.describe(&sites, ip);
        if let Some(last) = lines.last_mut() {
            last.push_str(whence);
        }
        lines.join("\n      ")
    });
    Some(score)
}

/// `check_dnsbl_score`: postscreen's DNSBL test as a rule. A score at or
/// above `threshold` answers postscreen's `550 5.7.1 Service unavailable;
/// client [IP] blocked using DOMAIN` (the matched site of the highest
/// weight; a `[dnsbl] reply` template may word it), or `450 4.7.1` with
/// the same text when a failed allowlist could have taken the score below
/// the threshold; a score at or below a negative `allowlist_threshold`,
/// however the failed lists would have answered, permits the rest of the
/// stage; else DUNNO. A list that fails adds nothing: when all fail the
/// score is 0, DUNNO.
pub async fn check_dnsbl_score(ctx: &mut Context<'_>) -> Outcome {
    let Some(score) = client_score(ctx).await else {
        return Outcome::Dunno;
    };
    let Some(sites) = ctx.site.dnsbl_sites.as_deref() else {
        return Outcome::Dunno;
    };
    let Some(ip) = ctx.request.client_ip().map(|ip| ip.to_canonical()) else {
        return Outcome::Dunno;
    };
    if score.total >= sites.threshold {
        let temporary = score.lowest < sites.threshold;
        if temporary {
            ctx.note(|| {
                format!(
                    "score {} >= threshold {}, but a failed allowlist could have taken it to {}: a temporary reply",
                    score.total, sites.threshold, score.lowest
                )
            });
        }
        return Outcome::Reject(score.reply(sites, &ctx.site.dnsbl_replies, ip, temporary));
    }
    if sites.allowlists(&score) {
        let at = sites.allowlist_threshold;
        ctx.note(|| format!("score {} <= allowlist_threshold {at}: permit", score.total));
        return Outcome::Permit;
    }
    if sites.allowlist_threshold < 0 && score.total <= sites.allowlist_threshold {
        ctx.note(|| {
            format!(
                "score {} <= allowlist_threshold, but a failed list could have taken it to {}: no permit",
                score.total, score.highest
            )
        });
    }
    Outcome::Dunno
}
