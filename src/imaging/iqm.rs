//! No-reference image quality metrics (IQMs) of one 3D image: head, air, artefact and
//! rotation masks, a three-class tissue split, a low-order bias field, and from them
//! MRIQC's anatomical measures with MRIQC 24.0.2's exact definitions (docs/iqm.md).

use crate::imaging::simd::with_avx2;
use serde::Serialize;

use super::{Volume, nifti};

mod binned;
mod fused;
mod fwhm;
mod morphology;

/// Bumped whenever a mask, the tissue split or a metric changes meaning, so that rows
/// computed by an older build are told apart (and recomputed by `cdwqc iqm`).
pub const IQM_VERSION: i32 = 1;

/// MRIQC's IQM columns (its `group_T1w.tsv` names) that cdwqc computes, in the order
/// they are stored.
pub const COLUMNS: &[&str] = &[
    "cjv",
    "cnr",
    "efc",
    "fber",
    "fwhm_avg",
    "fwhm_x",
    "fwhm_y",
    "fwhm_z",
    "icvs_csf",
    "icvs_gm",
    "icvs_wm",
    "inu_med",
    "inu_range",
    "qi_1",
    "size_x",
    "size_y",
    "size_z",
    "snr_csf",
    "snr_gm",
    "snr_total",
    "snr_wm",
    "snrd_csf",
    "snrd_gm",
    "snrd_total",
    "snrd_wm",
    "spacing_x",
    "spacing_y",
    "spacing_z",
    "summary_bg_k",
    "summary_bg_mad",
    "summary_bg_mean",
    "summary_bg_median",
    "summary_bg_n",
    "summary_bg_p05",
    "summary_bg_p95",
    "summary_bg_stdv",
    "summary_csf_k",
    "summary_csf_mad",
    "summary_csf_mean",
    "summary_csf_median",
    "summary_csf_n",
    "summary_csf_p05",
    "summary_csf_p95",
    "summary_csf_stdv",
    "summary_gm_k",
    "summary_gm_mad",
    "summary_gm_mean",
    "summary_gm_median",
    "summary_gm_n",
    "summary_gm_p05",
    "summary_gm_p95",
    "summary_gm_stdv",
    "summary_wm_k",
    "summary_wm_mad",
    "summary_wm_mean",
    "summary_wm_median",
    "summary_wm_n",
    "summary_wm_p05",
    "summary_wm_p95",
    "summary_wm_stdv",
    "wm2max",
];

/// Columns of MRIQC's group table that need what cdwqc does not run (a chi-square fit
/// of the background, partial-volume maps, registration to tissue priors); exported
/// as `n/a` so scripts that read them by name still work.
pub const MRIQC_ONLY_COLUMNS: &[&str] = &[
    "qi_2",
    "rpve_csf",
    "rpve_gm",
    "rpve_wm",
    "tpm_overlap_csf",
    "tpm_overlap_gm",
    "tpm_overlap_wm",
];

/// `1 / sqrt(2 / (4 - pi))`, MRIQC's `DIETRICH_FACTOR` as written there.
const DIETRICH_FACTOR: f64 = 0.6551364;
/// `scipy.stats.norm.ppf(0.75)`, statsmodels' normalisation of the MAD.
const GAUSSIAN_3_4: f64 = 0.6744897501960817;
/// Tissue labels as FSL FAST numbers them (MRIQC's `FSL_FAST_LABELS`).
pub const CSF: u8 = 1;
pub const GM: u8 = 2;
pub const WM: u8 = 3;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IqmError {
    #[error("image too small for quality metrics: {0:?} voxels")]
    TooSmall([usize; 3]),
    #[error("no signal: the image is empty or constant")]
    NoSignal,
    #[error("head mask holds only {0} voxels")]
    SmallHead(usize),
    #[error("tissue split found no {0}")]
    NoTissue(&'static str),
    #[error(
        "voxel sizes {0:?} are not all positive and finite: distances, masks and smoothness need millimetres (fix pixdim in the header)"
    )]
    VoxelSize([f64; 3]),
}

/// Which way the tissues' intensities are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Contrast {
    /// CSF < GM < WM.
    T1w,
    /// WM < GM < CSF.
    T2w,
    /// CSF < WM < GM.
    Flair,
}

impl Contrast {
    /// From a BIDS suffix; anything not FLAIR or T2-like is treated as T1w.
    pub fn from_suffix(suffix: Option<&str>) -> Self {
        match suffix.map(str::to_ascii_lowercase).as_deref() {
            Some("flair") => Contrast::Flair,
            Some("t2w") | Some("t2") | Some("pdw") | Some("pdt2") => Contrast::T2w,
            _ => Contrast::T1w,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Contrast::T1w => "T1w",
            Contrast::T2w => "T2w",
            Contrast::Flair => "FLAIR",
        }
    }

    /// FAST labels of the dark, middle and bright intensity classes.
    fn labels_by_brightness(self) -> [u8; 3] {
        match self {
            Contrast::T1w => [CSF, GM, WM],
            Contrast::T2w => [WM, GM, CSF],
            Contrast::Flair => [CSF, WM, GM],
        }
    }
}

/// The masks every metric is computed from, one byte per voxel (i fastest).
#[derive(Debug, Clone)]
pub struct Masks {
    pub dims: [usize; 3],
    /// 1 inside the head (skin and skull included).
    pub head: Vec<u8>,
    /// 1 in the air around the head, artefacts removed (MRIQC's `air_msk`).
    pub air: Vec<u8>,
    /// 1 where the air holds artefactual signal (MRIQC's `artifact_msk`).
    pub artefact: Vec<u8>,
    /// 1 in large regions of exactly zero or negative voxels, such as the padding a
    /// rotation or a defacing leaves (MRIQC's `rot_msk`).
    pub rotation: Vec<u8>,
    /// FAST labels: 0 outside the brain, then CSF, GM, WM.
    pub tissue: Vec<u8>,
    /// Multiplicative low-order bias field at tissue voxels (0 elsewhere).
    pub bias: Vec<f32>,
}

/// MRIQC's anatomical IQMs of one image, in [`COLUMNS`] order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Iqms {
    pub values: Vec<f64>,
    /// WM median of the input image: MRIQC scales the image so that it is 1000.
    pub wm_median: f64,
}

impl Iqms {
    pub fn get(&self, name: &str) -> Option<f64> {
        COLUMNS
            .iter()
            .position(|c| *c == name)
            .map(|i| self.values[i])
    }

    /// Name and value pairs, in [`COLUMNS`] order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        COLUMNS.iter().copied().zip(self.values.iter().copied())
    }
}

/// Non-finite voxels become 0, as MRIQC's `nan_to_num` would make NaN; borrowed, not
/// copied, when every voxel is finite (as almost always).
pub fn sanitised(data: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    // Blocks tested whole, without stopping at the first non-finite value, vectorise.
    let finite = |block: &[f32]| block.iter().fold(true, |all, v| all & v.is_finite());
    if data.chunks(256).all(finite) {
        return std::borrow::Cow::Borrowed(data);
    }
    data.iter()
        .map(|v| if v.is_finite() { *v } else { 0.0 })
        .collect()
}

/// The metrics of one volume: the values of [`masks`] then [`measure`], computed
/// without keeping the masks at full resolution.
pub fn compute(volume: &Volume, contrast: Contrast) -> Result<Iqms, IqmError> {
    compute_known(volume, contrast, Known::default())
}

/// What a caller already knows of a volume's values, which spares [`compute`] a pass
/// over them (import knows both from the intensity summary and the header).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Known {
    /// Every value is finite.
    pub finite: bool,
    /// Every value is an integer, and these are the smallest and the largest.
    pub integers_within: Option<(f32, f32)>,
    /// Every value is a stored integer scaled as a header says, and these are the
    /// scaling and the extremes.
    pub scaled_integers: Option<ScaledIntegers>,
}

impl Known {
    /// What a volume's header and its values' count of non-finite voxels and finite
    /// extremes (`None` when there is no finite value) establish: import has both from
    /// the intensity summary, `cdwqc iqm` from [`crate::imaging::stats::finite_range`].
    pub fn of_header(header: &nifti::Header, nonfinite: u64, range: Option<(f64, f64)>) -> Self {
        let extremes = range.map(|(lo, hi)| (lo as f32, hi as f32));
        Self {
            finite: nonfinite == 0 && range.is_some(),
            integers_within: extremes.filter(|_| header.intensities_are_integers()),
            scaled_integers: extremes.zip(header.integer_scaling()).map(
                |((lo, hi), (slope, inter))| ScaledIntegers {
                    slope,
                    inter,
                    lo,
                    hi,
                },
            ),
        }
    }
}

/// Values that are stored integers scaled by a header's slope and offset, as
/// [`crate::imaging::nifti::scale_intensity`] scales them (a fractional slope, as many
/// scanners write): the metrics then bin each voxel by its stored integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaledIntegers {
    pub slope: f64,
    pub inter: f64,
    /// The smallest and the largest value.
    pub lo: f32,
    pub hi: f32,
}

/// [`compute`] given facts the caller has established; the values are the same.
pub fn compute_known(volume: &Volume, contrast: Contrast, known: Known) -> Result<Iqms, IqmError> {
    // Said before anything else fails on them ("no signal" was all a header with
    // pixdim 0 got).
    if !volume.voxel_size.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(IqmError::VoxelSize(volume.voxel_size));
    }
    let image = if known.finite {
        std::borrow::Cow::Borrowed(volume.data.as_slice())
    } else {
        sanitised(&volume.data)
    };
    // Sanitised values are finite, so the facts on the values stand only when the
    // values were already finite.
    let binning = if known.finite {
        match (known.integers_within, known.scaled_integers) {
            (Some((lo, hi)), _) => fused::Facts::Integers { lo, hi },
            (None, Some(scaled)) => fused::Facts::Scaled(scaled),
            (None, None) => fused::Facts::None,
        }
    } else {
        fused::Facts::None
    };
    fused::metrics(&image, volume.dims, volume.voxel_size, contrast, binning)
}

// ---------------------------------------------------------------------------------
// Grid helpers

#[derive(Clone, Copy)]
struct Grid {
    nx: usize,
    ny: usize,
    nz: usize,
}

impl Grid {
    fn new(dims: [usize; 3]) -> Self {
        Self {
            nx: dims[0],
            ny: dims[1],
            nz: dims[2],
        }
    }
    fn len(&self) -> usize {
        self.nx * self.ny * self.nz
    }
    fn sxy(&self) -> usize {
        self.nx * self.ny
    }
    fn ijk(&self, idx: usize) -> (usize, usize, usize) {
        let i = idx % self.nx;
        let j = (idx / self.nx) % self.ny;
        (i, j, idx / self.sxy())
    }
    #[cfg(test)]
    fn on_border(&self, idx: usize) -> bool {
        let (i, j, k) = self.ijk(idx);
        i == 0 || j == 0 || k == 0 || i + 1 == self.nx || j + 1 == self.ny || k + 1 == self.nz
    }
    /// Face neighbours (6-connectivity) of a voxel.
    #[cfg(test)]
    fn faces(&self, idx: usize, out: &mut Vec<usize>) {
        out.clear();
        let (i, j, k) = self.ijk(idx);
        if i > 0 {
            out.push(idx - 1);
        }
        if i + 1 < self.nx {
            out.push(idx + 1);
        }
        if j > 0 {
            out.push(idx - self.nx);
        }
        if j + 1 < self.ny {
            out.push(idx + self.nx);
        }
        if k > 0 {
            out.push(idx - self.sxy());
        }
        if k + 1 < self.nz {
            out.push(idx + self.sxy());
        }
    }
}

/// Erosion by the 3x3x3 cross (6-connectivity) or the 18-neighbourhood
/// (`generate_binary_structure(3, 2)`); voxels beyond the border count as `outside`.
fn erode(mask: &[u8], grid: Grid, eighteen: bool, outside: u8) -> Vec<u8> {
    morphology::morph(mask, grid, eighteen, outside, true)
}

fn dilate(mask: &[u8], grid: Grid, eighteen: bool, outside: u8) -> Vec<u8> {
    morphology::morph(mask, grid, eighteen, outside, false)
}

use morphology::{fill_holes, fill_holes_slices, largest_pieces};

/// The voxel-by-voxel forms of the morphology, the bias field and the FWHM sums, kept
/// as the references the row, run and branch-free forms are tested against.
#[cfg(test)]
mod reference {
    use super::{BiasFit, FwhmSums, Grid, bias_terms, scaled};

