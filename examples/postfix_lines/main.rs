//! Writes what `rpol --postfix-config` prints for the package's
//! configuration into README.md (between its markers) and the package's
//! example file: `cargo run --example postfix_lines`. `cargo test` fails
//! while either is out of date (tests/packaging.rs).

mod lines;

use std::process::ExitCode;

fn main() -> ExitCode {
    match write() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postfix_lines: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write() -> Result<(), String> {
    let root = lines::root();
    let text = lines::packaged()?;
    let example = root.join(lines::EXAMPLE);
    std::fs::write(&example, &text).map_err(|e| format!("{}: {e}", example.display()))?;
    println!("{}: written", example.display());
    let readme = root.join(lines::README);
    let old = std::fs::read_to_string(&readme).map_err(|e| format!("{}: {e}", readme.display()))?;
    let new = lines::readme_with(&old, &text).ok_or_else(|| {
        format!(
            "{}: no markers {:?} ... {:?}",
            readme.display(),
            lines::BEGIN,
            lines::END
        )
    })?;
    std::fs::write(&readme, new).map_err(|e| format!("{}: {e}", readme.display()))?;
    println!("{}: written", readme.display());
    Ok(())
}
