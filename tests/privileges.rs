//! Never serving as root: started as root, rpol binds and then becomes the
//! configured account; without one it refuses; `--user root` stays root
//! with a warning. The socket gets its owner and mode as bind creates it.
//! These tests need root (CI runs as root); as another user they say so
//! and check nothing.

use crate::support::rpol;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;

use rpol::{Setup, ask, require_root, response};

const CONFIG: &str = r#"[dns]
nameservers = ["127.0.0.1:9"]

[profile.default]
recipient = ["reject"]
"#;

/// uid and gid of an account, from the system's database.
fn ids(user: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The `Uid:`/`Gid:`/`Groups:` lines of a process.
fn credentials(pid: libc::pid_t) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:") || l.starts_with("Groups:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// `rpol` on `socket` with `args` instead of the default `--user root`.
fn daemon(setup: Setup, socket: &std::path::Path, args: &[&str]) -> rpol::Rpol {
    let mut cmd = std::process::Command::new(rpol::RPOL);
    cmd.arg("--config")
        .arg(&setup.config)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    let mut rpol = setup.spawn(cmd);
    rpol.socket = socket.to_path_buf();
    rpol
}

#[test]
#[ignore = "needs root"]
fn root_without_an_account_is_refused_before_binding() {
    require_root();
    let setup = Setup::new(CONFIG);
    let socket = setup.path("rpol.sock");
    let mut rpol = daemon(setup, &socket, &[]);
    let status = rpol.wait_exit();
    assert!(!status.success());
    assert!(
        rpol.stderr().contains(
            "rpol: started as root: name the account to run as with --user USER or [server] user \
             (--user root to stay root)"
        ),
        "{}",
        rpol.stderr()
    );
    assert!(!socket.exists(), "a socket was created before refusing");
}

#[test]
#[ignore = "needs root"]
fn root_binds_then_becomes_the_configured_account_for_good() {
    require_root();
    let (uid, gid) = ids("nobody");
    let setup = Setup::new(&format!("[server]\nuser = \"nobody\"\n{CONFIG}"));
    let socket = setup.path("rpol.sock");
    let mut rpol = daemon(setup, &socket, &[]);
    rpol.wait_for_log("running as nobody", 0);
    assert_eq!(
        credentials(rpol.pid()),
        [
            format!("Uid: {uid} {uid} {uid} {uid}"),
            format!("Gid: {gid} {gid} {gid} {gid}"),
            format!("Groups: {gid}"),
        ]
    );
    // Bound as root, serving as nobody.
    assert_eq!(
        ask(&mut rpol.connect(), &[("client_address", "203.0.113.9")]),
        response("554 5.7.1 Access denied")
    );
    // --user beats [server] user.
    let setup = Setup::new(&format!("[server]\nuser = \"root\"\n{CONFIG}"));
    let socket = setup.path("rpol.sock");
    let other = daemon(setup, &socket, &["--user", "nobody"]);
    other.wait_for_log("running as nobody", 0);
    rpol.signal(libc::SIGTERM);
    assert!(rpol.wait_exit().success());
}

#[test]
#[ignore = "needs root"]
fn user_root_stays_root_with_a_warning() {
    require_root();
    let setup = Setup::new(CONFIG);
    let socket = setup.path("rpol.sock");
    let rpol = daemon(setup, &socket, &["--user", "root"]);
    let line = rpol.wait_for_log("running as root", 0);
    assert!(line.contains("WARN"), "{line}");
    assert!(credentials(rpol.pid())[0].starts_with("Uid: 0 0 0 0"));
}

#[test]
#[ignore = "needs root"]
fn an_unknown_account_is_refused() {
    require_root();
    let setup = Setup::new(CONFIG);
    let socket = setup.path("rpol.sock");
    let mut rpol = daemon(setup, &socket, &["--user", "no-such-user-here"]);
    assert!(!rpol.wait_exit().success());
    assert!(
        rpol.stderr()
            .contains("rpol: no user \"no-such-user-here\""),
        "{}",
        rpol.stderr()
    );
}

/// The socket's owner, group and mode are given as bind creates it: the
/// file is never there with root's owner or the umask's mode.
#[test]
#[ignore = "needs root"]
fn the_socket_is_created_with_its_owner_group_and_mode() {
    require_root();
    let (uid, _) = ids("nobody");
    let gid = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let setup = Setup::new(&format!(
        "[server]\nsocket_owner = \"nobody\"\nsocket_group = \"nogroup\"\nsocket_mode = \"0660\"\n{CONFIG}"
    ));
    // As Postfix's private/ is its owner's: a directory the socket's owner
    // may write, inside one it may enter.
    std::fs::set_permissions(setup.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = setup.path("private");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    let socket = dir.join("rpol");
    let rpol = daemon(setup, &socket, &["--user", "root"]);
    rpol.wait_for_log("listening on", 0);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (uid, gid, 0o660)
    );
    assert_eq!(
        ask(&mut rpol.connect(), &[("client_address", "203.0.113.9")]),
        response("554 5.7.1 Access denied")
    );
}
