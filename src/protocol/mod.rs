//! The Postfix policy delegation wire format: `name=value` lines ended by an
//! empty line in, `action=...` plus an empty line out (SMTPD_POLICY_README).
//!
//! This module does no I/O. [`Decoder`] works on a byte buffer that the
//! caller fills: "is a whole request here?" then "parse it", so a request
//! split over many reads is scanned once. Every limit is enforced before the
//! bytes are kept, so a hostile client cannot make the buffer grow without
//! bound.

mod action;
mod request;

pub use action::{Action, ActionClass, MAX_REPLY_BYTES};
pub use request::Request;

/// Longest accepted line, in bytes, newline included. Postfix writes one
/// attribute per line and its longest values (a certificate subject, a
/// long address) stay far below this; 8 KiB leaves room and still caps work.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Longest accepted request, in bytes, terminating empty line included.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Most attributes in one request. Postfix 3.12 sends 31; the margin keeps
/// newer Postfix versions working while bounding a flood of short lines.
pub const MAX_ATTRIBUTES: usize = 256;

/// The only `request=` value Postfix sends to a policy service.
pub const REQUEST_KIND: &str = "smtpd_access_policy";

/// Why a request could not be decoded. Each is answered with the configured
/// error action, logged with the peer, and ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("request longer than {MAX_REQUEST_BYTES} bytes")]
    RequestTooLong,
    #[error("request has more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("line {0} has no '=': {1:?}")]
    MissingEquals(usize, String),
    #[error("line {0} is not valid UTF-8")]
    InvalidUtf8(usize),
    #[error("empty attribute name on line {0}")]
    EmptyName(usize),
    #[error("empty request (no attributes before the empty line)")]
    EmptyRequest,
    #[error("unsupported request type {0:?} (expected \"smtpd_access_policy\")")]
    WrongRequestType(String),
    #[error("missing attribute \"request\"")]
    MissingRequestType,
}

/// The SMTP command Postfix is answering (`protocol_state`). With
/// smtpd_delay_reject = yes, client, helo and sender restrictions report
/// `RCPT` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolState {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    EndOfMessage,
    Vrfy,
    Etrn,
    /// Absent or a value this version does not know: treated as `RCPT`,
    /// where every attribute is present (see `policy::chain`).
    Other,
}

impl ProtocolState {
    fn parse(value: &str) -> ProtocolState {
        // Asked several times per request: compared in place, not upper-cased
        // into a new string.
        const NAMES: [(&str, ProtocolState); 10] = [
            ("RCPT", ProtocolState::Rcpt),
            ("CONNECT", ProtocolState::Connect),
            ("HELO", ProtocolState::Helo),
            ("EHLO", ProtocolState::Helo),
            ("MAIL", ProtocolState::Mail),
            ("DATA", ProtocolState::Data),
            ("BDAT", ProtocolState::Data),
            ("END-OF-MESSAGE", ProtocolState::EndOfMessage),
            ("VRFY", ProtocolState::Vrfy),
            ("ETRN", ProtocolState::Etrn),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map_or(ProtocolState::Other, |&(_, state)| state)
    }
}

/// Attribute memory a recycled request may keep (see [`Decoder::recycle`]).
const KEEP_BYTES: usize = 4 * 1024;

/// Incremental request decoder over a caller-owned buffer.
///
/// `scanned` remembers how far complete lines were already checked so a
/// request that trickles in byte by byte is still scanned in linear time.
#[derive(Debug, Default)]
pub struct Decoder {
    scanned: usize,
    lines: usize,
    /// A request handed back by [`Decoder::recycle`]: the next one is
    /// decoded into its strings, without allocating.
    spare: Option<Request>,
    /// Each attribute line checked so far: where its name starts, where
    /// its `=` is, where it ends; so the request is built without a second
    /// pass over the text.
    fields: Vec<(usize, usize, usize)>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Takes one complete request off the front of `buf`, if there is one.
    /// `Ok(None)` means "need more bytes". After an error the connection
    /// must be closed: the decoder does not resynchronise.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Request>, ProtocolError> {
        loop {
            let rest = &buf[self.scanned..];
            let Some(nl) = find_byte(b'\n', rest) else {
                if rest.len() >= MAX_LINE_BYTES {
                    return Err(ProtocolError::LineTooLong);
                }
                if buf.len() > MAX_REQUEST_BYTES {
                    return Err(ProtocolError::RequestTooLong);
                }
                return Ok(None);
            };
            if nl + 1 > MAX_LINE_BYTES {
                return Err(ProtocolError::LineTooLong);
            }
            let line_start = self.scanned;
            self.scanned += nl + 1;
            if self.scanned > MAX_REQUEST_BYTES {
                return Err(ProtocolError::RequestTooLong);
            }
            self.lines += 1;
            let line = strip_cr(&buf[line_start..line_start + nl]);
            if line.is_empty() {
                if self.fields.is_empty() {
                    return Err(ProtocolError::EmptyRequest);
                }
                let request = self.build(&buf[..line_start])?;
                buf.drain(..self.scanned);
                self.scanned = 0;
                self.lines = 0;
                self.fields.clear();
                return Ok(Some(request));
            }
            if self.fields.len() >= MAX_ATTRIBUTES {
                return Err(ProtocolError::TooManyAttributes);
            }
            let eq = check_line(line, self.lines)?;
            self.fields
                .push((line_start, line_start + eq, line_start + line.len()));
        }
    }

