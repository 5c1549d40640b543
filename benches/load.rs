//! Load benchmark: the release rpol binary serving the shipped policy.toml's
//! port-25 chain (check_spf included) against the protocol floor, driven by
//! C persistent connections sending Postfix 3.7's RCPT request in lock-step.
//!
//! Run: `benches/load.sh [--quick] [--update]` (builds, runs this, plots),
//! or `cargo bench --bench load -- [--quick] [--only SECTION,...]
//! [--tcp] [--client-threads N] [--rust-log LEVEL] [--seconds S]
//! [--rounds N] [--out DIR] [--dns-delay-ms MS] [--burst N]
//! [--burst-clients C] [--store-triplets N]`; the sections are main,
//! clients, tables, greylist, greylist-redis, dnsbl and cold (all by
//! default).
//!
//! The machine's speed swings several-fold from minute to minute, so no
//! absolute figure is compared across runs: the floor and rpol run in
//! alternating pairs (floor, rpol, floor, rpol, ...) and every figure is
//! also given as the ratio rpol/floor of its pair, with the median over the
//! pairs. Sections:
//!
//! - main: C = 4, 100, 1,000; per round a floor run, rpol with a warm DNS
//!   cache, a floor run, rpol with a cold one (`[dns] cache_size = 1`),
//!   then (with the default client) a floor run and rpol warm again with a
//!   thread per connection, as Postfix's smtpd processes wait for an answer.
//! - clients: throughput and peak RSS against C = 10, 100, 1,000, 5,000
//!   (warm; 100 and 1,000 are main's when it ran).
//! - tables: a `check_client_access` table (the seed's client_whitelist) of
//!   10 to 1,000,000 entries: load time, RSS, lookup cost per request.
//! - greylist, greylist-redis: the chain + check_greylist, the embedded
//!   store or a throw-away redis-server, pre-filled with `--store-triplets`
//!   (1,000,000) triplets, C = 100 and 1,000, a spam run (every client and
//!   sender new): store errors and answers that skipped greylisting counted
//!   (load/chains.rs).
//! - dnsbl: the chain + three reject_rbl_client lists, warm (known clients,
//!   beside the plain chain with the same clients) at C = 100 and 1,000,
//!   and cold (a new client every request) at C = 100 against a DNS server
//!   answering `--dns-delay-ms` (20) late: the round trips a new client
//!   costs.
//! - cold: a burst of `--burst` (10,000) requests from never-seen clients
//!   and domains against that slow DNS server: p99 in DNS round trips.
//!
//! Per run it prints requests/s, p50/p99/p999 latency, errors, the server's
//! CPU time per request (/proc/PID/stat utime + stime over the measured
//! window) and peak RSS (VmHWM), the client's own CPU, and for rpol the DNS
//! queries that reached the server. Targets are printed, never asserted.
//! The servers: the floor and the DNS server (tests/support/dns.rs serving
//! tests/zones/) are this binary started again with `--role`, each in its
//! own process so that its CPU time is its own.

// The floor runs on rpol's allocator, so that the ratios measure the
// policy, not the allocator (the client, in this binary too, gets it
// as well).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/dns.rs"]
mod dns_server;

#[path = "load/chains.rs"]
mod chains;
#[path = "load/client.rs"]
mod client;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/report.rs"]
mod report;
#[path = "load/roles.rs"]
mod roles;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client::Mix;
use procs::{Dns, Server};
use report::{Pair, Run, Series, dur, median, thousands};

/// Every section, in the order they run (`--only` picks some).
const SECTIONS: &[&str] = &[
    "main",
    "clients",
    "tables",
    "greylist",
    "greylist-redis",
    "dnsbl",
    "cold",
];
/// The C of the main section (issue 11, item 1).
const MAIN_CLIENTS: &[usize] = &[4, 100, 1000];
/// The C of the clients section (issue 11, item 4).
const SCALING_CLIENTS: &[usize] = &[10, 100, 1000, 5000];
/// Entries of the access tables of the tables section.
const TABLE_SIZES: &[usize] = &[10, 1000, 100_000, 1_000_000];
/// Client connections in the tables section.
const TABLE_CLIENTS: usize = 100;
/// The main section's series driven by a thread per connection (with the
/// default client; `--client threads` drives every series so).
const THREADS_VARIANT: &str = "warm, thread per connection";
/// rpol's max_connections is C plus this (the start-up probe; a connection
/// beyond the limit would close another).
const SPARE_CONNECTIONS: usize = 8;
/// `lookup_client` calls per timing of the in-process table lookup.
const LOOKUPS: usize = 100_000;
/// Timings of the in-process lookup; the fastest counts (noise only adds).
const LOOKUP_REPEATS: usize = 5;

