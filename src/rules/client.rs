//! Client restrictions that need no DNS: `permit_mynetworks`.

use super::Context;
use crate::policy::outcome::Outcome;

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
    match ctx.site.mynetworks.iter().find(|net| net.contains(&ip)) {
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
