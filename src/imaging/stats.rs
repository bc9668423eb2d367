//! Intensity summaries of a volume over its finite voxels only.

use serde::Serialize;

use super::simd::with_avx2;

/// Summary of the finite intensities of one volume. NaN and infinities are counted,
/// never summarised, so no statistic is ever NaN because of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IntensitySummary {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub p01: f64,
    pub p50: f64,
    pub p99: f64,
    /// Voxels holding NaN or an infinity.
    pub nonfinite: u64,
    /// Share of finite voxels equal to zero (background in masked images).
    pub zero_fraction: f64,
}

/// Percentiles are taken from a systematic sample of at most this many finite voxels:
/// exact for small volumes, within a fraction of a percentile rank for large ones, and
/// a few milliseconds instead of a few hundred for a 1 mm brain.
pub const PERCENTILE_SAMPLE: usize = 1 << 20;

/// The stride of [`finite_sample`]: every k-th voxel, so that at most
/// [`PERCENTILE_SAMPLE`] remain.
fn sample_stride(len: usize) -> usize {
    len.div_ceil(PERCENTILE_SAMPLE).max(1)
}

/// Every k-th finite value, k chosen so that at most [`PERCENTILE_SAMPLE`] remain.
pub fn finite_sample(data: &[f32]) -> Vec<f32> {
    let stride = sample_stride(data.len());
    // Sized up front: a growing list copied itself as it doubled.
    let mut sample = Vec::with_capacity(data.len().div_ceil(stride));
    sample.extend(
        data.iter()
            .step_by(stride)
            .copied()
            .filter(|v| v.is_finite()),
    );
    sample
}

/// The count of non-finite values and the extremes of the finite ones (`None` when there
/// are none), in one pass: the same extremes as [`summarise`]'s.
pub fn finite_range(data: &[f32]) -> (u64, Option<(f64, f64)>) {
    let Sums { n, min, max, .. } = sums(data, 0.0);
    (data.len() as u64 - n, (n > 0).then_some((min, max)))
}

/// Summarises the finite values; `None` when there are none. Min, max, mean and
/// standard deviation use every voxel; percentiles use [`finite_sample`].
pub fn summarise(data: &[f32]) -> Option<IntensitySummary> {
    let scanned = scan(data);
    let percentiles = (!scanned.sample.is_empty())
        .then(|| super::preprocess::finite_percentiles(&scanned.sample, SUMMARY_PERCENTILES));
    scanned.summary(percentiles)
}

/// The percentiles an [`IntensitySummary`] holds: p01, p50 and p99.
pub const SUMMARY_PERCENTILES: [f64; 3] = [1.0, 50.0, 99.0];

/// One pass over a volume: the sums of its [`IntensitySummary`] and its
/// [`finite_sample`], for a caller that selects other percentiles of the sample at the
/// same time as the summary's (import's previews take their window from it).
#[derive(Debug)]
pub struct Scanned {
    /// The volume's [`finite_sample`], the same values in the same order.
    pub sample: Vec<f32>,
    sums: Sums,
    voxels: u64,
}

/// Reads every voxel once: the summary's count, sum, squared deviations, extremes and
/// zeros, and the [`finite_sample`] taken from each block while it is still in cache.
/// Two passes (the sums, then the squared deviations from their mean) and the strided
/// sample read a 1 mm volume from memory three times.
pub fn scan(data: &[f32]) -> Scanned {
    let centre = deviation_centre(data.iter().copied().step_by(centre_stride(data.len())));
    let mut scanner = Scanner::new(data.len(), centre);
    for block in data.chunks(SCAN_BLOCK) {
        scanner.block(block);
    }
    scanner.finish()
}

/// [`scan`] fed block by block, as a decoder converts the voxels: each block is summed
/// while it is still in the first-level cache, so the volume is never read back.
/// Fed the blocks of a volume in order, it gives [`scan`]'s result bit for bit.
pub struct Scanner {
    voxels: usize,
    stride: usize,
    /// The index, within the next block, of the next value of the sample.
    next: usize,
    fed: usize,
    sum: [f64; LANES],
    squares: [f64; LANES],
    total: Sums,
    /// `None` for a scanner that keeps no sample ([`finite_range`]).
    sample: Option<Vec<f32>>,
}

