//! Preprocessing of volumes into network inputs: optional bias-field correction, optional
//! registration to the MNI template (the grid then lies in template space), else RAS
//! resampling on a fixed grid around the head; intensity clipping and min-max scaling,
//! and a disk cache of the results.
//!
//! Output layout: the grid is `shape = [nx, ny, nz]` along world R, A, S with `nz` fastest,
//! `index = z + nz * (y + ny * x)`, i.e. a C-contiguous tensor of shape `[1, nx, ny, nz]`
//! (`[1, D, H, W]`), the layout ClinicaDL tensors built from nibabel arrays have.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Volume;
use super::bias::{self, BiasCorrection};
use super::nifti::ScaledCounts;
use super::registration::{
    self, Registration, RegistrationError, RegistrationMode, RegistrationOptions, Template,
};
use super::simd::with_avx2;
use super::trilinear::{Source, floor};
use super::{antialias, native_noise};

/// Where and how a volume is sampled and scaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    /// Output voxel counts along R, A, S.
    pub shape: [usize; 3],
    /// Output isotropic voxel size in millimetres.
    pub spacing_mm: f64,
    /// Lower intensity clip, percentile in [0, 100].
    #[serde(default = "default_clip_low")]
    pub clip_low_percentile: f64,
    /// Upper intensity clip, percentile in [0, 100].
    #[serde(default = "default_clip_high")]
    pub clip_high_percentile: f64,
    /// Bias-field correction before anything else: `none` or `polynomial`.
    #[serde(default)]
    pub bias_correction: BiasCorrection,
    /// Registration to `template`: `none`, `rigid` or `affine`. With registration the grid
    /// is centred on the template brain's bounding box, in template millimetres.
    #[serde(default)]
    pub registration: RegistrationMode,
    /// The registration target (`mni152-2009`, files from `CDWQC_TEMPLATE_DIR` or the
    /// test data folder).
    #[serde(default = "default_template")]
    pub template: String,
    /// Smooth each volume to the grid's resolution before resampling (`antialias`), so
    /// that images of every source resolution look alike on the grid.
    #[serde(default)]
    pub antialias: bool,
    /// Give the grid back the source voxels' noise that anti-aliasing and interpolation
    /// average away (`native_noise`, module `native_noise`), so noise looks on the grid
    /// as it does at the image's own resolution.
    #[serde(default)]
    pub native_noise: bool,
}

fn default_template() -> String {
    "mni152-2009".into()
}

fn default_clip_low() -> f64 {
    0.5
}

fn default_clip_high() -> f64 {
    99.5
}

impl PreprocessSpec {
    /// Number of values in one preprocessed volume.
    pub fn voxel_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// A spec with the given grid, default clipping and no correction or registration.
    pub fn grid(shape: [usize; 3], spacing_mm: f64) -> Self {
        Self {
            shape,
            spacing_mm,
            clip_low_percentile: default_clip_low(),
            clip_high_percentile: default_clip_high(),
            bias_correction: BiasCorrection::None,
            registration: RegistrationMode::None,
            template: default_template(),
            antialias: false,
            native_noise: false,
        }
    }

    /// A stable 64-bit FNV-1a hash of every field, so cached tensors follow spec changes.
    /// Specs without correction or registration hash as before those steps existed.
    pub fn fingerprint(&self) -> u64 {
        let mut text = format!(
            "{:?}|{:.6}|{:.6}|{:.6}",
            self.shape, self.spacing_mm, self.clip_low_percentile, self.clip_high_percentile
        );
        if self.bias_correction != BiasCorrection::None
            || self.registration != RegistrationMode::None
        {
            text.push_str(&format!(
                "|bias={:?}|registration={:?}|template={}|v1",
                self.bias_correction, self.registration, self.template
            ));
        }
        if self.registration != RegistrationMode::None {
            text.push_str("|registration-algorithm=");
            text.push_str(registration::ALGORITHM);
        }
        // Registration sees a bias-corrected copy even when the tensor is not corrected.
        if self.bias_correction != BiasCorrection::None
            || self.registration != RegistrationMode::None
        {
            text.push_str("|bias-algorithm=");
            text.push_str(bias::ALGORITHM);
        }
        if self.antialias {
            text.push_str("|antialias=fwhm-v1");
        }
        if self.native_noise {
            text.push_str("|native-noise=v1");
        }
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn validate(&self) -> Result<(), PreprocessError> {
        if self.shape.contains(&0) {
            return Err(PreprocessError::InvalidSpec(format!(
                "grid shape {} has an empty axis",
                crate::display::shape(&self.shape)
            )));
        }
        if !(self.spacing_mm.is_finite() && self.spacing_mm > 0.0) {
            return Err(PreprocessError::InvalidSpec(format!(
                "spacing {} mm is not positive",
                self.spacing_mm
            )));
        }
        let (low, high) = (self.clip_low_percentile, self.clip_high_percentile);
        if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&high) || low >= high {
            return Err(PreprocessError::InvalidSpec(format!(
                "clip percentiles {low}..{high} must satisfy 0 <= low < high <= 100"
            )));
        }
        Ok(())
    }
}

