//! RFC 7208 conformance: the openspf test suite (release 2014.04, with the
//! 2019.08 additions) run through rpol's SPF path: viaspf over rpol's own
//! `Lookup` (src/spf/lookup.rs) over rpol's cached resolver, against a real
//! DNS server on loopback serving each document's zone data.
//!
//! The suite is kept in the repository, with its licence and changelog, in
//! tests/spf-suite/ (README.md there says where it comes from). A suite that
//! cannot be read fails the run.
//!
//! One test per case (harness = false, libtest-mimic), named
//! `DOCUMENT::CASE` after the suite's description and case name, so a
//! failure names its case, a case can be run alone (`cargo test --test
//! spf_conformance -- record_lookup::spftimeout`), and the cases run in
//! parallel: each has its own DNS server, resolver and caches. A known
//! failure (`KNOWN`) passes while it fails as known and fails once it
//! passes; `the_suite_holds_every_case` counts the cases.
//!
//! Each case is run twice: through `rpol::spf::evaluate` (result and, for
//! fail, the explanation), and through the `check_spf` rule of a policy
//! whose SPF actions all accept, so that the result shows in the prepended
//! `Received-SPF:` header.
//!
//! Conventions of the suite's drivers reproduced here:
//! - `SPF` records are served as TXT (RFC 7208 dropped type SPF, and rpol
//!   only asks for TXT) unless the name has TXT records of its own; `TXT:
//!   NONE` means the name has no TXT record at all.
//! - `TIMEOUT` makes the server silent for that exact name, for every type
//!   the name has no record of (the record lookup tests: a TXT record
//!   present and the SPF query timing out gives the TXT record's result).
//! - Strings are bytes: the YAML escapes `\xEF\xBB\xBF`, `\x80` stand for
//!   those octets, not for the Unicode characters U+00EF ...
//! - An empty `mailfrom` means the HELO identity (`postmaster@helo`).
//! - `explanation: DEFAULT` means no explanation from the domain.

#[path = "support/dns.rs"]
mod dns_server;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dns_server::{TestDns, raw_name};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use rpol::config;
use rpol::dns::{DnsConfig, Resolver};
use rpol::policy::{Policy, evaluate};
use rpol::protocol::Request;
use rpol::spf::{self, Identity, SpfSettings};
use rpol::state::State;
use serde::Deserialize as _;
use serde_yaml::Value;
use viaspf::{ExplanationString, SpfResult};

const SUITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/spf-suite/rfc7208-tests.yml"
);

/// Cases in the suite; a suite file with fewer (or more) fails the test.
const CASES: usize = 203;

/// Cases known to fail, with the reason. Keep it as short as the truth
/// allows: an entry that passes again fails the test too.
const KNOWN: &[(&str /* test name */, &str /* reason */)] = &[(
    // null.example.com has two TXT records: the SPF record and one with no
    // character-string at all (RDLENGTH 0; illegal, RFC 1035 3.3.14: "One or
    // more <character-string>s"; the suite: "SPF should not crash").
    // hickory-proto 0.26 refuses any non-OPT record of length 0 in a
    // non-UPDATE message while decoding the message (op/message.rs,
    // Message::read_records, DecodeError::InvalidEmptyRecord), with no option
    // to turn that off, inside hickory-net's UDP client (TCP drops the
    // message and times out); rpol's DNS layer only ever sees the error,
    // never the records. Getting past it would take a DNS wire client or a
    // packet rewriter of rpol's own. rpol does not crash: temperror.
    "null-text",
    "a TXT record of RDLENGTH 0 makes hickory-proto 0.26 refuse the whole response (\"unexpected record with \
     length 0 in non-update message\"), with no option to accept it: temperror instead of the other record's pass",
)];

/// Time for one try of a DNS query (the TIMEOUT cases wait this long).
const DNS_TIMEOUT: Duration = Duration::from_secs(1);
/// viaspf's overall time for one evaluation.
const SPF_TIMEOUT: Duration = Duration::from_secs(2);
/// `receiver=` and the `%{r}` macro.
const RECEIVER: &str = "receiver.test";

