//! Intensity non-uniformity (bias field) correction: N3's histogram-sharpening iteration
//! (Sled et al. 1998, the core that N4 keeps) with a smooth multiplicative field, the
//! exponential of a cubic polynomial of the voxel coordinates, as the smoother.
//!
//! On a copy block-averaged to about 4 mm, the log-intensities of head voxels are
//! corrected by the current field; their histogram is sharpened by a Wiener deconvolution
//! of the spread a field adds (N4's defaults: FWHM 0.15, noise 0.01); each voxel's
//! distance to its expected true value under the sharpened histogram is fitted by least
//! squares with the polynomial and added to the field; linear, then quadratic, then cubic
//! terms, each until the field stops changing.

use rayon::prelude::*;
use rustfft::num_complex::Complex;
use serde::{Deserialize, Serialize};

use super::Volume;

/// Names the algorithm in the tensor cache's key, so that tensors corrected by an
/// earlier version are never reused.
pub const ALGORITHM: &str = "n3-polynomial-coarse-to-fine-v2";

/// Which bias correction a preset runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BiasCorrection {
    #[default]
    None,
    /// The polynomial log-field model of this module.
    Polynomial,
}

impl std::fmt::Display for BiasCorrection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Polynomial => "polynomial",
        })
    }
}

impl std::str::FromStr for BiasCorrection {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Self::None),
            "polynomial" => Ok(Self::Polynomial),
            other => Err(format!(
                "bias correction {other:?}: expected none or polynomial"
            )),
        }
    }
}

/// Polynomial degree of the log field (20 terms at degree 3).
const DEGREE: usize = 3;
/// N4's defaults: the field's spread in log-intensity (FWHM) and the Wiener filter's noise.
const FIELD_FWHM: f64 = 0.15;
const WIENER_NOISE: f64 = 0.01;
const HISTOGRAM_BINS: usize = 200;
const ITERATIONS_PER_LEVEL: usize = 100;
/// Iterations stop when the field changes by less than this (log units, RMS over the head).
const CONVERGED_RMS: f64 = 1e-4;
/// Spacing (mm) of the grid the field is fitted on.
const FIT_SPACING_MM: f64 = 4.0;

/// A fitted field: `log(bias)` as a polynomial of voxel coordinates scaled to [-1, 1].
#[derive(Debug, Clone)]
pub struct BiasField {
    dims: [usize; 3],
    coefficients: Vec<f64>,
}

fn exponents() -> Vec<[usize; 3]> {
    let mut out = Vec::new();
    for total in 0..=DEGREE {
        for a in 0..=total {
            for b in 0..=total - a {
                out.push([a, b, total - a - b]);
            }
        }
    }
    out
}

fn basis(terms: &[[usize; 3]], x: [f64; 3], out: &mut [f64]) {
    let mut powers = [[1.0f64; DEGREE + 1]; 3];
    for d in 0..3 {
        for e in 1..=DEGREE {
            powers[d][e] = powers[d][e - 1] * x[d];
        }
    }
    for (value, e) in out.iter_mut().zip(terms) {
        *value = powers[0][e[0]] * powers[1][e[1]] * powers[2][e[2]];
    }
}

fn normalised(dims: [usize; 3], voxel: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|d| 2.0 * voxel[d] / (dims[d].max(2) - 1) as f64 - 1.0)
}

impl BiasField {
    /// The multiplicative field at voxel `(i, j, k)` of the volume it was fitted on.
    pub fn value(&self, voxel: [f64; 3]) -> f64 {
        let terms = exponents();
        let mut b = vec![0.0; terms.len()];
        basis(&terms, normalised(self.dims, voxel), &mut b);
        b.iter()
            .zip(&self.coefficients)
            .map(|(x, c)| x * c)
            .sum::<f64>()
            .exp()
    }

