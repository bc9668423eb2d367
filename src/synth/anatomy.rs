//! Canonical head anatomy (MNI template tissue maps or a procedural phantom) and per-subject variation.

use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::SynthError;
use crate::imaging::load_volume;

pub const TEMPLATE_T1: &str = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz";
pub const TEMPLATE_GM: &str = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz";
pub const TEMPLATE_WM: &str = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz";

/// Centre of the lateral ventricles in MNI millimetres.
const VENTRICLE_CENTRE: [f64; 3] = [0.0, -12.0, 16.0];

/// Where the canonical anatomy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnatomySource {
    MniTemplate,
    Phantom,
}

/// Tissue content at one canonical point.
#[derive(Clone, Copy, Debug, Default)]
pub struct TissueSample {
    pub gm: f32,
    pub wm: f32,
    pub csf: f32,
    /// T1 intensity of the template normalised so that white matter is about 1.
    pub t1: f32,
    /// Distance in mm outside the brain (0 inside).
    pub outside_mm: f32,
}

/// Tissue maps on a regular RAS-aligned canonical grid (MNI millimetres).
pub struct TissueModel {
    pub source: AnatomySource,
    pub dims: [usize; 3],
    pub spacing: f64,
    /// World position of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// gm, wm, csf, t1, outside distance per voxel, i fastest.
    channels: Vec<[f32; 5]>,
    /// Canonical positions deep in white matter, where lesions may be placed.
    pub lesion_sites: Vec<[f64; 3]>,
}

