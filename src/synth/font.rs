//! A 5x7 bitmap font (capitals, digits, a few signs) for labels drawn into grayscale
//! PNGs, so that a picture says what it shows without a font library.

/// Glyph rows, top to bottom; bit 4 is the leftmost of the five columns.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ' ' => [0x00; 7],
        // Anything else shows as a box, never as nothing.
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

pub const GLYPH_WIDTH: usize = 5;
pub const GLYPH_HEIGHT: usize = 7;
/// One column of space between glyphs.
pub const ADVANCE: usize = GLYPH_WIDTH + 1;

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * ADVANCE * scale
}

/// Draws `text` into a row-major grayscale `canvas` of `width` pixels a row, its top-left
/// corner at (x, y), each font pixel a `scale` x `scale` square of `ink`. Pixels that
/// fall outside the canvas are dropped.
pub fn draw_text(
    canvas: &mut [u8],
    width: usize,
    (x, y): (usize, usize),
    text: &str,
    scale: usize,
    ink: u8,
) {
    let height = canvas.len() / width.max(1);
    for (i, c) in text.chars().enumerate() {
        let left = x + i * ADVANCE * scale;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_WIDTH {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (left + col * scale + dx, y + row * scale + dy);
                        if px < width && py < height {
                            canvas[py * width + px] = ink;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drawn_character_has_its_own_glyph() {
        let chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-:.";
        let glyphs: Vec<[u8; 7]> = chars.chars().map(glyph).collect();
        for (i, g) in glyphs.iter().enumerate() {
            assert!(g.iter().all(|&row| row < 0x20), "{}", &chars[i..=i]);
            assert!(g.iter().any(|&row| row != 0));
            for (j, other) in glyphs.iter().enumerate().skip(i + 1) {
                assert_ne!(
                    g,
                    other,
                    "{} and {} look alike",
                    &chars[i..=i],
                    &chars[j..=j]
                );
            }
        }
        assert_eq!(glyph('a'), glyph('A'));
    }

    #[test]
    fn text_is_drawn_at_scale_and_clipped_to_the_canvas() {
        let width = 20;
        let mut canvas = vec![0u8; width * 16];
        draw_text(&mut canvas, width, (0, 0), "T", 2, 255);
        // The bar of the T: the whole top two rows of its 10 pixels.
        assert!(canvas[..10].iter().all(|&p| p == 255));
        assert!(canvas[width..width + 10].iter().all(|&p| p == 255));
        // The stem: columns 4-5 only, on the rows below.
        assert_eq!(canvas[3 * width + 3], 0);
        assert_eq!(canvas[3 * width + 4], 255);
        assert_eq!(text_width("T", 2), 12);
        // Off the right edge: nothing panics, nothing wraps.
        draw_text(&mut canvas, width, (15, 10), "WW", 2, 128);
        for row in 0..16 {
            let left = &canvas[row * width..row * width + 15];
            assert!(left.iter().all(|&p| p != 128), "row {row} wrapped");
        }
        assert!(canvas.contains(&128));
    }
}