    /// Divides the volume by the field, in place. Along a row the log field is a cubic in
    /// x, so each row costs its four coefficients and a Horner step per voxel.
    pub fn apply(&self, volume: &mut Volume) {
        let terms = exponents();
        let [nx, ny, _] = volume.dims;
        let dims = self.dims;
        let coefficients = &self.coefficients;
        volume
            .data
            .par_chunks_mut(nx)
            .enumerate()
            .for_each(|(row, values)| {
                let (j, k) = (row % ny, row / ny);
                let p = normalised(dims, [0.0, j as f64, k as f64]);
                let mut cubic = [0.0f64; DEGREE + 1];
                for (e, c) in terms.iter().zip(coefficients) {
                    cubic[e[0]] += c * p[1].powi(e[1] as i32) * p[2].powi(e[2] as i32);
                }
                for (i, v) in values.iter_mut().enumerate() {
                    let x = normalised(dims, [i as f64, 0.0, 0.0])[0];
                    let log = cubic[0] + x * (cubic[1] + x * (cubic[2] + x * cubic[3]));
                    if v.is_finite() {
                        *v *= (-log).exp() as f32;
                    }
                }
            });
    }
}

/// Fits the bias field of `volume` (see the module notes). `None` when the image has too
/// few head voxels to fit (the caller keeps the image as it is).
#[allow(clippy::needless_range_loop)] // matrix code reads best with indices
pub fn fit_bias_field(volume: &Volume) -> Option<BiasField> {
    let a = volume.affine;
    let voxel = [0, 1, 2].map(|c| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt());
    let factor = voxel.map(|v| ((FIT_SPACING_MM / v).round() as usize).max(1));
    let dims = [0, 1, 2].map(|d| volume.dims[d] / factor[d]);
    if dims.contains(&0) {
        return None;
    }
    let [sx, sy, _] = volume.dims;
    // Block means and their voxel-coordinate centres in the source grid. The volume is
    // read row by row, each voxel added to its block's sums: within a block that visits
    // the voxels in the order of a loop over the block (z, then y, then x), so the sums
    // are the same as block by block, without an index computed per voxel.
    let blocks = dims[0] * dims[1] * dims[2];
    let mut sums = vec![0.0f64; blocks];
    let mut counts = vec![0usize; blocks];
    for z in 0..dims[2] * factor[2] {
        for y in 0..dims[1] * factor[1] {
            let row = &volume.data[sx * (y + sy * z)..][..dims[0] * factor[0]];
            let first = dims[0] * (y / factor[1] + dims[1] * (z / factor[2]));
            let (sums, counts) = (
                &mut sums[first..first + dims[0]],
                &mut counts[first..first + dims[0]],
            );
            for ((s, n), block) in sums
                .iter_mut()
                .zip(counts.iter_mut())
                .zip(row.chunks_exact(factor[0]))
            {
                for &v in block {
                    if v.is_finite() {
                        *s += v as f64;
                        *n += 1;
                    }
                }
            }
        }
    }
    let mut samples: Vec<([f64; 3], f64)> = Vec::new();
    let mut all = Vec::new();
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let at = i + dims[0] * (j + dims[1] * k);
                let (s, n) = (sums[at], counts[at]);
                if n == 0 {
                    continue;
                }
                let centre = [i, j, k].map(|q| q as f64);
                let centre = [0, 1, 2]
                    .map(|d| centre[d] * factor[d] as f64 + (factor[d] as f64 - 1.0) / 2.0);
                let mean = s / n as f64;
                all.push(mean);
                samples.push((centre, mean));
            }
        }
    }
    if all.len() < 64 {
        return None;
    }
    all.sort_by(f64::total_cmp);
    let rank = |q: f64| all[((q * (all.len() - 1) as f64).round() as usize).min(all.len() - 1)];
    let (low, high, top) = (rank(0.02), rank(0.98), rank(0.995));
    let threshold = low + 0.1 * (high - low);
    if threshold <= 0.0 && high <= 0.0 {
        return None;
    }
    let head: Vec<([f64; 3], f64)> = samples
        .into_iter()
        .filter(|(_, v)| *v > threshold.max(f64::MIN_POSITIVE) && *v <= top)
        .map(|(p, v)| (p, v.ln()))
        .collect();
    let terms = exponents();
    let n_terms = terms.len();
    if head.len() < 4 * n_terms {
        return None;
    }
    // The design, one row of `n_terms` basis values per head sample, in one block that
    // every iteration streams twice.
    let mut bases = vec![0.0; head.len() * n_terms];
    for ((p, _), b) in head.iter().zip(bases.chunks_exact_mut(n_terms)) {
        basis(&terms, normalised(volume.dims, *p), b);
    }
    // The design is fixed, so its normal matrix is built once, each level factors its
    // leading block, and every iteration costs one product with the residuals and two
    // triangular solves.
    let mut normal = lower_normal_matrix(&bases, n_terms);
    for r in 0..n_terms {
        for q in r + 1..n_terms {
            normal[r][q] = normal[q][r];
        }
    }
    let log_values: Vec<f64> = head.iter().map(|(_, y)| *y).collect();
    let mut field = vec![0.0f64; head.len()];
    let mut coefficients = vec![0.0f64; n_terms];
    let mut corrected = log_values.clone();
    // Coarse to fine, as N4 refines its B-spline mesh: a linear field first, then
    // quadratic, then cubic terms. A strong field fitted at full order from the start
    // lets the higher terms absorb anatomy before the gross trend is gone.
    for degree in 1..=DEGREE {
        let k = terms
            .iter()
            .filter(|e| e.iter().sum::<usize>() <= degree)
            .count();
        let leading: Vec<Vec<f64>> = normal[..k].iter().map(|row| row[..k].to_vec()).collect();
        let factor = Cholesky::new(leading)?;
        let mut rhs = vec![0.0; k];
        for _ in 0..ITERATIONS_PER_LEVEL {
            let expected = sharpened_expectation(&corrected);
            residual_products(&bases, n_terms, &corrected, &expected, &mut rhs);
            let mut update = factor.solve(&rhs);
            let (mut mean, change) = add_field_update(&bases, n_terms, &update, &mut field);
            // The constant term is free: keep the field's mean over the head at zero.
            mean /= field.len() as f64;
            update[0] -= mean;
            for ((f, c), y) in field.iter_mut().zip(corrected.iter_mut()).zip(&log_values) {
                *f -= mean;
                *c = y - *f;
            }
            for (c, u) in coefficients.iter_mut().zip(&update) {
                *c += u;
            }
            let rms = (change / field.len() as f64 - mean * mean).max(0.0).sqrt();
            if rms < CONVERGED_RMS {
                break;
            }
        }
    }
    Some(BiasField {
        dims: volume.dims,
        coefficients,
    })
}

