//! TOML documents edited as text, table by table, so that whatever a person
//! wrote in a file we merge into (comments, order, spacing) stays as it was.
//! Parsing to a tree and printing it again would lose all of that.

/// A document cut at its table headers.
pub struct Sections {
    /// Everything before the first table header: top-level keys and comments.
    pub preamble: String,
    /// Each table: its header line (trimmed) and its full text, header included.
    pub tables: Vec<Table>,
}

/// One `[table]` or `[[array.of.tables]]` and the lines up to the next header.
pub struct Table {
    /// The header line, trimmed, e.g. `[host."http://127.0.0.1:65001"]`.
    pub header: String,
    /// The header line and the lines that follow it, each ending in a newline.
    pub text: String,
}

impl Sections {
    /// Cuts `text` at every line that starts (after indentation) with `[`.
    pub fn parse(text: &str) -> Sections {
        let mut preamble = String::new();
        let mut tables: Vec<Table> = Vec::new();
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim();
            let line = if line.ends_with('\n') { line.to_owned() } else { format!("{line}\n") };
            if trimmed.starts_with('[') {
                tables.push(Table { header: trimmed.to_owned(), text: line });
            } else if let Some(table) = tables.last_mut() {
                table.text.push_str(&line);
            } else {
                preamble.push_str(&line);
            }
        }
        Sections { preamble, tables }
    }
}

impl Table {
    /// The string value of `key` in this table, if it is set on a line of its own.
    pub fn string_value(&self, key: &str) -> Option<String> {
        self.text.lines().skip(1).find_map(|line| string_assignment(line, key))
    }
}

/// `Some(value)` if `line` is `key = "value"` (spaces and a comment allowed).
pub fn string_assignment(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    if k.trim() != key {
        return None;
    }
    let v = v.trim();
    let rest = v.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

/// `s` as a TOML basic string, quotes included.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Joins blocks of text with one blank line between them, each ending in one newline.
pub fn join_blocks<'a>(blocks: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for block in blocks {
        let block = block.trim_end();
        if block.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(block);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_cut_at_its_table_headers_and_nothing_is_lost() {
        let text = "# top\nserver = \"x\"\n\n[a]\n  k = 1\n\n[[b]]\nprefix = \"p\" # note\n[[b.c]]\n";
        let s = Sections::parse(text);
        assert_eq!(s.preamble, "# top\nserver = \"x\"\n\n");
        let headers: Vec<&str> = s.tables.iter().map(|t| t.header.as_str()).collect();
        assert_eq!(headers, ["[a]", "[[b]]", "[[b.c]]"]);
        assert_eq!(s.tables[1].string_value("prefix").as_deref(), Some("p"));
        let rebuilt: String =
            std::iter::once(s.preamble.clone()).chain(s.tables.iter().map(|t| t.text.clone())).collect();
        assert_eq!(rebuilt, text);
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
