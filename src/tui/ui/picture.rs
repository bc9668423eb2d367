//! Grayscale pictures drawn with half blocks: each cell shows two pixels, the upper
//! as the foreground of '▀' and the lower as its background.

use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};

use crate::imaging::preview::Gray8;

/// The picture scaled (nearest pixel, aspect kept) to fit `cols` x `rows` cells.
pub fn half_block_lines(picture: &Gray8, cols: u16, rows: u16) -> Vec<Line<'static>> {
    if picture.width == 0 || picture.height == 0 || cols == 0 || rows == 0 {
        return Vec::new();
    }
    let target_w = f64::from(cols);
    let target_h = f64::from(rows) * 2.0;
    let scale = (target_w / picture.width as f64).min(target_h / picture.height as f64);
    let out_w = ((picture.width as f64 * scale).floor() as usize).max(1);
    let out_h = ((picture.height as f64 * scale).floor() as usize).max(1);
    let pixel = |x: usize, y: usize| -> Option<u8> {
        if y >= out_h {
            return None;
        }
        let sx = ((x as f64 + 0.5) / scale) as usize;
        let sy = ((y as f64 + 0.5) / scale) as usize;
        Some(picture.pixels[sy.min(picture.height - 1) * picture.width + sx.min(picture.width - 1)])
    };
    let gray = |v: u8| Color::Rgb(v, v, v);
    (0..out_h.div_ceil(2))
        .map(|row| {
            let spans: Vec<Span<'static>> = (0..out_w)
                .map(|x| {
                    let upper = pixel(x, 2 * row).unwrap_or(0);
                    let style = match pixel(x, 2 * row + 1) {
                        Some(lower) => Style::new().fg(gray(upper)).bg(gray(lower)),
                        None => Style::new().fg(gray(upper)),
                    };
                    Span::styled("▀", style)
                })
                .collect();
            Line::from(spans)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pixels_per_cell_with_aspect_kept() {
        let picture = Gray8 {
            width: 4,
            height: 4,
            pixels: (0..16).map(|i| i * 16).collect(),
        };
        let lines = half_block_lines(&picture, 10, 2);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].spans.len(), 4);
        let first = lines[0].spans[0].style;
        assert_eq!(first.fg, Some(Color::Rgb(0, 0, 0)));
        assert_eq!(first.bg, Some(Color::Rgb(64, 64, 64)));
    }
}
