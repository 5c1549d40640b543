//! A throw-away redis-server for tests (shared/TESTING.md): one per test
//! on a free loopback port, no persistence, stopped by its pid on drop.
//!
//! Included with `#[path = "support/redis.rs"] mod redis_server;`.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (just now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts redis-server, or returns `None` with a note when it is not
/// installed and this is not CI (`RPOL_E2E` unset); under CI its absence
/// fails (tests/e2e/setup.sh installs it).
pub fn start() -> Option<RedisServer> {
    start_on(free_port())
}

/// [`start`] on a given port (one rpol was already told about).
pub fn start_on(port: u16) -> Option<RedisServer> {
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) if std::env::var_os("RPOL_E2E").is_none() => {
            eprintln!("SKIPPED: redis-server not runnable ({e}); apt-get install redis-server");
            return None;
        }
        Err(e) => panic!("redis-server is needed under RPOL_E2E=1: {e}"),
    };
    let server = RedisServer {
        child,
        port,
        url: format!("redis://127.0.0.1:{port}/"),
    };
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server did not start on port {port}");
}

/// [`start`], by the name tests/ratelimit.rs uses.
pub fn redis_server() -> Option<RedisServer> {
    start()
}
