//! The keys of policy.toml (read from src/config/schema.rs, the serde
//! shape) against the entries of rpol-policy.toml(5), so that the hand-
//! written page documents every key, under its own table, and no key that
//! does not exist. Used by `cargo run --example man` and tests/man.rs.

use std::collections::{BTreeMap, BTreeSet};

/// The page's subsection (`.SS` line) that documents each schema struct.
/// `ConfigFile`'s fields are the tables themselves.
const SECTIONS: &[(&str, &str)] = &[
    ("ServerSection", "[server]"),
    ("SiteSection", "[site]"),
    ("ForeignSenderSection", "[[site.foreign_sender]]"),
    ("PostfixSection", "[postfix]"),
    ("DnsSection", "[dns]"),
    ("SpfSection", "[spf]"),
    ("StoreSection", "[store]"),
    ("GreylistSection", "[greylist]"),
    ("DnsblSection", "[dnsbl]"),
    (
        "SpfActionsSection",
        "[spf.mail_from], [spf.helo], [outbound_spf]",
    ),
    ("SpfMailFromSection", "[spf.mail_from]"),
    ("ProfileSection", "[profile.NAME]"),
    ("MatchSection", "[profile.NAME.match]"),
    ("MetricsSection", "[metrics]"),
    ("LogSection", "[log]"),
    ("RateLimitSection", "[[rate_limit]]"),
];

/// Every `pub struct` of schema.rs with its keys (serde renames applied).
pub fn schema(schema_rs: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut rename: Option<String> = None;
    for line in schema_rs.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            out.insert(name.clone(), BTreeSet::new());
            current = Some(name);
        } else if line == "}" {
            current = None;
        } else if let Some(name) = &current {
            if let Some(r) = line.strip_prefix("#[serde(rename = \"") {
                rename = r.split('"').next().map(String::from);
            } else if let Some(field) = line.strip_prefix("pub ") {
                let field: String = field
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let key = rename.take().unwrap_or(field);
                out.get_mut(name).expect("inserted above").insert(key);
            }
        }
    }
    out
}

/// The keys the page documents, per `.SS` subsection: the `\fBkey\fR`
/// words that start the line after each `.TP`.
pub fn page(roff: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut after_tp = false;
    for line in roff.lines() {
        if let Some(ss) = line.strip_prefix(".SS ") {
            let ss = ss.trim().trim_matches('"').to_string();
            out.entry(ss.clone()).or_default();
            section = Some(ss);
        } else if line.starts_with(".SH ") {
            section = None;
        } else if line == ".TP" {
            after_tp = true;
            continue;
        } else if after_tp && let Some(s) = &section {
            let keys = out.get_mut(s).expect("inserted above");
            let mut rest = line;
            while let Some(r) = rest.strip_prefix("\\fB") {
                let key: String = r
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let Some(r) = r[key.len()..].strip_prefix("\\fR") else {
                    break;
                };
                keys.insert(key);
                match r.strip_prefix(", ") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
        }
        after_tp = false;
    }
    out
}

/// What is wrong with the page, one line each; empty when it documents
/// exactly the schema's keys.
pub fn problems(schema_rs: &str, roff: &str) -> Vec<String> {
    let schema = schema(schema_rs);
    let page = page(roff);
    let mut out = Vec::new();
    let mut mapped: BTreeSet<String> = BTreeSet::new();
    for (name, keys) in &schema {
        if name == "ConfigFile" {
            for table in keys {
                let headers: Vec<&String> = page
                    .keys()
                    .filter(|ss| {
                        ss.contains(&format!("[{table}]")) || ss.contains(&format!("[{table}."))
                    })
                    .collect();
                if headers.is_empty() {
                    out.push(format!("table [{table}] has no .SS subsection"));
                }
                // A table without a struct ([tables]: any names) is covered
                // by its subsection alone.
                mapped.extend(headers.into_iter().cloned());
            }
            continue;
        }
        let Some((_, ss)) = SECTIONS.iter().find(|(s, _)| s == name) else {
            out.push(format!(
                "schema struct {name} is new: give it its subsection in examples/man/keys.rs"
            ));
            continue;
        };
        mapped.insert(ss.to_string());
        let Some(documented) = page.get(*ss) else {
            out.push(format!("no .SS {ss} subsection for {name}"));
            continue;
        };
        for key in keys.difference(documented) {
            out.push(format!("{ss} {key}: not documented"));
        }
        for key in documented.difference(keys) {
            out.push(format!("{ss} {key}: documented but not a key of {name}"));
        }
    }
    for ss in page.keys() {
        if ss.starts_with('[') && !mapped.contains(ss) {
            out.push(format!(".SS {ss}: no schema struct maps to it"));
        }
    }
    out
}
