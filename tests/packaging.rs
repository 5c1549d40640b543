//! The Debian package's pieces agree with each other and with the source
//! tree: packaging/policy.toml is policy.toml but for the package's
//! [server], which listens where rpol.socket does and runs as rpol.service's
//! user; every file `cargo deb` ships exists; the maintainer scripts parse.
//! .ci/run builds, installs and purges the package itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use rpol::config::{self, ListenAddr};

#[path = "../examples/postfix_lines/lines.rs"]
mod lines;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text without the tables `names` (each from its header to the next
/// table's).
fn outside(text: &str, names: &[&str]) -> String {
    let mut text = text.to_string();
    for name in names {
        let header = format!("\n[{name}]\n");
        let start = text.find(&header).unwrap_or_else(|| panic!("no [{name}]")) + 1;
        let body = start + header.len() - 1;
        let next = text[body..].find("\n[").expect("a table after it");
        text.replace_range(start..body + next + 1, "");
    }
    text
}

/// Table `name` of a config.
fn table(text: &str, name: &str) -> toml::Table {
    let mut doc: toml::Table = toml::from_str(text).unwrap();
    match doc.remove(name) {
        Some(toml::Value::Table(t)) => t,
        _ => panic!("[{name}] is not a table"),
    }
}

/// `[server]` of a config, without the keys the package sets its own way.
fn server_without_package_keys(text: &str) -> toml::Table {
    let mut server = table(text, "server");
    for key in [
        "listen",
        "socket_mode",
        "socket_owner",
        "socket_group",
        "user",
        "group",
    ] {
        server.remove(key);
    }
    server
}

#[test]
fn packaged_policy_toml_is_the_shipped_one_but_for_server_and_site() {
    let shipped = read("policy.toml");
    let packaged = read("packaging/policy.toml");
    assert!(
        outside(&shipped, &["server", "site"]) == outside(&packaged, &["server", "site"]),
        "packaging/policy.toml differs from policy.toml outside [server] and [site]: \
         copy the change (diff policy.toml packaging/policy.toml)"
    );
    assert_eq!(
        server_without_package_keys(&shipped),
        server_without_package_keys(&packaged),
        "[server] differs beyond listen, socket_*, user and group"
    );
    // The package reads the site facts from Postfix; the source tree's
    // file writes them (it runs where there may be no Postfix).
    let mut site = table(&shipped, "site");
    for fact in [
        "domains",
        "mydestination",
        "relay_domains",
        "myorigin",
        "mailboxes",
        "aliases",
        "recipient_delimiter",
    ] {
        site.remove(fact);
    }
    site.insert("postfix".into(), "/etc/postfix".into());
    site.remove("foreign_sender");
    let mut p_site = table(&packaged, "site");
    p_site.remove("foreign_sender");
    assert_eq!(
        site, p_site,
        "[site] differs beyond postfix and the facts it reads"
    );
}

/// `Key=Value` of a unit file (the last one when repeated).
fn unit_value(unit: &str, key: &str) -> String {
    read(&format!("packaging/{unit}"))
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("{unit}: no {key}="))
        .to_string()
}

#[test]
fn packaged_policy_toml_serves_the_socket_of_the_units() {
    // Loaded as if it lay in the source tree, so that its tables resolve.
    let path = root().join("policy.toml");
    // The site facts from the tests' Postfix directory, not this host's.
    let text = read("packaging/policy.toml").replace(
        "postfix = \"/etc/postfix\"",
        concat!(
            "postfix = \"",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/postfix\""
        ),
    );
    let loaded =
        config::load_str(&path, &text).unwrap_or_else(|e| panic!("packaging/policy.toml: {e}"));
    let server = &loaded.server;
    let socket = unit_value("rpol.socket", "ListenStream");
    assert_eq!(server.listen, [ListenAddr::Unix(PathBuf::from(&socket))]);
    assert_eq!(
        rpol::postfix_config::endpoint(server),
        "unix:private/rpol",
        "Postfix's check_policy_service name of {socket}"
    );
    assert_eq!(
        server.socket_owner.as_deref(),
        Some(unit_value("rpol.socket", "SocketUser").as_str())
    );
    assert_eq!(
        server.socket_group.as_deref(),
        Some(unit_value("rpol.socket", "SocketGroup").as_str())
    );
    let mode = unit_value("rpol.socket", "SocketMode");
    assert_eq!(server.socket_mode, u32::from_str_radix(&mode, 8).unwrap());
    assert_eq!(
        server.user.as_deref(),
        Some(unit_value("rpol.service", "User").as_str())
    );
    assert_eq!(
        unit_value("rpol.service", "ExecStart"),
        format!("/usr/sbin/rpol --config {}", config::DEFAULT_CONFIG)
    );
}

#[test]
fn every_file_the_deb_ships_exists() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().unwrap();
    let mut dests = Vec::new();
    for asset in assets {
        let asset = asset.as_array().unwrap();
        let (source, dest) = (asset[0].as_str().unwrap(), asset[1].as_str().unwrap());
        dests.push(dest.to_string());
        if source.starts_with("target/release/") {
            continue;
        }
        match source.strip_suffix("/*") {
            Some(dir) => assert!(
                std::fs::read_dir(root().join(dir)).unwrap().count() > 0,
                "{source}: empty"
            ),
            None => assert!(root().join(source).is_file(), "{source}: missing"),
        }
    }
    for dest in [
        "usr/sbin/",
        "etc/rpol/policy.toml",
        "lib/systemd/system/",
        "usr/share/man/man8/",
        "usr/share/man/man5/",
    ] {
        assert!(dests.iter().any(|d| d == dest), "nothing goes to {dest}");
    }
    for key in ["maintainer-scripts", "changelog"] {
        let path = deb[key].as_str().unwrap();
        assert!(root().join(path).exists(), "{key} {path}: missing");
    }
}

#[test]
fn changelog_names_this_version() {
    let first = read("packaging/debian/changelog");
    let first = first.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("rpol ({}-1) ", env!("CARGO_PKG_VERSION"))),
        "packaging/debian/changelog starts {first:?}: add an entry for this version"
    );
}

#[test]
fn maintainer_scripts_parse() {
    for script in ["postinst", "prerm", "postrm"] {
        let path = root().join("packaging/debian").join(script);
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}: {out:?}", path.display());
        assert!(is_executable(&path), "{}: not executable", path.display());
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Issue 25 item 1: `--postfix-config` is the one source of the Postfix
/// lines. README.md and the package's example file show exactly what it
/// prints for the package's policy.toml.
#[test]
fn readme_and_the_package_show_what_postfix_config_prints() {
    let text = lines::packaged().unwrap();
    let hint = "out of date: run `cargo run --example postfix_lines`";
    assert!(read(lines::EXAMPLE) == text, "{} {hint}", lines::EXAMPLE);
    let readme = read(lines::README);
    assert!(
        lines::readme_with(&readme, &text).as_deref() == Some(readme.as_str()),
        "README.md {hint}"
    );
}
