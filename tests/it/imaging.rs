//! NIfTI reading checked against nibabel on real files (tests/data/nibabel_reference.json,
//! written by scripts/nibabel_reference.py).

use cdwqc::imaging::{self, nifti, orientation};
use serde_json::Value;

use crate::support::{external, repo};

fn reference() -> Value {
    let text = std::fs::read_to_string(repo().join("tests/data/nibabel_reference.json"))
        .expect("tests/data/nibabel_reference.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn path_of(name: &str) -> std::path::PathBuf {
    let own = repo().join("tests/data").join(name);
    if own.is_file() { own } else { external(name) }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn headers_affines_and_voxels_match_nibabel() {
    let reference = reference();
    let files = reference["files"].as_object().expect("files");
    assert!(files.len() >= 10, "reference covers the real test files");
    for (name, want) in files {
        let path = path_of(name);
        let header = nifti::read_header_file(&path).expect("header reads");
        let shape: Vec<i64> = want["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|v| v.as_i64().expect("int"))
            .collect();
        assert_eq!(
            header.dim[1..=header.dim[0] as usize],
            shape[..],
            "{name} shape"
        );
        assert_eq!(
            i64::from(header.version),
            want["nifti_version"].as_i64().expect("v"),
            "{name}"
        );
        assert_eq!(header.datatype.name(), want["datatype"], "{name} datatype");
        assert_eq!(
            i64::from(header.sform_code),
            want["sform_code"].as_i64().expect("s")
        );
        assert_eq!(
            i64::from(header.qform_code),
            want["qform_code"].as_i64().expect("q")
        );

        let volume = imaging::load_volume(&path).expect("volume loads");
        let affine = want["affine"].as_array().expect("affine");
        for (r, row) in affine.iter().enumerate() {
            for (c, cell) in row.as_array().expect("row").iter().enumerate() {
                let w = cell.as_f64().expect("number");
                assert!(
                    close(volume.affine[r][c], w, 1e-6),
                    "{name} affine[{r}][{c}] = {} (nibabel {w})",
                    volume.affine[r][c]
                );
            }
        }
        assert_eq!(
            orientation::axis_codes(&volume.affine),
            want["axcodes"],
            "{name}"
        );
        for (z, w) in volume
            .voxel_size
            .iter()
            .zip(want["zooms"].as_array().expect("zooms"))
        {
            assert!(close(*z, w.as_f64().expect("zoom"), 1e-6), "{name} zooms");
        }
        let [nx, ny, _] = volume.dims;
        for s in want["samples"].as_array().expect("samples") {
            let (i, j, k) = (
                s[0].as_u64().expect("i") as usize,
                s[1].as_u64().expect("j") as usize,
                s[2].as_u64().expect("k") as usize,
            );
            // null: nibabel read a NaN or an infinity there.
            let w = s[3].as_f64().unwrap_or(f64::NAN);
            let got = f64::from(volume.data[i + nx * (j + ny * k)]);
            assert!(
                close(got, w, 1e-6) || (w.is_nan() && !got.is_finite()),
                "{name} voxel ({i},{j},{k}) = {got} (nibabel {w})"
            );
        }
        let summary = imaging::stats::summarise(&volume.data).expect("finite voxels");
        assert!(
            close(summary.mean, want["finite_mean"].as_f64().expect("m"), 1e-6),
            "{name} mean"
        );
        // Intensities are held as f32, nibabel's as f64: equal to f32 precision.
        assert!(
            close(summary.min, want["finite_min"].as_f64().expect("min"), 1e-6),
            "{name} min"
        );
        assert!(
            close(summary.max, want["finite_max"].as_f64().expect("max"), 1e-6),
            "{name} max"
        );
        assert_eq!(
            summary.nonfinite as i64,
            want["nonfinite"].as_i64().expect("n"),
            "{name}"
        );
    }
}