/// Why preprocessing or the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("invalid preprocessing spec: {0}")]
    InvalidSpec(String),
    #[error("volume with dims {} has {len} values", crate::display::shape(.dims))]
    BadVolume { dims: [usize; 3], len: usize },
    #[error("volume affine is singular or not finite: {0}")]
    SingularAffine(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt cache file: {detail}")]
    CorruptCache { path: PathBuf, detail: String },
    #[error("registration: {0}")]
    Registration(#[from] RegistrationError),
    #[error("registration failed: {reason}")]
    RegistrationFailed { reason: String, similarity: f64 },
}

/// Axis codes ('R'/'L', 'A'/'P', 'S'/'I') of the voxel axes, as nibabel's `aff2axcodes`.
pub fn axis_codes(affine: &[[f64; 4]; 4]) -> [char; 3] {
    let mut codes = ['?'; 3];
    for (slot, c) in codes
        .iter_mut()
        .zip(super::orientation::axis_codes(affine).chars())
    {
        *slot = c;
    }
    codes
}

fn invert_affine(affine: &[[f64; 4]; 4]) -> Option<[[f64; 4]; 3]> {
    let m = affine;
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    let mut inv = [[0.0; 4]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        // Cyclic indices give the signed cofactor of m[c][r] (the adjugate's entry).
        let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
        for (c, value) in row.iter_mut().take(3).enumerate() {
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            *value = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
        row[3] = -(0..3).map(|c| row[c] * m[c][3]).sum::<f64>();
    }
    Some(inv)
}

fn apply(affine: &[[f64; 4]; 4], voxel: [f64; 3]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (r, value) in out.iter_mut().enumerate() {
        *value = affine[r][3] + (0..3).map(|c| affine[r][c] * voxel[c]).sum::<f64>();
    }
    out
}

fn check_volume(volume: &Volume) -> Result<(), PreprocessError> {
    let voxels = volume
        .dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if voxels != Some(volume.data.len()) || volume.data.is_empty() {
        return Err(PreprocessError::BadVolume {
            dims: volume.dims,
            len: volume.data.len(),
        });
    }
    Ok(())
}

/// Value at `percentile` (0..=100, nearest rank on the sorted finite values), by
/// selection on a copy: the reference [`finite_percentiles`] is checked against.
#[cfg(test)]
fn percentile(values: &mut [f32], percentile: f64) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = ((percentile / 100.0) * (values.len() - 1) as f64).round() as usize;
    let rank = rank.min(values.len() - 1);
    *values.select_nth_unstable_by(rank, f32::total_cmp).1
}

/// A u32 whose unsigned order is the order of `f32::total_cmp`.
fn order_key(value: f32) -> u32 {
    let bits = value.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

fn from_order_key(key: u32) -> f32 {
    f32::from_bits(if key & 0x8000_0000 != 0 {
        key & 0x7fff_ffff
    } else {
        !key
    })
}

/// Values at `percentiles` (each 0..=100) of the finite values of `data`: nearest rank
/// on the sorted values, exactly what sorting and indexing would give (0 when none is
/// finite). Radix selection on the values' order keys, in two passes and without
/// copying the volume: a histogram of the keys' upper 16 bits finds the bucket that
/// holds each rank, and a histogram of the lower 16 bits of those buckets' values finds
/// the key itself. Sorting copies of a 7-million-voxel volume four times took most of
/// a volume's preprocessing.
pub fn finite_percentiles<const N: usize>(data: &[f32], percentiles: [f64; N]) -> [f32; N] {
    integer_percentiles(data, percentiles).unwrap_or_else(|| radix_percentiles(data, percentiles))
}

/// Buckets of the radix selection's first level: the order keys' upper 16 bits.
const RADIX_BUCKETS: usize = 1 << 16;

/// The count of finite values per bucket of their order keys' upper 16 bits, and the
/// number of finite values.
fn radix_high_counts(data: &[f32]) -> (Vec<u64>, usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::imaging::simd::avx2() && data.len() < u32::MAX as usize {
        // SAFETY: the CPU has AVX2 (checked at run time).
        return unsafe { avx2::radix_high_counts(data) };
    }
    radix_high_counts_scalar(data)
}

fn radix_high_counts_scalar(data: &[f32]) -> (Vec<u64>, usize) {
    let mut high = vec![0u64; RADIX_BUCKETS];
    let mut finite = 0usize;
    for &value in data {
        if value.is_finite() {
            high[(order_key(value) >> 16) as usize] += 1;
            finite += 1;
        }
    }
    (high, finite)
}

/// Adds to `low[slot_of[b]]` the count of each lower 16 bits of the finite values whose
/// upper 16 bits are `b`, for every bucket `b` holding a slot (`wanted[slot]`).
fn radix_low_counts(data: &[f32], wanted: &[usize], slot_of: &[u32], low: &mut [Vec<u64>]) {
    #[cfg(target_arch = "x86_64")]
    if crate::imaging::simd::avx2() && wanted.len() <= RADIX_WANTED_IN_LANES {
        // SAFETY: the CPU has AVX2 (checked at run time).
        unsafe { avx2::radix_low_counts(data, wanted, low) };
        return;
    }
    radix_low_counts_scalar(data, slot_of, low);
}

fn radix_low_counts_scalar(data: &[f32], slot_of: &[u32], low: &mut [Vec<u64>]) {
    for &value in data {
        if value.is_finite() {
            let key = order_key(value);
            let slot = slot_of[(key >> 16) as usize];
            if slot != u32::MAX {
                low[slot as usize][(key & 0xffff) as usize] += 1;
            }
        }
    }
}

/// Wanted buckets the vector pass compares each key with; more take the scalar pass.
const RADIX_WANTED_IN_LANES: usize = 8;

/// [`finite_percentiles`] for any values: radix selection on their order keys.
fn radix_percentiles<const N: usize>(data: &[f32], percentiles: [f64; N]) -> [f32; N] {
    const BUCKETS: usize = RADIX_BUCKETS;
    let (high, finite) = radix_high_counts(data);
    if finite == 0 {
        return [0.0; N];
    }
    let ranks = percentiles.map(|p| {
        let rank = ((p / 100.0) * (finite - 1) as f64).round() as usize;
        rank.min(finite - 1) as u64
    });
    // For each rank: its bucket and how many values lie in lower buckets.
    let mut located = [(0usize, 0u64); N];
    let mut order: Vec<usize> = (0..N).collect();
    order.sort_by_key(|&i| ranks[i]);
    let (mut bucket, mut below) = (0usize, 0u64);
    for &i in &order {
        while below + high[bucket] <= ranks[i] {
            below += high[bucket];
            bucket += 1;
        }
        located[i] = (bucket, below);
    }
    let mut wanted: Vec<usize> = located.iter().map(|&(b, _)| b).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut low = vec![vec![0u64; BUCKETS]; wanted.len()];
    // Bucket -> its row of `low`, or none.
    const NONE: u32 = u32::MAX;
    let mut slot_of = vec![NONE; BUCKETS];
    for (slot, &bucket) in wanted.iter().enumerate() {
        slot_of[bucket] = slot as u32;
    }
    radix_low_counts(data, &wanted, &slot_of, &mut low);
    let mut out = [0.0f32; N];
    for i in 0..N {
        let (bucket, below) = located[i];
        let counts = &low[wanted.iter().position(|&b| b == bucket).unwrap_or(0)];
        let mut seen = below;
        let mut lower = 0usize;
        while lower + 1 < BUCKETS && seen + counts[lower] <= ranks[i] {
            seen += counts[lower];
            lower += 1;
        }
        out[i] = from_order_key(((bucket as u32) << 16) | lower as u32);
    }
    out
}

/// Interleaved histograms, [`COUNT_LANES`] counters per integer of [`INTEGER_RANGE`]:
/// long runs of one value (the background) would otherwise make each increment wait for
/// the previous one. `None` (after at most one block) as soon as a value is not an
/// integer of the range, -0.0 and non-finite values included.
fn integer_counts(data: &[f32]) -> Option<Vec<u32>> {
    let bins = (INTEGER_RANGE.1 - INTEGER_RANGE.0) as usize;
    let mut counts = vec![0u32; bins * COUNT_LANES];
    for block in data.chunks(COUNT_BLOCK) {
        #[cfg(target_arch = "x86_64")]
        let counted = if crate::imaging::simd::avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time).
            unsafe { avx2::count_block(block, &mut counts) }
        } else {
            count_block(block, &mut counts)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let counted = count_block(block, &mut counts);
        if !counted {
            return None;
        }
    }
    Some(counts)
}

const COUNT_LANES: usize = 4;
const COUNT_BLOCK: usize = 4096;

/// Counts one block (whose first voxel has lane 0); whether all its values are integers
/// of the range.
fn count_block(block: &[f32], counts: &mut [u32]) -> bool {
    let (min, end) = INTEGER_RANGE;
    let bins = (end - min) as usize;
    let mut integral = true;
    let mut lanes = block.chunks_exact(COUNT_LANES);
    for group in &mut lanes {
        for (lane, &value) in group.iter().enumerate() {
            let integer = value as i32;
            integral &=
                (integer as f32).to_bits() == value.to_bits() && (min..end).contains(&integer);
            let bin = (integer.wrapping_sub(min) as usize).min(bins - 1);
            counts[bin * COUNT_LANES + lane] += 1;
        }
    }
    for &value in lanes.remainder() {
        let integer = value as i32;
        integral &= (integer as f32).to_bits() == value.to_bits() && (min..end).contains(&integer);
        counts[(integer.wrapping_sub(min) as usize).min(bins - 1) * COUNT_LANES] += 1;
    }
    integral
}

/// The percentiles' counting passes eight values at a time, each giving the counts of
/// its scalar form.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{COUNT_LANES, INTEGER_RANGE, RADIX_BUCKETS, RADIX_WANTED_IN_LANES};
    use std::arch::x86_64::*;

    /// Eight values' order keys (see `order_key`) and a mask of the finite ones.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn keys_and_finite(v: __m256) -> (__m256i, __m256i) {
        let bits = _mm256_castps_si256(v);
        let exponent = _mm256_set1_epi32(0x7f80_0000);
        let finite = _mm256_xor_si256(
            _mm256_cmpeq_epi32(_mm256_and_si256(bits, exponent), exponent),
            _mm256_set1_epi32(-1),
        );
        // Negative values flip every bit, others only the sign bit.
        let flip = _mm256_or_si256(_mm256_srai_epi32::<31>(bits), _mm256_set1_epi32(i32::MIN));
        (_mm256_xor_si256(bits, flip), finite)
    }

    /// `super::radix_high_counts` eight values at a time: the keys' buckets computed in
    /// lanes (a non-finite value to a bucket past the last), then counted one by one in
    /// four interleaved 32-bit counters per bucket, so that a run of one value (the
    /// background) does not make each increment wait on the previous one. `data` holds
    /// fewer than 2^32 values. The same counts.
    #[target_feature(enable = "avx2")]
    pub(super) fn radix_high_counts(data: &[f32]) -> (Vec<u64>, usize) {
        const LANES: usize = 4;
        let mut counts = vec![0u32; (RADIX_BUCKETS + 1) * LANES];
        let past_last = _mm256_set1_epi32(RADIX_BUCKETS as i32);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3);
        let eights = data.chunks_exact(8);
        let rest = eights.remainder();
        for eight in eights {
            let eight: &[f32; 8] = eight.try_into().unwrap_or(&[f32::NAN; 8]);
            // SAFETY: `eight` holds eight floats.
            let v = unsafe { _mm256_loadu_ps(eight.as_ptr()) };
            let (keys, finite) = keys_and_finite(v);
            let bucket = _mm256_blendv_epi8(past_last, _mm256_srli_epi32::<16>(keys), finite);
            let slot = _mm256_add_epi32(_mm256_slli_epi32::<2>(bucket), lanes);
            let mut slots = [0u32; 8];
            // SAFETY: `slots` holds eight 32-bit values.
            unsafe { _mm256_storeu_si256(slots.as_mut_ptr().cast(), slot) };
            for s in slots {
                counts[s as usize] += 1;
            }
        }
        for &value in rest {
            let bucket = if value.is_finite() {
                (super::order_key(value) >> 16) as usize
            } else {
                RADIX_BUCKETS
            };
            counts[bucket * LANES] += 1;
        }
        let high: Vec<u64> = counts[..RADIX_BUCKETS * LANES]
            .chunks_exact(LANES)
            .map(|c| c.iter().map(|&n| u64::from(n)).sum())
            .collect();
        let non_finite: u64 = counts[RADIX_BUCKETS * LANES..]
            .iter()
            .map(|&n| u64::from(n))
            .sum();
        (high, data.len() - non_finite as usize)
    }

    /// `super::radix_low_counts` eight values at a time: each key's bucket compared in
    /// lanes with the wanted ones (at most [`RADIX_WANTED_IN_LANES`]), and only the
    /// values in one of them counted. The same counts.
    #[target_feature(enable = "avx2")]
    pub(super) fn radix_low_counts(data: &[f32], wanted: &[usize], low: &mut [Vec<u64>]) {
        debug_assert!(wanted.len() <= RADIX_WANTED_IN_LANES);
        // A non-finite value's bucket is past the last, which no slot wants.
        let past_last = _mm256_set1_epi32(RADIX_BUCKETS as i32);
        let targets: Vec<__m256i> = wanted
            .iter()
            .map(|&b| _mm256_set1_epi32(b as i32))
            .collect();
        let eights = data.chunks_exact(8);
        let rest = eights.remainder();
        let count = |key: u32, low: &mut [Vec<u64>]| {
            if let Some(slot) = wanted.iter().position(|&b| b == (key >> 16) as usize) {
                low[slot][(key & 0xffff) as usize] += 1;
            }
        };
        for eight in eights {
            let eight: &[f32; 8] = eight.try_into().unwrap_or(&[f32::NAN; 8]);
            // SAFETY: `eight` holds eight floats.
            let v = unsafe { _mm256_loadu_ps(eight.as_ptr()) };
            let (keys, finite) = keys_and_finite(v);
            let bucket = _mm256_blendv_epi8(past_last, _mm256_srli_epi32::<16>(keys), finite);
            let mut hit = _mm256_setzero_si256();
            for target in &targets {
                hit = _mm256_or_si256(hit, _mm256_cmpeq_epi32(bucket, *target));
            }
            let mut lanes = _mm256_movemask_ps(_mm256_castsi256_ps(hit));
            if lanes == 0 {
                continue;
            }
            let mut all = [0u32; 8];
            // SAFETY: `all` holds eight 32-bit values.
            unsafe { _mm256_storeu_si256(all.as_mut_ptr().cast(), keys) };
            // Lanes in order, so values are counted in the order of the scalar pass.
            while lanes != 0 {
                let lane = lanes.trailing_zeros() as usize;
                count(all[lane], low);
                lanes &= lanes - 1;
            }
        }
        for &value in rest {
            if value.is_finite() {
                count(super::order_key(value), low);
            }
        }
    }

    /// [`super::count_block`] eight values at a time: the integer test and the counters'
    /// indices in 256-bit lanes, then the counts one by one. A value that fails the test
    /// is counted in another (clamped) counter than the scalar form's, but then the block
    /// fails and no count is used.
    #[target_feature(enable = "avx2")]
    pub(super) fn count_block(block: &[f32], counts: &mut [u32]) -> bool {
        let (min, end) = INTEGER_RANGE;
        let bins = (end - min) as u32;
        let below = _mm256_set1_epi32(min - 1);
        let above = _mm256_set1_epi32(end);
        let offset = _mm256_set1_epi32(min);
        let last = _mm256_set1_epi32((bins - 1) as i32);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3);
        let mut integral = _mm256_set1_epi32(-1);
        let eights = block.chunks_exact(8);
        let rest = eights.remainder();
        for eight in eights {
            let eight: &[f32; 8] = eight.try_into().unwrap_or(&[f32::NAN; 8]);
            // SAFETY: `eight` holds eight floats.
            let v = unsafe { _mm256_loadu_ps(eight.as_ptr()) };
            let integer = _mm256_cvttps_epi32(v);
            let same = _mm256_cmpeq_epi32(
                _mm256_castps_si256(_mm256_cvtepi32_ps(integer)),
                _mm256_castps_si256(v),
            );
            let inside = _mm256_and_si256(
                _mm256_cmpgt_epi32(integer, below),
                _mm256_cmpgt_epi32(above, integer),
            );
            integral = _mm256_and_si256(integral, _mm256_and_si256(same, inside));
            let bin = _mm256_min_epu32(_mm256_sub_epi32(integer, offset), last);
            let slot = _mm256_add_epi32(_mm256_slli_epi32::<2>(bin), lanes);
            let mut slots = [0u32; 8];
            // SAFETY: `slots` holds eight 32-bit values.
            unsafe { _mm256_storeu_si256(slots.as_mut_ptr().cast(), slot) };
            for s in slots {
                counts[s as usize] += 1;
            }
        }
        let all = _mm256_movemask_epi8(integral) == -1;
        // The rest starts at a multiple of eight, so at lane 0 of the four.
        const _: () = assert!(COUNT_LANES == 4);
        super::count_block(rest, counts) && all
    }
}

