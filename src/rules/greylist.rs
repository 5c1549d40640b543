//! `check_greylist`: greylisting (RFC 6647) with postgrey 1.37's
//! semantics. A triplet (client network, normalised sender, recipient)
//! seen for the first time is deferred; a retry after `delay` passes and
//! gets the X-Greylist header once. The records live in the store
//! (state::store), shared by every MX host when it is Redis.
//!
//! Never greylisted: mynetworks, SASL-authenticated clients, the
//! whitelists, auto-whitelisted clients, and when switched on, a sender
//! whose SPF passes for the client or whose domain holds the client's
//! verified host name. Host names are those rpol verified itself (PTR,
//! then forward-confirmed through its resolver): Postfix's client_name is
//! verified too, but a request may come from anything that can reach the
//! socket, and a claimed name or HELO must never buy a pass.

use std::net::IpAddr;
use std::time::SystemTime;

use super::Context;
use super::dnscheck::{HostStatus, MAX_PTR_NAMES, Ptr, forward_confirm_names, lookup_ptr};
use crate::greylist::{GreylistSettings, normalise_sender};
use crate::protocol::{Action, ProtocolState};
use crate::spf::{self, Identity};
use crate::state::store::StoreError;
use crate::state::store::greylist::{GreylistParams, TripletInfo, TripletKey, Verdict};
use crate::syntax::valid_hostname;
use crate::vocab::OnStoreError;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;
use viaspf::SpfResult;

/// The store's view of the settings at `now`.
pub fn params(s: &GreylistSettings, now: u64) -> GreylistParams {
    GreylistParams {
        now,
        delay: s.delay.as_secs(),
        retry_window: s.retry_window.as_secs(),
        max_age: s.max_age.as_secs(),
        auto_whitelist_clients: s.auto_whitelist_clients,
    }
}

/// Greylists the triplet unless something says it need not be.
pub async fn check_greylist(ctx: &mut Context<'_>) -> Outcome {
    let Some(settings) = ctx.site.greylist.as_ref() else {
        // compile() refuses the rule without [greylist].
        return Outcome::Dunno;
    };
    let req = ctx.request;
    let Some(ip) = req.client_ip().map(|ip| ip.to_canonical()) else {
        let addr = req.client_address.clone();
        ctx.note(|| format!("client address {addr:?} is not an IP address: not greylisted"));
        return Outcome::Dunno;
    };
    if let Some(why) = skip(ctx, settings, ip).await {
        ctx.note(|| format!("not greylisted: {why}"));
        return Outcome::Dunno;
    }
    let Some(store) = ctx.state.store().cloned() else {
        ctx.note(|| "no store open (--test-request does not touch greylisting records)".into());
        return on_store_error(ctx, settings);
    };
    let net = settings.client_net(ip).addr().to_string();
    let sender = normalise_sender(&req.sender);
    let key = TripletKey::new(&net, &sender, &req.recipient);
    let info = TripletInfo::new(&net, &sender, &req.recipient, settings.privacy);
    let now = SystemTime::now();
    let secs = crate::common::unix_secs(now);
    let verdict = store
        .greylist_noting(
            key,
            Some(info),
            &net,
            &ip.to_string(),
            params(settings, secs),
        )
        .await;
    let triplet = || format!("triplet {net}/{sender}/{}", req.recipient.to_lowercase());
    match verdict {
        // A busy store defers: Postfix would at its own timeout, and a
        // flood must not make the check skippable.
        Err(e @ StoreError::Busy(_)) => {
            ctx.note(|| format!("store busy: {e}"));
            Outcome::DeferIfPermit(unavailable())
        }
        Err(e) => {
            ctx.note(|| format!("store failed: {e}"));
            on_store_error(ctx, settings)
        }
        Ok(Verdict::AutoWhitelisted { count }) => {
            ctx.note(|| format!("not greylisted: client {ip} auto-whitelisted ({count} passes)"));
            Outcome::Dunno
        }
        Ok(Verdict::Known) => {
            ctx.note(|| format!("{}: passed before", triplet()));
            Outcome::Dunno
        }
        Ok(Verdict::Greylisted {
            missing,
            first_seen,
        }) => {
            let what = if first_seen {
                "new".to_string()
            } else {
                format!("early retry, {missing}s missing")
            };
            ctx.note(|| format!("{}: greylisted ({what})", triplet()));
            greylisted(settings, missing, &req.recipient)
        }
        Ok(Verdict::NotStored { missing, why }) => {
            ctx.note(|| format!("{}: greylisted (new), not stored: {why}", triplet()));
            greylisted(settings, missing, &req.recipient)
        }
        Ok(Verdict::Passed {
            delayed,
            whitelisted_now,
        }) => {
            if whitelisted_now {
                tracing::info!(
                    "greylist: client {ip} auto-whitelisted after {} passes",
                    settings.auto_whitelist_clients
                );
            }
            ctx.note(|| format!("{}: passed after {delayed}s", triplet()));
            match settings.header_line(delayed, now) {
                // Postfix ignores PREPEND at END-OF-MESSAGE.
                Some(_) if req.state() == ProtocolState::EndOfMessage => Outcome::Dunno,
                Some(line) => Outcome::Pass(Action::prepend(&line)),
                None => Outcome::Dunno,
            }
        }
    }
}

