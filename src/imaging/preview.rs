//! Three orthogonal 8-bit preview slices in RAS orientation, stored as PNG so the
//! dashboard never re-reads a NIfTI file to show an image.
//!
//! Display convention (documented in docs/commands.md, `cdwqc import`): neurological,
//! patient left on the left of the picture. Axial: columns run right-wards towards R,
//! rows top = anterior. Coronal: columns towards R, top = superior. Sagittal: columns
//! towards anterior, top = superior. Pixels are square in millimetres: anisotropic voxels are
//! resampled (bilinear) so a 5 mm slice stack looks like one.

use super::ImagingError;
use super::orientation::{Affine, RasView};
use super::preprocess::finite_percentiles;
use super::stats::finite_sample;

/// The longest side of a preview in pixels.
pub const MAX_PREVIEW_SIDE: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

    pub fn name(self) -> &'static str {
        match self {
            Self::Axial => "axial",
            Self::Coronal => "coronal",
            Self::Sagittal => "sagittal",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// (horizontal RAS axis, vertical RAS axis, slicing RAS axis).
    fn axes(self) -> (usize, usize, usize) {
        match self {
            Self::Axial => (0, 1, 2),
            Self::Coronal => (0, 2, 1),
            Self::Sagittal => (1, 2, 0),
        }
    }
}

/// An 8-bit grayscale picture, row-major, row 0 at the top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gray8 {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Gray8 {
    pub fn to_png(&self) -> Result<Vec<u8>, ImagingError> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc
                .write_header()
                .map_err(|e| ImagingError::Preview(e.to_string()))?;
            writer
                .write_image_data(&self.pixels)
                .map_err(|e| ImagingError::Preview(e.to_string()))?;
        }
        Ok(out)
    }

    pub fn from_png(bytes: &[u8]) -> Result<Self, ImagingError> {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder
            .read_info()
            .map_err(|e| ImagingError::Preview(e.to_string()))?;
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| ImagingError::Preview("PNG too large".into()))?;
        let mut buf = vec![0; size];
        let info = reader
            .next_frame(&mut buf)
            .map_err(|e| ImagingError::Preview(e.to_string()))?;
        if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
            return Err(ImagingError::Preview(
                "preview is not 8-bit grayscale".into(),
            ));
        }
        buf.truncate(info.buffer_size());
        Ok(Self {
            width: info.width as usize,
            height: info.height as usize,
            pixels: buf,
        })
    }
}

/// The intensity window mapped to 0..255: robust percentiles of the finite voxels.
pub fn display_window(data: &[f32]) -> (f32, f32) {
    window_of_sample(&finite_sample(data))
}

/// [`display_window`] from the volume's [`finite_sample`]: its 0.5th and 99.5th
/// percentiles (nearest rank), else its range.
pub fn window_of_sample(finite: &[f32]) -> (f32, f32) {
    if finite.is_empty() {
        return (0.0, 1.0);
    }
    window_of_percentiles(finite, finite_percentiles(finite, WINDOW_PERCENTILES))
}

/// The percentiles of [`display_window`].
pub const WINDOW_PERCENTILES: [f64; 2] = [0.5, 99.5];

/// [`window_of_sample`] given the sample's [`WINDOW_PERCENTILES`] (`finite` not empty),
/// for a caller that selects other percentiles of the sample at the same time.
pub fn window_of_percentiles(finite: &[f32], [lo, hi]: [f32; 2]) -> (f32, f32) {
    if hi > lo {
        (lo, hi)
    } else {
        let max = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = finite.iter().copied().fold(f32::INFINITY, f32::min);
        if max > min {
            (min, max)
        } else {
            (min, min + 1.0)
        }
    }
}

/// Renders the middle slice of each plane in [`display_window`].
pub fn previews(
    dims: [usize; 3],
    data: &[f32],
    affine: &Affine,
    voxel_size: [f64; 3],
) -> Vec<(Plane, Gray8)> {
    previews_in_window(dims, data, affine, voxel_size, display_window(data))
}

/// Renders the middle slice of each plane in `window`.
pub fn previews_in_window(
    dims: [usize; 3],
    data: &[f32],
    affine: &Affine,
    voxel_size: [f64; 3],
    window: (f32, f32),
) -> Vec<(Plane, Gray8)> {
    Plane::ALL
        .iter()
        .map(|&plane| {
            (
                plane,
                slice(dims, data, affine, voxel_size, plane, None, window),
            )
        })
        .collect()
}

