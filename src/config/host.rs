//! What a config needs of the machine, checked by `--check-config`
//! beside the config itself: the accounts it names exist, and the account
//! rpol serves as can write its store and read its config and tables (it
//! reloads them as that account), and the account that creates a unix
//! socket can write the socket's directory. Each of these would otherwise
//! fail only at start, at the first reload or at the first store call.
//!
//! Not part of every load: a config is also loaded where it will not run
//! (the tests, `--postfix-config`, a host without the accounts yet), and
//! at start the same failures stop rpol with their own errors anyway.
//!
//! Permissions are read from the mode bits (owner, group, other, and
//! search permission on every directory above): POSIX ACLs are not read,
//! except for the account `--check-config` itself runs as, which asks the
//! kernel (access(2)).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, Gid, Group, Uid, User};

use super::server::ListenAddr;
use super::{Compiler, Loaded};
use crate::state::store::Backend;

/// An account as the kernel checks file access for it.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    /// Its group and supplementary groups.
    gids: Vec<u32>,
}

impl Account {
    /// The account this process runs as.
    fn current() -> Account {
        let uid = Uid::effective();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        let mut gids: Vec<u32> = vec![Gid::effective().as_raw()];
        gids.extend(
            nix::unistd::getgroups()
                .unwrap_or_default()
                .into_iter()
                .map(Gid::as_raw),
        );
        Account {
            name,
            uid: uid.as_raw(),
            gids,
        }
    }

    fn is_current(&self) -> bool {
        self.uid == Uid::effective().as_raw() && Uid::current() == Uid::effective()
    }

    /// Whether this account may `want` (read/write/search) the file whose
    /// metadata is `meta`, by its mode bits.
    fn may(&self, meta: &std::fs::Metadata, want: Want) -> bool {
        if self.uid == 0 {
            // Root reads and writes anything; it searches (executes) what
            // anyone may.
            return want != Want::Search || meta.is_dir() || meta.mode() & 0o111 != 0;
        }
        let bits = want as u32;
        let mode = meta.mode();
        let granted = if meta.uid() == self.uid {
            (mode >> 6) & 0o7
        } else if self.gids.contains(&meta.gid()) {
            (mode >> 3) & 0o7
        } else {
            mode & 0o7
        };
        granted & bits == bits
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Read = 4,
    Search = 1,
    /// A file opened for reading and writing (the store).
    ReadWrite = 6,
    /// A directory to create a file in.
    WriteSearch = 3,
}

/// Why `account` cannot `want` `path`, or `None` when it can.
fn denied(account: &Account, path: &Path, want: Want) -> Option<String> {
    let who = &account.name;
    if account.is_current() {
        let flags = match want {
            Want::Read => AccessFlags::R_OK,
            Want::Search => AccessFlags::X_OK,
            Want::ReadWrite => AccessFlags::R_OK | AccessFlags::W_OK,
            Want::WriteSearch => AccessFlags::W_OK | AccessFlags::X_OK,
        };
        return nix::unistd::access(path, flags)
            .err()
            .map(|e| format!("{}: {who} cannot {}: {e}", path.display(), verb(want)));
    }
    // Every directory above must let the account through.
    let absolute = std::fs::canonicalize(path.parent().unwrap_or(Path::new("/")))
        .unwrap_or_else(|_| path.parent().unwrap_or(Path::new("/")).to_path_buf());
    for dir in absolute.ancestors().collect::<Vec<_>>().into_iter().rev() {
        match std::fs::metadata(dir) {
            Ok(meta) if account.may(&meta, Want::Search) => {}
            Ok(_) => {
                return Some(format!(
                    "{}: {who} cannot {}: no search permission on {}",
                    path.display(),
                    verb(want),
                    dir.display()
                ));
            }
            Err(e) => return Some(format!("{}: {e}", dir.display())),
        }
    }
    match std::fs::metadata(path) {
        Ok(meta) if account.may(&meta, want) => None,
        Ok(meta) => Some(format!(
            "{}: {who} cannot {} (owner {}, group {}, mode {:04o})",
            path.display(),
            verb(want),
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777
        )),
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

fn verb(want: Want) -> &'static str {
    match want {
        Want::Read => "read it",
        Want::Search => "enter it",
        Want::ReadWrite => "read and write it",
        Want::WriteSearch => "create files in it",
    }
}

/// The account named `user`, with `group` (or its own group) as its only
/// group: what rpol becomes when started as root (server/privileges.rs).
fn become_account(user: &str, group: Option<&str>) -> Result<Account, String> {
    let account = User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| format!("no user {user:?}"))?;
    let gid = match group {
        Some(g) => group_id(g)?,
        None => account.gid.as_raw(),
    };
    Ok(Account {
        name: format!("user {user:?}"),
        uid: account.uid.as_raw(),
        gids: vec![gid],
    })
}

fn group_id(name: &str) -> Result<u32, String> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| format!("no group {name:?}"))
}

