//! Preview montage of a synthetic warehouse: one row per ground-truth class, mid-axial
//! slices, each row labelled with its class and grade.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::Path;

use super::SynthError;
use super::artefacts::{Artefact, percentile};
use super::font::{GLYPH_HEIGHT, draw_text, text_width};
use super::rejects::RejectKind;
use super::truth::DERIVATIVES;
use crate::imaging::load_volume;

/// Pixel size of one preview tile.
pub const TILE: usize = 112;
/// Examples shown per class row.
pub const COLUMNS: usize = 6;
/// Font pixels per glyph pixel in the row labels.
pub const LABEL_SCALE: usize = 2;
/// Label text is white on the montage's dark grey.
pub const LABEL_INK: u8 = 255;
const BACKGROUND: u8 = 40;
const GAP: usize = 2;
const LABEL_MARGIN: usize = 6;

/// Row order of the montage: good, each artefact at grade 1 then 2, each reject kind.
pub fn montage_rows() -> Vec<String> {
    let mut rows = vec!["good".to_string()];
    for a in Artefact::ALL {
        rows.push(format!("{}_1", a.name()));
        rows.push(format!("{}_2", a.name()));
    }
    for kind in RejectKind::ALL {
        rows.push(format!("reject_{}", kind.name()));
    }
    rows
}

/// The two lines that label a montage row: the class, then the grade or the reject
/// reason (`MOTION` / `GRADE 2`, `REJECT` / `TRUNCATED_FOV`, `GOOD` / `GRADE 0`).
pub fn row_label(class: &str) -> [String; 2] {
    if let Some(kind) = class.strip_prefix("reject_") {
        return ["REJECT".into(), kind.to_ascii_uppercase()];
    }
    if class == "good" {
        return ["GOOD".into(), "GRADE 0".into()];
    }
    match class.rsplit_once('_') {
        Some((artefact, grade)) if grade.chars().all(|c| c.is_ascii_digit()) => {
            [artefact.to_ascii_uppercase(), format!("GRADE {grade}")]
        }
        _ => [class.to_ascii_uppercase(), String::new()],
    }
}

/// Width of the label column: the longest label line, with a margin either side.
pub fn label_column_width() -> usize {
    montage_rows()
        .iter()
        .flat_map(|class| row_label(class))
        .map(|line| text_width(&line, LABEL_SCALE))
        .max()
        .unwrap_or(0)
        + 2 * LABEL_MARGIN
}

/// The top-left corners of `row`'s two label lines, centred on the row's height.
pub fn label_line_origins(row: usize) -> [(usize, usize); 2] {
    let line = GLYPH_HEIGHT * LABEL_SCALE;
    let line_gap = line / 2;
    let y = GAP + row * (TILE + GAP) + TILE.saturating_sub(2 * line + line_gap) / 2;
    [(LABEL_MARGIN, y), (LABEL_MARGIN, y + line + line_gap)]
}