crate::imaging::simd::with_avx2! {
    /// The lower triangle of the design's normal matrix (rows of `n_terms` values), the
    /// samples added in order.
    fn lower_normal_matrix(bases: &[f64], n_terms: usize) -> Vec<Vec<f64>> {
        let mut normal = vec![vec![0.0; n_terms]; n_terms];
        for b in bases.chunks_exact(n_terms) {
            for (r, row) in normal.iter_mut().enumerate() {
                for (q, cell) in row[..=r].iter_mut().enumerate() {
                    *cell += b[r] * b[q];
                }
            }
        }
        normal
    }
}

crate::imaging::simd::with_avx2! {
    /// `rhs` set to the design's product with the residuals `corrected - expected`, over
    /// the first `rhs.len()` terms of each row of `bases` (rows of `n_terms` values),
    /// the samples added in order.
    fn residual_products(
        bases: &[f64],
        n_terms: usize,
        corrected: &[f64],
        expected: &[f64],
        rhs: &mut [f64],
    ) -> () {
        rhs.iter_mut().for_each(|v| *v = 0.0);
        for (b, (&u, &e)) in bases.chunks_exact(n_terms).zip(corrected.iter().zip(expected)) {
            let residual = u - e;
            for (r, x) in rhs.iter_mut().zip(b) {
                *r += x * residual;
            }
        }
    }
}

