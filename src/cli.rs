//! The command line of `rpol`: the one clap definition that the binary
//! parses and that `cargo run --example man` turns into rpol(8), so the
//! manual page cannot drift from `--help`.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config;

/// Postfix policy delegation daemon with Postfix-exact restrictions and SPF.
#[derive(Debug, Parser)]
#[command(name = "rpol", version, about, long_about = None)]
pub struct Args {
    /// Configuration file
    #[arg(short, long, value_name = "PATH", default_value = config::DEFAULT_CONFIG, global = true)]
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

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What rpol does instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and change the greylisting and rate-limit records of [store]; the embedded file only while rpol is stopped
    #[command(subcommand)]
    Store(StoreCommand),
}

/// `rpol store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Count the records of each kind
    Stats {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List greylisting triplets and auto-whitelisted clients (--greylist), rate-limit records (--rate), or both
    List {
        /// Only greylisting triplets and clients
        #[arg(long, conflicts_with = "rate")]
        greylist: bool,
        /// Only rate-limit records
        #[arg(long)]
        rate: bool,
        /// Print JSON, one object per record
        #[arg(long)]
        json: bool,
    },
    /// Delete the records KEY names (a triplet's or rate record's key from `list`, 8 hex digits or more, or a client's address), or with --older-than every triplet and client last seen longer ago
    Delete {
        #[arg(
            value_name = "KEY",
            required_unless_present = "older_than",
            conflicts_with = "older_than"
        )]
        key: Option<String>,
        /// A duration as in the configuration (30d, 12h, 300s)
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
    },
    /// Import postgrey's triplets and auto-whitelist counts from its DB directory (postgrey.db, postgrey_clients.db) or one of those files, read with db_dump (Debian's db-util); stop postgrey first
    ImportPostgrey {
        #[arg(value_name = "DIR_OR_DB")]
        path: PathBuf,
    },
}

/// The clap command, for generators (the manual page).
pub fn command() -> clap::Command {
    Args::command()
}
