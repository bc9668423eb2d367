//! Terminal rendering of 8-bit grayscale previews with the upper half block '▀'.
//!
//! Each text cell shows two pixels: the upper one as the foreground colour of '▀', the
//! lower one as the background colour, with 24-bit ANSI colour codes. A terminal cell is
//! about twice as tall as wide, so two pixel rows per cell keep pixels square and the
//! aspect ratio of a downscaled image is the aspect ratio of its pixels. An odd last
//! pixel row is drawn over black.

use std::fmt::Write as _;

/// Problems with preview images.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HalfblockError {
    #[error("preview image {width}x{height} needs {expected} bytes, got {actual}")]
    WrongLength {
        width: usize,
        height: usize,
        expected: usize,
        actual: usize,
    },
}

/// An 8-bit grayscale image, row-major, top row first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl GrayImage {
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<GrayImage, HalfblockError> {
        let expected = width.saturating_mul(height);
        if pixels.len() != expected {
            return Err(HalfblockError::WrongLength {
                width,
                height,
                expected,
                actual: pixels.len(),
            });
        }
        Ok(GrayImage {
            width,
            height,
            pixels,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }

    /// Shrinks to `target_width` columns (never enlarges) by box averaging, keeping the
    /// aspect ratio: the new height is `round(height * new_width / width)`, at least 1.
    pub fn downscale_to_width(&self, target_width: usize) -> GrayImage {
        if self.width == 0 || self.height == 0 || target_width == 0 {
            return GrayImage {
                width: 0,
                height: 0,
                pixels: Vec::new(),
            };
        }
        let new_width = target_width.min(self.width);
        if new_width == self.width {
            return self.clone();
        }
        let new_height =
            ((self.height as f64 * new_width as f64 / self.width as f64).round() as usize).max(1);
        let mut pixels = Vec::with_capacity(new_width * new_height);
        for out_y in 0..new_height {
            let y0 = out_y * self.height / new_height;
            let y1 = ((out_y + 1) * self.height / new_height).max(y0 + 1);
            for out_x in 0..new_width {
                let x0 = out_x * self.width / new_width;
                let x1 = ((out_x + 1) * self.width / new_width).max(x0 + 1);
                let mut sum = 0u64;
                for y in y0..y1 {
                    for x in x0..x1 {
                        sum += u64::from(self.at(x, y));
                    }
                }
                let count = ((y1 - y0) * (x1 - x0)) as u64;
                pixels.push(((sum + count / 2) / count) as u8);
            }
        }
        GrayImage {
            width: new_width,
            height: new_height,
            pixels,
        }
    }

    /// Places images left to right, `gap` black columns apart, top-aligned; shorter
    /// images are padded with black below.
    pub fn side_by_side(images: &[GrayImage], gap: usize) -> GrayImage {
        let height = images.iter().map(|image| image.height).max().unwrap_or(0);
        let width = images.iter().map(|image| image.width).sum::<usize>()
            + gap * images.len().saturating_sub(1);
        let mut pixels = vec![0u8; width * height];
        let mut left = 0;
        for image in images {
            for y in 0..image.height {
                let row = &image.pixels[y * image.width..(y + 1) * image.width];
                pixels[y * width + left..y * width + left + image.width].copy_from_slice(row);
            }
            left += image.width + gap;
        }
        GrayImage {
            width,
            height,
            pixels,
        }
    }

    /// The pixel pairs of each text line: (upper, lower), lower black for an odd last row.
    fn cell_rows(&self) -> impl Iterator<Item = Vec<(u8, u8)>> + '_ {
        (0..self.height.div_ceil(2)).map(move |line| {
            (0..self.width)
                .map(|x| {
                    let upper = self.at(x, 2 * line);
                    let lower = if 2 * line + 1 < self.height {
                        self.at(x, 2 * line + 1)
                    } else {
                        0
                    };
                    (upper, lower)
                })
                .collect()
        })
    }
}