crate::imaging::simd::with_avx2! {
    /// Adds the design's product with `update` (over its first `update.len()` terms) to
    /// `field`; returns the sum of the added values and the sum of their squares.
    fn add_field_update(
        bases: &[f64],
        n_terms: usize,
        update: &[f64],
        field: &mut [f64],
    ) -> (f64, f64) {
        let mut change = 0.0f64;
        let mut mean = 0.0f64;
        for (f, b) in field.iter_mut().zip(bases.chunks_exact(n_terms)) {
            let delta: f64 = b.iter().zip(update).map(|(x, c)| x * c).sum();
            *f += delta;
            mean += delta;
            change += delta * delta;
        }
        (mean, change)
    }
}

/// Cholesky factor of a symmetric positive definite matrix (with a tiny ridge).
struct Cholesky {
    lower: Vec<Vec<f64>>,
}

impl Cholesky {
    #[allow(clippy::needless_range_loop)] // matrix code reads best with indices
    fn new(mut a: Vec<Vec<f64>>) -> Option<Self> {
        let n = a.len();
        let ridge = 1e-8 * (0..n).map(|i| a[i][i]).fold(0.0, f64::max).max(1e-12);
        for (i, row) in a.iter_mut().enumerate() {
            row[i] += ridge;
        }
        let mut l = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in 0..=i {
                let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
                if i == j {
                    if s <= 0.0 {
                        return None;
                    }
                    l[i][i] = s.sqrt();
                } else {
                    l[i][j] = s / l[j][j];
                }
            }
        }
        Some(Self { lower: l })
    }

    fn solve(&self, b: &[f64]) -> Vec<f64> {
        let l = &self.lower;
        let n = b.len();
        let mut y = vec![0.0; n];
        for i in 0..n {
            y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
        }
        x
    }
}

/// N3's expectation step: the histogram of the log-intensities is sharpened by a Wiener
/// deconvolution of a Gaussian of FWHM `FIELD_FWHM` (the spread the field is assumed to
/// add), and each value is mapped to its expected true log-intensity under that sharpened
/// distribution. What separates a value from its expectation is what a smooth field may
/// explain.
fn sharpened_expectation(values: &[f64]) -> Vec<f64> {
    let (low, high) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if high.partial_cmp(&low) != Some(std::cmp::Ordering::Greater) {
        return values.to_vec();
    }
    let width = (high - low) / (HISTOGRAM_BINS - 1) as f64;
    let locate = |v: f64| {
        let x = (v - low) / width;
        // Truncating the clamped value is its floor (no libm call without SSE4.1).
        let i = (x.max(0.0) as usize).min(HISTOGRAM_BINS - 2);
        (i, (x - i as f64).clamp(0.0, 1.0))
    };
    let mut histogram = vec![0.0f64; HISTOGRAM_BINS];
    for &v in values {
        // Linear splatting keeps the histogram a smooth function of the values.
        let (i, t) = locate(v);
        histogram[i] += 1.0 - t;
        histogram[i + 1] += t;
    }
    let sigma_bins = FIELD_FWHM / (8.0 * std::f64::consts::LN_2).sqrt() / width;
    let padded = (2 * HISTOGRAM_BINS).next_power_of_two();
    let mut planner = rustfft::FftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(padded);
    let inverse = planner.plan_fft_inverse(padded);
    let mut h: Vec<Complex<f64>> = (0..padded)
        .map(|i| Complex::new(histogram.get(i).copied().unwrap_or(0.0), 0.0))
        .collect();
    let gaussian = |d: f64| (-0.5 * (d / sigma_bins).powi(2)).exp();
    // A unit-area Gaussian centred on bin 0, wrapped around the padded length.
    let mut g: Vec<Complex<f64>> = (0..padded)
        .map(|i| {
            let d = if i <= padded / 2 {
                i as f64
            } else {
                i as f64 - padded as f64
            };
            Complex::new(gaussian(d), 0.0)
        })
        .collect();
    let area: f64 = g.iter().map(|c| c.re).sum();
    g.iter_mut().for_each(|c| c.re /= area);
    forward.process(&mut h);
    forward.process(&mut g);
    for (x, k) in h.iter_mut().zip(&g) {
        *x = *x * k.conj() / (k.norm_sqr() + WIENER_NOISE);
    }
    inverse.process(&mut h);
    let sharpened: Vec<f64> = h[..HISTOGRAM_BINS]
        .iter()
        .map(|c| (c.re / padded as f64).max(0.0))
        .collect();
    // E[true | observed bin b] = sum_j c_j F(j) G(b - j) / sum_j F(j) G(b - j).
    let reach = (4.0 * sigma_bins).ceil() as usize + 1;
    let centre = |j: usize| low + j as f64 * width;
    let expectation: Vec<f64> = (0..HISTOGRAM_BINS)
        .map(|b| {
            let (mut num, mut den) = (0.0f64, 0.0f64);
            let first = b.saturating_sub(reach);
            let last = (b + reach + 1).min(HISTOGRAM_BINS);
            for (j, density) in sharpened.iter().enumerate().take(last).skip(first) {
                let w = density * gaussian(b as f64 - j as f64);
                num += w * centre(j);
                den += w;
            }
            if den > 1e-12 { num / den } else { centre(b) }
        })
        .collect();
    values
        .iter()
        .map(|&v| {
            let (i, t) = locate(v);
            expectation[i] * (1.0 - t) + expectation[i + 1] * t
        })
        .collect()
}

