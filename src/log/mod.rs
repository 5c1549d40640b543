//! Logging setup: stderr, syslog or the systemd journal. Under systemd
//! (stderr is the journal: `JOURNAL_STREAM`) or with `--journal`, records
//! go to journald in its native protocol (tracing-journald), each with its
//! priority and the fields of the event (a decision's RPOL_RULE,
//! RPOL_ACTION, CLIENT, ...), so `journalctl -p warning` finds every
//! warning. In `--stdio` mode stderr is the client's socket (spawn(8)), so
//! logs must go to syslog there. Colours only when stderr is a terminal.
//! [`Escaped`] makes a client's text safe to put in a log line,
//! [`Quoted`] also quotes it, [`Redacted`] keeps a URL's login out of one,
//! and [`Repeats`] folds a flood of identical lines into a count.

mod fields;

use std::borrow::Cow;
use std::ffi::CString;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use self::fields::Fields;
use crate::common::lock;
use lru::LruCache;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stderr,
    Syslog,
    /// journald's native protocol, on its socket.
    Journal,
}

/// Whether records go to the journal (set once, by [`init`]): a
/// decision then carries its parts as fields of their own.
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Whether [`init`] sent the records to the journal.
pub fn to_journal() -> bool {
    JOURNAL.load(Ordering::Relaxed)
}

/// Whether stderr is connected to the journal: systemd says so in
/// `JOURNAL_STREAM` (`DEVICE:INODE` of the stream it gave as stderr);
/// the variable alone is not enough, since a child process inherits it
/// with a stderr of its own (systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// journald priorities of the levels: syslog's, as the `Syslog` target
/// and Postfix's own log use them (info is LOG_INFO, not tracing-journald's
/// default LOG_NOTICE).
fn journal_priorities() -> tracing_journald::PriorityMappings {
    use tracing_journald::Priority;
    tracing_journald::PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Installs the global subscriber. The level comes from `RUST_LOG`
/// (default `info`). Without a journal to write to, `Journal` writes to
/// stderr and says why.
pub fn init(target: Target) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if target == Target::Journal {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        match tracing_journald::layer() {
            Ok(layer) => {
                // Field names as they are (RPOL_RULE, CLIENT), not F_...;
                // the identifier is the program's, whatever argv[0] says.
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("rpol".into())
                    .with_priority_mappings(journal_priorities());
                if tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init()
                    .is_ok()
                {
                    JOURNAL.store(true, Ordering::Relaxed);
                }
                return;
            }
            Err(e) => {
                init(Target::Stderr);
                tracing::warn!("cannot write to the journal ({e}): logging to stderr");
                return;
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .fmt_fields(Fields)
        .with_env_filter(filter);
    let _ = match target {
        Target::Journal => Ok(()),
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
/// The text between escapes is copied whole: a request's values can be
/// kilobytes long, and every decision line escapes them.
pub fn escape(text: &str) -> Cow<'_, str> {
    let Some(first) = next_to_escape(text) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    let mut at = Some(first);
    while let Some(i) = at {
        out.push_str(&rest[..i]);
        let Some(c) = rest[i..].chars().next() else {
            break;
        };
        match c {
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
        rest = &rest[i + c.len_utf8()..];
        at = next_to_escape(rest);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Where the first character of `text` that [`escape`] rewrites starts
/// (`\` or [`unsafe_in_log`]). Plain ASCII is skipped eight bytes at a
/// time; only a character beyond ASCII is decoded.
fn next_to_escape(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = skip_plain(bytes, 0);
    while i < bytes.len() {
        let end = i + 8;
        while i < end && i < bytes.len() {
            let b = bytes[i];
            if b < 0x80 {
                if b < 0x20 || b == 0x7f || b == b'\\' {
                    return Some(i);
                }
                i += 1;
            } else {
                let c = text[i..].chars().next()?;
                if unsafe_in_log(c) {
                    return Some(i);
                }
                i += c.len_utf8();
            }
        }
        i = skip_plain(bytes, i);
    }
    None
}

/// The first index from `i` (on) where eight bytes of plain ASCII (see
/// [`plain_word`]) do not follow.
pub(super) fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    while i + 8 <= bytes.len() {
        // Indexed byte by byte, not sliced: in the debug build a slice
        // costs more calls than the check itself.
        let word = [
            bytes[i],
            bytes[i + 1],
            bytes[i + 2],
            bytes[i + 3],
            bytes[i + 4],
            bytes[i + 5],
            bytes[i + 6],
            bytes[i + 7],
        ];
        if !plain_word(u64::from_ne_bytes(word)) {
            break;
        }
        i += 8;
    }
    i
}

/// Whether eight bytes (one word) are printable ASCII (0x20..=0x7e) other
/// than `\`, which no escaping of a log line touches.
fn plain_word(x: u64) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // With every high bit clear no byte carries into the next: adding 0x60
    // sets a byte's high bit iff it is >= 0x20, adding 0x01 iff it is
    // 0x7f; a byte equal to `\` is a zero byte of `y`.
    let ascii = x & HIGH == 0;
    let not_control = x.wrapping_add(0x60 * ONES) & HIGH == HIGH;
    let not_del = x.wrapping_add(ONES) & HIGH == 0;
    let y = x ^ (u64::from(b'\\') * ONES);
    let no_backslash = y.wrapping_sub(ONES) & !y & HIGH == 0;
    ascii && not_control && not_del && no_backslash
}

/// Displays a client-supplied value escaped (see [`escape`]).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// Displays a client-supplied value escaped (see [`escape`]) and in
/// double quotes, a `"` in it as `\"`: a value with spaces (an action's
/// text) cannot run into the next `name=` of the line.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = escape(self.0);
        f.write_str("\"")?;
        if escaped.contains('"') {
            f.write_str(&escaped.replace('"', "\\\""))?;
        } else {
            f.write_str(&escaped)?;
        }
        f.write_str("\"")
    }
}

/// Displays a URL without the user and password it may carry: the
/// userinfo of `scheme://user:password@host` becomes `***`, and so do the
/// values of the query parameters that carry them in Redis's
/// `redis+unix:///path?user=U&pass=P`.
pub struct Redacted<'a>(pub &'a str);

/// Query parameters whose values are credentials.
const SECRET_PARAMETERS: [&str; 4] = ["user", "pass", "username", "password"];

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&redact_url(self.0)))
    }
}

