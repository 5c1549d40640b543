//! The trace header accepted mail carries: `Received-SPF` (RFC 7208 9.1)
//! or `Authentication-Results` (RFC 8601), on one line since the policy
//! protocol cannot carry a folded header.

use std::net::IpAddr;

use super::{Evaluation, Identity};
use viaspf::SpfResult;

/// `Received-SPF: <result> (<comment>) client-ip=...; envelope-from=...;
/// helo=...; receiver=...; identity=...; [mechanism=...|problem=...]`.
pub fn received_spf(
    e: &Evaluation,
    ip: IpAddr,
    envelope_from: &str,
    helo: &str,
    receiver: &str,
) -> String {
    let mut fields = vec![
        format!("client-ip={}", value(&ip.to_string())),
        format!("envelope-from={}", value(envelope_from)),
        format!("helo={}", value(helo)),
        format!("receiver={}", value(receiver)),
        format!("identity={}", e.identity.name()),
    ];
    if let Some(m) = &e.mechanism {
        fields.push(format!("mechanism={}", value(m)));
    }
    if let Some(p) = &e.problem {
        fields.push(format!("problem={}", value(p)));
    }
    format!(
        "Received-SPF: {} ({}) {};",
        e.result_name(),
        comment(e, ip, receiver),
        fields.join("; ")
    )
}

/// `Authentication-Results: <authserv-id>; spf=<result> (<comment>)
/// smtp.mailfrom=<sender>` (or `smtp.helo=` for the HELO identity).
pub fn authentication_results(e: &Evaluation, ip: IpAddr, authserv_id: &str) -> String {
    let property = match e.identity {
        Identity::MailFrom => format!("smtp.mailfrom={}", ar_value(&e.sender)),
        Identity::Helo => format!("smtp.helo={}", ar_value(&e.domain)),
    };
    format!(
        "Authentication-Results: {}; spf={} ({}) {}",
        ar_value(authserv_id),
        e.result_name(),
        comment(e, ip, authserv_id),
        property
    )
}

/// The conventional comment wording per result (open-spf.org).
fn comment(e: &Evaluation, ip: IpAddr, receiver: &str) -> String {
    let who = match e.identity {
        Identity::MailFrom => e.sender.clone(),
        Identity::Helo => e.domain.clone(),
    };
    let text = match &e.result {
        SpfResult::Pass => format!("domain of {who} designates {ip} as permitted sender"),
        SpfResult::Fail(_) => {
            format!("domain of {who} does not designate {ip} as permitted sender")
        }
        SpfResult::Softfail => {
            format!("domain of transitioning {who} does not designate {ip} as permitted sender")
        }
        SpfResult::Neutral => format!("{ip} is neither permitted nor denied by domain of {who}"),
        SpfResult::None => format!("domain of {who} does not designate permitted sender hosts"),
        SpfResult::Temperror => format!("error in processing during lookup of domain of {who}"),
        SpfResult::Permerror => format!(
            "permanent error in processing domain of {who}: {}",
            e.problem.as_deref().unwrap_or("invalid record")
        ),
    };
    sanitize_comment(&format!("{receiver}: {text}"))
}

/// Comments may not hold unbalanced parentheses or backslashes; control
/// and non-ASCII characters are replaced too (a header line is ASCII).
fn sanitize_comment(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '(' | ')' | '\\' => ' ',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

/// A key-value value: a dot-atom as is, anything else quoted.
fn value(text: &str) -> String {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = !text.is_empty()
        && !text.starts_with('.')
        && !text.ends_with('.')
        && !text.contains("..")
        && text.chars().all(|c| atext(c) || c == '.');
    if dot_atom {
        text.to_string()
    } else {
        quote(text)
    }
}

/// RFC 8601 values: a token or an address as is, else quoted.
fn ar_value(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && !"()<>,;:\\\"[]?=".contains(c) || c == '@');
    if plain { text.to_string() } else { quote(text) }
}

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(result: SpfResult, identity: Identity) -> Evaluation {
        Evaluation {
            identity,
            sender: "myname@example.com".into(),
            domain: "example.com".into(),
            result,
            mechanism: Some("ip4:203.0.113.0/24".into()),
            problem: None,
            uses_local_part: false,
            cacheable: true,
            lookups: vec![],
        }
    }

    #[test]
    fn received_spf_matches_the_rfc_example_shape() {
        let e = eval(SpfResult::Pass, Identity::MailFrom);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            received_spf(
                &e,
                ip,
                "myname@example.com",
                "foo.example.com",
                "mybox.example.org"
            ),
            "Received-SPF: pass (mybox.example.org: domain of myname@example.com designates 203.0.113.1 as permitted sender) \
             client-ip=203.0.113.1; envelope-from=\"myname@example.com\"; helo=foo.example.com; \
             receiver=mybox.example.org; identity=mailfrom; mechanism=\"ip4:203.0.113.0/24\";"
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(
            received_spf(&e, v6, "", "[2001:db8::1]", "r")
                .contains("client-ip=\"2001:db8::1\"; envelope-from=\"\"; helo=\"[2001:db8::1]\"")
        );
    }

    #[test]
    fn authentication_results_form() {
        let e = eval(SpfResult::Softfail, Identity::MailFrom);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            authentication_results(&e, ip, "mx.example.org"),
            "Authentication-Results: mx.example.org; spf=softfail (mx.example.org: domain of transitioning myname@example.com does not designate 203.0.113.1 as permitted sender) smtp.mailfrom=myname@example.com"
        );
        let e = eval(SpfResult::None, Identity::Helo);
        assert!(authentication_results(&e, ip, "mx").ends_with("smtp.helo=example.com"));
    }
}
