//! `[site] postfix = DIR`: the site facts Postfix already has, read as
//! Postfix resolves them. The parameters come from `postconf -c DIR -x`
//! (main.cf with `$name` expansion and Postfix's own defaults), the tables
//! they name from their postmap source files.
//!
//! postconf rather than a reader of our own: the defaults ($myhostname from
//! the host name, relay_domains by compatibility_level, virtual_*_domains
//! = $virtual_*_maps, mynetworks from the interfaces) and the expansion
//! rules (`${name?value}`, `${{$a} < {2} ? ...}`) stay Postfix's own.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Where postconf is looked for, in order: the packages' place, then a
/// source build's. Never through `$PATH`: rpol may start as root.
const POSTCONF: &[&str] = &["/usr/sbin/postconf", "/usr/local/sbin/postconf"];

/// How long one postconf run may take. It reads one file and answers in
/// milliseconds; a hung one (main.cf on a dead network mount) must not
/// hold a start or a reload for ever.
const POSTCONF_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of postconf's output (each stream) read: the parameters
/// asked for are a few lines; the cap bounds what a huge main.cf costs.
const MAX_POSTCONF_OUTPUT: u64 = 1 << 20;

/// How often a running postconf is looked at for its exit.
const POSTCONF_POLL: Duration = Duration::from_millis(5);

/// The parameters read, besides the ones that say how to read others.
const PARAMETERS: &[&str] = &[
    "mydestination",
    "virtual_mailbox_domains",
    "virtual_alias_domains",
    "relay_domains",
    "mynetworks",
    "mynetworks_style",
    "virtual_mailbox_maps",
    "virtual_alias_maps",
    "myorigin",
    "recipient_delimiter",
];

/// Map types read from their source file (`hash:/etc/postfix/virtual`
/// is built by postmap from /etc/postfix/virtual).
const SOURCE_MAP_TYPES: &[&str] = &["hash", "lmdb", "cdb", "texthash"];

/// What trusted clients are when Postfix's mynetworks is derived from the
/// interfaces with a style wider than the host: the host itself.
const LOOPBACK: &[&str] = &["127.0.0.0/8", "::1/128"];

/// The parameters of one Postfix configuration directory.
pub(super) struct Parameters {
    pub main_cf: PathBuf,
    values: BTreeMap<String, String>,
    /// Those set in main.cf (postconf -n), rather than defaults.
    explicit: BTreeSet<String>,
}

/// A list's values with the files they were read from (to be watched).
pub(super) struct Listed<T> {
    pub values: Vec<T>,
    pub files: Vec<PathBuf>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            values: Vec::new(),
            files: Vec::new(),
        }
    }
}