/// See [`Redacted`]. Errs on the side of hiding: the query's secret values
/// go first (a `pass=` value may hold an `@`), then everything before the
/// last `@`, wherever it is (an unencoded `/` or `?` in a password moves
/// where a URL parser would see the host, never what is hidden).
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let masked = match rest.split_once('?') {
        None => rest.to_string(),
        Some((before, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _))
                        if SECRET_PARAMETERS
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(name)) =>
                    {
                        format!("{name}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{before}?{}", pairs.join("&"))
        }
    };
    let hidden = match masked.rsplit_once('@') {
        Some((_, after)) => format!("***@{after}"),
        None => masked,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{hidden}"),
        None => hidden,
    }
}

/// Which decisions get a log line: `[log] decisions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decisions {
    /// Every answer: which rule decided, for each request (the default:
    /// Postfix's own log does not say why mail was let through).
    #[default]
    All,
    /// Rejects, defers and hangups only, as Postfix logs its own.
    Refusals,
    None,
}

/// How long identical lines are counted before the count is logged.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// Distinct lines one window keeps to count their repeats: beyond it, the
/// line seen least lately makes room (its count written then), so a
/// flood is folded whatever came before it. Each is a bounded log line,
/// so this bounds the memory; a flood of one line needs one.
pub const REPEAT_LINES: usize = 64;

/// Identical lines within [`REPEAT_WINDOW`] are written once; how often
/// each came again is written when the window closes, as syslogd's "last
/// message repeated N times" does (but for any of [`REPEAT_LINES`] lines,
/// since connections interleave).
#[derive(Default)]
pub struct Repeats(Mutex<Window>);

struct Window {
    started: Option<Instant>,
    /// Each line of this window and how often it came again, the line
    /// seen least lately first out.
    seen: LruCache<String, u64>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            started: None,
            seen: LruCache::new(NonZeroUsize::new(REPEAT_LINES).unwrap_or(NonZeroUsize::MIN)),
        }
    }
}

