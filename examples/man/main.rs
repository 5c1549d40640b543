//! Builds the manual pages: `cargo run --example man` writes man/rpol.8
//! from the clap definition (`rpol::cli`) and checks man/rpol-policy.toml.5,
//! written by hand, against the config schema. `cargo test` fails while
//! either is out of date (tests/man.rs); `cargo deb` gzips and ships both.

mod keys;
mod page;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rpol_8 = root.join(page::RPOL_8);
    if let Err(e) = std::fs::write(&rpol_8, page::render()) {
        eprintln!("man: {}: {e}", rpol_8.display());
        return ExitCode::FAILURE;
    }
    println!("{}: written", rpol_8.display());
    let policy_5 = root.join(page::POLICY_TOML_5);
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let texts = read(&root.join(page::SCHEMA)).and_then(|s| Ok((s, read(&policy_5)?)));
    let (schema, roff) = match texts {
        Ok(t) => t,
        Err(e) => {
            eprintln!("man: {e}");
            return ExitCode::FAILURE;
        }
    };
    let problems = keys::problems(&schema, &roff);
    for p in &problems {
        eprintln!("man: {}: {p}", policy_5.display());
    }
    if !problems.is_empty() {
        return ExitCode::FAILURE;
    }
    println!(
        "{}: every key of policy.toml documented",
        policy_5.display()
    );
    ExitCode::SUCCESS
}