    /// The FWHM sums voxel by voxel with branches, the reference of the branch-free
    /// form.
    pub(super) fn fwhm_sums(image: &[f32], dims: [usize; 3], mask: &[u8]) -> FwhmSums {
        let grid = Grid::new(dims);
        let (mut fsum, mut fsq, mut count) = (0.0f64, 0.0f64, 0usize);
        for (&v, &m) in image.iter().zip(mask) {
            if m != 0 {
                let a = f64::from(v);
                fsum += a;
                fsq += a * a;
                count += 1;
            }
        }
        let mut sums = [0.0f64; 3];
        let mut squares = [0.0f64; 3];
        let mut counts = [0usize; 3];
        let steps = [1, grid.nx, grid.sxy()];
        let mut idx = 0;
        for k in 0..grid.nz {
            for j in 0..grid.ny {
                for i in 0..grid.nx {
                    if mask[idx] != 0 {
                        let inside = [i + 1 < grid.nx, j + 1 < grid.ny, k + 1 < grid.nz];
                        let arg = f64::from(image[idx]);
                        for axis in 0..3 {
                            let next = idx + steps[axis];
                            if inside[axis] && mask[next] != 0 {
                                let d = f64::from(image[next]) - arg;
                                sums[axis] += d;
                                squares[axis] += d * d;
                                counts[axis] += 1;
                            }
                        }
                    }
                    idx += 1;
                }
            }
        }
        FwhmSums {
            fsum,
            fsq,
            count,
            sums,
            squares,
            counts,
        }
    }

    /// The distances along rows by a forward and a backward pass, the reference of
    /// [`super::along_rows`].
    pub(super) fn along_rows(d: &mut [f32], nx: usize, wx: f32) {
        for row in d.chunks_exact_mut(nx) {
            for i in 1..nx {
                row[i] = row[i].min(row[i - 1] + wx);
            }
            for i in (0..nx - 1).rev() {
                row[i] = row[i].min(row[i + 1] + wx);
            }
        }
    }

    /// The field evaluated voxel by voxel, the reference of the stepped form.
    pub(super) fn eval_bias(fit: Option<BiasFit>, grid: Grid, tissue: &[u8]) -> Vec<f32> {
        let mut out = vec![0f32; tissue.len()];
        let Some(fit) = fit else {
            for (o, &t) in out.iter_mut().zip(tissue) {
                if t != 0 {
                    *o = 1.0;
                }
            }
            return out;
        };
        let mut idx = 0;
        for k in 0..grid.nz {
            let z = scaled(k as f64, fit.dims[2]);
            for j in 0..grid.ny {
                let y = scaled(j as f64, fit.dims[1]);
                for i in 0..grid.nx {
                    if tissue[idx] != 0 {
                        let x = scaled(i as f64, fit.dims[0]);
                        let t = bias_terms(x, y, z);
                        let p: f64 = t.iter().zip(&fit.coef).map(|(a, b)| a * b).sum();
                        out[idx] = (p - fit.mean_log).exp() as f32;
                    }
                    idx += 1;
                }
            }
        }
        out
    }

    /// Erosion by the 3x3x3 cross (6-connectivity) or the 18-neighbourhood
    /// (`generate_binary_structure(3, 2)`); voxels beyond the border count as `outside`.
    pub(super) fn erode(mask: &[u8], grid: Grid, eighteen: bool, outside: u8) -> Vec<u8> {
        morph(mask, grid, eighteen, outside, true)
    }

    pub(super) fn dilate(mask: &[u8], grid: Grid, eighteen: bool, outside: u8) -> Vec<u8> {
        morph(mask, grid, eighteen, outside, false)
    }

    pub(super) fn morph(
        mask: &[u8],
        grid: Grid,
        eighteen: bool,
        outside: u8,
        erosion: bool,
    ) -> Vec<u8> {
        let (nx, ny, nz) = (grid.nx as isize, grid.ny as isize, grid.nz as isize);
        let mut offsets: Vec<(isize, isize, isize)> = Vec::new();
        for dk in -1isize..=1 {
            for dj in -1isize..=1 {
                for di in -1isize..=1 {
                    let n = di.abs() + dj.abs() + dk.abs();
                    if n == 0 || n > if eighteen { 2 } else { 1 } {
                        continue;
                    }
                    offsets.push((di, dj, dk));
                }
            }
        }
        let mut out = vec![0u8; mask.len()];
        let at = |i: isize, j: isize, k: isize| -> u8 {
            if i < 0 || j < 0 || k < 0 || i >= nx || j >= ny || k >= nz {
                outside
            } else {
                mask[(i + nx * (j + ny * k)) as usize]
            }
        };
        for k in 0..nz {
            for j in 0..ny {
                let interior_row = j > 0 && k > 0 && j + 1 < ny && k + 1 < nz;
                for i in 0..nx {
                    let idx = (i + nx * (j + ny * k)) as usize;
                    let here = mask[idx];
                    // The result equals the voxel itself unless a neighbour differs.
                    if erosion && here == 0 {
                        continue;
                    }
                    if !erosion && here != 0 {
                        out[idx] = 1;
                        continue;
                    }
                    let interior = interior_row && i > 0 && i + 1 < nx;
                    let mut hit = false;
                    for &(di, dj, dk) in &offsets {
                        let v = if interior {
                            mask[(idx as isize + di + nx * (dj + ny * dk)) as usize]
                        } else {
                            at(i + di, j + dj, k + dk)
                        };
                        if erosion && v == 0 || !erosion && v != 0 {
                            hit = true;
                            break;
                        }
                    }
                    out[idx] = u8::from(if erosion { !hit } else { hit });
                }
            }
        }
        out
    }

    /// Connected components (6-connectivity) of a mask, largest first: (size, voxels).
    pub(super) fn components(mask: &[u8], grid: Grid) -> Vec<Vec<usize>> {
        let mut seen = vec![false; mask.len()];
        let mut out = Vec::new();
        let mut stack = Vec::new();
        let mut nb = Vec::with_capacity(6);
        for start in 0..mask.len() {
            if mask[start] == 0 || seen[start] {
                continue;
            }
            let mut members = Vec::new();
            seen[start] = true;
            stack.push(start);
            while let Some(v) = stack.pop() {
                members.push(v);
                grid.faces(v, &mut nb);
                for &n in &nb {
                    if mask[n] != 0 && !seen[n] {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
            out.push(members);
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.len()));
        out
    }

    /// Fills every region of 0s that does not reach the border (6-connectivity).
    pub(super) fn fill_holes(mask: &[u8], grid: Grid) -> Vec<u8> {
        let mut outside = vec![false; mask.len()];
        let mut stack: Vec<usize> = (0..mask.len())
            .filter(|&i| mask[i] == 0 && grid.on_border(i))
            .collect();
        for &i in &stack {
            outside[i] = true;
        }
        let mut nb = Vec::with_capacity(6);
        while let Some(v) = stack.pop() {
            grid.faces(v, &mut nb);
            for &n in &nb {
                if mask[n] == 0 && !outside[n] {
                    outside[n] = true;
                    stack.push(n);
                }
            }
        }
        outside.iter().map(|o| u8::from(!o)).collect()
    }

    /// Fills, in every slice along each axis, the 0s that do not reach the slice's edge
    /// (4-connectivity within the slice).
    pub(super) fn fill_holes_slices(mask: &[u8], grid: Grid) -> Vec<u8> {
        let mut out = mask.to_vec();
        let dims = [grid.nx, grid.ny, grid.nz];
        let strides = [1, grid.nx, grid.sxy()];
        for axis in 0..3 {
            let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
            let (nu, nv) = (dims[u], dims[v]);
            let mut outside = vec![false; nu * nv];
            let mut stack = Vec::new();
            for s in 0..dims[axis] {
                let base = s * strides[axis];
                let at = |a: usize, b: usize| base + a * strides[u] + b * strides[v];
                outside.iter_mut().for_each(|o| *o = false);
                for a in 0..nu {
                    for b in 0..nv {
                        if (a == 0 || b == 0 || a + 1 == nu || b + 1 == nv) && mask[at(a, b)] == 0 {
                            outside[a + nu * b] = true;
                            stack.push((a, b));
                        }
                    }
                }
                while let Some((a, b)) = stack.pop() {
                    let mut visit = |a2: usize, b2: usize| {
                        if !outside[a2 + nu * b2] && mask[at(a2, b2)] == 0 {
                            outside[a2 + nu * b2] = true;
                            stack.push((a2, b2));
                        }
                    };
                    if a > 0 {
                        visit(a - 1, b);
                    }
                    if a + 1 < nu {
                        visit(a + 1, b);
                    }
                    if b > 0 {
                        visit(a, b - 1);
                    }
                    if b + 1 < nv {
                        visit(a, b + 1);
                    }
                }
                for a in 0..nu {
                    for b in 0..nv {
                        if !outside[a + nu * b] {
                            out[at(a, b)] = 1;
                        }
                    }
                }
            }
        }
        out
    }
}

with_avx2! {
/// City-block distance in mm from each voxel to the nearest voxel of `source`;
/// infinite when `source` is empty.
///
/// The city-block distance is separable: one forward and one backward pass along each
/// axis in turn give the same distances as the 3D raster passes (a path's steps in any
/// order), and the passes along y and z take whole rows at a time, which vectorise.
fn distance_to(source: &[u8], grid: Grid, voxel: [f64; 3]) -> Vec<f32> {
    let [wx, wy, wz] = voxel.map(|v| v.abs().max(1e-3) as f32);
    let mut d: Vec<f32> = source
        .iter()
        .map(|&s| if s != 0 { 0.0 } else { f32::INFINITY })
        .collect();
    let (nx, sxy) = (grid.nx, grid.sxy());
    if d.is_empty() {
        return d;
    }
    along_rows(&mut d, nx, wx);
    // Along y, row after row of each slice; along z, slice after slice.
    for slice in d.chunks_exact_mut(sxy) {
        sweep_lines(slice, nx, wy);
    }
    sweep_lines(&mut d, sxy, wz);
    d
}
}

/// The distances along each row of `nx` values (0 at a source, infinite elsewhere):
/// what a forward pass `d[i] = min(d[i], d[i - 1] + step)` and a backward pass
/// `d[i] = min(d[i], d[i + 1] + step)` give, to the bit, without waiting on the
/// previous voxel's sum. Both passes leave at each voxel the smaller of `steps[a]` and
/// `steps[b]`, `a` and `b` voxels from the nearest sources on its left and right, where
/// `steps[k]` is `step` added `k` times from 0 in single precision (the forward pass
/// adds exactly that; the backward pass's other sums are never smaller, as rounding is
/// monotonic); a missing source reads as infinity.
fn along_rows(d: &mut [f32], nx: usize, step: f32) {
    let mut steps = Vec::with_capacity(nx + 1);
    let mut sum = 0.0f32;
    steps.push(sum);
    for _ in 1..nx {
        sum += step;
        steps.push(sum);
    }
    steps.push(f32::INFINITY);
    let mut from_left = vec![0u32; nx];
    for row in d.chunks_exact_mut(nx) {
        // Voxels from the nearest source on the left, `nx` when there is none.
        let mut gap = nx;
        for (g, &v) in from_left.iter_mut().zip(row.iter()) {
            gap = if v == 0.0 { 0 } else { (gap + 1).min(nx) };
            *g = gap as u32;
        }
        if gap == nx {
            // No source: the row stays infinite.
            continue;
        }
        let mut gap = nx;
        for (v, &left) in row.iter_mut().zip(&from_left).rev() {
            gap = if *v == 0.0 { 0 } else { (gap + 1).min(nx) };
            *v = steps[left as usize].min(steps[gap]);
        }
    }
}

/// One forward and one backward pass over consecutive lines of `width` values: each line
/// becomes the minimum of itself and its neighbour line plus `step`.
fn sweep_lines(values: &mut [f32], width: usize, step: f32) {
    let lines = values.len() / width;
    for l in 1..lines {
        let (before, rest) = values.split_at_mut(l * width);
        let previous = &before[(l - 1) * width..];
        for (v, p) in rest[..width].iter_mut().zip(previous) {
            *v = v.min(p + step);
        }
    }
    for l in (0..lines.saturating_sub(1)).rev() {
        let (head, after) = values.split_at_mut((l + 1) * width);
        let next = &after[..width];
        for (v, n) in head[l * width..].iter_mut().zip(next) {
            *v = v.min(n + step);
        }
    }
}

/// The largest finite distance (0 when none is), in eight running maxima: distances
/// are never NaN, so a comparison is `f32::max` and the order does not matter.
fn largest_finite(distances: &[f32]) -> f32 {
    let mut far = [0.0f32; 8];
    let chunks = distances.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (f, &d) in far.iter_mut().zip(chunk) {
            *f = if d.is_finite() && d > *f { d } else { *f };
        }
    }
    for &d in rest {
        far[0] = if d.is_finite() && d > far[0] {
            d
        } else {
            far[0]
        };
    }
    far.iter().fold(0.0f32, |a, &f| if f > a { f } else { a })
}

/// About `limit` values of `values` picked at a fixed stride, for cheap thresholds.
fn strided<T: Copy>(values: impl Iterator<Item = T> + Clone, limit: usize) -> Vec<T> {
    let len = values.clone().count();
    let stride = len.div_ceil(limit.max(1)).max(1);
    values.step_by(stride).collect()
}

fn quantile_of(sample: &mut [f32], q: f64) -> f32 {
    if sample.is_empty() {
        return f32::NAN;
    }
    let rank = ((sample.len() - 1) as f64 * q).round() as usize;
    *sample.select_nth_unstable_by(rank, |a, b| a.total_cmp(b)).1
}

/// Otsu's threshold on a 256-bin histogram of `values` clipped to [lo, hi].
fn otsu(values: &[f32], lo: f32, hi: f32) -> f32 {
    const BINS: usize = 256;
    let width = (hi - lo) / BINS as f32;
    let mut hist = [0f64; BINS];
    for &v in values {
        let b = (((v - lo) / width) as isize).clamp(0, BINS as isize - 1) as usize;
        hist[b] += 1.0;
    }
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(i, h)| i as f64 * h).sum();
    let (mut w0, mut sum0, mut best, mut best_k) = (0.0, 0.0, -1.0, 0usize);
    for (k, h) in hist.iter().enumerate() {
        w0 += h;
        sum0 += k as f64 * h;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = sum0 / w0;
        let m1 = (sum_all - sum0) / w1;
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_k = k;
        }
    }
    lo + (best_k as f32 + 1.0) * width
}

