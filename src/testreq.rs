//! `--test-request`: evaluate requests read from a file or stdin exactly as
//! the server would, print the response bytes on stdout and a readable
//! trace on stderr.
//!
//! Unlike the server, this mode lets `request=` be absent, skips blank
//! lines between requests, and ends an unterminated last request at end of
//! input, so hand-written requests can stay short.

use std::io::{self, Read, Write};

use crate::policy::{Policy, evaluate};
use crate::protocol::{Action, Decoder, encode_response};
use crate::state::State;

/// Evaluates every request in `input`. Returns the number answered, or the
/// protocol error that stopped the run (after writing the error action, as
/// the server would).
pub async fn run(
    policy: &Policy,
    state: &State,
    error_action: &Action,
    mut input: impl Read,
    out: &mut impl Write,
    trace: &mut impl Write,
) -> io::Result<usize> {
    let mut buf = Vec::new();
    input.read_to_end(&mut buf)?;
    if !buf.is_empty() && !buf.ends_with(b"\n\n") {
        buf.extend_from_slice(if buf.ends_with(b"\n") { b"\n" } else { b"\n\n" });
    }
    let mut decoder = Decoder::new();
    let mut answered = 0;
    loop {
        let blank = buf
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        buf.drain(..blank);
        if buf.is_empty() {
            return Ok(answered);
        }
        let request = match decoder.decode(&mut buf) {
            Ok(None) => return Ok(answered),
            Ok(Some(req)) => req.check_kind(false).map(|()| req),
            Err(e) => Err(e),
        };
        let request = match request {
            Ok(req) => req,
            Err(e) => {
                let mut bytes = Vec::new();
                encode_response(error_action, &mut bytes);
                out.write_all(&bytes)?;
                writeln!(trace, "request {}: malformed: {e}", answered + 1)?;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        };
        answered += 1;
        let decision = evaluate(policy, state, &request, true).await;
        writeln!(trace, "request {answered}:")?;
        for line in &decision.trace {
            writeln!(trace, "  {line}")?;
        }
        writeln!(trace, "  action={}", decision.action)?;
        let mut bytes = Vec::new();
        encode_response(&decision.action, &mut bytes);
        out.write_all(&bytes)?;
        out.flush()?;
    }
}