/// Renders with '▀' and 24-bit ANSI colours; each line ends with a reset and '\n'.
/// Colour codes are only emitted when a colour changes along the line.
pub fn render_ansi(image: &GrayImage) -> String {
    let mut text = String::new();
    for cells in image.cell_rows() {
        let mut current: Option<(u8, u8)> = None;
        for (upper, lower) in cells {
            if current.map(|(u, _)| u) != Some(upper) {
                let _ = write!(text, "\x1b[38;2;{upper};{upper};{upper}m");
            }
            if current.map(|(_, l)| l) != Some(lower) {
                let _ = write!(text, "\x1b[48;2;{lower};{lower};{lower}m");
            }
            current = Some((upper, lower));
            text.push('▀');
        }
        text.push_str("\x1b[0m\n");
    }
    text
}

/// Brightness ramp of the plain rendering, darkest first.
const PLAIN_RAMP: &[u8] = b" .:-=+*#%@";

/// Renders without colour codes: one character per cell from the mean of its two
/// pixels on the ramp `" .:-=+*#%@"`, for logs, tests and terminals without colour.
pub fn render_plain(image: &GrayImage) -> String {
    let mut text = String::new();
    for cells in image.cell_rows() {
        for (upper, lower) in cells {
            let mean = (u32::from(upper) + u32::from(lower)) / 2;
            let step = (mean as usize * PLAIN_RAMP.len()) / 256;
            text.push(char::from(PLAIN_RAMP[step]));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_checked() {
        assert!(matches!(
            GrayImage::new(3, 2, vec![0; 5]),
            Err(HalfblockError::WrongLength { expected: 6, .. })
        ));
    }

    #[test]
    fn ansi_puts_upper_pixel_in_foreground() {
        let image = GrayImage::new(2, 2, vec![10, 10, 200, 30]).unwrap();
        let text = render_ansi(&image);
        assert_eq!(
            text,
            "\x1b[38;2;10;10;10m\x1b[48;2;200;200;200m▀\x1b[48;2;30;30;30m▀\x1b[0m\n"
        );
    }

    #[test]
    fn odd_last_row_is_drawn_over_black() {
        let image = GrayImage::new(1, 3, vec![255, 255, 255]).unwrap();
        assert_eq!(render_plain(&image), "@\n=\n");
        assert!(render_ansi(&image).ends_with("\x1b[48;2;0;0;0m▀\x1b[0m\n"));
        assert_eq!(render_ansi(&image).lines().count(), 2);
    }

    #[test]
    fn plain_maps_brightness_to_ramp() {
        let image = GrayImage::new(3, 2, vec![0, 128, 255, 0, 128, 255]).unwrap();
        assert_eq!(render_plain(&image), " +@\n");
    }

    #[test]
    fn downscale_keeps_aspect_and_averages() {
        let pixels: Vec<u8> = (0..8 * 4)
            .map(|i| if i % 8 < 4 { 0 } else { 200 })
            .collect();
        let image = GrayImage::new(8, 4, pixels).unwrap();
        let small = image.downscale_to_width(2);
        assert_eq!((small.width(), small.height()), (2, 1));
        assert_eq!(small.pixels(), &[0, 200]);
        let checker = GrayImage::new(2, 2, vec![0, 100, 100, 0]).unwrap();
        assert_eq!(checker.downscale_to_width(1).pixels(), &[50]);
        let tall = GrayImage::new(100, 300, vec![7; 30000]).unwrap();
        let tall_small = tall.downscale_to_width(10);
        assert_eq!((tall_small.width(), tall_small.height()), (10, 30));
        assert!(tall_small.pixels().iter().all(|&p| p == 7));
    }

    #[test]
    fn downscale_never_enlarges_and_handles_empty() {
        let image = GrayImage::new(3, 3, vec![1; 9]).unwrap();
        assert_eq!(image.downscale_to_width(10), image);
        assert_eq!(image.downscale_to_width(0).width(), 0);
        let empty = GrayImage::new(0, 0, vec![]).unwrap();
        assert_eq!(render_plain(&empty.downscale_to_width(5)), "");
    }

    #[test]
    fn side_by_side_pads_and_separates() {
        let a = GrayImage::new(1, 2, vec![255, 255]).unwrap();
        let b = GrayImage::new(2, 1, vec![255, 255]).unwrap();
        let joined = GrayImage::side_by_side(&[a, b], 1);
        assert_eq!((joined.width(), joined.height()), (4, 2));
        assert_eq!(joined.pixels(), &[255, 0, 255, 255, 255, 0, 0, 0]);
        assert_eq!(render_plain(&joined), "@ ==\n");
    }
}
