//! Finding line numbers in TOML text, for error messages that point at the right line.
//!
//! toml gives byte spans, but only for what was deserialized as `Spanned` — and for an
//! array-of-tables entry the span covers just its `[[stream]]` header. Validation errors
//! about one field therefore need a small line scan of that table's text, done here.

use std::ops::Range;

/// A TOML document's text, for offset → line lookups.
pub struct TomlLines<'a> {
    text: &'a str,
}

impl<'a> TomlLines<'a> {
    pub fn new(text: &'a str) -> Self {
        TomlLines { text }
    }

    /// The 1-based line holding byte `offset` (clamped to the text).
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }

    /// The text of the line holding byte `offset`, without its line ending.
    pub fn line_text(&self, offset: usize) -> &'a str {
        let start = self
            .text
            .get(..offset)
            .and_then(|t| t.rfind('\n'))
            .map_or(0, |i| i + 1);
        self.text
            .get(start..)
            .and_then(|t| t.lines().next())
            .unwrap_or("")
    }

    /// Byte ranges of array-of-tables entries given their header offsets: each runs to the
    /// next header (only that array's tables and their `[stream.x]` sub-tables can follow
    /// the first header, since top-level keys must come before any table).
    pub fn table_ranges(&self, header_starts: &[usize]) -> Vec<Range<usize>> {
        let ends = header_starts
            .iter()
            .skip(1)
            .copied()
            .chain([self.text.len()]);
        header_starts
            .iter()
            .zip(ends)
            .map(|(&start, end)| start..end.max(start))
            .collect()
    }

    /// The line of `field` (a dotted path such as `webrtc.video_pt`) inside `table`: the
    /// whole path as a dotted key first, then its first segment (`webrtc = { … }` or a
    /// `[stream.webrtc]` header). Falls back to the table's first line.
    pub fn field_line(&self, table: Range<usize>, field: &str) -> usize {
        let body = self.text.get(table.clone()).unwrap_or("");
        let first = field.split('.').next().unwrap_or(field);
        for wanted in [field, first] {
            let mut offset = table.start;
            for line in body.split_inclusive('\n') {
                let hit = key_of(line)
                    .is_some_and(|k| k == wanted || k.starts_with(&format!("{wanted}.")));
                if hit {
                    return self.line_of(offset);
                }
                offset += line.len();
            }
        }
        self.line_of(table.start)
    }
}

/// The (unquoted, dotted) key a `key = value` line assigns, or for a sub-table header such
/// as `[stream.webrtc]` the key below `stream` (`webrtc`); None for other lines.
pub fn key_of(line: &str) -> Option<String> {
    let line = line.trim_start();
    if let Some(header) = line.strip_prefix('[').and_then(|l| l.split_once(']')) {
        return header
            .0
            .trim()
            .strip_prefix("stream.")
            .map(|k| k.trim().to_string());
    }
    let (key, _) = line.split_once('=')?;
    let parts: Vec<&str> = key
        .split('.')
        .map(|p| p.trim().trim_matches('"').trim_matches('\''))
        .collect();
    let key = parts.join(".");
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    (!key.is_empty() && key.chars().all(plain)).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_lines() {
        assert_eq!(key_of("  linger = 5 # c").as_deref(), Some("linger"));
        assert_eq!(key_of("\"id\" = \"x\"").as_deref(), Some("id"));
        assert_eq!(
            key_of("webrtc . video_pt = 5").as_deref(),
            Some("webrtc.video_pt")
        );
        assert_eq!(key_of("[stream.webrtc]").as_deref(), Some("webrtc"));
        assert_eq!(key_of("[[stream]]"), None);
        assert_eq!(key_of("# linger = 5"), None);
        assert_eq!(key_of("  \"-vf\", \"scale=640:-2\","), None);
        assert_eq!(key_of("]"), None);
    }

    const DOC: &str = "a = 1\n[[stream]]\nid = \"x\"\nwebrtc = { video_pt = 5 }\n\n[[stream]]\nid = \"y\"\n[stream.webrtc]\nvideo_pt = 5\n";

    #[test]
    fn lines_and_tables() {
        let doc = TomlLines::new(DOC);
        assert_eq!(
            (doc.line_of(0), doc.line_of(6), doc.line_of(10_000)),
            (1, 2, 10)
        );
        assert_eq!(doc.line_text(DOC.find("id").unwrap() + 2), "id = \"x\"");
        let starts: Vec<usize> = DOC.match_indices("[[stream]]").map(|(i, _)| i).collect();
        let tables = doc.table_ranges(&starts);
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[1].end, DOC.len());
        assert_eq!(doc.field_line(tables[0].clone(), "webrtc.video_pt"), 4);
        assert_eq!(doc.field_line(tables[1].clone(), "webrtc.video_pt"), 8);
        assert_eq!(doc.field_line(tables[1].clone(), "id"), 7);
        assert_eq!(doc.field_line(tables[1].clone(), "linger"), 6);
    }
}
