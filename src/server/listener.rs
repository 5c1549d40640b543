//! Listening sockets: unix (path, mode, owner, group; a stale socket file is
//! replaced), TCP, and sockets handed over by systemd (LISTEN_FDS); and who
//! may use them ([`Listener::admits`]): a TCP peer in `[server] allow`,
//! and a unix-socket peer (SO_PEERCRED) or loopback TCP peer (the owner of
//! its socket) that is root, the socket file's owner, rpol's own account
//! (unless nobody) or in `[server] allow_users`. A request forged by
//! anyone else could lock a login out or pass a triplet.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::sockdiag;
use crate::config::{ListenAddr, ServerSettings};

/// A bound listener.
pub enum Listener {
    Unix {
        listener: UnixListener,
        /// Removed at shutdown when rpol created it (not for systemd sockets).
        path: Option<PathBuf>,
        label: String,
        /// The uid owning the socket file (none for an abstract socket):
        /// the account the admin gave the socket to, e.g. postfix.
        owner: Option<u32>,
    },
    Tcp {
        listener: TcpListener,
        label: String,
    },
}

/// An accepted connection.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// An accepted connection between two runtimes: taken off the reactor
/// that accepted it, to join the one of the shard that serves it.
pub enum StdStream {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl Stream {
    /// Leaves the current runtime's reactor (the socket stays nonblocking).
    pub fn into_std(self) -> io::Result<StdStream> {
        Ok(match self {
            Stream::Unix(s) => StdStream::Unix(s.into_std()?),
            Stream::Tcp(s) => StdStream::Tcp(s.into_std()?),
        })
    }
}

impl StdStream {
    /// Joins the reactor of the runtime this is called on.
    pub fn into_tokio(self) -> io::Result<Stream> {
        Ok(match self {
            StdStream::Unix(s) => Stream::Unix(UnixStream::from_std(s)?),
            StdStream::Tcp(s) => Stream::Tcp(TcpStream::from_std(s)?),
        })
    }
}

impl Listener {
    pub fn label(&self) -> &str {
        match self {
            Listener::Unix { label, .. } | Listener::Tcp { label, .. } => label,
        }
    }

    /// Accepts one connection; returns it with a peer label for logs and
    /// the peer's address (TCP only).
    pub async fn accept(&self) -> io::Result<(Stream, String, Option<IpAddr>)> {
        match self {
            Listener::Unix {
                listener, label, ..
            } => {
                let (s, _) = listener.accept().await?;
                Ok((Stream::Unix(s), label.clone(), None))
            }
            Listener::Tcp { listener, .. } => {
                let (s, peer) = listener.accept().await?;
                let address = peer.ip().to_canonical();
                Ok((Stream::Tcp(s), format!("tcp:{peer}"), Some(address)))
            }
        }
    }

    /// Whether the peer of `stream` may use this listener. A unix peer
    /// (SO_PEERCRED) and a TCP peer on a loopback address (the owner of its
    /// socket, [`sockdiag`]) must be a trusted uid ([`trusted`]); a TCP
    /// peer must also be in `allow`. A peer on another address in `allow`
    /// is served by its address alone: its socket is on another host, and
    /// so is its uid. A peer whose uid cannot be read is refused.
    pub fn admits(
        &self,
        stream: &Stream,
        address: Option<IpAddr>,
        settings: &ServerSettings,
    ) -> Result<(), Refused> {
        match (self, stream) {
            (Listener::Unix { owner, .. }, Stream::Unix(s)) => {
                let cred = s
                    .peer_cred()
                    .map_err(|e| Refused::NoCredentials(e.to_string()))?;
                trusted(cred.uid(), *owner, settings).map_err(|uid| Refused::User {
                    uid,
                    pid: cred.pid(),
                })
            }
            (_, Stream::Tcp(s)) => match address {
                Some(ip) if !settings.allow.iter().any(|n| n.contains(&ip)) => {
                    Err(Refused::Address(ip))
                }
                Some(ip) if !ip.is_loopback() => Ok(()),
                Some(_) => {
                    let uid = s
                        .peer_addr()
                        .and_then(|peer| sockdiag::peer_uid(peer, s.local_addr()?))
                        .map_err(|e| {
                            Refused::NoCredentials(format!("the owner of its socket: {e}"))
                        })?;
                    trusted(uid, None, settings).map_err(|uid| Refused::User { uid, pid: None })
                }
                None => Err(Refused::NoCredentials("no address".into())),
            },
            (Listener::Tcp { .. }, Stream::Unix(_)) => Err(Refused::NoCredentials(
                "a unix peer on a TCP listener".into(),
            )),
        }
    }