impl Compiler<'_> {
    /// Records every check of this module that `loaded` fails, `user`
    /// being `--user` (over `[server] user`).
    pub(super) fn host(&mut self, loaded: &Loaded, user: Option<&str>) {
        let document = toml::de::DeTable::parse(self.text).ok();
        let span = |key: &str| {
            document
                .as_ref()
                .map_or(0..0, |d| super::errors::key_span(d.get_ref(), key))
        };
        let server = &loaded.server;
        // The accounts named: each is looked up at start.
        for (key, name, is_user) in [
            ("server.user", server.user.as_deref(), true),
            ("server.group", server.group.as_deref(), false),
            ("server.socket_owner", server.socket_owner.as_deref(), true),
            ("server.socket_group", server.socket_group.as_deref(), false),
        ] {
            let Some(name) = name else { continue };
            let missing = if is_user {
                User::from_name(name).ok().flatten().is_none()
            } else {
                Group::from_name(name).ok().flatten().is_none()
            };
            if missing {
                let what = if is_user { "user" } else { "group" };
                self.error(span(key), key, format!("no {what} {name:?} on this host"));
            }
        }
        if let Some(u) = user
            && User::from_name(u).ok().flatten().is_none()
        {
            self.errors.push(super::ConfigError {
                file: self.path.clone(),
                line: 0,
                column: 0,
                key: "--user".into(),
                message: format!("no user {u:?} on this host"),
            });
        }
        // Whom rpol serves as: the account it becomes when started as
        // root, else whoever starts it (here: whoever checks).
        let run_as = match user.or(server.user.as_deref()) {
            Some(name) if Uid::effective().is_root() => {
                match become_account(name, server.group.as_deref()) {
                    Ok(a) => a,
                    // Reported above.
                    Err(_) => return,
                }
            }
            _ => Account::current(),
        };
        if let Some(store) = &server.store
            && let Backend::Embedded { path } = &store.backend
        {
            // redb opens the file for reading and writing, creating it
            // when it is not there.
            let problem = if path.exists() {
                denied(&run_as, path, Want::ReadWrite)
            } else {
                match path.parent() {
                    Some(dir) if dir.is_dir() => denied(&run_as, dir, Want::WriteSearch),
                    Some(dir) => Some(format!("{}: no such directory", dir.display())),
                    None => None,
                }
            };
            if let Some(p) = problem {
                // At store.path, or at [store] when the path is the default.
                self.error(span("store.path"), "store.path", format!("the store: {p}"));
            }
        }
        // Read at start, as the run-as account.
        if let Some(ca) = server.store.as_ref().and_then(|s| s.tls_ca.as_ref())
            && let Some(p) = denied(&run_as, ca, Want::Read)
        {
            self.error(span("store.tls_ca"), "store.tls_ca", p);
        }
        // Each unix socket is created as socket_owner/socket_group when
        // set (setfsuid), else as the account that starts rpol: checked
        // for this one.
        let creator = match server.socket_owner.as_deref() {
            Some(owner) if Uid::effective().is_root() => {
                // setfsuid keeps the process's supplementary groups.
                become_account(owner, server.socket_group.as_deref())
                    .ok()
                    .map(|mut a| {
                        a.gids.extend(Account::current().gids);
                        a
                    })
            }
            _ => Some(Account::current()),
        };
        let sockets = server.listen.iter().filter_map(|addr| match addr {
            ListenAddr::Unix(path) => Some(path),
            ListenAddr::Tcp(_) => None,
        });
        let mut problems = Vec::new();
        if let Some(creator) = &creator {
            for path in sockets {
                let dir = path.parent().unwrap_or(Path::new("/"));
                let problem = if dir.is_dir() {
                    denied(creator, dir, Want::WriteSearch)
                } else {
                    Some(format!("{}: no such directory", dir.display()))
                };
                if let Some(p) = problem {
                    problems.push(format!("the socket {}: {p}", path.display()));
                }
            }
        }
        for p in problems {
            self.error(span("server.listen"), "server.listen", p);
        }
        // The config and every file it reads are read again, as the
        // run-as account, on each reload.
        let mut seen: Vec<&PathBuf> = Vec::new();
        for file in &loaded.policy.files {
            if seen.contains(&file) {
                continue;
            }
            seen.push(file);
            if !file.exists() {
                // A file that may come later (Postfix's maps): its own
                // check says so when it matters.
                continue;
            }
            if let Some(p) = denied(&run_as, file, Want::Read) {
                // About a file, not a place in the config: line 0.
                self.errors.push(super::ConfigError {
                    file: self.path.clone(),
                    line: 0,
                    column: 0,
                    key: String::new(),
                    message: format!("reloads would fail: {p}"),
                });
            }
        }
    }
}
