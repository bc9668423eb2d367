//! Graded acquisition artefacts (k-space motion, ghosting, blur, Rician noise, contrast loss, bias field),
//! their severity-to-grade thresholds, and image measures of their strength.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rustfft::FftPlanner;
use rustfft::num_complex::Complex32;

use super::anatomy::rotation_matrix;

/// A 3D image being synthesised, in file voxel order (i fastest).
#[derive(Clone, Debug)]
pub struct Image3 {
    pub dims: [usize; 3],
    pub voxel_mm: [f64; 3],
    pub data: Vec<f32>,
}

impl Image3 {
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// Trilinear value at fractional voxel coordinates; zero outside.
    pub fn trilinear(&self, f: [f64; 3]) -> f32 {
        let [nx, ny, nz] = self.dims;
        if f[0] < 0.0
            || f[1] < 0.0
            || f[2] < 0.0
            || f[0] > (nx - 1) as f64
            || f[1] > (ny - 1) as f64
            || f[2] > (nz - 1) as f64
        {
            return 0.0;
        }
        let base = [0, 1, 2].map(|d| (f[d] as usize).min(self.dims[d].saturating_sub(2)));
        let t = [0, 1, 2].map(|d| (f[d] - base[d] as f64) as f32);
        let mut value = 0.0;
        for corner in 0..8usize {
            let c = [corner & 1, (corner >> 1) & 1, corner >> 2];
            let mut w = 1.0;
            let mut at = [0usize; 3];
            for d in 0..3 {
                let idx = (base[d] + c[d]).min(self.dims[d] - 1);
                at[d] = idx;
                w *= if c[d] == 1 { t[d] } else { 1.0 - t[d] };
            }
            if w > 0.0 {
                value += w * self.data[self.index(at[0], at[1], at[2])];
            }
        }
        value
    }

    /// Mean of voxels brighter than a quarter of the 99th percentile: the "tissue signal" level.
    pub fn signal_level(&self) -> f32 {
        let p99 = percentile(&self.data, 0.99);
        let threshold = 0.25 * p99;
        let (sum, n) = self
            .data
            .iter()
            .filter(|&&v| v > threshold)
            .fold((0f64, 0usize), |(s, n), &v| (s + v as f64, n + 1));
        if n == 0 { 1.0 } else { (sum / n as f64) as f32 }
    }
}

pub fn percentile(data: &[f32], q: f64) -> f32 {
    if data.is_empty() {
        return 0.0;
    }
    let step = (data.len() / 200_000).max(1);
    let mut sample: Vec<f32> = data
        .iter()
        .step_by(step)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if sample.is_empty() {
        return 0.0;
    }
    let at = ((sample.len() - 1) as f64 * q).round() as usize;
    let (_, v, _) = sample.select_nth_unstable_by(at, |a, b| a.total_cmp(b));
    *v
}

/// The artefacts a usable image may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Artefact {
    Motion,
    Ghosting,
    Blur,
    Noise,
    ContrastLoss,
    BiasField,
}

/// The protocol dimension an artefact is rated under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolAxis {
    Motion,
    Contrast,
    Noise,
}

