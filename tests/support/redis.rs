//! A throw-away redis-server for tests (shared/TESTING.md): one per test
//! on a free loopback port, no persistence, stopped by its pid on drop.
//!
//! Included with `use crate::support::redis as redis_server;` (tests/suite.rs builds it once; a binary of its own includes it with `#[path = "support/redis.rs"] mod redis_server;`).
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

/// Starts redis-server. The tests that call this are marked `#[ignore =
/// "needs redis-server"]` and run by `cargo test -- --ignored` (as CI
/// does, after tests/e2e/setup.sh installed it); without redis-server
/// they fail, saying so.
pub fn start() -> RedisServer {
    start_on(free_port())
}

/// [`start`] on a given port (one rpol was already told about).
pub fn start_on(port: u16) -> RedisServer {
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = spawned.unwrap_or_else(|e| {
        panic!("this test needs redis-server ({e}): apt-get install redis-server")
    });
    let server = RedisServer {
        child,
        port,
        url: format!("redis://127.0.0.1:{port}/"),
    };
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server did not start on port {port}");
}

/// [`start`], by the name tests/ratelimit.rs uses.
pub fn redis_server() -> RedisServer {
    start()
}