/// Smallest and one past the largest value [`integer_percentiles`] counts: int16 and
/// uint16 intensities.
const INTEGER_RANGE: (i32, i32) = (-32_768, 65_536);

/// [`finite_percentiles`] in one pass when every value is an integer of the int16 or
/// uint16 range (the stored type of most MRIs): a histogram of the integers, whose
/// ranks give the very values sorting would. `None` (after at most one block) as soon as
/// a value is anything else, -0.0 and non-finite values included, so the exact radix
/// selection takes over.
fn integer_percentiles<const N: usize>(data: &[f32], percentiles: [f64; N]) -> Option<[f32; N]> {
    const LANES: usize = COUNT_LANES;
    let min = INTEGER_RANGE.0;
    if data.is_empty() || data.len() >= u32::MAX as usize {
        return None;
    }
    let counts = integer_counts(data)?;
    let total = data.len() as u64;
    let ranks = percentiles.map(|p| {
        let rank = ((p / 100.0) * (total - 1) as f64).round() as u64;
        rank.min(total - 1)
    });
    let mut out = [0.0f32; N];
    let mut order: Vec<usize> = (0..N).collect();
    order.sort_by_key(|&i| ranks[i]);
    let (mut bin, mut below) = (0usize, 0u64);
    let count = |bin: usize| -> u64 {
        counts[bin * LANES..(bin + 1) * LANES]
            .iter()
            .map(|&c| u64::from(c))
            .sum()
    };
    let mut here = count(0);
    for &i in &order {
        while below + here <= ranks[i] {
            below += here;
            bin += 1;
            here = count(bin);
        }
        out[i] = (bin as i32 + min) as f32;
    }
    Some(out)
}

/// World-space (RAS mm) centre of the head: the middle of the bounding box of voxels above
/// a background threshold placed 10% of the way from the 2nd to the 98th intensity
/// percentile, so isolated hot voxels and noisy air do not move it.
pub fn head_centre(volume: &Volume) -> Result<[f64; 3], PreprocessError> {
    check_volume(volume)?;
    let [low, high] = finite_percentiles(&volume.data, HEAD_PERCENTILES);
    Ok(head_centre_between(volume, low, high))
}

/// The intensity percentiles [`head_centre`] places its threshold between.
const HEAD_PERCENTILES: [f64; 2] = [2.0, 98.0];

fn head_centre_between(volume: &Volume, low: f32, high: f32) -> [f64; 3] {
    let threshold = low + 0.1 * (high - low);
    let [nx, ny, nz] = volume.dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut found = false;
    for (k, plane) in volume.data.chunks_exact(nx * ny).enumerate() {
        for (j, row) in plane.chunks_exact(nx).enumerate() {
            if found && (lo[1]..=hi[1]).contains(&j) && (lo[2]..=hi[2]).contains(&k) {
                // The row cannot move the box along y or z, and voxels within its
                // x-extent cannot move it along x: only the two ends need a look.
                if let Some(first) = first_above(&row[..lo[0]], threshold) {
                    lo[0] = first;
                }
                if let Some(after) = last_above(&row[hi[0] + 1..], threshold) {
                    hi[0] += 1 + after;
                }
                continue;
            }
            // The first and last voxel above the threshold bound the row along x.
            let Some(first) = first_above(row, threshold) else {
                continue;
            };
            let last = last_above(row, threshold).unwrap_or(first);
            for (axis, (from, to)) in [(first, last), (j, j), (k, k)].into_iter().enumerate() {
                lo[axis] = lo[axis].min(from);
                hi[axis] = hi[axis].max(to);
            }
            found = true;
        }
    }
    if !found {
        lo = [0; 3];
        hi = [nx - 1, ny - 1, nz - 1];
    }
    let centre_voxel = [
        (lo[0] + hi[0]) as f64 / 2.0,
        (lo[1] + hi[1]) as f64 / 2.0,
        (lo[2] + hi[2]) as f64 / 2.0,
    ];
    apply(&volume.affine, centre_voxel)
}

/// Values [`first_above`] and [`last_above`] test at once: most rows of a volume hold no
/// voxel of the head, and a block's test compiles to a few vector compares.
const ABOVE_BLOCK: usize = 16;

/// Whether `value` is finite and above `threshold`, without branches.
#[inline(always)]
fn above(value: f32, threshold: f32) -> bool {
    (value > threshold) & (value < f32::INFINITY)
}

with_avx2! {
    /// Index of the first finite value of `row` above `threshold`.
    fn first_above(row: &[f32], threshold: f32) -> Option<usize> {
        let mut blocks = row.chunks_exact(ABOVE_BLOCK);
        for (b, block) in (&mut blocks).enumerate() {
            if block.iter().fold(false, |any, &v| any | above(v, threshold)) {
                return block
                    .iter()
                    .position(|&v| above(v, threshold))
                    .map(|i| b * ABOVE_BLOCK + i);
            }
        }
        let start = row.len() - blocks.remainder().len();
        blocks
            .remainder()
            .iter()
            .position(|&v| above(v, threshold))
            .map(|i| start + i)
    }
}

with_avx2! {
    /// Index of the last finite value of `row` above `threshold`.
    fn last_above(row: &[f32], threshold: f32) -> Option<usize> {
        let mut blocks = row.rchunks_exact(ABOVE_BLOCK);
        for (b, block) in (&mut blocks).enumerate() {
            if block.iter().fold(false, |any, &v| any | above(v, threshold)) {
                let start = row.len() - (b + 1) * ABOVE_BLOCK;
                return block
                    .iter()
                    .rposition(|&v| above(v, threshold))
                    .map(|i| start + i);
            }
        }
        blocks
            .remainder()
            .iter()
            .rposition(|&v| above(v, threshold))
    }
}

