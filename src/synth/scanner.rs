//! Acquisition geometry (voxel sizes, matrix, axis order, obliquity) and scanner metadata for sidecars.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::anatomy::rotation_matrix;
use super::contrast::Sequence;
use super::nifti_writer::StoredType;

/// Where an image's voxels sit in the world.
#[derive(Clone, Debug)]
pub struct Geometry {
    pub dims: [usize; 3],
    /// Voxel -> world RAS+ mm.
    pub affine: [[f64; 4]; 4],
    pub voxel_mm: [f64; 3],
    /// File axis across which each voxel integrates a slab (2D acquisitions), with the slab thickness.
    pub slab: Option<(usize, f64)>,
    /// File axis of phase encoding (motion and ghosts run along it).
    pub phase_axis: usize,
    /// Orientation code (nibabel aff2axcodes style) before any oblique tilt.
    pub orientation: String,
    pub oblique: bool,
}

/// World axis and sign for an orientation letter.
fn letter_axis(letter: char) -> (usize, f64) {
    match letter {
        'R' => (0, 1.0),
        'L' => (0, -1.0),
        'A' => (1, 1.0),
        'P' => (1, -1.0),
        'S' => (2, 1.0),
        _ => (2, -1.0),
    }
}

impl Geometry {
    /// A box of `fov_mm` (world x, y, z) around `centre`, stored with axis order `orientation`,
    /// voxel sizes per world axis `voxel_world`, tilted by `tilt_deg` (oblique when non-zero).
    pub fn new(
        orientation: &str,
        centre: [f64; 3],
        fov_mm: [f64; 3],
        voxel_world: [f64; 3],
        tilt_deg: [f64; 3],
    ) -> Self {
        let letters: Vec<char> = orientation.chars().collect();
        let mut columns = [[0f64; 3]; 3];
        let mut dims = [1usize; 3];
        let mut voxel_mm = [1f64; 3];
        for axis in 0..3 {
            let (world, sign) = letter_axis(letters.get(axis).copied().unwrap_or('S'));
            voxel_mm[axis] = voxel_world[world];
            dims[axis] = ((fov_mm[world] / voxel_world[world]).round() as usize).max(1);
            columns[axis][world] = sign * voxel_world[world];
        }
        let deg = std::f64::consts::PI / 180.0;
        let rotation = rotation_matrix(tilt_deg.map(|a| a * deg));
        // Linear part M with columns M e_axis = R * column.
        let mut linear = [[0f64; 3]; 3];
        for (axis, column) in columns.iter().enumerate() {
            for r in 0..3 {
                linear[r][axis] = (0..3).map(|q| rotation[r][q] * column[q]).sum();
            }
        }
        let half = [0, 1, 2].map(|a| (dims[a] as f64 - 1.0) / 2.0);
        let mut affine = [[0f64; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                affine[r][c] = linear[r][c];
            }
            affine[r][3] = centre[r] - (0..3).map(|c| linear[r][c] * half[c]).sum::<f64>();
        }
        affine[3][3] = 1.0;
        let oblique = tilt_deg.iter().any(|a| a.abs() > 1e-9);
        // Phase encoding: anterior-posterior when an in-plane axis runs along y, else the second axis.
        let phase_axis = (0..3)
            .find(|&a| letter_axis(letters.get(a).copied().unwrap_or('S')).0 == 1)
            .unwrap_or(1);
        Geometry {
            dims,
            affine,
            voxel_mm,
            slab: None,
            phase_axis,
            orientation: orientation.to_string(),
            oblique,
        }
    }

    pub fn world(&self, f: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * f[0] + a[r][1] * f[1] + a[r][2] * f[2] + a[r][3])
    }

    /// The file axis closest to a world axis.
    pub fn file_axis_of_world(&self, world: usize) -> usize {
        (0..3)
            .max_by(|&a, &b| {
                self.affine[world][a]
                    .abs()
                    .total_cmp(&self.affine[world][b].abs())
            })
            .unwrap_or(world)
    }
}

/// A plausible set of orientation codes met in warehouses (axial, sagittal and coronal storage).
pub const ORIENTATIONS: [&str; 6] = ["RAS", "LAS", "LPS", "LPI", "PIR", "LIP"];

/// Scanner identity and protocol fields as dcm2niix writes them in the JSON sidecar.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Sidecar {
    pub manufacturer: String,
    pub manufacturers_model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magnetic_field_strength: Option<f64>,
    #[serde(rename = "MRAcquisitionType")]
    pub mr_acquisition_type: String,
    pub series_description: String,
    pub protocol_name: String,
    pub slice_thickness: f64,
    pub repetition_time: f64,
    pub echo_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inversion_time: Option<f64>,
    pub conversion_software: String,
    pub conversion_software_version: String,
}

/// One scanner model of a hospital's fleet.
#[derive(Clone, Copy, Debug)]
pub struct Scanner {
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub field_t: f64,
}