    /// Removes a unix socket file rpol created.
    pub fn cleanup(&self) {
        if let Listener::Unix {
            path: Some(path), ..
        } = self
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The kernel's overflow uid (`nobody`): the account of NFS's squashed
/// root and of daemons that have no account of their own, so no one in
/// particular; rpol running as it trusts no one for it.
pub const OVERFLOW_UID: u32 = 65534;

/// Whether a peer's `uid` is served: root, the unix socket file's `owner`,
/// rpol's own account unless that is [`OVERFLOW_UID`], or one of
/// `allow_uids`. Err(uid) otherwise.
fn trusted(uid: u32, owner: Option<u32>, settings: &ServerSettings) -> Result<(), u32> {
    let own = nix::unistd::geteuid().as_raw();
    if uid == 0
        || Some(uid) == owner
        || (uid == own && own != OVERFLOW_UID)
        || settings.allow_uids.contains(&uid)
    {
        Ok(())
    } else {
        Err(uid)
    }
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A TCP peer outside `[server] allow`.
    Address(IpAddr),
    /// A unix-socket or loopback TCP peer of another account.
    User { uid: u32, pid: Option<i32> },
    /// The kernel did not say who the peer is (why).
    NoCredentials(String),
}

impl Refused {
    /// The `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Address(_) => "address",
            Refused::User { .. } | Refused::NoCredentials(_) => "user",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Address(ip) => write!(f, "{ip} is not in [server] allow"),
            Refused::User { uid, pid } => {
                write!(f, "uid {uid}")?;
                if let Some(pid) = pid {
                    write!(f, " (pid {pid})")?;
                }
                f.write_str(
                    " is not root, the socket's owner, rpol's own (unless nobody) or in [server] allow_users",
                )
            }
            Refused::NoCredentials(why) => write!(f, "the peer's uid is unknown: {why}"),
        }
    }
}

/// The uid owning the socket file `path`, when it has one.
fn owner_of(path: Option<&Path>) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path?).ok().map(|m| m.uid())
}

/// Binds one configured address.
pub async fn bind(addr: &ListenAddr, settings: &ServerSettings) -> io::Result<Listener> {
    match addr {
        ListenAddr::Tcp(hostport) => {
            let listener = TcpListener::bind(hostport.as_str()).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on tcp:{hostport}: {e}"))
            })?;
            let label = format!("tcp:{}", listener.local_addr()?);
            Ok(Listener::Tcp { listener, label })
        }
        ListenAddr::Unix(path) => bind_unix(path, settings),
    }
}

fn bind_unix(path: &Path, settings: &ServerSettings) -> io::Result<Listener> {
    remove_stale_socket(path)?;
    let uid = settings
        .socket_owner
        .as_deref()
        .map(lookup_user)
        .transpose()?;
    let gid = settings
        .socket_group
        .as_deref()
        .map(lookup_group)
        .transpose()?;
    let mode = settings.socket_mode;
    let at = path.to_path_buf();
    // File-creation credentials (setfsuid) belong to one thread: bind on a
    // thread of its own, so that nothing else ever runs with them.
    let fd = std::thread::spawn(move || create_socket_file(&at, mode, uid, gid))
        .join()
        .map_err(|_| io::Error::other("the socket thread panicked"))?
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", path.display()),
            )
        })?;
    let listener = std::os::unix::net::UnixListener::from(fd);
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    check_socket_file(path, mode, uid, gid)?;
    Ok(Listener::Unix {
        listener,
        path: Some(path.to_path_buf()),
        label: format!("unix:{}", path.display()),
        // Who bind made the owner (checked above), not a lookup through
        // the path, which another file may have taken since.
        owner: uid
            .map(Uid::as_raw)
            .or_else(|| Some(nix::unistd::geteuid().as_raw()).filter(|u| *u != OVERFLOW_UID)),
    })
}

/// Creates the listening socket at `path` with its mode and owner set as
/// the file comes into being, never through the path afterwards (a
/// symlink swapped in between could redirect a chmod or chown): Linux
/// gives the file bind(2) creates the mode of the socket itself (fchmod
/// before bind) less the umask, and the thread's file-system uid and gid.
fn create_socket_file(
    path: &Path,
    mode: u32,
    uid: Option<Uid>,
    gid: Option<Gid>,
) -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    use nix::sys::stat::{Mode, fchmod, umask};
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    fchmod(&fd, Mode::from_bits_truncate(mode))?;
    let address = UnixAddr::new(path)?;
    // The umask is the process's: cleared only for the bind, at start-up,
    // when no other thread creates files.
    let old_umask = umask(Mode::empty());
    if let Some(gid) = gid {
        nix::unistd::setfsgid(gid);
    }
    if let Some(uid) = uid {
        nix::unistd::setfsuid(uid);
    }
    let bound = nix::sys::socket::bind(fd.as_raw_fd(), &address);
    nix::unistd::setfsuid(nix::unistd::geteuid());
    nix::unistd::setfsgid(nix::unistd::getegid());
    umask(old_umask);
    bound?;
    nix::sys::socket::listen(&fd, Backlog::MAXCONN)?;
    Ok(fd)
}

