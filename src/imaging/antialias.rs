//! Anti-aliasing before a volume is resampled to a coarser grid: a separable Gaussian
//! that brings every source resolution to the same effective resolution, that of an
//! acquisition at the grid's spacing.
//!
//! Without it, trilinear sampling of a 1 mm image onto a 3 mm grid keeps 1 mm detail
//! (and aliases it), while a 2 mm image on the same grid looks smoother: the network
//! then learns the source resolution, and a model trained on one resolution misreads
//! another. With it, a voxel of size `s` along an axis is smoothed by
//! `sigma = sqrt(t^2 - s^2) / 2.3548` mm (t the grid spacing): the Gaussian whose
//! full width at half maximum, added to the source's own, gives `t`.

use super::Volume;

/// FWHM = this factor times the standard deviation of a Gaussian.
const FWHM_PER_SIGMA: f64 = 2.354_820_045;

/// Standard deviation in voxels of the smoothing along each axis of `volume` for a grid
/// of `spacing_mm`; zero where the voxels are already as large as the grid's.
pub fn sigmas_voxels(voxel_size: [f64; 3], spacing_mm: f64) -> [f64; 3] {
    voxel_size.map(|s| {
        let s = s.abs();
        if !(s.is_finite() && s > 0.0) || s >= spacing_mm {
            0.0
        } else {
            (spacing_mm * spacing_mm - s * s).sqrt() / FWHM_PER_SIGMA / s
        }
    })
}

/// Voxel sizes from the affine's columns (the pixdims can disagree with a resliced sform).
pub fn voxel_sizes(volume: &Volume) -> [f64; 3] {
    let a = &volume.affine;
    [0, 1, 2].map(|c| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt())
}

/// The volume smoothed for a grid of `spacing_mm`, or `None` when no axis needs it.
/// Non-finite voxels take no part and stay as they were.
pub fn for_grid(volume: &Volume, spacing_mm: f64) -> Option<Volume> {
    let sigmas = sigmas_voxels(voxel_sizes(volume), spacing_mm);
    if sigmas.iter().all(|&s| s < 0.05) {
        return None;
    }
    let mut data = volume.data.clone();
    let holes = data.iter().any(|v| !v.is_finite());
    // Normalised convolution where some voxels are not finite: they weigh nothing, and
    // the others are divided by the weight that reached them.
    let mut weight: Option<Vec<f32>> = holes.then(|| {
        data.iter()
            .map(|v| f32::from(u8::from(v.is_finite())))
            .collect()
    });
    if holes {
        for v in data.iter_mut().filter(|v| !v.is_finite()) {
            *v = 0.0;
        }
    }
    let mut scratch = Vec::new();
    for (axis, &sigma) in sigmas.iter().enumerate() {
        if sigma >= 0.05 {
            let kernel = gaussian_kernel(sigma);
            smooth_axis(&mut data, &mut scratch, volume.dims, axis, &kernel);
            if let Some(weight) = weight.as_mut() {
                smooth_axis(weight, &mut scratch, volume.dims, axis, &kernel);
            }
        }
    }
    if let Some(weight) = weight {
        for ((v, &w), &orig) in data.iter_mut().zip(&weight).zip(&volume.data) {
            // Voxels that were not finite stay so; the resampler fills them as before.
            *v = if !orig.is_finite() {
                orig
            } else if w > 1e-6 {
                *v / w
            } else {
                0.0
            };
        }
    }
    Some(Volume {
        dims: volume.dims,
        data,
        affine: volume.affine,
        voxel_size: volume.voxel_size,
    })
}

/// A normalised Gaussian truncated at three standard deviations.
pub(crate) fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let raw: Vec<f64> = (-radius..=radius)
        .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| (w / sum) as f32).collect()
}

