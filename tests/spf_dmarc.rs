//! check_spf's `fail = "reject_unless_dmarc"` and `reject_not_pass_domains`
//! against a real DNS server on loopback serving tests/zones/dmarctest.zone
//! and a co.uk zone (a public suffix of two labels, which only the Public
//! Suffix List tells apart): whole answers from the rpol binary, traces
//! in-process.

use crate::support::fixture;

use fixture::{Case, DNS_ADDR, Fixture, Spec};

/// A RCPT request from 198.51.100.9, which no domain of the zones lists.
const RCPT: &[(&str, &str)] = &[
    ("protocol_state", "RCPT"),
    ("client_address", "198.51.100.9"),
    ("helo_name", "mail.good.example"),
    ("sender", "someone@nodmarc.dmarctest"),
    ("recipient", "alice@example.com"),
    ("instance", ""),
];

const IP: &str = "198.51.100.9";

/// Under co.uk: example.co.uk's record covers sub.example.co.uk only by
/// the list; co.uk itself (a public suffix) fails too.
const CO_UK: &str = "$ORIGIN co.uk.\n$TTL 300\n\
    @ IN SOA ns.co.uk. hostmaster.co.uk. ( 1 3600 600 86400 60 )\n\
    @ IN NS ns.co.uk.\nns IN A 198.51.100.53\n\
    @ IN TXT \"v=spf1 ip4:203.0.113.0/24 -all\"\n\
    sub.example IN TXT \"v=spf1 ip4:203.0.113.0/24 -all\"\n\
    _dmarc.example IN TXT \"v=DMARC1; p=none\"\n\
    sub.other IN TXT \"v=spf1 ip4:203.0.113.0/24 -all\"\n";

/// check_spf alone, with `spf` appended to `[spf]` (keys, then tables)
/// and `files` beside the config. SERVFAIL for _dmarc.broken.dmarctest,
/// silence for _dmarc.slow.dmarctest.
async fn start(spf: &str, files: &[(&str, &str)]) -> Fixture {
    let zones: &[(&str, &str)] = &[
        ("dmarctest.", include_str!("zones/dmarctest.zone")),
        ("co.uk.", CO_UK),
    ];
    let config = format!(
        "[dns]\nnameservers = [\"{DNS_ADDR}\"]\ntimeout = \"1s\"\nattempts = 1\n\
         [site]\nmynetworks = [\"127.0.0.0/8\"]\ndomains = [\"example.com\"]\n\
         [spf]\nreceiver = \"mx.example.com\"\ncheck_helo = false\n{spf}\n\
         [profile.mx]\nrecipient = [\"check_spf\"]\n"
    );
    let s = Fixture::start(Spec {
        zones,
        config: &config,
        files,
        base: RCPT,
    })
    .await;
    s.dns.inject_servfail("_dmarc.broken.dmarctest");
    s.dns.inject_silence("_dmarc.slow.dmarctest");
    s
}

/// check_spf's reply to a MAIL FROM fail, as `fail = "reject"` answers.
fn reject(sender: &str) -> String {
    format!("550 5.7.23 SPF fail: domain of {sender} does not designate {IP} as permitted sender")
}

/// The Received-SPF PREPEND of a MAIL FROM result from [`IP`].
fn header(result: &str, sender: &str, last: &str) -> String {
    let comment = match result {
        "fail" => format!("domain of {sender} does not designate {IP} as permitted sender"),
        "softfail" => {
            format!("domain of transitioning {sender} does not designate {IP} as permitted sender")
        }
        "none" => format!("domain of {sender} does not designate permitted sender hosts"),
        other => panic!("no comment for {other}"),
    };
    let last = if last.is_empty() {
        String::new()
    } else {
        format!(" {last};")
    };
    format!(
        "PREPEND Received-SPF: {result} (mx.example.com: {comment}) client-ip={IP}; \
         envelope-from=\"{sender}\"; helo=mail.good.example; receiver=mx.example.com; \
         identity=mailfrom;{last}"
    )
}