struct Opts {
    quick: bool,
    tcp: bool,
    client_threads: usize,
    /// A thread per connection (as Postfix's smtpd processes) rather than
    /// tasks on the bench's runtime.
    thread_client: bool,
    main: bool,
    clients: bool,
    tables: bool,
    greylist: bool,
    greylist_redis: bool,
    dnsbl: bool,
    cold: bool,
    /// How late the slow DNS server answers (the cold path, and the
    /// blocklists' cold runs).
    dns_delay: Duration,
    /// Requests of the cold section's burst, and its connections.
    burst: usize,
    burst_clients: usize,
    /// Triplets the greylisting store holds before its runs.
    store_triplets: usize,
    out: PathBuf,
    rust_log: String,
    /// Measured window of one run.
    seconds: f64,
    /// Unmeasured requests before it (connections set up, caches warm).
    warmup: f64,
    /// Pairs per C and variant in the main section.
    rounds: usize,
    /// Pairs per C in the clients section and per size in the tables one.
    scale_pairs: usize,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let quick = args.iter().any(|a| a == "--quick");
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let num = |name: &str, default: f64| {
            value(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
            })
        };
        let only = value("--only").unwrap_or_else(|| SECTIONS.join(","));
        let sections: Vec<&str> = only.split(',').collect();
        for s in &sections {
            assert!(
                SECTIONS.contains(s),
                "--only: unknown section {s:?} ({})",
                SECTIONS.join(", ")
            );
        }
        // target/release/deps/load-HASH -> target/load-results
        let exe = std::env::current_exe().unwrap();
        let default_out = exe
            .ancestors()
            .nth(3)
            .map_or_else(|| PathBuf::from("load-results"), |t| t.join("load-results"));
        Opts {
            quick,
            tcp: args.iter().any(|a| a == "--tcp"),
            client_threads: num("--client-threads", 2.0) as usize,
            thread_client: match value("--client").as_deref() {
                Some("threads") => true,
                None | Some("tokio") => false,
                Some(other) => panic!("--client: {other:?} is neither threads nor tokio"),
            },
            main: sections.contains(&"main"),
            clients: sections.contains(&"clients"),
            tables: sections.contains(&"tables"),
            greylist: sections.contains(&"greylist"),
            greylist_redis: sections.contains(&"greylist-redis"),
            dnsbl: sections.contains(&"dnsbl"),
            cold: sections.contains(&"cold"),
            dns_delay: Duration::from_secs_f64(num("--dns-delay-ms", 20.0) / 1e3),
            burst: num("--burst", 10_000.0) as usize,
            burst_clients: num("--burst-clients", 100.0) as usize,
            store_triplets: num(
                "--store-triplets",
                if quick { 100_000.0 } else { 1_000_000.0 },
            ) as usize,
            out: value("--out").map_or(default_out, PathBuf::from),
            rust_log: value("--rust-log").unwrap_or_else(|| "warn".into()),
            seconds: num("--seconds", if quick { 1.0 } else { 3.0 }),
            warmup: if quick { 0.3 } else { 0.5 },
            rounds: num("--rounds", if quick { 3.0 } else { 5.0 }) as usize,
            scale_pairs: if quick { 1 } else { 3 },
        }
    }
}

fn main() {
    // `cargo bench` adds `--bench`; other unknown flags are ignored too.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    match value("--role") {
        Some("floor") => return roles::floor(value("--listen").expect("--listen")),
        Some("dns") => {
            let ms = value("--delay-ms").map_or(0, |v| v.parse().expect("--delay-ms"));
            return roles::dns(Duration::from_millis(ms));
        }
        Some(r) => panic!("unknown role {r}"),
        None => {}
    }
    let opts = Opts::parse(&args);
    raise_nofile_limit();
    let mut bench = Bench::new(opts);
    bench.run();
}

/// Every connection is a file descriptor, on both sides (rpol and the
/// floor inherit the limit).
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let need = (*SCALING_CLIENTS.iter().max().unwrap() + 100) as u64;
    if lim.rlim_cur < need {
        println!(
            "warning: RLIMIT_NOFILE is {} (hard limit); C=5000 needs {need}",
            lim.rlim_cur
        );
    }
}

/// One row of the tables section.
struct TableRow {
    entries: usize,
    file_mib: f64,
    check_config: Duration,
    first_answer: Duration,
    load_in_process: Duration,
    lookup_ns: f64,
    rss_loaded_mib: f64,
    series: Series,
}