/// Checks what bind made of the socket file: without root, setfsuid cannot
/// give it another owner, and that must not pass in silence.
fn check_socket_file(path: &Path, mode: u32, uid: Option<Uid>, gid: Option<Gid>) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    let wrong = |what: &str| {
        let _ = std::fs::remove_file(path);
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot give {} {what} (rpol must start as root for that)",
                path.display()
            ),
        ))
    };
    if uid.is_some_and(|u| u.as_raw() != meta.uid()) {
        return wrong("the configured socket_owner");
    }
    if gid.is_some_and(|g| g.as_raw() != meta.gid()) {
        return wrong("the configured socket_group");
    }
    if meta.mode() & 0o7777 != mode {
        return wrong(&format!("mode {mode:04o}"));
    }
    Ok(())
}

/// A socket file left by a crashed rpol is removed; one a live server still
/// answers on is not (two daemons on one socket would be a silent mess),
/// and neither is anything that is not a socket.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", path.display()),
        ));
    }
    tracing::info!("removing stale socket {}", path.display());
    std::fs::remove_file(path)
}

fn lookup_user(name: &str) -> io::Result<Uid> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("socket_owner: no user {name:?}"),
        )),
    }
}

fn lookup_group(name: &str) -> io::Result<Gid> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("socket_group: no group {name:?}"),
        )),
    }
}

/// First file descriptor systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// File descriptors passed by systemd socket activation, with their names:
/// each owned here once, and handed on by [`SystemdFds::listeners`].
#[derive(Debug, Default)]
pub struct SystemdFds(Vec<(OwnedFd, String)>);

impl SystemdFds {
    /// Reads LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES, removes them so that
    /// children do not inherit them, and takes the descriptors they name.
    ///
    /// # Safety
    ///
    /// Call at most once, before any other thread exists (before the tokio
    /// runtime starts): it changes the environment, which another thread
    /// could be reading, and it takes ownership of the descriptors from
    /// `LISTEN_FDS_START` on, which nothing else in the process may use or
    /// close.
    pub unsafe fn take_from_env() -> SystemdFds {
        let pid_matches = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            == Some(std::process::id());
        let count = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.trim().parse::<RawFd>().ok())
            .unwrap_or(0);
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|n| n.split(':').map(String::from).collect())
            .unwrap_or_default();
        // SAFETY: no other thread exists yet (this function's contract);
        // remove_var is unsafe only because of them.
        unsafe {
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_FDNAMES");
        }
        if !pid_matches || count <= 0 {
            return SystemdFds::default();
        }
        SystemdFds(
            (0..count)
                .map(|i| {
                    let fd = LISTEN_FDS_START + i;
                    let name = names
                        .get(i as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("fd{fd}"));
                    // SAFETY: systemd passed this descriptor to this
                    // process, and nothing else takes it (this function's
                    // contract: called once, before other code runs).
                    (unsafe { OwnedFd::from_raw_fd(fd) }, name)
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Turns the descriptors into listeners (inside the runtime).
    pub fn listeners(self) -> io::Result<Vec<Listener>> {
        self.0
            .into_iter()
            .map(|(fd, name)| adopt_fd(fd, &name))
            .collect()
    }
}

fn adopt_fd(fd: OwnedFd, name: &str) -> io::Result<Listener> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    let raw = fd.as_raw_fd();
    let address = getsockname::<SockaddrStorage>(raw).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("systemd fd {raw} ({name}) is not a socket: {e}"),
        )
    })?;
    match address.family() {
        Some(AddressFamily::Unix) => {
            let std_listener = std::os::unix::net::UnixListener::from(fd);
            std_listener.set_nonblocking(true)?;
            // The file systemd made (SocketUser=): its owner is the client.
            let owner = owner_of(std_listener.local_addr()?.as_pathname());
            Ok(Listener::Unix {
                listener: UnixListener::from_std(std_listener)?,
                path: None,
                label: format!("systemd:{name}"),
                owner,
            })
        }
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            let std_listener = std::net::TcpListener::from(fd);
            std_listener.set_nonblocking(true)?;
            let label = format!("systemd:{name}:{}", std_listener.local_addr()?);
            Ok(Listener::Tcp {
                listener: TcpListener::from_std(std_listener)?,
                label,
            })
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("systemd fd {raw} ({name}) has unsupported address family {other:?}"),
        )),
    }
}