/// Three-class k-means on a histogram of the values; returns the sorted centres.
fn kmeans3(values: &[f32], lo: f32, hi: f32) -> [f64; 3] {
    const BINS: usize = 512;
    let width = ((hi - lo) / BINS as f32).max(f32::MIN_POSITIVE);
    let mut hist = vec![0f64; BINS];
    for &v in values {
        let b = (((v - lo) / width) as isize).clamp(0, BINS as isize - 1) as usize;
        hist[b] += 1.0;
    }
    let centre = |b: usize| f64::from(lo) + (b as f64 + 0.5) * f64::from(width);
    let total: f64 = hist.iter().sum();
    // Start at the 1/6, 1/2 and 5/6 quantiles of the histogram.
    let mut centres = [0.0f64; 3];
    let mut acc = 0.0;
    let mut next = 0;
    for (b, h) in hist.iter().enumerate() {
        acc += h;
        while next < 3 && acc >= total * (2 * next + 1) as f64 / 6.0 {
            centres[next] = centre(b);
            next += 1;
        }
    }
    for _ in 0..100 {
        let mut sums = [0.0f64; 3];
        let mut weights = [0.0f64; 3];
        for (b, h) in hist.iter().enumerate() {
            if *h == 0.0 {
                continue;
            }
            let x = centre(b);
            let c = (0..3)
                .min_by(|&a, &c| (x - centres[a]).abs().total_cmp(&(x - centres[c]).abs()))
                .unwrap_or(0);
            sums[c] += x * h;
            weights[c] += h;
        }
        let mut moved = false;
        for c in 0..3 {
            if weights[c] > 0.0 {
                let n = sums[c] / weights[c];
                moved |= (n - centres[c]).abs() > 1e-9 * (1.0 + n.abs());
                centres[c] = n;
            }
        }
        if !moved {
            break;
        }
    }
    centres.sort_by(f64::total_cmp);
    centres
}

// ---------------------------------------------------------------------------------
// Masks

/// Scalp and skull are this thick at most, in city-block millimetres from the head's
/// surface: the tissue split looks deeper than that unless the image is skull-stripped.
const SCALP_MM: f32 = 12.0;
/// MRIQC's z-score for artefactual air voxels.
const ARTEFACT_Z: f64 = 10.0;
/// A rotation mask with fewer voxels is dropped.
const ROTATION_MIN_VOXELS: usize = 500;

/// Images with more voxels than this are segmented on a grid decimated by two along
/// each axis (block means); the masks come back to full resolution voxel by voxel, and
/// the tissue labels and the bias field are evaluated at full resolution.
const DECIMATE_ABOVE: usize = 2_000_000;

/// What the segmentation finds on its grid.
struct Segmentation {
    head: Vec<u8>,
    rotation: Vec<u8>,
    artefact: Vec<u8>,
    brain: Vec<u8>,
    /// Intensity cuts between the dark, middle and bright tissue classes.
    cuts: [f64; 2],
}

/// Bits of a segmentation voxel's code in [`Plan::codes`]: the air, head and rotation
/// bits are those of the binned statistics' class codes.
const CODE_AIR: u8 = 4;
const CODE_HEAD: u8 = 8;
const CODE_ROTATION: u8 = 16;
const CODE_BRAIN: u8 = 32;
const CODE_ARTEFACT: u8 = 64;

/// The segmentation and what the full-resolution masks are read from: each
/// full-resolution voxel `(i, j, k)` takes the masks of the segmentation grid's voxel
/// `(i >> shift, j >> shift, k >> shift)`.
struct Plan {
    /// The segmentation grid's dimensions (the image's own when `shift` is 0).
    cdims: [usize; 3],
    /// 1 when segmented on a grid decimated by two, else 0.
    shift: u32,
    /// Each segmentation voxel's masks as `CODE_*` bits, read once per full-resolution
    /// voxel instead of five masks.
    codes: Vec<u8>,
    /// The tissue label of the dark, middle and bright classes.
    labels: [u8; 3],
    /// The cuts, rounded so that single-precision comparisons are those of the
    /// double-precision ones.
    below: [f32; 2],
    /// The bias field fitted on the decimated grid; `None` on the image's own grid,
    /// where the fit needs the full-resolution tissue labels.
    coarse_fit: Option<Option<BiasFit>>,
}

impl Plan {
    /// Segments `image` (finite values, i fastest), on a grid decimated by two when it
    /// is large.
    fn of(
        image: &[f32],
        dims: [usize; 3],
        voxel: [f64; 3],
        contrast: Contrast,
    ) -> Result<Self, IqmError> {
        let grid = Grid::new(dims);
        if dims.iter().any(|&d| d < 4) || grid.len() != image.len() {
            return Err(IqmError::TooSmall(dims));
        }
        let labels = contrast.labels_by_brightness();
        if image.len() <= DECIMATE_ABOVE {
            let seg = segment(image, dims, voxel)?;
            return Ok(Self::from_segmentation(seg, dims, 0, labels, None));
        }
        let (coarse, cdims) = decimate(image, dims);
        let seg = segment(&coarse, cdims, voxel.map(|v| 2.0 * v))?;
        let label_of = |v: f32| {
            if f64::from(v) < seg.cuts[0] {
                labels[0]
            } else if f64::from(v) < seg.cuts[1] {
                labels[1]
            } else {
                labels[2]
            }
        };
        let coarse_tissue: Vec<u8> = coarse
            .iter()
            .zip(&seg.brain)
            .map(|(&v, &b)| if b == 0 { 0 } else { label_of(v) })
            .collect();
        let fit = fit_bias(&coarse, Grid::new(cdims), &coarse_tissue, dims, 2.0);
        Ok(Self::from_segmentation(seg, cdims, 1, labels, Some(fit)))
    }

    fn from_segmentation(
        seg: Segmentation,
        cdims: [usize; 3],
        shift: u32,
        labels: [u8; 3],
        coarse_fit: Option<Option<BiasFit>>,
    ) -> Self {
        let bit = |m: u8, code: u8| if m != 0 { code } else { 0 };
        let codes = (0..seg.head.len())
            .map(|c| {
                let (h, a) = (seg.head[c], seg.artefact[c]);
                bit(h, CODE_HEAD)
                    | bit(u8::from(h == 0 && a == 0), CODE_AIR)
                    | bit(a, CODE_ARTEFACT)
                    | bit(seg.rotation[c], CODE_ROTATION)
                    | bit(seg.brain[c], CODE_BRAIN)
            })
            .collect();
        Self {
            cdims,
            shift,
            codes,
            labels,
            below: seg.cuts.map(f32_at_or_above),
            coarse_fit,
        }
    }

    /// The bias field's fit, given the full-resolution tissue labels.
    fn fit(&self, image: &[f32], dims: [usize; 3], tissue: &[u8]) -> Option<BiasFit> {
        match self.coarse_fit {
            Some(fit) => fit,
            None => fit_bias(image, Grid::new(dims), tissue, dims, 1.0),
        }
    }

    /// Calls `f` with each full-resolution row `(j, k)` and its segmentation row.
    fn rows(&self, dims: [usize; 3], mut f: impl FnMut(std::ops::Range<usize>, CoarseRow<'_>)) {
        let (nx, s, cnx) = (dims[0], self.shift, self.cdims[0]);
        let mut idx = 0;
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                let start = cnx * ((j >> s) + self.cdims[1] * (k >> s));
                let row = CoarseRow {
                    codes: &self.codes[start..start + cnx],
                    shift: s,
                    labels: self.labels,
                    below: self.below,
                };
                f(idx..idx + nx, row);
                idx += nx;
            }
        }
    }
}

/// One row of the segmentation grid, read at full resolution.
struct CoarseRow<'a> {
    codes: &'a [u8],
    shift: u32,
    labels: [u8; 3],
    below: [f32; 2],
}

impl CoarseRow<'_> {
    /// The masks of the voxel at `i` along the row, holding `v`, as `CODE_*` bits with
    /// the tissue label in bits 0-1: the head, air and artefact masks of its block, the
    /// rotation mask's non-positive voxels only (MRIQC's holds no others), and a tissue
    /// label from the voxel's own intensity.
    #[inline(always)]
    fn at(&self, i: usize, v: f32) -> u8 {
        let code = self.codes[i >> self.shift];
        let [dark, middle, bright] = self.labels;
        let tissue = if code & CODE_BRAIN == 0 {
            0
        } else if v < self.below[0] {
            dark
        } else if v < self.below[1] {
            middle
        } else {
            bright
        };
        let rotation = if v <= 0.0 { CODE_ROTATION } else { 0 };
        (code & (CODE_AIR | CODE_HEAD | CODE_ARTEFACT | rotation)) | tissue
    }
}

/// Head, air, artefact and rotation masks, tissue split and bias field of `image`
/// (finite values, i fastest).
pub fn masks(
    image: &[f32],
    dims: [usize; 3],
    voxel: [f64; 3],
    contrast: Contrast,
) -> Result<Masks, IqmError> {
    let plan = Plan::of(image, dims, voxel, contrast)?;
    let n = image.len();
    let (mut head, mut rotation, mut artefact) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
    let (mut air, mut tissue) = (vec![0u8; n], vec![0u8; n]);
    plan.rows(dims, |range, row| {
        let voxels = image[range.clone()]
            .iter()
            .zip(&mut head[range.clone()])
            .zip(&mut artefact[range.clone()])
            .zip(&mut air[range.clone()])
            .zip(&mut rotation[range.clone()])
            .zip(&mut tissue[range]);
        for (i, (((((&v, h), a), air), r), t)) in voxels.enumerate() {
            let m = row.at(i, v);
            *h = u8::from(m & CODE_HEAD != 0);
            *a = u8::from(m & CODE_ARTEFACT != 0);
            *air = u8::from(m & CODE_AIR != 0);
            *r = u8::from(m & CODE_ROTATION != 0);
            *t = m & 3;
        }
    });
    check_tissues(&tissue)?;
    let fit = plan.fit(image, dims, &tissue);
    let bias = eval_bias(fit, Grid::new(dims), &tissue);
    Ok(Masks {
        dims,
        head,
        air,
        artefact,
        rotation,
        tissue,
        bias,
    })
}

/// Fails unless the tissue labels hold every class.
fn check_tissues(tissue: &[u8]) -> Result<(), IqmError> {
    let mut present = [false; 4];
    for &t in tissue {
        present[usize::from(t & 3)] = true;
    }
    for (label, name) in [(CSF, "CSF"), (GM, "grey matter"), (WM, "white matter")] {
        if !present[usize::from(label)] {
            return Err(IqmError::NoTissue(name));
        }
    }
    Ok(())
}

/// Voxels set in a 0/1 mask.
fn count_set(mask: &[u8]) -> usize {
    mask.iter().map(|&m| usize::from(m != 0)).sum()
}

/// The smallest single-precision value `t` with `f64::from(t) / divisor > bound`
/// (`divisor` positive and finite), so that for every f32 `v`, `v >= t` exactly when
/// `f64::from(v) / divisor > bound`: the quotient never decreases as `v` grows.
fn f32_above_ratio(divisor: f64, bound: f64) -> f32 {
    let passes = |v: f32| f64::from(v) / divisor > bound;
    let mut t = (bound * divisor) as f32;
    while !passes(t) && t < f32::INFINITY {
        t = t.next_up();
    }
    while t > f32::MIN && passes(t.next_down()) {
        t = t.next_down();
    }
    t
}