impl Scanner {
    /// A scanner of a volume of `voxels` values, its squared deviations taken from
    /// `centre` ([`deviation_centre`] of the same values, for [`scan`]'s bits).
    pub fn new(voxels: usize, centre: f64) -> Self {
        Self::sampling(voxels, centre, true)
    }

    /// A scanner that takes no sample: its [`Scanned::sample`] is empty.
    fn without_sample(voxels: usize, centre: f64) -> Self {
        Self::sampling(voxels, centre, false)
    }

    fn sampling(voxels: usize, centre: f64, sample: bool) -> Self {
        let stride = sample_stride(voxels);
        Self {
            voxels,
            stride,
            next: 0,
            fed: 0,
            sum: [0.0; LANES],
            squares: [0.0; LANES],
            total: Sums {
                n: 0,
                sum: 0.0,
                squares: 0.0,
                centre,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                zeros: 0,
            },
            sample: sample.then(|| Vec::with_capacity(voxels.div_ceil(stride))),
        }
    }

    /// The next values of the volume: fewer than 2^32 per lane, about [`SCAN_BLOCK`]
    /// to stay in cache, and a multiple of [`LANES`] unless they are the last (value `i`
    /// of the volume stays in lane `i % LANES`).
    pub fn block(&mut self, values: &[f32]) {
        debug_assert!(self.fed.is_multiple_of(LANES));
        self.fed += values.len();
        let (n, min, max, zeros) =
            block_sums(values, self.total.centre, &mut self.sum, &mut self.squares);
        let total = &mut self.total;
        total.n += n;
        total.min = total.min.min(f64::from(min));
        total.max = total.max.max(f64::from(max));
        total.zeros += zeros;
        let Some(sample) = self.sample.as_mut() else {
            return;
        };
        if self.next < values.len() {
            sample.extend(
                values[self.next..]
                    .iter()
                    .step_by(self.stride)
                    .copied()
                    .filter(|v| v.is_finite()),
            );
            let taken = (values.len() - self.next).div_ceil(self.stride);
            self.next += taken * self.stride;
        }
        self.next -= values.len();
    }

    /// The sums and the sample of every value fed.
    pub fn finish(mut self) -> Scanned {
        debug_assert_eq!(self.fed, self.voxels);
        self.total.sum = combine(self.sum);
        self.total.squares = combine(self.squares);
        Scanned {
            sample: self.sample.unwrap_or_default(),
            sums: self.total,
            voxels: self.voxels as u64,
        }
    }
}

impl Scanned {
    /// The summary, given the [`SUMMARY_PERCENTILES`] of [`Self::sample`] (`None` when
    /// the sample is empty); `None` when no value is finite.
    pub fn summary(&self, percentiles: Option<[f32; 3]>) -> Option<IntensitySummary> {
        let Sums {
            n,
            sum,
            squares,
            centre,
            min,
            max,
            zeros,
        } = self.sums;
        if n == 0 {
            return None;
        }
        let count = n as f64;
        let mean = sum / count;
        // The mean of the squared deviations from the centre, less the squared distance
        // from the centre to the mean: the centre lies near the mean (the mean of a
        // sample), so the subtraction loses no more than a two-pass variance would.
        let offset = mean - centre;
        let var = (squares / count - offset * offset).max(0.0);
        // The nearest ranks of the sample, as selection would find them.
        let [p01, p50, p99] = percentiles.map_or([f64::NAN; 3], |p| p.map(f64::from));
        Some(IntensitySummary {
            min,
            max,
            mean,
            std: var.sqrt(),
            p01,
            p50,
            p99,
            nonfinite: self.voxels - n,
            zero_fraction: zeros as f64 / count,
        })
    }
}

/// The value [`scan`] takes the deviations from, given `strided`, every
/// [`centre_stride`]-th value of the volume from the first (about 4,096 spread over it):
/// near the mean of their finite values (0 when none is finite), so that the variance's
/// subtraction cancels no digits. It is that mean rounded to an integer when rounding
/// moves it by less than the values' spread: the deviations of an image of integers are
/// then integers, and their squares add up exactly, as its sum does.
pub fn deviation_centre(strided: impl Iterator<Item = f32>) -> f64 {
    let values: Vec<f64> = strided.filter(|v| v.is_finite()).map(f64::from).collect();
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let spread = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    let rounded = mean.round();
    if (rounded - mean).abs() <= spread {
        rounded
    } else {
        mean
    }
}

