//! Configuration errors and where they point. A [`ConfigError`] reads
//! `file:line:col: key: message`; [`ConfigErrors`] is every error of one
//! load. This file also owns the compiler's way of recording an error and
//! the mapping from byte offsets and key paths to lines and columns.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

use super::Compiler;

/// One configuration error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All the errors of one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Compiler<'_> {
    /// Records an error at `span` (a byte range of the config text) for
    /// `key`: the one way compilation reports a problem, so every error
    /// carries its file, line and column.
    pub(super) fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = self.positions.line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.path.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }
}

/// Where the key at dotted `path` is written in the parsed document
/// `root`, for unknown-key errors. `path` is serde_ignored's: an element of
/// an array of tables is named by its index (`site.foreign_sender.1.bogus`).
/// The caller parses the text once for all unknown keys, and each segment
/// is looked up in its table's map: a parse and a scan of the table per key
/// made loading quadratic (16 KB with 2,000 unknown keys took 2.7 s, 350 KB
/// did not finish in two minutes).
pub(super) fn key_span(root: &DeTable<'_>, path: &str) -> Range<usize> {
    let mut table = root;
    let mut span = 0..0;
    let mut segments = path.split('.');
    while let Some(segment) = segments.next() {
        let Some((key, mut value)) = table.get_key_value(segment) else {
            break;
        };
        span = key.span();
        if let DeValue::Array(items) = value.get_ref() {
            let item = segments
                .next()
                .and_then(|index| index.parse::<usize>().ok())
                .and_then(|index| items.get(index));
            let Some(item) = item else {
                break;
            };
            value = item;
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    span
}

/// The dotted path of the innermost key whose value holds byte `offset`
/// of the text `root` was parsed from (a table in an array by its index,
/// as serde_ignored names it; an array of values by its own key), or `""`
/// when none does: names the key of an error serde reports only by
/// position (a value of the wrong type).
pub(super) fn key_at(root: &DeTable<'_>, offset: usize) -> String {
    let mut path = Vec::new();
    if find_key(root, offset, &mut path) {
        path.join(".")
    } else {
        String::new()
    }
}

/// [`key_at`]'s walk. A table is searched whatever its span (a `[header]`
/// table's span is its header, not its keys); a scalar or an array of
/// values matches when its span holds `offset`.
fn find_key(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        let found = match value.get_ref() {
            DeValue::Table(t) => find_key(t, offset, path),
            DeValue::Array(items) => {
                items
                    .iter()
                    .enumerate()
                    .any(|(index, item)| match item.get_ref() {
                        DeValue::Table(t) => {
                            path.push(index.to_string());
                            let found = find_key(t, offset, path);
                            if !found {
                                path.pop();
                            }
                            found
                        }
                        _ => item.span().contains(&offset),
                    })
            }
            _ => value.span().contains(&offset),
        };
        if found {
            return true;
        }
        path.pop();
    }
    false
}

/// serde's message for a value of the wrong type or range, in TOML's words
/// instead of Rust's: `invalid type: string "2", expected usize` becomes
/// `expected an integer, found a string "2"`. Any other message is kept.
pub(super) fn toml_message(message: &str) -> String {
    let (found, expected) = if let Some(rest) = message.strip_prefix("invalid type: ") {
        match rest.rsplit_once(", expected ") {
            Some((found, expected)) => (found, expected),
            None => return message.to_string(),
        }
    } else if let Some(rest) = message.strip_prefix("invalid value: ") {
        match rest.rsplit_once(", expected ") {
            Some((found, expected)) => (found, expected),
            None => return message.to_string(),
        }
    } else {
        return message.to_string();
    };
    let expected = match expected {
        "usize" | "u64" => "an integer from 0 to 18446744073709551615".to_string(),
        "u32" => "an integer from 0 to 4294967295".to_string(),
        "u16" => "an integer from 0 to 65535".to_string(),
        "u8" => "an integer from 0 to 255".to_string(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "an integer".to_string(),
        "f64" | "f32" => "a number".to_string(),
        "a boolean" | "bool" => "a boolean (true or false)".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        e if e.starts_with("struct ") => "a table".to_string(),
        e => e.to_string(),
    };
    // An integer of the wrong range is still an integer: say only which.
    let expected = match message.starts_with("invalid type: ") {
        true => expected
            .split_once(" from ")
            .map_or(expected.clone(), |(kind, _)| kind.to_string()),
        false => expected,
    };
    let found = found
        .replace("floating point", "float")
        .replace("sequence", "array")
        .replace("map", "table");
    let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("expected {expected}, found {article} {found}")
}

/// 1-based lines and columns (in characters) of byte offsets of one text.
/// The line starts are found once, and a column is counted on from the
/// previous position when errors come in document order (unknown keys do),
/// so thousands of errors cost about one pass over the text: a scan from
/// the start per error made a config with many errors load in quadratic
/// time (350 KB with 40,000 unknown keys took 9 s).
#[derive(Debug, Default)]
pub(super) struct Positions {
    /// Byte offset of each line's start; empty until the first error.
    line_starts: Vec<usize>,
    /// The previous answer: offset, line, column.
    last: (usize, usize, usize),
}

impl Positions {
    pub(super) fn line_col(&mut self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        if self.line_starts.is_empty() {
            self.line_starts = std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect();
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let (last_offset, last_line, last_column) = self.last;
        let column = if last_line == line && (line_start..=offset).contains(&last_offset) {
            last_column + text[last_offset..offset].chars().count()
        } else {
            text[line_start..offset].chars().count() + 1
        };
        self.last = (offset, line, column);
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_positions() {
        let text = "[a]\nx = 1\n[[a.list]]\ny = 1\n[[a.list]]\nz = 1\n";
        let root = DeTable::parse(text).unwrap();
        let mut positions = Positions::default();
        let mut at = |path| positions.line_col(text, key_span(root.get_ref(), path).start);
        assert_eq!(at("a.x"), (2, 1));
        assert_eq!(at("a.list.0.y"), (4, 1));
        assert_eq!(at("a.list.1.z"), (6, 1));
        // A key that is not written: the nearest written ancestor.
        assert_eq!(at("a.list.1.w"), (3, 5));
        assert_eq!(at("nowhere"), (1, 1));
    }

    #[test]
    fn keys_at_offsets() {
        let text = "[a]\nx = \"2\"\n[[a.list]]\ny = 1\n[[a.list]]\nz = [1, \"w\"]\n";
        let root = DeTable::parse(text).unwrap();
        let at = |needle: &str| key_at(root.get_ref(), text.find(needle).unwrap());
        assert_eq!(at("\"2\""), "a.x");
        assert_eq!(at("1\n[[a"), "a.list.0.y");
        assert_eq!(at("\"w\""), "a.list.1.z");
        assert_eq!(key_at(root.get_ref(), 0), "");
    }

    #[test]
    fn type_errors_in_toml_words() {
        for (serde, want) in [
            (
                "invalid type: string \"2\", expected usize",
                "expected an integer, found a string \"2\"",
            ),
            (
                "invalid type: integer `1`, expected a string",
                "expected a string, found an integer `1`",
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                "expected a boolean (true or false), found a string \"yes\"",
            ),
            (
                "invalid type: string \"x\", expected a sequence",
                "expected an array, found a string \"x\"",
            ),
            (
                "invalid type: floating point `1.5`, expected u32",
                "expected an integer, found a float `1.5`",
            ),
            (
                "invalid value: integer `-1`, expected u32",
                "expected an integer from 0 to 4294967295, found an integer `-1`",
            ),
            ("missing field `name`", "missing field `name`"),
        ] {
            assert_eq!(toml_message(serde), want, "{serde}");
        }
    }

    #[test]
    fn line_and_column() {
        let text = "ab\ncé\nxyz";
        let mut positions = Positions::default();
        // In order, out of order, at line starts and at the end.
        for (offset, want) in [
            (0, (1, 1)),
            (4, (2, 2)),
            (6, (2, 3)),
            (1, (1, 2)),
            (7, (3, 1)),
            (9, (3, 3)),
            (10, (3, 4)),
            (99, (3, 4)),
            (3, (2, 1)),
        ] {
            assert_eq!(positions.line_col(text, offset), want, "offset {offset}");
        }
    }
}