fn sender(s: &str) -> Vec<(&str, &str)> {
    vec![("sender", s)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_is_rejected_only_without_a_dmarc_policy() {
    let s = start(
        "[spf.mail_from]\nfail = \"reject_unless_dmarc\"\nsoftfail = \"reject_unless_dmarc\"",
        &[],
    )
    .await;
    let fail = |a: &str| header("fail", a, "mechanism=all");
    let cases: &[Case] = &[
        (
            "DMARC at the domain",
            sender("a@own.dmarctest"),
            fail("a@own.dmarctest"),
        ),
        (
            "softfail, DMARC at the domain",
            sender("a@soft.dmarctest"),
            header("softfail", "a@soft.dmarctest", "mechanism=all"),
        ),
        (
            "DMARC at the organisational domain only",
            sender("a@sub.org.dmarctest"),
            fail("a@sub.org.dmarctest"),
        ),
        (
            "p=none is a policy",
            sender("a@monitor.dmarctest"),
            fail("a@monitor.dmarctest"),
        ),
        (
            "no DMARC record",
            sender("a@nodmarc.dmarctest"),
            reject("a@nodmarc.dmarctest"),
        ),
        (
            "only TXT records that are no DMARC record",
            sender("a@notdmarc.dmarctest"),
            reject("a@notdmarc.dmarctest"),
        ),
        (
            "two DMARC records: no DMARC processing (RFC 7489 6.6.3)",
            sender("a@twice.dmarctest"),
            reject("a@twice.dmarctest"),
        ),
        // The PSL: example.co.uk is sub.example.co.uk's organisational
        // domain; other.co.uk publishes nothing and co.uk is no
        // organisational domain.
        (
            "DMARC at example.co.uk",
            sender("a@sub.example.co.uk"),
            fail("a@sub.example.co.uk"),
        ),
        (
            "none under co.uk",
            sender("a@sub.other.co.uk"),
            reject("a@sub.other.co.uk"),
        ),
        (
            "a public suffix as the sender domain",
            sender("a@co.uk"),
            reject("a@co.uk"),
        ),
        (
            "trailing dot",
            sender("a@monitor.dmarctest."),
            fail("a@monitor.dmarctest"),
        ),
        (
            "trailing dot, no DMARC",
            sender("a@nodmarc.dmarctest."),
            reject("a@nodmarc.dmarctest"),
        ),
        (
            "upper case",
            sender("a@Sub.Org.DMARCtest"),
            fail("a@Sub.Org.DMARCtest"),
        ),
    ];
    s.check(cases);
    // co.uk has no organisational domain: one DMARC lookup, not _dmarc.uk.
    // (sub.other.co.uk asked it first: the cached NXDOMAIN serves co.uk.)
    assert_eq!(s.dns.queries_for("_dmarc.co.uk"), 1);
    assert_eq!(s.dns.queries_for("_dmarc.uk"), 0);
    let trace = s.trace(&sender("a@sub.org.dmarctest")).await;
    assert!(
        trace.contains(
            "reject_unless_dmarc: DMARC policy at _dmarc.org.dmarctest (\"v=DMARC1; p=reject\"): \
             not rejected, the DMARC verifier after DATA decides"
        ) && trace.contains("DNS TXT _dmarc.sub.org.dmarctest: NXDOMAIN"),
        "{trace}"
    );
    let trace = s.trace(&sender("a@nodmarc.dmarctest")).await;
    assert!(
        trace.contains(
            "reject_unless_dmarc: DMARC: no DMARC record for nodmarc.dmarctest: rejected"
        ),
        "{trace}"
    );
}

/// `fail = "reject"` (the default) does not look for DMARC at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_asks_no_dmarc() {
    let s = start("", &[]).await;
    assert_eq!(
        s.ask(&sender("a@monitor.dmarctest")),
        reject("a@monitor.dmarctest")
    );
    assert_eq!(s.dns.queries_for("_dmarc.monitor.dmarctest"), 0);
}

/// A DMARC lookup that fails is a temporary failure: never the accept of
/// a fail nor a reject. The SPF rule's temperror action (defer_if_permit
/// by default, or defer) decides how soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dmarc_lookup_that_fails_is_a_temporary_failure() {
    let tempfail = |verb: &str, who: &str, why: &str| {
        format!(
            "{verb} 4.7.24 SPF fail: domain of a@{who}.dmarctest does not designate {IP} as \
             permitted sender; DMARC record lookup of _dmarc.{who}.dmarctest failed ({why}); \
             try again later"
        )
    };
    let s = start("[spf.mail_from]\nfail = \"reject_unless_dmarc\"", &[]).await;
    s.check(&[
        (
            "SERVFAIL",
            sender("a@broken.dmarctest"),
            tempfail("DEFER_IF_PERMIT", "broken", "SERVFAIL"),
        ),
        (
            "timeout",
            sender("a@slow.dmarctest"),
            tempfail("DEFER_IF_PERMIT", "slow", "timeout"),
        ),
    ]);
    // Not cached: once the DNS answers, so does rpol.
    s.dns.clear_faults();
    assert_eq!(
        s.ask(&sender("a@broken.dmarctest")),
        reject("a@broken.dmarctest")
    );
    for (temperror, verb) in [("defer", "451"), ("accept", "DEFER_IF_PERMIT")] {
        let s = start(
            &format!(
                "[spf.mail_from]\nfail = \"reject_unless_dmarc\"\ntemperror = \"{temperror}\""
            ),
            &[],
        )
        .await;
        assert_eq!(
            s.ask(&sender("a@broken.dmarctest")),
            tempfail(verb, "broken", "SERVFAIL"),
            "temperror = {temperror}"
        );
    }
}

