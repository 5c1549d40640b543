//! The load generator: C persistent connections, each sending Postfix
//! 3.7's RCPT request and waiting for the whole answer before the next
//! (lock-step, as Postfix's smtpd does), with the client address, sender,
//! recipient and `instance` varied on every request. Either a thread per
//! connection blocked in `read` for each answer, as Postfix's smtpd
//! processes are ([`drive_threads`]), or all connections as tasks on the
//! bench's tokio runtime ([`drive`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Connections being set up at once (a listen backlog is finite).
const CONNECTING_AT_ONCE: usize = 256;
/// How long connecting all C connections may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the requests in flight at the end of a run may take to finish
/// before their connections are counted as errors and dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of one answer at most (a PREPEND header is some 250).
const ANSWER_CAPACITY: usize = 2048;

/// Where a server listens.
#[derive(Clone, Debug)]
pub enum Target {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl Target {
    /// A unix socket in `dir`, or a free port on 127.0.0.1.
    pub fn new(dir: &Path, name: &str, tcp: bool) -> Target {
        if tcp {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            Target::Tcp(l.local_addr().unwrap())
        } else {
            Target::Unix(dir.join(format!("{name}.sock")))
        }
    }

    pub fn remove(&self) {
        if let Target::Unix(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
            Target::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

pub enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Conn {
    async fn connect(target: &Target) -> io::Result<Conn> {
        Ok(match target {
            Target::Unix(p) => Conn::Unix(tokio::net::UnixStream::connect(p).await?),
            Target::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
        })
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.write_all(bytes).await,
            Conn::Tcp(s) => s.write_all(bytes).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read_buf(buf).await,
            Conn::Tcp(s) => s.read_buf(buf).await,
        }
    }

    /// Sends `request` and reads one whole answer (up to the empty line)
    /// into `answer`.
    async fn ask(&mut self, request: &[u8], answer: &mut Vec<u8>) -> io::Result<()> {
        self.write_all(request).await?;
        answer.clear();
        loop {
            if self.read_buf(answer).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            if answer.ends_with(b"\n\n") {
                return Ok(());
            }
        }
    }
}

/// A blocking connection, for [`drive_threads`].
enum SyncConn {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl SyncConn {
    /// Connects, retrying while the listener is not there yet or its
    /// backlog is full, until `deadline`. Reads give up after
    /// [`DRAIN_TIMEOUT`], so a server that stops answering cannot keep a
    /// thread forever.
    fn connect(target: &Target, deadline: Instant) -> Result<SyncConn, String> {
        loop {
            let conn = match target {
                Target::Unix(p) => std::os::unix::net::UnixStream::connect(p).map(SyncConn::Unix),
                Target::Tcp(a) => std::net::TcpStream::connect(a)
                    .and_then(|s| s.set_nodelay(true).map(|()| s))
                    .map(SyncConn::Tcp),
            };
            match conn {
                Ok(c) => {
                    let timeout = Some(DRAIN_TIMEOUT);
                    match &c {
                        SyncConn::Unix(s) => s.set_read_timeout(timeout),
                        SyncConn::Tcp(s) => s.set_read_timeout(timeout),
                    }
                    .map_err(|e| e.to_string())?;
                    return Ok(c);
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("connect {target}: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// As [`Conn::ask`], blocking.
    fn ask(&mut self, request: &[u8], answer: &mut Vec<u8>) -> io::Result<()> {
        let stream: &mut dyn ReadWrite = match self {
            SyncConn::Unix(s) => s,
            SyncConn::Tcp(s) => s,
        };
        stream.write_all(request)?;
        answer.clear();
        let mut chunk = [0u8; ANSWER_CAPACITY];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            answer.extend_from_slice(&chunk[..n]);
            if answer.ends_with(b"\n\n") {
                return Ok(());
            }
        }
    }
}

trait ReadWrite: io::Read + io::Write {}
impl<T: io::Read + io::Write> ReadWrite for T {}

/// Connects, retrying while the listener is not there yet or its backlog
/// is full, until `deadline`.
pub async fn connect_retry(target: &Target, deadline: Instant) -> Result<Conn, String> {
    loop {
        match Conn::connect(target).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(format!("connect {target}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// One request of the mix, answered; the answer's action.
pub async fn probe(conn: &mut Conn) -> Result<String, String> {
    let mut request = Vec::new();
    Mix::Standard.request(&mut request, u32::MAX, 0, 0);
    let mut answer = Vec::new();
    conn.ask(&request, &mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(action(&answer).to_string())
}

// ------------------------------------------------------------ the requests

/// Our recipients: mailboxes and aliases of tables/vmail_*.
const RECIPIENTS: &[&str] = &[
    "alice@example.com",
    "bob@example.com",
    "postmaster@example.com",
    "abuse@example.com",
    "family@example.com",
    "news@example.net",
];

/// Sender domains of tests/zones/: SPF pass for 203.0.113.0/24 and
/// 2001:db8::/32 (good.example), no SPF record (mx-only, multi-mx), and
/// include + mx + a + ip4 (chain.spftest: pass for our IPv4 clients
/// through the include, fail for the IPv6 ones after all its lookups).
const SENDER_DOMAINS: &[&str] = &[
    "good.example",
    "mx-only.example",
    "multi-mx.example",
    "chain.spftest",
];

/// Sender domains of the spam mix: no SPF record (mx-only, multi-mx),
/// so that no IPv4 client of it fails SPF before greylisting; its IPv6
/// clients (2001:db8::/32) also send from good.example (SPF pass).
const SPAM_DOMAINS: &[&str] = &["mx-only.example", "multi-mx.example", "good.example"];

/// The zone of the cold mix's never-seen domains: a wildcard that answers
/// every name under it (A, MX, an SPF record of one ip4 mechanism).
pub const BULK_ZONE: &str = "bulk.test";

/// The request mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// The main section's: known IPv4 clients, new IPv6 ones.
    Standard,
    /// Clients from a bounded set (254 IPv4, 256 IPv6 addresses), so that
    /// everything about them is cached after the first round: the warm
    /// blocklist runs.
    Known,
    /// A spam run: a never-seen client every request (IPv4 in 10.0.0.0/8,
    /// IPv6 in 2001:db8::/32, spread over /24s and /48s), a new sender
    /// each time, so that nearly every greylisting triplet is new; sender
    /// domains from [`SPAM_DOMAINS`] (cached).
    Spam,
    /// The cold path: never-seen clients and never-seen domains (sender
    /// domain and HELO name under [`BULK_ZONE`]), so that every lookup of
    /// a request goes to the DNS server.
    Cold,
}

/// A well-spread 64-bit hash (splitmix64's finaliser).
fn spread(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Mix {
    /// Request `i` of connection `conn` in run `run`, as Postfix 3.7 sends
    /// it at RCPT (29 attributes, in Postfix's order). The standard mix:
    /// - every other request comes from one of 254 IPv4 clients
    ///   (203.0.113.1-254, reverse name known to Postfix), so that the SPF
    ///   result cache answers after the first round; the others from an IPv6
    ///   client never seen before (2001:db8:RUN:CONN:..., reverse name
    ///   known, not verified): a full SPF evaluation each, from the DNS
    ///   cache when it is warm;
    /// - the sender: one of 10,000 local parts at one of [`SENDER_DOMAINS`];
    /// - the recipient: one of [`RECIPIENTS`]; HELO mail.good.example;
    /// - a new `instance` (Postfix's pid.sec.usec.seq form) every time; half
    ///   the sessions with TLS.
    ///
    /// The other mixes change the client, sender and HELO as their
    /// variants say.
    pub fn request(self, out: &mut Vec<u8>, run: u32, conn: u32, i: u64) {
        let j = i / 2;
        let c = u64::from(conn);
        let v6 = (i + c) % 2 == 1;
        let h = spread((u64::from(run) << 44) ^ (c << 28) ^ i);
        // Borrowed in the standard mix: its client's cost stays as it was.
        let mut domain: Cow<str> =
            Cow::Borrowed(SENDER_DOMAINS[((j + c) % SENDER_DOMAINS.len() as u64) as usize]);
        let mut local = (j * 31 + c * 7) % 10_000;
        let mut helo = Cow::Borrowed("mail.good.example");
        let rcpt = RECIPIENTS[((i / 3 + c) % RECIPIENTS.len() as u64) as usize];
        out.clear();
        out.extend_from_slice(
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n",
        );
        match self {
            Mix::Standard | Mix::Known if v6 => {
                let (net, host) = if self == Mix::Known {
                    (1, (j + c * 5) % 256)
                } else {
                    (run, i)
                };
                let _ = write!(
                    out,
                    "client_address=2001:db8:{:x}:{:x}:{:x}:{:x}::1\nclient_name=unknown\n\
                     client_port={}\nreverse_client_name=mx-{:x}-{:x}.v6.example\n",
                    net & 0xffff,
                    if self == Mix::Known { 0 } else { conn & 0xffff },
                    (host >> 16) & 0xffff,
                    host & 0xffff,
                    1024 + i % 60_000,
                    conn,
                    host,
                );
            }
            Mix::Standard | Mix::Known => {
                let host = 1 + (j * 7 + c * 13) % 254;
                let _ = write!(
                    out,
                    "client_address=203.0.113.{host}\nclient_name=mx{host}.relay.example\n\
                     client_port={}\nreverse_client_name=mx{host}.relay.example\n",
                    1024 + i % 60_000,
                );
            }
            Mix::Spam | Mix::Cold => {
                if v6 {
                    let _ = write!(
                        out,
                        "client_address=2001:db8:{:x}:{:x}::{:x}\nclient_name=unknown\n",
                        (h >> 48) & 0xffff,
                        (h >> 32) & 0xffff,
                        (h & 0xffff) | 1,
                    );
                } else {
                    let _ = write!(
                        out,
                        "client_address=10.{}.{}.{}\nclient_name=unknown\n",
                        (h >> 40) & 255,
                        (h >> 32) & 255,
                        1 + (h & 0xffff) % 254,
                    );
                }
                let _ = write!(
                    out,
                    "client_port={}\nreverse_client_name=mx-{h:x}.spam.example\n",
                    1024 + i % 60_000,
                );
                local = h % 1_000_000;
                if self == Mix::Spam {
                    // IPv4 clients never get good.example: its SPF fails
                    // for them, and a reject ends the chain before
                    // greylisting.
                    let n = if v6 { 3 } else { 2 };
                    domain = Cow::Borrowed(SPAM_DOMAINS[((h >> 20) % n) as usize]);
                } else {
                    domain = Cow::Owned(format!("d{:x}.{BULK_ZONE}", h >> 16));
                    helo = Cow::Owned(format!("mail.h{:x}.{BULK_ZONE}", h >> 24));
                }
            }
        }
        let tls = (i / 4).is_multiple_of(2);
        let _ = write!(
            out,
            "server_address=198.51.100.1\nserver_port=25\nhelo_name={helo}\n\
             sender=u{local}@{domain}\nrecipient={rcpt}\nrecipient_count=0\nqueue_id=\n\
             instance={:x}.{:x}.{:x}.{:x}\nsize={}\netrn_domain=\nstress=\nsasl_method=\n\
             sasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n\
             ccert_pubkey_fingerprint=\nencryption_protocol={}\nencryption_cipher={}\n\
             encryption_keysize={}\npolicy_context=\n\n",
            10_000 + conn,
            run,
            i,
            i % 7,
            1000 + (i * 37) % 100_000,
            if tls { "TLSv1.3" } else { "" },
            if tls { "TLS_AES_256_GCM_SHA384" } else { "" },
            if tls { 256 } else { 0 },
        );
    }
}

/// The value of the answer's `action=` line.
fn action(answer: &[u8]) -> &str {
    let text = std::str::from_utf8(answer).unwrap_or("");
    text.lines()
        .find_map(|l| l.strip_prefix("action="))
        .unwrap_or("")
}

/// Kinds of answers counted separately.
pub const KINDS: [&str; 5] = ["DUNNO/OK", "PREPEND", "REJECT", "DEFER", "other"];

fn kind(action: &str) -> usize {
    let word = action.split_whitespace().next().unwrap_or("");
    match word.to_ascii_uppercase().as_str() {
        "DUNNO" | "OK" => 0,
        "PREPEND" => 1,
        "REJECT" => 2,
        w if w.starts_with('5') => 2,
        w if w.starts_with('4') || w.starts_with("DEFER") => 3,
        _ => 4,
    }
}

// --------------------------------------------------------------- one run

/// Unique per run, so that no two runs send the same IPv6 client.
static RUN: AtomicU32 = AtomicU32::new(1);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What the clients saw in the measured window.
#[derive(Default)]
pub struct Seen {
    /// Latency of every request answered in the window, in ns, sorted.
    pub latencies: Vec<u64>,
    pub window: Duration,
    /// Connections that failed (connect, I/O, or no answer at the end).
    pub errors: u64,
    pub first_error: Option<String>,
    pub answers: [u64; KINDS.len()],
    /// The first answer of each kind.
    pub samples: BTreeMap<usize, String>,
}

struct PerConn {
    latencies: Vec<u64>,
    answers: [u64; KINDS.len()],
    samples: BTreeMap<usize, String>,
    error: Option<String>,
}

impl PerConn {
    fn new() -> PerConn {
        PerConn {
            latencies: Vec::new(),
            answers: [0; KINDS.len()],
            samples: BTreeMap::new(),
            error: None,
        }
    }

    /// Counts one answer that took `dt`, if the window is open.
    fn answered(&mut self, phase: &AtomicU8, dt: Duration, answer: &[u8]) {
        if phase.load(Ordering::Relaxed) == MEASURE {
            self.latencies.push(dt.as_nanos() as u64);
            let a = action(answer);
            let k = kind(a);
            self.answers[k] += 1;
            self.samples.entry(k).or_insert_with(|| a.to_string());
        }
    }
}

impl Seen {
    fn add(&mut self, me: PerConn) {
        self.latencies.extend(me.latencies);
        for (k, n) in me.answers.iter().enumerate() {
            self.answers[k] += n;
        }
        for (k, s) in me.samples {
            self.samples.entry(k).or_insert(s);
        }
        if let Some(e) = me.error {
            self.error(e);
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// What a run's connections share: its number, its phase, how many have
/// connected, and their connect deadline.
struct Run {
    id: u32,
    phase: Arc<AtomicU8>,
    connected: Arc<AtomicUsize>,
    deadline: Instant,
}

impl Run {
    fn new() -> Run {
        Run {
            id: RUN.fetch_add(1, Ordering::Relaxed),
            phase: Arc::new(AtomicU8::new(WARMUP)),
            connected: Arc::new(AtomicUsize::new(0)),
            deadline: Instant::now() + CONNECT_TIMEOUT,
        }
    }

    /// Waits (blocking this thread, which is no runtime worker) until all
    /// `c` connections are up, lets `warmup` pass unmeasured, then opens
    /// the window for `measure`, calling `at_edge` at both of its edges;
    /// returns its length.
    fn window(
        &self,
        c: usize,
        warmup: Duration,
        measure: Duration,
        mut at_edge: impl FnMut(),
    ) -> Duration {
        while self.connected.load(Ordering::SeqCst) < c {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(warmup);
        at_edge();
        let start = Instant::now();
        self.phase.store(MEASURE, Ordering::SeqCst);
        std::thread::sleep(measure);
        self.phase.store(STOP, Ordering::SeqCst);
        let window = start.elapsed();
        at_edge();
        window
    }
}

/// [`drive`] with a thread per connection (stacks of 64 KiB), each blocked
/// in `read` until its answer comes, as a Postfix smtpd process waits for
/// the policy answer: every answer wakes a sleeping client, as in
/// production, for the floor as for rpol.
pub fn drive_threads(
    target: &Target,
    mix: Mix,
    c: usize,
    warmup: Duration,
    measure: Duration,
    at_edge: impl FnMut(),
) -> Seen {
    let run = Run::new();
    let (done, results) = std::sync::mpsc::channel();
    for conn in 0..c {
        let target = target.clone();
        let (id, deadline) = (run.id, run.deadline);
        let (phase, started, finished) = (run.phase.clone(), run.connected.clone(), done.clone());
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut me = PerConn::new();
                let stream = SyncConn::connect(&target, deadline);
                started.fetch_add(1, Ordering::SeqCst);
                match stream {
                    Ok(mut stream) => {
                        let mut request = Vec::with_capacity(1024);
                        let mut answer = Vec::with_capacity(ANSWER_CAPACITY);
                        for i in 0.. {
                            if phase.load(Ordering::Relaxed) == STOP {
                                break;
                            }
                            mix.request(&mut request, id, conn as u32, i);
                            let t = Instant::now();
                            if let Err(e) = stream.ask(&request, &mut answer) {
                                me.error = Some(e.to_string());
                                break;
                            }
                            me.answered(&phase, t.elapsed(), &answer);
                        }
                    }
                    Err(e) => me.error = Some(e),
                }
                let _ = finished.send(me);
            });
        if let Err(e) = spawned {
            run.connected.fetch_add(1, Ordering::SeqCst);
            let mut me = PerConn::new();
            me.error = Some(format!("thread: {e}"));
            let _ = done.send(me);
        }
    }
    drop(done);
    let mut seen = Seen {
        window: run.window(c, warmup, measure, at_edge),
        ..Seen::default()
    };
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    let mut reported = 0;
    while reported < c {
        let left = drain_until.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(me) => {
                reported += 1;
                seen.add(me);
            }
            Err(_) => break,
        }
    }
    for _ in reported..c {
        seen.error(format!("no answer {DRAIN_TIMEOUT:?} after the end"));
    }
    seen.latencies.sort_unstable();
    seen
}

/// Drives `c` connections to `target` as tasks on `rt`: connect all,
/// `warmup` unmeasured, then `measure` in which answers are counted.
/// `at_edge` is called at the start and at the end of the measured window
/// (to read CPU times there).
pub fn drive(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    mix: Mix,
    c: usize,
    warmup: Duration,
    measure: Duration,
    at_edge: impl FnMut(),
) -> Seen {
    let run = Run::new();
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let tasks: Vec<_> = (0..c)
        .map(|conn| {
            let target = target.clone();
            let (id, deadline) = (run.id, run.deadline);
            let (phase, connected, gate) = (run.phase.clone(), run.connected.clone(), gate.clone());
            rt.spawn(async move {
                let mut me = PerConn::new();
                let permit = gate.acquire_owned().await.unwrap();
                let stream = connect_retry(&target, deadline).await;
                drop(permit);
                connected.fetch_add(1, Ordering::SeqCst);
                let mut stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        me.error = Some(e);
                        return me;
                    }
                };
                let mut request = Vec::with_capacity(1024);
                let mut answer = Vec::with_capacity(ANSWER_CAPACITY);
                for i in 0.. {
                    if phase.load(Ordering::Relaxed) == STOP {
                        break;
                    }
                    mix.request(&mut request, id, conn as u32, i);
                    let t = Instant::now();
                    if let Err(e) = stream.ask(&request, &mut answer).await {
                        me.error = Some(e.to_string());
                        break;
                    }
                    me.answered(&phase, t.elapsed(), &answer);
                }
                me
            })
        })
        .collect();
    let mut seen = Seen {
        window: run.window(c, warmup, measure, at_edge),
        ..Seen::default()
    };
    rt.block_on(async {
        let drain_until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        for task in tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(drain_until, task).await {
                Ok(Ok(me)) => seen.add(me),
                Ok(Err(e)) => seen.error(e.to_string()),
                Err(_) => {
                    abort.abort();
                    seen.error(format!("no answer {DRAIN_TIMEOUT:?} after the end"));
                }
            }
        }
    });
    seen.latencies.sort_unstable();
    seen
}

/// A burst: `c` connections set up first, then each sends `per_conn`
/// requests of `mix` in lock-step, all starting at once. The window is
/// from the start to the last answer; `at_edge` is called at both ends.
pub fn burst(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    mix: Mix,
    c: usize,
    per_conn: u64,
    mut at_edge: impl FnMut(),
) -> Seen {
    let run = Run::new();
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let go = Arc::new(tokio::sync::Notify::new());
    run.phase.store(MEASURE, Ordering::SeqCst);
    let tasks: Vec<_> = (0..c)
        .map(|conn| {
            let target = target.clone();
            let (id, deadline) = (run.id, run.deadline);
            let (phase, connected, gate) = (run.phase.clone(), run.connected.clone(), gate.clone());
            let go = go.clone();
            rt.spawn(async move {
                let mut me = PerConn::new();
                let permit = gate.acquire_owned().await.unwrap();
                let stream = connect_retry(&target, deadline).await;
                drop(permit);
                let notified = go.notified();
                connected.fetch_add(1, Ordering::SeqCst);
                notified.await;
                let mut stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        me.error = Some(e);
                        return me;
                    }
                };
                let mut request = Vec::with_capacity(1024);
                let mut answer = Vec::with_capacity(ANSWER_CAPACITY);
                for i in 0..per_conn {
                    mix.request(&mut request, id, conn as u32, i);
                    let t = Instant::now();
                    if let Err(e) = stream.ask(&request, &mut answer).await {
                        me.error = Some(e.to_string());
                        break;
                    }
                    me.answered(&phase, t.elapsed(), &answer);
                }
                me
            })
        })
        .collect();
    while run.connected.load(Ordering::SeqCst) < c {
        std::thread::sleep(Duration::from_millis(10));
    }
    at_edge();
    let start = Instant::now();
    go.notify_waiters();
    let mut seen = Seen::default();
    rt.block_on(async {
        let drain_until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        for task in tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(drain_until, task).await {
                Ok(Ok(me)) => seen.add(me),
                Ok(Err(e)) => seen.error(e.to_string()),
                Err(_) => {
                    abort.abort();
                    seen.error(format!("no answer {DRAIN_TIMEOUT:?} after the start"));
                }
            }
        }
    });
    seen.window = start.elapsed();
    at_edge();
    seen.latencies.sort_unstable();
    seen
}