pub const SCANNERS: [Scanner; 8] = [
    Scanner {
        manufacturer: "Siemens",
        model: "Skyra",
        field_t: 3.0,
    },
    Scanner {
        manufacturer: "Siemens",
        model: "Avanto",
        field_t: 1.5,
    },
    Scanner {
        manufacturer: "Siemens",
        model: "Aera",
        field_t: 1.5,
    },
    Scanner {
        manufacturer: "GE",
        model: "DISCOVERY MR750",
        field_t: 3.0,
    },
    Scanner {
        manufacturer: "GE",
        model: "Optima MR450w",
        field_t: 1.5,
    },
    Scanner {
        manufacturer: "Philips",
        model: "Ingenia",
        field_t: 3.0,
    },
    Scanner {
        manufacturer: "Philips",
        model: "Achieva",
        field_t: 1.5,
    },
    Scanner {
        manufacturer: "Philips",
        model: "Intera",
        field_t: 1.0,
    },
];

/// The series description a scanner's protocol would give a sequence.
pub fn series_description(
    scanner: &Scanner,
    sequence: Sequence,
    three_d: bool,
    rng: &mut ChaCha8Rng,
) -> String {
    let options: &[&str] = match (scanner.manufacturer, sequence, three_d) {
        ("Siemens", Sequence::T1w, true) => {
            &["t1_mprage_sag_p2_iso", "T1 MPRAGE SAG", "t1_mprage_tra_iso"]
        }
        ("GE", Sequence::T1w, true) => &["Sag 3D T1 BRAVO", "3D FSPGR", "SAG T1 CUBE"],
        ("Philips", Sequence::T1w, true) => &["T1 3D TFE", "3D_T1_TFE_SAG", "sT1W_3D_TFE"],
        (_, Sequence::T1w, _) => &["T1 SE AX", "ax T1", "T1_tse_tra"],
        ("Siemens", Sequence::Flair, true) => &[
            "t2_spc_da-fl_sag_p2_iso",
            "3D FLAIR SPACE",
            "t2_space_dark-fluid_sag",
        ],
        ("GE", Sequence::Flair, true) => &["Sag CUBE FLAIR", "3D FLAIR", "CUBE T2 FLAIR"],
        ("Philips", Sequence::Flair, true) => {
            &["3D_Brain_VIEW_FLAIR_SAG", "FLAIR 3D", "VISTA FLAIR"]
        }
        (_, Sequence::Flair, _) => &["AX FLAIR", "t2_tirm_tra_dark-fluid", "FLAIR ax 5mm"],
        (_, Sequence::T2w, _) => &["t2_tse_tra", "AX T2 FSE", "T2W_TSE", "T2 3D SPACE"],
        (_, Sequence::DwiB0, _) => &["ep2d_diff_3scan_trace", "AX DWI", "DWI_SSh b0"],
    };
    options[rng.random_range(0..options.len())].to_string()
}

/// Stored type, slope and output gain of an image's voxel values.
pub fn storage(rng: &mut ChaCha8Rng) -> (StoredType, f32, f32) {
    match rng.random_range(0..10) {
        0..=4 => (StoredType::Int16, 1.0, rng.random_range(250.0f32..1200.0)),
        5..=6 => {
            let slope = rng.random_range(0.5f32..4.0);
            (
                StoredType::Int16,
                slope,
                slope * rng.random_range(250.0f32..1200.0),
            )
        }
        7..=8 => (StoredType::Uint16, 1.0, rng.random_range(250.0f32..1500.0)),
        _ => (StoredType::Float32, 1.0, rng.random_range(0.8f32..300.0)),
    }
}

/// Random tilt for an oblique acquisition, else none.
pub fn random_tilt(rng: &mut ChaCha8Rng, oblique_probability: f64) -> [f64; 3] {
    if rng.random_bool(oblique_probability) {
        [
            rng.random_range(-15.0..15.0),
            rng.random_range(-8.0..8.0),
            rng.random_range(-8.0..8.0),
        ]
    } else {
        [0.0; 3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_centres_the_box_and_follows_the_code() {
        let g = Geometry::new(
            "LPS",
            [1.0, -18.0, 15.0],
            [180.0, 220.0, 200.0],
            [2.0, 2.0, 2.5],
            [0.0; 3],
        );
        assert_eq!(g.dims, [90, 110, 80]);
        assert_eq!(g.affine[0][0], -2.0);
        assert_eq!(g.affine[1][1], -2.0);
        assert_eq!(g.affine[2][2], 2.5);
        let centre = g.world([
            (g.dims[0] - 1) as f64 / 2.0,
            (g.dims[1] - 1) as f64 / 2.0,
            (g.dims[2] - 1) as f64 / 2.0,
        ]);
        assert!((centre[1] + 18.0).abs() < 1e-9);
        let sagittal = Geometry::new("PIR", [0.0; 3], [180.0, 220.0, 200.0], [1.0; 3], [0.0; 3]);
        assert_eq!(sagittal.dims, [220, 200, 180]);
        assert_eq!(sagittal.phase_axis, 0);
        assert_eq!(sagittal.file_axis_of_world(0), 2);
    }
}
