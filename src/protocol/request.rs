//! One decoded request. Its attributes are listed once, in [`attributes!`]'s
//! table below; the struct's fields, lookup by name, setting (each name's
//! first value wins), the strings to clear and count, and the trace form
//! are all made from that list, so none can leave one out.

use std::fmt;
use std::net::IpAddr;

use super::{ProtocolError, ProtocolState, REQUEST_KIND};

/// Makes [`Request`] from the table of attributes rules read: each a
/// `String` field named as Postfix names the attribute, with `traced` when
/// a trace shows it.
macro_rules! attributes {
    ($($name:ident $(: $traced:ident)?),* $(,)?) => {
        /// One decoded request. The attributes rules read are fields,
        /// parsed once; the rest are kept in `other` so nothing is lost for
        /// logging. A missing attribute reads as empty, as Postfix itself
        /// sends unavailable values.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Request {
            pub request: Option<String>,
            $(pub $name: String,)*
            /// Every attribute not named above, in arrival order, as
            /// `name=value\n` lines in one string: Postfix sends a dozen
            /// that no rule reads, and one allocation holds them all.
            pub(crate) other: String,
            /// `client_address` parsed, on first use: several rules ask
            /// per request.
            pub(crate) client_ip: std::sync::OnceLock<Option<IpAddr>>,
        }

        /// The attributes of the table by position: bit `1 + position`
        /// of a request's `seen` mask (bit 0 is `request`).
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy)]
        enum Attribute {
            $($name,)*
        }

        /// How many attributes the table names.
        const NAMED: usize = [$(stringify!($name)),*].len();
        const _: () = assert!(NAMED < 64, "a request's `seen` mask is a u64");

        /// The names a trace shows, in table order.
        const TRACED: &[&str] = &[$($(attributes!(@traced $traced $name),)?)*];

        impl Request {
            /// The field `name` names, with its bit in `seen`.
            fn field_mut(&mut self, name: &str) -> Option<(u64, &mut String)> {
                let (attribute, slot) = match name {
                    $(stringify!($name) => (Attribute::$name, &mut self.$name),)*
                    _ => return None,
                };
                Some((1 << (attribute as u32 + 1), slot))
            }

            /// The field `name` names.
            fn field(&self, name: &str) -> Option<&str> {
                match name {
                    $(stringify!($name) => Some(&self.$name),)*
                    _ => None,
                }
            }

            /// Every attribute string but `request`, each once.
            fn texts(&mut self) -> ([&mut String; NAMED + 1], &mut Option<String>) {
                let Request {
                    request,
                    $($name,)*
                    other,
                    client_ip: _,
                } = self;
                ([$($name,)* other], request)
            }
        }
    };
    (@traced traced $name:ident) => { stringify!($name) };
}

attributes! {
    protocol_state: traced,
    client_address: traced,
    client_name: traced,
    reverse_client_name: traced,
    client_port,
    server_address,
    helo_name: traced,
    sender: traced,
    recipient: traced,
    recipient_count,
    queue_id: traced,
    instance: traced,
    sasl_method: traced,
    sasl_username: traced,
    sasl_sender,
    encryption_protocol,
    server_port: traced,
    policy_context: traced,
}