/// The smallest single-precision value whose widening is at least `cut`, so that for
/// every f32 `v`, `v < f32_at_or_above(cut)` exactly when `f64::from(v) < cut`.
fn f32_at_or_above(cut: f64) -> f32 {
    let near = cut as f32;
    if f64::from(near) < cut {
        near.next_up()
    } else if f64::from(near.next_down()) >= cut {
        near.next_down()
    } else {
        near
    }
}

with_avx2! {
/// Block means over 2x2x2 blocks (smaller at odd edges). Each block's sum adds its
/// voxels in raster order; a row adds its pairs of voxels to its blocks in turn.
fn decimate(image: &[f32], dims: [usize; 3]) -> (Vec<f32>, [usize; 3]) {
    let cdims = dims.map(|d| d.div_ceil(2));
    let cnx = cdims[0];
    let mut sums = vec![0f64; cnx * cdims[1] * cdims[2]];
    let pairs = dims[0] / 2;
    for (r, row) in image.chunks_exact(dims[0]).enumerate() {
        let (j, k) = (r % dims[1], r / dims[1]);
        let start = cnx * (j / 2 + cdims[1] * (k / 2));
        let blocks = &mut sums[start..start + cnx];
        for (s, pair) in blocks.iter_mut().zip(row.chunks_exact(2)) {
            *s = (*s + f64::from(pair[0])) + f64::from(pair[1]);
        }
        if dims[0] % 2 == 1 {
            blocks[pairs] += f64::from(row[dims[0] - 1]);
        }
    }
    // Voxels per block: two along each axis, one in the last block of an odd axis.
    let along = |n: usize, c: usize| if 2 * c + 1 == n { 1.0 } else { 2.0 };
    let mut coarse = Vec::with_capacity(sums.len());
    for k in 0..cdims[2] {
        for j in 0..cdims[1] {
            let plane = along(dims[2], k) * along(dims[1], j);
            let row = cnx * (j + cdims[1] * k);
            for (i, s) in sums[row..row + cnx].iter().enumerate() {
                coarse.push((s / (plane * along(dims[0], i))) as f32);
            }
        }
    }
    (coarse, cdims)
}
}

/// Head, rotation, artefact and brain masks and the tissue cuts on one grid.
fn segment(image: &[f32], dims: [usize; 3], voxel: [f64; 3]) -> Result<Segmentation, IqmError> {
    let grid = Grid::new(dims);
    let mut sample = strided(image.iter().copied(), 200_000);
    let lo = quantile_of(&mut sample, 0.0).min(0.0);
    let hi = quantile_of(&mut sample, 0.995);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return Err(IqmError::NoSignal);
    }
    let threshold = otsu(&sample, lo, hi);

    // Head: above Otsu's threshold, specks of noise opened away, the largest piece,
    // holes (skull, ventricles) filled.
    // Filling first keeps the dark skull between scalp and brain; filling slice by
    // slice too closes a head left open where it leaves the field of view.
    let above: Vec<u8> = image.iter().map(|&v| u8::from(v > threshold)).collect();
    let filled = fill_holes_slices(&fill_holes(&above, grid), grid);
    let opened = dilate(&erode(&filled, grid, false, 0), grid, false, 0);
    let head = largest_pieces(&opened, grid, 1);
    let head = fill_holes_slices(&fill_holes(&head, grid), grid);
    let head_voxels = head.iter().filter(|&&h| h != 0).count();
    if head_voxels < 1000 {
        return Err(IqmError::SmallHead(head_voxels));
    }

    // Rotation mask as MRIQC builds it: non-positive voxels, opened, the two largest
    // pieces, dropped when small.
    let non_positive: Vec<u8> = image.iter().map(|&v| u8::from(v <= 0.0)).collect();
    // The opening and its pieces keep some of these voxels only, so with fewer of them
    // than a kept mask needs, the mask is empty without building it.
    let mut rotation = if count_set(&non_positive) < ROTATION_MIN_VOXELS {
        vec![0u8; image.len()]
    } else {
        let opened = dilate(&erode(&non_positive, grid, true, 1), grid, true, 0);
        largest_pieces(&opened, grid, 2)
    };
    if count_set(&rotation) < ROTATION_MIN_VOXELS {
        rotation.iter_mut().for_each(|r| *r = 0);
    }

    // Air ("hat") and its artefacts, after Mortamet et al. as MRIQC does: air voxels
    // brighter than 10 robust spreads of the positive air, away from the head.
    let hat: Vec<u8> = head.iter().map(|&h| u8::from(h == 0)).collect();
    let mut positive_air = strided(
        image
            .iter()
            .zip(&hat)
            .filter(|(v, h)| **h != 0 && **v > 0.0)
            .map(|(v, _)| *v),
        400_000,
    );
    let mut artefact = vec![0u8; image.len()];
    let skull_stripped;
    if positive_air.len() >= 10 {
        let median = f64::from(quantile_of(&mut positive_air, 0.5));
        let mut deviations: Vec<f32> = positive_air
            .iter()
            .map(|v| (f64::from(*v) - median).abs() as f32)
            .collect();
        let spread = f64::from(quantile_of(&mut deviations, 0.5)) / GAUSSIAN_3_4;
        let from_head = distance_to(&head, grid, voxel);
        let far = largest_finite(&from_head);
        let mut raw = vec![0u8; image.len()];
        if spread > 0.0 {
            // `v / spread > ARTEFACT_Z` exactly when `v` reaches the threshold, without a
            // division per voxel.
            let bright = f32_above_ratio(spread, ARTEFACT_Z);
            let near = 0.1 * far;
            let voxels = raw.iter_mut().zip(image).zip(&hat).zip(&from_head);
            for (((r, &v), &h), &d) in voxels {
                *r = u8::from(h != 0 && v >= bright && d >= near);
            }
        }
        // The opening of an empty mask is empty.
        if count_set(&raw) > 0 {
            artefact = dilate(&erode(&raw, grid, false, 0), grid, false, 0);
        }
        let zero_air = image
            .iter()
            .zip(&hat)
            .filter(|(v, h)| **h != 0 && **v == 0.0)
            .count();
        skull_stripped = zero_air * 2 > hat.iter().filter(|&&h| h != 0).count();
    } else {
        skull_stripped = true;
    }
    // Brain: the head minus the scalp and skull (unless already stripped).
    let brain: Vec<u8> = if skull_stripped {
        head.clone()
    } else {
        let to_air = distance_to(&hat, grid, voxel);
        head.iter()
            .zip(&to_air)
            .map(|(&h, &d)| u8::from(h != 0 && d >= SCALP_MM))
            .collect()
    };
    let mut brain_sample = strided(
        image
            .iter()
            .zip(&brain)
            .filter(|(_, b)| **b != 0)
            .map(|(v, _)| *v),
        400_000,
    );
    let (blo, bhi) = (
        quantile_of(&mut brain_sample, 0.005),
        quantile_of(&mut brain_sample, 0.995),
    );
    if bhi.partial_cmp(&blo) != Some(std::cmp::Ordering::Greater) {
        return Err(IqmError::NoSignal);
    }
    let centres = kmeans3(&brain_sample, blo, bhi);
    let cuts = [
        (centres[0] + centres[1]) / 2.0,
        (centres[1] + centres[2]) / 2.0,
    ];
    Ok(Segmentation {
        head,
        rotation,
        artefact,
        brain,
        cuts,
    })
}

/// A fitted bias field: polynomial coefficients over coordinates scaled to [-1, 1]
/// across the full-resolution grid, and the mean log over the fitted voxels.
#[derive(Clone, Copy)]
struct BiasFit {
    coef: [f64; 10],
    mean_log: f64,
    dims: [usize; 3],
}

fn bias_terms(x: f64, y: f64, z: f64) -> [f64; 10] {
    [1.0, x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
}

/// Scales a full-resolution voxel position to [-1, 1].
fn scaled(position: f64, n: usize) -> f64 {
    2.0 * position / (n.max(2) - 1) as f64 - 1.0
}

/// Fits a second-order polynomial to the log intensity of white matter on `grid`,
/// whose voxel `i` lies at full-resolution position `step * i + (step - 1) / 2`.
fn fit_bias(
    image: &[f32],
    grid: Grid,
    tissue: &[u8],
    full_dims: [usize; 3],
    step: f64,
) -> Option<BiasFit> {
    let offset = (step - 1.0) / 2.0;
    let mut ata = [[0.0f64; 10]; 10];
    let mut atb = [0.0f64; 10];
    let mut n = 0usize;
    let mut idx = 0;
    let mut points = Vec::new();
    for k in 0..grid.nz {
        let z = scaled(step * k as f64 + offset, full_dims[2]);
        for j in 0..grid.ny {
            let y = scaled(step * j as f64 + offset, full_dims[1]);
            for i in 0..grid.nx {
                if tissue[idx] == WM && image[idx] > 0.0 {
                    let x = scaled(step * i as f64 + offset, full_dims[0]);
                    let t = bias_terms(x, y, z);
                    let v = f64::from(image[idx]).ln();
                    for r in 0..10 {
                        atb[r] += t[r] * v;
                        for c in r..10 {
                            ata[r][c] += t[r] * t[c];
                        }
                    }
                    points.push(t);
                    n += 1;
                }
                idx += 1;
            }
        }
    }
    if n < 20 {
        return None;
    }
    // The normal matrix is symmetric: mirror the upper triangle into the lower.
    #[allow(clippy::needless_range_loop)]
    for r in 0..10 {
        for c in 0..r {
            ata[r][c] = ata[c][r];
        }
        // A touch of ridge keeps the system solvable on thin slabs.
        ata[r][r] += 1e-6 * n as f64;
    }
    let coef = solve(ata, atb)?;
    let mean_log = points
        .iter()
        .map(|t| t.iter().zip(&coef).map(|(a, b)| a * b).sum::<f64>())
        .sum::<f64>()
        / n as f64;
    Some(BiasFit {
        coef,
        mean_log,
        dims: full_dims,
    })
}

/// The field `exp(p - mean log)` at tissue voxels (1 there without a fit, 0 elsewhere).
/// Along a row the polynomial is a quadratic `a + b x + c x^2` of evenly spaced x, so
/// the field steps from voxel to voxel by a ratio that itself changes by a constant
/// factor: two products a voxel instead of an exponential (relative drift along a row
/// about 1e-14, far below the single precision the field is kept in).
fn eval_bias(fit: Option<BiasFit>, grid: Grid, tissue: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; tissue.len()];
    each_bias(fit, grid, tissue, |idx, value| out[idx] = value);
    out
}

/// Calls `f(index, field)` once at each tissue voxel (in no particular order): the
/// values [`eval_bias`] stores. Four rows are stepped side by side: each row's products
/// wait on the previous voxel's, so one row at a time left the multiplier idle; each
/// row still takes the same products in the same order.
fn each_bias(fit: Option<BiasFit>, grid: Grid, tissue: &[u8], mut f: impl FnMut(usize, f32)) {
    let Some(fit) = fit else {
        for (idx, &t) in tissue.iter().enumerate() {
            if t != 0 {
                f(idx, 1.0);
            }
        }
        return;
    };
    let c = fit.coef;
    let dx = 2.0 / (fit.dims[0].max(2) - 1) as f64;
    let x0 = scaled(0.0, fit.dims[0]);
    let nx = grid.nx;
    // A row's field at its first voxel and the ratio to the next one.
    let row_start = |r: usize| {
        let (j, k) = (r % grid.ny, r / grid.ny);
        let y = scaled(j as f64, fit.dims[1]);
        let z = scaled(k as f64, fit.dims[2]);
        // Terms as in `bias_terms`: 1, x, y, z, x², y², z², xy, xz, yz.
        let a =
            c[0] + c[2] * y + c[3] * z + c[5] * y * y + c[6] * z * z + c[9] * y * z - fit.mean_log;
        let b = c[1] + c[7] * y + c[8] * z;
        let q = c[4];
        let value = (a + b * x0 + q * x0 * x0).exp();
        let ratio = (b * dx + q * (2.0 * x0 * dx + dx * dx)).exp();
        (value, ratio)
    };
    let growth = (2.0 * c[4] * dx * dx).exp();
    let rows: Vec<usize> = tissue
        .chunks_exact(nx)
        .enumerate()
        .filter(|(_, labels)| labels.iter().any(|&t| t != 0))
        .map(|(r, _)| r)
        .collect();
    const SIDE_BY_SIDE: usize = 4;
    for group in rows.chunks(SIDE_BY_SIDE) {
        let mut value = [0.0f64; SIDE_BY_SIDE];
        let mut ratio = [0.0f64; SIDE_BY_SIDE];
        for (l, &r) in group.iter().enumerate() {
            (value[l], ratio[l]) = row_start(r);
        }
        for i in 0..nx {
            for (l, &r) in group.iter().enumerate() {
                let idx = r * nx + i;
                if tissue[idx] != 0 {
                    f(idx, value[l] as f32);
                }
                value[l] *= ratio[l];
                ratio[l] *= growth;
            }
        }
    }
}

