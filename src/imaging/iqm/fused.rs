//! The metrics of one image as import computes them: the masks are read from the
//! segmentation grid as the voxels are counted, so only the tissue labels are kept at
//! full resolution (the other masks and the bias field never are); the same values,
//! bit for bit, as [`super::masks`] followed by [`super::measure`].

use super::binned::{self, Binning, ClassCounts};
use super::{
    Grid, IqmError, Iqms, Plan, ScaledIntegers, check_tissues, each_bias, f32_key, fwhm_classic,
    measure, metrics_of, white_matter_core,
};

/// What the caller knows of an image's values, which spares finding out how to bin them.
pub(super) enum Facts {
    None,
    /// Integers only, from `lo` to `hi`.
    Integers {
        lo: f32,
        hi: f32,
    },
    /// Stored integers scaled by a header.
    Scaled(ScaledIntegers),
}

/// The metrics of `image` (finite values, i fastest); the image takes the
/// masks-then-measure path when its values cannot be binned.
pub(super) fn metrics(
    image: &[f32],
    dims: [usize; 3],
    voxel: [f64; 3],
    contrast: super::Contrast,
    facts: Facts,
) -> Result<Iqms, IqmError> {
    let slow = || {
        let masks = super::masks(image, dims, voxel, contrast)?;
        measure(image, voxel, &masks)
    };
    let binning = match facts {
        Facts::Integers { lo, hi } => Binning::of_integers(image, lo, hi),
        Facts::Scaled(scaled) => Binning::of_scaled(image, scaled),
        Facts::None => Binning::of(image),
    };
    let Some(binning) = binning else {
        return slow();
    };
    let plan = Plan::of(image, dims, voxel, contrast)?;
    let bins = binning.bins();
    let counted = match &binning {
        #[cfg(target_arch = "x86_64")]
        _ if crate::imaging::simd::avx2() => {
            let bins_of = match &binning {
                Binning::Integer { lo, .. } => avx2::Bins::Integer(*lo),
                Binning::Table { index, .. } => avx2::Bins::Table(index),
            };
            // SAFETY: the CPU has AVX2 (checked at run time).
            unsafe { avx2::counted(image, dims, &plan, bins, bins_of) }
        }
        Binning::Integer { lo, .. } => {
            let lo = *lo;
            let bin = |_, v: f32| (v - lo) as usize;
            counted(image, dims, &plan, bins, bin)
        }
        Binning::Table { index, .. } => {
            let bin = |i, _| usize::from(index[i]);
            counted(image, dims, &plan, bins, bin)
        }
    };
    let Counted {
        tissue,
        counts,
        artefact_n,
    } = counted;
    check_tissues(&tissue)?;
    let grid = Grid::new(dims);
    let fit = plan.fit(image, dims, &tissue);
    let core = white_matter_core(&tissue, grid);
    let core_hist = match &binning {
        Binning::Integer { lo, .. } => {
            let lo = *lo;
            binned::core_histogram(image, &core, bins, |_, v| (v - lo) as usize)
        }
        Binning::Table { index, .. } => {
            binned::core_histogram(image, &core, bins, |i, _| usize::from(index[i]))
        }
    };
    drop(core);
    let Some(stats) = binned::from_counts(binning, &core_hist, counts, artefact_n, image.len())
    else {
        return slow();
    };
    let stats = stats?;
    let fwhm_mm = fwhm_classic(image, dims, voxel, &tissue);
    let mut bias = Vec::new();
    each_bias(fit, grid, &tissue, |_, value| bias.push(value));
    let bias_keys = || bias.iter().map(|&b| f32_key(b));
    Ok(metrics_of(stats, dims, voxel, fwhm_mm, bias_keys))
}

/// What the one pass over the voxels gives.
struct Counted {
    tissue: Vec<u8>,
    counts: ClassCounts,
    artefact_n: u64,
}

/// The tissue labels at full resolution and every voxel counted under its bin and its
/// masks, each voxel's masks read from its segmentation row.
fn counted(
    image: &[f32],
    dims: [usize; 3],
    plan: &Plan,
    bins: usize,
    bin: impl Fn(usize, f32) -> usize,
) -> Counted {
    let mut tissue = vec![0u8; image.len()];
    let mut counts = ClassCounts::new(bins);
    let mut artefact_n = 0u64;
    plan.rows(dims, |range, row| {
        let start = range.start;
        for (i, (&v, t)) in image[range.clone()]
            .iter()
            .zip(&mut tissue[range])
            .enumerate()
        {
            let m = row.at(i, v);
            *t = m & 3;
            artefact_n += u64::from(m >> 6);
            counts.add_code(start + i, bin(start + i, v), m);
        }
    });
    Counted {
        tissue,
        counts,
        artefact_n,
    }
}