/// The `[greylist] action` for a triplet `missing` seconds early.
fn greylisted(settings: &GreylistSettings, missing: u64, recipient: &str) -> Outcome {
    let reply = settings.reply(missing, recipient);
    if settings.action.defer_if_permit {
        Outcome::DeferIfPermit(reply)
    } else {
        Outcome::Reject(reply)
    }
}

fn unavailable() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Greylisting temporarily unavailable, try again later",
    )
}

fn on_store_error(ctx: &mut Context<'_>, settings: &GreylistSettings) -> Outcome {
    match settings.on_store_error {
        OnStoreError::Dunno => {
            ctx.note(|| "on_store_error = dunno: not greylisted".into());
            Outcome::Dunno
        }
        OnStoreError::Defer => {
            ctx.note(|| "on_store_error = defer".into());
            Outcome::DeferIfPermit(unavailable())
        }
    }
}

/// Why this request is not greylisted, if it is not.
async fn skip(ctx: &mut Context<'_>, s: &GreylistSettings, ip: IpAddr) -> Option<String> {
    let req = ctx.request;
    if let Some(net) = ctx.site.mynetworks.find(ip) {
        return Some(format!("{ip} is in mynetworks ({net})"));
    }
    if req.is_authenticated() {
        return Some(format!("authenticated as {:?}", req.sasl_username));
    }
    if let Some(net) = s.whitelist_clients.network_of(ip) {
        return Some(format!("client {ip} in whitelist_clients ({net})"));
    }
    if let Some(r) = s.whitelist_recipients.entry(&req.recipient) {
        return Some(format!(
            "recipient in whitelist_recipients ({})",
            r.as_str()
        ));
    }
    if let Some(why) = by_dnsbl_score(ctx, s).await {
        return Some(why);
    }
    let sender_domain = crate::syntax::split_address(&req.sender)
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty());
    let want_names =
        !s.whitelist_clients.names.is_empty() || (s.skip_fcrdns_match && sender_domain.is_some());
    if want_names {
        for name in verified_names(ctx, ip).await {
            if let Some(r) = s.whitelist_clients.name_entry(&name) {
                return Some(format!(
                    "client name {name} (forward-confirmed) in whitelist_clients ({})",
                    r.as_str()
                ));
            }
            if s.skip_fcrdns_match
                && let Some(d) = &sender_domain
                && spf::is_under(&name, d)
            {
                return Some(format!(
                    "client name {name} (forward-confirmed) is under the sender domain {d}"
                ));
            }
        }
    }
    if s.skip_spf_pass && sender_domain.is_some() {
        let helo = req.helo_name.trim_end_matches('.');
        let site = ctx.site;
        let sender = site.qualified_sender(&req.sender);
        let sender = sender.as_ref();
        let what = || format!("SPF mailfrom {sender}");
        let e = super::spf::evaluation(ctx, ip, Identity::MailFrom, sender, helo, what).await;
        if e.result == SpfResult::Pass {
            // A mechanism the sender's DNS answers per client (exists:, a
            // macro) can say yes to this client and no to any probe.
            if let Some(m) = e.mechanism.as_deref().filter(|m| answers_per_client(m)) {
                ctx.note(|| format!("SPF pass for {sender} ignored: matched {m}, decided per client by the sender's DNS"));
                return None;
            }
            // A record that passes everyone (+all, a /0, a wildcard exists:)
            // or a range wider than a /8 (IPv6: a /16) would let any spammer
            // skip greylisting: it passes for the client's neighbour across
            // that boundary too, and is then no reason to skip.
            let probe = across_the_wide_boundary(ip);
            let what =
                || format!("SPF mailfrom {sender} for {probe}, beyond the client's /8 or /16");
            let wide =
                super::spf::evaluation(ctx, probe, Identity::MailFrom, sender, helo, what).await;
            if wide.result == SpfResult::Pass {
                ctx.note(|| {
                    format!("SPF pass for {sender} ignored: its record also passes {probe}")
                });
                return None;
            }
            return Some(format!("SPF pass for {sender} from {ip}"));
        }
    }
    None
}