/// World RAS coordinate (mm) of output voxel `[x, y, z]` on a grid centred at `centre`.
pub fn grid_voxel_to_world(spec: &PreprocessSpec, centre: [f64; 3], voxel: [usize; 3]) -> [f64; 3] {
    let mut world = [0.0; 3];
    for axis in 0..3 {
        let offset = voxel[axis] as f64 - (spec.shape[axis] as f64 - 1.0) / 2.0;
        world[axis] = centre[axis] + offset * spec.spacing_mm;
    }
    world
}

/// Grid voxel -> world (or template) millimetres of the grid of `spec` centred at `centre`.
pub fn grid_affine(spec: &PreprocessSpec, centre: [f64; 3]) -> [[f64; 4]; 4] {
    let mut affine = [[0.0; 4]; 4];
    for axis in 0..3 {
        affine[axis][axis] = spec.spacing_mm;
        affine[axis][3] = centre[axis] - (spec.shape[axis] as f64 - 1.0) / 2.0 * spec.spacing_mm;
    }
    affine[3][3] = 1.0;
    affine
}

/// Trilinear resampling of `volume` onto the RAS grid of `spec` centred at `centre`
/// (world mm), in the module's output layout. Points outside the volume, and non-finite
/// source voxels, take `fill`. Intensities are not rescaled.
pub fn resample_ras(
    volume: &Volume,
    spec: &PreprocessSpec,
    centre: [f64; 3],
    fill: f32,
) -> Result<Vec<f32>, PreprocessError> {
    resample_mapped(volume, spec, centre, None, fill)
}

/// As [`resample_ras`], with grid points first carried by `grid_to_world` (e.g. a
/// registration's template -> image map) when given.
pub fn resample_mapped(
    volume: &Volume,
    spec: &PreprocessSpec,
    centre: [f64; 3],
    grid_to_world: Option<&[[f64; 4]; 4]>,
    fill: f32,
) -> Result<Vec<f32>, PreprocessError> {
    resample_finished(volume, spec, centre, grid_to_world, fill, |value| value)
}

/// [`resample_mapped`] with `finish` applied to every output value as it is written
/// (points outside the volume get `finish(fill)`), so that clipping and scaling take no
/// second pass over the grid.
fn resample_finished(
    volume: &Volume,
    spec: &PreprocessSpec,
    centre: [f64; 3],
    grid_to_world: Option<&[[f64; 4]; 4]>,
    fill: f32,
    finish: impl Fn(f32) -> f32,
) -> Result<Vec<f32>, PreprocessError> {
    spec.validate()?;
    check_volume(volume)?;
    let inverse = invert_affine(&volume.affine)
        .ok_or_else(|| PreprocessError::SingularAffine(crate::display::matrix(&volume.affine)))?;
    let [sx, sy, sz] = volume.dims;
    let [nx, ny, nz] = spec.shape;
    let data = &volume.data[..];
    let source = Source {
        data,
        dims: volume.dims,
        fill,
    };
    let mut out = vec![finish(fill); nx * ny * nz];
    // Without a map, source coordinates are sums of one term per grid axis: those terms
    // are computed once per axis, in the order the per-voxel sum took them, so the
    // result is the same to the bit.
    let axis_terms = |axis: usize, n: usize| -> Vec<[f64; 3]> {
        (0..n)
            .map(|i| {
                let mut voxel = [0usize; 3];
                voxel[axis] = i;
                let world = grid_voxel_to_world(spec, centre, voxel)[axis];
                [0, 1, 2].map(|r| inverse[r][axis] * world)
            })
            .collect()
    };
    let terms = [axis_terms(0, nx), axis_terms(1, ny), axis_terms(2, nz)];
    let (row, slice) = (sx, sx * sy);
    // Grid points are visited so that consecutive ones read neighbouring source voxels:
    // the innermost loop runs along the grid axis that moves fastest through the
    // source's memory (its first voxel axis), not along the output's z, which for an
    // axial volume jumps a whole source slice per step. Each output value is computed
    // exactly as before; only the order of visits changes.
    let order = loop_order(&inverse, grid_to_world);
    let extent = [nx, ny, nz];
    // Output index step per grid axis, in the module's layout.
    let stride = [ny * nz, nz, 1];
    // Source voxels per grid step along the middle loop's axis: where the next line of
    // grid points will read, fetched into the cache while this line is computed. Each
    // line of points starts new short runs of source rows, too short for the hardware's
    // prefetcher to learn before they end; waiting on memory took most of the time.
    let next_line = {
        let mut step = [0.0; 3];
        step[order[1]] = spec.spacing_mm;
        let step = grid_to_world.map_or(step, |map| {
            [0, 1, 2].map(|w| (0..3).map(|g| map[w][g] * step[g]).sum::<f64>())
        });
        [0, 1, 2].map(|r| (0..3).map(|w| inverse[r][w] * step[w]).sum::<f64>())
    };
    let prefetch_cell = |v: &[f64; 3]| {
        let at = [0, 1, 2].map(|r| floor(v[r] + next_line[r]));
        if at[0] >= 0.0
            && at[1] >= 0.0
            && at[2] >= 0.0
            && at[0] + 1.0 < sx as f64
            && at[1] + 1.0 < sy as f64
            && at[2] + 1.0 < sz as f64
        {
            let at = at[0] as usize + row * at[1] as usize + slice * at[2] as usize;
            for offset in [0, row, slice, row + slice] {
                prefetch(&data[at + offset]);
            }
        }
    };
    // One line of grid points at a time: their source coordinates, then their values
    // (four at a time where the CPU allows), then the finished values into place.
    let mut points = Vec::with_capacity(extent[order[2]]);
    let mut values = vec![0.0f32; extent[order[2]]];
    for a in 0..extent[order[0]] {
        for b in 0..extent[order[1]] {
            points.clear();
            for c in 0..extent[order[2]] {
                // Selected rather than stored into an array by axis: reading such an
                // array back stalled on the three stores.
                let grid_index = |axis: usize| {
                    if order[0] == axis {
                        a
                    } else if order[1] == axis {
                        b
                    } else {
                        c
                    }
                };
                let (x, y, z) = (grid_index(0), grid_index(1), grid_index(2));
                let mut v = [0.0; 3];
                if let Some(map) = grid_to_world {
                    let world = apply(map, grid_voxel_to_world(spec, centre, [x, y, z]));
                    for (r, coordinate) in v.iter_mut().enumerate() {
                        *coordinate =
                            inverse[r][3] + (0..3).map(|c| inverse[r][c] * world[c]).sum::<f64>();
                    }
                } else {
                    let (tx, ty, tz) = (&terms[0][x], &terms[1][y], &terms[2][z]);
                    for (r, coordinate) in v.iter_mut().enumerate() {
                        *coordinate = inverse[r][3] + (tx[r] + ty[r] + tz[r]);
                    }
                }
                // Every fourth point: a cache line holds 16 source voxels.
                if c % 4 == 0 {
                    prefetch_cell(&v);
                }
                points.push(v);
            }
            source.line(&points, &mut values);
            let start = a * stride[order[0]] + b * stride[order[1]];
            let step = stride[order[2]];
            for (c, &value) in values.iter().enumerate() {
                out[start + c * step] = finish(value);
            }
        }
    }
    Ok(out)
}

/// A hint that `value` will be read soon.
#[inline]
fn prefetch(value: &f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching is only a hint; it reads nothing and the address is that
        // of a live reference.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((value as *const f32).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// The grid axes from the outermost loop to the innermost: innermost the one along which
/// the source's first (fastest) voxel index changes most per grid step, then its second.
fn loop_order(inverse: &[[f64; 4]; 3], grid_to_world: Option<&[[f64; 4]; 4]>) -> [usize; 3] {
    // Source voxel change per grid step along each grid axis (up to the grid spacing,
    // the same for every axis).
    let step = |source_axis: usize, grid_axis: usize| -> f64 {
        match grid_to_world {
            None => inverse[source_axis][grid_axis].abs(),
            Some(map) => (0..3)
                .map(|w| inverse[source_axis][w] * map[w][grid_axis])
                .sum::<f64>()
                .abs(),
        }
    };
    let mut order = [0usize, 1, 2];
    let innermost = (0..3)
        .max_by(|&p, &q| step(0, p).total_cmp(&step(0, q)))
        .unwrap_or(2);
    let rest: Vec<usize> = (0..3).filter(|&g| g != innermost).collect();
    let (middle, outer) = if step(1, rest[0]) >= step(1, rest[1]) {
        (rest[0], rest[1])
    } else {
        (rest[1], rest[0])
    };
    order[0] = outer;
    order[1] = middle;
    order[2] = innermost;
    order
}

/// Full preprocessing: bias correction and registration when the spec asks for them, RAS
/// resampling (around the head, or on the template grid), non-finite values replaced,
/// intensities clipped to the spec's percentiles of the source volume, min-max to [0, 1].
/// A registration that fails its quality checks is an error, never a tensor.
pub fn preprocess(volume: &Volume, spec: &PreprocessSpec) -> Result<Vec<f32>, PreprocessError> {
    Ok(preprocess_detailed(volume, spec)?.values)
}

/// What preprocessing produced, with the registration it used.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    pub values: Vec<f32>,
    pub registration: Option<Registration>,
    /// Grid voxel -> millimetres (template millimetres when registered).
    pub grid_affine: [[f64; 4]; 4],
    pub bias_seconds: f64,
}

