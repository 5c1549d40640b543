//! rpol: a Postfix policy delegation daemon.
