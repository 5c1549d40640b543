//! The manual pages stay true: man/rpol.8 is what `cargo run --example man`
//! generates from the clap definition now, and man/rpol-policy.toml.5
//! documents every key of the config schema, and only those.

#[path = "../examples/man/keys.rs"]
mod keys;
#[path = "../examples/man/page.rs"]
mod page;

use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn rpol_8_is_generated_from_the_clap_definition() {
    let generated = String::from_utf8(page::render()).unwrap();
    assert!(
        read(page::RPOL_8) == generated,
        "{} is out of date: run `cargo run --example man`",
        page::RPOL_8
    );
    assert!(generated.contains("\\-\\-check\\-config"), "{generated}");
    assert!(generated.contains("\n.TH rpol 8 "), "{generated}");
}

#[test]
fn rpol_policy_toml_5_documents_every_key() {
    let problems = keys::problems(&read(page::SCHEMA), &read(page::POLICY_TOML_5));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_key_check_sees_what_is_missing() {
    let schema = "pub struct ConfigFile {\n    pub server: ServerSection,\n}\n\
                  pub struct ServerSection {\n    pub listen: Option<X>,\n    \
                  #[serde(rename = \"match\")]\n    pub matcher: Option<Y>,\n}\n";
    let page = ".SH TABLES\n.SS [server]\n.TP\n\\fBlisten\\fR = [...]\ntext\n\
                .TP\n\\fBuser\\fR, \\fBgroup\\fR\n";
    assert_eq!(
        keys::problems(schema, page),
        [
            "[server] match: not documented",
            "[server] group: documented but not a key of ServerSection",
            "[server] user: documented but not a key of ServerSection",
        ]
    );
}

#[test]
fn rpol_policy_toml_5_names_this_version() {
    let th = format!(
        ".TH RPOL-POLICY.TOML 5 \"\" \"rpol {}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        read(page::POLICY_TOML_5).contains(&th),
        "{} should carry {th}",
        page::POLICY_TOML_5
    );
}