/// The template a spec registers to, loaded once per process.
pub fn spec_template(spec: &PreprocessSpec) -> Result<std::sync::Arc<Template>, PreprocessError> {
    Ok(Template::shared(
        &spec.template,
        &registration::default_template_dir(),
    )?)
}

/// [`preprocess`] with its intermediate results.
pub fn preprocess_detailed(
    volume: &Volume,
    spec: &PreprocessSpec,
) -> Result<Preprocessed, PreprocessError> {
    preprocess_counted(volume, spec, None)
}

/// [`preprocess`] of a volume whose stored integers were counted as it was decoded
/// ([`crate::imaging::load_volume_with_scaled_counts`]): where the percentiles are those
/// of the volume as decoded (no bias correction, no anti-aliasing), they are read from
/// the counts instead of selected among the floats, the same values (docs/benchmarks.md,
/// "Scaled integers' percentiles from their counts").
pub fn preprocess_counted(
    volume: &Volume,
    spec: &PreprocessSpec,
    counts: Option<&ScaledCounts>,
) -> Result<Preprocessed, PreprocessError> {
    spec.validate()?;
    check_volume(volume)?;
    let started = std::time::Instant::now();
    let corrected;
    let volume = match spec.bias_correction {
        BiasCorrection::None => volume,
        BiasCorrection::Polynomial => {
            corrected = bias::correct(volume);
            &corrected
        }
    };
    let bias_seconds = started.elapsed().as_secs_f64();
    // The registration sees the image before anti-aliasing, as `cdwqc register` does: its
    // pyramid averages blocks itself, and smoothing for a 3 mm grid first blurred 2 mm
    // FLAIR enough to bring back a false optimum (docs/registration.md).
    let registration = match spec.registration {
        RegistrationMode::None => None,
        mode => {
            let template = spec_template(spec)?;
            // The correlation ratio compares intensities with the template's tissue bins,
            // and a strong bias field breaks it: uncorrected, every usable FLAIR of the
            // external test set with a field of coefficient 0.4 or more was flagged. So the
            // registration always sees a corrected copy; the spec's `bias_correction` says
            // whether the tensor is corrected too (docs/registration.md).
            let own_copy;
            let moving = match spec.bias_correction {
                BiasCorrection::None => {
                    own_copy = bias::correct(volume);
                    &own_copy
                }
                BiasCorrection::Polynomial => volume,
            };
            let result = registration::register(
                moving,
                &template,
                RegistrationOptions::for_spacing(mode, spec.spacing_mm),
            )?;
            if let Some(reason) = &result.quality.failure {
                return Err(PreprocessError::RegistrationFailed {
                    reason: reason.clone(),
                    similarity: result.quality.similarity,
                });
            }
            Some((template.brain_box_centre, result))
        }
    };
    let smoothed = if spec.antialias {
        antialias::for_grid(volume, spec.spacing_mm)
    } else {
        None
    };
    let as_decoded = spec.bias_correction == BiasCorrection::None && smoothed.is_none();
    let source = volume;
    let volume = smoothed.as_ref().unwrap_or(volume);
    // Every percentile the steps need, in one selection over the volume.
    let wanted = [
        spec.clip_low_percentile,
        spec.clip_high_percentile,
        HEAD_PERCENTILES[0],
        HEAD_PERCENTILES[1],
    ];
    let [clip_low, clip_high, head_low, head_high] = counts
        .filter(|counts| as_decoded && counts.total() == volume.data.len() as u64)
        .and_then(|counts| counts.percentiles(wanted))
        .unwrap_or_else(|| finite_percentiles(&volume.data, wanted));
    let (centre, registration) = match registration {
        None => (head_centre_between(volume, head_low, head_high), None),
        Some((centre, result)) => (centre, Some(result)),
    };
    let grid_to_world = registration.as_ref().map(|r| &r.template_to_image);
    let values = if spec.native_noise {
        // Measured inside the head: above a quarter of the clipped range.
        let threshold = clip_low + 0.25 * (clip_high - clip_low);
        let kept = native_noise::variance_kept(
            antialias::voxel_sizes(source),
            spec.spacing_mm,
            spec.antialias,
        );
        let added = native_noise::measure(source, threshold)
            .map_or(0.0, |sigma| sigma * (1.0 - kept).max(0.0).sqrt());
        let mut raw = resample_finished(volume, spec, centre, grid_to_world, clip_low, |v| v)?;
        native_noise::add(&mut raw, clip_low, added, native_noise::seed_for(source));
        let scale = scaler(clip_low, clip_high);
        raw.into_iter().map(scale).collect()
    } else {
        scaled_on_grid(volume, spec, centre, grid_to_world, (clip_low, clip_high))?
    };
    Ok(Preprocessed {
        values,
        registration,
        grid_affine: grid_affine(spec, centre),
        bias_seconds,
    })
}

fn scaled_on_grid(
    volume: &Volume,
    spec: &PreprocessSpec,
    centre: [f64; 3],
    grid_to_world: Option<&[[f64; 4]; 4]>,
    (low, high): (f32, f32),
) -> Result<Vec<f32>, PreprocessError> {
    resample_finished(volume, spec, centre, grid_to_world, low, scaler(low, high))
}

/// Clipping to `[low, high]` and min-max to [0, 1]; non-finite values become 0.
fn scaler(low: f32, high: f32) -> impl Fn(f32) -> f32 {
    let range = high - low;
    // Percentiles near the ends of f32 (a scaling slope of f32::MAX) have a range
    // that overflows f32; it is taken in f64 then, so no NaN reaches the network.
    let wide_range = f64::from(high) - f64::from(low);
    move |value: f32| {
        if !(range > 0.0 && value.is_finite()) {
            0.0
        } else if range.is_finite() {
            ((value.clamp(low, high) - low) / range).clamp(0.0, 1.0)
        } else {
            ((f64::from(value.clamp(low, high)) - f64::from(low)) / wide_range).clamp(0.0, 1.0)
                as f32
        }
    }
}

const CACHE_MAGIC: &[u8; 8] = b"CDWQCT02";
/// Magic, grid sizes, the key's digest and the values' CRC-32.
const CACHE_HEADER: usize = 8 + 12 + 32 + 4;

/// Disk cache of preprocessed volumes, one file per (image sha256, spec name, spec hash).
/// File format: 8-byte magic `CDWQCT02`, three little-endian u32 grid sizes, the SHA-256
/// of the entry's key (so a file copied or renamed over another entry is not read as
/// it), the little-endian CRC-32 of the values' bytes, then the values as little-endian
/// f32 in the module's output layout.
#[derive(Debug, Clone)]
pub struct TensorCache {
    dir: PathBuf,
}