    /// Takes back an answered request, to decode the next into its memory.
    /// A request that held large values is dropped instead: a connection
    /// keeps a few KiB between requests, not the largest it ever sent.
    pub fn recycle(&mut self, mut request: Request) {
        if request.heap_bytes() <= KEEP_BYTES {
            self.spare = Some(request);
        }
    }

    /// The request of the lines checked so far (`bytes` holds them all).
    /// UTF-8 is checked here, once for the whole request; an error names
    /// the line it is on.
    fn build(&mut self, bytes: &[u8]) -> Result<Request, ProtocolError> {
        let line_of = |at: usize| memchr::memchr_iter(b'\n', &bytes[..at]).count() + 1;
        // A NUL is valid UTF-8 but no attribute may hold one.
        if let Some(at) = memchr::memchr(0, bytes) {
            return Err(ProtocolError::InvalidUtf8(line_of(at)));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ProtocolError::InvalidUtf8(line_of(e.valid_up_to())))?;
        let mut req = match self.spare.take() {
            Some(mut spare) => {
                spare.clear();
                spare
            }
            None => Request::default(),
        };
        let mut seen: u64 = 0;
        // Lines end at `\n` and split at `=` (ASCII), so every range below
        // falls on a character boundary.
        for &(start, eq, end) in &self.fields {
            let Some(line) = text.get(start..end) else {
                continue;
            };
            let Some((name, value)) = line.split_at_checked(eq - start) else {
                continue;
            };
            let value = value.strip_prefix('=').unwrap_or(value);
            if !req.set_known(name, value, &mut seen) {
                // Kept as it came, with its newline: one copy per line
                // (two when it ended in CR LF).
                match text.get(start..end + 1) {
                    Some(with_newline) if with_newline.ends_with('\n') => {
                        req.other.push_str(with_newline);
                    }
                    _ => {
                        req.other.push_str(line);
                        req.other.push('\n');
                    }
                }
            }
        }
        // A recycled request keeps its `request` string; unseen, it is absent.
        if seen & 1 == 0 {
            req.request = None;
        }
        Ok(req)
    }
}

/// Postfix never sends CR, but a person typing into `nc` or a file edited on
/// another system may; a trailing CR is dropped so `\r\n` works too.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Checks one attribute line; returns the position of its `=`. (UTF-8 is
/// checked once the whole request is there: [`Decoder::build`].)
fn check_line(line: &[u8], number: usize) -> Result<usize, ProtocolError> {
    match find_byte(b'=', line) {
        None => Err(ProtocolError::MissingEquals(
            number,
            truncate(&String::from_utf8_lossy(line), 64),
        )),
        Some(0) => Err(ProtocolError::EmptyName(number)),
        Some(eq) => Ok(eq),
    }
}

