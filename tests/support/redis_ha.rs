//! Redis as several MX hosts run it, for tests (shared/TESTING.md): a
//! master, a replica and a Sentinel on loopback ports, or a redis-server
//! on a TLS port with a test CA made here (rcgen). Each process is stopped
//! by its pid on drop, its files in a temporary directory.
//!
//! Included with `use crate::support::redis_ha;` (tests/suite.rs builds it once; a binary of its own includes it with `#[path = "support/redis_ha.rs"] mod redis_ha;`); beside
//! support/redis.rs (one plain server), whose callers it leaves alone.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One redis-server (or sentinel) process.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    /// Its working directory (a replica writes the master's RDB there).
    dir: tempfile::TempDir,
}

impl Node {
    /// Stops the process now (kill -9: a crash, as far as Sentinel sees).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain connection to this node.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `redis-server` with `args`; waits for `port` to listen.
pub fn spawn(port: u16, args: &[String]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("redis-server")
        .args(args)
        .args(["--dir", &dir.path().display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("this test needs redis-server ({e}): apt-get install redis-server")
        });
    let node = Node {
        child: Some(child),
        port,
        dir,
    };
    wait_until(Duration::from_secs(10), "redis-server listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    node
}

/// Polls `ok` every 50 ms until it holds; panics naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn plain_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(String::from)
    .to_vec()
}

/// The master's name in the tests' Sentinel.
pub const MASTER: &str = "mx";

/// A master, one replica of it and one Sentinel watching them.
pub struct Sentinel {
    pub master: Node,
    pub replica: Node,
    pub sentinel: Node,
    pub dir: tempfile::TempDir,
}

fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(con)
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// A redis-server on a free port, no persistence, with `extra` arguments.
pub fn plain(extra: &[&str]) -> Node {
    let port = free_port();
    let mut args = plain_args(port);
    args.extend(extra.iter().map(|a| a.to_string()));
    spawn(port, &args)
}

impl Sentinel {
    /// Starts the three; returns once Sentinel knows the replica and
    /// could fail over to it.
    pub fn start() -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let master = plain(&[]);
        let m = master.port.to_string();
        let replica = plain(&["--replicaof", "127.0.0.1", &m]);
        let mut rc = replica.connection();
        wait_until(Duration::from_secs(10), "replica in sync", || {
            info_field(&mut rc, "replication", "master_link_status") == "up"
        });
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {m} 1\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 10000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let sentinel = spawn(
            port,
            &[conf.display().to_string(), "--sentinel".to_string()],
        );
        let mut sc = sentinel.connection();
        wait_until(Duration::from_secs(20), "Sentinel sees the replica", || {
            let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(MASTER)
                .query(&mut sc)
                .unwrap_or_default();
            replicas.iter().any(|r| {
                r.get("flags").map(String::as_str) == Some("slave")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
                    && r.get("port") == Some(&replica.port.to_string())
            })
        });
        Sentinel {
            master,
            replica,
            sentinel,
            dir,
        }
    }

    /// `redis+sentinel://` naming this Sentinel and master.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{MASTER}", self.sentinel.port)
    }

    /// The port Sentinel names as the master's now.
    pub fn master_port(&self) -> u16 {
        let mut sc = self.sentinel.connection();
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER)
            .query(&mut sc)
            .unwrap();
        port
    }

    /// Waits until every write made on the master so far is on the replica.
    pub fn wait_replicated(&self) {
        let mut mc = self.master.connection();
        let _: () = redis::cmd("SET")
            .arg("sync")
            .arg("1")
            .query(&mut mc)
            .unwrap();
        let acked: u64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut mc).unwrap();
        assert_eq!(acked, 1, "the replica acknowledged the writes");
    }

    /// `SENTINEL FAILOVER`: the replica becomes the master (and the old
    /// master its replica); returns once Sentinel names the new one.
    pub fn failover(&self) {
        let mut sc = self.sentinel.connection();
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query(&mut sc)
            .unwrap();
        let want = self.replica.port;
        wait_until(
            Duration::from_secs(30),
            "Sentinel names the replica",
            || self.master_port() == want,
        );
    }
}

/// A test CA and a server certificate for 127.0.0.1 it signed, as PEM.
pub struct TestCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("rpol test CA {name}"));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &issuer).unwrap();
        TestCa {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes ca.pem, cert.pem and key.pem into `dir`; returns ca.pem's path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::write(dir.join("cert.pem"), &self.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &self.key_pem).unwrap();
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).unwrap();
        dir.join("ca.pem")
    }
}

/// A redis-server serving TLS only (its plain port off), with `ca`'s
/// certificate; clients need no certificate of their own.
pub struct TlsServer {
    pub node: Node,
    pub dir: tempfile::TempDir,
    /// ca.pem: the CA that signed the server's certificate.
    pub ca: PathBuf,
}

impl TlsServer {
    pub fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("server").write(dir.path());
        let port = free_port();
        let d = dir.path().display();
        let mut args = plain_args(0);
        args.extend(
            [
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &format!("{d}/cert.pem"),
                "--tls-key-file",
                &format!("{d}/key.pem"),
                "--tls-ca-cert-file",
                &format!("{d}/ca.pem"),
                "--tls-auth-clients",
                "no",
            ]
            .map(String::from),
        );
        let node = spawn(port, &args);
        TlsServer { node, dir, ca }
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.node.port)
    }
}
