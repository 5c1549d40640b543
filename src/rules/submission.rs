//! Submission rules: Postfix's sender login checks over the login map, and
//! `check_outbound_spf`, which keeps mail that would fail SPF at the
//! receiver from leaving through our egress.

use std::net::IpAddr;

use super::Context;
use crate::spf::{Evaluation, Identity, SpfAction};
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;
use viaspf::SpfResult;

/// The SASL login, if the client authenticated (Postfix sends
/// `sasl_username` only then).
fn login<'a>(ctx: &Context<'a>) -> Option<&'a str> {
    let user = ctx.request.sasl_username.as_str();
    (!user.is_empty()).then_some(user)
}

/// Whether `login` owns `sender`; `None` when nobody does (unlisted).
fn owned_by(ctx: &Context<'_>, sender: &str, login: &str) -> Option<bool> {
    let logins = ctx.site.logins.as_ref()?;
    let local =
        crate::syntax::split_address(sender).is_some_and(|(_, d)| ctx.site.is_local_domain(d));
    let owners = logins.owners(sender, &ctx.site.recipient_delimiter, local)?;
    Some(owners.iter().any(|o| o.eq_ignore_ascii_case(login)))
}

fn not_owned(login: &str) -> Outcome {
    Outcome::Reject(Reply::new(
        553,
        "5.7.1",
        format!("not owned by user {login}"),
    ))
}

fn not_logged_in() -> Outcome {
    Outcome::Reject(Reply::new(553, "5.7.1", "not logged in"))
}

/// Which Postfix sender-login restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginCheck {
    /// reject_authenticated_sender_login_mismatch: authenticated clients
    /// may send only as addresses their login owns (unlisted ones fail too).
    Authenticated,
    /// reject_unauthenticated_sender_login_mismatch: an unauthenticated
    /// client may not use an address that has an owner.
    Unauthenticated,
    /// reject_sender_login_mismatch: both of the above.
    Both,
    /// reject_known_sender_login_mismatch (Postfix 2.11): only listed
    /// addresses are checked, against the login or its absence.
    Known,
}

/// Postfix's `*_sender_login_mismatch` restrictions: `553 5.7.1 not owned
/// by user LOGIN` / `553 5.7.1 not logged in`. The null sender is not
/// checked.
pub fn reject_authenticated_sender_login_mismatch(ctx: &mut Context<'_>) -> Outcome {
    sender_login_mismatch(ctx, LoginCheck::Authenticated)
}

pub fn reject_unauthenticated_sender_login_mismatch(ctx: &mut Context<'_>) -> Outcome {
    sender_login_mismatch(ctx, LoginCheck::Unauthenticated)
}

pub fn reject_sender_login_mismatch(ctx: &mut Context<'_>) -> Outcome {
    sender_login_mismatch(ctx, LoginCheck::Both)
}

pub fn reject_known_sender_login_mismatch(ctx: &mut Context<'_>) -> Outcome {
    sender_login_mismatch(ctx, LoginCheck::Known)
}

fn sender_login_mismatch(ctx: &mut Context<'_>, check: LoginCheck) -> Outcome {
    if ctx.request.sender.is_empty() {
        ctx.note(|| "null sender: not checked".into());
        return Outcome::Dunno;
    }
    // Postfix resolves the sender before its login checks: `bob` is
    // bob@$myorigin, and `bob@example.com.`, `bob@example.com@` and
    // `bob%example.com@localhost` are bob@example.com.
    // One that routes on beyond that is owned by nobody we know: refused.
    let (sender, owned) = match ctx.site.resolved_address(&ctx.request.sender) {
        Some(sender) => {
            let sender = sender.into_owned();
            let owned = owned_by(ctx, &sender, login(ctx).unwrap_or(""));
            (sender, owned)
        }
        None => (ctx.request.sender.clone(), Some(false)),
    };
    match (login(ctx), check) {
        (Some(login), LoginCheck::Authenticated | LoginCheck::Both) => {
            if owned == Some(true) {
                ctx.note(|| format!("{sender} is owned by {login}"));
                Outcome::Dunno
            } else {
                ctx.note(|| format!("{sender} is not owned by {login} ({})", listed(owned)));
                not_owned(login)
            }
        }
        (Some(login), LoginCheck::Known) => match owned {
            Some(false) => {
                ctx.note(|| format!("{sender} belongs to another login"));
                not_owned(login)
            }
            other => {
                ctx.note(|| format!("{sender}: {}", listed(other)));
                Outcome::Dunno
            }
        },
        (Some(_), LoginCheck::Unauthenticated) => Outcome::Dunno,
        (None, LoginCheck::Authenticated) => {
            ctx.note(|| "not authenticated: not checked".into());
            Outcome::Dunno
        }
        (None, _) => {
            if owned.is_some() {
                ctx.note(|| format!("{sender} has an owner and the client is not logged in"));
                not_logged_in()
            } else {
                Outcome::Dunno
            }
        }
    }
}

