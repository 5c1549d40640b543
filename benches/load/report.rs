//! Figures of one measured run, paired ratios against the floor, and the
//! text and Markdown they are printed as. Targets are printed beside the
//! figures, never asserted.

use std::fmt::Write as _;
use std::time::Duration;

use super::client::{KINDS, Seen};

/// Issue 11's targets, with the full seed chain and check_spf on a warm
/// cache (printed, never asserted).
pub const TARGET_THROUGHPUT: f64 = 0.50;
pub const AIM_THROUGHPUT: f64 = 0.85;
pub const TARGET_P99: f64 = 2.0;
pub const AIM_P99: f64 = 1.5;
pub const TARGET_CPU: f64 = 3.0;
pub const TARGET_RSS_MIB: f64 = 50.0;
/// The C at which the RSS target applies.
pub const RSS_TARGET_C: usize = 1000;
/// Cores taken by other work above which a run is flagged: the machine
/// (2 cores here) was mostly someone else's, so its figures say little.
pub const BUSY_CORES: f64 = 1.5;

/// One measured run against one server.
pub struct Run {
    /// "floor", "rpol warm", "rpol cold", "rpol table 1000", "floor (threads)",
    /// "rpol warm (threads)" (a thread per connection), ...
    pub server: String,
    pub c: usize,
    pub seen: Seen,
    /// The server's CPU time in the window (user + system), and the
    /// system part of it (the kernel: socket calls, wake-ups).
    pub server_cpu: Duration,
    pub server_system: Duration,
    pub client_cpu: Duration,
    pub dns_cpu: Duration,
    pub dns_queries: u64,
    /// CPU time the whole machine was busy in the window: what is not the
    /// server's, the client's or the DNS server's is other people's load.
    pub machine_busy: Duration,
    /// The server's VmHWM after the run (its whole life: one C).
    pub peak_rss_mib: f64,
    /// Store calls that failed in the window (rpol_store_errors).
    pub store_errors: u64,
    /// Scripts the Redis server ran in the window (rpol's round trips),
    /// when rpol's store is Redis.
    pub redis_scripts: Option<u64>,
}

impl Run {
    pub fn requests(&self) -> u64 {
        self.seen.latencies.len() as u64
    }

    pub fn rps(&self) -> f64 {
        self.requests() as f64 / self.seen.window.as_secs_f64()
    }

    /// Latency quantile, ns.
    pub fn quantile(&self, q: f64) -> f64 {
        let l = &self.seen.latencies;
        if l.is_empty() {
            return f64::NAN;
        }
        l[((l.len() as f64 * q) as usize).min(l.len() - 1)] as f64
    }

    fn per_request(&self, d: Duration) -> f64 {
        d.as_nanos() as f64 / self.requests().max(1) as f64
    }

    /// Server CPU per request, ns.
    pub fn cpu_per_request(&self) -> f64 {
        self.per_request(self.server_cpu)
    }

    /// The kernel's share of the server's CPU time.
    pub fn system_share(&self) -> f64 {
        self.server_system.as_secs_f64() / self.server_cpu.as_secs_f64()
    }

    pub fn client_per_request(&self) -> f64 {
        self.per_request(self.client_cpu)
    }

    /// Cores used, from CPU time over the window.
    pub fn cores(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.seen.window.as_secs_f64()
    }

    /// Cores busy with other work than this benchmark's during the window.
    pub fn others_cores(&self) -> f64 {
        let ours = self.server_cpu + self.client_cpu + self.dns_cpu;
        self.cores(self.machine_busy.saturating_sub(ours))
    }

    /// Whether other work took most of the machine during the window.
    pub fn busy(&self) -> bool {
        self.others_cores() > BUSY_CORES
    }

    pub fn dns_per_request(&self) -> f64 {
        self.dns_queries as f64 / self.requests().max(1) as f64
    }