/// Renders one slice of a plane (`index` in RAS order along the slicing axis, the
/// middle one when `None`) with the given intensity window.
pub fn slice(
    dims: [usize; 3],
    data: &[f32],
    affine: &Affine,
    voxel_size: [f64; 3],
    plane: Plane,
    index: Option<usize>,
    window: (f32, f32),
) -> Gray8 {
    let voxels = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if voxels != Some(data.len()) || data.is_empty() {
        // Data that does not fill its shape has no slice to show; a blank pixel
        // beats indexing past the end.
        return Gray8 {
            width: 1,
            height: 1,
            pixels: vec![0],
        };
    }
    let Layout {
        view,
        ras_dims,
        axes: (h_axis, v_axis, s_axis),
        at,
        width,
        height,
    } = Layout::of(dims, affine, voxel_size, plane, index);
    let (lo, hi) = window;
    let scale = 255.0 / (hi - lo).max(f32::EPSILON);
    // The flat index of a voxel is a sum of one term per RAS axis, so each column and
    // each row of the picture has its two source positions and weight worked out once.
    let strides = [1, dims[0], dims[0] * dims[1]];
    let term = |ras_axis: usize, at: usize| {
        let axis = view.source_axis[ras_axis];
        let at = if view.flip[ras_axis] {
            dims[axis] - 1 - at
        } else {
            at
        };
        strides[axis] * at
    };
    let base = term(s_axis, at);
    // Row 0 is the top of the picture: the highest index along the vertical axis.
    let rows: Vec<Tap> = (0..height)
        .map(|row| {
            let fv =
                ((height - 1 - row) as f64 + 0.5) / height as f64 * ras_dims[v_axis] as f64 - 0.5;
            Tap::at(fv, ras_dims[v_axis], |v| term(v_axis, v))
        })
        .collect();
    let columns: Vec<Tap> = (0..width)
        .map(|col| {
            let fh = (col as f64 + 0.5) / width as f64 * ras_dims[h_axis] as f64 - 0.5;
            Tap::at(fh, ras_dims[h_axis], |h| term(h_axis, h))
        })
        .collect();
    let sample = |at: usize| -> f32 {
        let value = data[at];
        if value.is_finite() { value } else { lo }
    };
    let mut pixels = Vec::with_capacity(width * height);
    for r in &rows {
        let (near, far) = (base + r.near, base + r.far);
        for c in &columns {
            let fx = c.weight;
            let top = sample(near + c.near) * (1.0 - fx) + sample(near + c.far) * fx;
            let bottom = sample(far + c.near) * (1.0 - fx) + sample(far + c.far) * fx;
            let value = top * (1.0 - r.weight) + bottom * r.weight;
            pixels.push(round_to_byte(((value - lo) * scale).clamp(0.0, 255.0)));
        }
    }
    Gray8 {
        width,
        height,
        pixels,
    }
}

/// Where a slice's picture comes from and its size: square pixels in millimetres, the
/// longer side at most [`MAX_PREVIEW_SIDE`].
struct Layout {
    view: RasView,
    ras_dims: [usize; 3],
    /// The horizontal, vertical and slicing RAS axes.
    axes: (usize, usize, usize),
    /// The slice's index along the slicing axis.
    at: usize,
    width: usize,
    height: usize,
}

impl Layout {
    fn of(
        dims: [usize; 3],
        affine: &Affine,
        voxel_size: [f64; 3],
        plane: Plane,
        index: Option<usize>,
    ) -> Self {
        let view = RasView::from_affine(affine);
        let ras_dims = view.dims(dims);
        let ras_size = view.source_axis.map(|a| {
            let s = voxel_size[a];
            if s > 0.0 && s.is_finite() { s } else { 1.0 }
        });
        let (h_axis, v_axis, s_axis) = plane.axes();
        let depth = ras_dims[s_axis];
        let at = index.unwrap_or(depth / 2).min(depth.saturating_sub(1));
        let extent_h = ras_dims[h_axis] as f64 * ras_size[h_axis];
        let extent_v = ras_dims[v_axis] as f64 * ras_size[v_axis];
        let pixel_mm = ras_size[h_axis]
            .min(ras_size[v_axis])
            .max(extent_h.max(extent_v) / MAX_PREVIEW_SIDE as f64);
        Self {
            view,
            ras_dims,
            axes: (h_axis, v_axis, s_axis),
            at,
            width: ((extent_h / pixel_mm).round() as usize).clamp(1, MAX_PREVIEW_SIDE),
            height: ((extent_v / pixel_mm).round() as usize).clamp(1, MAX_PREVIEW_SIDE),
        }
    }
}

