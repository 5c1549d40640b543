//! The command line of `rpol`: the one clap definition that the binary
//! parses and that `cargo run --example man` turns into rpol(8), so the
//! manual page cannot drift from `--help`.

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::config;

/// Postfix policy delegation daemon with Postfix-exact restrictions and SPF.
#[derive(Debug, Parser)]
#[command(name = "rpol", version, about, long_about = None)]
pub struct Args {
    /// Configuration file
    #[arg(short, long, value_name = "PATH", default_value = config::DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// Listen on ADDR (unix:PATH or tcp:HOST:PORT) instead of [server] listen; repeatable
    #[arg(short, long, value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Evaluate requests from FILE (or stdin) and print the responses; trace on stderr
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-",
          conflicts_with_all = ["check_config", "stdio"])]
    pub test_request: Option<String>,

    /// Check the configuration and what it needs of this host (accounts, store, socket and table permissions; our egress on the DNS blocklists), and exit (non-zero, with FILE:LINE:COLUMN errors, if invalid); with --stdio, for spawn(8)
    #[arg(long)]
    pub check_config: bool,

    /// Print the main.cf / master.cf lines (and relay maps) that match the configuration
    #[arg(long, conflicts_with_all = ["check_config", "stdio", "test_request"])]
    pub postfix_config: bool,

    /// Serve one connection on stdin/stdout (Postfix spawn(8)); logs go to syslog
    #[arg(long)]
    pub stdio: bool,

    /// Send logs to syslog instead of stderr
    #[arg(long, conflicts_with = "journal")]
    pub syslog: bool,

    /// Send logs to the systemd journal, each record with its priority and fields (the default when stderr is the journal)
    #[arg(long)]
    pub journal: bool,

    /// Started as root: run as USER once the sockets are bound (overrides [server] user; `root` stays root)
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
}

/// The clap command, for generators (the manual page).
pub fn command() -> clap::Command {
    Args::command()
}
