//! The shape of src/: its top-level modules form layers, and a module
//! imports only modules of lower layers, so data flows one way (DESIGN.md,
//! ARCHITECTURE.md). A new module must be given a layer here.
//!
//! The guard parses each file as Rust (syn), so it sees what a line-by-line
//! reading misses: a `use crate::{...}` that rustfmt wrapped over several
//! lines, a path that climbs with `super::` to the crate root and down into
//! another module, a path used inline without a `use`, and a path inside a
//! macro's arguments. Comments and strings are not code and are not read.

use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::Visit;

/// Lowest first. A module may use any module of a lower layer, none of its
/// own layer or above.
const LAYERS: &[&[&str]] = &[
    // Helpers every layer shares: clock, lock, throttled warning.
    &["common"],
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
    &["storecmd"],
    &["testreq"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every top-level module that code in the module at `path` (`["state",
/// "store", "embedded"]` for src/state/store/embedded.rs) names, with the
/// line it is named on: the top-level module a `crate::`, `$crate::` or
/// `super::` path leads into. Paths that start anywhere else name an
/// external crate or an item of the module itself.
fn named_modules(path: &[&str], source: &str) -> Result<Vec<(String, usize)>, syn::Error> {
    let file = syn::parse_file(source)?;
    let mut finder = Finder {
        module: path.iter().map(|s| s.to_string()).collect(),
        found: Vec::new(),
    };
    finder.visit_file(&file);
    Ok(finder.found)
}

struct Finder {
    /// Where the code being read sits; inline `mod x { ... }` extend it.
    module: Vec<String>,
    found: Vec<(String, usize)>,
}

impl Finder {
    /// A path given as its segments (`crate`, `super`, `self`, names; a
    /// trailing `*` for a glob) on `line`.
    fn path(&mut self, segments: &[String], line: usize) {
        let named = match segments.first().map(String::as_str) {
            Some("crate" | "$crate") => segments.get(1).cloned(),
            Some("super") => {
                let up = segments.iter().take_while(|s| *s == "super").count();
                match self.module.len().checked_sub(up) {
                    // Still inside a top-level module: that module.
                    Some(depth) if depth > 0 => Some(self.module[0].clone()),
                    // At the crate root: the segment after the supers.
                    Some(_) => segments.get(up).cloned(),
                    None => Some(format!("{} (above the crate root)", segments.join("::"))),
                }
            }
            _ => None,
        };
        if let Some(named) = named {
            self.found.push((named, line));
        }
    }

    /// Paths in a macro's tokens, which syn does not parse: `crate :: x`,
    /// `$crate :: x` and `super :: ... :: x`.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" || id == "super" => {
                    let dollar = i > 0
                        && matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == '$');
                    let mut segments = vec![if dollar {
                        "$crate".to_string()
                    } else {
                        id.to_string()
                    }];
                    let line = id.span().start().line;
                    let mut j = i + 1;
                    // `::` is two puncts, the first joint.
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (tokens.get(j), tokens.get(j + 1))
                    {
                        if !(a.as_char() == ':'
                            && a.spacing() == Spacing::Joint
                            && b.as_char() == ':')
                        {
                            break;
                        }
                        match tokens.get(j + 2) {
                            Some(TokenTree::Ident(next)) => segments.push(next.to_string()),
                            Some(TokenTree::Group(g)) => {
                                // `crate::{a, b}` in a macro: each name.
                                for t in g.stream() {
                                    if let TokenTree::Ident(name) = t {
                                        let mut s = segments.clone();
                                        s.push(name.to_string());
                                        self.path(&s, line);
                                    }
                                }
                            }
                            _ => {}
                        }
                        j += 3;
                    }
                    if segments.len() > 1 {
                        self.path(&segments, line);
                    }
                    i = j.max(i + 1);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// The paths of a `use` tree, each to its end (groups flattened).
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.use_leaf(prefix, n.ident.to_string(), &n.ident),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, r.ident.to_string(), &r.ident),
            syn::UseTree::Glob(g) => {
                let line = g.star_token.spans[0].start().line;
                let mut s = prefix.clone();
                s.push("*".into());
                self.path(&s, line);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &[String], name: String, ident: &syn::Ident) {
        let mut s = prefix.to_vec();
        s.push(name);
        self.path(&s, ident.span().start().line);
    }
}

impl<'ast> Visit<'ast> for Finder {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = p
                .segments
                .first()
                .map_or(0, |s| s.ident.span().start().line);
            self.path(&segments, line);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// What `module` (a top-level module) may not name, among what the code
/// at `path` (inside `module`) names: one line each.
fn wrong_uses(module: &str, path: &[&str], source: &str, shown: &str) -> Vec<String> {
    let own = layer_of(module);
    let named = match named_modules(path, source) {
        Ok(n) => n,
        Err(e) => return vec![format!("{shown}: not Rust the guard can read: {e}")],
    };
    let mut wrong: Vec<String> = Vec::new();
    for (used, line) in named {
        if used == module {
            continue;
        }
        let ok = matches!((own, layer_of(&used)), (Some(own), Some(l)) if l < own);
        let msg = format!("{module} uses {used} ({shown}:{line})");
        if !ok && !wrong.contains(&msg) {
            wrong.push(msg);
        }
    }
    wrong
}

/// The .rs files of a top-level module, each with its module path.
fn files_of(src: &Path, module: &str) -> Vec<(PathBuf, Vec<String>)> {
    let mut files = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        files.push((file, vec![module.to_string()]));
    }
    let mut stack = vec![src.join(module)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut path: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if path.last().is_some_and(|l| l == "mod") {
                    path.pop();
                }
                files.push((p, path));
            }
        }
    }
    files
}