/// The one pass over the voxels eight at a time: each voxel's masks, tissue label and
/// counter computed in 256-bit lanes, then counted one by one. The same labels and
/// counts as [`counted`].
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::binned::{CODE_BITS, ClassCounts, LANE_BITS};
    use super::super::{CODE_AIR, CODE_ARTEFACT, CODE_BRAIN, CODE_HEAD, CODE_ROTATION, Plan};
    use super::Counted;
    use std::arch::x86_64::*;

    /// How a voxel finds its bin.
    pub(super) enum Bins<'a> {
        /// Its value minus the lowest value.
        Integer(f32),
        /// Its entry in the table of values.
        Table(&'a [u16]),
    }

    const STEP: usize = 8;

    #[target_feature(enable = "avx2")]
    pub(super) fn counted(
        image: &[f32],
        dims: [usize; 3],
        plan: &Plan,
        bins: usize,
        bins_of: Bins<'_>,
    ) -> Counted {
        let mut tissue = vec![0u8; image.len()];
        let mut counts = ClassCounts::new(bins);
        let mut artefact_n = 0u64;
        let [dark, middle, bright] = plan.labels.map(i32::from);
        let below = [_mm256_set1_ps(plan.below[0]), _mm256_set1_ps(plan.below[1])];
        let (dark, middle, bright) = (
            _mm256_set1_epi32(dark),
            _mm256_set1_epi32(middle),
            _mm256_set1_epi32(bright),
        );
        let brain_bit = _mm256_set1_epi32(i32::from(CODE_BRAIN));
        let kept = _mm256_set1_epi32(i32::from(CODE_AIR | CODE_HEAD | CODE_ARTEFACT));
        let rotation_bit = _mm256_set1_epi32(i32::from(CODE_ROTATION));
        let class_bits = _mm256_set1_epi32((1 << CODE_BITS) - 1);
        let lane_bits = _mm256_set1_epi32((1 << LANE_BITS) - 1);
        let three = _mm256_set1_epi32(3);
        let steps = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let lowest = match bins_of {
            Bins::Integer(lo) => _mm256_set1_ps(lo),
            Bins::Table(_) => _mm256_setzero_ps(),
        };
        plan.rows(dims, |range, row| {
            let start = range.start;
            let values = &image[range.clone()];
            let labels = &mut tissue[range];
            let mut artefacts = _mm256_setzero_si256();
            let mut i = 0;
            while i + STEP <= values.len() {
                let eight: &[f32; STEP] = values[i..i + STEP].try_into().unwrap_or(&[0.0; STEP]);
                // SAFETY: `eight` holds eight floats.
                let v = unsafe { _mm256_loadu_ps(eight.as_ptr()) };
                let code_bytes = if row.shift == 0 {
                    let b: [u8; 8] = row.codes[i..i + 8].try_into().unwrap_or([0; 8]);
                    _mm_set1_epi64x(i64::from_le_bytes(b))
                } else {
                    // Two neighbouring voxels share a segmentation voxel: rows start at
                    // even i, so voxels i..i+8 read codes i/2..i/2+4, each twice.
                    let at = i >> 1;
                    let b: [u8; 4] = row.codes[at..at + 4].try_into().unwrap_or([0; 4]);
                    let four = _mm_cvtsi32_si128(i32::from_le_bytes(b));
                    _mm_unpacklo_epi8(four, four)
                };
                let code = _mm256_cvtepu8_epi32(code_bytes);
                let in_brain = _mm256_cmpeq_epi32(_mm256_and_si256(code, brain_bit), brain_bit);
                let below_0 = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(v, below[0]));
                let below_1 = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(v, below[1]));
                let label = _mm256_blendv_epi8(bright, middle, below_1);
                let label = _mm256_and_si256(_mm256_blendv_epi8(label, dark, below_0), in_brain);
                let non_positive =
                    _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(v, _mm256_setzero_ps()));
                // The rotation bit of the voxel's block, where the voxel is not positive.
                let wanted = _mm256_or_si256(kept, _mm256_and_si256(non_positive, rotation_bit));
                let m = _mm256_or_si256(_mm256_and_si256(code, wanted), label);
                artefacts = _mm256_add_epi32(artefacts, _mm256_srli_epi32::<6>(m));
                // Tissue labels as bytes.
                let t = _mm256_and_si256(m, three);
                let words =
                    _mm_packus_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
                let bytes = _mm_packus_epi16(words, words);
                if let Ok(out) = <&mut [u8; STEP]>::try_from(&mut labels[i..i + STEP]) {
                    // SAFETY: `out` holds eight bytes; the low eight of `bytes` are stored.
                    unsafe { _mm_storel_epi64(out.as_mut_ptr().cast(), bytes) };
                }
                let bin = match bins_of {
                    Bins::Integer(_) => _mm256_cvttps_epi32(_mm256_sub_ps(v, lowest)),
                    Bins::Table(index) => {
                        let at = start + i;
                        let b: &[u16; 8] = index[at..at + 8].try_into().unwrap_or(&[0; STEP]);
                        // SAFETY: `b` holds eight 16-bit values.
                        _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(b.as_ptr().cast()) })
                    }
                };
                let lane = _mm256_and_si256(
                    _mm256_add_epi32(steps, _mm256_set1_epi32((start + i) as i32)),
                    lane_bits,
                );
                let slot = _mm256_or_si256(
                    _mm256_slli_epi32::<LANE_BITS>(_mm256_or_si256(
                        _mm256_slli_epi32::<CODE_BITS>(bin),
                        _mm256_and_si256(m, class_bits),
                    )),
                    lane,
                );
                let mut slots = [0u32; STEP];
                // SAFETY: `slots` holds eight 32-bit values.
                unsafe { _mm256_storeu_si256(slots.as_mut_ptr().cast(), slot) };
                for s in slots {
                    counts.add_slot(s as usize);
                }
                i += STEP;
            }
            let mut lanes = [0u32; STEP];
            // SAFETY: `lanes` holds eight 32-bit values.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), artefacts) };
            artefact_n += lanes.iter().map(|&a| u64::from(a)).sum::<u64>();
            for (i, t) in labels.iter_mut().enumerate().skip(i) {
                let v = values[i];
                let m = row.at(i, v);
                *t = m & 3;
                artefact_n += u64::from(m >> 6);
                let bin = match bins_of {
                    Bins::Integer(lo) => (v - lo) as usize,
                    Bins::Table(index) => usize::from(index[start + i]),
                };
                counts.add_code(start + i, bin, m);
            }
        });
        Counted {
            tissue,
            counts,
            artefact_n,
        }
    }
}