impl Artefact {
    pub const ALL: [Artefact; 6] = [
        Artefact::Motion,
        Artefact::Ghosting,
        Artefact::Blur,
        Artefact::Noise,
        Artefact::ContrastLoss,
        Artefact::BiasField,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Artefact::Motion => "motion",
            Artefact::Ghosting => "ghosting",
            Artefact::Blur => "blur",
            Artefact::Noise => "noise",
            Artefact::ContrastLoss => "contrast_loss",
            Artefact::BiasField => "bias_field",
        }
    }

    /// Severity units: motion mm+degrees of the worst movement, ghost line attenuation (0..1),
    /// Gaussian sigma in mm, noise sigma in percent of tissue signal, contrast loss (0..1),
    /// log peak amplitude of the bias field.
    pub fn unit(self) -> &'static str {
        match self {
            Artefact::Motion => "mm_plus_deg",
            Artefact::Ghosting => "line_attenuation",
            Artefact::Blur => "sigma_mm",
            Artefact::Noise => "noise_pct",
            Artefact::ContrastLoss => "contrast_loss",
            Artefact::BiasField => "log_amplitude",
        }
    }

    /// Severities at which the grade becomes moderate (1) and severe (2).
    pub fn thresholds(self) -> [f64; 2] {
        match self {
            Artefact::Motion => [3.0, 7.0],
            Artefact::Ghosting => [0.3, 0.6],
            Artefact::Blur => [1.1, 2.0],
            Artefact::Noise => [5.0, 10.0],
            Artefact::ContrastLoss => [0.3, 0.55],
            Artefact::BiasField => [0.35, 0.65],
        }
    }

    pub fn axis(self) -> ProtocolAxis {
        match self {
            Artefact::Motion | Artefact::Ghosting | Artefact::Blur => ProtocolAxis::Motion,
            Artefact::Noise => ProtocolAxis::Noise,
            Artefact::ContrastLoss | Artefact::BiasField => ProtocolAxis::Contrast,
        }
    }

    pub fn grade(self, severity: f64) -> u8 {
        let [moderate, severe] = self.thresholds();
        if severity >= severe {
            2
        } else if severity >= moderate {
            1
        } else {
            0
        }
    }

    /// Severity on a grade scale: 1.0 at the moderate threshold, 2.0 at the severe one.
    pub fn grade_units(self, severity: f64) -> f64 {
        let [t1, t2] = self.thresholds();
        if severity < t1 {
            severity / t1
        } else {
            1.0 + (severity - t1) / (t2 - t1)
        }
    }

    /// A severity for a wanted grade; ranges overlap the thresholds so grades are not trivially separable.
    pub fn sample_severity(self, wanted_grade: u8, rng: &mut ChaCha8Rng) -> f64 {
        let [t1, t2] = self.thresholds();
        let (low, high) = match wanted_grade {
            0 => (0.0, 0.55 * t1),
            1 => (0.85 * t1, t2 * 1.08),
            _ => (t2 * 0.92, t2 + 1.2 * (t2 - t1)),
        };
        rng.random_range(low..high)
    }
}

/// Continuous severities applied to one image (0 = absent), indexed like `Artefact::ALL`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Severities(pub [f64; 6]);

impl Severities {
    pub fn get(&self, a: Artefact) -> f64 {
        self.0[Artefact::ALL.iter().position(|&x| x == a).unwrap_or(0)]
    }
    pub fn set(&mut self, a: Artefact, v: f64) {
        if let Some(p) = Artefact::ALL.iter().position(|&x| x == a) {
            self.0[p] = v;
        }
    }
    /// Protocol grade on one axis: the worst grade of the artefacts rated under it.
    pub fn axis_grade(&self, axis: ProtocolAxis) -> u8 {
        Artefact::ALL
            .iter()
            .filter(|a| a.axis() == axis)
            .map(|&a| a.grade(self.get(a)))
            .max()
            .unwrap_or(0)
    }
}

/// One rigid movement during the acquisition, as in TorchIO's RandomMotion.
#[derive(Clone, Copy, Debug)]
pub struct Movement {
    pub rotation_deg: [f64; 3],
    pub translation_mm: [f64; 3],
    /// Fraction of the k-space sweep at which the head moved.
    pub time: f64,
}

/// Movements whose worst |rotation| + |translation| equals `severity`: the head moves back and
/// forth 3-4 times during the sweep, each excursion at 60-100% of the worst one.
pub fn random_movements(severity: f64, rng: &mut ChaCha8Rng) -> Vec<Movement> {
    let count = rng.random_range(3..=4);
    let mut times: Vec<f64> = (0..count).map(|_| rng.random_range(0.08..0.95)).collect();
    times.sort_by(f64::total_cmp);
    let mut direction: Vec<f64> = (0..6).map(|_| rng.random_range(-1.0..1.0)).collect();
    let norm: f64 = direction
        .iter()
        .map(|v: &f64| v.abs())
        .sum::<f64>()
        .max(1e-9);
    for v in direction.iter_mut() {
        *v /= norm;
    }
    (0..count)
        .map(|m| {
            let share = if m == 0 {
                1.0
            } else {
                rng.random_range(0.6..1.0)
            };
            let sign = if m % 2 == 0 { 1.0 } else { -0.5 };
            let d: Vec<f64> = direction
                .iter()
                .map(|v| v * severity * share * sign + rng.random_range(-0.1..0.1) * severity * 0.2)
                .collect();
            Movement {
                rotation_deg: [d[0], d[1], d[2]],
                translation_mm: [d[3], d[4], d[5]],
                time: times[m],
            }
        })
        .collect()
}

