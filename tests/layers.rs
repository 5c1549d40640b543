//! The shape of src/: its top-level modules form layers, and a module
//! imports only modules of lower layers, so data flows one way (DESIGN.md,
//! ARCHITECTURE.md). A new module must be given a layer here.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first. A module may use any module of a lower layer, none of its
/// own layer or above.
const LAYERS: &[&[&str]] = &[
    // Words: the request, syntax, the vocabulary of verdicts, logging.
    &["protocol", "syntax", "log", "bounded"],
    &["vocab"],
    // Facts and lookups: DNS, tables, SPF evaluation.
    &["dns", "tables"],
    &["spf", "greylist", "dnsbl"],
    // What rules read: the site facts and the runtime state.
    &["site", "state"],
    &["rules"],
    // The compiled policy and its chain.
    &["policy"],
    // The loader.
    &["config"],
    // Front ends (cli: the command line, read by the binary and the man page).
    &["server", "postfix_config", "cli"],
    &["testreq"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::NAME` a module's code (not its comments) names.
fn imports(dir: &Path, module: &str) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    let file = dir.join(format!("{module}.rs"));
    if file.exists() {
        files.push(file);
    }
    let sub = dir.join(module);
    if sub.is_dir() {
        let mut stack = vec![sub];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for part in code.split("crate::").skip(1) {
                // `crate::{a, b::c}` names several modules at once.
                let names: Vec<&str> = match part.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                    None => vec![part],
                };
                for name in names {
                    let name: String = name
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        out.entry(name)
                            .or_insert_with(|| format!("{}:{}", f.display(), n + 1));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    assert!(modules.len() > 10, "no modules found in lib.rs");
    let mut wrong = Vec::new();
    for module in &modules {
        let Some(own) = layer_of(module) else {
            wrong.push(format!("{module}: not in LAYERS"));
            continue;
        };
        for (used, at) in imports(&src, module) {
            match layer_of(&used) {
                Some(l) if l < own => {}
                _ => wrong.push(format!("{module} uses {used} ({at})")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}