/// The stride of [`deviation_centre`]'s values in a volume of `len` values.
pub fn centre_stride(len: usize) -> usize {
    len.div_ceil(4096).max(1)
}

/// Accumulators per lane of [`sums`]: independent sums that the CPU adds side by side
/// (a single running sum waits on each addition), always combined in the same order,
/// so the result does not depend on the CPU.
const LANES: usize = 8;

/// Count, sum, squared deviations, extremes and zeros of the finite values.
#[derive(Debug, Clone, Copy)]
struct Sums {
    n: u64,
    sum: f64,
    /// Sum of the squared deviations from `centre`.
    squares: f64,
    centre: f64,
    min: f64,
    max: f64,
    zeros: u64,
}

/// The lanes' sums added pairwise, in a fixed order.
fn combine(lanes: [f64; LANES]) -> f64 {
    ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
}

/// Hands every value to `add` with its lane: value `i` to lane `i % LANES`.
#[cfg(test)]
fn each_in_lanes(data: &[f32], mut add: impl FnMut(usize, f32)) {
    let mut chunks = data.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in chunk.iter().enumerate() {
            add(lane, v);
        }
    }
    for (lane, &v) in chunks.remainder().iter().enumerate() {
        add(lane, v);
    }
}

/// Values per block of a [`Scanner`]: 16 KiB, still in the first-level cache when the
/// sample is taken from it, and few enough for its 32-bit counters per lane.
pub const SCAN_BLOCK: usize = LANES << 9;

/// [`Sums`] of `data`, squared deviations from `centre`: what [`finite_range`] reads.
fn sums(data: &[f32], centre: f64) -> Sums {
    let mut scanner = Scanner::without_sample(data.len(), centre);
    for block in data.chunks(SCAN_BLOCK) {
        scanner.block(block);
    }
    scanner.finish().sums
}

with_avx2! {
    /// One block of a [`Scanner`], its sums and squared deviations from `centre` added to
    /// the lanes: count, extremes (infinite, the wrong way round, when the block holds
    /// no finite value) and zeros. Each lane keeps its running sums in double precision
    /// (the order and bits of a plain lane-by-lane sum) and its extremes and counts in
    /// single precision and 32 bits, which the compiler keeps in one vector register
    /// each: widening is monotonic, so the extremes' values are the same.
    fn block_sums(
        data: &[f32],
        centre: f64,
        sum: &mut [f64; LANES],
        squares: &mut [f64; LANES],
    ) -> (u64, f32, f32, u64) {
        let mut n = [0u32; LANES];
        let mut min = [f32::INFINITY; LANES];
        let mut max = [f32::NEG_INFINITY; LANES];
        let mut zeros = [0u32; LANES];
        // Written lane by lane within each chunk (not through a closure per value),
        // which the compiler turns into vector operations.
        let chunks = data.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for lane in 0..LANES {
                let v = chunk[lane];
                let finite = v.is_finite();
                // A NaN is never below or above the running extremes: an infinity is
                // turned into one so that it counts as neither.
                let x = if finite { v } else { f32::NAN };
                n[lane] += u32::from(finite);
                min[lane] = if x < min[lane] { x } else { min[lane] };
                max[lane] = if x > max[lane] { x } else { max[lane] };
                zeros[lane] += u32::from(v == 0.0);
            }
            // Selections by masks, not branches: with the squares beside the sums the
            // compiler turned the selections into a branch per value.
            for lane in 0..LANES {
                let v = chunk[lane];
                let finite = v.is_finite();
                let x = f64::from(if finite { v } else { 0.0 });
                sum[lane] += x;
                let keep = if finite { u64::MAX } else { 0 };
                let d = f64::from_bits((x - centre).to_bits() & keep);
                squares[lane] += d * d;
            }
        }
        for (lane, &v) in rest.iter().enumerate() {
            let finite = v.is_finite();
            let x = if finite { v } else { f32::NAN };
            n[lane] += u32::from(finite);
            sum[lane] += if finite { f64::from(v) } else { 0.0 };
            let d = if finite { f64::from(v) - centre } else { 0.0 };
            squares[lane] += d * d;
            min[lane] = if x < min[lane] { x } else { min[lane] };
            max[lane] = if x > max[lane] { x } else { max[lane] };
            zeros[lane] += u32::from(v == 0.0);
        }
        let least = min.iter().fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
        let most = max.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        (
            n.iter().map(|&c| u64::from(c)).sum(),
            least,
            most,
            zeros.iter().map(|&c| u64::from(c)).sum(),
        )
    }
}