/// Why the client's `[dnsbl] sites` score spares it greylisting
/// (`skip_dnswl`, `min_dnsbl_score`), if it does. The score's most (had
/// every failed list listed it) decides: a list that fails never spares a
/// client. The trace says which setting applied, either way.
async fn by_dnsbl_score(ctx: &mut Context<'_>, s: &GreylistSettings) -> Option<String> {
    if s.min_dnsbl_score.is_none() && !s.skip_dnswl {
        return None;
    }
    let sites = ctx.site.dnsbl_sites.clone()?;
    let score = super::dnsbl::client_score(ctx).await?;
    let failed = if score.highest == score.total {
        String::new()
    } else {
        format!(", {} had the failed lists listed it", score.highest)
    };
    if s.skip_dnswl && sites.allowlists(&score) {
        return Some(format!(
            "skip_dnswl: DNS list score {} <= allowlist_threshold {}",
            score.total, sites.allowlist_threshold
        ));
    }
    if s.skip_dnswl {
        ctx.note(|| {
            format!(
                "skip_dnswl: DNS list score {}{failed} is above allowlist_threshold {}",
                score.total, sites.allowlist_threshold
            )
        });
    }
    if let Some(min) = s.min_dnsbl_score {
        if score.highest < min {
            return Some(format!(
                "min_dnsbl_score: DNS list score {} < {min}",
                score.total
            ));
        }
        ctx.note(|| {
            format!(
                "min_dnsbl_score: DNS list score {}{failed} >= {min}: greylisting applies",
                score.total
            )
        });
    }
    None
}

/// Whether a matched SPF mechanism is one whose answer the sender's DNS
/// chooses for each client address: `exists:`, or any macro (`%{i}`,
/// `%{p}`, ...) in its domain.
fn answers_per_client(mechanism: &str) -> bool {
    let m = mechanism.trim_start_matches(['+', '?', '~', '-']);
    m.get(..7)
        .is_some_and(|w| w.eq_ignore_ascii_case("exists:"))
        || m.contains("%{")
}

/// `ip` with the last bit of its /8 (IPv6: its /16) flipped: an address a
/// record covers along with `ip` only if it covers more than that prefix.
fn across_the_wide_boundary(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => std::net::Ipv4Addr::from(u32::from(v4) ^ (1 << 24)).into(),
        IpAddr::V6(v6) => std::net::Ipv6Addr::from(u128::from(v6) ^ (1 << 112)).into(),
    }
}

/// The client's PTR names that resolve back to it, lowercase, without
/// the trailing dot. A DNS failure verifies nothing.
async fn verified_names(ctx: &mut Context<'_>, ip: IpAddr) -> Vec<String> {
    let Ptr::Names(names) = lookup_ptr(ctx, ip).await else {
        return Vec::new();
    };
    let names = names
        .into_iter()
        .take(MAX_PTR_NAMES)
        .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
        .filter(|name| valid_hostname(name))
        .collect();
    forward_confirm_names(ctx, names, ip, false)
        .await
        .into_iter()
        .filter_map(|(name, status)| (status == HostStatus::Found).then_some(name))
        .collect()
}
