//! Restrictions that decide without looking at the request: `permit`,
//! `dunno`, `reject`, `defer`, `defer_if_permit`, `defer_if_reject`
//! (Postfix generic_checks), with Postfix's codes and texts.

use super::Context;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;

/// `permit`: ends this stage (and only this one).
pub fn permit(_: &mut Context<'_>) -> Outcome {
    Outcome::Permit
}

/// `dunno`: on to the next rule.
pub fn dunno(_: &mut Context<'_>) -> Outcome {
    Outcome::Dunno
}

/// `reject`: `$reject_code 5.7.1 Access denied`.
pub fn reject(ctx: &mut Context<'_>) -> Outcome {
    Outcome::Reject(Reply::new(
        ctx.site.codes.reject_code,
        "5.7.1",
        "Access denied",
    ))
}

/// `defer`: `$defer_code 4.3.2 Try again later`.
pub fn defer(ctx: &mut Context<'_>) -> Outcome {
    Outcome::Reject(Reply::new(
        ctx.site.codes.defer_code,
        "4.3.2",
        "Try again later",
    ))
}

/// `defer_if_permit`: `$defer_code 4.7.0 defer_if_permit requested`.
pub fn defer_if_permit(ctx: &mut Context<'_>) -> Outcome {
    Outcome::DeferIfPermit(Reply::new(
        ctx.site.codes.defer_code,
        "4.7.0",
        "defer_if_permit requested",
    ))
}

/// `defer_if_reject`: `$defer_code 4.7.0 defer_if_reject requested`.
pub fn defer_if_reject(ctx: &mut Context<'_>) -> Outcome {
    Outcome::DeferIfReject(Reply::new(
        ctx.site.codes.defer_code,
        "4.7.0",
        "defer_if_reject requested",
    ))
}