/// One axis of bilinear interpolation at a picture column or row: the flat-index terms
/// of the voxels below and above the position, and the weight of the one above.
struct Tap {
    near: usize,
    far: usize,
    weight: f32,
}

impl Tap {
    /// The tap at position `x` (in voxels, clamped to the `n` voxels of the axis), with
    /// `term` giving a voxel's term of the flat index.
    fn at(x: f64, n: usize, term: impl Fn(usize) -> usize) -> Self {
        let x = x.clamp(0.0, (n - 1) as f64);
        let x0 = x.floor() as usize;
        let x1 = (x0 + 1).min(n - 1);
        Self {
            near: term(x0),
            far: term(x1),
            weight: (x - x0 as f64) as f32,
        }
    }
}

/// `x.round() as u8` for `x` in [0, 255] or NaN (which gives 0), without the library
/// call `f32::round` becomes on baseline x86-64: the fraction `x - trunc(x)` is exact.
#[inline(always)]
fn round_to_byte(x: f32) -> u8 {
    let whole = x as u8;
    whole + u8::from(x - f32::from(whole) >= 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The previous form of [`slice`]'s sampling (on the same [`Layout`]): every sample
    /// through `RasView::source_index`.
    fn slice_by_samples(
        dims: [usize; 3],
        data: &[f32],
        affine: &Affine,
        voxel_size: [f64; 3],
        plane: Plane,
        index: Option<usize>,
        window: (f32, f32),
    ) -> Gray8 {
        let Layout {
            view,
            ras_dims,
            axes: (h_axis, v_axis, s_axis),
            at,
            width,
            height,
        } = Layout::of(dims, affine, voxel_size, plane, index);
        let (lo, hi) = window;
        let scale = 255.0 / (hi - lo).max(f32::EPSILON);
        let sample = |h: usize, v: usize| -> f32 {
            let mut ras = [0usize; 3];
            ras[h_axis] = h;
            ras[v_axis] = v;
            ras[s_axis] = at;
            let [i, j, k] = view.source_index(dims, ras);
            let value = data[i + dims[0] * (j + dims[1] * k)];
            if value.is_finite() { value } else { lo }
        };
        let bilinear = |x: f64, y: f64, nx: usize, ny: usize| {
            let x = x.clamp(0.0, (nx - 1) as f64);
            let y = y.clamp(0.0, (ny - 1) as f64);
            let (x0, y0) = (x.floor() as usize, y.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(nx - 1), (y0 + 1).min(ny - 1));
            let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
            let top = sample(x0, y0) * (1.0 - fx) + sample(x1, y0) * fx;
            let bottom = sample(x0, y1) * (1.0 - fx) + sample(x1, y1) * fx;
            top * (1.0 - fy) + bottom * fy
        };
        let mut pixels = Vec::with_capacity(width * height);
        for row in 0..height {
            let fv =
                ((height - 1 - row) as f64 + 0.5) / height as f64 * ras_dims[v_axis] as f64 - 0.5;
            for col in 0..width {
                let fh = (col as f64 + 0.5) / width as f64 * ras_dims[h_axis] as f64 - 0.5;
                let value = bilinear(fh, fv, ras_dims[h_axis], ras_dims[v_axis]);
                pixels.push(((value - lo) * scale).clamp(0.0, 255.0).round() as u8);
            }
        }
        Gray8 {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn slices_equal_the_sample_by_sample_form() {
        let mut state = 5u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        // Permuted and flipped axes, anisotropic and odd voxel sizes.
        let mut affines: Vec<Affine> = Vec::new();
        for perm in [[0usize, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]] {
            for signs in [[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]] {
                let mut a = [[0.0; 4]; 4];
                for (v, &w) in perm.iter().enumerate() {
                    a[w][v] = signs[v];
                }
                a[3][3] = 1.0;
                affines.push(a);
            }
        }
        for (n, affine) in affines.iter().enumerate() {
            let dims = [3 + n % 5 * 17, 1 + n % 3 * 29, 2 + n % 4 * 23];
            let len = dims.iter().product();
            let data: Vec<f32> = (0..len)
                .map(|_| match next() {
                    u if u < 0.01 => f32::NAN,
                    u if u < 0.02 => f32::INFINITY,
                    u if u < 0.03 => f32::MAX,
                    u => (u * 3000.0 - 500.0) as f32,
                })
                .collect();
            let voxel = [[1.0, 1.0, 1.0], [0.9, 1.2, 5.0], [0.0, f64::NAN, 2.5]][n % 3];
            let window = [(0.0, 1000.0), (-200.0, 2500.0), (7.0, 7.0)][n % 3];
            for plane in Plane::ALL {
                for index in [None, Some(0), Some(1), Some(usize::MAX)] {
                    assert_eq!(
                        slice(dims, &data, affine, voxel, plane, index, window),
                        slice_by_samples(dims, &data, affine, voxel, plane, index, window),
                        "{dims:?} {affine:?} {plane:?} {index:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounding_to_a_byte_is_round_half_away_from_zero() {
        let mut x = 0.0f32;
        while x <= 255.0 {
            for v in [
                x,
                x.next_up(),
                x.next_down().max(0.0),
                x + 0.5,
                (x + 0.5).next_down(),
            ] {
                let v = v.min(255.0);
                assert_eq!(round_to_byte(v), v.round() as u8, "{v}");
            }
            x += 0.25;
        }
        assert_eq!(round_to_byte(f32::NAN), 0);
    }

    fn eye() -> Affine {
        let mut a = [[0.0; 4]; 4];
        for (i, row) in a.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        a
    }

    #[test]
    fn thick_slices_are_stretched_to_physical_size() {
        let dims = [20, 20, 4];
        let data = vec![1.0; 20 * 20 * 4];
        let g = slice(
            dims,
            &data,
            &eye(),
            [1.0, 1.0, 5.0],
            Plane::Coronal,
            None,
            (0.0, 1.0),
        );
        assert_eq!((g.width, g.height), (20, 20));
        assert!(g.pixels.iter().all(|&p| p == 255));
    }

    #[test]
    fn previews_are_capped_and_round_trip_through_png() {
        let dims = [200, 100, 50];
        let data: Vec<f32> = (0..200 * 100 * 50).map(|v| (v % 97) as f32).collect();
        for (_, g) in previews(dims, &data, &eye(), [1.0, 1.0, 1.0]) {
            assert!(g.width <= MAX_PREVIEW_SIDE && g.height <= MAX_PREVIEW_SIDE);
            let back = Gray8::from_png(&g.to_png().expect("encodes")).expect("decodes");
            assert_eq!(back, g);
        }
    }

    #[test]
    fn data_that_does_not_fill_its_shape_gives_a_blank_pixel() {
        for dims in [[4, 4, 4], [0, 4, 4], [usize::MAX, 2, 2]] {
            let g = slice(dims, &[], &eye(), [1.0; 3], Plane::Axial, None, (0.0, 1.0));
            assert_eq!((g.width, g.height, g.pixels), (1, 1, vec![0]));
        }
        let g = slice(
            [4, 4, 4],
            &[1.0; 10],
            &eye(),
            [1.0; 3],
            Plane::Axial,
            None,
            (0.0, 1.0),
        );
        assert_eq!((g.width, g.height), (1, 1));
    }

    #[test]
    fn flipped_axis_shows_the_same_picture() {
        let dims = [4, 3, 3];
        let data: Vec<f32> = (0..36).map(|v| v as f32).collect();
        let mut flipped = vec![0.0; 36];
        for k in 0..3 {
            for j in 0..3 {
                for i in 0..4 {
                    flipped[(3 - i) + 4 * (j + 3 * k)] = data[i + 4 * (j + 3 * k)];
                }
            }
        }
        let mut las = eye();
        las[0][0] = -1.0;
        let w = (0.0, 35.0);
        let a = slice(dims, &data, &eye(), [1.0; 3], Plane::Axial, None, w);
        let b = slice(dims, &flipped, &las, [1.0; 3], Plane::Axial, None, w);
        assert_eq!(a, b);
    }
}
