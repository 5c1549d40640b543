//! The greylisting, blocklist and cold-path sections (issue 27 item 6,
//! issue 28): the seed chain with check_greylist (embedded store and
//! Redis, the store pre-filled), with three DNS blocklists (warm and
//! cold), and a burst of never-seen clients and domains against a DNS
//! server that answers late. Each runs against the protocol floor in
//! alternating pairs, as the main section does; figures are printed
//! beside issue 28's goals, never asserted.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpol::state::store::admin::{Import, Imported};
use rpol::state::store::{Backend, Store, StoreSettings};

use super::Bench;
use super::client::{self, Mix};
use super::procs::{self, Dns, Redis, Server};
use super::report::{Run, Series, dur, median, ratio_cell, thousands};
use super::roles::BLOCKLISTS;

/// The C of the greylisting sections (issue 28, item 2).
pub const GREYLIST_CLIENTS: &[usize] = &[100, 1000];
/// The C of the blocklist section's warm runs.
pub const DNSBL_CLIENTS: &[usize] = &[100, 1000];
/// The C of its cold runs (issue 28, item 3).
pub const DNSBL_COLD_CLIENTS: usize = 100;
/// Triplets per import call while pre-filling the store.
const PREFILL_BATCH: usize = 10_000;
/// Import calls in flight at once against Redis (one round trip per
/// record: several connections' worth keep the server busy).
const REDIS_IMPORTERS: usize = 16;
/// The greylisting settings of the runs: postgrey's defaults, written out
/// so that the pre-filled records are read under the same ones.
const GREYLIST_DELAY_S: u64 = 300;
const MAX_AGE_S: u64 = 35 * 86_400;
const RETRY_WINDOW_S: u64 = 2 * 86_400;

/// Issue 28's goals (printed, never asserted).
pub const GOAL_GREYLIST: f64 = 0.5;
pub const GOAL_GREYLIST_REDIS: f64 = 0.3;
pub const GOAL_RSS_MIB: f64 = 50.0;
/// Warm blocklists: of the plain chain's throughput.
pub const GOAL_DNSBL_WARM: f64 = 0.8;
/// Cold blocklists: DNS round trips a new client costs.
pub const GOAL_DNSBL_COLD_RTTS: f64 = 1.0;
/// The cold path: rpol's p99 in DNS round trips.
pub const GOAL_COLD_RTTS: f64 = 3.0;

/// One burst of the cold section.
pub struct Burst {
    pub chain: String,
    pub run: Run,
}

/// Variants of [`Series`] in the chains sections.
const V_GREYLIST: &str = "greylist, embedded";
const V_GREYLIST_REDIS: &str = "greylist, Redis";
const V_PLAIN_SPAM: &str = "plain, spam mix";
const V_PLAIN_KNOWN: &str = "plain, known clients";
const V_DNSBL_WARM: &str = "3 blocklists, warm";
const V_PLAIN_SLOW: &str = "plain, spam mix, slow DNS";
const V_DNSBL_COLD: &str = "3 blocklists, cold (new clients), slow DNS";

/// Triplet `k` of the pre-filled store: 4,096 client /24s in 172.16/12,
/// one of 1,000 sender domains, 100 recipients; one in ten never passed
/// (last seen within a day), the rest passed an hour after first seen.
fn prefill_triplet(k: usize, now: u64) -> Import {
    let net = format!("172.{}.{}.0", 16 + (k >> 16) % 16, (k >> 8) & 255);
    let sender = format!("s{k}@prefill{}.example", k % 1000);
    let recipient = format!("r{}@example.com", k % 100);
    let last = now - (k as u64 * 7919) % 86_400;
    let first = if k.is_multiple_of(10) {
        last
    } else {
        last.saturating_sub(3600)
    };
    Import::triplet(
        &net,
        &sender,
        &recipient,
        false,
        (first, last),
        GREYLIST_DELAY_S,
    )
}

