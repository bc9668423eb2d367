//! Plain-text forms of values people read: shapes, voxel sizes and matrices as they are
//! written in imaging papers, never Rust's debug formatting.

use std::borrow::Cow;
use std::fmt::Display;

/// `text` safe to print on a terminal: control characters (escape sequences that would
/// set a window title, hide text or move the cursor, carriage returns) are shown as
/// `\u{1b}`-style escapes. Line breaks stay when `keep_lines`; on a line of a list
/// (a file's name and reason) they are escaped too, so one entry stays one line.
pub fn printable(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && !(keep_lines && c == '\n');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `182x218x182`: the dimensions of an image, grid or tensor.
pub fn shape<T: Display>(dims: &[T]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// `1.000x1.000x1.200`: voxel sizes (or any sizes) to a fixed number of decimals.
pub fn sizes(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join("x")
}

/// An affine's rows: `1 0 0 -90; 0 1 0 -126; 0 0 1 -72; 0 0 0 1` (4 significant decimals).
pub fn matrix<const C: usize>(rows: &[[f64; C]]) -> String {
    rows.iter()
        .map(|row| {
            row.iter()
                .map(|v| {
                    let text = format!("{v:.4}");
                    let text = text.trim_end_matches('0').trim_end_matches('.');
                    if text == "-0" {
                        "0".to_string()
                    } else {
                        text.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_carries_no_terminal_control() {
        assert_eq!(printable("plain é", false), "plain é");
        assert_eq!(
            printable("a\u{1b}]0;pwn\u{7}b\rc", true),
            "a\\u{1b}]0;pwn\\u{7}b\\rc"
        );
        assert_eq!(printable("two\nlines", true), "two\nlines");
        assert_eq!(printable("two\nlines", false), "two\\nlines");
    }

    #[test]
    fn shapes_sizes_and_matrices_read_as_plain_numbers() {
        assert_eq!(shape(&[182usize, 218, 182]), "182x218x182");
        assert_eq!(shape::<i64>(&[]), "");
        assert_eq!(sizes(&[1.0, 0.9, 5.0], 3), "1.000x0.900x5.000");
        assert_eq!(
            matrix(&[[1.0, 0.0, -0.0, -90.5], [0.0, 0.0, 0.0, 1.0]]),
            "1 0 0 -90.5; 0 0 0 1"
        );
    }
}
