//! The fmt layer's field formatter: tracing-subscriber's own, with the
//! message rid of terminal escapes a run of bytes at a time.

use std::fmt::{self, Write as _};

use super::skip_plain;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The fmt layer's fields: tracing-subscriber's own (`DefaultFields`),
/// but the message, which it rids of terminal escapes (ESC, BEL, BS, FF,
/// DEL and the C1 controls written as escapes) a character at a time,
/// rid of them the same way a run of bytes at a time: a decision line
/// holds a request's values, up to kilobytes of them. The same output,
/// byte for byte.
pub(super) struct Fields;

impl<'w> FormatFields<'w> for Fields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = FieldsVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// [`Fields`]' visitor: `DefaultVisitor`'s, the message written here.
struct FieldsVisitor<'w> {
    writer: Writer<'w>,
    /// Nothing written yet (no space before the next field).
    is_empty: bool,
    result: fmt::Result,
}

impl FieldsVisitor<'_> {
    /// A field other than the message, as tracing-subscriber writes it.
    fn other(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // tracing-log's metadata fields are not written.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// The message, after a space if a field came before it.
    fn message(&mut self, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if !self.is_empty {
            // As DefaultVisitor, the result is the message's write's.
            let _ = self.writer.write_str(" ");
        }
        self.is_empty = false;
        self.result = if self.writer.sanitizes_ansi_escapes() {
            write!(Sanitizing(&mut self.writer), "{value:?}")
        } else {
            write!(self.writer, "{value:?}")
        };
    }
}

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message(&format_args!("{value}"));
        } else {
            self.other(field, |v| v.record_str(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.other(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message(value);
        } else {
            self.other(field, |v| v.record_debug(field, value));
        }
    }
}

/// Writes text as tracing-subscriber's sanitising writer does: ESC, BEL,
/// BS, FF and DEL as `\x1b` ..., a C1 control (U+0080..U+009F) as
/// `\u{85}`; the runs between them whole.
struct Sanitizing<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Sanitizing<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut run = 0;
        let mut i = skip_plain(bytes, 0);
        while i < bytes.len() {
            let b = bytes[i];
            // A C1 control is U+0080..U+009F: 0xc2 and a second byte of
            // 0x80..=0x9f in UTF-8.
            let c1 = b == 0xc2 && matches!(bytes.get(i + 1), Some(&(0x80..=0x9f)));
            if !c1 && !matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f) {
                i = skip_plain(bytes, i + 1);
                continue;
            }
            self.0.write_str(&s[run..i])?;
            if c1 {
                write!(self.0, "\\u{{{:x}}}", bytes[i + 1])?;
                i += 2;
            } else {
                write!(self.0, "\\x{b:02x}")?;
                i += 1;
            }
            run = i;
        }
        self.0.write_str(&s[run..])
    }
}