struct Bench {
    opts: Opts,
    rt: tokio::runtime::Runtime,
    dns: Dns,
    dir: tempfile::TempDir,
    me: u32,
    started: Instant,
    /// The wall-clock start, for results.md.
    started_utc: String,
    machine: String,
    main: Vec<Series>,
    clients: Vec<Series>,
    tables: Vec<TableRow>,
    /// The greylisting and blocklist sections' series (their variant
    /// names the chain), and the cold section's bursts.
    chains: Vec<Series>,
    bursts: Vec<chains::Burst>,
    /// Lines printed beside the chains' figures (pre-fill, store errors).
    notes: Vec<String>,
    /// The DNS server that answers `dns_delay` late, once started.
    slow_dns: Option<Dns>,
    /// Runs whose answers were printed already.
    shown: std::collections::HashSet<String>,
}

impl Bench {
    fn new(opts: Opts) -> Bench {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.client_threads)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).unwrap();
            let mut int = signal(SignalKind::interrupt()).unwrap();
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            procs::kill_all();
            std::process::exit(130);
        });
        let dir = procs::work_dir();
        std::os::unix::fs::symlink(procs::repo_root().join("tables"), dir.path().join("tables"))
            .unwrap();
        Bench {
            machine: machine(),
            dns: Dns::start(Duration::ZERO),
            rt,
            dir,
            me: std::process::id(),
            started: Instant::now(),
            started_utc: utc_now(),
            opts,
            main: Vec::new(),
            clients: Vec::new(),
            tables: Vec::new(),
            chains: Vec::new(),
            bursts: Vec::new(),
            notes: Vec::new(),
            slow_dns: None,
            shown: Default::default(),
        }
    }

    fn run(&mut self) {
        println!("{}", self.machine);
        println!(
            "{} mode: {:.1} s measured per run after {:.1} s of warm-up; the policy protocol over {}; client: {}; rpol RUST_LOG={}",
            if self.opts.quick { "quick" } else { "full" },
            self.opts.seconds,
            self.opts.warmup,
            if self.opts.tcp {
                "TCP on 127.0.0.1"
            } else {
                "unix sockets"
            },
            if self.opts.thread_client {
                "a thread per connection".to_string()
            } else {
                format!("tasks on {} tokio worker threads", self.opts.client_threads)
            },
            self.opts.rust_log,
        );
        println!("DNS: tests/support/dns.rs on {}\n", self.dns.addr);
        if self.opts.main {
            self.main_section();
        }
        if self.opts.clients {
            self.clients_section();
        }
        if self.opts.tables {
            self.tables_section();
        }
        if self.opts.greylist {
            self.greylist_section(false);
        }
        if self.opts.greylist_redis {
            self.greylist_section(true);
        }
        if self.opts.dnsbl {
            self.dnsbl_section();
        }
        if self.opts.cold {
            self.cold_section();
        }
        self.summaries();
        self.write_results();
    }

    /// The shipped policy.toml with the DNS server, the connection limit
    /// for `c`, and optionally a DNS cache size and client table.
    fn rpol_config(
        &self,
        c: usize,
        cache_size: Option<i64>,
        client_table: Option<&Path>,
    ) -> String {
        toml::to_string(&self.rpol_doc(c, cache_size, client_table)).unwrap()
    }

    /// [`Self::rpol_config`] as a TOML document, to change further.
    fn rpol_doc(
        &self,
        c: usize,
        cache_size: Option<i64>,
        client_table: Option<&Path>,
    ) -> toml::Table {
        let shipped = std::fs::read_to_string(procs::repo_root().join("policy.toml")).unwrap();
        let mut doc: toml::Table = shipped.parse().expect("policy.toml parses");
        let section = |doc: &mut toml::Table, name: &str| -> toml::Table {
            doc.get(name)
                .and_then(|v| v.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let mut server = section(&mut doc, "server");
        server.insert(
            "max_connections".into(),
            toml::Value::Integer((c + SPARE_CONNECTIONS) as i64),
        );
        doc.insert("server".into(), toml::Value::Table(server));
        let mut dns = section(&mut doc, "dns");
        dns.insert(
            "nameservers".into(),
            toml::Value::Array(vec![toml::Value::String(self.dns.addr.to_string())]),
        );
        if let Some(n) = cache_size {
            dns.insert("cache_size".into(), toml::Value::Integer(n));
        }
        doc.insert("dns".into(), toml::Value::Table(dns));
        if let Some(path) = client_table {
            let mut tables = section(&mut doc, "tables");
            tables.insert(
                "client_whitelist".into(),
                toml::Value::String(path.display().to_string()),
            );
            doc.insert("tables".into(), toml::Value::Table(tables));
        }
        doc
    }

    fn start_rpol(&self, name: &str, config: &str) -> Server {
        Server::rpol(
            &self.rt,
            self.dir.path(),
            name,
            config,
            self.opts.tcp,
            &self.opts.rust_log,
        )
    }

    fn start_floor(&self, name: &str) -> Server {
        Server::floor(&self.rt, self.dir.path(), name, self.opts.tcp)
    }

    /// One measured run of `c` connections against `server`, each
    /// connection a thread of its own if `threads` (else a task).
    fn measure(
        &mut self,
        server: &Server,
        label: &str,
        (c, mix): (usize, Mix),
        threads: bool,
    ) -> Run {
        let warmup = Duration::from_secs_f64(self.opts.warmup);
        let window = Duration::from_secs_f64(self.opts.seconds);
        let me = self.me;
        let dns = &mut self.dns;
        let mut edges = Vec::with_capacity(2);
        let slow = mix == Mix::Cold || server.slow_dns;
        let dns = match (slow, self.slow_dns.as_mut()) {
            (true, Some(d)) => d,
            _ => dns,
        };
        let at_edge = || {
            edges.push((
                server.cpu(),
                procs::cpu_time(me),
                dns.cpu(),
                dns.queries(),
                procs::machine_time().0,
                server
                    .metrics
                    .map_or(0, |a| procs::metric(a, "rpol_store_errors")),
                server.redis_port.map(chains::redis_scripts),
            ))
        };
        let seen = if threads {
            client::drive_threads(&server.target, mix, c, warmup, window, at_edge)
        } else {
            client::drive(&self.rt, &server.target, mix, c, warmup, window, at_edge)
        };
        let (a, b) = (edges[0], edges[1]);
        let server_user = b.0.0.saturating_sub(a.0.0);
        let server_system = b.0.1.saturating_sub(a.0.1);
        let run = Run {
            server: label.to_string(),
            c,
            seen,
            server_cpu: server_user + server_system,
            server_system,
            client_cpu: b.1.saturating_sub(a.1),
            dns_cpu: b.2.saturating_sub(a.2),
            dns_queries: b.3 - a.3,
            machine_busy: b.4.saturating_sub(a.4),
            peak_rss_mib: server.peak_rss_mib(),
            store_errors: b.5.saturating_sub(a.5),
            redis_scripts: b.6.zip(a.6).map(|(b, a)| b.saturating_sub(a)),
        };
        println!("{}", run.line());
        run
    }

    /// `pairs` pairs (floor run, rpol run), each connection a thread of
    /// its own if `threads` (else a task), printing the answers of rpol's
    /// first run of this kind.
    fn pairs(
        &mut self,
        (floor, rpol): (&Server, &Server),
        label: &str,
        c: usize,
        pairs: usize,
        threads: bool,
    ) -> Vec<Pair> {
        self.pairs_of(Mix::Standard, (floor, rpol), label, c, pairs, threads)
    }

    /// [`Self::pairs`] with requests of `mix`.
    fn pairs_of(
        &mut self,
        mix: Mix,
        (floor, rpol): (&Server, &Server),
        label: &str,
        c: usize,
        pairs: usize,
        threads: bool,
    ) -> Vec<Pair> {
        (0..pairs)
            .map(|i| {
                let floor_label = if threads { "floor (threads)" } else { "floor" };
                let floor = self.measure(floor, floor_label, (c, mix), threads);
                let rpol = self.measure(rpol, label, (c, mix), threads);
                if i == 0 && self.shown.insert(format!("{label} {c}")) {
                    for (k, a) in &rpol.seen.samples {
                        println!(
                            "    {}: action={}",
                            client::KINDS[*k],
                            a.chars().take(120).collect::<String>()
                        );
                    }
                }
                Pair { floor, rpol }
            })
            .collect()
    }

    fn main_section(&mut self) {
        println!("== main: rpol (seed port-25 chain + check_spf) against the floor, in pairs\n");
        for &c in MAIN_CLIENTS {
            let floor = self.start_floor(&format!("floor-{c}"));
            let warm = self.start_rpol(&format!("warm-{c}"), &self.rpol_config(c, None, None));
            // One entry: the names of one request evict each other, so
            // (almost) every lookup asks the DNS server, with the request
            // mix unchanged; identical lookups in flight are still shared.
            let cold = self.start_rpol(&format!("cold-{c}"), &self.rpol_config(c, Some(1), None));
            let mut w = Series {
                c,
                variant: "warm".into(),
                pairs: Vec::new(),
            };
            let mut k = Series {
                c,
                variant: "cold".into(),
                pairs: Vec::new(),
            };
            // The same warm server and floor driven as Postfix drives a
            // policy server: a process per SMTP session, asleep in read
            // until its answer (here a thread per connection), so that
            // every answer wakes its client for the floor as for rpol.
            let threads = self.opts.thread_client;
            let postfix_like = !threads;
            let mut t = Series {
                c,
                variant: THREADS_VARIANT.into(),
                pairs: Vec::new(),
            };
            for _ in 0..self.opts.rounds {
                w.pairs
                    .append(&mut self.pairs((&floor, &warm), "rpol warm", c, 1, threads));
                k.pairs
                    .append(&mut self.pairs((&floor, &cold), "rpol cold", c, 1, threads));
                if postfix_like {
                    let label = "rpol warm (threads)";
                    t.pairs
                        .append(&mut self.pairs((&floor, &warm), label, c, 1, true));
                }
            }
            println!();
            self.main.push(w);
            self.main.push(k);
            if postfix_like {
                self.main.push(t);
            }
        }
    }

    fn clients_section(&mut self) {
        println!("== clients: throughput and peak RSS against C (warm DNS cache)\n");
        for &c in SCALING_CLIENTS {
            if self.opts.main
                && let Some(s) = self.main.iter().find(|s| s.c == c && s.variant == "warm")
            {
                println!("C={c}: from the main section ({} pairs)", s.pairs.len());
                continue;
            }
            let floor = self.start_floor(&format!("floor-{c}"));
            let warm = self.start_rpol(&format!("warm-{c}"), &self.rpol_config(c, None, None));
            let (count, threads) = (self.opts.scale_pairs.max(1), self.opts.thread_client);
            let pairs = self.pairs((&floor, &warm), "rpol warm", c, count, threads);
            self.clients.push(Series {
                c,
                variant: "warm".into(),
                pairs,
            });
            println!();
        }
    }

    fn tables_section(&mut self) {
        println!(
            "== tables: check_client_access client_whitelist of N entries, C={TABLE_CLIENTS}\n"
        );
        let floor = self.start_floor("floor-tables");
        for &n in TABLE_SIZES {
            let path = self.dir.path().join(format!("client_access_{n}"));
            write_table(&path, n);
            let file_mib = std::fs::metadata(&path).unwrap().len() as f64 / (1 << 20) as f64;
            let config = self.rpol_config(TABLE_CLIENTS, None, Some(&path));
            let config_path = self.dir.path().join(format!("check-{n}.toml"));
            std::fs::write(&config_path, &config).unwrap();
            let t = Instant::now();
            let status = Command::new(procs::rpol_binary())
                .arg("--config")
                .arg(&config_path)
                .arg("--check-config")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            let check_config = t.elapsed();
            assert!(status.success(), "rpol --check-config with {n} entries");
            let (load_in_process, lookup_ns) = lookup_cost(&path);
            let rpol = self.start_rpol(&format!("table-{n}"), &config);
            let rss_loaded_mib = rpol.rss_mib();
            println!(
                "{n} entries ({file_mib:.1} MiB): --check-config {}, first answer {} after start, \
                 RSS {rss_loaded_mib:.1} MiB loaded; in process: load {}, lookup_client {}/request",
                dur(check_config.as_nanos() as f64),
                dur(rpol.first_answer.as_nanos() as f64),
                dur(load_in_process.as_nanos() as f64),
                dur(lookup_ns),
            );
            let label = format!("rpol table {n}");
            let (count, threads) = (self.opts.scale_pairs.max(1), self.opts.thread_client);
            let pairs = self.pairs((&floor, &rpol), &label, TABLE_CLIENTS, count, threads);
            self.tables.push(TableRow {
                entries: n,
                file_mib,
                check_config,
                first_answer: rpol.first_answer,
                load_in_process,
                lookup_ns,
                rss_loaded_mib,
                series: Series {
                    c: TABLE_CLIENTS,
                    variant: n.to_string(),
                    pairs,
                },
            });
            drop(rpol);
            let _ = std::fs::remove_file(&path);
            println!();
        }
    }

    /// Main and clients series by C (the clients section reuses main's).
    fn scaling_series(&self) -> Vec<&Series> {
        let mut v: Vec<&Series> = SCALING_CLIENTS
            .iter()
            .filter_map(|&c| {
                self.clients
                    .iter()
                    .find(|s| s.c == c)
                    .or_else(|| self.main.iter().find(|s| s.c == c && s.variant == "warm"))
            })
            .collect();
        v.sort_by_key(|s| s.c);
        v
    }

    fn summaries(&self) {
        println!(
            "\n== summary: paired ratios rpol/floor (lower CPU and p99 ratios, higher throughput ratios are better)\n"
        );
        for s in &self.main {
            println!("{}", s.summary());
        }
        if self.opts.clients {
            println!("{}", self.clients_text());
        }
        if self.opts.tables {
            println!("{}", self.tables_text());
        }
        if self.chains_ran() {
            println!("{}", self.chains_md());
        }
        println!(
            "took {:.0} s; load average at the end: {}",
            self.started.elapsed().as_secs_f64(),
            load_average()
        );
    }

    fn clients_text(&self) -> String {
        let mut s = String::from(
            "| C | pairs | rpol req/s | floor req/s | throughput rpol/floor | rpol p99 | floor p99 \
             | rpol CPU/req | floor CPU/req | rpol peak RSS | floor peak RSS | errors |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for x in self.scaling_series() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} MiB | {:.1} MiB | {} |",
                thousands(x.c as f64),
                x.pairs.len(),
                thousands(x.rpol_median(Run::rps)),
                thousands(x.floor_median(Run::rps)),
                report::ratio_cell(&x.throughput()),
                dur(x.rpol_median(|r| r.quantile(0.99))),
                dur(x.floor_median(|r| r.quantile(0.99))),
                dur(x.rpol_median(Run::cpu_per_request)),
                dur(x.floor_median(Run::cpu_per_request)),
                x.rpol_peak_rss(),
                x.floor_peak_rss(),
                x.errors(),
            );
        }
        s
    }

    fn tables_text(&self) -> String {
        let mut s = String::from(
            "| entries | file | rpol --check-config | start to first answer | RSS loaded | peak RSS \
             | load in process | lookup_client/request | rpol CPU/req | CPU/request rpol/floor \
             | throughput rpol/floor |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for t in &self.tables {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} MiB | {:.1} MiB | {} | {} | {} | {} | {} |",
                thousands(t.entries as f64),
                if t.file_mib < 1.0 {
                    format!("{:.0} KiB", t.file_mib * 1024.0)
                } else {
                    format!("{:.1} MiB", t.file_mib)
                },
                dur(t.check_config.as_nanos() as f64),
                dur(t.first_answer.as_nanos() as f64),
                t.rss_loaded_mib,
                t.series.rpol_peak_rss(),
                dur(t.load_in_process.as_nanos() as f64),
                dur(t.lookup_ns),
                dur(t.series.rpol_median(Run::cpu_per_request)),
                report::ratio_cell(&t.series.cpu()),
                report::ratio_cell(&t.series.throughput()),
            );
        }
        s
    }

    /// One paragraph for BENCHMARKS.md's "In short" (benches/load.sh
    /// --update puts it there): the warm medians of the main section.
    fn summary_line(&self) -> Option<String> {
        let warm: Vec<&Series> = self.main.iter().filter(|s| s.variant == "warm").collect();
        if warm.is_empty() {
            return None;
        }
        let threads: Vec<&Series> = self
            .main
            .iter()
            .filter(|s| s.variant == THREADS_VARIANT)
            .collect();
        // One figure per C, "0.84 / 0.30 / 0.28".
        let per_c = |series: &[&Series], f: &dyn Fn(&Series) -> String| {
            series.iter().map(|s| f(s)).collect::<Vec<_>>().join(" / ")
        };
        let throughput = |s: &Series| format!("{:.2}", median(s.throughput()));
        let cpu = |s: &Series| format!("{:.1}", median(s.cpu()));
        let p99 = |s: &Series| format!("{:.1}", median(s.p99()));
        let postfix_like = if threads.is_empty() {
            String::new()
        } else {
            format!(
                " With a thread per connection, as Postfix's smtpd processes wait for the \
                 answer: throughput {}, CPU per request {}, p99 {}.",
                per_c(&threads, &throughput),
                per_c(&threads, &cpu),
                per_c(&threads, &p99),
            )
        };
        let rss = warm
            .iter()
            .find(|s| s.c == report::RSS_TARGET_C)
            .map_or(String::new(), |s| {
                format!(
                    "; peak RSS {:.0} MiB at C = {}",
                    s.rpol_peak_rss(),
                    thousands(s.c as f64)
                )
            });
        let tables = match (self.tables.first(), self.tables.last()) {
            (Some(a), Some(b)) if self.tables.len() > 1 => format!(
                " With a check_client_access table of {} entries rpol spends {} per request, \
                 with {} entries {} (loaded in {}, {:.0} MiB).",
                thousands(a.entries as f64),
                dur(a.series.rpol_median(Run::cpu_per_request)),
                thousands(b.entries as f64),
                dur(b.series.rpol_median(Run::cpu_per_request)),
                dur(b.first_answer.as_nanos() as f64),
                b.rss_loaded_mib,
            ),
            _ => String::new(),
        };
        Some(format!(
            "Last recorded run ({}, {} mode; warm DNS cache, medians of the paired ratios \
             at C = {}): throughput {} of the floor's, CPU per request {} times the floor's \
             ({} us), p99 {} times the floor's{rss}.{postfix_like}{tables}",
            self.started_utc,
            if self.opts.quick { "quick" } else { "full" },
            per_c(&warm, &|s| thousands(s.c as f64)),
            per_c(&warm, &throughput),
            per_c(&warm, &cpu),
            per_c(&warm, &|s| format!(
                "{:.0}",
                s.rpol_median(Run::cpu_per_request) / 1e3
            )),
            per_c(&warm, &p99),
        ))
    }

    /// The first lines of results.md and chains.md: when, how, where.
    fn heading(&self) -> String {
        format!(
            "Run of {} ({} mode, {:.0} s): `{}`.\n\n{} Load average at the end: {}.\n",
            self.started_utc,
            if self.opts.quick { "quick" } else { "full" },
            self.started.elapsed().as_secs_f64(),
            command_line(),
            self.machine,
            load_average(),
        )
    }

    /// chains.md (the chains sections, which benches/load.sh --update
    /// puts between their own markers in BENCHMARKS.md), chains.csv and
    /// chains-runs.csv, when a chains section ran.
    fn write_chains(&self) {
        if !self.chains_ran() {
            return;
        }
        let out = &self.opts.out;
        let mut runs: Vec<&Run> = Vec::new();
        for s in &self.chains {
            for p in &s.pairs {
                runs.push(&p.floor);
                runs.push(&p.rpol);
            }
        }
        runs.extend(self.bursts.iter().map(|b| &b.run));
        let md = format!(
            "{}\n{}<details><summary>Every run ({})</summary>\n\n{}\n</details>\n",
            self.heading(),
            self.chains_md(),
            runs.len(),
            report::runs_table(&runs)
        );
        std::fs::write(out.join("chains.md"), md).unwrap();
        std::fs::write(out.join("chains-runs.csv"), report::runs_csv(&runs)).unwrap();
        if !self.chains.is_empty() {
            std::fs::write(out.join("chains.csv"), self.chains_csv()).unwrap();
        }
    }

    /// results.md (the section of BENCHMARKS.md benches/load.sh --update
    /// replaces), runs.csv, clients.csv, tables.csv in `--out`, when the
    /// main, clients or tables section ran; chains.md and its CSVs.
    fn write_results(&self) {
        let out = &self.opts.out;
        std::fs::create_dir_all(out).unwrap();
        self.write_chains();
        if !(self.opts.main || self.opts.clients || self.opts.tables) {
            println!("results in {}", out.display());
            return;
        }
        let mut md = self.heading();
        if !self.main.is_empty() {
            let _ = writeln!(
                md,
                "#### Paired ratios rpol/floor\n\nMedian of the pairs in bold, the range of the \
                 pairs in brackets; the other columns are medians of the runs (absolute figures, \
                 which vary several-fold with the machine's load). Targets (warm cache): \
                 throughput >= {:.2} of the floor at C=4 and C=100 (aim {:.2}), p99 <= {:.1}x the \
                 floor's (aim {:.1}x), CPU/request <= {:.1}x, peak RSS <= {:.0} MiB at C={}.\n\n{}",
                report::TARGET_THROUGHPUT,
                report::AIM_THROUGHPUT,
                report::TARGET_P99,
                report::AIM_P99,
                report::TARGET_CPU,
                report::TARGET_RSS_MIB,
                thousands(report::RSS_TARGET_C as f64),
                report::ratio_table(&self.main)
            );
        }
        if self.opts.clients {
            let _ = writeln!(md, "#### Against C (warm cache)\n\n{}", self.clients_text());
        }
        if self.opts.tables {
            let _ = writeln!(
                md,
                "#### Against access-table size (C={TABLE_CLIENTS}, warm cache)\n\n{}",
                self.tables_text()
            );
        }
        let mut runs: Vec<&Run> = Vec::new();
        for s in self
            .main
            .iter()
            .chain(&self.clients)
            .chain(self.tables.iter().map(|t| &t.series))
        {
            for p in &s.pairs {
                runs.push(&p.floor);
                runs.push(&p.rpol);
            }
        }
        let _ = writeln!(
            md,
            "<details><summary>Every run ({})</summary>\n\n{}\n</details>",
            runs.len(),
            report::runs_table(&runs)
        );
        std::fs::write(out.join("results.md"), md).unwrap();
        if let Some(line) = self.summary_line() {
            std::fs::write(out.join("summary.md"), line).unwrap();
        }
        std::fs::write(out.join("runs.csv"), report::runs_csv(&runs)).unwrap();

        let mut csv = String::from(
            "c,pairs,rpol_rps,floor_rps,throughput_ratio,rpol_p99_ms,floor_p99_ms,rpol_cpu_us,floor_cpu_us,rpol_peak_rss_mib,floor_peak_rss_mib,errors\n",
        );
        for x in self.scaling_series() {
            let _ = writeln!(
                csv,
                "{},{},{:.0},{:.0},{:.3},{:.3},{:.3},{:.2},{:.2},{:.2},{:.2},{}",
                x.c,
                x.pairs.len(),
                x.rpol_median(Run::rps),
                x.floor_median(Run::rps),
                median(x.throughput()),
                x.rpol_median(|r| r.quantile(0.99)) / 1e6,
                x.floor_median(|r| r.quantile(0.99)) / 1e6,
                x.rpol_median(Run::cpu_per_request) / 1e3,
                x.floor_median(Run::cpu_per_request) / 1e3,
                x.rpol_peak_rss(),
                x.floor_peak_rss(),
                x.errors(),
            );
        }
        if self.opts.clients {
            std::fs::write(out.join("clients.csv"), csv).unwrap();
        }
        let mut csv = String::from(
            "entries,file_mib,check_config_s,first_answer_s,load_in_process_s,lookup_ns,rss_loaded_mib,peak_rss_mib,rpol_cpu_us,cpu_ratio,throughput_ratio\n",
        );
        for t in &self.tables {
            let _ = writeln!(
                csv,
                "{},{:.2},{:.3},{:.3},{:.3},{:.1},{:.2},{:.2},{:.2},{:.3},{:.3}",
                t.entries,
                t.file_mib,
                t.check_config.as_secs_f64(),
                t.first_answer.as_secs_f64(),
                t.load_in_process.as_secs_f64(),
                t.lookup_ns,
                t.rss_loaded_mib,
                t.series.rpol_peak_rss(),
                t.series.rpol_median(Run::cpu_per_request) / 1e3,
                median(t.series.cpu()),
                median(t.series.throughput()),
            );
        }
        if self.opts.tables {
            std::fs::write(out.join("tables.csv"), csv).unwrap();
        }
        println!("results in {}", out.display());
    }
}

