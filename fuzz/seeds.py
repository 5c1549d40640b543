#!/usr/bin/env python3
"""Writes the seed inputs of each fuzz target into corpus/<target>/seed-*.

Realistic inputs: Postfix 3.7 policy requests, the shipped tables/ files,
policy.toml, and DNS data for the chain. Run once from fuzz/; the fuzzers
add their own finds beside these files.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def request(**attrs):
    """A Postfix 3.7 RCPT request (the attributes it sends, in its order)."""
    base = dict(
        request="smtpd_access_policy",
        protocol_state="RCPT",
        protocol_name="ESMTP",
        client_address="203.0.113.66",
        client_name="mail.outside.example",
        client_port="41234",
        reverse_client_name="mail.outside.example",
        server_address="198.51.100.1",
        server_port="25",
        helo_name="mail.outside.example",
        sender="bob@victim.example",
        recipient="alice@example.com",
        recipient_count="0",
        queue_id="",
        instance="1a2b.6634f0c1.5e6a1.0",
        size="0",
        etrn_domain="",
        stress="",
        sasl_method="",
        sasl_username="",
        sasl_sender="",
        ccert_subject="",
        ccert_issuer="",
        ccert_fingerprint="",
        ccert_pubkey_fingerprint="",
        encryption_protocol="TLSv1.3",
        encryption_cipher="TLS_AES_256_GCM_SHA384",
        encryption_keysize="256",
        policy_context="",
    )
    base.update(attrs)
    return "".join(f"{k}={v}\n" for k, v in base.items()) + "\n"


REQUESTS = {
    "rcpt": request(),
    "connect": request(protocol_state="CONNECT", helo_name="", sender="", recipient=""),
    "ehlo": request(protocol_state="EHLO", sender="", recipient=""),
    "mail-null-sender": request(protocol_state="MAIL", sender="", recipient=""),
    "data": request(protocol_state="DATA", recipient_count="2", recipient=""),
    "ipv6": request(client_address="2001:db8::66", client_name="unknown",
                    reverse_client_name="unknown"),
    "submission": request(server_port="587", sasl_method="PLAIN",
                          sasl_username="alice@example.com",
                          sender="shop-acme@example.com",
                          recipient="friend@elsewhere.example"),
    "spf-context": request(policy_context="spf", sender="user@macro.example"),
    "dns-context": request(policy_context="dns", helo_name="[203.0.113.66]"),
    "logins-context": request(policy_context="logins", sasl_username="bob@example.com",
                              sender="family@example.com"),
    "crlf": "request=smtpd_access_policy\r\nsender=a@b.example\r\n\r\n",
    "pipelined": request() + request(recipient="bob@example.com", instance="1a2b.6634f0c1.5e6a1.1"),
}

# DNS data for the chain: NAME TYPE DATA lines (see fuzz_targets/chain.rs).
ZONE = """mail.outside.example A 203.0.113.66
66.113.0.203.in-addr.arpa PTR mail.outside.example
victim.example TXT v=spf1 ip4:198.51.100.1 a:mail.victim.example mx include:_spf.victim.example -all
victim.example MX 10 mx.victim.example
mx.victim.example A 198.51.100.1
_spf.victim.example TXT v=spf1 ip4:203.0.113.0/24 exists:%{i}.%{l}.rbl.example ?all
mail.victim.example AAAA 2001:db8::1
macro.example TXT v=spf1 exists:%{l}.allow.macro.example redirect=other.example
other.example TXT v=spf1 ptr:outside.example exp=explain.other.example -all
explain.other.example TXT %{i} is not one of %{d}'s servers
example.com MX 10 mx.example.com
mx.example.com A 198.51.100.1
elsewhere.example SERVFAIL
6.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa PTR host6.example
host6.example AAAA 2001:db8::66
alias.example CNAME mail.outside.example
"""


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(os.path.join(d, f"seed-{name}"), mode) as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def main():
    for i, (name, text) in enumerate(REQUESTS.items()):
        # Four chunk sizes first: whole lines, single bytes, odd splits.
        sizes = [bytes([255, 255, 255, 255]), bytes([0, 0, 0, 0]), bytes([6, 0, 30, 2])][i % 3]
        write("decoder", name, sizes + text.encode())
        write("chain", name, text + ZONE)

    examples = {
        "client": "mail.partner.example OK\nbad.example REJECT go away\n203.0.113.7 550 5.7.1 listed\n"
                  "198.51.100 DUNNO\n2001:db8:1 DEFER_IF_PERMIT try later\nunknown DEFER_IF_REJECT no name\n"
                  "\n--\nmail.partner.example 198.51.100.9\nsub.bad.example 203.0.113.7\nunknown 2001:db8:1::5\n",
        "sender": "<> DUNNO\nspammer@ REJECT\nbad.example REJECT\nalerts+x@partner.example OK\n"
                  "user@ PREPEND X-Tag: yes\n  continued\n"
                  "\n--\n\nspammer@any.example\nalerts+x@partner.example\nuser+tag@sub.bad.example\nlocal\n",
    }
    for name, text in examples.items():
        write("access_table", name, b"\x02" + text.encode())
    write("access_table", "cidr", b"\x01" + b"198.51.100.66/32 REJECT cidr\n2001:db8:66::/48 450 4.7.1 cidr\n"
          b"0.0.0.0/0 DUNNO\n\n--\n198.51.100.66\n2001:db8:66::1\n10.1.2.3\n")
    for name in ["client_whitelist", "helo_whitelist", "sender_whitelist", "recipient_whitelist"]:
        write("access_table", name, b"\x00" + read(f"tables/{name}").encode())

    write("address_tables", "shipped",
          read("tables/vmail_mailbox") + "\n--\n" + read("tables/vmail_aliases")
          + "\n--\nboss@example.org alice@example.com, dave\n@partner.example partner\n"
          + "\n--\nalice+x@example.com\nfamily@example.com\nanyone@partner.example\nnobody@example.com\nboss\n")
    write("address_tables", "chains",
          "a@x.example m\nb@x.example m\n--\nc@x.example a@x.example, d@x.example\n"
          "d@x.example b@x.example c@x.example\n@y.example c@x.example\n--\n--\nc@x.example\nq@y.example\n")

    write("config", "shipped", read("policy.toml"))
    write("config", "chain", read("fuzz/fixtures/chain/policy.toml").replace("@DNS@", "127.0.0.1:5353"))
    write("config", "minimal", "[profile.default]\nclient = [\"dunno\"]\n")


if __name__ == "__main__":
    main()
