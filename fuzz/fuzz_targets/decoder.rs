//! The request decoder on arbitrary bytes in arbitrary chunks.
//!
//! Input: 4 bytes of chunk sizes (each byte + 1, used in turn), then the
//! bytes a client sends. The same bytes are decoded twice, in those chunks
//! and all at once, as the server would: after each read, requests are
//! taken off the buffer until the decoder needs more or fails (an error ends
//! the connection). Both ways must give the same requests and the same
//! error, and "need more bytes" must never leave more than
//! MAX_REQUEST_BYTES buffered.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/decoder.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
