//! Configuration errors and where they point. A [`ConfigError`] reads
//! `file:line:col: key: message`; [`ConfigErrors`] is every error of one
//! load. This file also owns the compiler's way of recording an error and
//! the mapping from byte offsets and key paths to lines and columns.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

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
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.path.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }
}

/// Where the key at dotted `path` is written, for unknown-key errors.
/// `path` is serde_ignored's: an element of an array of tables is named by
/// its index (`site.foreign_sender.1.bogus`).
pub(super) fn key_span(text: &str, path: &str) -> Range<usize> {
    use toml::de::{DeTable, DeValue};
    let Ok(root) = DeTable::parse(text) else {
        return 0..0;
    };
    let mut table = root.get_ref();
    let mut span = 0..0;
    let mut segments = path.split('.');
    while let Some(segment) = segments.next() {
        let Some((key, mut value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == segment)
        else {
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

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_positions() {
        let text = "[a]\nx = 1\n[[a.list]]\ny = 1\n[[a.list]]\nz = 1\n";
        let at = |path| line_col(text, key_span(text, path).start);
        assert_eq!(at("a.x"), (2, 1));
        assert_eq!(at("a.list.0.y"), (4, 1));
        assert_eq!(at("a.list.1.z"), (6, 1));
        // A key that is not written: the nearest written ancestor.
        assert_eq!(at("a.list.1.w"), (3, 5));
        assert_eq!(at("nowhere"), (1, 1));
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