impl TissueModel {
    /// Loads the MNI ICBM152 2009 maps from `dir`, box-averaged to `spacing` mm (integer factor of 1 mm).
    pub fn from_template(dir: &Path, spacing: f64) -> Result<Self, SynthError> {
        let load = |name: &str| {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(SynthError::Template(format!(
                    "{}: file not found",
                    path.display()
                )));
            }
            load_volume(&path).map_err(|e| SynthError::Template(e.to_string()))
        };
        let t1 = load(TEMPLATE_T1)?;
        let gm = load(TEMPLATE_GM)?;
        let wm = load(TEMPLATE_WM)?;
        if gm.dims != t1.dims || wm.dims != t1.dims {
            return Err(SynthError::Template(format!(
                "{}: tissue maps {}/{} do not match the T1 grid {}",
                dir.display(),
                crate::display::shape(&gm.dims),
                crate::display::shape(&wm.dims),
                crate::display::shape(&t1.dims)
            )));
        }
        let a = t1.affine;
        let axis_aligned = (0..3).all(|r| (0..3).all(|c| r == c || a[r][c].abs() < 1e-6))
            && (0..3).all(|d| (a[d][d] - 1.0).abs() < 1e-3);
        if !axis_aligned {
            return Err(SynthError::Template(format!(
                "{}: expected a 1 mm RAS-aligned grid, found affine {}",
                dir.join(TEMPLATE_T1).display(),
                crate::display::matrix(&a)
            )));
        }
        let factor = spacing.round().max(1.0) as usize;
        let src = t1.dims;
        let dims = [0, 1, 2].map(|d| src[d] / factor);
        let mut channels = vec![[0f32; 5]; dims[0] * dims[1] * dims[2]];
        let wm_peak = wm.data.iter().copied().fold(0f32, f32::max);
        let wm_intensity = white_matter_intensity(&t1.data, &wm.data, 0.9 * wm_peak);
        let inv = 1.0 / (factor * factor * factor) as f32;
        // The maps ship as 0-255 integers in some distributions and as 0-1 floats in others.
        let map_scale = |data: &[f32]| {
            let peak = data.iter().copied().fold(0f32, f32::max);
            if peak > 1.5 { 1.0 / peak } else { 1.0 }
        };
        let (gm_scale, wm_scale) = (map_scale(&gm.data), map_scale(&wm.data));
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let mut acc = [0f32; 4];
                    for dk in 0..factor {
                        for dj in 0..factor {
                            for di in 0..factor {
                                let s = (i * factor + di)
                                    + src[0] * ((j * factor + dj) + src[1] * (k * factor + dk));
                                let inside = if t1.data[s] > 0.0 { 1.0 } else { 0.0 };
                                acc[0] += gm.data[s] * gm_scale;
                                acc[1] += wm.data[s] * wm_scale;
                                acc[2] += inside;
                                acc[3] += t1.data[s] / wm_intensity;
                            }
                        }
                    }
                    let g = acc[0] * inv;
                    let w = acc[1] * inv;
                    let brain = acc[2] * inv;
                    let csf = (brain - g - w).clamp(0.0, 1.0);
                    channels[i + dims[0] * (j + dims[1] * k)] = [g, w, csf, acc[3] * inv, 0.0];
                }
            }
        }
        let offset = (factor as f64 - 1.0) / 2.0;
        let origin = [0, 1, 2].map(|d| a[d][3] + offset);
        let mut model = TissueModel {
            source: AnatomySource::MniTemplate,
            dims,
            spacing: factor as f64,
            origin,
            channels,
            lesion_sites: vec![],
        };
        model.finish();
        Ok(model)
    }

    /// A procedural head: ellipsoidal brain with folded cortex, white matter and lateral ventricles.
    pub fn phantom(spacing: f64) -> Self {
        let origin = [-96.0, -132.0, -72.0];
        let dims = [
            (192.0 / spacing) as usize,
            (228.0 / spacing) as usize,
            (186.0 / spacing) as usize,
        ];
        let mut channels = vec![[0f32; 5]; dims[0] * dims[1] * dims[2]];
        let centre = [0.0, -18.0, 12.0];
        let semi = [68.0, 86.0, 64.0];
        // Supersampling along each axis keeps boundaries partial-volumed like a real map.
        let sub = 2usize;
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let mut acc = [0f32; 3];
                    for s in 0..sub * sub * sub {
                        let f = [s % sub, (s / sub) % sub, s / (sub * sub)]
                            .map(|q| (q as f64 + 0.5) / sub as f64 - 0.5);
                        let p = [
                            origin[0] + (i as f64 + f[0]) * spacing,
                            origin[1] + (j as f64 + f[1]) * spacing,
                            origin[2] + (k as f64 + f[2]) * spacing,
                        ];
                        let [g, w, c] = phantom_tissue(p, centre, semi);
                        acc[0] += g;
                        acc[1] += w;
                        acc[2] += c;
                    }
                    let n = (sub * sub * sub) as f32;
                    let (g, w, c) = (acc[0] / n, acc[1] / n, acc[2] / n);
                    let t1 = 0.62 * g + 1.0 * w + 0.2 * c;
                    channels[i + dims[0] * (j + dims[1] * k)] = [g, w, c, t1, 0.0];
                }
            }
        }
        let mut model = TissueModel {
            source: AnatomySource::Phantom,
            dims,
            spacing,
            origin,
            channels,
            lesion_sites: vec![],
        };
        model.finish();
        model
    }

    fn finish(&mut self) {
        self.compute_outside_distance();
        let [nx, ny, nz] = self.dims;
        let mut sites = Vec::new();
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let c = self.channels[i + nx * (j + ny * k)];
                    if c[1] > 0.95 && (i + j + k) % 2 == 0 {
                        let p = self.world_of([i, j, k]);
                        let d = distance(p, VENTRICLE_CENTRE);
                        if d < 45.0 {
                            sites.push(p);
                        }
                    }
                }
            }
        }
        self.lesion_sites = sites;
    }

    fn world_of(&self, v: [usize; 3]) -> [f64; 3] {
        [0, 1, 2].map(|d| self.origin[d] + v[d] as f64 * self.spacing)
    }

    /// Chamfer distance (26-neighbourhood) from the brain mask, in mm.
    fn compute_outside_distance(&mut self) {
        let [nx, ny, nz] = self.dims;
        let h = self.spacing as f32;
        let mut dist: Vec<f32> = self
            .channels
            .iter()
            .map(|c| {
                if c[0] + c[1] + c[2] > 0.5 {
                    0.0
                } else {
                    f32::MAX / 4.0
                }
            })
            .collect();
        let mut offsets = Vec::new();
        for dk in -1i64..=1 {
            for dj in -1i64..=1 {
                for di in -1i64..=1 {
                    let order = dk * 9 + dj * 3 + di;
                    if order < 0 {
                        let w = ((di * di + dj * dj + dk * dk) as f32).sqrt() * h;
                        offsets.push((di, dj, dk, w));
                    }
                }
            }
        }
        let idx = |i: usize, j: usize, k: usize| i + nx * (j + ny * k);
        for pass in 0..2 {
            let sign = if pass == 0 { 1 } else { -1 };
            for step_k in 0..nz {
                let k = if pass == 0 { step_k } else { nz - 1 - step_k };
                for step_j in 0..ny {
                    let j = if pass == 0 { step_j } else { ny - 1 - step_j };
                    for step_i in 0..nx {
                        let i = if pass == 0 { step_i } else { nx - 1 - step_i };
                        let mut best = dist[idx(i, j, k)];
                        if best == 0.0 {
                            continue;
                        }
                        for &(di, dj, dk, w) in &offsets {
                            let (ni, nj, nk) = (
                                i as i64 + sign * di,
                                j as i64 + sign * dj,
                                k as i64 + sign * dk,
                            );
                            if ni < 0
                                || nj < 0
                                || nk < 0
                                || ni >= nx as i64
                                || nj >= ny as i64
                                || nk >= nz as i64
                            {
                                continue;
                            }
                            best = best.min(dist[idx(ni as usize, nj as usize, nk as usize)] + w);
                        }
                        dist[idx(i, j, k)] = best;
                    }
                }
            }
        }
        for (c, d) in self.channels.iter_mut().zip(dist) {
            c[4] = d.min(200.0);
        }
    }

    /// Trilinear sample at a canonical point; outside the grid is air far from the head.
    pub fn sample(&self, p: [f64; 3]) -> TissueSample {
        let [nx, ny, nz] = self.dims;
        let f = [0, 1, 2].map(|d| (p[d] - self.origin[d]) / self.spacing);
        if f[0] < 0.0
            || f[1] < 0.0
            || f[2] < 0.0
            || f[0] > (nx - 1) as f64
            || f[1] > (ny - 1) as f64
            || f[2] > (nz - 1) as f64
        {
            return TissueSample {
                outside_mm: 200.0,
                ..Default::default()
            };
        }
        let i0 = (f[0] as usize).min(nx - 2);
        let j0 = (f[1] as usize).min(ny - 2);
        let k0 = (f[2] as usize).min(nz - 2);
        let (tx, ty, tz) = (
            (f[0] - i0 as f64) as f32,
            (f[1] - j0 as f64) as f32,
            (f[2] - k0 as f64) as f32,
        );
        let mut out = [0f32; 5];
        for corner in 0..8 {
            let (ci, cj, ck) = (corner & 1, (corner >> 1) & 1, corner >> 2);
            let w = (if ci == 1 { tx } else { 1.0 - tx })
                * (if cj == 1 { ty } else { 1.0 - ty })
                * (if ck == 1 { tz } else { 1.0 - tz });
            let c = &self.channels[(i0 + ci) + nx * ((j0 + cj) + ny * (k0 + ck))];
            for q in 0..5 {
                out[q] += w * c[q];
            }
        }
        TissueSample {
            gm: out[0],
            wm: out[1],
            csf: out[2],
            t1: out[3],
            outside_mm: out[4],
        }
    }
}