/// Fits and removes the bias field; returns the corrected copy (the input when no field
/// could be fitted).
pub fn correct(volume: &Volume) -> Volume {
    let mut out = volume.clone();
    if let Some(field) = fit_bias_field(volume) {
        field.apply(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]

    fn a_known_polynomial_field_on_two_tissues_is_removed() {
        let dims = [40, 44, 36];
        let mut data = Vec::new();
        let mut truth = Vec::new();
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let x = normalised(dims, [i as f64, j as f64, k as f64]);
                    let r2 = x[0] * x[0] + x[1] * x[1] + x[2] * x[2];
                    let tissue = if r2 > 0.8 {
                        0.0
                    } else if (i / 4 + j / 4 + k / 4) % 2 == 0 {
                        100.0
                    } else {
                        60.0
                    };
                    let field = (0.3 * x[0] - 0.2 * x[1] * x[2] + 0.15 * x[2] * x[2]).exp();
                    data.push((tissue * field) as f32);
                    truth.push(tissue as f32);
                }
            }
        }
        let volume = Volume {
            dims,
            data,
            affine: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            voxel_size: [1.0; 3],
        };
        let cov = |values: &[f32]| {
            let bright: Vec<f64> = values
                .iter()
                .zip(&truth)
                .filter(|(_, t)| **t == 100.0)
                .map(|(v, _)| *v as f64)
                .collect();
            let mean = bright.iter().sum::<f64>() / bright.len() as f64;
            (bright.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / bright.len() as f64).sqrt()
                / mean
        };
        // What is left of the field: the spread of log(corrected / true) over the tissue
        // (the global scale is free).
        let residual_field = |values: &[f32]| {
            let logs: Vec<f64> = values
                .iter()
                .zip(&truth)
                .filter(|(_, t)| **t > 0.0)
                .map(|(v, t)| (*v as f64 / *t as f64).ln())
                .collect();
            let mean = logs.iter().sum::<f64>() / logs.len() as f64;
            (logs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt()
        };
        let corrected = correct(&volume);
        let (before, after) = (cov(&volume.data), cov(&corrected.data));
        eprintln!("bright-tissue CV {before} -> {after}");
        assert!(before > 0.08, "{before}");
        assert!(after < before / 5.0, "{before} -> {after}");
        let (field_before, field_after) = (
            residual_field(&volume.data),
            residual_field(&corrected.data),
        );
        eprintln!("residual field {field_before} -> {field_after}");
        assert!(field_before > 0.1, "{field_before}");
        assert!(field_after < 0.03, "{field_before} -> {field_after}");
    }
}
