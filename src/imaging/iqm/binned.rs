//! The metrics' statistics from histograms, for images whose voxels take at most
//! 65,536 distinct values (stored as int16, uint8 and the like, as almost all are,
//! with or without a scaling slope): one pass over the voxels counts each value per
//! mask, and every order
//! statistic, mean and moment is then read from the counts. The harmonised value of a
//! voxel is a function of its stored value alone, so the order statistics are exactly
//! MRIQC's; sums become sums of `count * term` (within a few units in the last place
//! of the voxel-by-voxel sums; the means of rounded values are exact either way).

use super::ScaledIntegers;
use super::{
    GAUSSIAN_3_4, IqmError, Masks, Statistics, Summary, f32_key, kurtosis_of_moments, lerp,
    percentile_ranks, round4, sum_exact, widen,
};
use crate::imaging::nifti::scale_intensity;
use crate::imaging::simd::with_avx2;

/// Histograms larger than this (in bins) are not worth it: the exact path is used.
const MAX_BINS: usize = 1 << 16;

/// Voxel classes: the tissue label in bits 0-1, then air, head and rotation masks.
pub(super) const CODE_BITS: i32 = 5;
const CODES: usize = 1 << CODE_BITS;

/// Counters per bin and class (interleaved) of the one pass over the voxels.
pub(super) const LANE_BITS: i32 = 2;
const LANES: usize = 1 << LANE_BITS;

/// `v + ROUNDER - ROUNDER` is `v` rounded to an integer when `|v| < 2^22`: the sum lies
/// in [2^23, 2^24), where single precision holds integers only.
const ROUNDER: f32 = 12_582_912.0;
/// Below this magnitude [`ROUNDER`] rounds exactly.
const ROUNDS_EXACTLY: f32 = 4_194_304.0;

with_avx2! {
/// The smallest value and the number of bins when every voxel is an integer in a
/// range of at most [`MAX_BINS`] values.
fn integer_range(image: &[f32]) -> Option<(f32, usize)> {
    // Eight running minima and maxima, compared without `f32::min`'s NaN handling, and
    // the integer test by rounding with additions (a float-to-integer conversion does
    // not vectorise on baseline x86-64), so that the loop vectorises. A NaN is never
    // below or above the running values, and it fails the integer test, so an image
    // holding one takes the exact path. Values of 2^22 or more (and infinities and
    // NaNs, for which the comparison fails, hence the `^ 1`) are tested again by
    // conversion.
    let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
    let (mut fraction, mut large) = ([0u32; 8], [0u32; 8]);
    let chunks = image.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for lane in 0..8 {
            let v = chunk[lane];
            lo[lane] = if v < lo[lane] { v } else { lo[lane] };
            hi[lane] = if v > hi[lane] { v } else { hi[lane] };
            fraction[lane] |= u32::from((v + ROUNDER) - ROUNDER != v);
            large[lane] |= u32::from(v.abs() < ROUNDS_EXACTLY) ^ 1;
        }
    }
    for &v in rest {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
        fraction[0] |= u32::from((v + ROUNDER) - ROUNDER != v);
        large[0] |= u32::from(v.abs() < ROUNDS_EXACTLY) ^ 1;
    }
    let lo = lo
        .iter()
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let hi = hi
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    bins_between(lo, hi)?;
    let integral = if large.iter().any(|&l| l != 0) {
        // Past i32's range the conversion saturates and the test fails (the exact path
        // then applies), except at 2^31 itself, which is an integer anyway.
        image.iter().all(|&v| (v as i32) as f32 == v)
    } else {
        fraction.iter().all(|&f| f == 0)
    };
    integral.then(|| (lo, (hi - lo) as usize + 1))
}
}

/// The number of bins from `lo` to `hi` when there are at most [`MAX_BINS`].
fn bins_between(lo: f32, hi: f32) -> Option<usize> {
    let span = hi - lo;
    if span.is_nan() || span < 0.0 || span >= MAX_BINS as f32 {
        return None;
    }
    Some(span as usize + 1)
}

/// Bits of an empty slot of [`value_table`]'s hash table: a NaN, which never enters it.
const EMPTY: u32 = u32::MAX;

