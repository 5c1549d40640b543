//! Logging setup: stderr (journald picks it up under systemd) or syslog.
//! In `--stdio` mode stderr is the client's socket (spawn(8)), so logs must
//! go to syslog there. Colours only when stderr is a terminal: journald
//! would store the escape codes. [`Escaped`] makes a client's text safe to
//! put in a log line.

use std::borrow::Cow;
use std::ffi::CString;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::Once;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stderr,
    Syslog,
}

/// Installs the global subscriber. The level comes from `RUST_LOG`
/// (default `info`).
pub fn init(target: Target) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match target {
        Target::Stderr => builder
            .with_ansi(io::stderr().is_terminal())
            .with_writer(io::stderr)
            .try_init(),
        Target::Syslog => builder
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_writer(Syslog)
            .try_init(),
    };
}

/// Whether `c` could forge or hide part of a log line: control characters
/// (CR, LF, VT, ESC, NEL ...), the Unicode line and paragraph separators,
/// and the bidirectional formatting characters that reorder what a reader
/// sees.
fn unsafe_in_log(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with every character that could forge or hide part of a log line
/// written as an escape (`\r`, `\x0b`, `\u{2028}`), and `\` as `\\` so
/// that an escape cannot be faked either. Text that needs none is borrowed.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || unsafe_in_log(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if unsafe_in_log(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if unsafe_in_log(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Displays a client-supplied value escaped (see [`escape`]).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// A `MakeWriter` that sends each event to syslog(3), facility mail.
struct Syslog;

static OPENLOG: Once = Once::new();

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine::new(libc::LOG_INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine {
        let priority = match *meta.level() {
            Level::ERROR => libc::LOG_ERR,
            Level::WARN => libc::LOG_WARNING,
            Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        SyslogLine::new(priority)
    }
}

/// Collects one formatted event and hands it to syslog when dropped.
struct SyslogLine {
    priority: libc::c_int,
    buf: Vec<u8>,
}

impl SyslogLine {
    fn new(priority: libc::c_int) -> SyslogLine {
        OPENLOG.call_once(|| {
            // SAFETY: the ident is a static C string that lives forever.
            unsafe { libc::openlog(c"rpol".as_ptr(), libc::LOG_PID, libc::LOG_MAIL) };
        });
        SyslogLine {
            priority,
            buf: Vec::new(),
        }
    }
}

impl Write for SyslogLine {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let line = text.trim_end().replace('\0', " ");
        if line.is_empty() {
            return;
        }
        if let Ok(c) = CString::new(line) {
            // SAFETY: "%s" with one valid C string argument.
            unsafe { libc::syslog(self.priority, c"%s".as_ptr(), c.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_a_line() {
        assert!(matches!(escape("mail.example.com"), Cow::Borrowed(_)));
        assert_eq!(escape("a\rb\nc\td"), "a\\rb\\nc\\td");
        assert_eq!(escape("x\u{b}y\u{1b}[31m"), "x\\x0by\\x1b[31m");
        assert_eq!(
            escape("l\u{2028}p\u{2029}n\u{85}"),
            "l\\u{2028}p\\u{2029}n\\x85"
        );
        assert_eq!(escape("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(escape("a\\rb"), "a\\\\rb");
        assert_eq!(escape("été"), "été");
    }
}
