//! The small policy the daemon, CLI and connection-handler tests share:
//! port 587 requires SASL, every other request gets no opinion; with the
//! requests and the whole responses that go with it. No DNS is involved.
//!
//! Included with `#[path = "support/port587.rs"] mod port587;`.
#![allow(dead_code)] // each test binary uses a different subset

/// Port 587 requires SASL; every other request gets no opinion.
pub const SUBMISSION: &str = r#"
[profile.submission]
match = { server_port = 587 }
client = ["permit_sasl_authenticated", "reject"]

[profile.default]
client = ["dunno"]
"#;

/// The default error action (`[server] error_action` unset).
pub const ERROR_RESPONSE: &str = "action=DEFER_IF_PERMIT 4.3.5 Policy service error\n\n";

pub const DUNNO: &str = "action=DUNNO\n\n";

/// A submission request from `addr`, authenticated or not.
pub fn submission(addr: &str, authenticated: bool) -> Vec<(&str, &str)> {
    let mut attrs = vec![
        ("protocol_state", "RCPT"),
        ("protocol_name", "ESMTP"),
        ("client_address", addr),
        ("client_name", "mail.example.com"),
        ("reverse_client_name", "mail.example.com"),
        ("server_port", "587"),
        ("helo_name", "mail.example.com"),
        ("sender", "alice@example.com"),
        ("recipient", "bob@example.net"),
        ("recipient_count", "0"),
    ];
    if authenticated {
        attrs.push(("sasl_method", "PLAIN"));
        attrs.push(("sasl_username", "alice"));
    }
    attrs
}

/// What rpol answers an unauthenticated submission request from `addr`:
/// `reject` in the client stage, called from the recipient restrictions.
pub fn rejected(addr: &str) -> String {
    format!("action=554 5.7.1 <mail.example.com[{addr}]>: Client host rejected: Access denied\n\n")
}
