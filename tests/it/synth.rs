//! Integration tests of the synthetic warehouse generator: determinism, files read back, rater agreement.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use cdwqc::imaging::load_volume;
use cdwqc::synth::raters::{rate, rater_profiles};
use cdwqc::synth::{Grid, SynthConfig, generate, plan_dataset, write_montage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn template_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/external")
}

fn tiny(out: &Path, template: bool) -> SynthConfig {
    SynthConfig {
        out: out.to_path_buf(),
        n_t1: 8,
        n_flair: 8,
        n_other: 2,
        n_raters: 2,
        grid: Grid::Tiny,
        seed: 77,
        template_dir: template.then(template_dir),
    }
}

fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

fn read_tsv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), header.len(), "{}: {line}", path.display());
            header
                .iter()
                .zip(fields)
                .map(|(h, f)| (h.to_string(), f.to_string()))
                .collect()
        })
        .collect()
}

/// Orientation code of an affine as nibabel's aff2axcodes computes it for near-axis-aligned affines.
fn axcodes(affine: &[[f64; 4]; 4]) -> String {
    (0..3)
        .map(|c| {
            let world = (0..3)
                .max_by(|&a, &b| affine[a][c].abs().total_cmp(&affine[b][c].abs()))
                .unwrap();
            let positive = affine[world][c] > 0.0;
            ["LR", "PA", "IS"][world]
                .chars()
                .nth(usize::from(positive))
                .unwrap()
        })
        .collect()
}

#[test]
fn same_seed_gives_identical_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(&tiny(a.path(), false), &|_, _| {}).unwrap();
    generate(&tiny(b.path(), false), &|_, _| {}).unwrap();
    let (fa, fb) = (files(a.path()), files(b.path()));
    assert!(fa.len() > 40, "{} files", fa.len());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (path, bytes) in &fa {
        assert!(
            bytes == &fb[path],
            "{} differs between runs",
            path.display()
        );
    }
}

