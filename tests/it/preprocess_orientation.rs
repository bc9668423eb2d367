//! Preprocessing against nibabel's voxel-to-world mapping on real NIfTI files.

use std::path::{Path, PathBuf};

use cdwqc::imaging::load_volume;
use cdwqc::imaging::preprocess::{
    PreprocessSpec, TensorCache, axis_codes, head_centre, preprocess, resample_ras,
};
use serde_json::Value;

fn external(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/external")
        .join(name)
}

fn expected() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/orientation_expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn affines_and_axis_codes_match_nibabel() {
    let expected = expected();
    for name in [
        "anatomical.nii",
        "example4d.nii.gz",
        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    ] {
        let facts = &expected[name];
        let volume = load_volume(&external(name)).unwrap();
        let shape: Vec<usize> = floats(&facts["shape"])
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert_eq!(volume.dims.to_vec(), shape, "{name}");
        for (row, values) in facts["affine"].as_array().unwrap().iter().enumerate() {
            for (col, value) in floats(values).iter().enumerate() {
                assert!(
                    (volume.affine[row][col] - value).abs() < 1e-4,
                    "{name} affine[{row}][{col}]"
                );
            }
        }
        let codes: String = axis_codes(&volume.affine).iter().collect();
        assert_eq!(codes, facts["axcodes"].as_str().unwrap(), "{name}");
    }
}

/// A 3x3x3 RAS grid centred on a probe voxel's world point, at the file's voxel size:
/// the centre must hold the probe's value, and one step towards R, A and S must hold the
/// values nibabel finds at those world points.
#[test]
fn ras_resampling_puts_world_points_where_nibabel_says() {
    let expected = expected();
    for name in [
        "anatomical.nii",
        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    ] {
        let facts = &expected[name];
        let volume = load_volume(&external(name)).unwrap();
        let spacing = floats(&facts["zooms"])[0];
        let spec = PreprocessSpec {
            shape: [3, 3, 3],
            spacing_mm: spacing,
            clip_low_percentile: 0.0,
            clip_high_percentile: 100.0,
            ..PreprocessSpec::grid([1, 1, 1], 1.0)
        };
        for probe in facts["probes"].as_array().unwrap() {
            let world = floats(&probe["world"]);
            let out =
                resample_ras(&volume, &spec, [world[0], world[1], world[2]], f32::NAN).unwrap();
            let at = |x: usize, y: usize, z: usize| out[z + 3 * (y + 3 * x)] as f64;
            assert_eq!(
                at(1, 1, 1),
                probe["value"].as_f64().unwrap(),
                "{name} centre"
            );
            let steps = probe["steps"].as_array().unwrap();
            assert_eq!(
                at(2, 1, 1),
                steps[0]["value"].as_f64().unwrap(),
                "{name} +R"
            );
            assert_eq!(
                at(1, 2, 1),
                steps[1]["value"].as_f64().unwrap(),
                "{name} +A"
            );
            assert_eq!(
                at(1, 1, 2),
                steps[2]["value"].as_f64().unwrap(),
                "{name} +S"
            );
        }
    }
}

#[test]
fn preprocessing_is_invariant_to_storage_orientation() {
    let las = load_volume(&external("anatomical.nii")).unwrap();
    // The same image stored RAS: flip the i axis and its affine column.
    let [nx, ny, nz] = las.dims;
    let mut ras = las.clone();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                ras.data[i + nx * (j + ny * k)] = las.data[(nx - 1 - i) + nx * (j + ny * k)];
            }
        }
    }
    for row in 0..3 {
        ras.affine[row][3] += las.affine[row][0] * (nx - 1) as f64;
        ras.affine[row][0] = -las.affine[row][0];
    }
    assert_eq!(axis_codes(&ras.affine), ['R', 'A', 'S']);
    let spec = PreprocessSpec {
        shape: [20, 24, 16],
        spacing_mm: 3.0,
        clip_low_percentile: 0.5,
        clip_high_percentile: 99.5,
        ..PreprocessSpec::grid([1, 1, 1], 1.0)
    };
    let a = preprocess(&las, &spec).unwrap();
    let b = preprocess(&ras, &spec).unwrap();
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-5, "max difference {max_diff}");
}

#[test]
fn mni_template_preprocesses_onto_the_cpu_grid_around_the_brain() {
    let volume = load_volume(&external(
        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    ))
    .unwrap();
    let centre = head_centre(&volume).unwrap();
    // The template's brain sits near the MNI origin (within a couple of centimetres).
    assert!(centre.iter().all(|c| c.abs() < 25.0), "{centre:?}");
    let spec = PreprocessSpec {
        shape: [80, 96, 80],
        spacing_mm: 2.0,
        clip_low_percentile: 0.5,
        clip_high_percentile: 99.5,
        ..PreprocessSpec::grid([1, 1, 1], 1.0)
    };
    let out = preprocess(&volume, &spec).unwrap();
    assert_eq!(out.len(), 80 * 96 * 80);
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    // Corners are background, the centre is brain.
    assert_eq!(out[0], 0.0);
    assert!(out[40 + 80 * (48 + 96 * 40)] > 0.2);
    let dir = tempfile::tempdir().unwrap();
    let cache = TensorCache::new(dir.path());
    cache.put("sha", "cpu-small", &spec, &out).unwrap();
    assert_eq!(cache.get("sha", "cpu-small", &spec).unwrap().unwrap(), out);
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let err = load_volume(Path::new("/nonexistent/scan.nii.gz")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/scan.nii.gz"));
}
