//! The source image's per-voxel noise, measured and given back to the grid: anti-aliasing
//! and interpolation average fine noise away, so without it a noisy 1 mm scan reaches a
//! 3 mm grid as clean as a good one, while a 2 mm scan keeps half of its noise.
//!
//! Raters judge noise at the image's own resolution. The `native_noise` preset option
//! measures the noise's standard deviation on the source voxels (second differences,
//! robust to structure), computes how much of it the smoothing and trilinear sampling
//! leave on the grid, and adds seeded white noise for the rest, so every grid voxel
//! carries the source's per-voxel noise whatever the source resolution
//! (docs/pretrained.md, "Noise at the source's resolution").

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::Volume;
use super::antialias;

/// Second differences needed per axis for a measurement.
const MIN_SAMPLES: usize = 1000;

/// Voxels visited per axis at most: a regular subsample beyond that.
const MAX_SAMPLES: usize = 1 << 20;

/// Standard deviation of white noise on `volume`'s voxels, from the median absolute
/// second difference along each axis over voxels whose stencil lies where the image is
/// brighter than `threshold` (inside the head: smooth tissue, where a second difference
/// is mostly noise), the median of the axes' estimates. `None` when too few voxels are
/// bright enough.
pub fn measure(volume: &Volume, threshold: f32) -> Option<f64> {
    let [nx, ny, nz] = volume.dims;
    let data = &volume.data;
    let strides = [1, nx, nx * ny];
    let total = nx * ny * nz;
    // Every `step`-th voxel: a step coprime with the row length would be better, but any
    // step keeps the estimate's statistics, and the subsample is deterministic.
    let step = (total / MAX_SAMPLES).max(1) | 1;
    let mut estimates = Vec::with_capacity(3);
    let mut values = Vec::new();
    for (axis, &stride) in strides.iter().enumerate() {
        if volume.dims[axis] < 3 {
            continue;
        }
        values.clear();
        let mut index = 0;
        while index < total {
            let position = (index / stride) % volume.dims[axis];
            if position >= 1 && position + 1 < volume.dims[axis] {
                let (a, b, c) = (data[index - stride], data[index], data[index + stride]);
                if a > threshold && b > threshold && c > threshold && (a + b + c).is_finite() {
                    values.push((a - 2.0 * b + c).abs());
                }
            }
            index += step;
        }
        if values.len() < MIN_SAMPLES {
            continue;
        }
        let middle = values.len() / 2;
        let (_, median, _) = values.select_nth_unstable_by(middle, f32::total_cmp);
        // For white noise of deviation s, a second difference has deviation s * sqrt(6),
        // and a normal variable's median absolute value is 0.6745 of its deviation.
        estimates.push(f64::from(*median) / 0.674_489_75 / 6f64.sqrt());
    }
    if estimates.is_empty() {
        return None;
    }
    estimates.sort_by(f64::total_cmp);
    Some(estimates[estimates.len() / 2])
}

/// The share of a white noise's variance on source voxels of `voxel_size` mm that reaches
/// a grid of `spacing_mm` through the anti-aliasing (when `antialias`) and trilinear
/// sampling, averaged over the grid points' offsets between source voxels.
pub fn variance_kept(voxel_size: [f64; 3], spacing_mm: f64, antialias: bool) -> f64 {
    let sigmas = if antialias {
        antialias::sigmas_voxels(voxel_size, spacing_mm)
    } else {
        [0.0; 3]
    };
    sigmas
        .iter()
        .map(|&sigma| {
            let kernel: Vec<f64> = if sigma >= 0.05 {
                antialias::gaussian_kernel(sigma)
                    .into_iter()
                    .map(f64::from)
                    .collect()
            } else {
                vec![1.0]
            };
            // Interpolating at offset u between two neighbours applies (1-u) w_k + u w_(k-1):
            // over a uniform u its squared sum is 2/3 sum w^2 + 1/3 sum w_k w_(k+1).
            let squares: f64 = kernel.iter().map(|w| w * w).sum();
            let neighbours: f64 = kernel.windows(2).map(|w| w[0] * w[1]).sum();
            2.0 / 3.0 * squares + neighbours / 3.0
        })
        .product()
}

/// Adds seeded white noise of deviation `sigma` to every value above `floor` (voxels of
/// signal; air clipped away and points outside the field of view stay as they are).
pub fn add(values: &mut [f32], floor: f32, sigma: f64, seed: u64) {
    // A deviation of zero (nothing to add), negative or NaN adds nothing.
    if sigma.is_nan() || sigma <= 0.0 {
        return;
    }
    let Ok(normal) = Normal::new(0.0f64, sigma) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for value in values.iter_mut().filter(|v| **v > floor) {
        *value = (f64::from(*value) + normal.sample(&mut rng)) as f32;
    }
}