/// `[spf] public_suffix_list`: a list read from a file replaces the one
/// built in. Here org.dmarctest is a suffix, so sub.org.dmarctest is its
/// own organisational domain and publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_suffix_list_from_a_file() {
    let list = "// ===BEGIN ICANN DOMAINS===\ndmarctest\nuk\nco.uk\n// ===END ICANN DOMAINS===\n\
                // ===BEGIN PRIVATE DOMAINS===\norg.dmarctest\n// ===END PRIVATE DOMAINS===\n";
    let s = start(
        "public_suffix_list = \"psl.dat\"\n[spf.mail_from]\nfail = \"reject_unless_dmarc\"",
        &[("psl.dat", list)],
    )
    .await;
    s.check(&[
        (
            "org.dmarctest is a suffix",
            sender("a@sub.org.dmarctest"),
            reject("a@sub.org.dmarctest"),
        ),
        (
            "example.co.uk as before",
            sender("a@sub.example.co.uk"),
            header("fail", "a@sub.example.co.uk", "mechanism=all"),
        ),
    ]);
    assert_eq!(s.dns.queries_for("_dmarc.org.dmarctest"), 0);
}

/// Hostile sender domains: 250 labels (no valid domain: SPF none, no
/// DMARC lookup), a name at the length limit (its `_dmarc.` name cannot
/// exist, so its organisational domain decides), an IDN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sender_domains() {
    let s = start("[spf.mail_from]\nfail = \"reject_unless_dmarc\"", &[]).await;
    let many = format!("a@{}dmarctest", "a.".repeat(249));
    let before = s.dns.query_count();
    assert_eq!(
        s.ask(&sender(&many)),
        header(
            "none",
            &many,
            "problem=\"not a valid domain (RFC 7208 4.3)\""
        )
    );
    assert_eq!(s.dns.query_count(), before, "no lookup for no domain");
    // 252 characters: a valid name, under deep.dmarctest's wildcard -all.
    let long = format!("a@{}deep.dmarctest", "b.".repeat(119));
    assert_eq!(
        s.ask(&sender(&long)),
        header("fail", &long, "mechanism=all")
    );
    // bücher.dmarctest: its A-label's DMARC record counts. (The header
    // names the domain as SPF checked it, and escapes the envelope.)
    let sent = s.ask(&sender("a@bücher.dmarctest"));
    assert_eq!(
        sent,
        header("fail", "a@xn--bcher-kva.dmarctest", "mechanism=all").replace(
            "envelope-from=\"a@xn--bcher-kva",
            "envelope-from=\"a@b?cher"
        )
    );
    let trace = s.trace(&sender("a@bücher.dmarctest")).await;
    assert!(
        trace.contains("DMARC policy at _dmarc.xn--bcher-kva.dmarctest (\"v=DMARC1; p=none\")"),
        "{trace}"
    );
}

/// policyd-spf's Reject_Not_Pass_Domains: a listed MAIL FROM domain (the
/// domain itself, as policyd-spf matches) is rejected unless SPF passes,
/// whatever its record says and whatever DMARC publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_not_pass_domains() {
    let s = start(
        "[spf.mail_from]\nfail = \"reject_unless_dmarc\"\n\
         reject_not_pass_domains = [\"bank.dmarctest\", \"Bank-Soft.dmarctest.\", \
         \"bank-none.dmarctest\", \"bank-fail.dmarctest\"]",
        &[],
    )
    .await;
    let policy = |result: &str, domain: &str| {
        format!(
            "550 5.7.23 Receiver policy for SPF {result}: domain of a@{domain} must designate \
             {IP} as permitted sender"
        )
    };
    let cases: &[Case] = &[
        (
            "neutral",
            sender("a@bank.dmarctest"),
            policy("neutral", "bank.dmarctest"),
        ),
        (
            "softfail",
            sender("a@bank-soft.dmarctest"),
            policy("softfail", "bank-soft.dmarctest"),
        ),
        (
            "none",
            sender("a@bank-none.dmarctest"),
            policy("none", "bank-none.dmarctest"),
        ),
        (
            "fail, though DMARC is published",
            sender("a@bank-fail.dmarctest"),
            policy("fail", "bank-fail.dmarctest"),
        ),
        (
            "upper case and a trailing dot",
            sender("a@BANK.dmarctest."),
            policy("neutral", "BANK.dmarctest"),
        ),
        // Subdomains are not listed (policyd-spf matches the domain).
        (
            "a subdomain",
            sender("a@x.bank-none.dmarctest"),
            header("none", "a@x.bank-none.dmarctest", ""),
        ),
        (
            "pass",
            vec![
                ("sender", "a@bank.dmarctest"),
                ("client_address", "203.0.113.10"),
            ],
            "PREPEND Received-SPF: pass (mx.example.com: domain of a@bank.dmarctest designates \
             203.0.113.10 as permitted sender) client-ip=203.0.113.10; \
             envelope-from=\"a@bank.dmarctest\"; helo=mail.good.example; \
             receiver=mx.example.com; identity=mailfrom; mechanism=\"ip4:203.0.113.0/24\";"
                .into(),
        ),
    ];
    s.check(cases);
}
