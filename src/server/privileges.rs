//! Never serve as root: started as root, rpol binds its sockets and then
//! becomes the configured account (`--user` / `[server] user`, and `group`)
//! for good. Without one it refuses to go on; `--user root` is the explicit
//! way to stay root, and says so in the log.

use std::io;

use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};

/// The account to become once the sockets are bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAs {
    pub user: Option<String>,
    pub group: Option<String>,
}

/// What to do about root once the sockets are bound.
#[derive(Debug)]
pub enum Plan {
    /// Not started as root: nothing to drop.
    NotRoot,
    /// `--user root`: stay root, said in the log.
    StayRoot,
    /// Become this account.
    Become { name: String, uid: Uid, gid: Gid },
}

/// Decides, before anything is bound, whom to become: so that a missing or
/// unknown account stops rpol before it creates a socket.
pub fn plan(run_as: &RunAs) -> io::Result<Plan> {
    if !Uid::effective().is_root() {
        if let Some(user) = &run_as.user {
            tracing::debug!(
                "not started as root: running as uid {}, not switching to {user}",
                Uid::effective()
            );
        }
        return Ok(Plan::NotRoot);
    }
    let Some(user) = run_as.user.as_deref() else {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "started as root: name the account to run as with --user USER or [server] user \
             (--user root to stay root)",
        ));
    };
    let account = User::from_name(user)
        .map_err(io::Error::from)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no user {user:?}")))?;
    let gid = match run_as.group.as_deref() {
        Some(name) => {
            Group::from_name(name)
                .map_err(io::Error::from)?
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("no group {name:?}"))
                })?
                .gid
        }
        None => account.gid,
    };
    if account.uid.is_root() {
        return Ok(Plan::StayRoot);
    }
    Ok(Plan::Become {
        name: user.to_string(),
        uid: account.uid,
        gid,
    })
}

/// Carries out the plan, once every socket is bound.
pub fn apply(plan: Plan) -> io::Result<()> {
    match plan {
        Plan::NotRoot => Ok(()),
        Plan::StayRoot => {
            tracing::warn!(
                "running as root (--user root): a flaw in rpol would be a flaw of the whole system"
            );
            Ok(())
        }
        Plan::Become { name, uid, gid } => {
            become_account(uid, gid)?;
            tracing::info!("running as {name} (uid {uid}, gid {gid})");
            Ok(())
        }
    }
}

/// Groups first (only root may change them), then the user; then make sure
/// root cannot be had back.
fn become_account(uid: Uid, gid: Gid) -> io::Result<()> {
    setgroups(&[gid]).map_err(io::Error::from)?;
    setgid(gid).map_err(io::Error::from)?;
    setuid(uid).map_err(io::Error::from)?;
    if setuid(Uid::from_raw(0)).is_ok() || Uid::effective().is_root() {
        return Err(io::Error::other(
            "root privileges could be regained after dropping them",
        ));
    }
    Ok(())
}