/// Axial slice through the middle of the volume, x to the right of the tile in radiological
/// convention (patient left on the right), anterior up, resampled to a TILE square keeping mm proportions.
fn axial_tile(path: &Path) -> Result<Vec<u8>, SynthError> {
    let volume = load_volume(path).map_err(|e| SynthError::Montage(e.to_string()))?;
    let a = volume.affine;
    let dims = volume.dims;
    let mut inverse = [[0f64; 3]; 3];
    let m = [
        [a[0][0], a[0][1], a[0][2]],
        [a[1][0], a[1][1], a[1][2]],
        [a[2][0], a[2][1], a[2][2]],
    ];
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-12 {
        return Err(SynthError::Montage(format!(
            "{}: singular affine",
            path.display()
        )));
    }
    for (r, row) in inverse.iter_mut().enumerate() {
        for (c, value) in row.iter_mut().enumerate() {
            // Cyclic cofactor of element (c, r): the adjugate's transpose carries its own sign.
            let (r1, r2, c1, c2) = ((c + 1) % 3, (c + 2) % 3, (r + 1) % 3, (r + 2) % 3);
            *value = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
    }
    let centre_voxel = [0, 1, 2].map(|d| (dims[d] as f64 - 1.0) / 2.0);
    let centre =
        [0, 1, 2].map(|r| (0..3).map(|c| a[r][c] * centre_voxel[c]).sum::<f64>() + a[r][3]);
    let corners: Vec<[f64; 3]> = (0..8)
        .map(|q| {
            let v = [0, 1, 2].map(|d| {
                if (q >> d) & 1 == 1 {
                    dims[d] as f64 - 1.0
                } else {
                    0.0
                }
            });
            [0, 1, 2].map(|r| (0..3).map(|c| a[r][c] * v[c]).sum::<f64>() + a[r][3])
        })
        .collect();
    let span = |axis: usize| {
        let lo = corners.iter().map(|c| c[axis]).fold(f64::MAX, f64::min);
        let hi = corners.iter().map(|c| c[axis]).fold(f64::MIN, f64::max);
        hi - lo
    };
    let extent = span(0).max(span(1)).max(1.0);
    let scale = percentile(&volume.data, 0.995).max(1e-6);
    let mut tile = vec![0u8; TILE * TILE];
    for py in 0..TILE {
        for px in 0..TILE {
            let x = centre[0] + (0.5 - (px as f64 + 0.5) / TILE as f64) * extent;
            let y = centre[1] + (0.5 - (py as f64 + 0.5) / TILE as f64) * extent;
            let world = [x - a[0][3], y - a[1][3], centre[2] - a[2][3]];
            let v = [0, 1, 2].map(|r| (0..3).map(|c| inverse[r][c] * world[c]).sum::<f64>());
            let idx = v.map(|q| q.round());
            if (0..3).any(|d| idx[d] < 0.0 || idx[d] > dims[d] as f64 - 1.0) {
                continue;
            }
            let value = volume.data
                [idx[0] as usize + dims[0] * (idx[1] as usize + dims[1] * idx[2] as usize)];
            tile[px + TILE * py] = ((value / scale).clamp(0.0, 1.0) * 255.0) as u8;
        }
    }
    Ok(tile)
}

/// Writes a grayscale PNG montage: rows in `montage_rows()` order, each labelled on the
/// left (`row_label`), then up to COLUMNS FLAIR (then T1w) examples per row; empty tiles
/// where a class has fewer images.
pub fn write_montage(dataset_dir: &Path, out_png: &Path) -> Result<(), SynthError> {
    let truth_path = dataset_dir.join(DERIVATIVES).join("ground_truth.tsv");
    let text = std::fs::read_to_string(&truth_path).map_err(|source| SynthError::Io {
        path: truth_path.clone(),
        source,
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let column = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            SynthError::Montage(format!("{}: column {name} missing", truth_path.display()))
        })
    };
    let (path_col, class_col, suffix_col) = (column("path")?, column("class")?, column("suffix")?);
    let mut by_class: BTreeMap<String, Vec<(u8, String)>> = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < header.len() {
            continue;
        }
        let preference = match fields[suffix_col] {
            "FLAIR" => 0,
            "T1w" => 1,
            _ => 2,
        };
        by_class
            .entry(fields[class_col].to_string())
            .or_default()
            .push((preference, fields[path_col].to_string()));
    }
    let rows = montage_rows();
    let labels = label_column_width();
    let width = labels + TILE * COLUMNS + (COLUMNS + 1) * GAP;
    let height = TILE * rows.len() + (rows.len() + 1) * GAP;
    let mut canvas = vec![BACKGROUND; width * height];
    for (row, class) in rows.iter().enumerate() {
        for (line, origin) in row_label(class).iter().zip(label_line_origins(row)) {
            draw_text(&mut canvas, width, origin, line, LABEL_SCALE, LABEL_INK);
        }
        let mut examples = by_class.get(class).cloned().unwrap_or_default();
        examples.sort();
        for (col, (_, rel)) in examples.iter().take(COLUMNS).enumerate() {
            let tile = axial_tile(&dataset_dir.join(rel))?;
            let (x0, y0) = (labels + GAP + col * (TILE + GAP), GAP + row * (TILE + GAP));
            for y in 0..TILE {
                let start = (y0 + y) * width + x0;
                canvas[start..start + TILE].copy_from_slice(&tile[y * TILE..(y + 1) * TILE]);
            }
        }
    }
    let png_error =
        |e: png::EncodingError| SynthError::Montage(format!("{}: {e}", out_png.display()));
    // Replaced whole: a link planted under the name is never written through.
    crate::replace::replace_with(out_png, crate::replace::Durability::None, |_, file| {
        let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(&canvas).map_err(png_error)?;
        writer.finish().map_err(png_error)?;
        Ok(())
    })
}