/// Gaussian elimination with partial pivoting on a small dense system.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..N {
            let f = a[r][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(r);
            for (target, source) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *target -= f * source;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0; N];
    for r in (0..N).rev() {
        let mut s = b[r];
        for c in r + 1..N {
            s -= a[r][c] * x[c];
        }
        x[r] = s / a[r][r];
    }
    Some(x)
}

// ---------------------------------------------------------------------------------
// The measures, as MRIQC 24.0.2 computes them (`mriqc.interfaces.anatomical.
// StructuralQC` calling `mriqc.qc.anatomical`).

/// Python's `round(x, 4)`: correctly rounded from the exact binary value.
pub fn round4(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.4}").parse().unwrap_or(x)
}

/// numpy's `_lerp`: `a + (b - a) t`, or `b - (b - a)(1 - t)` when `t >= 0.5`.
fn lerp(lo: f64, hi: f64, gamma: f64) -> f64 {
    let diff = hi - lo;
    if gamma >= 0.5 {
        hi - diff * (1.0 - gamma)
    } else {
        lo + diff * gamma
    }
}

#[cfg(test)]
/// The order statistics at `rank` and `rank + 1` (clamped) of `values`, which it
/// reorders.
fn order_pair<T: Copy>(
    values: &mut [T],
    rank: usize,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> (T, T) {
    let n = values.len();
    let (_, at, upper) = values.select_nth_unstable_by(rank, &cmp);
    let at = *at;
    let next = upper.iter().copied().min_by(|a, b| cmp(a, b)).unwrap_or(at);
    (at, if rank + 1 < n { next } else { at })
}

/// A sortable key of a float: unsigned order of keys is `total_cmp`'s order of values.
fn f32_key(x: f32) -> u64 {
    let b = x.to_bits();
    u64::from(if b >> 31 == 1 { !b } else { b | 0x8000_0000 })
}

fn f32_of_key(k: u64) -> f32 {
    let k = k as u32;
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

fn f64_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn f64_of_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Width of the first radix level: 2^18 buckets (1 MiB of counts).
const RADIX_BITS: u32 = 18;
/// Shifts that take a key's top [`RADIX_BITS`] bits: f32 keys use 32 bits, f64 keys 64.
const F32_SHIFT: u32 = 32 - RADIX_BITS;
const F64_SHIFT: u32 = 64 - RADIX_BITS;

/// Order statistics of a set of keys without copying or reordering the set: the keys
/// are counted by their top bits, and only those in the buckets holding the wanted
/// ranks are gathered and selected among. Both passes must see the same keys.
struct KeyCounts {
    counts: Vec<u32>,
    shift: u32,
    n: usize,
}

impl KeyCounts {
    fn of(keys: impl Iterator<Item = u64>, shift: u32) -> Self {
        let mut counts = vec![0u32; 1 << RADIX_BITS];
        let mut n = 0usize;
        for k in keys {
            counts[(k >> shift) as usize] += 1;
            n += 1;
        }
        Self { counts, shift, n }
    }

    /// The keys at `ranks` (each below `n`), in the order asked.
    fn at(&self, keys: impl Iterator<Item = u64>, ranks: &[usize]) -> Vec<u64> {
        // Bucket and rank within the bucket of each wanted rank.
        let mut order: Vec<usize> = (0..ranks.len()).collect();
        order.sort_by_key(|&i| ranks[i]);
        let mut place = vec![(0usize, 0usize); ranks.len()];
        let (mut bucket, mut below) = (0usize, 0usize);
        for &i in &order {
            while below + self.counts[bucket] as usize <= ranks[i] {
                below += self.counts[bucket] as usize;
                bucket += 1;
            }
            place[i] = (bucket, ranks[i] - below);
        }
        let mut buckets: Vec<usize> = place.iter().map(|p| p.0).collect();
        buckets.sort_unstable();
        buckets.dedup();
        let mut slot = vec![0u8; self.counts.len()];
        for (s, &b) in buckets.iter().enumerate() {
            slot[b] = s as u8 + 1;
        }
        let mut gathered: Vec<Vec<u64>> = buckets
            .iter()
            .map(|&b| Vec::with_capacity(self.counts[b] as usize))
            .collect();
        for k in keys {
            let s = slot[(k >> self.shift) as usize];
            if s != 0 {
                gathered[s as usize - 1].push(k);
            }
        }
        place
            .iter()
            .map(|&(b, r)| {
                let s = slot[b] as usize - 1;
                *gathered[s].select_nth_unstable(r).1
            })
            .collect()
    }

    /// The ranks `np.median` averages (equal when n is odd); `None` when empty.
    fn middle_ranks(&self) -> Option<[usize; 2]> {
        match self.n {
            0 => None,
            n if n % 2 == 1 => Some([n / 2, n / 2]),
            n => Some([n / 2 - 1, n / 2]),
        }
    }

    /// The ranks `np.percentile(q)` interpolates between, and the weight.
    fn percentile_ranks(&self, q: f64) -> ([usize; 2], f64) {
        percentile_ranks(self.n, q)
    }
}

/// `np.median` of f32 values given as keys (NaN when empty).
fn median_of_f32_keys<I: Iterator<Item = u64>>(keys: impl Fn() -> I) -> f64 {
    let counts = KeyCounts::of(keys(), F32_SHIFT);
    match counts.middle_ranks() {
        None => f64::NAN,
        Some(ranks) => {
            let v = counts.at(keys(), &ranks);
            let (a, b) = (f64::from(f32_of_key(v[0])), f64::from(f32_of_key(v[1])));
            if counts.n.is_multiple_of(2) {
                (a + b) / 2.0
            } else {
                a
            }
        }
    }
}

#[cfg(test)]
/// `np.percentile(values, q)` with the default linear interpolation.
fn percentile_linear(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    let below = virtual_index.floor();
    let (lo, hi) = order_pair(values, (below as usize).min(n - 1), f64::total_cmp);
    lerp(lo, hi, virtual_index - below)
}

#[cfg(test)]
/// The two middle order statistics (equal when n is odd), as `np.median` averages
/// them; `None` when empty.
fn middle_pair<T: Copy>(
    values: &mut [T],
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Option<(T, T)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    if n % 2 == 1 {
        let (m, _) = order_pair(values, n / 2, cmp);
        Some((m, m))
    } else {
        Some(order_pair(values, n / 2 - 1, cmp))
    }
}

#[cfg(test)]
/// `np.median`: the mean of the two middle values when n is even (NaN when empty).
fn np_median(values: &mut [f64]) -> f64 {
    match middle_pair(values, f64::total_cmp) {
        Some((a, b)) if values.len().is_multiple_of(2) => (a + b) / 2.0,
        Some((a, _)) => a,
        None => f64::NAN,
    }
}

/// Neumaier-compensated sum, so results do not hang on summation order.
fn sum_exact(values: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for v in values {
        let t = s + v;
        if s.abs() >= v.abs() {
            c += (s - t) + v;
        } else {
            c += (v - t) + s;
        }
        s = t;
    }
    s + c
}

/// A harmonised voxel as MRIQC reads it back: single precision widened, infinity
/// as `nan_to_num` makes it.
fn widen(x: f32) -> f64 {
    if x.is_infinite() {
        f64::MAX
    } else {
        f64::from(x)
    }
}

/// One tissue's `summary_stats` entry.
#[derive(Debug, Clone, Copy)]
struct Summary {
    mean: f64,
    median: f64,
    p95: f64,
    p05: f64,
    k: f64,
    stdv: f64,
    mad: f64,
    n: f64,
}

/// `summary_stats` for one 0/1 mask: statsmodels' weighted statistics of the
/// harmonised data rounded to integers, with the weights 0 outside the mask; kurtosis
/// and MAD of the unrounded voxels. `inside` holds the mask's voxels, `whole` every
/// voxel of the image.
fn summary(inside: &mut [f32], whole: &[f32]) -> Summary {
    let n = inside.len();
    let w = n as f64;
    let rounded = |x: f32| widen(x).round_ties_even();
    let mean = sum_exact(inside.iter().map(|&x| rounded(x))) / w;
    let var = sum_exact(inside.iter().map(|&x| {
        let d = rounded(x) - mean;
        d * d
    })) / w;
    let stdv = var.sqrt();

    // DescrStatsW.quantile: weights summed over the distinct values of the whole
    // array (zero-weight values included), SAS definition with a 1e-10 tie window.
    let distinct = distinct_counts(inside.iter().map(|&x| rounded(x)), n);
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
            // The next distinct value of the whole array, which may lie outside the mask.
            let next = whole
                .iter()
                .map(|&x| rounded(x))
                .filter(|r| *r > value)
                .fold(f64::INFINITY, f64::min);
            if next.is_finite() {
                return (value + next) / 2.0;
            }
        }
        value
    };
    let (p05, med, p95) = (quantile(0.05), quantile(0.5), quantile(0.95));

    let k = kurtosis(inside);
    // statsmodels' mad: np.median(|x - centre| / c); dividing by c keeps the order.
    let deviations = || inside.iter().map(|&x| f64_key((widen(x) - med).abs()));
    let counts = KeyCounts::of(deviations(), F64_SHIFT);
    let mad = match counts.middle_ranks() {
        Some(ranks) => {
            let v = counts.at(deviations(), &ranks);
            let (a, b) = (f64_of_key(v[0]), f64_of_key(v[1]));
            if n.is_multiple_of(2) {
                (a / GAUSSIAN_3_4 + b / GAUSSIAN_3_4) / 2.0
            } else {
                a / GAUSSIAN_3_4
            }
        }
        None => f64::NAN,
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

/// Distinct values with their counts, ascending: a counting pass when the values are
/// integers in a modest range (always, for rounded harmonised data), else a sort.
fn distinct_counts(values: impl Iterator<Item = f64> + Clone, n: usize) -> Vec<(f64, f64)> {
    let (lo, hi) = values
        .clone()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    const RANGE: f64 = 16_777_216.0;
    if n > 0 && hi - lo <= RANGE && values.clone().all(|v| v.fract() == 0.0) {
        let mut counts = vec![0u32; (hi - lo) as usize + 1];
        for v in values {
            counts[(v - lo) as usize] += 1;
        }
        return counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(k, c)| (lo + k as f64, f64::from(*c)))
            .collect();
    }
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let mut distinct: Vec<(f64, f64)> = Vec::new();
    for v in sorted {
        match distinct.last_mut() {
            Some((last, count)) if *last == v => *count += 1.0,
            _ => distinct.push((v, 1.0)),
        }
    }
    distinct
}

/// `scipy.stats.kurtosis` (Fisher, biased) of harmonised voxels.
fn kurtosis(x: &[f32]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    let n = x.len() as f64;
    let mean = sum_exact(x.iter().map(|&v| widen(v))) / n;
    // scipy's _moment squares, then squares again.
    let (mut m2, mut m4) = (0.0f64, 0.0f64);
    let (mut c2, mut c4) = (0.0f64, 0.0f64);
    for &v in x {
        let d = widen(v) - mean;
        let s = d * d;
        // Neumaier steps, inlined for the two sums.
        let t = m2 + s;
        c2 += if m2.abs() >= s.abs() {
            (m2 - t) + s
        } else {
            (s - t) + m2
        };
        m2 = t;
        let q = s * s;
        let t = m4 + q;
        c4 += if m4.abs() >= q.abs() {
            (m4 - t) + q
        } else {
            (q - t) + m4
        };
        m4 = t;
    }
    kurtosis_of_moments(mean, (m2 + c2) / n, (m4 + c4) / n)
}

/// Fisher's kurtosis from the mean and the second and fourth central moments, NaN
/// when the spread is nil (as scipy).
fn kurtosis_of_moments(mean: f64, m2: f64, m4: f64) -> f64 {
    if m2 <= (f64::EPSILON * mean).powi(2) {
        return f64::NAN;
    }
    m4 / (m2 * m2) - 3.0
}

/// AFNI's classic FWHM estimate from first differences (`mri_estimate_FWHM_1dif`,
/// what MRIQC reads from `3dFWHMx -ShowMeClassicFWHM`), in mm along i, j, k.
pub fn fwhm_classic(image: &[f32], dims: [usize; 3], voxel: [f64; 3], mask: &[u8]) -> [f64; 3] {
    fwhm_of(&fwhm_sums(image, dims, mask), voxel)
}

/// What the FWHM estimate is made of: the sum and the sum of squares of the masked
/// voxels, and per axis those of the first differences between masked neighbours.
#[derive(Debug, Clone, Copy)]
struct FwhmSums {
    fsum: f64,
    fsq: f64,
    count: usize,
    sums: [f64; 3],
    squares: [f64; 3],
    counts: [usize; 3],
}

/// The sums, as AFNI adds them: in raster order, or in independent lanes where that
/// gives the same bits.
fn fwhm_sums(image: &[f32], dims: [usize; 3], mask: &[u8]) -> FwhmSums {
    fwhm::exact_sums(image, dims, mask)
        .unwrap_or_else(|| fwhm_sums_in_raster_order(image, dims, mask))
}

/// The sums, each in raster order as AFNI adds them.
fn fwhm_sums_in_raster_order(image: &[f32], dims: [usize; 3], mask: &[u8]) -> FwhmSums {
    // Branch-free: a voxel or a pair outside the mask adds +0.0, which leaves
    // each sum as it is, so the sums are those of the masked voxels in raster order.
    // Rows are walked from their first to their last masked voxel.
    let (mut fsum, mut fsq, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut sums = [0.0f64; 3];
    let mut squares = [0.0f64; 3];
    let mut counts = [0usize; 3];
    let nx = dims[0];
    // A pair counts when both voxels are masked.
    fwhm::each_row(image, dims, mask, |rows, range| {
        let (here, along_j, along_k) = (rows.here, rows.along_j, rows.along_k);
        for i in range {
            let (v, m) = (here.0[i], here.1[i] != 0);
            let arg = f64::from(v);
            let a = if m { arg } else { 0.0 };
            fsum += a;
            fsq += a * a;
            count += usize::from(m);
            let right = (i + 1).min(nx - 1);
            let neighbours = [
                (here.0[right], (i + 1 < nx) & (here.1[right] != 0)),
                (along_j.0[i], along_j.1[i] != 0),
                (along_k.0[i], along_k.1[i] != 0),
            ];
            for (axis, (w, masked)) in neighbours.into_iter().enumerate() {
                let pair = m & masked;
                let d = if pair { f64::from(w) - arg } else { 0.0 };
                sums[axis] += d;
                squares[axis] += d * d;
                counts[axis] += usize::from(pair);
            }
        }
    });
    FwhmSums {
        fsum,
        fsq,
        count,
        sums,
        squares,
        counts,
    }
}

/// The estimate from its sums.
fn fwhm_of(s: &FwhmSums, voxel: [f64; 3]) -> [f64; 3] {
    let FwhmSums {
        fsum,
        fsq,
        count,
        sums,
        squares,
        counts,
    } = *s;
    if count < 9 || fsq <= 0.0 {
        return [-1.0; 3];
    }
    let var = (fsq - (fsum * fsum) / count as f64) / (count as f64 - 1.0);
    if var <= 0.0 {
        return [-1.0; 3];
    }
    let mut out = [-1.0f64; 3];
    for axis in 0..3 {
        let c = counts[axis] as f64;
        let var_d = if counts[axis] < 6 {
            0.0
        } else {
            (squares[axis] - (sums[axis] * sums[axis]) / c) / (c - 1.0)
        };
        let arg = 1.0 - 0.5 * (var_d / var);
        // AFNI keeps the result in single precision.
        let dx = voxel[axis] as f32 as f64;
        out[axis] = if arg <= 0.0 || arg >= 1.0 {
            -1.0f32 as f64
        } else {
            (2.35482 * (-1.0 / (4.0 * arg.ln())).sqrt() * dx) as f32 as f64
        };
    }
    out
}

/// What the metrics are made of: the harmonisation, the four `summary_stats`, FBER's
/// median energies, EFC, the 99.95th percentile for WM2MAX and the QI1 counts.
struct Statistics {
    wm_median: f64,
    csf: Summary,
    gm: Summary,
    wm: Summary,
    bg: Summary,
    fg_mu: f64,
    bg_mu: f64,
    efc: f64,
    p9995: f64,
    air_n: f64,
    artefact_n: f64,
}

/// The ranks `np.percentile(q)` of `n` values interpolates between, and the weight.
fn percentile_ranks(n: usize, q: f64) -> ([usize; 2], f64) {
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    let below = virtual_index.floor();
    let rank = (below as usize).min(n - 1);
    ([rank, (rank + 1).min(n - 1)], virtual_index - below)
}

/// The statistics voxel by voxel, for any finite image.
fn exact_statistics(image: &[f32], core: &[u8], masks: &Masks) -> Result<Statistics, IqmError> {
    let wm_keys = || {
        image
            .iter()
            .zip(core)
            .filter(|(_, m)| **m != 0)
            .map(|(v, _)| f32_key(*v))
    };
    if wm_keys().next().is_none() {
        return Err(IqmError::NoTissue("white matter"));
    }
    let wm_median = median_of_f32_keys(wm_keys);
    let factor = 1000.0 / wm_median;
    // MRIQC writes the harmonised image as single precision and reads it back, NaN
    // and negatives set to 0.
    let data: Vec<f32> = image
        .iter()
        .map(|&v| {
            let x = (f64::from(v) * factor) as f32;
            if x.is_nan() || x < 0.0 { 0.0 } else { x }
        })
        .collect();

    // Voxels of each class: bg (air), csf, gm, wm.
    let mut classes: [Vec<f32>; 4] = Default::default();
    for ((&x, &t), &a) in data.iter().zip(&masks.tissue).zip(&masks.air) {
        if (1..=3).contains(&t) {
            classes[t as usize].push(x);
        }
        if a != 0 {
            classes[0].push(x);
        }
    }
    let [bg_values, csf_values, gm_values, wm_values] = &mut classes;
    let csf = summary(csf_values, &data);
    let gm = summary(gm_values, &data);
    let wm = summary(wm_values, &data);
    let bg = summary(bg_values, &data);
    drop(classes);

    // FBER: median energy in the head over median energy in the air, rotation
    // padding excluded. Voxels are non-negative, so squaring keeps their order.
    fn median_energy<I: Iterator<Item = u64>>(keys: impl Fn() -> I) -> f64 {
        let counts = KeyCounts::of(keys(), F32_SHIFT);
        match counts.middle_ranks() {
            Some(ranks) => {
                let v = counts.at(keys(), &ranks);
                let (a, b) = (widen(f32_of_key(v[0])), widen(f32_of_key(v[1])));
                if counts.n.is_multiple_of(2) {
                    (a * a + b * b) / 2.0
                } else {
                    a * a
                }
            }
            None => f64::NAN,
        }
    }
    let fg_mu = median_energy(|| {
        data.iter()
            .zip(&masks.head)
            .filter(|(_, h)| **h != 0)
            .map(|(x, _)| f32_key(*x))
    });
    let bg_mu = median_energy(|| {
        data.iter()
            .zip(&masks.head)
            .zip(&masks.rotation)
            .filter(|((_, h), r)| **h == 0 && **r == 0)
            .map(|((x, _), _)| f32_key(*x))
    });

    // EFC over the voxels outside the rotation mask.
    let frame = || {
        data.iter()
            .zip(&masks.rotation)
            .filter(|(_, r)| **r == 0)
            .map(|(x, _)| widen(*x))
    };
    let n_vox = frame().count() as f64;
    let efc_max = 1.0 * n_vox * (1.0 / n_vox.sqrt()) * (1.0 / n_vox.sqrt()).ln();
    let b_max = sum_exact(frame().map(|x| x * x)).sqrt();
    let entropy = sum_exact(frame().map(|x| (x / b_max) * ((x + 1e-16) / b_max).ln()));
    let efc = round4((1.0 / efc_max) * entropy);

    // WM2MAX: over the 99.95th percentile of the whole image.
    let all_keys = || data.iter().map(|x| f32_key(*x));
    let all_counts = KeyCounts::of(all_keys(), F32_SHIFT);
    let (ranks, weight) = all_counts.percentile_ranks(99.95);
    let v = all_counts.at(all_keys(), &ranks);
    let (lo, hi) = (f32_of_key(v[0]), f32_of_key(v[1]));
    let p9995 = lerp(widen(lo), widen(hi), weight);

    Ok(Statistics {
        wm_median,
        csf,
        gm,
        wm,
        bg,
        fg_mu,
        bg_mu,
        efc,
        p9995,
        air_n: masks.air.iter().filter(|&&a| a != 0).count() as f64,
        artefact_n: masks.artefact.iter().filter(|&&a| a != 0).count() as f64,
    })
}

/// Every metric from the image (finite values) and its masks.
pub fn measure(image: &[f32], voxel: [f64; 3], masks: &Masks) -> Result<Iqms, IqmError> {
    measure_with(image, voxel, masks, true)
}

/// [`measure`], from histograms when `binned` and the image allows it.
fn measure_with(
    image: &[f32],
    voxel: [f64; 3],
    masks: &Masks,
    binned: bool,
) -> Result<Iqms, IqmError> {
    let core = white_matter_core(&masks.tissue, Grid::new(masks.dims));
    let stats = match binned
        .then(|| binned::statistics(image, &core, masks))
        .flatten()
    {
        Some(stats) => stats?,
        None => exact_statistics(image, &core, masks)?,
    };
    // The brain region is where a tissue label is set.
    let fwhm_mm = fwhm_classic(image, masks.dims, voxel, &masks.tissue);
    let bias_keys = || {
        masks
            .bias
            .iter()
            .zip(&masks.tissue)
            .filter(|(_, t)| **t != 0)
            .map(|(b, _)| f32_key(*b))
    };
    Ok(metrics_of(stats, masks.dims, voxel, fwhm_mm, bias_keys))
}

/// Where the white matter's median is taken (MRIQC harmonises the image so that it is
/// 1000): the white matter eroded by the 18-neighbourhood, or all of it when the
/// erosion leaves nothing.
fn white_matter_core(tissue: &[u8], grid: Grid) -> Vec<u8> {
    let eroded = morphology::erode_label_18(tissue, grid, WM);
    if eroded.contains(&1) {
        eroded
    } else {
        tissue.iter().map(|&t| u8::from(t == WM)).collect()
    }
}

/// Every metric from the masks' statistics, the smoothness estimate and the bias
/// field's values at the tissue voxels (as keys, in any order).
fn metrics_of<I: Iterator<Item = u64>>(
    stats: Statistics,
    dims: [usize; 3],
    voxel: [f64; 3],
    fwhm_mm: [f64; 3],
    bias_keys: impl Fn() -> I,
) -> Iqms {
    let Statistics {
        wm_median,
        csf,
        gm,
        wm: wms,
        bg,
        fg_mu,
        bg_mu,
        efc,
        p9995,
        air_n,
        artefact_n: art_n,
    } = stats;

    let snr = |s: &Summary| s.median / (s.stdv * (s.n / (s.n - 1.0)).sqrt());
    let snrs = [snr(&csf), snr(&wms), snr(&gm)];
    let snr_total = (snrs[0] + snrs[1] + snrs[2]) / 3.0;
    let snrd = |s: &Summary| {
        if bg.mad > 1.0 {
            DIETRICH_FACTOR * s.median / bg.mad
        } else if bg.stdv > 1e-3 {
            DIETRICH_FACTOR * s.median / bg.stdv
        } else {
            -1.0
        }
    };
    let snrds = [snrd(&csf), snrd(&wms), snrd(&gm)];
    let snrd_total = (snrds[0] + snrds[1] + snrds[2]) / 3.0;
    let cnr = (wms.median - gm.median).abs()
        / (bg.stdv.powi(2) + gm.stdv.powi(2) + wms.stdv.powi(2)).sqrt();
    let cjv = (wms.mad + gm.mad) / (wms.median - gm.median).abs();
    let fber = if bg_mu < 1.0e-3 {
        -1.0
    } else {
        round4(fg_mu / bg_mu)
    };
    let wm2max = wms.median / p9995;
    let qi_1 = if air_n < 1.0 {
        -1.0
    } else {
        art_n / (air_n + art_n)
    };

    let zooms = voxel.map(|v| v as f32 as f64);
    let fwhm = [0, 1, 2].map(|a| fwhm_mm[a] / zooms[a]);
    let fwhm_avg = (fwhm[0] + fwhm[1] + fwhm[2]) / 3.0;

    let total = csf.n + gm.n + wms.n;
    let icvs = [csf.n / total, gm.n / total, wms.n / total];

    let bias_counts = KeyCounts::of(bias_keys(), F32_SHIFT);
    let (inu_range, inu_med) = match bias_counts.middle_ranks() {
        None => (f64::NAN, f64::NAN),
        Some(middle) => {
            let (r95, w95) = bias_counts.percentile_ranks(95.0);
            let (r05, w05) = bias_counts.percentile_ranks(5.0);
            let ranks = [r95[0], r95[1], r05[0], r05[1], middle[0], middle[1]];
            let v: Vec<f64> = bias_counts
                .at(bias_keys(), &ranks)
                .into_iter()
                .map(|k| f64::from(f32_of_key(k)))
                .collect();
            let p95 = lerp(v[0], v[1], w95);
            let p05 = lerp(v[2], v[3], w05);
            let median = if bias_counts.n.is_multiple_of(2) {
                (v[4] + v[5]) / 2.0
            } else {
                v[4]
            };
            ((p95 - p05).abs(), median)
        }
    };

    let mut named: Vec<(&str, f64)> = vec![
        ("cjv", cjv),
        ("cnr", cnr),
        ("efc", efc),
        ("fber", fber),
        ("fwhm_avg", fwhm_avg),
        ("fwhm_x", fwhm[0]),
        ("fwhm_y", fwhm[1]),
        ("fwhm_z", fwhm[2]),
        ("icvs_csf", icvs[0]),
        ("icvs_gm", icvs[1]),
        ("icvs_wm", icvs[2]),
        ("inu_med", inu_med),
        ("inu_range", inu_range),
        ("qi_1", qi_1),
        ("size_x", dims[0] as f64),
        ("size_y", dims[1] as f64),
        ("size_z", dims[2] as f64),
        ("snr_csf", snrs[0]),
        ("snr_gm", snrs[2]),
        ("snr_total", snr_total),
        ("snr_wm", snrs[1]),
        ("snrd_csf", snrds[0]),
        ("snrd_gm", snrds[2]),
        ("snrd_total", snrd_total),
        ("snrd_wm", snrds[1]),
        ("spacing_x", zooms[0]),
        ("spacing_y", zooms[1]),
        ("spacing_z", zooms[2]),
        ("wm2max", wm2max),
    ];
    for (name, s) in [("bg", &bg), ("csf", &csf), ("gm", &gm), ("wm", &wms)] {
        for (stat, v) in [
            ("k", s.k),
            ("mad", s.mad),
            ("mean", s.mean),
            ("median", s.median),
            ("n", s.n),
            ("p05", s.p05),
            ("p95", s.p95),
            ("stdv", s.stdv),
        ] {
            let key: &'static str = COLUMNS
                .iter()
                .copied()
                .find(|c| *c == format!("summary_{name}_{stat}"))
                .unwrap_or("");
            named.push((key, v));
        }
    }
    let values = COLUMNS
        .iter()
        .map(|c| {
            named
                .iter()
                .find(|(n, _)| n == c)
                .map_or(f64::NAN, |(_, v)| *v)
        })
        .collect();
    Iqms { values, wm_median }
}

// ---------------------------------------------------------------------------------
// Phantoms: synthetic heads built with integer and correctly rounded arithmetic only,
// so that every platform makes the same voxels (the reference values in
// tests/data/iqm_reference.json were computed on them).

/// The synthetic heads the reference test measures.
pub const PHANTOMS: &[&str] = &[
    "t1_clean",
    "t1_noisy",
    "t1_bias",
    "t1_ghost",
    "t1_zero_padded",
    "flair",
    "t2_anisotropic",
];

/// A synthetic head: scalp, skull, CSF, cortex, white matter and ventricles in
/// ellipsoidal shells, with Rician noise and one artefact per name.
pub fn phantom(name: &str) -> Option<(Volume, Contrast)> {
    let (dims, voxel, contrast) = match name {
        "t2_anisotropic" => ([72usize, 84, 28], [1.5f64, 1.5, 4.0], Contrast::T2w),
        "flair" => ([56, 68, 56], [2.0, 2.0, 2.0], Contrast::Flair),
        _ if PHANTOMS.contains(&name) => ([56, 68, 56], [2.0, 2.0, 2.0], Contrast::T1w),
        _ => return None,
    };
    // Signal of csf, gm, wm, skull, scalp.
    let levels: [f64; 5] = match contrast {
        Contrast::T1w => [180.0, 600.0, 1000.0, 40.0, 800.0],
        Contrast::Flair => [70.0, 780.0, 560.0, 30.0, 600.0],
        Contrast::T2w => [1000.0, 580.0, 420.0, 30.0, 500.0],
    };
    let sigma: u64 = match name {
        "t1_noisy" => 90,
        "t1_clean" => 8,
        _ => 20,
    };
    let grid = Grid::new(dims);
    // Semi-axes in mm, so that the anisotropic grid holds the same head.
    let axes = [52.0f64, 64.0, 52.0];
    let centre = [0, 1, 2].map(|a| (dims[a] as f64 - 1.0) / 2.0);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ name.len() as u64;
    let mut uniform = move || {
        // xorshift64*: integers only.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40
    };
    // A sum of four uniform integers in [-sigma*sqrt(3), sigma*sqrt(3)] is close to Gaussian.
    let span = sigma * 1732 / 1000;
    let mut gaussian = move || -> f64 {
        let mut s: i64 = 0;
        for _ in 0..4 {
            s += (uniform() % (2 * span + 1)) as i64 - span as i64;
        }
        s as f64 / 2.0
    };
    let mut signal = vec![0f64; grid.len()];
    for (idx, value) in signal.iter_mut().enumerate() {
        let (i, j, k) = grid.ijk(idx);
        let p = [i, j, k];
        let mut r2 = 0.0;
        for a in 0..3 {
            let d = (p[a] as f64 - centre[a]) * voxel[a] / axes[a];
            r2 += d * d;
        }
        let r = r2.sqrt();
        let texture = ((i * 7 + j * 13 + k * 5) % 11) as f64 - 5.0;
        *value = if r < 0.18 {
            levels[0]
        } else if r < 0.55 {
            levels[2] + texture * 4.0
        } else if r < 0.68 {
            levels[1] + texture * 6.0
        } else if r < 0.74 {
            levels[0]
        } else if r < 0.82 {
            levels[3]
        } else if r < 0.92 {
            levels[4] + texture * 5.0
        } else {
            0.0
        };
        if name == "t1_bias" {
            let x = (i as f64 - centre[0]) / dims[0] as f64;
            let y = (j as f64 - centre[1]) / dims[1] as f64;
            *value *= 1.0 + 0.6 * x + 0.8 * y * y;
        }
    }
    if name == "t1_ghost" {
        // A copy of the head shifted by half the field of view along j, at 25%.
        let shifted: Vec<f64> = (0..grid.len())
            .map(|idx| {
                let (i, j, k) = grid.ijk(idx);
                let js = (j + dims[1] / 2) % dims[1];
                signal[i + dims[0] * (js + dims[1] * k)]
            })
            .collect();
        for (v, g) in signal.iter_mut().zip(&shifted) {
            *v += 0.25 * g;
        }
    }
    let mut data: Vec<f32> = signal
        .iter()
        .map(|&s| {
            let (re, im) = (s + gaussian(), gaussian());
            (re * re + im * im).sqrt().round() as f32
        })
        .collect();
    if name == "t1_zero_padded" {
        // A corner emptied to exact zeros, as a rotation or defacing leaves.
        for (idx, v) in data.iter_mut().enumerate() {
            let (i, j, k) = grid.ijk(idx);
            if i + j + k < dims[0] / 2 {
                *v = 0.0;
            }
        }
    }
    let mut affine = [[0.0f64; 4]; 4];
    for a in 0..3 {
        affine[a][a] = voxel[a];
        affine[a][3] = -centre[a] * voxel[a];
    }
    affine[3][3] = 1.0;
    Some((
        Volume {
            dims,
            data,
            affine,
            voxel_size: voxel,
        },
        contrast,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voxel_sizes_that_are_no_millimetres_are_named() {
        let (mut volume, contrast) = phantom("t1_clean").expect("phantom");
        for bad in [0.0, -0.0, f64::NAN, f64::INFINITY] {
            volume.voxel_size = [1.0, bad, 1.0];
            match compute(&volume, contrast) {
                Err(IqmError::VoxelSize(v)) => assert_eq!(v[0], 1.0),
                other => panic!("{bad}: {other:?}"),
            }
        }
        volume.voxel_size = [1.0; 3];
        assert!(compute(&volume, contrast).is_ok());
    }
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn city_block_distances_equal_the_nearest_source_by_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (dims, share) in [
            ([7, 5, 6], 0.05),
            ([1, 9, 4], 0.2),
            ([12, 1, 1], 0.1),
            ([6, 8, 5], 0.0),
        ] {
            let grid = Grid::new(dims);
            let voxel = [1.0833, -2.5, 0.7];
            let source: Vec<u8> = (0..grid.len())
                .map(|_| u8::from(rng.random_bool(share)))
                .collect();
            let d = distance_to(&source, grid, voxel);
            let at = |idx: usize| [idx % grid.nx, idx / grid.nx % grid.ny, idx / grid.sxy()];
            for (idx, &got) in d.iter().enumerate() {
                let p = at(idx);
                let want = (0..grid.len())
                    .filter(|&s| source[s] != 0)
                    .map(|s| {
                        let q = at(s);
                        (0..3)
                            .map(|a| voxel[a].abs() * p[a].abs_diff(q[a]) as f64)
                            .sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min);
                if want.is_infinite() {
                    assert!(got.is_infinite() && got > 0.0, "{dims:?} {idx}: {got}");
                } else {
                    assert!(
                        (f64::from(got) - want).abs() < 1e-4,
                        "{dims:?} {idx}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounds_like_python() {
        assert_eq!(round4(0.03125), 0.0312);
        assert_eq!(round4(0.12345678), 0.1235);
        // The double nearest -2.00005 lies just inside it, so Python's round gives -2.0.
        assert_eq!(round4(-2.00005), -2.0);
        assert!(round4(f64::NAN).is_nan());
    }

    #[test]
    fn medians_and_percentiles_follow_numpy() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(np_median(&mut v), 2.5);
        let mut w: Vec<f64> = (0..11).map(f64::from).collect();
        assert!((percentile_linear(&mut w, 95.0) - 9.5).abs() < 1e-12);
        assert!(np_median(&mut []).is_nan());
    }

    #[test]
    fn radix_selection_equals_sorting() {
        // Negative zero, infinities and many ties, in sizes odd and even.
        let mut state = 7u64;
        for n in [1usize, 2, 3, 10, 1001, 300_000] {
            let values: Vec<f32> = (0..n)
                .map(|i| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    match i % 97 {
                        0 => -0.0,
                        1 => f32::INFINITY,
                        2 => -3.5,
                        _ => ((state >> 40) % 5000) as f32 * 0.37,
                    }
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f32::total_cmp);
            let keys = || values.iter().map(|v| f32_key(*v));
            let counts = KeyCounts::of(keys(), F32_SHIFT);
            let ranks: Vec<usize> = [0, n / 3, n / 2, n - 1].to_vec();
            let got: Vec<f32> = counts
                .at(keys(), &ranks)
                .into_iter()
                .map(f32_of_key)
                .collect();
            for (r, g) in ranks.iter().zip(&got) {
                assert_eq!(g.to_bits(), sorted[*r].to_bits(), "rank {r} of {n}");
            }
            let mut wide: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
            assert_eq!(
                median_of_f32_keys(keys).to_bits(),
                np_median(&mut wide).to_bits()
            );
            for q in [5.0, 95.0, 99.95] {
                let (r, w) = counts.percentile_ranks(q);
                let v = counts.at(keys(), &r);
                let p = lerp(f64::from(f32_of_key(v[0])), f64::from(f32_of_key(v[1])), w);
                let want = percentile_linear(&mut wide, q);
                assert!(
                    p == want || (p.is_nan() && want.is_nan()),
                    "{q} of {n}: {p} {want}"
                );
            }
        }
        for x in [-2.5f64, -0.0, 0.0, 1e-300, 7.25, f64::INFINITY] {
            assert_eq!(f64_of_key(f64_key(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn kurtosis_of_two_points_is_minus_two() {
        assert!((kurtosis(&[0.0, 1.0, 0.0, 1.0]) + 2.0).abs() < 1e-12);
    }

    #[test]
    fn contrast_orders_tissues() {
        assert_eq!(Contrast::from_suffix(Some("FLAIR")), Contrast::Flair);
        assert_eq!(Contrast::from_suffix(Some("T2w")), Contrast::T2w);
        assert_eq!(Contrast::from_suffix(None), Contrast::T1w);
        assert_eq!(Contrast::Flair.labels_by_brightness(), [CSF, WM, GM]);
    }

    #[test]
    fn fill_holes_closes_a_hollow_cube() {
        let grid = Grid::new([5, 5, 5]);
        let m: Vec<u8> = (0..125)
            .map(|idx| {
                let (i, j, k) = grid.ijk(idx);
                let shell = [i, j, k].iter().all(|&c| (1..=3).contains(&c))
                    && [i, j, k].iter().any(|&c| c == 1 || c == 3);
                u8::from(shell)
            })
            .collect();
        let filled = fill_holes(&m, grid);
        assert_eq!(filled[2 + 5 * (2 + 5 * 2)], 1);
        assert_eq!(filled.iter().filter(|&&v| v != 0).count(), 27);
    }

    /// Random blobs: a smoothed noise field thresholded, with a zero-padded corner.
    fn blobs(dims: [usize; 3], seed: u64, level: u64) -> Vec<u8> {
        let grid = Grid::new(dims);
        let mut state = seed;
        let noise: Vec<u64> = (0..grid.len())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) % 100
            })
            .collect();
        (0..grid.len())
            .map(|idx| {
                let (i, j, k) = grid.ijk(idx);
                let near = [idx, idx.saturating_sub(1), idx.saturating_sub(dims[0])];
                let s: u64 = near.iter().map(|&n| noise[n]).sum();
                u8::from(s > level && (i + j + k) % 17 != 3)
            })
            .collect()
    }

    #[test]
    fn single_precision_cuts_compare_as_the_double_precision_ones() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..2000 {
            let cut: f64 = rng.random_range(-5000.0..5000.0) * rng.random_range(0.0..1.0);
            let at = f32_at_or_above(cut);
            // Values on and around the cut, in single precision.
            let near = cut as f32;
            for v in [
                near.next_down(),
                near,
                near.next_up(),
                at.next_down(),
                at,
                at.next_up(),
            ] {
                assert_eq!(v < at, f64::from(v) < cut, "cut {cut}, value {v}");
            }
        }
        for cut in [0.0, -0.0, 1.0, 0.1, 1e-40, f64::INFINITY, f64::NEG_INFINITY] {
            let at = f32_at_or_above(cut);
            for v in [-1.0f32, 0.0, 1e-45, 0.1, 1.0, f32::MAX] {
                assert_eq!(v < at, f64::from(v) < cut, "cut {cut}, value {v}");
            }
        }
    }

    #[test]
    fn a_ratio_threshold_compares_as_the_division() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let bounds = [ARTEFACT_Z, 1.0, 0.1, 3.7];
        for round in 0..3000 {
            let divisor: f64 = match round % 4 {
                0 => rng.random_range(1e-3..1e4),
                1 => rng.random_range(0.0..1.0) * 1e-30,
                2 => f64::from(rng.random_range(1u32..5000)) / 8.0,
                _ => rng.random_range(1e30..1e36),
            };
            if divisor <= 0.0 {
                continue;
            }
            let bound = bounds[round % bounds.len()];
            let t = f32_above_ratio(divisor, bound);
            let near = (bound * divisor) as f32;
            let random: f32 = rng.random_range(-1e4..1e6);
            for v in [
                t.next_down(),
                t,
                t.next_up(),
                near.next_down(),
                near,
                near.next_up(),
                random,
                0.0,
                -1.0,
                f32::MAX,
            ] {
                let divided = f64::from(v) / divisor > bound;
                assert_eq!(
                    v >= t,
                    divided,
                    "divisor {divisor}, bound {bound}, value {v}"
                );
            }
        }
    }

    #[test]
    fn branch_free_fwhm_equals_the_voxel_by_voxel_sums() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut estimated = 0;
        for dims in [
            [9usize, 7, 5],
            [23, 17, 12],
            [1, 6, 4],
            [30, 2, 9],
            [6, 5, 1],
        ] {
            let n = dims[0] * dims[1] * dims[2];
            for level in [90, 150, 200] {
                let mask = blobs(dims, 7, level);
                for integers in [true, false] {
                    let image: Vec<f32> = (0..n)
                        .map(|_| {
                            let v = rng.random_range(-300.0f32..3000.0);
                            if integers { v.round() } else { v / 7.0 }
                        })
                        .collect();
                    let bits = |s: &FwhmSums| {
                        let mut b = vec![s.fsum.to_bits(), s.fsq.to_bits(), s.count as u64];
                        for axis in 0..3 {
                            b.push(s.sums[axis].to_bits());
                            b.push(s.squares[axis].to_bits());
                            b.push(s.counts[axis] as u64);
                        }
                        b
                    };
                    let got = fwhm_sums(&image, dims, &mask);
                    let want = reference::fwhm_sums(&image, dims, &mask);
                    assert_eq!(bits(&got), bits(&want), "{dims:?} {level}");
                    let voxel = [1.0833, 0.7, 2.5];
                    estimated += usize::from(fwhm_of(&got, voxel).iter().any(|&f| f > 0.0));
                }
            }
        }
        assert!(estimated > 10, "{estimated} estimates");
    }

    #[test]
    fn row_distances_equal_the_two_passes_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        for nx in [1usize, 2, 3, 7, 64, 193] {
            for share in [0.0, 0.01, 0.1, 0.5, 1.0] {
                for step in [1.0f32, 0.7, 1.0833, 2.5, 1e-3, 3.3e-2] {
                    let rows = 9;
                    let d: Vec<f32> = (0..nx * rows)
                        .map(|_| {
                            if rng.random_bool(share) {
                                0.0
                            } else {
                                f32::INFINITY
                            }
                        })
                        .collect();
                    let (mut got, mut want) = (d.clone(), d);
                    along_rows(&mut got, nx, step);
                    reference::along_rows(&mut want, nx, step);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{nx} {share} {step}");
                }
            }
        }
    }

    #[test]
    fn block_means_by_rows_equal_the_voxel_by_voxel_sums() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for dims in [[9usize, 7, 5], [8, 6, 4], [1, 3, 2], [5, 1, 1], [2, 2, 3]] {
            let n = dims[0] * dims[1] * dims[2];
            let image: Vec<f32> = (0..n)
                .map(|_| rng.random_range(-1.0e4f32..1.0e4) / 7.0)
                .collect();
            let cdims = dims.map(|d| d.div_ceil(2));
            let mut sums = vec![0f64; cdims[0] * cdims[1] * cdims[2]];
            let mut counts = vec![0u8; sums.len()];
            let mut idx = 0;
            for k in 0..dims[2] {
                for j in 0..dims[1] {
                    let row = cdims[0] * (j / 2 + cdims[1] * (k / 2));
                    for i in 0..dims[0] {
                        sums[row + i / 2] += f64::from(image[idx]);
                        counts[row + i / 2] += 1;
                        idx += 1;
                    }
                }
            }
            let want: Vec<u32> = sums
                .iter()
                .zip(&counts)
                .map(|(s, &c)| ((s / f64::from(c.max(1))) as f32).to_bits())
                .collect();
            let (got, got_dims) = decimate(&image, dims);
            assert_eq!(got_dims, cdims);
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{dims:?}");
        }
    }

    #[test]
    fn row_and_flood_morphology_equal_the_voxel_by_voxel_forms() {
        let mut kept_by_label_erosion = 0;
        for (dims, seed) in [
            ([9usize, 7, 5], 1u64),
            ([23, 17, 12], 2),
            ([1, 6, 4], 3),
            ([30, 2, 9], 4),
        ] {
            let grid = Grid::new(dims);
            for level in [90, 150, 200] {
                let m = blobs(dims, seed, level);
                for eighteen in [false, true] {
                    for outside in [0u8, 1] {
                        assert_eq!(
                            erode(&m, grid, eighteen, outside),
                            reference::erode(&m, grid, eighteen, outside),
                            "erode {dims:?} {level} {eighteen} {outside}"
                        );
                        assert_eq!(
                            dilate(&m, grid, eighteen, outside),
                            reference::dilate(&m, grid, eighteen, outside),
                            "dilate {dims:?} {level} {eighteen} {outside}"
                        );
                    }
                }
                // Two labels, each on a solid part of the blobs: erosion of one label.
                let half = m.len() / 2;
                let labels: Vec<u8> = m
                    .iter()
                    .enumerate()
                    .map(|(idx, &b)| match (b, idx < half) {
                        (0, _) => 0,
                        (_, true) => 3,
                        (_, false) => 1,
                    })
                    .collect();
                for label in [1u8, 3] {
                    let one: Vec<u8> = labels.iter().map(|&t| u8::from(t == label)).collect();
                    let eroded = morphology::erode_label_18(&labels, grid, label);
                    assert_eq!(
                        eroded,
                        reference::erode(&one, grid, true, 0),
                        "erode label {label} {dims:?} {level}"
                    );
                    kept_by_label_erosion += eroded.iter().map(|&e| usize::from(e)).sum::<usize>();
                }
                assert_eq!(fill_holes(&m, grid), reference::fill_holes(&m, grid));
                assert_eq!(
                    fill_holes_slices(&m, grid),
                    reference::fill_holes_slices(&m, grid)
                );
                for keep in [1, 2] {
                    let mut want = vec![0u8; m.len()];
                    for piece in reference::components(&m, grid).iter().take(keep) {
                        for &v in piece {
                            want[v] = 1;
                        }
                    }
                    assert_eq!(largest_pieces(&m, grid, keep), want, "{dims:?} {level}");
                }
            }
        }
        assert!(
            kept_by_label_erosion > 100,
            "the blobs survive erosion somewhere"
        );
    }

    #[test]
    fn histogram_statistics_equal_the_voxel_by_voxel_ones() {
        for name in PHANTOMS {
            let (volume, contrast) = phantom(name).expect("phantom");
            // As stored, and as integers stored with a scaling slope and intercept
            // (binned through the table of their values).
            let scaled: Vec<f32> = volume
                .data
                .iter()
                .map(|&v| (f64::from(v) * 0.731_f64 + 12.5) as f32)
                .collect();
            assert!(
                binned::value_table(&scaled).is_some(),
                "{name}: a table of values"
            );
            for (data, how) in [(&volume.data, "stored"), (&scaled, "scaled")] {
                let m = masks(data, volume.dims, volume.voxel_size, contrast).expect("masks");
                let binned = measure_with(data, volume.voxel_size, &m, true).expect("binned");
                let exact = measure_with(data, volume.voxel_size, &m, false).expect("exact");
                assert_eq!(binned.wm_median, exact.wm_median, "{name} {how}");
                for ((column, b), e) in COLUMNS.iter().zip(&binned.values).zip(&exact.values) {
                    let close = b == e
                        || (b.is_nan() && e.is_nan())
                        || (b - e).abs() <= 1e-12 * b.abs().max(e.abs());
                    assert!(close, "{name} {how} {column}: histograms {b}, voxels {e}");
                }
            }
        }
    }

    #[test]
    fn a_table_of_values_is_ascending_and_refuses_too_many_or_non_finite() {
        let image = [3.5f32, -0.25, 3.5, 3.5, 1e-3, -0.25, 7.0];
        let (values, index) = binned::value_table(&image).expect("table");
        assert_eq!(values, [-0.25, 1e-3, 3.5, 7.0]);
        let back: Vec<f32> = index.iter().map(|&b| values[usize::from(b)]).collect();
        assert_eq!(back, image);
        // Descending, so that the table's numbering must reorder them.
        let many: Vec<f32> = (0..70_000).rev().map(|i| i as f32 * 0.5).collect();
        assert!(binned::value_table(&many).is_none());
        let most = &many[many.len() - 65_536..];
        let (values, index) = binned::value_table(most).expect("65,536 values");
        assert_eq!(values.len(), 65_536);
        assert!(values.windows(2).all(|w| w[0] < w[1]));
        assert!(
            index
                .iter()
                .zip(most)
                .all(|(&b, &v)| values[usize::from(b)] == v)
        );
        assert!(binned::value_table(&[1.0, f32::NAN]).is_none());
        assert!(binned::value_table(&[1.0, f32::INFINITY]).is_none());
        // The NaN whose bits mark an empty slot, first or later.
        let marker = f32::from_bits(u32::MAX);
        assert!(binned::value_table(&[marker, 1.5, 2.5]).is_none());
        assert!(binned::value_table(&[marker]).is_none());
        assert!(binned::value_table(&[1.5, marker, 2.5]).is_none());
        assert!(binned::value_table(&[]).is_none());
    }

    #[test]
    fn stepped_bias_field_equals_the_direct_one() {
        let grid = Grid::new([37, 29, 11]);
        let tissue: Vec<u8> = (0..grid.len()).map(|i| u8::from(i % 7 != 0)).collect();
        let fit = BiasFit {
            coef: [0.1, -0.4, 0.3, 0.2, 0.5, -0.6, 0.25, 0.15, -0.35, 0.05],
            mean_log: 0.07,
            dims: [37, 29, 11],
        };
        let stepped = eval_bias(Some(fit), grid, &tissue);
        let direct = reference::eval_bias(Some(fit), grid, &tissue);
        for (s, d) in stepped.iter().zip(&direct) {
            assert!((s - d).abs() <= 2.0 * f32::EPSILON * d.abs(), "{s} {d}");
        }
    }

    #[test]
    fn empty_image_is_an_error() {
        let image = vec![0.0f32; 16 * 16 * 16];
        let err = masks(&image, [16, 16, 16], [1.0; 3], Contrast::T1w);
        assert_eq!(err.err(), Some(IqmError::NoSignal));
    }
}