/// A seed that follows the image's content: the dimensions and a regular sample of its
/// voxels' bits (FNV-1a), so one image always gets the same noise.
pub fn seed_for(volume: &Volume) -> u64 {
    let step = (volume.data.len() / 4096).max(1);
    let dims = volume.dims.iter().map(|&d| d as u64);
    let samples = volume
        .data
        .iter()
        .step_by(step)
        .map(|v| u64::from(v.to_bits()));
    dims.chain(samples)
        .flat_map(u64::to_le_bytes)
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(dims: [usize; 3], voxel: f64, level: f32, sigma: f64, seed: u64) -> Volume {
        let mut data = vec![level; dims.iter().product()];
        add(&mut data, f32::MIN, sigma, seed);
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
    fn measures_white_noise_and_ignores_smooth_structure() {
        let mut v = noisy([40, 40, 40], 1.0, 100.0, 5.0, 3);
        let sigma = measure(&v, 50.0).expect("measured");
        assert!((sigma - 5.0).abs() < 0.15, "{sigma}");
        // A linear ramp has no second difference: it adds nothing.
        for (i, value) in v.data.iter_mut().enumerate() {
            *value += (i % 40) as f32 * 3.0;
        }
        let ramp = measure(&v, 50.0).expect("measured");
        assert!((ramp - sigma).abs() < 0.05, "{ramp} vs {sigma}");
        // Nothing above the threshold: no measurement.
        assert_eq!(measure(&v, 1e6), None);
    }

    #[test]
    fn the_kept_share_matches_smoothing_and_sampling_real_noise() {
        // Empirical: white noise smoothed as anti-aliasing does and sampled at a 3 mm
        // grid's off-grid positions, against the closed form.
        // Smoothed noise is correlated over a few voxels, so it takes a large volume for
        // the empirical variance to settle within a few percent.
        let n = 120;
        let v = noisy([n; 3], 1.0, 0.0, 1.0, 9);
        let smoothed = antialias::for_grid(&v, 3.0).expect("smoothed");
        let kept = variance_kept([1.0; 3], 3.0, true);
        let mut sum = 0.0;
        let mut count = 0.0;
        let at = |i: usize, j: usize, k: usize| f64::from(smoothed.data[i + n * (j + n * k)]);
        // Positions offset by 0.37 voxel on every axis, away from the edges.
        let u = 0.37;
        for k in 10..n - 10 {
            for j in 10..n - 10 {
                for i in 10..n - 10 {
                    let mut value = 0.0;
                    for (dk, wk) in [(0, 1.0 - u), (1, u)] {
                        for (dj, wj) in [(0, 1.0 - u), (1, u)] {
                            for (di, wi) in [(0, 1.0 - u), (1, u)] {
                                value += wi * wj * wk * at(i + di, j + dj, k + dk);
                            }
                        }
                    }
                    sum += value * value;
                    count += 1.0;
                }
            }
        }
        let at_offset = [0; 3]
            .map(|_| {
                let kernel: Vec<f64> =
                    antialias::gaussian_kernel(antialias::sigmas_voxels([1.0; 3], 3.0)[0])
                        .into_iter()
                        .map(f64::from)
                        .collect();
                let squares: f64 = kernel.iter().map(|w| w * w).sum();
                let neighbours: f64 = kernel.windows(2).map(|w| w[0] * w[1]).sum();
                ((1.0 - u) * (1.0 - u) + u * u) * squares + 2.0 * u * (1.0 - u) * neighbours
            })
            .iter()
            .product::<f64>();
        let measured = sum / count;
        assert!(
            (measured / at_offset - 1.0).abs() < 0.05,
            "{measured} vs {at_offset}"
        );
        // 1 mm keeps far less than 2 mm, and both less than everything.
        let two = variance_kept([2.0; 3], 3.0, true);
        assert!(kept < 0.02 && two > 5.0 * kept && two < 1.0, "{kept} {two}");
        // No anti-aliasing: trilinear sampling alone keeps (2/3)^3.
        let plain = variance_kept([1.0; 3], 3.0, false);
        assert!((plain - (2.0f64 / 3.0).powi(3)).abs() < 1e-12);
    }

    #[test]
    fn noise_is_seeded_and_spares_values_at_the_floor() {
        let mut a = vec![0.0f32, 1.0, 2.0, 0.0, 3.0];
        let mut b = a.clone();
        add(&mut a, 0.0, 0.5, 42);
        add(&mut b, 0.0, 0.5, 42);
        assert_eq!(a, b);
        assert_eq!((a[0], a[3]), (0.0, 0.0));
        assert!(a[1] != 1.0 && a[2] != 2.0 && a[4] != 3.0);
        let v = noisy([8, 8, 8], 1.0, 1.0, 0.1, 1);
        let mut w = v.clone();
        assert_eq!(seed_for(&v), seed_for(&w));
        w.data[0] += 1.0;
        assert_ne!(seed_for(&v), seed_for(&w));
    }
}