/// TTL of the served records.
const TTL: u32 = 300;

#[derive(Clone)]
struct Case {
    name: String,
    spec: String,
    helo: String,
    host: String,
    mailfrom: String,
    /// Acceptable results.
    results: Vec<String>,
    explanation: Option<String>,
}

struct Document {
    description: String,
    cases: Vec<Case>,
    records: Vec<Record>,
    /// Names served silently, but for the types listed.
    timeouts: Vec<(Name, Vec<RecordType>)>,
    /// Zone data the server cannot serve as written.
    unservable: Vec<String>,
}

/// A scalar as text: strings as they are, numbers (`spec: 3.3`) printed.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn field(test: &Value, key: &str) -> String {
    test.get(key).and_then(text).unwrap_or_default()
}

/// The octets a suite string stands for: its characters as Latin-1 when
/// they all fit (the YAML `\xNN` escapes are octets), else UTF-8.
fn octets(s: &str) -> Vec<u8> {
    if s.chars().all(|c| u32::from(c) <= 0xff) {
        s.chars().map(|c| u32::from(c) as u8).collect()
    } else {
        s.as_bytes().to_vec()
    }
}

/// The character-strings of a TXT/SPF entry: one string, or a list.
fn strings(v: &Value) -> Option<Vec<Vec<u8>>> {
    match v {
        Value::Sequence(items) => items.iter().map(|i| text(i).map(|s| octets(&s))).collect(),
        other => text(other).map(|s| vec![octets(&s)]),
    }
}

/// TXT rdata; character-strings longer than 255 octets are split, as a
/// zone file would have to.
fn txt(strings: &[Vec<u8>]) -> RData {
    let mut parts: Vec<&[u8]> = Vec::new();
    for s in strings {
        if s.is_empty() {
            parts.push(s);
        }
        parts.extend(s.chunks(255));
    }
    RData::TXT(TXT::from_bytes(parts))
}