fn white_matter_intensity(t1: &[f32], wm: &[f32], threshold: f32) -> f32 {
    let (mut sum, mut n) = (0f64, 0usize);
    for (&v, &w) in t1.iter().zip(wm) {
        if w > threshold {
            sum += v as f64;
            n += 1;
        }
    }
    if n == 0 {
        1.0
    } else {
        (sum / n as f64).max(1e-3) as f32
    }
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Grey, white and CSF content of the phantom at a point.
fn phantom_tissue(p: [f64; 3], centre: [f64; 3], semi: [f64; 3]) -> [f32; 3] {
    let q = [0, 1, 2].map(|d| (p[d] - centre[d]) / semi[d]);
    let r = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
    if r > 1.0 {
        return [0.0, 0.0, 0.0];
    }
    let depth_mm = (1.0 - r) * 70.0;
    // Gyri: the cortical ribbon depth oscillates with direction, sulci carry CSF.
    let theta = q[2].atan2((q[0] * q[0] + q[1] * q[1]).sqrt());
    let phi = q[1].atan2(q[0]);
    let fold = ((theta * 9.0).sin() * (phi * 11.0).sin()).abs();
    let sulcus = depth_mm < 1.5 + 6.0 * (1.0 - fold) && fold < 0.25;
    let midline = p[0].abs() < 1.5 && p[2] > centre[2] - 10.0;
    let ventricle = [-1.0f64, 1.0].iter().any(|s| {
        let v = [
            (p[0] - 11.0 * s) / 6.0,
            (p[1] + 12.0) / 24.0,
            (p[2] - 16.0) / 9.0,
        ];
        v[0] * v[0] + v[1] * v[1] + v[2] * v[2] < 1.0
    });
    if ventricle || sulcus || midline || depth_mm < 1.0 {
        [0.0, 0.0, 1.0]
    } else if depth_mm < 4.0 + 2.5 * fold {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    }
}

/// A white-matter lesion: an ellipsoid in canonical millimetres.
#[derive(Clone, Debug)]
pub struct Lesion {
    pub centre: [f64; 3],
    pub radii: [f64; 3],
}

/// How one subject differs from the canonical anatomy.
#[derive(Clone, Debug)]
pub struct SubjectAnatomy {
    /// World (scanner) mm -> canonical mm: rows of a 3x4 matrix.
    pub world_to_canonical: [[f64; 4]; 3],
    /// Smooth deformation: (amplitude mm per axis, wave vector, phase) terms.
    warp_terms: Vec<([f64; 3], [f64; 3], f64)>,
    /// Central expansion: positive enlarges the ventricles.
    pub ventricle_expansion: f64,
    pub lesions: Vec<Lesion>,
    /// Extra-cerebral CSF, inner table, diploe, outer table, scalp thicknesses in mm.
    pub layers: [f64; 5],
}

impl SubjectAnatomy {
    pub fn random(model: &TissueModel, rng: &mut ChaCha8Rng, with_lesions: bool) -> Self {
        let deg = std::f64::consts::PI / 180.0;
        let angles = [
            rng.random_range(-8.0..8.0) * deg,
            rng.random_range(-6.0..6.0) * deg,
            rng.random_range(-6.0..6.0) * deg,
        ];
        let scale = [
            rng.random_range(0.92..1.08),
            rng.random_range(0.92..1.08),
            rng.random_range(0.92..1.08),
        ];
        let shift = [
            rng.random_range(-6.0..6.0),
            rng.random_range(-8.0..8.0),
            rng.random_range(-6.0..6.0),
        ];
        let rotation = rotation_matrix(angles);
        // canonical = S^-1 R^T (world - shift)
        let mut m = [[0f64; 4]; 3];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = rotation[c][r] / scale[r];
            }
            m[r][3] = -(0..3).map(|c| m[r][c] * shift[c]).sum::<f64>();
        }
        let warp_terms = (0..6)
            .map(|_| {
                let amplitude = [
                    rng.random_range(-1.8..1.8),
                    rng.random_range(-1.8..1.8),
                    rng.random_range(-1.8..1.8),
                ];
                let wave = [
                    rng.random_range(-0.05..0.05),
                    rng.random_range(-0.05..0.05),
                    rng.random_range(-0.05..0.05),
                ];
                (
                    amplitude,
                    wave,
                    rng.random_range(0.0..std::f64::consts::TAU),
                )
            })
            .collect();
        let ventricle_expansion = if rng.random_bool(0.3) {
            rng.random_range(0.15..0.4)
        } else {
            rng.random_range(-0.08..0.15)
        };
        let mut lesions = Vec::new();
        if with_lesions && !model.lesion_sites.is_empty() {
            let count = rng.random_range(2..14);
            for _ in 0..count {
                let site = model.lesion_sites[rng.random_range(0..model.lesion_sites.len())];
                let size = rng.random_range(1.5..5.5);
                lesions.push(Lesion {
                    centre: site,
                    radii: [
                        size * rng.random_range(0.7..1.3),
                        size * rng.random_range(0.8..1.6),
                        size * rng.random_range(0.7..1.3),
                    ],
                });
            }
        }
        let layers = [
            rng.random_range(1.5..3.0),
            rng.random_range(2.0..3.0),
            rng.random_range(1.5..3.0),
            rng.random_range(1.5..2.5),
            rng.random_range(5.0..8.0),
        ];
        SubjectAnatomy {
            world_to_canonical: m,
            warp_terms,
            ventricle_expansion,
            lesions,
            layers,
        }
    }

    /// The same subject placed by its affine alone: no smooth warp, no ventricle change,
    /// so `world_to_canonical` is the whole truth (for registration checks).
    pub fn without_warp(mut self) -> Self {
        self.warp_terms.clear();
        self.ventricle_expansion = 0.0;
        self
    }

    /// Canonical point (template mm) seen at a world point.
    pub fn canonical(&self, world: [f64; 3]) -> [f64; 3] {
        let m = &self.world_to_canonical;
        let mut p = [0, 1, 2]
            .map(|r| m[r][0] * world[0] + m[r][1] * world[1] + m[r][2] * world[2] + m[r][3]);
        for (amplitude, wave, phase) in &self.warp_terms {
            let s = (wave[0] * p[0] + wave[1] * p[1] + wave[2] * p[2] + phase).sin();
            for d in 0..3 {
                p[d] += amplitude[d] * s;
            }
        }
        let r2 = (0..3)
            .map(|d| (p[d] - VENTRICLE_CENTRE[d]).powi(2))
            .sum::<f64>();
        let pull = self.ventricle_expansion * (-r2 / (2.0 * 20.0 * 20.0)).exp();
        [0, 1, 2].map(|d| VENTRICLE_CENTRE[d] + (p[d] - VENTRICLE_CENTRE[d]) * (1.0 - pull))
    }

    /// Lesion fraction (0..1) at a canonical point, with soft edges.
    pub fn lesion_fraction(&self, p: [f64; 3]) -> f32 {
        let mut best = 0f64;
        for lesion in &self.lesions {
            let q = [0, 1, 2].map(|d| (p[d] - lesion.centre[d]) / lesion.radii[d]);
            let r = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
            if r < 1.3 {
                best = best.max(((1.3 - r) / 0.6).clamp(0.0, 1.0));
            }
        }
        best as f32
    }
}