fn rigid_copy(image: &Image3, movement: &Movement) -> Image3 {
    let deg = std::f64::consts::PI / 180.0;
    let r = rotation_matrix(movement.rotation_deg.map(|a| a * deg));
    let centre = [0, 1, 2].map(|d| (image.dims[d] as f64 - 1.0) / 2.0);
    let mut out = image.clone();
    let [nx, ny, nz] = image.dims;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p_mm = [
                    (i as f64 - centre[0]) * image.voxel_mm[0],
                    (j as f64 - centre[1]) * image.voxel_mm[1],
                    (k as f64 - centre[2]) * image.voxel_mm[2],
                ];
                // Inverse map: source = R^T (p - t)
                let q = [0, 1, 2].map(|d| p_mm[d] - movement.translation_mm[d]);
                let src = [0, 1, 2].map(|c| {
                    (0..3).map(|rr| r[rr][c] * q[rr]).sum::<f64>() / image.voxel_mm[c] + centre[c]
                });
                out.data[image.index(i, j, k)] = image.trilinear(src);
            }
        }
    }
    out
}

/// Applies `f` to every 1D line of complex data along `axis`, in place.
fn for_each_line(
    data: &mut [Complex32],
    dims: [usize; 3],
    axis: usize,
    mut f: impl FnMut(&mut [Complex32]),
) {
    let stride = match axis {
        0 => 1,
        1 => dims[0],
        _ => dims[0] * dims[1],
    };
    let n = dims[axis];
    let mut line = vec![Complex32::new(0.0, 0.0); n];
    let others: Vec<usize> = (0..3).filter(|&d| d != axis).collect();
    for b in 0..dims[others[1]] {
        for a in 0..dims[others[0]] {
            let mut base_idx = [0usize; 3];
            base_idx[others[0]] = a;
            base_idx[others[1]] = b;
            let base = base_idx[0] + dims[0] * (base_idx[1] + dims[1] * base_idx[2]);
            for (m, v) in line.iter_mut().enumerate() {
                *v = data[base + m * stride];
            }
            f(&mut line);
            for (m, v) in line.iter().enumerate() {
                data[base + m * stride] = *v;
            }
        }
    }
}

/// Centred k-space index (0 = DC) of the FFT bin `m` of `n`.
fn centred_frequency(m: usize, n: usize) -> i64 {
    if m < n.div_ceil(2) {
        m as i64
    } else {
        m as i64 - n as i64
    }
}

/// k-space motion: lines along the phase-encoding axis come from differently moved copies.
/// Only the phase-encoding direction needs transforming because the line selection depends on it alone.
pub fn apply_motion(image: &mut Image3, movements: &[Movement], phase_axis: usize) {
    if movements.is_empty() {
        return;
    }
    let n = image.dims[phase_axis];
    let mut planner = FftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    // Sequential acquisition from -N/2 to N/2; the copy in place at the k-space centre is the reference.
    let owner_of = |m: usize| -> usize {
        let time = (centred_frequency(m, n) as f64 + n as f64 / 2.0) / n as f64;
        movements.iter().filter(|mv| mv.time <= time).count()
    };
    let centre_owner = owner_of(0);
    let mut copies: Vec<Image3> = Vec::with_capacity(movements.len() + 1);
    for owner in 0..=movements.len() {
        if owner == centre_owner {
            copies.push(image.clone());
        } else {
            // Motion relative to the reference position.
            let reference = if centre_owner == 0 {
                None
            } else {
                Some(movements[centre_owner - 1])
            };
            let mut mv = movements[owner.saturating_sub(1).min(movements.len() - 1)];
            if owner == 0 {
                mv = Movement {
                    rotation_deg: [0.0; 3],
                    translation_mm: [0.0; 3],
                    time: 0.0,
                };
            }
            if let Some(reference) = reference {
                for d in 0..3 {
                    mv.rotation_deg[d] -= reference.rotation_deg[d];
                    mv.translation_mm[d] -= reference.translation_mm[d];
                }
            }
            copies.push(rigid_copy(image, &mv));
        }
    }
    let mut spectrum = vec![Complex32::new(0.0, 0.0); image.data.len()];
    for (owner, copy) in copies.iter().enumerate() {
        let mut buffer: Vec<Complex32> =
            copy.data.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        for_each_line(&mut buffer, image.dims, phase_axis, |line| {
            forward.process(line);
            for (m, v) in line.iter_mut().enumerate() {
                if owner_of(m) != owner {
                    *v = Complex32::new(0.0, 0.0);
                }
            }
        });
        for (s, b) in spectrum.iter_mut().zip(&buffer) {
            *s += *b;
        }
    }
    for_each_line(&mut spectrum, image.dims, phase_axis, |line| {
        inverse.process(line)
    });
    let scale = 1.0 / n as f32;
    for (v, s) in image.data.iter_mut().zip(&spectrum) {
        *v = s.norm() * scale;
    }
}

