//! A throw-away redis-server for tests: started on a free loopback port
//! with no persistence, stopped (by its own pid) when the handle drops.
//! The store's unit tests have the same helper (src/state/store/mod.rs).
//!
//! Included by test files with `#[path = "support/redis.rs"] mod redis;`.
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

/// Starts one, or `None` (with a note) when redis-server is not installed
/// and this is not CI (`RPOL_E2E` unset); under CI its absence fails.
pub fn redis_server() -> Option<RedisServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) if std::env::var_os("RPOL_E2E").is_none() => {
            eprintln!("SKIPPED: redis-server not runnable ({e}); install redis-server");
            return None;
        }
        Err(e) => panic!("redis-server is needed under RPOL_E2E: {e}"),
    };
    let server = RedisServer {
        child,
        port,
        url: format!("redis://127.0.0.1:{port}/"),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server did not start on port {port}");
}
