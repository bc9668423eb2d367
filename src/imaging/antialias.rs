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
    for (axis, &sigma) in sigmas.iter().enumerate() {
        if sigma >= 0.05 {
            let kernel = gaussian_kernel(sigma);
            smooth_axis(&mut data, volume.dims, axis, &kernel);
            if let Some(weight) = weight.as_mut() {
                smooth_axis(weight, volume.dims, axis, &kernel);
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
fn smooth_axis(data: &mut [f32], dims: [usize; 3], axis: usize, kernel: &[f32]) {
    let n = dims[axis];
    let stride = match axis {
        0 => 1,
        1 => dims[0],
        _ => dims[0] * dims[1],
    };
    let radius = (kernel.len() / 2) as isize;
    let mut line = vec![0f32; n];
    // The first voxel of every line: the other two axes' coordinates, this one's at 0.
    let starts: Vec<usize> = match axis {
        0 => (0..dims[1] * dims[2]).map(|jk| jk * dims[0]).collect(),
        1 => (0..dims[2])
            .flat_map(|k| (0..dims[0]).map(move |i| i + dims[0] * dims[1] * k))
            .collect(),
        _ => (0..dims[0] * dims[1]).collect(),
    };
    for start in starts {
        for (t, value) in line.iter_mut().enumerate() {
            *value = data[start + t * stride];
        }
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
