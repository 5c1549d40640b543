//! The request decoder on arbitrary bytes in arbitrary chunks.
//!
//! Input: 4 bytes of chunk sizes (each byte + 1, used in turn), then the
//! bytes a client sends. The same bytes are decoded twice, in those chunks
//! and all at once, as the server would: after each read, requests are
//! taken off the buffer until the decoder needs more or fails (an error ends
//! the connection). Both ways must give the same requests and the same
//! error, and "need more bytes" must never leave more than
//! MAX_REQUEST_BYTES buffered.
//!
//! The body of the fuzz target of the same name, shared with the replay of
//! its regressions in tests/fuzz_regressions.rs.

use rpol::log::escape;
use rpol::protocol::{Action, Decoder, MAX_REQUEST_BYTES, ProtocolError, Request, encode_response};

/// Feeds `chunks` to one decoder; the requests, and the error that ended
/// the connection if one did.
fn decode<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Request>, Option<ProtocolError>) {
    let mut decoder = Decoder::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => out.push(request),
                Ok(None) => {
                    assert!(
                        buf.len() <= MAX_REQUEST_BYTES,
                        "{} bytes buffered",
                        buf.len()
                    );
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// One input of the target.
pub fn run(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (sizes, bytes) = data.split_at(4);
    let mut rest = bytes;
    let mut turn = 0;
    let chunks = std::iter::from_fn(|| {
        if rest.is_empty() {
            return None;
        }
        let size = (usize::from(sizes[turn % sizes.len()]) + 1).min(rest.len());
        turn += 1;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    });
    let chunked = decode(chunks);
    let whole = decode(std::iter::once(bytes));
    assert_eq!(chunked, whole, "chunked and whole decoding differ");

    for request in &chunked.0 {
        // What the server does with each request before the chain.
        let _ = request.check_kind(true);
        let _ = request.state();
        let _ = request.client_ip();
        let _ = request.client_label();
        for value in [&request.sender, &request.recipient, &request.helo_name] {
            assert!(!value.contains('\n'), "a value holds a newline: {value:?}");
            // What reaches a log line: no character that ends or hides one.
            let escaped = escape(value);
            assert!(
                !escaped
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
                "escaped value still holds a control character: {escaped:?}"
            );
        }
        let mut out = Vec::new();
        // Client text in a reply, as a rule's reply may carry it.
        let action = Action::reply(550, "5.7.1", request.helo_name.clone());
        encode_response(&action, &mut out);
        assert!(out.ends_with(b"\n\n"));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
    }
}