fn parse_document(doc: &Value) -> Document {
    let description = field(doc, "description");
    let mut cases = Vec::new();
    if let Some(tests) = doc.get("tests").and_then(Value::as_mapping) {
        for (name, test) in tests {
            let results = match test.get("result") {
                Some(Value::Sequence(list)) => list.iter().filter_map(text).collect(),
                Some(v) => text(v).into_iter().collect(),
                None => Vec::new(),
            };
            cases.push(Case {
                name: text(name).unwrap_or_default(),
                spec: field(test, "spec"),
                helo: field(test, "helo"),
                host: field(test, "host"),
                mailfrom: field(test, "mailfrom"),
                results,
                explanation: test.get("explanation").and_then(text),
            });
        }
    }

    let mut records = Vec::new();
    let mut timeouts = Vec::new();
    let mut unservable = Vec::new();
    let zonedata = doc.get("zonedata").and_then(Value::as_mapping);
    for (owner_text, entries) in zonedata.into_iter().flatten() {
        let owner_text = text(owner_text).unwrap_or_default();
        let Some(owner) = raw_name(&owner_text) else {
            unservable.push(format!("{owner_text:?}: not a DNS name"));
            continue;
        };
        let mut spf_txt = Vec::new();
        let mut txt_records = Vec::new();
        let mut txt_none = false;
        let mut timeout = false;
        let mut others: Vec<RData> = Vec::new();
        for entry in entries.as_sequence().into_iter().flatten() {
            if entry.as_str() == Some("TIMEOUT") {
                timeout = true;
                continue;
            }
            let Some(map) = entry.as_mapping().filter(|m| m.len() == 1) else {
                unservable.push(format!("{owner_text}: entry {entry:?}"));
                continue;
            };
            let (kind, value) = map.iter().next().expect("one entry");
            let kind = text(kind).unwrap_or_default();
            let data = match kind.as_str() {
                "SPF" | "TXT" => match strings(value) {
                    Some(s) if kind == "TXT" && s == [b"NONE".to_vec()] => {
                        txt_none = true;
                        None
                    }
                    Some(s) if kind == "TXT" => {
                        txt_records.push(s);
                        None
                    }
                    Some(s) => {
                        spf_txt.push(s);
                        None
                    }
                    None => Some(Err(())),
                },
                "A" => Some(
                    text(value)
                        .and_then(|t| t.parse::<Ipv4Addr>().ok())
                        .map(|a| RData::A(A(a)))
                        .ok_or(()),
                ),
                "AAAA" => Some(
                    text(value)
                        .and_then(|t| t.parse::<Ipv6Addr>().ok())
                        .map(|a| RData::AAAA(AAAA(a)))
                        .ok_or(()),
                ),
                "MX" => Some(
                    value
                        .as_sequence()
                        .filter(|s| s.len() == 2)
                        .and_then(|s| {
                            let pref = s[0].as_u64().and_then(|p| u16::try_from(p).ok())?;
                            let host = text(&s[1]).and_then(|h| host_name(&h))?;
                            Some(RData::MX(MX::new(pref, host)))
                        })
                        .ok_or(()),
                ),
                "PTR" => Some(
                    text(value)
                        .and_then(|h| host_name(&h))
                        .map(|n| RData::PTR(PTR(n)))
                        .ok_or(()),
                ),
                "CNAME" => Some(
                    text(value)
                        .and_then(|h| host_name(&h))
                        .map(|n| RData::CNAME(CNAME(n)))
                        .ok_or(()),
                ),
                _ => Some(Err(())),
            };
            match data {
                None => {}
                Some(Ok(rdata)) => others.push(rdata),
                Some(Err(())) => {
                    unservable.push(format!("{owner_text}: {kind} {value:?}"));
                }
            }
        }
        // SPF records double as TXT unless the name has TXT of its own
        // (or explicitly none).
        let txts = if !txt_records.is_empty() {
            txt_records
        } else if txt_none {
            Vec::new()
        } else {
            spf_txt
        };
        let mut types = Vec::new();
        for s in &txts {
            records.push(Record::from_rdata(owner.clone(), TTL, txt(s)));
            types.push(RecordType::TXT);
        }
        for rdata in others {
            types.push(rdata.record_type());
            records.push(Record::from_rdata(owner.clone(), TTL, rdata));
        }
        if timeout {
            types.dedup();
            timeouts.push((owner, types));
        }
    }
    Document {
        description,
        cases,
        records,
        timeouts,
        unservable,
    }
}

/// A host name of the zone data ("" or "." is the root).
fn host_name(text: &str) -> Option<Name> {
    if text.is_empty() || text == "." {
        Some(Name::root())
    } else {
        raw_name(text)
    }
}

/// How a case came out on one path.
struct Outcome {
    got: String,
    ok: bool,
    detail: String,
}

/// The identity a case checks: MAIL FROM, or HELO for the null sender.
fn identity(case: &Case) -> (Identity, &str) {
    if case.mailfrom.is_empty() {
        (Identity::Helo, case.helo.as_str())
    } else {
        (Identity::MailFrom, case.mailfrom.as_str())
    }
}