    pub fn answer_mix(&self) -> String {
        let total = self.requests().max(1) as f64;
        KINDS
            .iter()
            .zip(self.seen.answers)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {:.0}%", 100.0 * n as f64 / total))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line per run.
    pub fn line(&self) -> String {
        let mut s = format!(
            "C={:<5} {:<16} {:>9} req/s  p50 {:>8} p99 {:>8} p999 {:>8}  err {}  \
             server {:>7}/req ({:.2} cores, {:.0}% sys)  peak RSS {:>5.1} MiB  client {:>7}/req ({:.2} cores)",
            self.c,
            self.server,
            thousands(self.rps()),
            dur(self.quantile(0.50)),
            dur(self.quantile(0.99)),
            dur(self.quantile(0.999)),
            self.seen.errors,
            dur(self.cpu_per_request()),
            self.cores(self.server_cpu),
            100.0 * self.system_share(),
            self.peak_rss_mib,
            dur(self.client_per_request()),
            self.cores(self.client_cpu),
        );
        if !self.server.starts_with("floor") {
            let _ = write!(
                s,
                "  DNS {:.3} q/req, {:.2} cores",
                self.dns_per_request(),
                self.cores(self.dns_cpu)
            );
        }
        let _ = write!(
            s,
            "  others {:.2} cores  [{}]",
            self.others_cores(),
            self.answer_mix()
        );
        if self.busy() {
            let _ = write!(s, "  BUSY (other load above {BUSY_CORES} cores)");
        }
        if let Some(e) = &self.seen.first_error {
            let _ = write!(s, "  first error: {e}");
        }
        s
    }
}

/// A floor run and the rpol run right after it.
pub struct Pair {
    pub floor: Run,
    pub rpol: Run,
}

impl Pair {
    pub fn throughput(&self) -> f64 {
        self.rpol.rps() / self.floor.rps()
    }
    pub fn p99(&self) -> f64 {
        self.rpol.quantile(0.99) / self.floor.quantile(0.99)
    }
    pub fn cpu(&self) -> f64 {
        self.rpol.cpu_per_request() / self.floor.cpu_per_request()
    }
}

/// The pairs of one C and one rpol variant.
pub struct Series {
    pub c: usize,
    /// "warm", "cold", "warm, thread per connection", or the table size.
    pub variant: String,
    pub pairs: Vec<Pair>,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Series {
    fn each(&self, f: impl Fn(&Pair) -> f64) -> Vec<f64> {
        self.pairs.iter().map(f).collect()
    }
    pub fn throughput(&self) -> Vec<f64> {
        self.each(Pair::throughput)
    }
    pub fn p99(&self) -> Vec<f64> {
        self.each(Pair::p99)
    }
    pub fn cpu(&self) -> Vec<f64> {
        self.each(Pair::cpu)
    }
    pub fn rpol_median(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(self.pairs.iter().map(|p| f(&p.rpol)).collect())
    }
    pub fn floor_median(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(self.pairs.iter().map(|p| f(&p.floor)).collect())
    }
    pub fn rpol_peak_rss(&self) -> f64 {
        self.pairs
            .iter()
            .map(|p| p.rpol.peak_rss_mib)
            .fold(0.0, f64::max)
    }
    pub fn floor_peak_rss(&self) -> f64 {
        self.pairs
            .iter()
            .map(|p| p.floor.peak_rss_mib)
            .fold(0.0, f64::max)
    }
    pub fn errors(&self) -> u64 {
        self.pairs
            .iter()
            .map(|p| p.rpol.seen.errors + p.floor.seen.errors)
            .sum()
    }

    /// The summary printed at the end: ratios per pair, their median, and
    /// the target beside it.
    pub fn summary(&self) -> String {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let warm = self.variant.starts_with("warm");
        let t = |text: String| if warm { text } else { String::new() };
        let mut s = format!(
            "C={}, rpol {} / floor, {} pairs:\n",
            self.c,
            self.variant,
            self.pairs.len()
        );
        let tp = self.throughput();
        let _ = writeln!(
            s,
            "  throughput   {:<30} median {:.2}  {}",
            list(&tp),
            median(tp.clone()),
            t(format!(
                "target >= {TARGET_THROUGHPUT:.2} at C=4 and C=100 (aim {AIM_THROUGHPUT:.2})"
            ))
        );
        let p = self.p99();
        let _ = writeln!(
            s,
            "  p99          {:<30} median {:.2}  {}",
            list(&p),
            median(p.clone()),
            t(format!("target <= {TARGET_P99:.1} (aim {AIM_P99:.1})"))
        );
        let cpu = self.cpu();
        let _ = writeln!(
            s,
            "  CPU/request  {:<30} median {:.2}  {}",
            list(&cpu),
            median(cpu.clone()),
            t(format!("target <= {TARGET_CPU:.1}"))
        );
        let _ = writeln!(
            s,
            "  rpol {} req/s, p99 {}, {}/req ({:.0}% sys), peak RSS {:.1} MiB{}; floor {} req/s, p99 {}, {}/req ({:.0}% sys), peak RSS {:.1} MiB; errors {}",
            thousands(self.rpol_median(Run::rps)),
            dur(self.rpol_median(|r| r.quantile(0.99))),
            dur(self.rpol_median(Run::cpu_per_request)),
            100.0 * self.rpol_median(Run::system_share),
            self.rpol_peak_rss(),
            if warm && self.c == RSS_TARGET_C {
                format!(" (target <= {TARGET_RSS_MIB:.0} MiB)")
            } else {
                String::new()
            },
            thousands(self.floor_median(Run::rps)),
            dur(self.floor_median(|r| r.quantile(0.99))),
            dur(self.floor_median(Run::cpu_per_request)),
            100.0 * self.floor_median(Run::system_share),
            self.floor_peak_rss(),
            self.errors(),
        );
        let busy = self
            .pairs
            .iter()
            .filter(|p| p.floor.busy() || p.rpol.busy())
            .count();
        if busy > 0 {
            let _ = writeln!(
                s,
                "  {busy} of {} pairs ran while other work took over {BUSY_CORES} cores (BUSY above)",
                self.pairs.len()
            );
        }
        if !warm {
            let _ = writeln!(
                s,
                "  DNS queries per request reaching the server: {:.2} (median)",
                self.rpol_median(Run::dns_per_request)
            );
        }
        s
    }
}

/// ns as "15.2 us", "1.30 ms", "0.412 s".
pub fn dur(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e4 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1e6 {
        format!("{:.0} us", ns / 1e3)
    } else if ns < 1e7 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// 52310.4 as "52,310".
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// "0.12 (0.10-0.15)": the median and the range of the pairs.
pub fn ratio_cell(v: &[f64]) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("**{:.2}** ({lo:.2}-{hi:.2})", median(v.to_vec()))
}

/// A Markdown table of the paired ratios: one row per series.
pub fn ratio_table(series: &[Series]) -> String {
    let mut s = String::from(
        "| C | DNS cache, client | pairs | throughput rpol/floor | p99 rpol/floor | CPU/request rpol/floor \
         | rpol req/s | rpol p50 / p99 / p999 | rpol CPU/req | floor req/s | floor p99 | floor CPU/req \
         | rpol peak RSS | DNS queries/req | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for x in series {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} ({:.0}% sys) | {} | {} | {} ({:.0}% sys) | {:.1} MiB | {:.2} | {} |",
            thousands(x.c as f64),
            x.variant,
            x.pairs.len(),
            ratio_cell(&x.throughput()),
            ratio_cell(&x.p99()),
            ratio_cell(&x.cpu()),
            thousands(x.rpol_median(Run::rps)),
            dur(x.rpol_median(|r| r.quantile(0.5))),
            dur(x.rpol_median(|r| r.quantile(0.99))),
            dur(x.rpol_median(|r| r.quantile(0.999))),
            dur(x.rpol_median(Run::cpu_per_request)),
            100.0 * x.rpol_median(Run::system_share),
            thousands(x.floor_median(Run::rps)),
            dur(x.floor_median(|r| r.quantile(0.99))),
            dur(x.floor_median(Run::cpu_per_request)),
            100.0 * x.floor_median(Run::system_share),
            x.rpol_peak_rss(),
            x.rpol_median(Run::dns_per_request),
            x.errors(),
        );
    }
    s
}

/// Every run, in the order it ran, as a Markdown table.
pub fn runs_table(runs: &[&Run]) -> String {
    let mut s = String::from(
        "| C | server | req/s | p50 | p99 | p999 | errors | server CPU/req (sys share) | server cores \
         | peak RSS | client CPU/req | client cores | DNS q/req | other load (cores) | answers |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} ({:.0}%) | {:.2} | {:.1} MiB | {} | {:.2} | {} | {:.2} | {} |",
            r.c,
            r.server,
            thousands(r.rps()),
            dur(r.quantile(0.5)),
            dur(r.quantile(0.99)),
            dur(r.quantile(0.999)),
            r.seen.errors,
            dur(r.cpu_per_request()),
            100.0 * r.system_share(),
            r.cores(r.server_cpu),
            r.peak_rss_mib,
            dur(r.client_per_request()),
            r.cores(r.client_cpu),
            if r.server.starts_with("floor") {
                "-".to_string()
            } else {
                format!("{:.3}", r.dns_per_request())
            },
            r.others_cores(),
            r.answer_mix(),
        );
    }
    s
}

/// Per-run figures as CSV (for plots and for comparing two runs).
pub fn runs_csv(runs: &[&Run]) -> String {
    let mut s = String::from(
        "c,server,requests,window_s,rps,p50_us,p99_us,p999_us,errors,server_cpu_us_per_req,server_system_share,\
         client_cpu_us_per_req,dns_cpu_s,dns_queries,peak_rss_mib,others_cores\n",
    );
    for r in runs {
        let _ = writeln!(
            s,
            "{},{},{},{:.3},{:.1},{:.1},{:.1},{:.1},{},{:.2},{:.3},{:.2},{:.3},{},{:.2},{:.2}",
            r.c,
            r.server,
            r.requests(),
            r.seen.window.as_secs_f64(),
            r.rps(),
            r.quantile(0.5) / 1e3,
            r.quantile(0.99) / 1e3,
            r.quantile(0.999) / 1e3,
            r.seen.errors,
            r.cpu_per_request() / 1e3,
            r.system_share(),
            r.client_per_request() / 1e3,
            r.dns_cpu.as_secs_f64(),
            r.dns_queries,
            r.peak_rss_mib,
            r.others_cores(),
        );
    }
    s
}
