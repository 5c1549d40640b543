//! The `rpol` command: arguments in, one library call, one-line error out.

use std::process::ExitCode;

use clap::Parser;

use rpol::cli::{Args, Command};
use rpol::config::{self, ListenAddr};
use rpol::log;
use rpol::server::{self, ServeOptions, SystemdFds};

// mimalloc rather than glibc's malloc: a request makes some fifty small
// allocations, and callgrind counts about half the instructions for each
// (BENCHMARKS.md); it also returns freed memory without glibc's per-arena
// trimming (mprotect calls under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: called once, before any thread exists and before anything
    // opens a file: the systemd variables are read and removed, and the
    // descriptors they name are taken by nothing else.
    let systemd = unsafe { SystemdFds::take_from_env() };
    let quiet_stderr = args.stdio;
    match run(args, systemd) {
        Ok(code) => code,
        Err(message) => {
            if quiet_stderr {
                tracing::error!("{message}");
            } else {
                eprintln!("rpol: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

/// How long `--check-config` may spend on the egress watch.
const CHECK_EGRESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// `--check-config`'s egress watch: once, within a deadline, our egress
/// addresses and HELO name looked up in the configured blocklists (after
/// the lists' probes, so that a list that lists the world is left out).
/// A listing is a warning; the config is still fine.
fn check_egress(path: &std::path::Path, policy: &rpol::policy::Policy) -> Result<(), String> {
    use rpol::dnsbl::health::{self, EgressResult};
    let site = &policy.site;
    let settings = &site.dnsbl_health;
    let lists = policy.dns_lists();
    let helo = (!site.myhostname.is_empty()).then_some(site.myhostname.as_str());
    if !settings.watch_egress
        || !lists.iter().any(|l| l.blocks)
        || (site.egress.is_empty() && helo.is_none())
    {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let state = server::runtime_state(policy).map_err(|e| e.to_string())?;
    let dns = state.resolver();
    let deadline = dns.lookup_bound() * 3;
    let found = runtime.block_on(async {
        let watch = async {
            if settings.probe {
                health::probe_all(&dns, &lists, deadline).await;
            }
            health::watch_egress(&dns, &lists, &site.egress, helo, deadline).await
        };
        tokio::time::timeout(CHECK_EGRESS_DEADLINE, watch).await
    });
    let shown = path.display();
    let Ok(found) = found else {
        eprintln!("{shown}: warning: egress watch: no answer within {CHECK_EGRESS_DEADLINE:?}");
        return Ok(());
    };
    println!("{shown}: egress watch:");
    for f in &found {
        println!("  {f}");
        if matches!(f.result, EgressResult::Listed(..)) {
            eprintln!("{shown}: warning: our egress {f}");
        }
    }
    Ok(())
}

fn run(args: Args, systemd: SystemdFds) -> Result<ExitCode, String> {
    if let Some(Command::Store(command)) = args.command {
        let mut out = std::io::stdout().lock();
        return rpol::storecmd::run(&args.config, command, &mut out).map(|()| ExitCode::SUCCESS);
    }
    if args.postfix_config {
        let loaded = config::load(&args.config).map_err(|e| e.to_string())?;
        let text = rpol::postfix_config::render(&loaded.server, &loaded.policy, &args.config);
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.check_config {
        let serving = if args.stdio {
            config::Serving::Spawned
        } else {
            config::Serving::Listener
        };
        return match config::check(&args.config, serving, args.user.as_deref()) {
            Ok(loaded) => {
                let sources = &loaded.policy.site.sources;
                if !sources.is_empty() {
                    println!("{}: site facts:", args.config.display());
                    for line in sources {
                        println!("  {line}");
                    }
                }
                for warning in loaded.policy.warnings() {
                    eprintln!("{}: warning: {warning}", args.config.display());
                }
                check_egress(&args.config, &loaded.policy)?;
                println!("{}: ok", args.config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                Ok(ExitCode::FAILURE)
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    if let Some(file) = args.test_request {
        log::init(log::Target::Stderr);
        let config::Loaded {
            server: settings,
            policy,
        } = config::load(&args.config).map_err(|e| e.to_string())?;
        let state = server::runtime_state(&policy).map_err(|e| e.to_string())?;
        let input: Box<dyn std::io::Read> = if file == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(&file).map_err(|e| format!("{file}: {e}"))?)
        };
        let mut out = std::io::stdout().lock();
        let mut trace = std::io::stderr().lock();
        return runtime
            .block_on(rpol::testreq::run(
                &policy,
                &state,
                &settings.error_action,
                input,
                &mut out,
                &mut trace,
            ))
            .map(|_| ExitCode::SUCCESS)
            .map_err(|e| e.to_string());
    }
    log::init(if args.stdio || args.syslog {
        log::Target::Syslog
    } else if args.journal || log::stderr_is_journal() {
        log::Target::Journal
    } else {
        log::Target::Stderr
    });
    if args.stdio {
        return runtime
            .block_on(server::run_stdio(args.config, args.user))
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string());
    }
    let base = std::env::current_dir().unwrap_or_default();
    let listen = args
        .listen
        .iter()
        .map(|a| ListenAddr::parse(a, &base).map_err(|e| format!("--listen {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    runtime
        .block_on(server::run(ServeOptions {
            config_path: args.config,
            listen,
            systemd,
            user: args.user,
        }))
        .map(|()| ExitCode::SUCCESS)
        .map_err(|e| e.to_string())
}