/// An access(5) source table of `n` entries that no request of the mix
/// matches, so that every lookup tries all of Postfix's keys (client name
/// and its parents, address and its prefixes): half addresses, half names.
fn write_table(path: &Path, n: usize) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        if i % 2 == 0 {
            let _ = writeln!(
                w,
                "10.{}.{}.{} REJECT listed",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            );
        } else {
            let _ = writeln!(w, "mx{i}.listed{}.test REJECT listed", i % 997);
        }
    }
    w.flush().unwrap();
}

/// The table loaded in this process with rpol's own code, and the cost of
/// one check_client_access lookup (all keys of one request), as the fastest
/// of several timings: the noise of this machine only ever adds.
fn lookup_cost(path: &Path) -> (Duration, f64) {
    use rpol::tables::{AccessTable, TableType};
    let t = Instant::now();
    let table = AccessTable::load(path, TableType::Hash, Default::default()).expect("table loads");
    let load = t.elapsed();
    let clients: Vec<(String, String)> = (0..1024u32)
        .map(|i| {
            if i % 2 == 0 {
                let host = 1 + i % 254;
                (
                    format!("mx{host}.relay.example"),
                    format!("203.0.113.{host}"),
                )
            } else {
                (
                    "unknown".to_string(),
                    format!("2001:db8:1:{:x}:0:{:x}::1", i >> 4, i),
                )
            }
        })
        .collect();
    let mut best = f64::INFINITY;
    for _ in 0..LOOKUP_REPEATS {
        let t = Instant::now();
        let mut hits = 0usize;
        for i in 0..LOOKUPS {
            let (name, addr) = &clients[i % clients.len()];
            hits += usize::from(table.lookup_client(name, addr, true).is_some());
        }
        std::hint::black_box(hits);
        best = best.min(t.elapsed().as_nanos() as f64 / LOOKUPS as f64);
    }
    (load, best)
}

/// nproc, CPU model, kernel, rustc, load average, the commit measured.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let output = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(procs::repo_root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    let commit = output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = output(
        "git",
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "src",
            "Cargo.toml",
            "Cargo.lock",
            "policy.toml",
        ],
    );
    format!(
        "Machine: nproc {}, \"{model}\", Linux {}, {}; load average {} at the start. rpol at commit {commit}{}.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        output("rustc", &["--version"]),
        load.join(" "),
        if dirty == "unknown" {
            ""
        } else {
            " (with uncommitted changes)"
        },
    )
}

/// /proc/loadavg's three load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The command that started this run (benches/load.sh names itself), to
/// run it again.
fn command_line() -> String {
    if let Ok(cmd) = std::env::var("RPOL_LOAD_COMMAND") {
        return cmd;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        "cargo bench --bench load".into()
    } else {
        format!("cargo bench --bench load -- {}", args.join(" "))
    }
}
