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

/// Where each shipped file lands, from `cargo deb`'s assets (a destination
/// ending in `/` is a directory; `dir/*` ships each file of `dir`).
fn installed_files() -> Vec<(PathBuf, PathBuf)> {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let mut files = Vec::new();
    for asset in manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap()
    {
        let asset = asset.as_array().unwrap();
        let (source, dest) = (asset[0].as_str().unwrap(), asset[1].as_str().unwrap());
        let sources: Vec<PathBuf> = match source.strip_suffix("/*") {
            Some(dir) => std::fs::read_dir(root().join(dir))
                .unwrap()
                .map(|e| PathBuf::from(dir).join(e.unwrap().file_name()))
                .collect(),
            None => vec![PathBuf::from(source)],
        };
        for source in sources {
            let to = match dest.strip_suffix('/') {
                Some(dir) => Path::new("/").join(dir).join(source.file_name().unwrap()),
                None => Path::new("/").join(dest),
            };
            files.push((source, to));
        }
    }
    files
}

/// The relative link targets of a Markdown text (`](target)`), without
/// their `#fragment`; links within the page and URLs left out.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("");
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            links.push(target.to_string());
        }
        rest = &rest[end..];
    }
    links
}

/// `path` with its `.` and `..` steps resolved, without the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Issue 29 item 4: the shipped docs link only to what is shipped, where
/// the link leads once installed (/usr/share/doc/rpol/...).
#[test]
fn shipped_docs_link_only_to_shipped_files() {
    let files = installed_files();
    let installed: Vec<&PathBuf> = files.iter().map(|(_, to)| to).collect();
    let mut broken = Vec::new();
    for (source, to) in &files {
        if source.extension().is_none_or(|e| e != "md") {
            continue;
        }
        for link in relative_links(&read(source.to_str().unwrap())) {
            let target = normalise(&to.parent().unwrap().join(&link));
            if !installed.contains(&&target) {
                broken.push(format!(
                    "{}: ({link}) -> {}",
                    source.display(),
                    target.display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to files the package does not ship (add them to the assets in \
         Cargo.toml, or drop the link):\n{}",
        broken.join("\n")
    );
    // The checker finds links at all: README.md has some.
    assert!(!relative_links(&read("README.md")).is_empty());
}

/// Issue 29 item 4: the synopsis is one phrase that fits Debian's 80
/// columns (cargo-deb cuts a longer one mid-sentence).
#[test]
fn synopsis_fits_one_line() {
    let synopsis = env!("CARGO_PKG_DESCRIPTION");
    assert!(
        synopsis.len() <= 80,
        "{} characters: {synopsis}",
        synopsis.len()
    );
    assert!(
        !synopsis.contains('\n') && !synopsis.ends_with('.'),
        "{synopsis:?}"
    );
}

/// Issue 29 item 4: postrm masks units on removal; postinst must unmask
/// each of them, or a reinstalled package leaves rpol.service masked and
/// every socket activation fails. (.ci/deb.sh installs, removes and
/// installs again for real.)
#[test]
fn postinst_unmasks_every_unit_postrm_masks() {
    let postrm = read("packaging/debian/postrm");
    let postinst = read("packaging/debian/postinst");
    let masked: Vec<&str> = postrm
        .lines()
        .filter_map(|l| l.trim().strip_prefix("deb-systemd-helper mask "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .take_while(|w| w.ends_with(".socket") || w.ends_with(".service"))
        })
        .collect();
    assert!(masked.contains(&"rpol.service"), "postrm masks {masked:?}");
    for unit in masked {
        assert!(
            postinst.lines().any(|l| l
                .trim()
                .starts_with(&format!("deb-systemd-helper unmask {unit} "))),
            "postinst does not unmask {unit}"
        );
    }
}
