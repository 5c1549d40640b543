//! SASL restrictions: `permit_sasl_authenticated`.

use super::Context;
use crate::vocab::outcome::Outcome;

/// `permit_sasl_authenticated`: OK when the client authenticated with a
/// mechanism other than ANONYMOUS (Postfix smtpd_sasl_proto.c), else DUNNO.
pub fn permit_sasl_authenticated(ctx: &mut Context<'_>) -> Outcome {
    if ctx.request.is_authenticated() {
        let user = ctx.request.sasl_username.clone();
        let method = ctx.request.sasl_method.clone();
        ctx.note(|| format!("authenticated as {user:?} with {method}"));
        Outcome::Permit
    } else {
        ctx.note(|| "not authenticated".into());
        Outcome::Dunno
    }
}