impl Request {
    /// Builds a request from `name=value` pairs; used by the decoder and by
    /// tests. When a name repeats, the first value wins (Postfix never
    /// repeats one; SMTPD_POLICY_README lets the server pick either).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Request {
        let mut req = Request::default();
        let mut seen: u64 = 0;
        for (name, value) in pairs {
            req.set(name, value, &mut seen);
        }
        req
    }

    fn set(&mut self, name: &str, value: &str, seen: &mut u64) {
        // The decoder cuts names at the first '=' and lines at '\n', so
        // these hold for every request from the wire.
        if !self.set_known(name, value, seen) && !name.contains('=') && !value.contains('\n') {
            for part in [name, "=", value, "\n"] {
                self.other.push_str(part);
            }
        }
    }

    /// Sets the field `name` names, unless `seen` says it was set; false
    /// when no field is named so (the caller keeps the attribute in
    /// `other`).
    pub(super) fn set_known(&mut self, name: &str, value: &str, seen: &mut u64) -> bool {
        if name == "request" {
            if *seen & 1 == 0 {
                *seen |= 1;
                match &mut self.request {
                    Some(kind) => value.clone_into(kind),
                    None => self.request = Some(value.to_string()),
                }
            }
            return true;
        }
        let Some((bit, slot)) = self.field_mut(name) else {
            return false;
        };
        if *seen & bit == 0 {
            *seen |= bit;
            value.clone_into(slot);
        }
        true
    }

    /// Looks up any attribute by its Postfix name; absent reads as "".
    pub fn get(&self, name: &str) -> &str {
        if name == "request" {
            return self.request.as_deref().unwrap_or("");
        }
        self.field(name).unwrap_or_else(|| {
            self.other
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("")
        })
    }

    pub fn state(&self) -> ProtocolState {
        if self.protocol_state.is_empty() {
            ProtocolState::Other
        } else {
            ProtocolState::parse(&self.protocol_state)
        }
    }

    /// The client IP, if `client_address` holds one.
    pub fn client_ip(&self) -> Option<IpAddr> {
        *self
            .client_ip
            .get_or_init(|| self.client_address.parse().ok())
    }

    /// Whether the client authenticated: with a SASL mechanism other than
    /// ANONYMOUS (Postfix smtpd_sasl_proto.c). The one test every rule
    /// that trusts a login uses.
    pub fn is_authenticated(&self) -> bool {
        !self.sasl_method.is_empty() && !self.sasl_method.eq_ignore_ascii_case("anonymous")
    }

    /// Heap memory the attribute strings hold.
    pub(super) fn heap_bytes(&mut self) -> usize {
        let (texts, request) = self.texts();
        let kind = request.as_ref().map_or(0, String::capacity);
        texts.iter().map(|s| s.capacity()).sum::<usize>() + kind
    }

    /// Empties every attribute, keeping the strings' memory for the next
    /// request of the connection.
    pub(super) fn clear(&mut self) {
        self.client_ip.take();
        let (texts, request) = self.texts();
        for text in texts {
            text.clear();
        }
        if let Some(kind) = request {
            kind.clear();
        }
    }

    /// Checks the `request` attribute. The server requires it; the
    /// `--test-request` mode lets it be absent so hand-written requests can
    /// stay short.
    pub fn check_kind(&self, required: bool) -> Result<(), ProtocolError> {
        match &self.request {
            Some(kind) if kind == REQUEST_KIND => Ok(()),
            Some(kind) => Err(ProtocolError::WrongRequestType(kind.clone())),
            None if required => Err(ProtocolError::MissingRequestType),
            None => Ok(()),
        }
    }

    /// `name[address]` as Postfix writes a client in logs and replies.
    pub fn client_label(&self) -> String {
        let name = if self.client_name.is_empty() {
            "unknown"
        } else {
            &self.client_name
        };
        format!("{name}[{}]", self.client_address)
    }
}

impl fmt::Display for Request {
    /// The request in wire form (without the final empty line), for traces:
    /// the attributes the table marks `traced`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(kind) = &self.request {
            writeln!(f, "request={kind}")?;
        }
        for name in TRACED {
            let value = self.get(name);
            if !value.is_empty() {
                writeln!(f, "{name}={value}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name of the table sets and reads its own field, once.
    #[test]
    fn each_attribute_has_its_own_field() {
        let names = [
            "protocol_state",
            "client_address",
            "client_name",
            "reverse_client_name",
            "client_port",
            "server_address",
            "helo_name",
            "sender",
            "recipient",
            "recipient_count",
            "queue_id",
            "instance",
            "sasl_method",
            "sasl_username",
            "sasl_sender",
            "encryption_protocol",
            "server_port",
            "policy_context",
        ];
        assert_eq!(names.len(), NAMED);
        let req = Request::from_pairs(names.iter().map(|n| (*n, *n)));
        assert_eq!(req.other, "", "every name is a field");
        for name in names {
            assert_eq!(req.get(name), name);
        }
        let twice = Request::from_pairs(names.iter().flat_map(|n| [(*n, *n), (*n, "second")]));
        assert_eq!(twice, req, "the first value wins");
    }

    #[test]
    fn authenticated_means_a_method_other_than_anonymous() {
        let with = |method: &str| Request::from_pairs([("sasl_method", method)]);
        assert!(with("PLAIN").is_authenticated());
        assert!(with("login").is_authenticated());
        assert!(!with("").is_authenticated());
        assert!(!with("ANONYMOUS").is_authenticated());
        assert!(!with("anonymous").is_authenticated());
        // A login name without a method is no authentication.
        assert!(!Request::from_pairs([("sasl_username", "alice")]).is_authenticated());
    }

    #[test]
    fn a_trace_shows_the_traced_attributes_in_table_order() {
        let req = Request::from_pairs([
            ("request", "smtpd_access_policy"),
            ("server_port", "25"),
            ("client_port", "1234"),
            ("sender", "a@b"),
        ]);
        assert_eq!(
            req.to_string(),
            "request=smtpd_access_policy\nsender=a@b\nserver_port=25\n"
        );
    }
}