/// Every voxel's bin when the image takes at most [`MAX_BINS`] distinct finite values
/// that are not all integers (integers stored with a scaling slope, as many scanners
/// write them): the distinct values ascending and each voxel's index among them.
pub(super) fn value_table(image: &[f32]) -> Option<(Vec<f32>, Vec<u16>)> {
    // Open addressing on the value's bits, in a table twice the largest number of
    // values; runs of one value (the air, above all) skip the lookup.
    const SLOTS: usize = 2 * MAX_BINS;
    // The run check below would take a first voxel holding EMPTY's NaN for a repeat.
    if !image.first().is_some_and(|v| v.is_finite()) {
        return None;
    }
    let mut keys = vec![EMPTY; SLOTS];
    let mut ids = vec![0u16; SLOTS];
    let mut values: Vec<f32> = Vec::new();
    let mut index: Vec<u16> = Vec::with_capacity(image.len());
    let (mut last_bits, mut last_id) = (EMPTY, 0u16);
    for &v in image {
        let bits = v.to_bits();
        if bits == last_bits {
            index.push(last_id);
            continue;
        }
        if !v.is_finite() {
            return None;
        }
        let mut slot = (bits.wrapping_mul(0x9E37_79B1) >> 15) as usize % SLOTS;
        let id = loop {
            if keys[slot] == bits {
                break ids[slot];
            }
            if keys[slot] == EMPTY {
                if values.len() == MAX_BINS {
                    return None;
                }
                let id = values.len() as u16;
                keys[slot] = bits;
                ids[slot] = id;
                values.push(v);
                break id;
            }
            slot = (slot + 1) % SLOTS;
        };
        (last_bits, last_id) = (bits, id);
        index.push(id);
    }
    // Number the bins in ascending order of their values.
    // Up to 65,536 values: ids 0..=65,535 fit a u16, their count does not.
    let mut order: Vec<u16> = (0..values.len()).map(|b| b as u16).collect();
    order.sort_by_key(|&b| f32_key(values[usize::from(b)]));
    let mut rank = vec![0u16; values.len()];
    for (r, &b) in order.iter().enumerate() {
        rank[usize::from(b)] = r as u16;
    }
    for b in &mut index {
        *b = rank[usize::from(*b)];
    }
    let sorted = order.iter().map(|&b| values[usize::from(b)]).collect();
    Some((sorted, index))
}

/// Every voxel's bin when the image's values are stored integers scaled as the header
/// says ([`scale_intensity`]), from `lo` to `hi`: the value of every stored integer
/// between them, ascending, and each voxel's entry found by inverting the scaling, two
/// operations per voxel instead of [`value_table`]'s hash lookup. The bins of stored
/// integers absent from the image stay empty, as [`Binning::Integer`]'s do.
///
/// `None` (and the caller falls back on the values themselves) when the inversion could
/// round to the wrong integer: it is exact when single precision's rounding of the
/// largest value, half a unit in the last place, is at most a quarter of the slope, so
/// that every value lies within a quarter of a bin of its stored integer. Given that,
/// the caller's word that the values are such stored integers is taken without
/// comparing each value with its bin's, as [`Binning::of_integers`] takes its word;
/// only a bin outside the table is refused.
pub(super) fn scaled_table(image: &[f32], scaled: ScaledIntegers) -> Option<(Vec<f32>, Vec<u16>)> {
    let ScaledIntegers {
        slope,
        inter,
        lo,
        hi,
    } = scaled;
    let finite = slope.is_finite() && inter.is_finite() && lo.is_finite() && hi.is_finite();
    if !(finite && slope != 0.0 && lo <= hi) {
        return None;
    }
    let largest = lo.abs().max(hi.abs());
    let ulp = f32::from_bits(largest.to_bits() + 1) - largest;
    if f64::from(ulp) * 2.0 > slope.abs() {
        return None;
    }
    let stored_of = |v: f32| ((f64::from(v) - inter) / slope).round();
    let (first, last) = if slope > 0.0 {
        (stored_of(lo), stored_of(hi))
    } else {
        (stored_of(hi), stored_of(lo))
    };
    // Stored integers convert to single precision exactly below 2^24.
    const EXACT: f64 = 16_777_216.0;
    if !(first.abs() < EXACT && last.abs() < EXACT && last - first < MAX_BINS as f64) {
        return None;
    }
    let (first, last) = (first as i32, last as i32);
    let mut values: Vec<f32> = (first..=last)
        .map(|k| scale_intensity(k as f32, slope, inter))
        .collect();
    if slope < 0.0 {
        values.reverse();
    }
    let ascending = values.windows(2).all(|w| w[0] < w[1]);
    if !ascending || values.first() != Some(&lo) || values.last() != Some(&hi) {
        return None;
    }
    // A voxel's bin is its stored integer counted from the first bin's, plus a half so
    // that rounding down rounds to the nearest: within a quarter of an integer, it lands
    // within a quarter of the middle of one.
    let (scale, offset) = if slope > 0.0 {
        (1.0 / slope, 0.5 - (inter / slope + f64::from(first)))
    } else {
        (-1.0 / slope, 0.5 + inter / slope + f64::from(last))
    };
    scaled_index(image, scale, offset, values.len()).map(|index| (values, index))
}

