//! The small policy the daemon, CLI and connection-handler tests share:
//! port 587 requires SASL, every other request gets no opinion; with the
//! requests and the whole responses that go with it. No DNS is involved.
//!
//! Included with `use crate::support::port587;` (tests/suite.rs builds it once; a binary of its own includes it with `#[path = "support/port587.rs"] mod port587;`).
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

/// How the server ends a connection that carried an [`Exchange`]'s bytes
/// and then end of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// End of input between requests: closed after the last answer.
    Closed,
    /// End of input inside a request: closed without answering it.
    ClosedMidRequest,
    /// A malformed request: answered with the error action, then closed.
    Refused,
}

/// Bytes a client sends on one connection and everything the server
/// answers, whole.
pub struct Exchange {
    pub name: &'static str,
    pub wire: Vec<u8>,
    pub answer: String,
    pub ending: Ending,
}

/// The wire bytes of one request: `request=smtpd_access_policy`, `attrs`
/// as `name=value` lines, the empty line. (support/rpol.rs has the same
/// for the binary; this file stands alone so any test can include it.)
pub fn wire(attrs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"request=smtpd_access_policy\n".to_vec();
    for (name, value) in attrs {
        out.extend_from_slice(format!("{name}={value}\n").as_bytes());
    }
    out.push(b'\n');
    out
}

/// The framing table: requests and their whole answers, pipelined or not,
/// with odd but valid lines, and the malformed requests that end a
/// connection. Every client address is its own, so an answer sent for the
/// wrong request shows.
pub fn exchanges() -> Vec<Exchange> {
    let mut odd = submission("198.51.100.25", false);
    // Postfix sends empty values; a value may hold '='.
    odd.extend([("stress", ""), ("ccert_subject", "CN=mx, O=Example=Org")]);
    vec![
        Exchange {
            name: "authenticated",
            wire: wire(&submission("198.51.100.21", true)),
            answer: DUNNO.into(),
            ending: Ending::Closed,
        },
        Exchange {
            name: "rejected",
            wire: wire(&submission("198.51.100.22", false)),
            answer: rejected("198.51.100.22"),
            ending: Ending::Closed,
        },
        Exchange {
            name: "two requests pipelined in one buffer",
            wire: [
                wire(&submission("198.51.100.23", false)),
                wire(&submission("198.51.100.23", true)),
            ]
            .concat(),
            answer: format!("{}{DUNNO}", rejected("198.51.100.23")),
            ending: Ending::Closed,
        },
        Exchange {
            name: "CRLF line ends",
            wire: String::from_utf8(wire(&submission("198.51.100.24", false)))
                .unwrap()
                .replace('\n', "\r\n")
                .into_bytes(),
            answer: rejected("198.51.100.24"),
            ending: Ending::Closed,
        },
        Exchange {
            name: "empty values and '=' in a value",
            wire: wire(&odd),
            answer: rejected("198.51.100.25"),
            ending: Ending::Closed,
        },
        Exchange {
            name: "a request, then the start of another",
            wire: [
                wire(&submission("198.51.100.26", true)),
                b"request=smtpd_access_policy\nclient_address=198.51.100.26\n".to_vec(),
            ]
            .concat(),
            answer: DUNNO.into(),
            ending: Ending::ClosedMidRequest,
        },
        Exchange {
            name: "a request, then a line without '='",
            wire: [
                wire(&submission("198.51.100.27", true)),
                b"request=smtpd_access_policy\nnonsense\n\n".to_vec(),
            ]
            .concat(),
            answer: format!("{DUNNO}{ERROR_RESPONSE}"),
            ending: Ending::Refused,
        },
        Exchange {
            name: "another request type",
            wire: b"request=other\nclient_address=198.51.100.28\n\n".to_vec(),
            answer: ERROR_RESPONSE.into(),
            ending: Ending::Refused,
        },
        Exchange {
            name: "no request attribute",
            wire: wire(&submission("198.51.100.29", false))
                .split_off("request=smtpd_access_policy\n".len()),
            answer: ERROR_RESPONSE.into(),
            ending: Ending::Refused,
        },
        Exchange {
            name: "invalid UTF-8",
            wire: b"request=smtpd_access_policy\nsender=caf\xe9@example.com\n\n".to_vec(),
            answer: ERROR_RESPONSE.into(),
            ending: Ending::Refused,
        },
    ]
}