/// The top-level modules lib.rs declares.
fn top_modules(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let lib = syn::parse_file(&lib).expect("src/lib.rs parses");
    lib.items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_modules(&src);
    assert!(modules.len() > 10, "no modules found in lib.rs");
    let mut wrong = Vec::new();
    for module in &modules {
        if layer_of(module).is_none() {
            wrong.push(format!("{module}: not in LAYERS"));
            continue;
        }
        let files = files_of(&src, module);
        assert!(!files.is_empty(), "no file for module {module}");
        for (file, path) in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let shown = file.strip_prefix(&src).unwrap().display().to_string();
            wrong.extend(wrong_uses(module, &path, &text, &format!("src/{shown}")));
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// The guard applied to a snippet as if it were src/dns/cache.rs (`dns`
/// is below `server`, above `protocol`).
fn refused_in_dns(source: &str) -> Vec<String> {
    wrong_uses("dns", &["dns", "cache"], source, "snippet")
}

#[test]
fn a_use_wrapped_over_several_lines_is_seen() {
    let source = "use crate::{\n    protocol::Request,\n    server::Shared,\n};\n";
    assert_eq!(refused_in_dns(source), ["dns uses server (snippet:3)"]);
    let nested = "use crate::{\n    protocol::{\n        Request,\n    },\n    \
                  policy::{Policy, evaluate},\n};\n";
    assert_eq!(refused_in_dns(nested), ["dns uses policy (snippet:5)"]);
}

#[test]
fn a_super_path_to_another_module_is_seen() {
    assert_eq!(
        refused_in_dns("use super::super::server::Shared;\n"),
        ["dns uses server (snippet:1)"]
    );
    // From the top-level file, one `super` is the crate root.
    assert_eq!(
        wrong_uses(
            "dns",
            &["dns"],
            "fn f() {\n    super::config::load();\n}\n",
            "s"
        ),
        ["dns uses config (s:2)"]
    );
    // A glob of the crate root brings every module into scope.
    assert_eq!(
        wrong_uses("dns", &["dns"], "use super::*;\n", "s"),
        ["dns uses * (s:1)"]
    );
    // Within the module itself, super is fine.
    assert!(refused_in_dns("use super::Resolver;\nmod tests {\n    use super::*;\n}\n").is_empty());
}

#[test]
fn a_path_used_inline_is_seen() {
    assert_eq!(
        refused_in_dns("fn f() {\n    let _ = crate::server::x();\n}\n"),
        ["dns uses server (snippet:2)"]
    );
    assert_eq!(
        refused_in_dns("fn f(_: &crate::policy::Policy) {}\n"),
        ["dns uses policy (snippet:1)"]
    );
    // Inside a macro's arguments, which syn leaves as tokens.
    assert_eq!(
        refused_in_dns("fn f() {\n    tracing::info!(\"{}\", crate::server::x());\n}\n"),
        ["dns uses server (snippet:2)"]
    );
    assert_eq!(
        refused_in_dns("macro_rules! m {\n    () => { $crate::rules::x() };\n}\n"),
        ["dns uses rules (snippet:2)"]
    );
}

#[test]
fn lower_layers_comments_and_strings_pass() {
    let source = "//! crate::server is above: a comment.\n\
                  use crate::{protocol::Request, syntax};\n\
                  use super::Resolver;\n\
                  fn f() -> &'static str {\n    crate::log::x();\n    \"crate::server::x\"\n}\n";
    assert!(
        refused_in_dns(source).is_empty(),
        "{:?}",
        refused_in_dns(source)
    );
    // What does not parse is refused, not passed over.
    let broken = refused_in_dns("fn f( {");
    assert!(
        broken.len() == 1 && broken[0].starts_with("snippet: not Rust the guard can read: "),
        "{broken:?}"
    );
}

/// Lines of a file that are not test code: everything before its first
/// `#[cfg(test)]` (the test module closes each file that has one).
fn non_test_lines(text: &str) -> usize {
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .count()
}

/// Issue 26's bound: a file a maintainer reads in one sitting. No file of
/// src/ holds more than 600 lines of code besides its tests.
#[test]
fn no_file_holds_more_than_600_lines_besides_its_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("lib.rs"), src.join("main.rs")];
    for module in top_modules(&src) {
        files.extend(files_of(&src, &module).into_iter().map(|(file, _)| file));
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let n = non_test_lines(&std::fs::read_to_string(file).ok()?);
            (n > 600).then(|| format!("{}: {n} lines", file.display()))
        })
        .collect();
    assert!(files.len() > 50, "too few files found: {}", files.len());
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}

#[test]
fn test_lines_are_not_counted() {
    let text = "fn a() {}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n";
    assert_eq!(non_test_lines(text), 2);
    assert_eq!(non_test_lines("fn a() {}\nfn b() {}\n"), 2);
}