fn listed(owned: Option<bool>) -> &'static str {
    match owned {
        Some(true) => "owned",
        Some(false) => "listed for other logins",
        None => "not listed in the login map",
    }
}

/// `check_outbound_spf`: for a sender that is neither one of our domains
/// nor a foreign address registered to this login, the sender domain's SPF
/// must authorize every egress address. Per result (`[outbound_spf]`):
/// reject `550 5.7.23`/`5.7.24`, defer `451 4.7.24`, or accept.
pub async fn check_outbound_spf(ctx: &mut Context<'_>) -> Outcome {
    let Some(sender) = ctx.site.resolved_address(&ctx.request.sender) else {
        ctx.note(|| "the sender routes on beyond what rpol resolves: refused".into());
        return Outcome::Reject(Reply::new(553, "5.1.7", "Bad sender address syntax"));
    };
    let sender = sender.into_owned();
    let Some((_, domain)) = crate::syntax::split_address(&sender) else {
        ctx.note(|| "null sender: not checked".into());
        return Outcome::Dunno;
    };
    if ctx.site.is_local_domain(domain) {
        ctx.note(|| format!("{domain} is one of our domains: our own SPF covers our egress"));
        return Outcome::Dunno;
    }
    if let Some(f) = ctx.site.foreign_sender(&sender) {
        let (relay, owner) = (f.relay.clone(), f.login.clone());
        if login(ctx).is_some_and(|l| l.eq_ignore_ascii_case(&owner)) {
            ctx.note(|| format!("registered foreign address of {owner}: relayed through {relay}"));
            return Outcome::Dunno;
        }
        ctx.note(|| {
            format!("registered foreign address of {owner}, not of this login: SPF decides")
        });
    }
    let mut worst: Option<(SpfAction, Evaluation, IpAddr)> = None;
    for &ip in &ctx.site.egress.clone() {
        let what = || format!("SPF of {sender} for egress {ip}");
        let e = super::spf::evaluation(ctx, ip, Identity::MailFrom, &sender, "", what).await;
        let action = ctx.site.outbound_spf.for_result(&e.result);
        let rank = |a: SpfAction| match a {
            SpfAction::Accept => 0,
            SpfAction::DeferIfPermit => 1,
            SpfAction::Defer => 2,
            // Not in [outbound_spf] (the loader refuses it there).
            SpfAction::Reject | SpfAction::RejectUnlessDmarc => 3,
        };
        if worst
            .as_ref()
            .is_none_or(|(w, _, _)| rank(action) > rank(*w))
        {
            worst = Some((action, e, ip));
        }
    }
    let Some((action, e, ip)) = worst else {
        return Outcome::Dunno;
    };
    refuse(action, &e, ip, domain)
}

fn refuse(action: SpfAction, e: &Evaluation, ip: IpAddr, domain: &str) -> Outcome {
    let result = e.result_name();
    let (dsn, text) = match &e.result {
        SpfResult::Temperror => (
            "4.7.24",
            format!(
                "cannot check the SPF record of {domain} for our outgoing address {ip} ({}); try again later",
                e.problem.as_deref().unwrap_or("DNS error")
            ),
        ),
        other => (
            if matches!(other, SpfResult::Permerror) {
                "5.7.24"
            } else {
                "5.7.23"
            },
            format!(
                "SPF of {domain} gives {result} for our outgoing address {ip}: receivers would reject or junk this mail. \
                 Send it through {domain}'s own mail server, or ask the postmaster to register the address"
            ),
        ),
    };
    match action {
        SpfAction::Accept => Outcome::Dunno,
        SpfAction::Reject | SpfAction::RejectUnlessDmarc => {
            Outcome::Reject(Reply::new(550, dsn, text))
        }
        SpfAction::Defer => Outcome::Reject(Reply::new(451, dsn, text)),
        SpfAction::DeferIfPermit => Outcome::DeferIfPermit(Reply::new(451, dsn, text)),
    }
}
