//! The policy tests' one setup: a loopback DNS server serving the given
//! zones, a config (and its table files) naming that server, the rpol
//! binary serving the config on a unix socket, and the same config loaded
//! in-process with its own runtime state, for traces.
//!
//! Included with `use crate::support::fixture;` (tests/suite.rs builds it once; a binary of its own includes it with `#[path = "support/fixture.rs"] mod fixture;`); it brings
//! support/rpol.rs and support/dns.rs along as [`daemon`] and
//! [`dns_server`], so a test file includes only this one.
#![allow(dead_code)] // each test binary uses a different subset

pub use super::dns as dns_server;
pub use super::rpol as daemon;

use dns_server::TestDns;
use rpol::config;
use rpol::policy::{Decision, Policy, evaluate};
use rpol::protocol::Request;
use rpol::state::State;

/// Written where the test DNS server's address goes in a config template,
/// e.g. `nameservers = ["@DNS@"]`. Every template must name it: a config
/// without nameservers would resolve through /etc/resolv.conf, which names
/// a server off this machine (shared/TESTING.md).
pub const DNS_ADDR: &str = "@DNS@";

/// A RCPT request from mail.good.example (203.0.113.10, which
/// good.example's SPF record in the default zones authorizes): the base
/// request of the policy tests; each question replaces or adds attributes.
pub const RCPT: &[(&str, &str)] = &[
    ("protocol_state", "RCPT"),
    ("client_address", "203.0.113.10"),
    ("client_name", "mail.good.example"),
    ("reverse_client_name", "mail.good.example"),
    ("helo_name", "mail.good.example"),
    ("sender", "someone@good.example"),
    ("recipient", "alice@example.com"),
];

/// [`RCPT`] from 203.0.113.50, a client the DNS list tests' zones do not
/// list; each question changes it.
pub const UNLISTED_RCPT: &[(&str, &str)] = &[
    ("protocol_state", "RCPT"),
    ("client_address", "203.0.113.50"),
    ("client_name", "mail.good.example"),
    ("reverse_client_name", "mail.good.example"),
    ("helo_name", "mail.good.example"),
    ("sender", "someone@good.example"),
    ("recipient", "alice@example.com"),
];

/// What to start.
pub struct Spec<'a> {
    /// The zones served, as (origin, RFC 1035 zone text).
    pub zones: &'a [(&'a str, &'a str)],
    /// policy.toml, with [`DNS_ADDR`] where the server's address goes.
    pub config: &'a str,
    /// Files beside policy.toml (tables, site files): (relative path, text).
    pub files: &'a [(&'a str, &'a str)],
    /// The request every question starts from; each question replaces or
    /// adds attributes.
    pub base: &'static [(&'static str, &'static str)],
}

/// One row of a case table: what the row shows, the attributes that
/// differ from the base request, and the whole action expected.
pub type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);

/// A running setup; the daemon is killed and the DNS server stopped on drop.
pub struct Fixture {
    pub dns: TestDns,
    /// The same configuration loaded in-process, for traces, with its own
    /// runtime state.
    pub policy: Policy,
    pub state: State,
    pub daemon: daemon::Rpol,
    base: &'static [(&'static str, &'static str)],
}

impl Fixture {
    /// Starts the DNS server, writes the config and its files, loads the
    /// config in-process and starts the daemon on it.
    pub async fn start(spec: Spec<'_>) -> Fixture {
        assert!(
            spec.config.contains(DNS_ADDR),
            "the config must name the test DNS server ({DNS_ADDR}):\n{}",
            spec.config
        );
        let dns = TestDns::start(spec.zones).await;
        let text = spec.config.replace(DNS_ADDR, &dns.addr.to_string());
        let mut setup = daemon::Setup::new(&text);
        for (path, contents) in spec.files {
            setup = setup.file(path, contents);
        }
        let policy = config::load(&setup.config)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .policy;
        Fixture {
            dns,
            state: rpol::server::runtime_state(&policy).expect("runtime state"),
            policy,
            daemon: setup.start(),
            base: spec.base,
        }
    }

    /// The base request with `attrs` replacing or adding attributes, in
    /// wire order (replaced attributes move to the end).
    pub fn pairs<'a>(&self, attrs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = self.base.to_vec();
        for &(k, v) in attrs {
            all.retain(|(name, _)| *name != k);
            all.push((k, v));
        }
        all
    }

    /// [`Fixture::pairs`] as an in-process request.
    pub fn request(&self, attrs: &[(&str, &str)]) -> Request {
        Request::from_pairs(self.pairs(attrs))
    }

    /// The action the daemon answers [`Fixture::pairs`] with, over a new
    /// connection: the whole text after `action=` (anything but exactly
    /// one response fails the test).
    pub fn ask(&self, attrs: &[(&str, &str)]) -> String {
        daemon::ask_action(&mut self.daemon.connect(), &self.pairs(attrs))
    }

    /// Asks every row of `cases` in order, each on a new connection, and
    /// compares the whole action.
    pub fn check(&self, cases: &[Case<'_>]) {
        for (name, attrs, want) in cases {
            assert_eq!(&self.ask(attrs), want, "{name}");
        }
    }

    /// The in-process decision on [`Fixture::pairs`], with its trace. It
    /// shares no state with the daemon: caches are its own.
    pub async fn decide(&self, attrs: &[(&str, &str)]) -> Decision {
        evaluate(&self.policy, &self.state, &self.request(attrs), true).await
    }

    /// The trace of [`Fixture::decide`], one line per note.
    pub async fn trace(&self, attrs: &[(&str, &str)]) -> String {
        self.decide(attrs).await.trace.join("\n")
    }
}
