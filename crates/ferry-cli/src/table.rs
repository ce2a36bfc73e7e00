//! Tables for the listing commands (`get`, `events`, `history`, `tree`): aligned columns for
//! people, a Markdown table for `-o markdown`, and ages printed the way kubectl prints them.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;

/// Rows under a header; every row has as many cells as the header.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Aligned columns separated by three spaces (kubectl's look); the last column is not
    /// padded. Line breaks inside a cell are flattened so one row stays one line.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|row| row.iter().map(|c| one_line(c)).collect())
            .collect();
        let columns = self.header.len();
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                rows.iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ", width = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// A GitHub-flavoured Markdown table (`|` in cells escaped).
    pub fn markdown(&self) -> String {
        let row = |cells: &[String]| {
            let cells: Vec<String> = cells
                .iter()
                .map(|c| one_line(c).replace('|', "\\|"))
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = row(&self.header);
        out.push_str(&format!("|{}\n", " --- |".repeat(self.header.len())));
        for r in &self.rows {
            out.push_str(&row(r));
        }
        out
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How long ago `then` was, as kubectl prints ages: `45s`, `12m`, `3h`, `5d`, `2y`.
pub fn age(then: &Timestamp, now: &Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 365 * 86400 => format!("{}d", s / 86400),
        s => format!("{}y", s / (365 * 86400)),
    }
}

/// [`age`] of an optional API time, `<unknown>` when there is none.
pub fn age_of(then: Option<&Timestamp>) -> String {
    then.map_or_else(|| "<unknown>".to_string(), |t| age(t, &Timestamp::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_markdown_escapes_pipes() {
        let mut table = Table::new(&["NAME", "READY", "MESSAGE"]);
        table.push(vec!["web".into(), "True".into(), "applied a|b".into()]);
        table.push(vec!["database".into(), "False".into(), "two\nlines".into()]);
        assert_eq!(
            table.render(),
            "NAME       READY   MESSAGE\nweb        True    applied a|b\ndatabase   False   two lines\n"
        );
        assert!(table.markdown().contains("| web | True | applied a\\|b |"));
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: Timestamp = "2026-12-02T12:00:00Z".parse().expect("time");
        let at = |text: &str| age(&text.parse().expect("time"), &now);
        assert_eq!(at("2026-12-02T11:59:15Z"), "45s");
        assert_eq!(at("2026-12-02T11:48:00Z"), "12m");
        assert_eq!(at("2026-12-02T07:00:00Z"), "5h");
        assert_eq!(at("2026-11-27T12:00:00Z"), "5d");
        assert_eq!(at("2024-12-02T12:00:00Z"), "2y");
    }
}
