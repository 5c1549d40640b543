//! `check_client_access`, `check_helo_access`, `check_sender_access`,
//! `check_recipient_access`: an access(5) table consulted with Postfix's
//! key order for the stage's subject.

use super::Context;
use crate::tables::AccessTable;
use crate::vocab::Stage;
use crate::vocab::outcome::Outcome;

pub fn check_client_access(ctx: &mut Context<'_>, table: &AccessTable) -> Outcome {
    check_access(ctx, Stage::Client, table)
}

pub fn check_helo_access(ctx: &mut Context<'_>, table: &AccessTable) -> Outcome {
    check_access(ctx, Stage::Helo, table)
}

pub fn check_sender_access(ctx: &mut Context<'_>, table: &AccessTable) -> Outcome {
    check_access(ctx, Stage::Sender, table)
}

pub fn check_recipient_access(ctx: &mut Context<'_>, table: &AccessTable) -> Outcome {
    check_access(ctx, Stage::Recipient, table)
}

fn check_access(ctx: &mut Context<'_>, subject: Stage, table: &AccessTable) -> Outcome {
    let req = ctx.request;
    let site = ctx.site;
    let subdomains = site.access_subdomains;
    let hit = match subject {
        Stage::Client => table.lookup_client(&req.client_name, &req.client_address, subdomains),
        Stage::Helo => table.lookup_domain(&req.helo_name, subdomains),
        Stage::Sender => table.lookup_address(
            &req.sender,
            &site.recipient_delimiter,
            subdomains,
            &site.null_access_key,
        ),
        Stage::Recipient => table.lookup_address(
            &req.recipient,
            &site.recipient_delimiter,
            subdomains,
            &site.null_access_key,
        ),
    };
    // What was looked up, as the trace names it: built only for a trace.
    let what = || match subject {
        Stage::Client => req.client_label(),
        Stage::Helo => req.helo_name.clone(),
        Stage::Sender => format!("<{}>", req.sender),
        Stage::Recipient => format!("<{}>", req.recipient),
    };
    match hit {
        Some(hit) => {
            let outcome = hit.entry.outcome.clone();
            ctx.note(|| {
                format!(
                    "{}: key {:?} found at {}:{}",
                    what(),
                    hit.key,
                    table.path.display(),
                    hit.entry.line
                )
            });
            outcome
        }
        None => {
            ctx.note(|| format!("{}: no key found in {}", what(), table.path.display()));
            Outcome::Dunno
        }
    }
}
