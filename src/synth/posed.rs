//! Head images in a chosen pose: the synthetic anatomy without its smooth warp, placed in
//! the scanner by a known affine, so registration can be checked against the truth.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::anatomy::{SubjectAnatomy, TissueModel, rotation_matrix};
use super::artefacts::{self, Image3};
use super::contrast::{Sequence, TissueContrast};
use super::scanner::Geometry;

/// Where the head sits in the scanner, relative to the template.
#[derive(Clone, Copy, Debug)]
pub struct Pose {
    /// Rotations about x (pitch), y (roll), z (yaw), degrees, about the template origin.
    pub rotation_deg: [f64; 3],
    /// Shift of the head in world mm.
    pub translation_mm: [f64; 3],
    /// Head size relative to the template per axis.
    pub scale: [f64; 3],
}

impl Pose {
    /// Template mm -> world mm: `world = R S template + t`.
    pub fn template_to_world(&self) -> [[f64; 4]; 4] {
        let r = rotation_matrix(self.rotation_deg.map(f64::to_radians));
        let mut m = [[0.0; 4]; 4];
        for row in 0..3 {
            for col in 0..3 {
                m[row][col] = r[row][col] * self.scale[col];
            }
            m[row][3] = self.translation_mm[row];
        }
        m[3][3] = 1.0;
        m
    }

    /// World mm -> template mm, rows of a 3x4 matrix: `S^-1 R^T (world - t)`.
    pub fn world_to_template(&self) -> [[f64; 4]; 3] {
        let r = rotation_matrix(self.rotation_deg.map(f64::to_radians));
        let mut m = [[0.0; 4]; 3];
        for row in 0..3 {
            for col in 0..3 {
                m[row][col] = r[col][row] / self.scale[row];
            }
            m[row][3] = -(0..3)
                .map(|c| m[row][c] * self.translation_mm[c])
                .sum::<f64>();
        }
        m
    }
}

/// How the posed image is acquired.
#[derive(Clone, Debug)]
pub struct Acquisition {
    pub sequence: Sequence,
    /// Isotropic voxel size, mm.
    pub voxel_mm: f64,
    /// Axis order code of the stored voxels (e.g. "LPS", "PIR").
    pub orientation: String,
    /// Tilt of the field of view itself (an oblique sform), degrees.
    pub fov_tilt_deg: [f64; 3],
    /// Field of view, mm per world axis.
    pub fov_mm: [f64; 3],
    /// Amplitude of the log bias field (0: none).
    pub bias: f64,
    /// Rician noise as a fraction of the tissue level.
    pub noise: f64,
}

/// A rendered posed image with its white-matter fraction per voxel.
pub struct PosedImage {
    pub affine: [[f64; 4]; 4],
    pub image: Image3,
    pub white_matter: Vec<f32>,
}

/// Renders `subject_seed`'s head (its layers and contrast jitter) in `pose`.
pub fn render_posed(
    model: &TissueModel,
    pose: &Pose,
    acquisition: &Acquisition,
    seed: u64,
) -> PosedImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut subject = SubjectAnatomy::random(model, &mut rng, false).without_warp();
    subject.world_to_canonical = pose.world_to_template();
    let contrast = TissueContrast::random(acquisition.sequence, false, &mut rng);
    // The field of view follows the head, as a technologist places it.
    let head = [0.0, -18.0, 14.0];
    let to_world = pose.template_to_world();
    let centre =
        [0, 1, 2].map(|r| to_world[r][3] + (0..3).map(|c| to_world[r][c] * head[c]).sum::<f64>());
    let geometry = Geometry::new(
        &acquisition.orientation,
        centre,
        acquisition.fov_mm,
        [acquisition.voxel_mm; 3],
        acquisition.fov_tilt_deg,
    );
    let [nx, ny, nz] = geometry.dims;
    let mut data = vec![0f32; nx * ny * nz];
    let mut white_matter = vec![0f32; nx * ny * nz];
    data.par_chunks_mut(nx * ny)
        .zip(white_matter.par_chunks_mut(nx * ny))
        .enumerate()
        .for_each(|(k, (plane, wm))| {
            for j in 0..ny {
                for i in 0..nx {
                    let world = geometry.world([i as f64, j as f64, k as f64]);
                    let tissue = model.sample(subject.canonical(world));
                    plane[i + nx * j] = contrast.signal(&tissue, 0.0, &subject.layers);
                    wm[i + nx * j] = tissue.wm;
                }
            }
        });
    let mut image = Image3 {
        dims: geometry.dims,
        voxel_mm: geometry.voxel_mm,
        data,
    };
    if acquisition.bias > 0.0 {
        artefacts::apply_bias_field(&mut image, acquisition.bias, &mut rng);
    }
    if acquisition.noise > 0.0 {
        let level = image.signal_level();
        artefacts::add_rician_noise(&mut image, level * acquisition.noise as f32, &mut rng);
    }
    PosedImage {
        affine: geometry.affine,
        image,
        white_matter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pose_maps_are_inverse() {
        let pose = Pose {
            rotation_deg: [15.0, -5.0, 8.0],
            translation_mm: [10.0, -20.0, 30.0],
            scale: [1.05, 0.95, 1.0],
        };
        let forward = pose.template_to_world();
        let back = pose.world_to_template();
        let p = [12.0, -40.0, 33.0];
        let w: Vec<f64> = (0..3)
            .map(|r| forward[r][3] + (0..3).map(|c| forward[r][c] * p[c]).sum::<f64>())
            .collect();
        for r in 0..3 {
            let q = back[r][3] + (0..3).map(|c| back[r][c] * w[c]).sum::<f64>();
            assert!((q - p[r]).abs() < 1e-9);
        }
    }
}
