//! Plain-text tables of the `stream` and `cluster` commands.

use std::fmt::Write as _;

/// Left-aligned columns two spaces apart, one line per row, no trailing
/// blanks. The last cell of a row is not padded: nothing follows it, so
/// padding would only be trimmed off again.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A header row.
pub fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|cell| (*cell).to_owned()).collect()
}

/// A cell for a value that may be unknown: `-` then.
pub fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_by_characters_and_lines_end_without_blanks() {
        let rows = vec![
            row(["A", "LONG HEADER", "Z"]),
            vec!["ünïcode".into(), String::new(), String::new()],
            vec!["x".into(), "y".into()],
        ];
        assert_eq!(
            table(&rows),
            "A        LONG HEADER  Z\n\
             ünïcode\n\
             x        y\n"
        );
    }
}