/// Where `byte` first occurs in `bytes`, eight bytes at a time. Lines and
/// names are short (27 and 12 bytes on average in Postfix's request), and
/// memchr's set-up cost more than this word loop over them: 300 and 660
/// instructions per request.
fn find_byte(byte: u8, bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while at + 8 <= bytes.len() {
        // Indexed byte by byte, not chunked: in the debug build (the tests'
        // daemon) each chunk cost more calls than the check itself.
        let word = [
            bytes[at],
            bytes[at + 1],
            bytes[at + 2],
            bytes[at + 3],
            bytes[at + 4],
            bytes[at + 5],
            bytes[at + 6],
            bytes[at + 7],
        ];
        // The bytes equal to `byte` are the zero bytes of x. The lowest
        // zero byte gets its high bit below; a borrow can also flag bytes
        // above it, never below, so the lowest flag is exact.
        let x = u64::from_le_bytes(word) ^ (ONES * u64::from(byte));
        let zero = x.wrapping_sub(ONES) & !x & HIGH;
        if zero != 0 {
            return Some(at + zero.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = bytes[at..].iter().position(|&b| b == byte);
    tail.map(|i| at + i)
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// Encodes the reply to one request: `action=<action>\n\n`. Newlines and
/// other control characters in the action become spaces (they would end the
/// attribute early). Nothing is cut here: Postfix reads an action line of
/// any length; the SMTP reply limit is applied where a reply is made
/// ([`Action::reply`]), so a long PREPEND header goes out whole.
pub fn encode_response(action: &Action, out: &mut Vec<u8>) {
    out.extend_from_slice(b"action=");
    let start = out.len();
    action.write_to(out);
    // Almost every action is printable ASCII: written as it is.
    if !printable_ascii(&out[start..]) {
        let written = out.split_off(start);
        // Every piece of an action is a str, so this holds.
        let text = String::from_utf8_lossy(&written);
        for ch in text.chars() {
            let ch = if ch.is_control() { ' ' } else { ch };
            let mut tmp = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
        }
    }
    out.extend_from_slice(b"\n\n");
}

/// Whether every byte is printable ASCII (0x20..=0x7e), eight at a time: a
/// Received-SPF header is some 250 bytes, and a byte loop was a tenth of
/// the cost of answering.
fn printable_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        // With every high bit clear, no byte carries into the next: adding
        // 0x60 sets a byte's high bit iff it is >= 0x20, adding 0x01 iff it
        // is 0x7f.
        let ascii = x & HIGH == 0;
        let not_control = x.wrapping_add(0x6060_6060_6060_6060) & HIGH == HIGH;
        let not_del = x.wrapping_add(0x0101_0101_0101_0101) & HIGH == 0;
        if !(ascii && not_control && not_del) {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| (0x20..0x7f).contains(b))
}

/// The bytes of one response, for callers that want a fresh buffer.
pub fn response_bytes(action: &Action) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_response(action, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Request>, ProtocolError> {
        let mut buf = input.to_vec();
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        while let Some(req) = dec.decode(&mut buf)? {
            out.push(req);
        }
        Ok(out)
    }

    #[test]
    fn decodes_two_requests_and_keeps_unknown_attributes() {
        let reqs = decode_all(
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nfoo=bar=baz\n\nrequest=smtpd_access_policy\nsender=a@b\n\n",
        )
        .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].protocol_state, "RCPT");
        assert_eq!(reqs[0].get("foo"), "bar=baz");
        assert_eq!(reqs[1].sender, "a@b");
        assert_eq!(reqs[1].get("missing"), "");
    }

    /// A connection decodes each request into the previous one's memory:
    /// nothing of the previous request may survive into the next.
    #[test]
    fn a_recycled_request_carries_nothing_over() {
        let first: &[u8] = b"request=smtpd_access_policy\nprotocol_state=RCPT\n\
            client_address=192.0.2.1\nclient_name=a.example\nreverse_client_name=a.example\n\
            client_port=1\nserver_address=192.0.2.2\nserver_port=587\nhelo_name=h\n\
            sender=s@a.example\nrecipient=r@b.example\nrecipient_count=1\nqueue_id=Q\n\
            instance=i\nsasl_method=plain\nsasl_username=alice\nsasl_sender=x\n\
            encryption_protocol=TLSv1.3\npolicy_context=ctx\nsize=12\n\n";
        let second: &[u8] = b"protocol_state=MAIL\nclient_address=2001:db8::1\nccert_subject=c\n\n";
        let mut decoder = Decoder::new();
        let mut buf = first.to_vec();
        let a = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(a.client_ip(), Some("192.0.2.1".parse().unwrap()));
        decoder.recycle(a);
        buf.extend_from_slice(second);
        let b = decoder.decode(&mut buf).unwrap().unwrap();
        let fresh = Decoder::new()
            .decode(&mut second.to_vec())
            .unwrap()
            .unwrap();
        assert_eq!(b, fresh);
        assert_eq!(b.request, None);
        assert_eq!(b.sasl_username, "");
        assert_eq!(b.get("size"), "");
        assert_eq!(b.get("ccert_subject"), "c");
        assert_eq!(b.client_ip(), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn a_request_with_large_values_is_not_kept() {
        let mut decoder = Decoder::new();
        let big = format!("sender={}@example.com\n\n", "x".repeat(6000));
        let mut buf = big.into_bytes();
        let req = decoder.decode(&mut buf).unwrap().unwrap();
        decoder.recycle(req);
        assert!(decoder.spare.is_none());
        let mut small = b"sender=a@example.com\n\n".to_vec();
        let req = decoder.decode(&mut small).unwrap().unwrap();
        decoder.recycle(req);
        assert!(decoder.spare.is_some());
    }

    #[test]
    fn utf8_and_nul_errors_name_their_line() {
        let mut bad = b"a=1\nb=\xff\n\n".to_vec();
        assert_eq!(
            Decoder::new().decode(&mut bad),
            Err(ProtocolError::InvalidUtf8(2))
        );
        let mut nul = b"a=1\nb=2\nc=\x00\n\n".to_vec();
        assert_eq!(
            Decoder::new().decode(&mut nul),
            Err(ProtocolError::InvalidUtf8(3))
        );
    }

    #[test]
    fn partial_request_waits_at_every_split() {
        let input = b"request=smtpd_access_policy\nclient_address=203.0.113.1\n\n";
        for split in 1..input.len() {
            let mut buf = input[..split].to_vec();
            let mut dec = Decoder::new();
            assert_eq!(dec.decode(&mut buf), Ok(None), "split {split}");
            buf.extend_from_slice(&input[split..]);
            let req = dec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(req.client_address, "203.0.113.1");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn first_value_of_a_repeated_name_wins() {
        let req = Request::from_pairs([("sender", "a@x"), ("sender", "b@x")]);
        assert_eq!(req.sender, "a@x");
    }

    #[test]
    fn crlf_lines_are_accepted() {
        let reqs =
            decode_all(b"request=smtpd_access_policy\r\nsender=a@b\r\nsize=7\r\n\r\n").unwrap();
        assert_eq!(reqs[0].sender, "a@b");
        assert_eq!(reqs[0].check_kind(true), Ok(()));
        // An unknown attribute is kept without its CR.
        assert_eq!(reqs[0].get("size"), "7");
        assert_eq!(reqs[0].other, "size=7\n");
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("x={}\n\n", "a".repeat(MAX_LINE_BYTES));
        assert_eq!(decode_all(long.as_bytes()), Err(ProtocolError::LineTooLong));
        let unterminated = "a".repeat(MAX_LINE_BYTES + 1);
        assert_eq!(
            decode_all(unterminated.as_bytes()),
            Err(ProtocolError::LineTooLong)
        );
        let many: String = (0..=MAX_ATTRIBUTES).map(|i| format!("a{i}=1\n")).collect();
        assert_eq!(
            decode_all(many.as_bytes()),
            Err(ProtocolError::TooManyAttributes)
        );
        let big: String = (0..20)
            .map(|i| format!("a{i}={}\n", "v".repeat(4000)))
            .collect();
        assert_eq!(
            decode_all(big.as_bytes()),
            Err(ProtocolError::RequestTooLong)
        );
        assert!(matches!(
            decode_all(b"garbage\n\n"),
            Err(ProtocolError::MissingEquals(1, _))
        ));
        assert_eq!(
            decode_all(b"a=\xff\n\n"),
            Err(ProtocolError::InvalidUtf8(1))
        );
        assert_eq!(decode_all(b"\n"), Err(ProtocolError::EmptyRequest));
        assert_eq!(decode_all(b"=x\n\n"), Err(ProtocolError::EmptyName(1)));
    }

    /// Every byte value at every place of a word and of the tail.
    #[test]
    fn printable_ascii_finds_any_one_byte() {
        for at in 0..19 {
            for b in 0..=255u8 {
                let mut bytes = *b"abcdefgh ~ABCDEFG!";
                if at < bytes.len() {
                    bytes[at] = b;
                }
                let plain = bytes.iter().all(|b| (0x20..0x7f).contains(b));
                assert_eq!(printable_ascii(&bytes), plain, "byte {b:#x} at {at}");
            }
        }
    }

    #[test]
    fn request_kind_is_checked() {
        let req = Request::from_pairs([("request", "junk")]);
        assert_eq!(
            req.check_kind(true),
            Err(ProtocolError::WrongRequestType("junk".into()))
        );
        let req = Request::from_pairs([("sender", "a@b")]);
        assert_eq!(req.check_kind(true), Err(ProtocolError::MissingRequestType));
        assert_eq!(req.check_kind(false), Ok(()));
    }

    #[test]
    fn response_is_lf_only_and_sanitised() {
        let bytes = |action: &str| response_bytes(&Action::parse(action));
        assert_eq!(bytes("DUNNO"), b"action=DUNNO\n\n");
        assert_eq!(response_bytes(&Action::Dunno), b"action=DUNNO\n\n");
        assert_eq!(bytes("550 a\nb\r"), b"action=550 a b \n\n");
        assert_eq!(
            response_bytes(&Action::reply(550, "5.7.1", "a\nb".into())),
            b"action=550 5.7.1 a b\n\n"
        );
        // Non-ASCII stays; C1 controls (U+0085) and DEL become spaces too.
        assert_eq!(
            bytes("550 é\u{85}\u{7f}x"),
            "action=550 é  x\n\n".as_bytes()
        );
        // A long header is not cut (replies are cut where they are made).
        let header = format!("PREPEND X-Long: {}", "x".repeat(3000));
        assert_eq!(
            response_bytes(&Action::prepend(&header["PREPEND ".len()..])),
            format!("action={header}\n\n").as_bytes()
        );
    }

    proptest::proptest! {
        #[test]
        fn printable_ascii_eight_at_a_time(bytes in proptest::collection::vec(
            proptest::prop_oneof![4 => 0x20u8..0x7f, 1 => proptest::num::u8::ANY], 0..40)) {
            let plain = bytes.iter().all(|b| (0x20..0x7f).contains(b));
            proptest::prop_assert_eq!(printable_ascii(&bytes), plain);
        }

        #[test]
        fn find_byte_is_the_first_position(bytes in proptest::collection::vec(
            proptest::prop_oneof![
                2 => proptest::num::u8::ANY,
                1 => proptest::sample::select(vec![b'=', b'\n', b'<', b'>', 0x3c, 0x3e, 0x00, 0x80, 0xbd, 0xff]),
            ], 0..40), byte in proptest::sample::select(vec![b'=', b'\n', 0u8, 0x80, 0xff])) {
            let plain = bytes.iter().position(|&b| b == byte);
            proptest::prop_assert_eq!(find_byte(byte, &bytes), plain);
        }

        /// The same request with LF and with CR LF line ends decodes to
        /// the same fields and the same unknown attributes.
        #[test]
        fn crlf_and_lf_decode_alike(values in proptest::collection::vec("[^\n\r\0]{0,20}", 1..8)) {
            let names = ["sender", "size", "x=y", "helo_name", "ccert_subject", "instance", "stress", "z"];
            let wire = |end: &str| {
                let mut w = format!("request=smtpd_access_policy{end}");
                for (name, v) in names.iter().zip(&values) {
                    w.push_str(&format!("{name}={v}{end}"));
                }
                w.push_str(end);
                w.into_bytes()
            };
            let lf = Decoder::new().decode(&mut wire("\n")).unwrap().unwrap();
            let crlf = Decoder::new().decode(&mut wire("\r\n")).unwrap().unwrap();
            proptest::prop_assert_eq!(&lf, &crlf);
            for (name, v) in names.iter().zip(&values) {
                // `x=y` is the name `x` with a value starting `y=`.
                let (name, v) = match name.split_once('=') {
                    Some((n, rest)) => (n, format!("{rest}={v}")),
                    None => (*name, v.clone()),
                };
                proptest::prop_assert_eq!(lf.get(name), v.as_str());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(
            proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..20)) {
            let mut dec = Decoder::new();
            let mut buf = Vec::new();
            'outer: for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match dec.decode(&mut buf) {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
                proptest::prop_assert!(buf.len() <= MAX_REQUEST_BYTES + 300);
            }
        }

        #[test]
        fn valid_requests_roundtrip(values in proptest::collection::vec("[^\n\r\0]{0,40}", 1..10)) {
            let mut wire = String::from("request=smtpd_access_policy\n");
            for (i, v) in values.iter().enumerate() {
                wire.push_str(&format!("x{i}={v}\n"));
            }
            wire.push('\n');
            let mut buf = wire.into_bytes();
            let req = Decoder::new().decode(&mut buf).unwrap().unwrap();
            for (i, v) in values.iter().enumerate() {
                proptest::prop_assert_eq!(req.get(&format!("x{i}")), v.as_str());
            }
        }
    }
}