/// Ghosting as in TorchIO's RandomGhosting: every `period`-th phase-encoding line is attenuated.
pub fn apply_ghosting(image: &mut Image3, attenuation: f64, period: usize, phase_axis: usize) {
    let n = image.dims[phase_axis];
    let mut planner = FftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let mut buffer: Vec<Complex32> = image.data.iter().map(|&v| Complex32::new(v, 0.0)).collect();
    let keep = (1.0 - attenuation) as f32;
    let period = period.max(2);
    for_each_line(&mut buffer, image.dims, phase_axis, |line| {
        forward.process(line);
        for (m, v) in line.iter_mut().enumerate() {
            let f = centred_frequency(m, n);
            if f != 0 && f.rem_euclid(period as i64) == 0 {
                *v *= keep;
            }
        }
        inverse.process(line);
    });
    let scale = 1.0 / n as f32;
    for (v, s) in image.data.iter_mut().zip(&buffer) {
        *v = s.norm() * scale;
    }
}

/// Separable Gaussian blur with `sigma_mm` along every axis.
pub fn apply_blur(image: &mut Image3, sigma_mm: f64) {
    for axis in 0..3 {
        let sigma = sigma_mm / image.voxel_mm[axis];
        if sigma < 0.05 || image.dims[axis] < 2 {
            continue;
        }
        let radius = (3.0 * sigma).ceil() as i64;
        let kernel: Vec<f32> = (-radius..=radius)
            .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp() as f32)
            .collect();
        let total: f32 = kernel.iter().sum();
        let kernel: Vec<f32> = kernel.iter().map(|v| v / total).collect();
        let mut complex: Vec<Complex32> =
            image.data.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        let n = image.dims[axis] as i64;
        for_each_line(&mut complex, image.dims, axis, |line| {
            let source: Vec<f32> = line.iter().map(|c| c.re).collect();
            for (m, out) in line.iter_mut().enumerate() {
                let mut acc = 0.0;
                for (q, &w) in kernel.iter().enumerate() {
                    let at = (m as i64 + q as i64 - radius).clamp(0, n - 1) as usize;
                    acc += w * source[at];
                }
                out.re = acc;
            }
        });
        for (v, c) in image.data.iter_mut().zip(&complex) {
            *v = c.re;
        }
    }
}

/// Rician noise with standard deviation `sigma` per channel.
pub fn add_rician_noise(image: &mut Image3, sigma: f32, rng: &mut ChaCha8Rng) {
    if sigma <= 0.0 {
        return;
    }
    let Ok(normal) = Normal::new(0.0f32, sigma) else {
        return;
    };
    for v in image.data.iter_mut() {
        let real = *v + normal.sample(rng);
        let imaginary = normal.sample(rng);
        *v = (real * real + imaginary * imaginary).sqrt();
    }
}

