//! Plain-text forms of values people read: shapes, voxel sizes and matrices as they are
//! written in imaging papers, never Rust's debug formatting.

use std::fmt::Display;

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