async fn through_evaluate(resolver: &Resolver, settings: &SpfSettings, case: &Case) -> Outcome {
    let Ok(ip) = case.host.parse::<IpAddr>() else {
        return Outcome {
            got: format!("bad host {:?}", case.host),
            ok: false,
            detail: String::new(),
        };
    };
    let (identity, sender) = identity(case);
    let e = spf::evaluate(resolver, settings, ip, identity, sender, &case.helo, true).await;
    let mut got = e.result_name().to_string();
    let mut ok = case.results.iter().any(|r| r.eq_ignore_ascii_case(&got));
    if let (true, Some(want), SpfResult::Fail(exp)) = (ok, &case.explanation, &e.result) {
        let matches = match exp {
            ExplanationString::Default => want == "DEFAULT",
            ExplanationString::External(text) => want == text,
        };
        if !matches {
            ok = false;
            got = match exp {
                ExplanationString::Default => "fail, default explanation".into(),
                ExplanationString::External(text) => format!("fail, explanation {text:?}"),
            };
        }
    }
    let mut detail = String::new();
    if let Some(m) = &e.mechanism {
        detail.push_str(&format!(" matched {m};"));
    }
    if let Some(p) = &e.problem {
        detail.push_str(&format!(" problem: {p};"));
    }
    for l in &e.lookups {
        detail.push_str(&format!("\n        DNS {l}"));
    }
    Outcome { got, ok, detail }
}