impl Parameters {
    /// Runs postconf on `dir`; an error says why nothing could be read.
    pub fn read(dir: &Path) -> Result<Parameters, String> {
        let program = POSTCONF
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "postconf not found (looked for {}): install Postfix's postconf, or remove \
                     postfix and write the site facts in [site]",
                    POSTCONF.join(", ")
                )
            })?;
        Parameters::read_with(program, dir, POSTCONF_TIMEOUT)
    }

    fn read_with(program: &Path, dir: &Path, timeout: Duration) -> Result<Parameters, String> {
        let expanded = postconf(program, dir, &["-x"], timeout)?;
        let explicit = postconf(program, dir, &["-n"], timeout)?;
        let values = name_values(&expanded);
        if let Some(missing) = PARAMETERS.iter().find(|p| !values.contains_key(**p)) {
            return Err(format!(
                "postconf -c {} did not print {missing}",
                dir.display()
            ));
        }
        Ok(Parameters {
            main_cf: dir.join("main.cf"),
            values,
            explicit: name_values(&explicit).into_keys().collect(),
        })
    }

    pub fn get(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }

    /// A domain list (mydestination, relay_domains, ...): names, names in
    /// `/file/name`, and the keys without `@` of a map (Postfix looks a
    /// domain up as a key there).
    pub fn domains(&self, param: &str, instead: &str) -> Result<Listed<String>, String> {
        let mut out = Listed::default();
        for item in items(self.get(param)) {
            match kind(item) {
                Kind::Negated => return Err(negated(param, item, instead)),
                Kind::Map => {
                    let source = map_source(param, item, instead)?;
                    let text = read_file(param, item, &source)?;
                    out.values.extend(
                        crate::tables::access::source_lines(&text)
                            .into_iter()
                            .map(|(_, key, _)| key)
                            .filter(|k| !k.contains('@')),
                    );
                    out.files.push(source);
                }
                Kind::File => {
                    let path = PathBuf::from(item);
                    let text = read_file(param, item, &path)?;
                    out.values.extend(file_words(&text).map(String::from));
                    out.files.push(path);
                }
                Kind::Word => out.values.push(item.to_string()),
            }
        }
        Ok(out)
    }

    /// A map list (virtual_mailbox_maps, virtual_alias_maps): the source
    /// file of each map.
    pub fn maps(&self, param: &str, instead: &str) -> Result<Vec<PathBuf>, String> {
        items(self.get(param))
            .map(|item| match kind(item) {
                Kind::Map => map_source(param, item, instead),
                _ => Err(format!(
                    "{param} = {item}: not a map (type:name): write [site] {instead} instead"
                )),
            })
            .collect()
    }

    /// mynetworks as trusted clients, and why, when Postfix's own value is
    /// not taken: a value main.cf does not set is derived from the
    /// interfaces, and only mynetworks_style = host (the machine itself) is
    /// trusted as derived; a LAN nobody wrote down never is.
    pub fn mynetworks(&self) -> Result<(Listed<IpNet>, Option<String>), String> {
        const PARAM: &str = "mynetworks";
        const INSTEAD: &str = "mynetworks = [\"NETWORK\", ...]";
        let style = self.get("mynetworks_style");
        if !self.explicit.contains(PARAM) && style != "host" {
            let nets = LOOPBACK.iter().filter_map(|n| n.parse().ok()).collect();
            let why = format!(
                "Postfix's {PARAM} ({}) is derived from mynetworks_style = {style}, not trusted: \
                 write [site] mynetworks to trust more than loopback",
                self.get(PARAM)
            );
            return Ok((
                Listed {
                    values: nets,
                    files: Vec::new(),
                },
                Some(why),
            ));
        }
        let mut out = Listed::default();
        let mut words: Vec<(String, String)> = Vec::new();
        for item in items(self.get(PARAM)) {
            match kind(item) {
                _ if network(item).is_some() => words.push((item.into(), item.into())),
                Kind::File => {
                    let path = PathBuf::from(item);
                    let text = read_file(PARAM, item, &path)?;
                    words.extend(file_words(&text).map(|w| (item.to_string(), w.to_string())));
                    out.files.push(path);
                }
                Kind::Negated => return Err(negated(PARAM, item, INSTEAD)),
                Kind::Map => {
                    return Err(format!(
                        "{PARAM} = {item}: rpol reads networks, not tables, in {PARAM}: \
                         write [site] {INSTEAD} instead"
                    ));
                }
                Kind::Word => words.push((item.into(), item.into())),
            }
        }
        for (item, word) in words {
            match network(&word) {
                Some(net) => out.values.push(net),
                None => {
                    return Err(format!(
                        "{PARAM} = {item}: {word:?} is not a network: write [site] {INSTEAD} instead"
                    ));
                }
            }
        }
        Ok((out, None))
    }
}

/// Runs `postconf -c DIR ARGS PARAMETERS` with nothing of rpol's
/// environment; its stdout, or why it failed.
fn postconf(
    program: &Path,
    dir: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<String, String> {
    let mut child = Command::new(program)
        .arg("-c")
        .arg(dir)
        .args(args)
        .args(PARAMETERS)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("postconf: cannot run {}: {e}", program.display()))?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(pipe) = pipe {
                let _ = Read::take(pipe, MAX_POSTCONF_OUTPUT).read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POSTCONF_POLL),
            result => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match result {
                    Err(e) => format!("postconf: {e}"),
                    _ => format!(
                        "postconf -c {} took longer than {}s",
                        dir.display(),
                        timeout.as_secs()
                    ),
                });
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let why = String::from_utf8_lossy(&stderr);
        let why = why
            .lines()
            .find(|l| l.contains("fatal"))
            .or_else(|| why.lines().last())
            .unwrap_or("no message");
        // postconf names itself as it was run.
        let why = why
            .strip_prefix(&format!("{}: ", program.display()))
            .or_else(|| why.strip_prefix("postconf: "))
            .unwrap_or(why);
        return Err(format!("postconf: {} ({status})", why.trim()));
    }
    String::from_utf8(stdout).map_err(|_| "postconf: output is not UTF-8".to_string())
}

/// `name = value` lines.
fn name_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The items of a Postfix list (separated by commas and white space).
fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([',', ' ', '\t', '\r', '\n'])
        .filter(|s| !s.is_empty())
}

/// The words of a `/file/name` a list names (`#` starts a comment).
fn file_words(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(items)
}

enum Kind {
    Word,
    File,
    Map,
    Negated,
}

fn kind(item: &str) -> Kind {
    if item.starts_with('!') {
        return Kind::Negated;
    }
    if item.starts_with('/') {
        return Kind::File;
    }
    match item.split_once(':') {
        Some((t, _))
            if t.starts_with(|c: char| c.is_ascii_lowercase())
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            Kind::Map
        }
        _ => Kind::Word,
    }
}