/// Scripts (EVAL, EVALSHA, FCALL and their read-only forms) a Redis
/// server has run, from INFO commandstats: each is one round trip of
/// rpol's (the commands a script calls are counted apart, so the total
/// command count would overstate the round trips).
pub fn redis_scripts(port: u16) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"INFO commandstats\r\n").is_err() {
        return 0;
    }
    let mut text = Vec::new();
    let mut buf = [0u8; 8192];
    // A bulk string: "$LEN\r\n" then LEN bytes and "\r\n".
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
        let t = String::from_utf8_lossy(&text);
        if let Some((head, body)) = t.split_once("\r\n")
            && let Ok(len) = head.trim_start_matches('$').parse::<usize>()
            && body.len() >= len
        {
            break;
        }
    }
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            if !(name.starts_with("eval") || name.starts_with("fcall")) {
                return None;
            }
            rest.split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn table<'a>(doc: &'a mut toml::Table, path: &[&str]) -> &'a mut toml::Table {
    let mut t = doc;
    for name in path {
        t = t
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
    }
    t
}

fn push_rule(doc: &mut toml::Table, stage: &str, rule: &str) {
    table(doc, &["profile", "smtp"])
        .get_mut(stage)
        .and_then(|v| v.as_array_mut())
        .unwrap_or_else(|| panic!("policy.toml: no [profile.smtp] {stage} list"))
        .push(toml::Value::String(rule.to_string()));
}

/// What a chain adds to the seed chain.
#[derive(Default)]
struct Chain<'a> {
    store: Option<&'a Backend>,
    dnsbl: bool,
    slow_dns: bool,
}

impl Bench {
    /// The shipped chain for `c` connections with what `chain` adds:
    /// check_greylist at the end of the recipient stage (postgrey's
    /// settings) and `[metrics]` on `metrics`; three reject_rbl_client at
    /// the end of the client stage; the slow DNS server.
    fn chain_config(&self, c: usize, chain: Chain, metrics: Option<SocketAddr>) -> String {
        let mut doc = self.rpol_doc(c, None, None);
        if chain.slow_dns {
            let addr = self.slow_dns.as_ref().expect("slow DNS started").addr;
            table(&mut doc, &["dns"]).insert(
                "nameservers".into(),
                toml::Value::Array(vec![toml::Value::String(addr.to_string())]),
            );
        }
        if chain.dnsbl {
            for list in BLOCKLISTS {
                push_rule(&mut doc, "client", &format!("reject_rbl_client {list}"));
            }
        }
        if let Some(backend) = chain.store {
            push_rule(&mut doc, "recipient", "check_greylist");
            let store = table(&mut doc, &["store"]);
            match backend {
                Backend::Embedded { path } => {
                    store.insert("backend".into(), "embedded".into());
                    store.insert("path".into(), path.display().to_string().into());
                }
                Backend::Redis { url } => {
                    store.insert("backend".into(), "redis".into());
                    store.insert("url".into(), url.clone().into());
                }
            }
            let g = table(&mut doc, &["greylist"]);
            g.insert("delay".into(), format!("{GREYLIST_DELAY_S}s").into());
            g.insert("max_age".into(), format!("{MAX_AGE_S}s").into());
            g.insert("retry_window".into(), format!("{RETRY_WINDOW_S}s").into());
        }
        if let Some(addr) = metrics {
            table(&mut doc, &["metrics"]).insert("listen".into(), addr.to_string().into());
        }
        toml::to_string(&doc).unwrap()
    }

    fn start_chain(&self, name: &str, c: usize, chain: Chain) -> Server {
        let slow = chain.slow_dns;
        let metrics = chain
            .store
            .map(|_| SocketAddr::from(([127, 0, 0, 1], procs::free_port())));
        let mut server = self.start_rpol(name, &self.chain_config(c, chain, metrics));
        server.metrics = metrics;
        server.slow_dns = slow;
        server
    }

    fn ensure_slow_dns(&mut self) {
        if self.slow_dns.is_none() {
            let dns = Dns::start(self.opts.dns_delay);
            println!(
                "slow DNS: the same zones on {}, each answer {} late\n",
                dns.addr,
                dur(self.opts.dns_delay.as_nanos() as f64)
            );
            self.slow_dns = Some(dns);
        }
    }