/// The policy of one document: check_spf alone, every result accepted, so
/// the result shows in the header; no skips, no caching of results.
fn policy(dns: &TestDns) -> Policy {
    let accept_all = "pass = \"accept\"\nfail = \"accept\"\nsoftfail = \"accept\"\n\
                      neutral = \"accept\"\nnone = \"accept\"\ntemperror = \"accept\"\n\
                      permerror = \"accept\"\n";
    let text = format!(
        "[dns]\nnameservers = [\"{addr}\"]\ntimeout = \"{dns}ms\"\nattempts = 1\nmin_ttl = \"0s\"\n\
         [spf]\ncheck_helo = false\nreceiver = \"{RECEIVER}\"\nskip_mynetworks = false\n\
         skip_authenticated = false\ntimeout = \"{spf}ms\"\ncache_ttl = \"0s\"\n\
         [spf.mail_from]\n{accept_all}[spf.helo]\n{accept_all}\
         [profile.conformance]\nrecipient = [\"check_spf\"]\n",
        addr = dns.addr,
        dns = DNS_TIMEOUT.as_millis(),
        spf = SPF_TIMEOUT.as_millis(),
    );
    config::load_str(Path::new("conformance.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .policy
}

async fn through_rule(policy: &Policy, state: &State, case: &Case) -> Outcome {
    let request = Request::from_pairs([
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("client_address", case.host.as_str()),
        ("helo_name", case.helo.as_str()),
        ("sender", case.mailfrom.as_str()),
        ("recipient", "postmaster@receiver.test"),
        ("instance", ""),
    ]);
    let action = evaluate(policy, state, &request, false)
        .await
        .action
        .to_string();
    let word = action
        .strip_prefix("PREPEND Received-SPF: ")
        .and_then(|rest| rest.split(' ').next());
    match word {
        Some(word) => Outcome {
            got: word.to_string(),
            ok: case.results.iter().any(|r| r.eq_ignore_ascii_case(word)),
            detail: format!(" action: {action}"),
        },
        // With the null sender and a HELO name that is not a domain there
        // is nothing to check: no header, which is the rule's "none".
        None if action == "DUNNO"
            && case.mailfrom.is_empty()
            && case.results.iter().any(|r| r == "none") =>
        {
            Outcome {
                got: "none".into(),
                ok: true,
                detail: String::new(),
            }
        }
        None => Outcome {
            got: action.clone(),
            ok: false,
            detail: String::new(),
        },
    }
}

fn panicked(e: tokio::task::JoinError) -> Outcome {
    let why = match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    Outcome {
        got: "panic".into(),
        ok: false,
        detail: format!(" panicked: {why}"),
    }
}

fn known(name: &str) -> Option<&'static str> {
    KNOWN.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// A test name from a description: "Record lookup" -> "record_lookup".
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// One case through both paths, against its document's zone data on a
/// DNS server of its own: `Err` with what went wrong, as the whole-suite
/// run printed it.
fn run_case(doc: &Document, case: &Case) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (direct, rule) = runtime.block_on(async {
        let dns = TestDns::start_records(doc.records.clone()).await;
        for (name, answered) in &doc.timeouts {
            dns.inject_silence_except(name, answered);
        }
        // Fresh caches for every case.
        let resolver = Resolver::new(&DnsConfig {
            nameservers: vec![dns.addr],
            timeout: DNS_TIMEOUT,
            attempts: 1,
            min_ttl: Duration::ZERO,
            ..DnsConfig::default()
        })
        .expect("resolver");
        let settings = SpfSettings {
            timeout: SPF_TIMEOUT,
            receiver: RECEIVER.into(),
            ..SpfSettings::default()
        };
        let policy = Arc::new(policy(&dns));
        let state = Arc::new(rpol::server::runtime_state(&policy).expect("runtime state"));
        let case = Arc::new(case.clone());
        // Each path in its own task, so that a panic inside viaspf is a
        // failing case with its message, not a lost one.
        let direct = {
            let case = case.clone();
            tokio::spawn(async move { through_evaluate(&resolver, &settings, &case).await })
                .await
                .unwrap_or_else(panicked)
        };
        let rule = tokio::spawn(async move { through_rule(&policy, &state, &case).await })
            .await
            .unwrap_or_else(panicked);
        (direct, rule)
    });
    let passed = direct.ok && rule.ok;
    let mut line = format!(
        "[{}] {}: expected {}, got {} via evaluate, {} via check_spf (spec {})",
        doc.description,
        case.name,
        case.results.join("|")
            + &case
                .explanation
                .as_ref()
                .map(|e| format!(" ({e:?})"))
                .unwrap_or_default(),
        direct.got,
        rule.got,
        case.spec,
    );
    if !direct.ok {
        line.push_str(&format!("\n    evaluate:{}", direct.detail));
    }
    if !rule.ok {
        line.push_str(&format!("\n    check_spf:{}", rule.detail));
    }
    for note in &doc.unservable {
        line.push_str(&format!("\n    zone data not served: {note}"));
    }
    match (passed, known(&case.name)) {
        (true, None) => Ok(()),
        (false, Some(reason)) => {
            println!("known failure, as expected: {line}\n    known: {reason}");
            Ok(())
        }
        (true, Some(_)) => Err(format!(
            "in KNOWN but passes now (remove it from KNOWN): {line}"
        )),
        (false, None) => Err(format!("FAIL {line}")),
    }
}

fn main() {
    let mut args = libtest_mimic::Arguments::from_args();
    // The cases wait on DNS timeouts far more than they compute.
    if args.test_threads.is_none() {
        args.test_threads = Some(8);
    }
    let suite = std::fs::read_to_string(SUITE)
        .unwrap_or_else(|e| panic!("cannot read the SPF suite {SUITE}: {e}"));
    let documents: Vec<Arc<Document>> = serde_yaml::Deserializer::from_str(&suite)
        .map(|d| {
            Arc::new(parse_document(
                &Value::deserialize(d).expect("suite document parses"),
            ))
        })
        .collect();

    let mut trials = Vec::new();
    {
        let names: Vec<String> = documents
            .iter()
            .flat_map(|d| d.cases.iter().map(|c| c.name.clone()))
            .collect();
        trials.push(libtest_mimic::Trial::test(
            "the_suite_holds_every_case",
            move || {
                if names.len() != CASES {
                    return Err(format!(
                        "the suite {SUITE} holds {} cases, not the {CASES} it should",
                        names.len()
                    )
                    .into());
                }
                let missing: Vec<&str> = KNOWN
                    .iter()
                    .map(|(n, _)| *n)
                    .filter(|n| !names.iter().any(|c| c == n))
                    .collect();
                if !missing.is_empty() {
                    return Err(format!("KNOWN cases not in the suite: {missing:?}").into());
                }
                Ok(())
            },
        ));
    }
    for doc in &documents {
        for case in &doc.cases {
            let name = format!("{}::{}", slug(&doc.description), case.name);
            let (doc, case) = (doc.clone(), case.clone());
            trials.push(libtest_mimic::Trial::test(name, move || {
                run_case(&doc, &case).map_err(Into::into)
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