/// Reduced tissue contrast and a gamma change (TorchIO RandomGamma with negative log-gamma).
pub fn apply_contrast_loss(image: &mut Image3, loss: f64, log_gamma: f64) {
    let level = image.signal_level();
    let peak = percentile(&image.data, 0.995).max(1e-6);
    let gamma = log_gamma.exp() as f32;
    let keep = (1.0 - loss) as f32;
    for v in image.data.iter_mut() {
        let x = *v;
        // Tissue is pulled towards its mean level; the background stays dark.
        let tissue_weight = ((x / level - 0.05) / 0.35).clamp(0.0, 1.0);
        let compressed = x + tissue_weight * ((level + (x - level) * keep) - x);
        *v = peak * (compressed.max(0.0) / peak).powf(gamma);
    }
}

/// Smooth multiplicative field exp(amplitude * f) with f a random low-order polynomial, |f| <= 1.
pub fn apply_bias_field(image: &mut Image3, amplitude: f64, rng: &mut ChaCha8Rng) {
    let coefficients: Vec<f64> = (0..10).map(|_| rng.random_range(-1.0..1.0)).collect();
    let [nx, ny, nz] = image.dims;
    let field = |i: usize, j: usize, k: usize| -> f64 {
        let x = 2.0 * i as f64 / (nx.max(2) - 1) as f64 - 1.0;
        let y = 2.0 * j as f64 / (ny.max(2) - 1) as f64 - 1.0;
        let z = 2.0 * k as f64 / (nz.max(2) - 1) as f64 - 1.0;
        let terms = [x, y, z, x * y, y * z, x * z, x * x, y * y, z * z, x * y * z];
        terms.iter().zip(&coefficients).map(|(t, c)| t * c).sum()
    };
    let mut peak = 1e-9f64;
    for k in (0..nz).step_by(2) {
        for j in (0..ny).step_by(2) {
            for i in (0..nx).step_by(2) {
                peak = peak.max(field(i, j, k).abs());
            }
        }
    }
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let idx = image.index(i, j, k);
                image.data[idx] *= (amplitude * field(i, j, k) / peak).exp() as f32;
            }
        }
    }
}

/// Standard deviation of the background (voxels below 5% of the signal level) relative to the signal level.
pub fn background_noise(image: &Image3) -> f64 {
    let level = image.signal_level();
    let head = head_mask(image);
    let values: Vec<f64> = image
        .data
        .iter()
        .zip(&head)
        .filter(|(_, h)| !**h)
        .map(|(&v, _)| v as f64)
        .collect();
    if values.is_empty() {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    // Background of magnitude images is Rayleigh: its mean is 1.25 sigma.
    mean / 1.2533 / level as f64
}

/// Head mask: voxels within 2 voxels of a voxel above 20% of the signal level after smoothing
/// (smoothing keeps background noise from seeding the mask).
pub fn head_mask(image: &Image3) -> Vec<bool> {
    let level = image.signal_level();
    let mut smooth = image.clone();
    let finest = image.voxel_mm.iter().copied().fold(f64::MAX, f64::min);
    apply_blur(&mut smooth, 1.5 * finest);
    let bright: Vec<bool> = smooth.data.iter().map(|&v| v > 0.2 * level).collect();
    let [nx, ny, nz] = image.dims;
    let mut mask = bright.clone();
    for _ in 0..2 {
        let previous = mask.clone();
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let idx = image.index(i, j, k);
                    if previous[idx] {
                        continue;
                    }
                    let near = (i > 0 && previous[idx - 1])
                        || (i + 1 < nx && previous[idx + 1])
                        || (j > 0 && previous[idx - nx])
                        || (j + 1 < ny && previous[idx + nx])
                        || (k > 0 && previous[idx - nx * ny])
                        || (k + 1 < nz && previous[idx + nx * ny]);
                    mask[idx] = near;
                }
            }
        }
    }
    mask
}