    /// Fills the store with `n` triplets through the crate's own store
    /// API (`Store::import`, as `rpol store import-postgrey` writes);
    /// returns what was written and how long it took.
    fn prefill(&self, backend: &Backend, n: usize) -> (Imported, Duration) {
        let settings = StoreSettings {
            backend: backend.clone(),
            ..StoreSettings::default()
        };
        let workers = match backend {
            Backend::Redis { .. } => REDIS_IMPORTERS,
            Backend::Embedded { .. } => 1,
        };
        let t = Instant::now();
        let done = self.rt.block_on(async {
            let store = Arc::new(Store::open(&settings).expect("open the store"));
            let now = rpol::common::unix_now();
            let batches: Vec<std::ops::Range<usize>> = (0..n)
                .step_by(PREFILL_BATCH)
                .map(|a| a..(a + PREFILL_BATCH).min(n))
                .collect();
            let tasks: Vec<_> = (0..workers)
                .map(|w| {
                    let mine: Vec<_> = batches.iter().skip(w).step_by(workers).cloned().collect();
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut done = Imported::default();
                        for r in mine {
                            let batch = r.map(|k| prefill_triplet(k, now)).collect();
                            let got = store
                                .import(batch, MAX_AGE_S, RETRY_WINDOW_S, now)
                                .await
                                .expect("import into the store");
                            done.add(&got);
                        }
                        done
                    })
                })
                .collect();
            let mut done = Imported::default();
            for t in tasks {
                done.add(&t.await.unwrap());
            }
            done
        });
        (done, t.elapsed())
    }

    /// Issue 28 item 2: the seed chain + check_greylist, a spam run (nearly
    /// every triplet new) against a store of `store_triplets`.
    pub fn greylist_section(&mut self, redis: bool) {
        let name = if redis { "greylist-redis" } else { "greylist" };
        println!(
            "== {name}: seed chain + check_greylist ({} store pre-filled with {} triplets), spam mix, in pairs\n",
            if redis { "Redis" } else { "embedded" },
            thousands(self.opts.store_triplets as f64),
        );
        let redis_server = if redis {
            if Command::new("redis-server")
                .arg("--version")
                .output()
                .is_err()
            {
                println!("no redis-server: section skipped\n");
                self.notes
                    .push(format!("{name}: skipped (no redis-server)"));
                return;
            }
            Some(Redis::start(self.dir.path()))
        } else {
            None
        };
        let store_dir = self.dir.path().join(format!("store-{name}"));
        let backend = match &redis_server {
            Some(r) => Backend::Redis { url: r.url() },
            None => {
                std::fs::create_dir_all(&store_dir).unwrap();
                Backend::Embedded {
                    path: store_dir.join("rpol.redb"),
                }
            }
        };
        let (done, took) = self.prefill(&backend, self.opts.store_triplets);
        let size = match &backend {
            Backend::Embedded { path } => {
                // Started as root, rpol serves as nobody: the store must
                // be its (without root it stays who it is).
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } == 0 {
                    let status = Command::new("chown")
                        .args(["-R", "nobody"])
                        .arg(&store_dir)
                        .status()
                        .unwrap();
                    assert!(status.success(), "chown the store to nobody");
                }
                format!(
                    "file {:.0} MiB",
                    std::fs::metadata(path).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64
                )
            }
            Backend::Redis { .. } => format!(
                "redis-server peak RSS {:.0} MiB",
                redis_server.as_ref().unwrap().peak_rss_mib()
            ),
        };
        let note = format!(
            "{name}: store pre-filled with {} triplets ({} beyond a budget) in {} by the bench \
             itself through the crate's store API (rpol::state::store::Store::import, batches \
             of {}, {} at once); {size}",
            thousands(done.triplets as f64),
            done.no_room,
            dur(took.as_nanos() as f64),
            thousands(PREFILL_BATCH as f64),
            match backend {
                Backend::Redis { .. } => REDIS_IMPORTERS,
                Backend::Embedded { .. } => 1,
            },
        );
        println!("{note}\n");
        self.notes.push(note);
        let threads = self.opts.thread_client;
        let variant = if redis { V_GREYLIST_REDIS } else { V_GREYLIST };
        for &c in GREYLIST_CLIENTS {
            let floor = self.start_floor(&format!("floor-{name}-{c}"));
            let plain =
                (!redis).then(|| self.start_chain(&format!("plain-spam-{c}"), c, Chain::default()));
            let mut gl = self.start_chain(
                &format!("{name}-{c}"),
                c,
                Chain {
                    store: Some(&backend),
                    ..Chain::default()
                },
            );
            gl.redis_port = redis_server.as_ref().map(|r| r.port);
            let mut g = Series {
                c,
                variant: variant.into(),
                pairs: Vec::new(),
            };
            let mut p = Series {
                c,
                variant: V_PLAIN_SPAM.into(),
                pairs: Vec::new(),
            };
            for _ in 0..self.opts.rounds {
                if let Some(plain) = &plain {
                    p.pairs.append(&mut self.pairs_of(
                        Mix::Spam,
                        (&floor, plain),
                        "rpol plain",
                        c,
                        1,
                        threads,
                    ));
                }
                let label = format!("rpol {name}");
                g.pairs
                    .append(&mut self.pairs_of(Mix::Spam, (&floor, &gl), &label, c, 1, threads));
            }
            let note = greylist_note(&g, redis_server.as_ref());
            println!("{note}\n");
            self.notes.push(note);
            gl.terminate();
            if plain.is_some() {
                self.chains.push(p);
            }
            self.chains.push(g);
        }
    }

    /// Issue 27 item 6 and issue 28 item 3: the seed chain + three
    /// blocklists, warm (known clients, against the plain chain with the
    /// same clients) and cold (a new client every request, against a DNS
    /// server answering late: the round trips it costs).
    pub fn dnsbl_section(&mut self) {
        println!(
            "== dnsbl: seed chain + reject_rbl_client {} against the floor, in pairs\n",
            BLOCKLISTS.join(", ")
        );
        self.ensure_slow_dns();
        let threads = self.opts.thread_client;
        for &c in DNSBL_CLIENTS {
            let floor = self.start_floor(&format!("floor-dnsbl-{c}"));
            let plain = self.start_chain(&format!("plain-known-{c}"), c, Chain::default());
            let warm = self.start_chain(
                &format!("dnsbl-warm-{c}"),
                c,
                Chain {
                    dnsbl: true,
                    ..Chain::default()
                },
            );
            let cold = (c == DNSBL_COLD_CLIENTS).then(|| {
                let plain = self.start_chain(
                    &format!("plain-slow-{c}"),
                    c,
                    Chain {
                        slow_dns: true,
                        ..Chain::default()
                    },
                );
                let dnsbl = self.start_chain(
                    &format!("dnsbl-cold-{c}"),
                    c,
                    Chain {
                        dnsbl: true,
                        slow_dns: true,
                        ..Chain::default()
                    },
                );
                (plain, dnsbl)
            });
            let mut series: Vec<Series> = [V_PLAIN_KNOWN, V_DNSBL_WARM, V_PLAIN_SLOW, V_DNSBL_COLD]
                .iter()
                .map(|v| Series {
                    c,
                    variant: v.to_string(),
                    pairs: Vec::new(),
                })
                .collect();
            for _ in 0..self.opts.rounds {
                let mut p =
                    self.pairs_of(Mix::Known, (&floor, &plain), "rpol plain", c, 1, threads);
                series[0].pairs.append(&mut p);
                let mut p = self.pairs_of(
                    Mix::Known,
                    (&floor, &warm),
                    "rpol dnsbl warm",
                    c,
                    1,
                    threads,
                );
                series[1].pairs.append(&mut p);
                if let Some((plain, dnsbl)) = &cold {
                    let mut p =
                        self.pairs_of(Mix::Spam, (&floor, plain), "rpol plain slow", c, 1, threads);
                    series[2].pairs.append(&mut p);
                    let mut p =
                        self.pairs_of(Mix::Spam, (&floor, dnsbl), "rpol dnsbl cold", c, 1, threads);
                    series[3].pairs.append(&mut p);
                }
            }
            println!();
            self.chains
                .extend(series.into_iter().filter(|s| !s.pairs.is_empty()));
        }
    }

    /// Issue 28 item 4: a burst of never-seen clients and domains against
    /// the slow DNS server, for the floor, the plain chain and the chain
    /// with the blocklists, each rpol started afresh (an empty cache).
    pub fn cold_section(&mut self) {
        self.ensure_slow_dns();
        let c = self.opts.burst_clients.max(1);
        let per_conn = (self.opts.burst / c).max(1) as u64;
        println!(
            "== cold: a burst of {} requests from never-seen clients and domains, {c} connections \
             x {per_conn} each, DNS answering {} late\n",
            thousands((c as u64 * per_conn) as f64),
            dur(self.opts.dns_delay.as_nanos() as f64),
        );
        let floor = self.start_floor("floor-cold");
        let run = self.burst_run(&floor, "floor", c, per_conn);
        self.bursts.push(Burst {
            chain: "floor".into(),
            run,
        });
        drop(floor);
        for (chain, dnsbl) in [("plain", false), ("3 blocklists", true)] {
            let rpol = self.start_chain(
                &format!("cold-{}", if dnsbl { "dnsbl" } else { "plain" }),
                c,
                Chain {
                    dnsbl,
                    slow_dns: true,
                    ..Chain::default()
                },
            );
            let run = self.burst_run(&rpol, &format!("rpol {chain}"), c, per_conn);
            self.bursts.push(Burst {
                chain: chain.into(),
                run,
            });
        }
        println!();
    }

    fn burst_run(&mut self, server: &Server, label: &str, c: usize, per_conn: u64) -> Run {
        let me = self.me;
        let dns = self.slow_dns.as_mut().expect("slow DNS started");
        let mut edges = Vec::with_capacity(2);
        let at_edge = || {
            edges.push((
                server.cpu(),
                procs::cpu_time(me),
                dns.cpu(),
                dns.queries(),
                procs::machine_time().0,
            ))
        };
        let seen = client::burst(&self.rt, &server.target, Mix::Cold, c, per_conn, at_edge);
        let (a, b) = (edges[0], edges[1]);
        let server_system = b.0.1.saturating_sub(a.0.1);
        let run = Run {
            server: label.to_string(),
            c,
            seen,
            server_cpu: b.0.0.saturating_sub(a.0.0) + server_system,
            server_system,
            client_cpu: b.1.saturating_sub(a.1),
            dns_cpu: b.2.saturating_sub(a.2),
            dns_queries: b.3 - a.3,
            machine_busy: b.4.saturating_sub(a.4),
            peak_rss_mib: server.peak_rss_mib(),
            store_errors: 0,
            redis_scripts: None,
        };
        println!("{}", run.line());
        println!("    {}", self.burst_figures(&run));
        run
    }

    /// A burst's latencies in DNS round trips (the slow server's delay).
    fn burst_figures(&self, r: &Run) -> String {
        let delay = self.opts.dns_delay.as_nanos() as f64;
        let max = r.seen.latencies.last().copied().unwrap_or(0) as f64;
        format!(
            "in DNS round trips of {}: p50 {:.2}, p99 {:.2}, p999 {:.2}, max {:.2}; \
             p99/p50 {:.2}; {:.2} DNS queries/request",
            dur(delay),
            r.quantile(0.5) / delay,
            r.quantile(0.99) / delay,
            r.quantile(0.999) / delay,
            max / delay,
            r.quantile(0.99) / r.quantile(0.5),
            r.dns_per_request(),
        )
    }

    fn chain(&self, variant: &str, c: usize) -> Option<&Series> {
        self.chains
            .iter()
            .find(|s| s.variant == variant && s.c == c)
    }

    /// Each goal of issue 28 beside its figure, one line each.
    pub fn goals_text(&self) -> String {
        let mut s = String::new();
        for (variant, goal, item) in [
            (V_GREYLIST, GOAL_GREYLIST, "2, embedded store"),
            (V_GREYLIST_REDIS, GOAL_GREYLIST_REDIS, "2, Redis"),
        ] {
            for &c in GREYLIST_CLIENTS {
                let Some(x) = self.chain(variant, c) else {
                    continue;
                };
                let plain = self.chain(V_PLAIN_SPAM, c).map_or(String::new(), |p| {
                    format!("; the plain chain, same mix: {:.2}", median(p.throughput()))
                });
                let _ = writeln!(
                    s,
                    "- Item {item}, C={}: throughput rpol/floor **{:.2}** (goal >= {goal:.1}); p99 \
                     {:.1}x the floor's{plain}; store errors {}, answers not deferred {} of {}{}{}.",
                    thousands(c as f64),
                    median(x.throughput()),
                    median(x.p99()),
                    store_errors(x),
                    not_deferred(x),
                    thousands(rpol_requests(x) as f64),
                    redis_per_request(x).map_or(String::new(), |r| format!(
                        "; Redis round trips (scripts) per request {r:.2} (goal <= 1)"
                    )),
                    if c == 1000 {
                        format!(
                            "; rpol peak RSS {:.1} MiB (goal <= {GOAL_RSS_MIB:.0})",
                            x.rpol_peak_rss()
                        )
                    } else {
                        String::new()
                    },
                );
            }
        }
        for &c in DNSBL_CLIENTS {
            if let (Some(p), Some(w)) = (self.chain(V_PLAIN_KNOWN, c), self.chain(V_DNSBL_WARM, c))
            {
                let _ = writeln!(
                    s,
                    "- Item 3, warm, C={}: throughput with the 3 blocklists **{:.2}** of the plain \
                     chain's (goal >= {GOAL_DNSBL_WARM:.1}); rpol/floor {:.2} against {:.2}.",
                    thousands(c as f64),
                    median(w.throughput()) / median(p.throughput()),
                    median(w.throughput()),
                    median(p.throughput()),
                );
            }
        }
        if let (Some(p), Some(k)) = (
            self.chain(V_PLAIN_SLOW, DNSBL_COLD_CLIENTS),
            self.chain(V_DNSBL_COLD, DNSBL_COLD_CLIENTS),
        ) {
            let delay = self.opts.dns_delay.as_nanos() as f64;
            let extra: Vec<f64> = p
                .pairs
                .iter()
                .zip(&k.pairs)
                .map(|(p, k)| (k.rpol.quantile(0.5) - p.rpol.quantile(0.5)) / delay)
                .collect();
            let _ = writeln!(
                s,
                "- Item 3, cold, C={}: a new client costs **{:.2}** DNS round trips of {} (p50 \
                 with the lists minus without, median of the rounds; goal {GOAL_DNSBL_COLD_RTTS:.0}); \
                 {:.2} DNS queries/request against {:.2} without; throughput rpol/floor {:.2}.",
                DNSBL_COLD_CLIENTS,
                median(extra),
                dur(delay),
                k.rpol_median(Run::dns_per_request),
                p.rpol_median(Run::dns_per_request),
                median(k.throughput()),
            );
        }
        let delay = self.opts.dns_delay.as_nanos() as f64;
        for b in self.bursts.iter().filter(|b| b.chain != "floor") {
            let _ = writeln!(
                s,
                "- Item 4, {}: p99 **{:.2}** DNS round trips of {} (goal <= {GOAL_COLD_RTTS:.0}); \
                 p50 {:.2}, p99/p50 {:.2} (1: no request waits behind another's lookup); {:.2} DNS \
                 queries/request; errors {}.",
                b.chain,
                b.run.quantile(0.99) / delay,
                dur(delay),
                b.run.quantile(0.5) / delay,
                b.run.quantile(0.99) / b.run.quantile(0.5),
                b.run.dns_per_request(),
                b.run.seen.errors,
            );
        }
        s
    }

    /// The chains' paired ratios, as a Markdown table.
    pub fn chains_text(&self) -> String {
        let mut s = String::from(
            "| C | chain | pairs | throughput rpol/floor | p99 rpol/floor | CPU/request rpol/floor \
             | rpol req/s | rpol p50 / p99 | rpol CPU/req | floor req/s | rpol peak RSS \
             | DNS queries/req | store errors | not deferred | errors |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for x in &self.chains {
            let greylist = x.variant.starts_with("greylist");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {:.1} MiB | {:.2} | {} | {} | {} |",
                thousands(x.c as f64),
                x.variant,
                x.pairs.len(),
                ratio_cell(&x.throughput()),
                ratio_cell(&x.p99()),
                ratio_cell(&x.cpu()),
                thousands(x.rpol_median(Run::rps)),
                dur(x.rpol_median(|r| r.quantile(0.5))),
                dur(x.rpol_median(|r| r.quantile(0.99))),
                dur(x.rpol_median(Run::cpu_per_request)),
                thousands(x.floor_median(Run::rps)),
                x.rpol_peak_rss(),
                x.rpol_median(Run::dns_per_request),
                if greylist {
                    store_errors(x).to_string()
                } else {
                    "-".into()
                },
                if greylist {
                    not_deferred(x).to_string()
                } else {
                    "-".into()
                },
                x.errors(),
            );
        }
        s
    }

    /// The cold section's bursts, as a Markdown table.
    pub fn bursts_text(&self) -> String {
        let delay = self.opts.dns_delay.as_nanos() as f64;
        let mut s = format!(
            "| chain | requests | req/s | p50 | p99 | p999 | max | p99 in round trips of {} \
             | p99/p50 | DNS queries/req | rpol CPU/req | peak RSS | errors | answers |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            dur(delay)
        );
        for b in &self.bursts {
            let r = &b.run;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {:.1} MiB | {} | {} |",
                b.chain,
                thousands(r.requests() as f64),
                thousands(r.rps()),
                dur(r.quantile(0.5)),
                dur(r.quantile(0.99)),
                dur(r.quantile(0.999)),
                dur(r.seen.latencies.last().copied().unwrap_or(0) as f64),
                r.quantile(0.99) / delay,
                r.quantile(0.99) / r.quantile(0.5),
                if b.chain == "floor" {
                    "-".into()
                } else {
                    format!("{:.2}", r.dns_per_request())
                },
                dur(r.cpu_per_request()),
                r.peak_rss_mib,
                r.seen.errors,
                r.answer_mix(),
            );
        }
        s
    }

    /// chains.csv: one row per chain and C (for the plot).
    pub fn chains_csv(&self) -> String {
        let mut s = String::from(
            "chain,c,pairs,rpol_rps,floor_rps,throughput_ratio,p99_ratio,rpol_p99_ms,rpol_peak_rss_mib,dns_per_req,store_errors,not_deferred,errors\n",
        );
        for x in &self.chains {
            let _ = writeln!(
                s,
                "{},{},{},{:.0},{:.0},{:.3},{:.3},{:.3},{:.2},{:.3},{},{},{}",
                x.variant.replace(',', ";"),
                x.c,
                x.pairs.len(),
                x.rpol_median(Run::rps),
                x.floor_median(Run::rps),
                median(x.throughput()),
                median(x.p99()),
                x.rpol_median(|r| r.quantile(0.99)) / 1e6,
                x.rpol_peak_rss(),
                x.rpol_median(Run::dns_per_request),
                store_errors(x),
                not_deferred(x),
                x.errors(),
            );
        }
        s
    }

    /// Whether any chains section ran.
    pub fn chains_ran(&self) -> bool {
        !self.chains.is_empty() || !self.bursts.is_empty() || !self.notes.is_empty()
    }

    /// The chains sections of results.md.
    pub fn chains_md(&self) -> String {
        let mut md = String::new();
        if !self.chains_ran() {
            return md;
        }
        let _ = writeln!(
            md,
            "#### Greylisting and blocklist chains (issue 28)\n\n{}\n{}\n",
            self.goals_text(),
            self.notes
                .iter()
                .map(|n| format!("- {n}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        if !self.chains.is_empty() {
            let _ = writeln!(
                md,
                "Paired ratios (median in bold, range of the pairs in brackets); \"not deferred\": \
                 answers to the greylisting runs that were not a defer or a reject (a triplet \
                 new to the store answered otherwise skipped greylisting).\n\n{}",
                self.chains_text()
            );
        }
        if !self.bursts.is_empty() {
            let _ = writeln!(
                md,
                "#### The cold path (issue 28, item 4)\n\n{}",
                self.bursts_text()
            );
        }
        md
    }
}

/// Store errors over the rpol runs of a series (rpol_store_errors).
fn store_errors(x: &Series) -> u64 {
    x.pairs.iter().map(|p| p.rpol.store_errors).sum()
}

/// Answers of the rpol runs that were neither a defer nor a reject.
fn not_deferred(x: &Series) -> u64 {
    x.pairs
        .iter()
        .map(|p| {
            let a = &p.rpol.seen.answers;
            a[0] + a[1] + a[4]
        })
        .sum()
}

fn rpol_requests(x: &Series) -> u64 {
    x.pairs.iter().map(|p| p.rpol.requests()).sum()
}

/// Redis scripts (round trips) per rpol request over a series, when rpol
/// used Redis.
fn redis_per_request(x: &Series) -> Option<f64> {
    let scripts: Option<u64> = x.pairs.iter().map(|p| p.rpol.redis_scripts).sum();
    scripts.map(|n| n as f64 / rpol_requests(x).max(1) as f64)
}

/// The line printed after a greylisting series.
fn greylist_note(g: &Series, redis: Option<&Redis>) -> String {
    format!(
        "C={}: {}: throughput {:.2} of the floor, p99 {:.1}x; store errors {}, answers not \
         deferred {} of {}; rpol peak RSS {:.1} MiB{}{}",
        g.c,
        g.variant,
        median(g.throughput()),
        median(g.p99()),
        store_errors(g),
        not_deferred(g),
        rpol_requests(g),
        g.rpol_peak_rss(),
        redis.map_or(String::new(), |r| format!(
            ", redis-server {:.1} MiB",
            r.peak_rss_mib()
        )),
        redis_per_request(g).map_or(String::new(), |r| format!(
            "; {r:.2} Redis round trips (scripts) per request"
        )),
    )
}