/// Convolves every line of `data` along `axis` (i fastest) with `kernel`, renormalised
/// by the kernel's mass inside the line, so the field of view's edges are not darkened.
///
/// Every voxel gets the taps that fall inside its line, added in kernel order from zero
/// and divided by the sum of those taps' weights, also in kernel order: the arithmetic of
/// a tap-by-tap loop per voxel. The loops are arranged so that the innermost one runs
/// along x over whole rows (independent voxels, which vectorise) instead of along each
/// line, and the input is read from a copy (`scratch`), not gathered line by line.
fn smooth_axis(
    data: &mut [f32],
    scratch: &mut Vec<f32>,
    dims: [usize; 3],
    axis: usize,
    kernel: &[f32],
) {
    let n = dims[axis];
    let radius = kernel.len() / 2;
    // The taps of position t that fall inside the line: offsets o with t + o - radius
    // in 0..n.
    let taps = |t: usize| radius.saturating_sub(t)..kernel.len().min(n + radius - t);
    let mass: Vec<f32> = (0..n)
        .map(|t| kernel[taps(t)].iter().fold(0f32, |m, &w| m + w))
        .collect();
    scratch.clear();
    scratch.extend_from_slice(data);
    let source = scratch.as_slice();
    let nx = dims[0];
    match axis {
        0 => {
            for (out, line) in data.chunks_exact_mut(nx).zip(source.chunks_exact(nx)) {
                out.fill(0.0);
                for (o, &w) in kernel.iter().enumerate() {
                    // Positions t whose tap o lies inside: t in lo..hi, reading t + o - radius.
                    let lo = radius.saturating_sub(o);
                    let hi = (n + radius).saturating_sub(o).min(n);
                    if lo >= hi {
                        continue;
                    }
                    let read = lo + o - radius;
                    for (acc, &v) in out[lo..hi].iter_mut().zip(&line[read..read + hi - lo]) {
                        *acc += w * v;
                    }
                }
                for (acc, &m) in out.iter_mut().zip(&mass) {
                    *acc /= m;
                }
            }
        }
        _ => {
            // Along y a line's neighbours are whole rows apart, along z whole planes: each
            // output row adds the rows its taps reach.
            let step = if axis == 1 { nx } else { nx * dims[1] };
            for (r, out) in data.chunks_exact_mut(nx).enumerate() {
                let t = if axis == 1 { r % dims[1] } else { r / dims[1] };
                // The row's start with its coordinate along `axis` taken out.
                let line_start = r * nx - t * step;
                out.fill(0.0);
                for o in taps(t) {
                    let w = kernel[o];
                    let from = line_start + (t + o - radius) * step;
                    for (acc, &v) in out.iter_mut().zip(&source[from..from + nx]) {
                        *acc += w * v;
                    }
                }
                let m = mass[t];
                for acc in out.iter_mut() {
                    *acc /= m;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(dims: [usize; 3], voxel: f64, data: Vec<f32>) -> Volume {
        let mut affine = [[0.0; 4]; 4];
        for (a, row) in affine.iter_mut().enumerate().take(3) {
            row[a] = voxel;
        }
        affine[3][3] = 1.0;
        Volume {
            dims,
            data,
            affine,
            voxel_size: [voxel; 3],
        }
    }

    #[test]
    fn the_added_blur_brings_every_source_to_the_grid_resolution() {
        // FWHM of source + added blur in quadrature = grid spacing.
        for s in [0.5, 1.0, 1.2, 2.0] {
            let sigma_mm = sigmas_voxels([s; 3], 3.0)[0] * s;
            let total = ((sigma_mm * FWHM_PER_SIGMA).powi(2) + s * s).sqrt();
            assert!((total - 3.0).abs() < 1e-9, "{s}: {total}");
        }
        assert_eq!(sigmas_voxels([3.0, 4.0, 0.0], 3.0), [0.0, 0.0, 0.0]);
        let v = volume([4, 4, 4], 3.0, vec![1.0; 64]);
        assert!(for_grid(&v, 3.0).is_none(), "nothing to smooth");
    }

    #[test]
    fn smoothing_keeps_constants_and_the_mean_and_spreads_a_point() {
        let dims = [15, 13, 11];
        let n = dims.iter().product();
        let flat = for_grid(&volume(dims, 1.0, vec![2.5; n]), 3.0).expect("smoothed");
        assert!(
            flat.data.iter().all(|v| (v - 2.5).abs() < 1e-5),
            "edges not darkened"
        );
        let mut point = vec![0.0f32; n];
        let centre = 7 + 15 * (6 + 13 * 5);
        point[centre] = 1000.0;
        let spread = for_grid(&volume(dims, 1.0, point), 3.0).expect("smoothed");
        let sum: f32 = spread.data.iter().sum();
        // Renormalised edges give back a little of the mass that reached them.
        assert!((sum - 1000.0).abs() < 5.0, "{sum}");
        assert!(spread.data[centre] < 100.0 && spread.data[centre + 1] > 10.0);
        // Symmetric along each axis.
        for stride in [1, 15, 15 * 13] {
            let (a, b) = (spread.data[centre - stride], spread.data[centre + stride]);
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// The per-voxel loop the row-wise passes replaced: each line gathered, each voxel's
    /// taps added one by one.
    fn smooth_axis_per_voxel(data: &mut [f32], dims: [usize; 3], axis: usize, kernel: &[f32]) {
        let n = dims[axis];
        let stride = [1, dims[0], dims[0] * dims[1]][axis];
        let radius = (kernel.len() / 2) as isize;
        let starts: Vec<usize> = (0..data.len())
            .filter(|&v| {
                [
                    v % dims[0],
                    (v / dims[0]) % dims[1],
                    v / (dims[0] * dims[1]),
                ][axis]
                    == 0
            })
            .collect();
        for start in starts {
            let line: Vec<f32> = (0..n).map(|t| data[start + t * stride]).collect();
            for t in 0..n {
                let (mut acc, mut mass) = (0f32, 0f32);
                for (o, &w) in kernel.iter().enumerate() {
                    let s = t as isize + o as isize - radius;
                    if s >= 0 && (s as usize) < n {
                        acc += w * line[s as usize];
                        mass += w;
                    }
                }
                data[start + t * stride] = acc / mass;
            }
        }
    }

    #[test]
    fn row_wise_smoothing_gives_the_per_voxel_loops_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Lines shorter than the kernel, of one voxel, and signed values (-0.0 included).
        for dims in [[17, 11, 9], [3, 20, 2], [1, 1, 12], [25, 1, 4]] {
            let n = dims.iter().product::<usize>();
            let data: Vec<f32> = (0..n)
                .map(|v| {
                    if v % 13 == 0 {
                        -0.0
                    } else {
                        rng.random_range(-50.0f32..900.0)
                    }
                })
                .collect();
            for sigma in [0.4, 1.2, 2.7] {
                let kernel = gaussian_kernel(sigma);
                for axis in 0..3 {
                    let mut expected = data.clone();
                    smooth_axis_per_voxel(&mut expected, dims, axis, &kernel);
                    let mut got = data.clone();
                    smooth_axis(&mut got, &mut Vec::new(), dims, axis, &kernel);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&expected),
                        "{dims:?} sigma {sigma} axis {axis}"
                    );
                }
            }
        }
    }

    #[test]
    fn non_finite_voxels_neither_spread_nor_change() {
        let dims = [9, 9, 9];
        let mut data = vec![1.0f32; 729];
        data[4 + 9 * (4 + 9 * 4)] = f32::NAN;
        data[0] = f32::INFINITY;
        let out = for_grid(&volume(dims, 1.0, data), 3.0).expect("smoothed");
        assert!(out.data[4 + 9 * (4 + 9 * 4)].is_nan());
        assert_eq!(out.data[0], f32::INFINITY);
        assert!(
            out.data
                .iter()
                .filter(|v| v.is_finite())
                .all(|v| (v - 1.0).abs() < 1e-5)
        );
    }
}