impl TensorCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// File that holds (or will hold) the tensor for this image and spec.
    pub fn path_for(&self, sha256: &str, spec_name: &str, spec: &PreprocessSpec) -> PathBuf {
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        self.dir.join(format!(
            "{}-{}-{:016x}.f32",
            safe(sha256),
            safe(spec_name),
            spec.fingerprint()
        ))
    }

    /// The digest of an entry's whole key, stored in its file.
    fn key_digest(sha256: &str, spec_name: &str, spec: &PreprocessSpec) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(sha256.as_bytes());
        hasher.update([0]);
        hasher.update(spec_name.as_bytes());
        hasher.update([0]);
        hasher.update(spec.fingerprint().to_le_bytes());
        hasher.finalize().into()
    }

    /// The cached tensor, `Ok(None)` when absent. An entry that is not a regular file,
    /// has the wrong size, grid or key, fails its checksum or holds a non-finite value
    /// is an error, which the loader takes as a miss (computed again and replaced).
    /// Only regular files are opened, without blocking, and never read past the size
    /// the grid gives.
    pub fn get(
        &self,
        sha256: &str,
        spec_name: &str,
        spec: &PreprocessSpec,
    ) -> Result<Option<Vec<f32>>, PreprocessError> {
        let path = self.path_for(sha256, spec_name, spec);
        let corrupt = |detail: String| PreprocessError::CorruptCache {
            path: path.clone(),
            detail,
        };
        let (mut file, size) = match crate::regular::open(&path) {
            Ok(opened) => opened,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(corrupt(err.to_string())),
        };
        let expected = CACHE_HEADER + 4 * spec.voxel_count();
        if size != expected as u64 {
            return Err(corrupt(format!("{size} bytes, expected {expected}")));
        }
        // Read into spare capacity (no zeroing first); the reader stops at the size.
        let mut bytes = Vec::with_capacity(expected);
        file.read_to_end(&mut bytes)
            .map_err(|source| PreprocessError::Io {
                path: path.clone(),
                source,
            })?;
        if bytes.len() != expected {
            return Err(corrupt(format!(
                "{} bytes read, expected {expected}",
                bytes.len()
            )));
        }
        if &bytes[..8] != CACHE_MAGIC {
            return Err(corrupt("missing header (or an older cache format)".into()));
        }
        let mut shape = [0usize; 3];
        for (axis, size) in shape.iter_mut().enumerate() {
            let at = 8 + 4 * axis;
            *size = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
        }
        if shape != spec.shape {
            return Err(corrupt(format!(
                "grid {}, expected {}",
                crate::display::shape(&shape),
                crate::display::shape(&spec.shape)
            )));
        }
        if bytes[20..52] != Self::key_digest(sha256, spec_name, spec) {
            return Err(corrupt("holds another image's or preset's tensor".into()));
        }
        let body = &bytes[CACHE_HEADER..];
        let crc = u32::from_le_bytes([bytes[52], bytes[53], bytes[54], bytes[55]]);
        if libdeflater::crc32(body) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        // Decoded and tested in one pass without an early exit, which vectorises.
        let mut finite = true;
        let values: Vec<f32> = body
            .chunks_exact(4)
            .map(|b| {
                let value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                finite &= value.is_finite();
                value
            })
            .collect();
        if !finite {
            return Err(corrupt("a value is not finite".into()));
        }
        Ok(Some(values))
    }

    /// Stores a tensor atomically: written to a temporary file, then renamed into place.
    pub fn put(
        &self,
        sha256: &str,
        spec_name: &str,
        spec: &PreprocessSpec,
        values: &[f32],
    ) -> Result<PathBuf, PreprocessError> {
        let path = self.path_for(sha256, spec_name, spec);
        if values.len() != spec.voxel_count() {
            return Err(PreprocessError::CorruptCache {
                path,
                detail: format!(
                    "{} values given for a grid of {}",
                    values.len(),
                    spec.voxel_count()
                ),
            });
        }
        let mut bytes = Vec::with_capacity(CACHE_HEADER + 4 * values.len());
        bytes.extend_from_slice(CACHE_MAGIC);
        for size in spec.shape {
            bytes.extend_from_slice(&(size as u32).to_le_bytes());
        }
        bytes.extend_from_slice(&Self::key_digest(sha256, spec_name, spec));
        bytes.extend_from_slice(&[0; 4]);
        for value in values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        let crc = libdeflater::crc32(&bytes[CACHE_HEADER..]);
        bytes[52..56].copy_from_slice(&crc.to_le_bytes());
        self.write_atomically(&path, &bytes)?;
        Ok(path)
    }

    /// The file that records why this image failed preprocessing under this spec.
    pub fn failure_path_for(
        &self,
        sha256: &str,
        spec_name: &str,
        spec: &PreprocessSpec,
    ) -> PathBuf {
        self.path_for(sha256, spec_name, spec)
            .with_extension("failed")
    }

    /// The recorded failure of this image under this spec, `Ok(None)` when none is.
    pub fn get_failure(
        &self,
        sha256: &str,
        spec_name: &str,
        spec: &PreprocessSpec,
    ) -> Result<Option<String>, PreprocessError> {
        let path = self.failure_path_for(sha256, spec_name, spec);
        // A record is a regular file of a message's size whose first line names its
        // entry's key; anything else planted there (a FIFO, another image's record
        // copied over it, a record of the previous format) is no record: the image is
        // registered again, and a failure then replaces it.
        let Ok(text) = crate::regular::read_text(&path, 64 << 10) else {
            return Ok(None);
        };
        let key = Self::failure_key_line(sha256, spec_name, spec);
        Ok(text
            .strip_prefix(key.as_str())
            .and_then(|rest| rest.strip_prefix('\n'))
            .map(|message| crate::display::printable(message.trim_end(), false).into_owned()))
    }

    /// The first line of a failure record: its entry's key digest.
    fn failure_key_line(sha256: &str, spec_name: &str, spec: &PreprocessSpec) -> String {
        let digest = Self::key_digest(sha256, spec_name, spec);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("cdwqc-failure {hex}")
    }

    /// Records a failure that preprocessing the same content under the same spec would
    /// meet again (a flagged registration), so that a training run does not register
    /// the image again every epoch, nor inference after it.
    pub fn put_failure(
        &self,
        sha256: &str,
        spec_name: &str,
        spec: &PreprocessSpec,
        message: &str,
    ) -> Result<PathBuf, PreprocessError> {
        let path = self.failure_path_for(sha256, spec_name, spec);
        let key = Self::failure_key_line(sha256, spec_name, spec);
        self.write_atomically(&path, format!("{key}\n{message}\n").as_bytes())?;
        Ok(path)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), PreprocessError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PreprocessError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        // One temporary file per call (two loader threads of one process may store the
        // same tensor at once, an image drawn twice into a batch). A lost rename only
        // loses a cache entry, which is computed again.
        crate::replace::replace(path, bytes, crate::replace::Durability::Content).map_err(|e| {
            PreprocessError::Io {
                path: e.path,
                source: e.source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(dims: [usize; 3], affine: [[f64; 4]; 4]) -> Volume {
        let data = (0..dims.iter().product::<usize>())
            .map(|n| n as f32)
            .collect();
        Volume {
            dims,
            data,
            affine,
            voxel_size: [1.0; 3],
        }
    }

    fn identity() -> [[f64; 4]; 4] {
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    /// Resampling as it was written before the loop order followed the source's memory:
    /// grid x, then y, then z, the same arithmetic per point.
    fn resample_in_grid_order(
        volume: &Volume,
        spec: &PreprocessSpec,
        centre: [f64; 3],
        grid_to_world: Option<&[[f64; 4]; 4]>,
        fill: f32,
    ) -> Vec<f32> {
        let inverse = invert_affine(&volume.affine).expect("invertible");
        let [sx, sy, sz] = volume.dims;
        let [nx, ny, nz] = spec.shape;
        let sample = |i: isize, j: isize, k: isize| -> f32 {
            if i < 0 || j < 0 || k < 0 || i >= sx as isize || j >= sy as isize || k >= sz as isize {
                return fill;
            }
            let value = volume.data[i as usize + sx * (j as usize + sy * k as usize)];
            if value.is_finite() { value } else { fill }
        };
        let term = |axis: usize, i: usize| -> [f64; 3] {
            let mut voxel = [0usize; 3];
            voxel[axis] = i;
            let world = grid_voxel_to_world(spec, centre, voxel)[axis];
            [0, 1, 2].map(|r| inverse[r][axis] * world)
        };
        let mut out = vec![fill; nx * ny * nz];
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    let mut v = [0.0; 3];
                    if let Some(map) = grid_to_world {
                        let world = apply(map, grid_voxel_to_world(spec, centre, [x, y, z]));
                        for (r, c) in v.iter_mut().enumerate() {
                            *c = inverse[r][3]
                                + (0..3).map(|q| inverse[r][q] * world[q]).sum::<f64>();
                        }
                    } else {
                        let (tx, ty, tz) = (term(0, x), term(1, y), term(2, z));
                        for (r, c) in v.iter_mut().enumerate() {
                            *c = inverse[r][3] + (tx[r] + ty[r] + tz[r]);
                        }
                    }
                    if v[0] < -1.0
                        || v[1] < -1.0
                        || v[2] < -1.0
                        || v[0] > sx as f64
                        || v[1] > sy as f64
                        || v[2] > sz as f64
                    {
                        continue;
                    }
                    let base = [v[0].floor(), v[1].floor(), v[2].floor()];
                    let frac = [v[0] - base[0], v[1] - base[1], v[2] - base[2]];
                    let (i0, j0, k0) = (base[0] as isize, base[1] as isize, base[2] as isize);
                    let mut acc = 0.0f64;
                    for (di, wi) in [(0, 1.0 - frac[0]), (1, frac[0])] {
                        for (dj, wj) in [(0, 1.0 - frac[1]), (1, frac[1])] {
                            for (dk, wk) in [(0, 1.0 - frac[2]), (1, frac[2])] {
                                let weight = wi * wj * wk;
                                if weight > 0.0 {
                                    acc += weight * sample(i0 + di, j0 + dj, k0 + dk) as f64;
                                }
                            }
                        }
                    }
                    out[z + nz * (y + ny * x)] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn the_loop_order_changes_no_resampled_value() {
        // Axial (i along R), sagittal-first (i along S), coronal with flips, oblique.
        let affines = [
            [
                [0.9, 0.0, 0.0, -20.0],
                [0.0, 1.1, 0.0, -25.0],
                [0.0, 0.0, 1.3, -18.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            [
                [0.0, 0.0, -1.0, 17.0],
                [0.0, 1.0, 0.0, -21.0],
                [1.2, 0.0, 0.0, -15.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            [
                [-1.0, 0.0, 0.0, 19.0],
                [0.0, 0.0, 1.1, -20.0],
                [0.0, -0.9, 0.0, 16.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            [
                [0.8, 0.3, 0.1, -22.0],
                [-0.2, 0.9, 0.4, -19.0],
                [0.1, -0.35, 1.0, -14.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        ];
        let rotation = [
            [0.0, -1.0, 0.0, 2.0],
            [0.96, 0.0, 0.28, -1.0],
            [-0.28, 0.0, 0.96, 0.5],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let spec = PreprocessSpec::grid([9, 11, 7], 4.0);
        let mut orders = std::collections::BTreeSet::new();
        for affine in affines {
            let mut volume = cube([23, 19, 29], affine);
            volume.data[100] = f32::NAN;
            let centre = [1.0, -2.0, 3.0];
            for map in [None, Some(&rotation)] {
                let inverse = invert_affine(&volume.affine).expect("invertible");
                orders.insert(loop_order(&inverse, map));
                let got = resample_mapped(&volume, &spec, centre, map, -5.0).expect("resample");
                let want = resample_in_grid_order(&volume, &spec, centre, map, -5.0);
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
                assert!(got.iter().filter(|&&v| v != -5.0).count() > 100);
            }
        }
        // The cases do take other orders than the output's own (x, y, z).
        assert!(orders.len() >= 3, "{orders:?}");
    }

    #[test]
    fn radix_percentiles_equal_selection_on_a_copy() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let percentiles = [0.0, 0.5, 2.0, 37.3, 50.0, 98.0, 99.5, 100.0];
        let samples: Vec<Vec<f32>> = vec![
            // Integer intensities with a large background, as in int16 MRIs.
            (0..20_000)
                .map(|i| {
                    if i % 3 == 0 {
                        0.0
                    } else {
                        rng.random_range(0..900) as f32
                    }
                })
                .collect(),
            (0..5_000)
                .map(|_| rng.random_range(-1e6f32..1e6) * rng.random_range(0.0f32..1.0))
                .collect(),
            vec![
                f32::NAN,
                -0.0,
                0.0,
                f32::INFINITY,
                -3.5,
                f32::NEG_INFINITY,
                1e-40,
                -1e-40,
            ],
            vec![f32::MAX, -f32::MAX, f32::MIN_POSITIVE, 7.0],
            vec![2.5],
        ];
        for data in &samples {
            let fast = finite_percentiles(data, percentiles);
            let mut finite: Vec<f32> = data.iter().copied().filter(|v| v.is_finite()).collect();
            for (p, got) in percentiles.iter().zip(fast) {
                let want = percentile(&mut finite, *p);
                assert_eq!(got.to_bits(), want.to_bits(), "p{p}: {got} vs {want}");
            }
        }
        assert_eq!(
            finite_percentiles(&[f32::NAN, f32::INFINITY], [50.0]),
            [0.0]
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_radix_passes_in_lanes_count_as_the_scalar_ones() {
        use rand::{Rng, SeedableRng};
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-40,
            -1e-40,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
        ];
        // Scaled integers with a long run of background, signed floats, specials, and a
        // length that leaves a tail past the last eight.
        let mut data: Vec<f32> = (0..40_003)
            .map(|i| match i % 7 {
                0 | 1 => 0.0,
                2 => specials[rng.random_range(0..specials.len())],
                3 => rng.random_range(-2e3f32..2e3),
                _ => rng.random_range(0..3000) as f32 * 0.731,
            })
            .collect();
        data.extend(std::iter::repeat_n(f32::NAN, 5));
        for len in [data.len(), 13, 8, 3, 0] {
            let data = &data[data.len() - len..];
            // SAFETY: AVX2 was detected above.
            let (high, finite) = unsafe { avx2::radix_high_counts(data) };
            assert_eq!((high.clone(), finite), radix_high_counts_scalar(data));
            // The buckets of a few values, as the selection would want them.
            let mut wanted: Vec<usize> = data
                .iter()
                .filter(|v| v.is_finite())
                .step_by(997)
                .map(|&v| (order_key(v) >> 16) as usize)
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            wanted.truncate(RADIX_WANTED_IN_LANES);
            let mut slot_of = vec![u32::MAX; RADIX_BUCKETS];
            for (slot, &bucket) in wanted.iter().enumerate() {
                slot_of[bucket] = slot as u32;
            }
            let mut lanes = vec![vec![0u64; RADIX_BUCKETS]; wanted.len()];
            let mut scalar = lanes.clone();
            // SAFETY: AVX2 was detected above.
            unsafe { avx2::radix_low_counts(data, &wanted, &mut lanes) };
            radix_low_counts_scalar(data, &slot_of, &mut scalar);
            assert_eq!(lanes, scalar, "{len} values");
        }
    }

    #[test]
    fn integer_histogram_percentiles_equal_the_radix_selection() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let percentiles = [0.0, 0.5, 2.0, 50.0, 98.0, 99.5, 100.0];
        let integers = |rng: &mut rand_chacha::ChaCha8Rng, low: i32, high: i32, n: usize| {
            (0..n)
                .map(|i| {
                    if i % 4 == 0 {
                        0.0
                    } else {
                        rng.random_range(low..high) as f32
                    }
                })
                .collect::<Vec<f32>>()
        };
        // int16 and uint16 intensities, blocks longer and shorter than the histogram's.
        for data in [
            integers(&mut rng, -32_768, 32_768, 10_007),
            integers(&mut rng, 0, 65_536, 9_001),
            integers(&mut rng, -3, 4, 3),
            vec![-32_768.0, 65_535.0],
        ] {
            let got = integer_percentiles(&data, percentiles).expect("integers in range");
            let want = radix_percentiles(&data, percentiles);
            assert_eq!(
                got.map(f32::to_bits),
                want.map(f32::to_bits),
                "{got:?} vs {want:?}"
            );
        }
        // Anything else leaves it to the radix selection, even late in a long volume.
        // At the end of the eight-value lanes, in the values after them and early on.
        let odd_values = [
            -0.0,
            0.5,
            f32::NAN,
            f32::INFINITY,
            65_536.0,
            -32_769.0,
            1e9,
            2.0f32.powi(31),
        ];
        for (odd, (n, at)) in odd_values
            .into_iter()
            .flat_map(|odd| [(20_000, 19_999), (20_003, 20_001), (20_000, 5)].map(|p| (odd, p)))
        {
            let mut data = integers(&mut rng, 0, 1000, n);
            data[at] = odd;
            assert!(
                integer_percentiles(&data, percentiles).is_none(),
                "{odd} at {at}"
            );
            let got = finite_percentiles(&data, percentiles);
            assert_eq!(
                got.map(f32::to_bits),
                radix_percentiles(&data, percentiles).map(f32::to_bits)
            );
        }
        assert!(integer_percentiles(&[], [50.0]).is_none());
    }

    #[test]
    fn the_first_and_last_voxel_above_match_a_plain_search() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            5.0,
            5.000_001,
            -0.0,
        ];
        for len in 0..70 {
            for _ in 0..30 {
                let row: Vec<f32> = (0..len)
                    .map(|_| match rng.random_range(0..20) {
                        0..=5 => specials[rng.random_range(0..specials.len())],
                        _ => rng.random_range(0.0..5.0),
                    })
                    .collect();
                for threshold in [5.0, 0.0, f32::NAN] {
                    let plain = |v: &f32| v.is_finite() && *v > threshold;
                    assert_eq!(first_above(&row, threshold), row.iter().position(plain));
                    assert_eq!(last_above(&row, threshold), row.iter().rposition(plain));
                }
            }
        }
    }

    #[test]
    fn head_centre_skips_nothing_that_moves_the_box() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..20 {
            let dims = [17, 13, 11];
            let mut volume = cube(dims, identity());
            for v in volume.data.iter_mut() {
                *v = if rng.random_range(0..300) == 0 {
                    100.0
                } else {
                    1.0
                };
            }
            let got = head_centre_between(&volume, 0.0, 10.0);
            // The box by brute force over every voxel.
            let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
            for (n, v) in volume.data.iter().enumerate() {
                if *v > 1.0 {
                    let at = [n % 17, (n / 17) % 13, n / (17 * 13)];
                    for a in 0..3 {
                        lo[a] = lo[a].min(at[a]);
                        hi[a] = hi[a].max(at[a]);
                    }
                }
            }
            let want = [0, 1, 2].map(|a| (lo[a] + hi[a]) as f64 / 2.0);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn flipped_axis_is_mirrored_in_ras_output() {
        let mut affine = identity();
        affine[0][0] = -1.0;
        affine[0][3] = 3.0;
        let volume = cube([4, 2, 2], affine);
        let spec = PreprocessSpec {
            shape: [4, 2, 2],
            spacing_mm: 1.0,
            clip_low_percentile: 0.0,
            clip_high_percentile: 100.0,
            ..PreprocessSpec::grid([1, 1, 1], 1.0)
        };
        let out = resample_ras(&volume, &spec, [1.5, 0.5, 0.5], -1.0).unwrap();
        // Output x = 0 is world x = 0, which is source i = 3.
        assert_eq!(out[0], 3.0);
        assert_eq!(out[2 * 2 * 3], 0.0);
        assert_eq!(axis_codes(&affine), ['L', 'A', 'S']);
    }

    /// A 108 mm box at `voxel` mm: a ball of 50 (radius 40 mm) holding a brighter ball of
    /// 100 (radius 16 mm, 22 mm to the right), white noise of deviation 8 on every voxel.
    fn noisy_phantom(voxel: f64) -> Volume {
        let n = (108.0 / voxel).round() as usize;
        let mut data = Vec::with_capacity(n * n * n);
        for k in 0..n {
            for j in 0..n {
                for i in 0..n {
                    let at = [i, j, k].map(|c| (c as f64 + 0.5) * voxel - 54.0);
                    let r = (at[0] * at[0] + at[1] * at[1] + at[2] * at[2]).sqrt();
                    let b = ((at[0] - 22.0).powi(2) + at[1] * at[1] + at[2] * at[2]).sqrt();
                    data.push(if b < 16.0 {
                        100.0
                    } else if r < 40.0 {
                        50.0
                    } else {
                        0.0
                    });
                }
            }
        }
        let seed = (voxel * 10.0) as u64;
        native_noise::add(&mut data, f32::MIN, 8.0, seed);
        let mut affine = identity();
        for (a, row) in affine.iter_mut().enumerate().take(3) {
            row[a] = voxel;
        }
        Volume {
            dims: [n; 3],
            data,
            affine,
            voxel_size: [voxel; 3],
        }
    }

    /// Standard deviation of the grid's values within 14 mm of the dim ball's point
    /// (-18, 0, 0) mm from the box's centre, where the phantom is flat.
    fn grid_noise(volume: &Volume, spec: &PreprocessSpec) -> f64 {
        let out = preprocess_detailed(volume, spec).expect("preprocessed");
        let [nx, ny, nz] = spec.shape;
        let mut values = Vec::new();
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    let world = apply(&out.grid_affine, [x as f64, y as f64, z as f64]);
                    let d = [world[0] - 36.0, world[1] - 54.0, world[2] - 54.0];
                    if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt() < 14.0 {
                        values.push(f64::from(out.values[z + nz * (y + ny * x)]));
                    }
                }
            }
        }
        assert!(values.len() > 300, "{} grid points", values.len());
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
    }

    #[test]
    fn native_noise_gives_every_source_resolution_its_own_noise_on_the_grid() {
        // The same per-voxel noise at 1 mm and at 2 mm: anti-aliased to a 3 mm grid, the
        // 1 mm source reaches it far cleaner; with the source noise given back, both
        // carry it as their voxels did (8 of a range of about 100).
        let (fine, coarse) = (noisy_phantom(1.0), noisy_phantom(2.0));
        let plain = PreprocessSpec {
            antialias: true,
            ..PreprocessSpec::grid([36, 36, 36], 3.0)
        };
        let (plain_fine, plain_coarse) = (grid_noise(&fine, &plain), grid_noise(&coarse, &plain));
        assert!(
            plain_fine < 0.4 * plain_coarse,
            "smoothing alone: {plain_fine} at 1 mm, {plain_coarse} at 2 mm"
        );
        let kept = PreprocessSpec {
            native_noise: true,
            ..plain.clone()
        };
        assert_ne!(kept.fingerprint(), plain.fingerprint());
        for (volume, name) in [(&fine, "1 mm"), (&coarse, "2 mm")] {
            let noise = grid_noise(volume, &kept);
            assert!((noise - 0.08).abs() < 0.012, "{name}: {noise}");
            // Seeded by the image: the same tensor every time.
            assert_eq!(
                preprocess(volume, &kept).expect("preprocessed"),
                preprocess(volume, &kept).expect("preprocessed")
            );
        }
    }

    #[test]
    fn preprocess_output_is_in_unit_range_and_handles_nan() {
        let mut volume = cube([6, 6, 6], identity());
        volume.data[10] = f32::NAN;
        volume.data[11] = f32::INFINITY;
        let spec = PreprocessSpec {
            shape: [5, 5, 5],
            spacing_mm: 1.5,
            clip_low_percentile: 0.5,
            clip_high_percentile: 99.5,
            ..PreprocessSpec::grid([1, 1, 1], 1.0)
        };
        let out = preprocess(&volume, &spec).unwrap();
        assert_eq!(out.len(), 125);
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(out.iter().any(|v| *v > 0.5));
    }

    #[test]
    fn intensities_near_the_ends_of_f32_stay_in_unit_range() {
        let mut volume = cube([5, 5, 5], identity());
        for (n, v) in volume.data.iter_mut().enumerate() {
            *v = if n % 2 == 0 { f32::MAX } else { -f32::MAX };
        }
        let spec = PreprocessSpec::grid([4, 4, 4], 1.0);
        let out = preprocess(&volume, &spec).unwrap();
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "{out:?}");
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let volume = cube([3, 3, 3], [[0.0; 4]; 4]);
        let spec = PreprocessSpec {
            shape: [2, 2, 2],
            spacing_mm: 1.0,
            clip_low_percentile: 0.5,
            clip_high_percentile: 99.5,
            ..PreprocessSpec::grid([1, 1, 1], 1.0)
        };
        assert!(matches!(
            preprocess(&volume, &spec),
            Err(PreprocessError::SingularAffine(_))
        ));
        // Dims whose product wraps around must not pass for an empty volume.
        let wrapped = Volume {
            dims: [1 << (usize::BITS - 2), 2, 2],
            data: Vec::new(),
            affine: identity(),
            voxel_size: [1.0; 3],
        };
        assert!(matches!(
            preprocess(&wrapped, &spec),
            Err(PreprocessError::BadVolume { .. })
        ));
        let bad_spec = PreprocessSpec {
            spacing_mm: 0.0,
            ..spec
        };
        assert!(preprocess(&cube([2, 2, 2], identity()), &bad_spec).is_err());
    }

    /// Threads of one process storing the same tensor at once all succeed (an image
    /// drawn twice into one batch is loaded by two loaders), and the entry reads back.
    #[test]
    fn threads_storing_the_same_tensor_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TensorCache::new(dir.path());
        let spec = PreprocessSpec::grid([16, 16, 16], 1.0);
        let values: Vec<f32> = (0..16 * 16 * 16).map(|n| n as f32).collect();
        for _ in 0..20 {
            let start = std::sync::Barrier::new(4);
            std::thread::scope(|scope| {
                let puts: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            cache.put("same", "tiny", &spec, &values)
                        })
                    })
                    .collect();
                for put in puts {
                    put.join().expect("no panic").expect("every put succeeds");
                }
            });
            assert_eq!(cache.get("same", "tiny", &spec).unwrap().unwrap(), values);
        }
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn cache_round_trips_and_rejects_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TensorCache::new(dir.path());
        let spec = PreprocessSpec {
            shape: [2, 3, 4],
            spacing_mm: 2.0,
            clip_low_percentile: 0.5,
            clip_high_percentile: 99.5,
            ..PreprocessSpec::grid([1, 1, 1], 1.0)
        };
        assert!(cache.get("abc", "tiny", &spec).unwrap().is_none());
        let values: Vec<f32> = (0..24).map(|n| n as f32 / 24.0).collect();
        let path = cache.put("abc", "tiny", &spec, &values).unwrap();
        assert_eq!(cache.get("abc", "tiny", &spec).unwrap().unwrap(), values);
        fs::write(&path, b"CDWQCT01short").unwrap();
        assert!(cache.get("abc", "tiny", &spec).is_err());
        // Another image's valid entry copied over this one's is not read as it.
        let theirs: Vec<f32> = (0..24).map(|n| 1.0 - n as f32 / 24.0).collect();
        let their_path = cache.put("xyz", "tiny", &spec, &theirs).unwrap();
        fs::copy(&their_path, &path).unwrap();
        assert!(cache.get("abc", "tiny", &spec).is_err());
        // A flipped bit, a NaN with a matching checksum, a FIFO and a link to a device.
        cache.put("abc", "tiny", &spec, &values).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(cache.get("abc", "tiny", &spec).is_err());
        let mut nan = values.clone();
        nan[3] = f32::NAN;
        cache.put("abc", "tiny", &spec, &nan).unwrap();
        assert!(cache.get("abc", "tiny", &spec).is_err());
        fs::remove_file(&path).unwrap();
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(
            cache.get("abc", "tiny", &spec).is_err(),
            "a FIFO is refused at once"
        );
        cache.put("abc", "tiny", &spec, &values).unwrap();
        assert_eq!(cache.get("abc", "tiny", &spec).unwrap().unwrap(), values);
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(cache.get("abc", "tiny", &spec).is_err());
        fs::remove_file(&path).unwrap();
        // A failure record names its key: another image's copied over it, a FIFO or
        // an old record is no record; a message's control characters are escaped.
        assert_eq!(cache.get_failure("abc", "tiny", &spec).unwrap(), None);
        let ours = cache
            .put_failure("abc", "tiny", &spec, "no head\u{1b}[2J")
            .unwrap();
        assert_eq!(
            cache.get_failure("abc", "tiny", &spec).unwrap().as_deref(),
            Some("no head\\u{1b}[2J")
        );
        let theirs = cache.put_failure("xyz", "tiny", &spec, "flagged").unwrap();
        fs::copy(&theirs, &ours).unwrap();
        assert_eq!(cache.get_failure("abc", "tiny", &spec).unwrap(), None);
        fs::write(&ours, "flagged\n").unwrap();
        assert_eq!(cache.get_failure("abc", "tiny", &spec).unwrap(), None);
        fs::remove_file(&ours).unwrap();
        let name = std::ffi::CString::new(ours.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert_eq!(cache.get_failure("abc", "tiny", &spec).unwrap(), None);
        let other = PreprocessSpec {
            spacing_mm: 3.0,
            ..spec.clone()
        };
        assert_ne!(
            cache.path_for("abc", "tiny", &spec),
            cache.path_for("abc", "tiny", &other)
        );
        // Registration and bias correction are part of the key...
        let registered = PreprocessSpec {
            registration: RegistrationMode::Affine,
            ..spec.clone()
        };
        let corrected = PreprocessSpec {
            bias_correction: BiasCorrection::Polynomial,
            ..registered.clone()
        };
        let keys = [&spec, &registered, &corrected].map(|s| cache.path_for("abc", "tiny", s));
        assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
        // ...while specs without them keep the key they had before those steps existed.
        let legacy = format!("{:?}|{:.6}|{:.6}|{:.6}", spec.shape, 2.0, 0.5, 99.5)
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
            });
        assert_eq!(spec.fingerprint(), legacy);
    }
}