/// Rotation about x, then y, then z (radians).
pub fn rotation_matrix(angles: [f64; 3]) -> [[f64; 3]; 3] {
    let (sx, cx) = angles[0].sin_cos();
    let (sy, cy) = angles[1].sin_cos();
    let (sz, cz) = angles[2].sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
    let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
    let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
    mat_mul(rz, mat_mul(ry, rx))
}

pub fn mat_mul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0f64; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = (0..3).map(|q| a[r][q] * b[q][c]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn phantom_has_tissues_and_a_head_distance() {
        let model = TissueModel::phantom(4.0);
        let centre = model.sample([25.0, -18.0, 12.0 + 20.0]);
        assert!(
            centre.wm > 0.5,
            "white matter expected deep in the phantom, got {centre:?}"
        );
        let outside = model.sample([0.0, -18.0, 12.0 + 64.0 + 10.0]);
        assert!(
            outside.outside_mm > 6.0 && outside.outside_mm < 16.0,
            "{outside:?}"
        );
        assert!(!model.lesion_sites.is_empty());
    }

    #[test]
    fn subject_mapping_is_near_identity() {
        let model = TissueModel::phantom(4.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let subject = SubjectAnatomy::random(&model, &mut rng, true);
        let p = subject.canonical([0.0, 60.0, 0.0]);
        assert!((p[1] - 60.0).abs() < 20.0, "{p:?}");
        assert!(!subject.lesions.is_empty());
    }
}
