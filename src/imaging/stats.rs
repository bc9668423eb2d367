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

/// Every k-th finite value, k chosen so that at most [`PERCENTILE_SAMPLE`] remain.
pub fn finite_sample(data: &[f32]) -> Vec<f32> {
    let stride = data.len().div_ceil(PERCENTILE_SAMPLE).max(1);
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
    let Moments { n, min, max, .. } = moments(data);
    (data.len() as u64 - n, (n > 0).then_some((min, max)))
}

/// Summarises the finite values; `None` when there are none. Min, max, mean and
/// standard deviation use every voxel; percentiles use [`finite_sample`].
pub fn summarise(data: &[f32]) -> Option<IntensitySummary> {
    let sample = finite_sample(data);
    let percentiles = (!sample.is_empty())
        .then(|| super::preprocess::finite_percentiles(&sample, SUMMARY_PERCENTILES));
    summarise_with_percentiles(data, percentiles)
}

/// The percentiles an [`IntensitySummary`] holds: p01, p50 and p99.
pub const SUMMARY_PERCENTILES: [f64; 3] = [1.0, 50.0, 99.0];

/// [`summarise`] given the [`SUMMARY_PERCENTILES`] of `data`'s [`finite_sample`]
/// (`None` when the sample is empty), for a caller that selects other percentiles of
/// the sample at the same time (import's previews take their window from it).
pub fn summarise_with_percentiles(
    data: &[f32],
    percentiles: Option<[f32; 3]>,
) -> Option<IntensitySummary> {
    let Moments {
        n,
        sum,
        min,
        max,
        zeros,
    } = moments(data);
    let nonfinite = data.len() as u64 - n;
    if n == 0 {
        return None;
    }
    let mean = sum / n as f64;
    let var = squared_deviations(data, mean) / n as f64;
    let n = n as f64;
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
        nonfinite,
        zero_fraction: zeros as f64 / n,
    })
}

/// Accumulators per lane of [`moments`] and [`squared_deviations`]: independent sums
/// that the CPU adds side by side (a single running sum waits on each addition), always
/// combined in the same order, so the result does not depend on the CPU.
const LANES: usize = 8;

/// Count, sum, extremes and zeros of the finite values.
struct Moments {
    n: u64,
    sum: f64,
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
#[inline(always)]
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

/// Values per block of [`moments`]: its 32-bit counters per lane cannot overflow.
const MOMENTS_BLOCK: usize = LANES << 24;

/// Count, sum, extremes and zeros of the finite values. Each lane keeps its running
/// sum in double precision (the order and bits of a plain lane-by-lane sum) and its
/// extremes and counts in single precision and 32 bits, which the compiler keeps in
/// one vector register each: widening the extremes would double the work, and
/// widening is monotonic, so the extremes' values are the same.
fn moments(data: &[f32]) -> Moments {
    moments_in_blocks(data, MOMENTS_BLOCK)
}

/// [`moments`] over blocks of `block` values (a multiple of [`LANES`], so that value `i`
/// stays in lane `i % LANES` across blocks).
fn moments_in_blocks(data: &[f32], block: usize) -> Moments {
    let mut total = Moments {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        zeros: 0,
    };
    let mut sum = [0.0f64; LANES];
    for block in data.chunks(block) {
        let (n, min, max, zeros) = block_moments(block, &mut sum);
        total.n += n;
        total.min = total.min.min(f64::from(min));
        total.max = total.max.max(f64::from(max));
        total.zeros += zeros;
    }
    total.sum = combine(sum);
    total
}

with_avx2! {
    /// One block of [`moments`], its sums added to `sum`'s lanes: count, extremes
    /// (infinite, the wrong way round, when the block holds no finite value) and zeros.
    fn block_moments(data: &[f32], sum: &mut [f64; LANES]) -> (u64, f32, f32, u64) {
        let mut n = [0u32; LANES];
        let mut min = [f32::INFINITY; LANES];
        let mut max = [f32::NEG_INFINITY; LANES];
        let mut zeros = [0u32; LANES];
        // Written lane by lane within each chunk (not through `each_in_lanes`'s
        // closure), which the compiler turns into vector operations.
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
            for lane in 0..LANES {
                let v = chunk[lane];
                sum[lane] += if v.is_finite() { f64::from(v) } else { 0.0 };
            }
        }
        for (lane, &v) in rest.iter().enumerate() {
            let finite = v.is_finite();
            let x = if finite { v } else { f32::NAN };
            n[lane] += u32::from(finite);
            sum[lane] += if finite { f64::from(v) } else { 0.0 };
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

with_avx2! {
    /// Sum of the finite values' squared deviations from `mean`.
    fn squared_deviations(data: &[f32], mean: f64) -> f64 {
        let mut sums = [0.0f64; LANES];
        let add = |lane: usize, v: f32| {
            let d = if v.is_finite() { f64::from(v) - mean } else { 0.0 };
            sums[lane] += d * d;
        };
        each_in_lanes(data, add);
        combine(sums)
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
    fn moments_equal_the_double_precision_lanes_bit_for_bit() {
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
                for m in [moments(&data), moments_in_blocks(&data, 2 * LANES)] {
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