impl Repeats {
    /// Counts `line`. Returns the summaries to write first (of the window
    /// that just closed, or of the line that made room for this one) and
    /// whether `line` is to be written now: its first time in this window
    /// or since it made room.
    pub fn note(&self, line: &str, now: Instant) -> (Vec<String>, bool) {
        let mut w = lock(&self.0);
        let mut summaries = w.close_if_due(now, false);
        if w.started.is_none() {
            w.started = Some(now);
        }
        if let Some(n) = w.seen.get_mut(line) {
            *n += 1;
            return (summaries, false);
        }
        if let Some((old, n)) = w.seen.push(line.to_string(), 0)
            && n > 0
        {
            summaries.push(repeated(n, &old));
        }
        (summaries, true)
    }

    /// The summaries of the window, if it is due (`now` past its end) or
    /// `force`d (at shutdown).
    pub fn flush(&self, now: Instant, force: bool) -> Vec<String> {
        let mut w = lock(&self.0);
        w.close_if_due(now, force)
    }
}

impl Window {
    fn close_if_due(&mut self, now: Instant, force: bool) -> Vec<String> {
        match self.started {
            Some(t) if force || now.duration_since(t) >= REPEAT_WINDOW => {}
            _ => return Vec::new(),
        }
        self.started = None;
        let mut out = Vec::new();
        while let Some((line, n)) = self.seen.pop_lru() {
            if n > 0 {
                out.push(repeated(n, &line));
            }
        }
        out.sort();
        out
    }
}

