//! rpol: a Postfix policy delegation daemon. Postfix asks, over the policy
//! protocol, whether to accept an SMTP transaction; rpol answers from one
//! ordered rule chain configured in policy.toml.
//!
//! The path of one request: [`server`] reads bytes, [`protocol`] decodes a
//! [`protocol::Request`], [`policy`] picks a profile and runs its chain of
//! [`rules`] (which read [`tables`] and the [`dns`]), and the
//! [`policy::Decision`] goes back as `action=...`.

pub mod bounded;
pub mod cli;
pub mod common;
pub mod config;
pub mod dns;
pub mod dnsbl;
pub mod greylist;
pub mod log;
pub mod policy;
pub mod postfix_config;
pub mod protocol;
pub mod rules;
pub mod server;
pub mod site;
pub mod spf;
pub mod state;
pub mod storecmd;
pub mod syntax;
pub mod tables;
pub mod testreq;
pub mod vocab;
