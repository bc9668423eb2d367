//! Writes synthetic heads in known poses (clinical tilts and offsets, T1w / FLAIR / T2w,
//! a bias field, oblique fields of view) for the registration benchmark, with the truth.
//!
//! Usage: registration_phantoms OUT_DIR [N=5] [VOXEL_MM=1] [SEED=1] [TEMPLATE_DIR]
//! Writes OUT_DIR/head-NN.nii.gz, OUT_DIR/head-NN_wm.nii.gz (white-matter fraction) and
//! OUT_DIR/truth.json (per image: the template -> world map and how it was made).

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use cdwqc::synth::anatomy::TissueModel;
use cdwqc::synth::contrast::Sequence;
use cdwqc::synth::nifti_writer::{NiftiImage, StoredType, write_nifti_gz};
use cdwqc::synth::posed::{Acquisition, Pose, render_posed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(
        args.first()
            .ok_or("usage: registration_phantoms OUT_DIR [N] [VOXEL_MM] [SEED] [TEMPLATE_DIR]")?,
    );
    let count: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let voxel_mm: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let template_dir = args
        .get(4)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/external"));
    std::fs::create_dir_all(&out)?;
    let model = TissueModel::from_template(&template_dir, voxel_mm)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sequences = [Sequence::T1w, Sequence::Flair, Sequence::T2w];
    let orientations = ["LPS", "PIR", "RAS", "LIP", "LAS"];
    let mut truth = Vec::new();
    for index in 0..count {
        let pose = Pose {
            rotation_deg: [
                rng.random_range(-20.0..20.0),
                rng.random_range(-10.0..10.0),
                rng.random_range(-10.0..10.0),
            ],
            translation_mm: [
                rng.random_range(-30.0..30.0),
                rng.random_range(-30.0..30.0),
                rng.random_range(-30.0..30.0),
            ],
            scale: [
                rng.random_range(0.92..1.08),
                rng.random_range(0.92..1.08),
                rng.random_range(0.92..1.08),
            ],
        };
        let fov_tilt_deg = if rng.random_bool(0.5) {
            [
                rng.random_range(-12.0..12.0),
                0.0,
                rng.random_range(-6.0..6.0),
            ]
        } else {
            [0.0; 3]
        };
        let acquisition = Acquisition {
            sequence: sequences[index % sequences.len()],
            voxel_mm,
            orientation: orientations[index % orientations.len()].into(),
            fov_tilt_deg,
            fov_mm: [200.0, 240.0, 210.0],
            bias: rng.random_range(0.25..0.5),
            noise: 0.03,
        };
        let image = render_posed(&model, &pose, &acquisition, seed * 1000 + index as u64);
        let name = format!("head-{index:02}.nii.gz");
        let wm_name = format!("head-{index:02}_wm.nii.gz");
        let write = |file: &str, data: &[f32]| {
            write_nifti_gz(
                &out.join(file),
                &NiftiImage {
                    dims: image.image.dims,
                    data,
                    affine: image.affine,
                    stored: StoredType::Float32,
                    scl_slope: 1.0,
                    scl_inter: 0.0,
                    intent_code: 0,
                    description: "cdwqc registration phantom",
                },
            )
        };
        write(&name, &image.image.data)?;
        write(&wm_name, &image.white_matter)?;
        truth.push(serde_json::json!({
            "file": name,
            "white_matter": wm_name,
            "sequence": acquisition.sequence.name(),
            "orientation": acquisition.orientation,
            "fov_tilt_deg": fov_tilt_deg,
            "rotation_deg": pose.rotation_deg,
            "translation_mm": pose.translation_mm,
            "scale": pose.scale,
            "bias": acquisition.bias,
            "template_to_world": pose.template_to_world(),
        }));
        eprintln!("{}/{count} {name}", index + 1);
    }
    std::fs::write(
        out.join("truth.json"),
        serde_json::to_string_pretty(&truth)? + "\n",
    )?;
    Ok(())
}