/// The value of rank `round(q * (n - 1))` (nearest rank); reorders `values`.
pub fn percentile_in_place(values: &mut [f32], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((values.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, v, _) = values.select_nth_unstable_by(rank, |a, b| a.total_cmp(b));
    f64::from(*v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform draws in [0, 1) from a seeded linear congruential generator.
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A [`Scanner`] fed blocks of `block` values.
    fn scan_in_blocks(data: &[f32], centre: f64, block: usize) -> Scanned {
        let mut scanner = Scanner::new(data.len(), centre);
        for values in data.chunks(block) {
            scanner.block(values);
        }
        scanner.finish()
    }

    #[test]
    fn ignores_nan_and_infinity() {
        let s = summarise(&[f32::NAN, 1.0, 2.0, 3.0, f32::INFINITY]).expect("finite values");
        assert_eq!(s.nonfinite, 2);
        assert_eq!((s.min, s.max, s.mean, s.p50), (1.0, 3.0, 2.0, 2.0));
        assert!(s.std.is_finite());
    }

    #[test]
    fn the_lanes_match_a_plain_summary_to_rounding() {
        // Plain sequential statistics over the finite values, percentiles by selection.
        let plain = |data: &[f32]| {
            let finite: Vec<f64> = data
                .iter()
                .filter(|v| v.is_finite())
                .map(|&v| f64::from(v))
                .collect();
            let n = finite.len() as f64;
            let mean = finite.iter().sum::<f64>() / n;
            let var = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let mut sample = finite_sample(data);
            let p = [0.01, 0.5, 0.99].map(|q| percentile_in_place(&mut sample, q));
            let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
            let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (mean, var.sqrt(), min, max, p)
        };
        let mut next = uniform(7);
        for len in [1usize, 7, 8, 9, 63, 1000, 3_000_001] {
            for integers in [true, false] {
                let mut data: Vec<f32> = (0..len)
                    .map(|_| {
                        let v = next() * 3000.0 - 200.0;
                        if integers { v.round() as f32 } else { v as f32 }
                    })
                    .collect();
                if len > 9 {
                    data[3] = f32::NAN;
                    data[len / 2] = f32::INFINITY;
                    data[len - 1] = 0.0;
                }
                let s = summarise(&data).expect("finite values");
                let (mean, std, min, max, p) = plain(&data);
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
                assert!(
                    close(s.mean, mean),
                    "{len} {integers}: mean {} {mean}",
                    s.mean
                );
                assert!(close(s.std, std), "{len} {integers}: std {} {std}", s.std);
                if integers {
                    // Integer sums are exact in any order.
                    assert_eq!(s.mean, mean);
                }
                assert_eq!((s.min, s.max), (min, max));
                assert_eq!([s.p01, s.p50, s.p99], p);
            }
        }
    }

    #[test]
    fn sums_equal_the_double_precision_lanes_bit_for_bit() {
        // The previous form: every lane's extremes widened to double precision.
        let reference = |data: &[f32]| {
            let mut n = [0u64; LANES];
            let mut sum = [0.0f64; LANES];
            let mut min = [f64::INFINITY; LANES];
            let mut max = [f64::NEG_INFINITY; LANES];
            let mut zeros = [0u64; LANES];
            each_in_lanes(data, |lane, v| {
                let finite = v.is_finite();
                let x = if finite { f64::from(v) } else { 0.0 };
                n[lane] += u64::from(finite);
                sum[lane] += x;
                min[lane] = min[lane].min(if finite { x } else { f64::INFINITY });
                max[lane] = max[lane].max(if finite { x } else { f64::NEG_INFINITY });
                zeros[lane] += u64::from(v == 0.0);
            });
            (
                n.iter().sum::<u64>(),
                combine(sum).to_bits(),
                min.iter().copied().fold(f64::INFINITY, f64::min).to_bits(),
                max.iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max)
                    .to_bits(),
                zeros.iter().sum::<u64>(),
            )
        };
        let mut next = uniform(11);
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
        ];
        for len in [0usize, 1, 5, 8, 13, 64, 1001, 100_003] {
            for special_share in [0.0, 0.01, 0.5, 1.0] {
                let data: Vec<f32> = (0..len)
                    .map(|_| {
                        if next() < special_share {
                            specials[(next() * specials.len() as f64) as usize % specials.len()]
                        } else {
                            (next() * 4000.0 - 1000.0) as f32
                        }
                    })
                    .collect();
                // Small blocks too, so that the lanes are seen to carry over blocks.
                for m in [sums(&data, 0.0), scan_in_blocks(&data, 0.0, 2 * LANES).sums] {
                    let got = (
                        m.n,
                        m.sum.to_bits(),
                        m.min.to_bits(),
                        m.max.to_bits(),
                        m.zeros,
                    );
                    assert_eq!(
                        got,
                        reference(&data),
                        "{len} values, {special_share} special"
                    );
                }
            }
        }
    }

    #[test]
    fn the_sample_taken_block_by_block_is_the_strided_sample() {
        let mut next = uniform(5);
        for len in [
            0usize,
            1,
            9,
            4095,
            4096,
            4097,
            1 << 20,
            (1 << 21) + 3,
            3_000_017,
        ] {
            let data: Vec<f32> = (0..len)
                .map(|_| {
                    let u = next();
                    if u < 0.05 {
                        f32::NAN
                    } else {
                        (u * 900.0) as f32
                    }
                })
                .collect();
            let expected = finite_sample(&data);
            assert_eq!(scan(&data).sample, expected, "{len} values");
            // Blocks that are not multiples of the stride, smaller and larger than it.
            for block in [LANES, 3 * LANES, 1000 * LANES] {
                let sample = scan_in_blocks(&data, 0.0, block).sample;
                assert_eq!(sample, expected, "{len} values, blocks of {block}");
            }
        }
    }

    #[test]
    fn the_variance_from_one_pass_keeps_its_digits_far_from_zero() {
        // A large offset and a small spread: squares about zero would cancel every digit.
        let mut next = uniform(3);
        for (offset, spread) in [(1.0e6, 0.5), (-3.0e4, 1e-2), (0.0, 1.0), (7.5e3, 2.0e3)] {
            let mut data: Vec<f32> = (0..200_003)
                .map(|_| (offset + (next() - 0.5) * spread) as f32)
                .collect();
            // An outlier where the centre's sample may land.
            data[0] = (offset + 40.0 * spread) as f32;
            let finite: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
            let n = finite.len() as f64;
            let mean = finite.iter().sum::<f64>() / n;
            let std = (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let s = summarise(&data).expect("finite values");
            assert!(
                (s.std - std).abs() <= 1e-9 * std,
                "offset {offset}, spread {spread}: {} against {std}",
                s.std
            );
        }
    }

    #[test]
    fn the_spread_of_integers_is_exact_to_its_last_rounding() {
        let mut next = uniform(17);
        for (len, range) in [(1_000usize, 10.0), (500_003, 4096.0), (3_000_001, 30_000.0)] {
            let data: Vec<f32> = (0..len)
                .map(|i| {
                    // A background of zeros, as a head in its field of view.
                    if i % 3 == 0 {
                        0.0
                    } else {
                        (next() * range).floor() as f32
                    }
                })
                .collect();
            let n = len as i128;
            let sum: i128 = data.iter().map(|&v| v as i128).sum();
            let squares: i128 = data.iter().map(|&v| (v as i128) * (v as i128)).sum();
            // n^2 var = n * squares - sum^2, exactly.
            let exact = ((n * squares - sum * sum) as f64 / (n * n) as f64).sqrt();
            let s = summarise(&data).expect("finite values");
            let ulps = (s.std.to_bits() as i64 - exact.to_bits() as i64).abs();
            assert!(ulps <= 4, "{len} values: {} against {exact}", s.std);
        }
    }

    #[test]
    fn percentiles_of_an_empty_sample_are_nan() {
        // Finite voxels only off the sample's stride.
        let stride = (1usize << 21).div_ceil(PERCENTILE_SAMPLE);
        let data: Vec<f32> = (0..1usize << 21)
            .map(|i| if i % stride == 1 { 5.0 } else { f32::NAN })
            .collect();
        let s = summarise(&data).expect("finite values");
        assert_eq!(s.mean, 5.0);
        assert!(s.p01.is_nan() && s.p50.is_nan() && s.p99.is_nan());
    }

    #[test]
    fn none_without_finite_values() {
        assert!(summarise(&[f32::NAN]).is_none());
        assert!(summarise(&[]).is_none());
    }
}