/// Each value's bin, `value * scale + offset` rounded down; `None` when one falls
/// outside `0..bins`. The caller's word that the values are the table's is otherwise trusted,
/// as with integers, but a wrong word must not index past the counters.
fn scaled_index(image: &[f32], scale: f64, offset: f64, bins: usize) -> Option<Vec<u16>> {
    #[cfg(target_arch = "x86_64")]
    if crate::imaging::simd::avx2() {
        // SAFETY: the CPU has AVX2 (checked at run time).
        return unsafe { avx2::scaled_index(image, scale, offset, bins) };
    }
    let mut inside = true;
    let index = image
        .iter()
        .map(|&v| {
            let b = (f64::from(v) * scale + offset).floor();
            inside &= b >= 0.0 && b < bins as f64;
            b as u16
        })
        .collect();
    inside.then_some(index)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::scaled_index`] eight voxels at a time in double precision, the range
    /// test folded into the same pass.
    #[target_feature(enable = "avx2")]
    pub(super) fn scaled_index(
        image: &[f32],
        scale: f64,
        offset: f64,
        bins: usize,
    ) -> Option<Vec<u16>> {
        // Bins number at most 65,536, so an i32 holds every bin and the limit.
        let limit = i32::try_from(bins).ok()?;
        let mut index = Vec::with_capacity(image.len());
        let (scale_x4, offset_x4) = (_mm256_set1_pd(scale), _mm256_set1_pd(offset));
        let (below, last) = (_mm_set1_epi32(0), _mm_set1_epi32(limit - 1));
        let mut outside = _mm_setzero_si128();
        let chunks = image.chunks_exact(8);
        let rest = chunks.remainder();
        for eight in chunks {
            // SAFETY: `eight` holds eight floats.
            let v = unsafe { _mm256_loadu_ps(eight.as_ptr()) };
            let bin = |half: __m128| {
                let x = _mm256_add_pd(_mm256_mul_pd(_mm256_cvtps_pd(half), scale_x4), offset_x4);
                // Rounded down, so that values below the first bin (a wrong word) come
                // out negative rather than truncated to 0.
                _mm256_cvttpd_epi32(_mm256_floor_pd(x))
            };
            let (lo, hi) = (
                bin(_mm256_castps256_ps128(v)),
                bin(_mm256_extractf128_ps::<1>(v)),
            );
            // Out of range: below 0 or at least `bins` (a NaN or overflow converts to
            // i32::MIN, which is below 0).
            for b in [lo, hi] {
                let out_of_range =
                    _mm_or_si128(_mm_cmpgt_epi32(below, b), _mm_cmpgt_epi32(b, last));
                outside = _mm_or_si128(outside, out_of_range);
            }
            // Bins below 65,536 pack as unsigned 16-bit values.
            let mut out = [0u16; 8];
            // SAFETY: `out` holds eight 16-bit values.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm_packus_epi32(lo, hi)) };
            index.extend_from_slice(&out);
        }
        let mut inside = _mm_testz_si128(outside, outside) == 1;
        for &v in rest {
            let x = (f64::from(v) * scale + offset).floor();
            inside &= x >= 0.0 && x < f64::from(limit);
            index.push(x as u16);
        }
        inside.then_some(index)
    }
}

/// How voxels map to histogram bins, the bins numbered in ascending order of value.
pub(super) enum Binning {
    /// Integers from `lo`: a voxel's bin is its value minus `lo`.
    Integer { lo: f32, bins: usize },
    /// Any other values, by [`value_table`].
    Table { values: Vec<f32>, index: Vec<u16> },
}

impl Binning {
    pub(super) fn of(image: &[f32]) -> Option<Self> {
        match integer_range(image) {
            Some((lo, bins)) => Some(Binning::Integer { lo, bins }),
            None => {
                let (values, index) = value_table(image)?;
                Some(Binning::Table { values, index })
            }
        }
    }

    /// [`Binning::of`] an image known to hold integers only, from `lo` to `hi`: the
    /// same binning without the pass that tests the values.
    pub(super) fn of_integers(image: &[f32], lo: f32, hi: f32) -> Option<Self> {
        match bins_between(lo, hi) {
            Some(bins) => Some(Binning::Integer { lo, bins }),
            None => {
                let (values, index) = value_table(image)?;
                Some(Binning::Table { values, index })
            }
        }
    }

    /// [`Binning::of`] an image known to hold stored integers scaled by the header:
    /// the table of every stored integer's value, without hashing the voxels.
    pub(super) fn of_scaled(image: &[f32], scaled: ScaledIntegers) -> Option<Self> {
        match scaled_table(image, scaled) {
            Some((values, index)) => Some(Binning::Table { values, index }),
            None => Self::of(image),
        }
    }

    pub(super) fn bins(&self) -> usize {
        match self {
            Binning::Integer { bins, .. } => *bins,
            Binning::Table { values, .. } => values.len(),
        }
    }

    /// The value of each bin, ascending.
    fn into_values(self) -> Vec<f32> {
        match self {
            Binning::Integer { lo, bins } => (0..bins).map(|b| lo + b as f32).collect(),
            Binning::Table { values, .. } => values,
        }
    }
}

/// Order statistics of a histogram: `order` lists the bins by ascending value.
fn at_ranks(hist: &[u64], order: &[u32], values: &[f32], ranks: &[usize]) -> Vec<f32> {
    let mut wanted: Vec<usize> = (0..ranks.len()).collect();
    wanted.sort_by_key(|&i| ranks[i]);
    let mut out = vec![f32::NAN; ranks.len()];
    let mut below = 0u64;
    let mut next = 0;
    for &b in order {
        let c = hist[b as usize];
        while next < wanted.len() && (ranks[wanted[next]] as u64) < below + c {
            out[wanted[next]] = values[b as usize];
            next += 1;
        }
        below += c;
        if next == wanted.len() {
            break;
        }
    }
    out
}

/// `np.median` of the histogram's values (widened), or of their squares.
fn median(hist: &[u64], order: &[u32], values: &[f32], square: bool) -> f64 {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return f64::NAN;
    }
    let n = n as usize;
    let ranks = if n % 2 == 1 {
        [n / 2, n / 2]
    } else {
        [n / 2 - 1, n / 2]
    };
    let v = at_ranks(hist, order, values, &ranks);
    let (a, b) = if square {
        (widen(v[0]) * widen(v[0]), widen(v[1]) * widen(v[1]))
    } else {
        (f64::from(v[0]), f64::from(v[1]))
    };
    if n.is_multiple_of(2) {
        (a + b) / 2.0
    } else {
        a
    }
}

/// Distinct rounded values of a histogram with their counts, ascending.
fn rounded_counts(hist: &[u64], order: &[u32], rounded: &[f64]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for &b in order {
        let c = hist[b as usize];
        if c == 0 {
            continue;
        }
        let r = rounded[b as usize];
        match out.last_mut() {
            Some((last, count)) if *last == r => *count += c as f64,
            _ => out.push((r, c as f64)),
        }
    }
    out
}

/// `summary_stats` of one mask's histogram, as [`super::summary`] computes it voxel by
/// voxel. `all_rounded` lists the distinct rounded values of the whole image.
fn summary(
    hist: &[u64],
    order: &[u32],
    values: &[f32],
    rounded: &[f64],
    all_rounded: &[f64],
) -> Summary {
    let n: u64 = hist.iter().sum();
    let w = n as f64;
    // Rounded values are integers well inside f64's exact range: the sum is exact.
    let total: i128 = hist
        .iter()
        .zip(rounded)
        .map(|(&c, &r)| i128::from(c) * r as i128)
        .sum();
    let mean = total as f64 / w;
    let var = sum_exact(
        hist.iter()
            .zip(rounded)
            .filter(|(c, _)| **c > 0)
            .map(|(&c, &r)| {
                let d = r - mean;
                c as f64 * (d * d)
            }),
    ) / w;
    let stdv = var.sqrt();

    let distinct = rounded_counts(hist, order, rounded);
    let mut cumulative = Vec::with_capacity(distinct.len());
    let mut acc = 0.0;
    for (_, c) in &distinct {
        acc += c;
        cumulative.push(acc);
    }
    let quantile = |p: f64| -> f64 {
        if distinct.is_empty() {
            return f64::NAN;
        }
        let target = p * w;
        let ii = cumulative
            .partition_point(|c| *c < target)
            .min(distinct.len() - 1);
        let value = distinct[ii].0;
        if (target - cumulative[ii]).abs() < 1e-10 {
            let after = all_rounded.partition_point(|r| *r <= value);
            if let Some(next) = all_rounded.get(after) {
                return (value + next) / 2.0;
            }
        }
        value
    };
    let (p05, med, p95) = (quantile(0.05), quantile(0.5), quantile(0.95));

    // Kurtosis of the unrounded values.
    let k = if n == 0 {
        f64::NAN
    } else {
        let used = || {
            hist.iter()
                .zip(values)
                .filter(|(c, _)| **c > 0)
                .map(|(&c, &x)| (c as f64, widen(x)))
        };
        let m = sum_exact(used().map(|(c, x)| c * x)) / w;
        let m2 = sum_exact(used().map(|(c, x)| {
            let d = x - m;
            c * (d * d)
        })) / w;
        let m4 = sum_exact(used().map(|(c, x)| {
            let d = x - m;
            let s = d * d;
            c * (s * s)
        })) / w;
        kurtosis_of_moments(m, m2, m4)
    };

    // MAD: the median of |x - median| over the deviations of the used bins.
    let mut deviations: Vec<(f64, u64)> = hist
        .iter()
        .zip(values)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, &x)| ((widen(x) - med).abs(), c))
        .collect();
    deviations.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mad = if n == 0 {
        f64::NAN
    } else {
        let n = n as usize;
        let ranks = if n % 2 == 1 {
            [n / 2, n / 2]
        } else {
            [n / 2 - 1, n / 2]
        };
        let mut found = [f64::NAN; 2];
        let mut below = 0usize;
        let mut next = 0;
        for (d, c) in &deviations {
            while next < 2 && ranks[next] < below + *c as usize {
                found[next] = *d;
                next += 1;
            }
            below += *c as usize;
        }
        let (a, b) = (found[0], found[1]);
        if n.is_multiple_of(2) {
            (a / GAUSSIAN_3_4 + b / GAUSSIAN_3_4) / 2.0
        } else {
            a / GAUSSIAN_3_4
        }
    };
    Summary {
        mean: round4(mean),
        median: round4(med),
        p95: round4(p95),
        p05: round4(p05),
        k: round4(k),
        stdv: round4(stdv),
        mad: round4(mad),
        n: w,
    }
}

/// The white matter core's histogram, with `bin(index, value)` each voxel's bin.
pub(super) fn core_histogram(
    image: &[f32],
    core: &[u8],
    bins: usize,
    bin: impl Fn(usize, f32) -> usize,
) -> Vec<u64> {
    // The core is a small part of the grid: blocks without any of it are passed over
    // with one test of their bytes.
    const BLOCK: usize = 64;
    let mut core_hist = vec![0u64; bins];
    for (b, (values, marks)) in image.chunks(BLOCK).zip(core.chunks(BLOCK)).enumerate() {
        if marks.iter().fold(0u8, |any, &m| any | m) == 0 {
            continue;
        }
        for (j, (&v, &m)) in values.iter().zip(marks).enumerate() {
            if m != 0 {
                core_hist[bin(b * BLOCK + j, v)] += 1;
            }
        }
    }
    core_hist
}

/// Per-class counts of every bin, [`LANES`] counters per bin and class: 32-bit counts
/// keep the table small enough for the cache (a grid holds fewer than 2^32 voxels),
/// and since neighbouring voxels often share their value and class (the air, above
/// all) and an increment waits for the previous one to the same counter, a voxel
/// counts in the counter of its position modulo 4, which keeps those increments
/// independent. The four counters of a bin and class are adjacent, so that they share
/// a cache line.
pub(super) struct ClassCounts {
    lanes: Vec<u32>,
    table: usize,
}

impl ClassCounts {
    pub(super) fn new(bins: usize) -> Self {
        let table = bins * CODES;
        Self {
            lanes: vec![0u32; LANES * table],
            table,
        }
    }

    /// Counts voxel `idx` in `bin` with its tissue label (0-3) and air, head and
    /// rotation masks (0 or 1).
    #[inline(always)]
    pub(super) fn add(
        &mut self,
        idx: usize,
        bin: usize,
        tissue: u8,
        air: u8,
        head: u8,
        rotation: u8,
    ) {
        let code = (tissue & 3)
            | u8::from(air != 0) << 2
            | u8::from(head != 0) << 3
            | u8::from(rotation != 0) << 4;
        self.add_code(idx, bin, code);
    }

    /// Counts voxel `idx` in `bin` under a code whose bits 0-4 are its class code
    /// (higher bits are ignored).
    #[inline(always)]
    pub(super) fn add_code(&mut self, idx: usize, bin: usize, code: u8) {
        let code = usize::from(code) & (CODES - 1);
        self.add_slot((bin * CODES + code) * LANES + idx % LANES);
    }

    /// Counts a voxel in its counter, `(bin * CODES + code) * LANES + idx % LANES` for
    /// voxel `idx` with class code `code` (below `CODES`): [`Self::add_code`] with the
    /// index computed by the caller.
    #[inline(always)]
    pub(super) fn add_slot(&mut self, slot: usize) {
        self.lanes[slot] += 1;
    }
}

/// Every voxel counted under its bin and its class code.
fn count(
    masks: &Masks,
    image: &[f32],
    bins: usize,
    bin: impl Fn(usize, f32) -> usize,
) -> ClassCounts {
    let mut counts = ClassCounts::new(bins);
    let voxels = image
        .iter()
        .zip(&masks.tissue)
        .zip(&masks.air)
        .zip(&masks.head)
        .zip(&masks.rotation);
    for (idx, ((((&v, &t), &a), &h), &r)) in voxels.enumerate() {
        counts.add(idx, bin(idx, v), t, a, h, r);
    }
    counts
}

/// The statistics of [`super::exact_statistics`] from histograms, or `None` when the
/// image's voxels take more than [`MAX_BINS`] distinct values or a non-finite one (then
/// the exact path applies).
pub(super) fn statistics(
    image: &[f32],
    core: &[u8],
    masks: &Masks,
) -> Option<Result<Statistics, IqmError>> {
    let binning = Binning::of(image)?;
    let bins = binning.bins();
    let (core_hist, counts) = match &binning {
        Binning::Integer { lo, .. } => {
            let lo = *lo;
            let bin = |_, v: f32| (v - lo) as usize;
            (
                core_histogram(image, core, bins, bin),
                count(masks, image, bins, bin),
            )
        }
        Binning::Table { index, .. } => {
            let bin = |i, _| usize::from(index[i]);
            (
                core_histogram(image, core, bins, bin),
                count(masks, image, bins, bin),
            )
        }
    };
    let artefact_n = masks.artefact.iter().filter(|&&a| a != 0).count() as u64;
    from_counts(binning, &core_hist, counts, artefact_n, image.len())
}

/// The statistics from the white matter core's histogram, the per-class counts, the
/// number of artefact voxels and of all voxels; `None` when the harmonised values are
/// too large for exact integer sums.
pub(super) fn from_counts(
    binning: Binning,
    core_hist: &[u64],
    counts: ClassCounts,
    artefact_n: u64,
    n_all: usize,
) -> Option<Result<Statistics, IqmError>> {
    let bins = binning.bins();
    let ClassCounts { lanes, table } = counts;
    let stored = binning.into_values();
    let identity: Vec<u32> = (0..bins as u32).collect();
    // The white-matter core first: its median sets the harmonisation.
    if core_hist.iter().all(|&c| c == 0) {
        return Some(Err(IqmError::NoTissue("white matter")));
    }
    let wm_median = median(core_hist, &identity, &stored, false);
    let factor = 1000.0 / wm_median;
    let values: Vec<f32> = stored
        .iter()
        .map(|&v| {
            let x = (f64::from(v) * factor) as f32;
            if x.is_nan() || x < 0.0 { 0.0 } else { x }
        })
        .collect();
    let rounded: Vec<f64> = values.iter().map(|&x| widen(x).round_ties_even()).collect();
    // Exact integer sums need rounded values well inside f64's integer range.
    let largest = rounded.iter().fold(0.0f64, |a, r| a.max(r.abs()));
    if !(largest * n_all as f64).is_finite() || largest * n_all as f64 >= 2f64.powi(52) {
        return None;
    }
    let mut order = identity;
    order.sort_by_key(|&b| f32_key(values[b as usize]));

    let hist: Vec<u32> = lanes
        .chunks_exact(LANES)
        .map(|cell| cell.iter().sum())
        .collect();
    debug_assert_eq!(hist.len(), table);
    let gather = |keep: &dyn Fn(usize) -> bool| -> Vec<u64> {
        let codes: Vec<usize> = (0..CODES).filter(|&c| keep(c)).collect();
        hist.chunks_exact(CODES)
            .map(|h| codes.iter().map(|&c| u64::from(h[c])).sum())
            .collect()
    };
    let air = gather(&|c| c & 4 != 0);
    let tissue = |t: usize| gather(&|c| c & 3 == t);
    let (csf_h, gm_h, wm_h) = (tissue(1), tissue(2), tissue(3));
    let head = gather(&|c| c & 8 != 0);
    let fber_bg = gather(&|c| c & 8 == 0 && c & 16 == 0);
    let frame = gather(&|c| c & 16 == 0);
    let all = gather(&|_| true);

    let mut all_rounded: Vec<f64> = order
        .iter()
        .filter(|&&b| all[b as usize] > 0)
        .map(|&b| rounded[b as usize])
        .collect();
    all_rounded.dedup();
    let summarise = |h: &[u64]| summary(h, &order, &values, &rounded, &all_rounded);
    let csf = summarise(&csf_h);
    let gm = summarise(&gm_h);
    let wm = summarise(&wm_h);
    let bg = summarise(&air);

    let fg_mu = median(&head, &order, &values, true);
    let bg_mu = median(&fber_bg, &order, &values, true);

    let n_vox = frame.iter().sum::<u64>() as f64;
    let used = || {
        frame
            .iter()
            .zip(&values)
            .filter(|(c, _)| **c > 0)
            .map(|(&c, &x)| (c as f64, widen(x)))
    };
    let b_max = sum_exact(used().map(|(c, x)| c * (x * x))).sqrt();
    let entropy = sum_exact(used().map(|(c, x)| c * ((x / b_max) * ((x + 1e-16) / b_max).ln())));
    let efc_max = 1.0 * n_vox * (1.0 / n_vox.sqrt()) * (1.0 / n_vox.sqrt()).ln();
    let efc = round4((1.0 / efc_max) * entropy);

    let (ranks, weight) = percentile_ranks(n_all, 99.95);
    let v = at_ranks(&all, &order, &values, &ranks);
    let p9995 = lerp(widen(v[0]), widen(v[1]), weight);

    Some(Ok(Statistics {
        wm_median,
        csf,
        gm,
        wm,
        bg,
        fg_mu,
        bg_mu,
        efc,
        p9995,
        air_n: air.iter().sum::<u64>() as f64,
        artefact_n: artefact_n as f64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: every value converts to an integer and back unchanged, and the
    /// range holds at most [`MAX_BINS`] values.
    fn by_conversion(image: &[f32]) -> Option<(f32, usize)> {
        if image.is_empty() || !image.iter().all(|&v| (v as i32) as f32 == v) {
            return None;
        }
        let lo = image.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = image.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (hi - lo < MAX_BINS as f32).then(|| (lo, (hi - lo) as usize + 1))
    }

    #[test]
    fn the_integer_range_by_rounding_equals_the_conversion_test() {
        let base: Vec<f32> = (0..37).map(|i| (i * 7 % 23) as f32 - 5.0).collect();
        let odd = [
            0.5,
            -0.5,
            1.5,
            -0.0,
            2.5e-8,
            4_194_303.0,
            4_194_304.0,
            4_194_304.5,
            4_194_305.0,
            -4_194_305.0,
            8_388_609.0,
            16_777_217.0,
            2_147_483_648.0,
            -2_147_483_648.0,
            3.0e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            65_535.0,
            65_536.0,
        ];
        let mut images = vec![base.clone()];
        for &x in &odd {
            for at in [0, 8, 36] {
                let mut image = base.clone();
                image[at] = x;
                images.push(image);
            }
            // A whole image around the odd value (the range test passes there).
            images.push(base.iter().map(|&b| x + b.abs()).collect());
        }
        for image in &images {
            let got = integer_range(image);
            let want = by_conversion(image);
            assert_eq!(
                got.map(|(lo, n)| (lo.to_bits(), n)),
                want.map(|(lo, n)| (lo.to_bits(), n)),
                "{image:?}"
            );
        }
    }

    /// Stored integers scaled as a header says, with the facts import would hand over.
    fn scaled_image(stored: &[i32], slope: f64, inter: f64) -> (Vec<f32>, ScaledIntegers) {
        let image: Vec<f32> = stored
            .iter()
            .map(|&k| scale_intensity(k as f32, slope, inter))
            .collect();
        let lo = image.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = image.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let facts = ScaledIntegers {
            slope,
            inter,
            lo,
            hi,
        };
        (image, facts)
    }

    #[test]
    fn the_table_of_scaled_integers_bins_every_voxel_as_the_table_of_values_does() {
        // Stored integers over a 16-bit range, out of order, some absent, odd lengths.
        let spans: [&[i32]; 4] = [
            &[-32768, 32767, 0, 1, -1, 5, 5, 5, 300, -32767, 12, 7, 7],
            &[0, 4095, 17, 17, 2048, 9, 1, 4094],
            &[65535, 0, 40000, 3, 3],
            &[1_000_000, 1_065_535, 1_000_001, 1_030_000, 1_000_000],
        ];
        let scalings = [
            (0.731, 12.5),
            (3.801_887_035_369_873, 0.0),
            (-2.25, 1000.3),
            (1.0, 0.5),
            (0.001_220_703_125, -40.0),
            (1.0e-3, 0.0),
            (-7.5e3, 1.0e9),
            (123.456, -4.0e6),
        ];
        let mut tabled = 0;
        for stored in spans {
            // Long enough for the vector loops, with runs.
            let stored: Vec<i32> = stored
                .iter()
                .cycle()
                .take(stored.len() * 13)
                .copied()
                .collect();
            for (slope, inter) in scalings {
                let (image, facts) = scaled_image(&stored, slope, inter);
                let Some((values, index)) = scaled_table(&image, facts) else {
                    // Refused only where the inversion could round to the wrong integer.
                    let largest = facts.lo.abs().max(facts.hi.abs());
                    let ulp = f32::from_bits(largest.to_bits() + 1) - largest;
                    assert!(
                        f64::from(ulp) * 2.0 > slope.abs()
                            || stored.iter().max().unwrap_or(&0)
                                - stored.iter().min().unwrap_or(&0)
                                >= MAX_BINS as i32,
                        "{slope} {inter}"
                    );
                    continue;
                };
                tabled += 1;
                assert!(values.windows(2).all(|w| w[0] < w[1]), "{slope} {inter}");
                for (v, &b) in image.iter().zip(&index) {
                    assert_eq!(
                        values[usize::from(b)].to_bits(),
                        v.to_bits(),
                        "{slope} {inter}"
                    );
                }
                // The same order statistics as the table of distinct values: the same
                // values at the same ranks.
                let (distinct, by_value) = value_table(&image).expect("at most 65,536 values");
                let mut rank = vec![0usize; values.len()];
                let mut present: Vec<usize> = index.iter().map(|&b| usize::from(b)).collect();
                present.sort_unstable();
                present.dedup();
                for (r, &b) in present.iter().enumerate() {
                    rank[b] = r;
                }
                for (&b, &d) in index.iter().zip(&by_value) {
                    assert_eq!(rank[usize::from(b)], usize::from(d));
                    assert_eq!(
                        values[usize::from(b)].to_bits(),
                        distinct[usize::from(d)].to_bits()
                    );
                }
            }
        }
        assert!(tabled >= 20, "{tabled} images tabled");
    }

    #[test]
    fn scaled_integers_too_close_for_single_precision_are_refused() {
        // Values from 16,384 lie 2^-9 apart in single precision: a slope of 2^-8 keeps
        // a quarter of a bin's margin, a slope of 2^-9 none.
        let from = |first: i32| (0..4096).map(|k| first + k).collect::<Vec<i32>>();
        let (image, facts) = scaled_image(&from(1 << 22), 2f64.powi(-8), 0.0);
        assert!(scaled_table(&image, facts).is_some());
        let (image, facts) = scaled_image(&from(1 << 23), 2f64.powi(-9), 0.0);
        assert!(scaled_table(&image, facts).is_none());
        // Slopes that are no scaling, and facts that do not hold.
        for slope in [0.0, f64::NAN, f64::INFINITY] {
            let (image, mut facts) = scaled_image(&[1, 2, 3], 2.0, 0.5);
            facts.slope = slope;
            assert!(scaled_table(&image, facts).is_none(), "{slope}");
        }
        let (image, mut facts) = scaled_image(&[1, 2, 3], 2.0, 0.5);
        facts.hi = 7.0;
        assert!(
            scaled_table(&image, facts).is_none(),
            "an extreme that is no value"
        );
        // Values past the largest fall outside the table (the word that they are the
        // table's is otherwise the caller's, as with integers).
        facts.hi = 2.5;
        facts.lo = 2.5;
        assert!(
            scaled_table(&image, facts).is_none(),
            "values past the largest"
        );
    }

    #[test]
    fn scaled_bins_are_refused_when_a_value_falls_outside_the_table() {
        let reference = |image: &[f32], bins: usize| -> Option<Vec<u16>> {
            let floors: Vec<f64> = image
                .iter()
                .map(|&v| (f64::from(v) * 0.5 + 0.5).floor())
                .collect();
            floors
                .iter()
                .all(|&b| b >= 0.0 && b < bins as f64)
                .then(|| floors.iter().map(|&b| b as u16).collect())
        };
        let inside: Vec<f32> = (0..37).map(|i| (i % 20) as f32 * 2.0).collect();
        // -1 falls in the first bin (38 is the last bin's); the others fall outside.
        let mut refused = 0;
        for odd in [
            -1.0,
            -2.5,
            40.0,
            39.0,
            1.0e12,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            for at in [0, 7, 8, 31, 36] {
                let mut image = inside.clone();
                image[at] = odd;
                for len in [at + 1, 37] {
                    let got = scaled_index(&image[..len], 0.5, 0.5, 20);
                    assert_eq!(got, reference(&image[..len], 20), "{odd} at {at} of {len}");
                    refused += usize::from(got.is_none());
                }
            }
        }
        assert_eq!(refused, 7 * 5 * 2);
        assert_eq!(scaled_index(&inside, 0.5, 0.5, 20), reference(&inside, 20));
        assert!(scaled_index(&inside, 0.5, 0.5, 20).is_some());
    }
}
