//! Printing for people: aligned tables, and text from the store made safe
//! for a terminal.

use std::io::{self, Write};

use anyhow::{Context, Result};

/// Escapes control characters, so that a description chosen by someone
/// else cannot move the cursor or recolour the terminal.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Prints `rows` under `header`, each column padded to its widest cell.
pub(crate) fn print_table(header: &[&str], rows: Vec<Vec<String>>) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    let header = header.iter().map(|title| (*title).to_owned()).collect();
    for row in std::iter::once(header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push('\n');
    }

    let mut stdout = io::stdout().lock();
    match stdout.write_all(out.as_bytes()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(err).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("a\x1b[31mred\nb"), "a\\u{1b}[31mred\\nb");
        assert_eq!(sanitize("plain ünïcode"), "plain ünïcode");
    }
}