#[test]
fn template_warehouse_reads_back_with_intended_headers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), true);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let summary = generate(&cfg, &|done, total| {
        assert!(done <= total);
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(summary.anatomy, "mni_icbm152_2009");
    assert_eq!(summary.images, 18);
    assert_eq!(calls.into_inner(), 19);
    let truth = read_tsv(&dir.path().join("derivatives/cdwqc-synth/ground_truth.tsv"));
    assert_eq!(truth.len(), 18);
    for row in &truth {
        let path = dir.path().join(&row["path"]);
        let volume = load_volume(&path).unwrap();
        let dims: Vec<usize> = row["dims"].split('x').map(|d| d.parse().unwrap()).collect();
        assert_eq!(volume.dims.to_vec(), dims, "{}", row["path"]);
        let expected = row["orientation"].trim_end_matches("-oblique");
        if !row["orientation"].ends_with("-oblique") {
            assert_eq!(axcodes(&volume.affine), expected, "{}", row["path"]);
        }
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(&raw[344..348], b"n+1\0");
        let datatype = i16::from_le_bytes([raw[70], raw[71]]);
        let want = match row["datatype"].as_str() {
            "int16" => 4,
            "uint16" => 512,
            _ => 16,
        };
        assert_eq!(datatype, want, "{}", row["path"]);
        assert_eq!(
            raw.len(),
            352 + volume.data.len() * if want == 16 { 4 } else { 2 }
        );
        assert!(volume.data.iter().all(|v| v.is_finite()));
        assert!(
            volume.data.iter().any(|&v| v > 0.0),
            "{} is empty",
            row["path"]
        );
        let sidecar = path.to_string_lossy().replace(".nii.gz", ".json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
        assert!(json["Manufacturer"].is_string() && json["SeriesDescription"].is_string());
    }
    for rater in ["rater1", "rater2"] {
        let ratings = read_tsv(
            &dir.path()
                .join(format!("derivatives/cdwqc-synth/ratings/{rater}.tsv")),
        );
        assert_eq!(ratings.len(), truth.len());
        assert!(
            ratings
                .iter()
                .all(|r| !r.contains_key("class") && !r.contains_key("sev_motion"))
        );
    }
    let notebook = read_tsv(
        &dir.path()
            .join("derivatives/cdwqc-synth/ratings/rater1_notebook.tsv"),
    );
    assert_eq!(notebook.len(), truth.len());
    assert!(
        notebook
            .iter()
            .all(|r| ["1", "2", "3", "4"].contains(&r["label"].as_str())
                && !r["img_id"].ends_with(".gz"))
    );
    assert!(
        dir.path().join("dataset_description.json").is_file()
            && dir.path().join("participants.tsv").is_file()
    );
    let png = dir.path().join("montage.png");
    write_montage(dir.path(), &png).unwrap();
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
}

fn cohen_kappa(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len() as f64;
    let observed = a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n;
    let expected: f64 = (0..=4u8)
        .map(|c| {
            (a.iter().filter(|&&x| x == c).count() as f64 / n)
                * (b.iter().filter(|&&x| x == c).count() as f64 / n)
        })
        .sum();
    (observed - expected) / (1.0 - expected)
}

#[test]
fn simulated_raters_agree_like_practice() {
    let cfg = SynthConfig {
        out: PathBuf::from("not-written"),
        n_t1: 400,
        n_flair: 400,
        n_other: 0,
        n_raters: 3,
        grid: Grid::Small,
        seed: 5,
        template_dir: None,
    };
    let plans = plan_dataset(&cfg);
    let truth: Vec<u8> = plans.iter().map(|p| p.tier()).collect();
    let profiles = rater_profiles(3, cfg.seed);
    let tiers: Vec<Vec<u8>> = profiles
        .iter()
        .enumerate()
        .map(|(r, profile)| {
            let mut rng = ChaCha8Rng::seed_from_u64(r as u64);
            plans
                .iter()
                .map(|p| {
                    let rating = rate(profile, &p.seen(), &mut rng);
                    cdwqc::synth::raters::tier(
                        rating.usable,
                        rating.motion,
                        rating.contrast,
                        rating.noise,
                    )
                })
                .collect()
        })
        .collect();
    for (r, t) in tiers.iter().enumerate() {
        let kappa = cohen_kappa(&truth, t);
        eprintln!("rater{} vs truth kappa {kappa:.3}", r + 1);
        assert!(
            (0.5..=0.85).contains(&kappa),
            "rater{} vs truth kappa {kappa:.3}",
            r + 1
        );
    }
    for a in 0..tiers.len() {
        for b in a + 1..tiers.len() {
            let kappa = cohen_kappa(&tiers[a], &tiers[b]);
            eprintln!("rater{} vs rater{} kappa {kappa:.3}", a + 1, b + 1);
            assert!(
                (0.45..=0.8).contains(&kappa),
                "rater{} vs rater{} kappa {kappa:.3}",
                a + 1,
                b + 1
            );
        }
    }
}

#[test]
fn a_folder_holding_other_files_is_never_overwritten() {
    // A mistyped --out naming a real BIDS tree replaced its images and rating files
    // with synthetic ones of the same names.
    let tmp = tempfile::tempdir().expect("tempdir");
    let precious = tmp.path().join("precious");
    let anat = precious.join("sub-0001/ses-01/anat");
    std::fs::create_dir_all(&anat).expect("mkdir");
    std::fs::write(
        precious.join("dataset_description.json"),
        b"{\"Name\": \"ours\"}",
    )
    .expect("write");
    std::fs::write(anat.join("sub-0001_ses-01_FLAIR.nii.gz"), b"patient").expect("write");
    let before = files(&precious);
    let err = generate(&tiny(&precious, false), &|_, _| {})
        .expect_err("refused")
        .to_string();
    assert!(err.contains("did not write"), "{err}");
    assert_eq!(files(&precious), before);
    // A file as --out is refused too; a synthetic warehouse may be written again.
    let err = generate(
        &tiny(&precious.join("dataset_description.json"), false),
        &|_, _| {},
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("not a folder"), "{err}");
    let again = tmp.path().join("again");
    generate(&tiny(&again, false), &|_, _| {}).expect("new folder");
    generate(&tiny(&again, false), &|_, _| {}).expect("its own output");
}