/// Mean intensity outside `head` relative to the signal level: ghosts and motion smear light up the air.
pub fn outside_energy(image: &Image3, head: &[bool]) -> f64 {
    let level = image.signal_level() as f64;
    let (sum, n) = image
        .data
        .iter()
        .zip(head)
        .filter(|(_, h)| !**h)
        .fold((0f64, 0usize), |(s, n), (&v, _)| (s + v as f64, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 / level }
}

/// Root mean squared difference between neighbours along `axis`, relative to the signal level
/// (high-frequency content: falls with blur, rises with motion ringing and noise).
pub fn gradient_energy(image: &Image3, axis: usize) -> f64 {
    let stride = match axis {
        0 => 1,
        1 => image.dims[0],
        _ => image.dims[0] * image.dims[1],
    };
    let level = image.signal_level() as f64;
    let mut sum = 0f64;
    let mut n = 0usize;
    for idx in 0..image.data.len().saturating_sub(stride) {
        let d = (image.data[idx + stride] - image.data[idx]) as f64;
        sum += d * d;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        (sum / n as f64).sqrt() / level
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A bright ellipsoid with an inner structure, in air.
    fn blob() -> Image3 {
        let dims = [40, 48, 36];
        let mut image = Image3 {
            dims,
            voxel_mm: [4.0; 3],
            data: vec![0.0; dims.iter().product()],
        };
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let q = [
                        (i as f64 - 20.0) / 12.0,
                        (j as f64 - 24.0) / 15.0,
                        (k as f64 - 18.0) / 11.0,
                    ];
                    let r = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
                    let idx = image.index(i, j, k);
                    image.data[idx] = if r < 0.5 {
                        0.4
                    } else if r < 1.0 {
                        1.0
                    } else {
                        0.0
                    };
                }
            }
        }
        image
    }

    #[test]
    fn noise_measure_rises_with_noise_grade() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let measures: Vec<f64> = [1.0, 6.5, 13.0]
            .iter()
            .map(|&pct| {
                let mut image = blob();
                let level = image.signal_level();
                add_rician_noise(&mut image, level * pct / 100.0, &mut rng);
                background_noise(&image) * 100.0
            })
            .collect();
        assert!(
            measures[0] < measures[1] && measures[1] < measures[2],
            "{measures:?}"
        );
        assert!((measures[2] - 13.0).abs() < 3.0, "{measures:?}");
    }

    #[test]
    fn ghost_energy_outside_the_head_rises_with_attenuation() {
        let head = head_mask(&blob());
        let measures: Vec<f64> = [0.0, 0.4, 0.8]
            .iter()
            .map(|&a| {
                let mut image = blob();
                apply_ghosting(&mut image, a, 4, 1);
                outside_energy(&image, &head)
            })
            .collect();
        assert!(
            measures[0] < measures[1] && measures[1] < measures[2],
            "{measures:?}"
        );
        assert!(measures[0] < 1e-3);
    }

    #[test]
    fn motion_smear_rises_with_severity() {
        let head = head_mask(&blob());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let measures: Vec<f64> = [0.0, 4.0, 10.0]
            .iter()
            .map(|&s| {
                let mut image = blob();
                let movements = random_movements(s, &mut rng);
                apply_motion(&mut image, &movements, 1);
                outside_energy(&image, &head)
            })
            .collect();
        assert!(
            measures[0] < measures[1] && measures[1] < measures[2],
            "{measures:?}"
        );
    }

    #[test]
    fn blur_lowers_edge_energy_and_bias_keeps_shape() {
        let sharp = gradient_energy(&blob(), 0);
        let mut soft = blob();
        apply_blur(&mut soft, 6.0);
        assert!(gradient_energy(&soft, 0) < 0.8 * sharp);
        let mut biased = blob();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        apply_bias_field(&mut biased, 0.8, &mut rng);
        let ratio: Vec<f32> = biased
            .data
            .iter()
            .zip(&blob().data)
            .filter(|(_, b)| **b > 0.9)
            .map(|(a, b)| a / b)
            .collect();
        let max = ratio.iter().cloned().fold(0.0, f32::max);
        let min = ratio.iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            max / min > 1.3 && max / min <= 1.6f32.exp() + 1e-3,
            "{min} {max}"
        );
    }

    #[test]
    fn grades_follow_thresholds() {
        for a in Artefact::ALL {
            let [t1, t2] = a.thresholds();
            assert_eq!(a.grade(0.5 * t1), 0);
            assert_eq!(a.grade(t1), 1);
            assert_eq!(a.grade(t2), 2);
            assert!((a.grade_units(t2) - 2.0).abs() < 1e-12);
        }
    }
}