fn negated(param: &str, item: &str, instead: &str) -> String {
    format!("{param} = {item}: rpol does not read negated patterns: write [site] {instead} instead")
}

/// The source file of a map rpol can read; `proxy:` reads the same file.
fn map_source(param: &str, item: &str, instead: &str) -> Result<PathBuf, String> {
    let spec = item.strip_prefix("proxy:").unwrap_or(item);
    match spec.split_once(':') {
        Some((kind, name)) if SOURCE_MAP_TYPES.contains(&kind) => {
            let path = PathBuf::from(name);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(format!(
                    "{param} = {item}: {name:?} is not an absolute path (Postfix reads it from \
                     wherever its daemon runs)"
                ))
            }
        }
        _ => Err(format!(
            "{param} = {item}: rpol reads {} maps (from their source file): write [site] \
             {instead} instead",
            list_words(SOURCE_MAP_TYPES)
        )),
    }
}

/// "a, b, c and d".
fn list_words(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn read_file(param: &str, item: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{param} = {item}: {}: cannot read: {e}", path.display()))
}

/// A network as mynetworks writes it: `a.b.c.d/n`, `[ipv6]/n`, or an
/// address; host bits are cleared, as Postfix does.
fn network(word: &str) -> Option<IpNet> {
    let (addr, len) = match word.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (word, None),
    };
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = addr.parse().ok()?;
    let len = match len {
        Some(l) => l.parse().ok()?,
        None if ip.is_ipv4() => 32,
        None => 128,
    };
    IpNet::new(ip, len).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_as_mynetworks_writes_them() {
        for (word, want) in [
            ("127.0.0.0/8", Some("127.0.0.0/8")),
            ("[::1]/128", Some("::1/128")),
            ("[fe80::]/64", Some("fe80::/64")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("192.0.2.1", Some("192.0.2.1/32")),
            ("[2001:db8::1]", Some("2001:db8::1/128")),
            ("10.0.0.0/33", None),
            ("example.com", None),
        ] {
            assert_eq!(
                network(word).map(|n| n.to_string()).as_deref(),
                want,
                "{word}"
            );
        }
    }

    #[test]
    fn items_and_kinds() {
        let v: Vec<&str> = items(" a.example,b.example\thash:/x , /f ").collect();
        assert_eq!(v, ["a.example", "b.example", "hash:/x", "/f"]);
        assert!(matches!(kind("hash:/etc/postfix/x"), Kind::Map));
        assert!(matches!(kind("proxy:mysql:/x"), Kind::Map));
        assert!(matches!(kind("/etc/postfix/x"), Kind::File));
        assert!(matches!(kind("!a.example"), Kind::Negated));
        assert!(matches!(kind("a.example"), Kind::Word));
        assert_eq!(
            map_source("p", "proxy:hash:/a/b", "x"),
            Ok(PathBuf::from("/a/b"))
        );
        assert!(map_source("p", "hash:rel", "x").is_err());
        assert_eq!(
            map_source("p", "mysql:/m.cf", "aliases"),
            Err(
                "p = mysql:/m.cf: rpol reads hash, lmdb, cdb and texthash maps (from their \
                 source file): write [site] aliases instead"
                    .into()
            )
        );
    }

    /// postconf missing, failing, or hanging: an error each, never an
    /// empty list; a hung one is killed at its deadline.
    #[test]
    fn postconf_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Parameters::read_with(
            Path::new("/nonexistent/postconf"),
            dir.path(),
            Duration::from_secs(1),
        );
        assert!(
            missing.is_err_and(|e| e.starts_with("postconf: cannot run /nonexistent/postconf")),
        );
        let script = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let failing = script(
            "fail",
            "echo 'postconf: fatal: open /x/main.cf: gone' >&2; exit 1",
        );
        let got = Parameters::read_with(&failing, dir.path(), Duration::from_secs(5));
        assert_eq!(
            got.err().as_deref(),
            Some("postconf: fatal: open /x/main.cf: gone (exit status: 1)")
        );
        let hanging = script("hang", "exec sleep 30");
        let start = Instant::now();
        let got = Parameters::read_with(&hanging, dir.path(), Duration::from_millis(300));
        assert!(got.is_err_and(|e| e.contains("took longer than")));
        assert!(start.elapsed() < Duration::from_secs(5));
        // Its environment is its own: nothing of rpol's leaks in.
        let env = script("env", "env | grep -q CARGO && exit 3; exit 4");
        let got = Parameters::read_with(&env, dir.path(), Duration::from_secs(5));
        assert!(got.is_err_and(|e| e.contains("exit status: 4")));
    }
}
