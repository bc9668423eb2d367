//! The metrics of one image as import computes them: the masks are read from the
//! segmentation grid as the voxels are counted, so only the tissue labels are kept at
//! full resolution (the other masks and the bias field never are); the same values,
//! bit for bit, as [`super::masks`] followed by [`super::measure`].

use super::binned::{self, Binning, ClassCounts};
use super::{
    Grid, IqmError, Iqms, Plan, check_tissues, each_bias, f32_key, fwhm_classic, measure,
    metrics_of, white_matter_core,
};

/// The metrics of `image` (finite values, i fastest); the image takes the
/// masks-then-measure path when its values cannot be binned.
pub(super) fn metrics(
    image: &[f32],
    dims: [usize; 3],
    voxel: [f64; 3],
    contrast: super::Contrast,
) -> Result<Iqms, IqmError> {
    let slow = || {
        let masks = super::masks(image, dims, voxel, contrast)?;
        measure(image, voxel, &masks)
    };
    let Some(binning) = Binning::of(image) else {
        return slow();
    };
    let plan = Plan::of(image, dims, voxel, contrast)?;
    let bins = binning.bins();
    let counted = match &binning {
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
