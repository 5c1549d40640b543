//! rpol: a Postfix policy delegation daemon.
pub mod dns;