/// The summary of a line that came `n` more times.
fn repeated(n: u64, line: &str) -> String {
    format!("repeated {n} more time(s): {line}")
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
    use tracing_subscriber::fmt::FormatFields;

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

    /// The escaping as first written, a character at a time.
    fn escape_per_char(text: &str) -> String {
        let mut out = String::new();
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
        out
    }

    /// Text of plain runs and the characters any escaping touches, at
    /// every offset within a word.
    fn log_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let special = prop_oneof![
            Just('\\'),
            Just('\u{7f}'),
            Just('\u{85}'),
            Just('\u{9f}'),
            Just('\u{a0}'),
            Just('\u{2028}'),
            Just('\u{202e}'),
            Just('\u{2069}'),
            Just('é'),
            Just('\u{1F600}'),
            (0u8..0x20).prop_map(char::from),
        ];
        let piece = prop_oneof![
            4 => "[ -~]{0,19}",
            2 => special.prop_map(String::from),
            1 => any::<String>(),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #[test]
        fn escape_is_the_per_character_escaping(text in log_text()) {
            let escaped = escape(&text);
            proptest::prop_assert_eq!(&*escaped, escape_per_char(&text));
            proptest::prop_assert_eq!(matches!(escaped, Cow::Borrowed(_)), escaped == text);
        }

        #[test]
        fn fields_write_what_tracing_subscriber_writes(text in log_text()) {
            let ours = rendered(Fields, || events(&text));
            let theirs = rendered(
                tracing_subscriber::fmt::format::DefaultFields::new(),
                || events(&text),
            );
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    /// Every byte value at every place of a word.
    #[test]
    fn plain_word_finds_any_one_byte() {
        for at in 0..8 {
            for b in 0..=255u8 {
                let mut word = *b"abcd ~AZ";
                word[at] = b;
                let plain = word
                    .iter()
                    .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\');
                assert_eq!(
                    plain_word(u64::from_ne_bytes(word)),
                    plain,
                    "byte {b:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn a_message_is_rid_of_terminal_escapes() {
        let text = "a\u{1b}[31mb\u{7}c\u{8}\u{c}\u{7f}\u{85}\u{9f}\u{a0}\td\\é";
        let out = rendered(Fields, || tracing::info!("{text}"));
        assert_eq!(
            out,
            " INFO rpol::log::tests: a\\x1b[31mb\\x07c\\x08\\x0c\\x7f\\u{85}\\u{9f}\u{a0}\td\\é\n"
        );
        assert_eq!(
            out,
            rendered(
                tracing_subscriber::fmt::format::DefaultFields::new(),
                || { tracing::info!("{text}") }
            )
        );
    }

    /// Events with `text` in the message and in fields of each kind,
    /// before and after the message.
    fn events(text: &str) {
        tracing::info!("{text}");
        tracing::info!(target: "rpol::decision", "{text}");
        tracing::warn!(n = 3, s = text, "{text} and more");
        tracing::info!(message = text);
        tracing::info!(n = 1, message = text);
        tracing::info!(d = ?text, r#type = "x", shown = %text, "m {text}");
        let err = io::Error::other(text.to_string());
        tracing::error!(error = &err as &(dyn std::error::Error + 'static), "{text}");
        tracing::info!(flag = true, f = 1.5, i = -2, u = 7u64);
    }

    /// Log lines in a buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What a subscriber formatting fields with `fields` writes (no time,
    /// no colours) for the events of `emit`.
    fn rendered<N>(fields: N, emit: impl FnOnce()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(fields)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = lock(&buffer.0).clone();
        String::from_utf8(bytes).expect("UTF-8 log")
    }

    #[test]
    fn quoted_values_cannot_end_early() {
        let q = |t: &str| Quoted(t).to_string();
        assert_eq!(q("PREPEND X-A: b c"), "\"PREPEND X-A: b c\"");
        assert_eq!(q("a\" client=x"), "\"a\\\" client=x\"");
        assert_eq!(q("a\\\" b"), "\"a\\\\\\\" b\"");
        assert_eq!(q("x\ny"), "\"x\\ny\"");
        assert_eq!(q(""), "\"\"");
    }

    #[test]
    fn urls_lose_their_login() {
        let r = |u: &str| Redacted(u).to_string();
        assert_eq!(r("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(r("redis://:pw@host/"), "redis://***@host/");
        assert_eq!(
            r("rediss://u:p@w@[::1]:6379/2"),
            "rediss://***@[::1]:6379/2"
        );
        assert_eq!(r("redis://u:p@host"), "redis://***@host");
        assert_eq!(
            r("redis+unix:///run/r.sock?db=1&PASS=x&user=y&z"),
            "redis+unix:///run/r.sock?db=1&PASS=***&user=***&z"
        );
        assert_eq!(r("unix:///r.sock?pass=a@b/c"), "unix:///r.sock?pass=***");
        assert_eq!(r("redis://u:pa?ss@host/"), "redis://***@host/");
        assert_eq!(r("redis://u:pa/ss@host/"), "redis://***@host/");
        assert_eq!(r("redis://h/\n?x=\r"), "redis://h/\\n?x=\\r");
    }

    #[test]
    fn identical_lines_in_a_window_are_counted() {
        let repeats = Repeats::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let none = Vec::<String>::new();
        assert_eq!(repeats.note("a", at(0)), (none.clone(), true));
        assert_eq!(repeats.note("a", at(10)), (none.clone(), false));
        assert_eq!(repeats.note("b", at(20)), (none.clone(), true));
        assert_eq!(repeats.note("a", at(30)), (none.clone(), false));
        assert_eq!(repeats.flush(at(999), false), none);
        assert_eq!(
            repeats.note("b", at(1_000)),
            (vec!["repeated 2 more time(s): a".to_string()], true)
        );
        assert_eq!(repeats.note("b", at(1_001)), (none.clone(), false));
        assert_eq!(
            repeats.flush(at(1_002), true),
            vec!["repeated 1 more time(s): b".to_string()]
        );
        assert_eq!(repeats.flush(at(5_000), true), none);
    }

    #[test]
    fn a_full_window_makes_room_for_a_new_line() {
        let repeats = Repeats::default();
        let now = Instant::now();
        for i in 0..REPEAT_LINES {
            assert!(repeats.note(&i.to_string(), now).1);
        }
        // 64 distinct lines do not open the window to a flood.
        assert!(repeats.note("new", now).1);
        assert!(!repeats.note("new", now).1);
        assert!(!repeats.note("new", now).1);
        // The line seen least lately made room ("0"), silently (it never
        // came again); a line that did has its count written as it goes.
        assert_eq!(repeats.note("0", now), (vec![], true));
        assert!(!repeats.note("2", now).1);
        for i in 0..REPEAT_LINES - 1 {
            repeats.note(&format!("x{i}"), now);
        }
        assert_eq!(
            repeats.note("y", now),
            (vec!["repeated 1 more time(s): 2".to_string()], true)
        );
    }
}
