//! What `rpol --postfix-config` prints for the package's configuration, and
//! the places that show it: README.md (between [`BEGIN`] and [`END`]) and
//! the example file the package ships. Shared by the generator
//! (`cargo run --example postfix_lines`) and `tests/packaging.rs`, which
//! fails while either place is out of date.

use std::path::{Path, PathBuf};

/// The package's policy.toml and where it is installed.
pub const PACKAGED_POLICY: &str = "packaging/policy.toml";
pub const INSTALLED_POLICY: &str = "/etc/rpol/policy.toml";
/// The example file the package ships in /usr/share/doc/rpol/examples/.
pub const EXAMPLE: &str = "packaging/postfix-config.txt";
pub const README: &str = "README.md";
/// The markers around the lines in README.md.
pub const BEGIN: &str =
    "<!-- begin: rpol --postfix-config (cargo run --example postfix_lines) -->\n";
pub const END: &str = "<!-- end: rpol --postfix-config -->\n";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `rpol --postfix-config` for the installed package's policy.toml (loaded
/// from the source tree, whose tables are the ones the package installs).
pub fn packaged() -> Result<String, String> {
    let root = root();
    // The lines do not depend on the site facts: read them from the tests'
    // Postfix directory, not this host's /etc/postfix.
    let text = std::fs::read_to_string(root.join(PACKAGED_POLICY))
        .map_err(|e| format!("{PACKAGED_POLICY}: {e}"))?
        .replace(
            "postfix = \"/etc/postfix\"",
            &format!("postfix = \"{}\"", root.join("tests/postfix").display()),
        );
    let loaded = rpol::config::load_str(&root.join("policy.toml"), &text)
        .map_err(|e| format!("{PACKAGED_POLICY}: {e}"))?;
    Ok(rpol::postfix_config::render(
        &loaded.server,
        &loaded.policy,
        Path::new(INSTALLED_POLICY),
    ))
}

/// `readme` with `lines` between the markers, in a code block; `None`
/// when the markers are missing.
pub fn readme_with(readme: &str, lines: &str) -> Option<String> {
    let start = readme.find(BEGIN)? + BEGIN.len();
    let end = start + readme[start..].find(END)?;
    Some(format!(
        "{}```\n{lines}```\n{}",
        &readme[..start],
        &readme[end..]
    ))
}
