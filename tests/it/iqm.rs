//! Image quality metrics: equal to MRIQC 24.0.2's functions on the same masks
//! (tests/data/iqm_reference.json, written by scripts/iqm_reference.py), filled by
//! import and `cdwqc iqm`, exported as MRIQC group tables.

use std::path::Path;

use cdwqc::imaging::iqm::{self, COLUMNS, Contrast};
use cdwqc::imaging::{Volume, load_volume, nifti};
use cdwqc::synth::nifti_writer::{NiftiImage, StoredType, write_nifti_gz};
use serde_json::Value;

use crate::support::{cdwqc, ok, repo, stderr, stdout};

fn relative(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// The reference file's cases: name, image, contrast and the reference values.
fn reference_cases() -> Vec<(String, Volume, Contrast, Value)> {
    let text = std::fs::read_to_string(repo().join("tests/data/iqm_reference.json"))
        .expect("tests/data/iqm_reference.json");
    let reference: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(reference["reference"]["mriqc"], "24.0.2");
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 9, "real images and every phantom");
    cases
        .iter()
        .map(|case| {
            let name = case["name"].as_str().expect("name").to_string();
            let source = case["source"].as_str().expect("source");
            let (volume, contrast) = match source.strip_prefix("phantom:") {
                Some(p) => iqm::phantom(p).expect("a known phantom"),
                None => {
                    let path = repo().join(source);
                    assert!(path.is_file(), "{source} missing: run scripts/setup.sh");
                    let contrast = match case["contrast"].as_str() {
                        Some("FLAIR") => Contrast::Flair,
                        Some("T2w") => Contrast::T2w,
                        _ => Contrast::T1w,
                    };
                    (load_volume(&path).expect("reads"), contrast)
                }
            };
            (name, volume, contrast, case.clone())
        })
        .collect()
}

#[test]
fn every_metric_equals_mriqc_on_real_and_synthetic_images() {
    let cases = reference_cases();
    let mut compared = 0;
    let mut failures = Vec::new();
    for (name, volume, contrast, case) in &cases {
        let metrics = iqm::compute(volume, *contrast).expect("metrics");
        let wm = case["wm_median"].as_f64().expect("wm_median");
        assert_eq!(metrics.wm_median, wm, "{name}: white-matter median");
        let expected = case["expected"].as_object().expect("expected");
        for (key, want) in expected {
            let got = metrics
                .get(key)
                .unwrap_or_else(|| panic!("{name}: no column {key}"));
            compared += 1;
            match want.as_f64() {
                None => {
                    if got.is_finite() {
                        failures.push(format!("{name} {key}: MRIQC non-finite, cdwqc {got}"));
                    }
                }
                Some(w) => {
                    // A NaN difference fails too.
                    let within = relative(got, w).partial_cmp(&1e-6);
                    if !matches!(
                        within,
                        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                    ) {
                        failures.push(format!("{name} {key}: MRIQC {w}, cdwqc {got}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared >= cases.len() * 60, "{compared} values compared");
}

/// `volume` stored with a scaling slope: values that are not integers but few enough
/// for the table of values.
fn scaled_by_a_slope(volume: &Volume) -> Volume {
    Volume {
        data: volume.data.iter().map(|v| v * 0.731 + 12.5).collect(),
        ..volume.clone()
    }
}

/// A float image of a million distinct values (a resampled export, say), with a NaN and
/// an infinity that the metrics read as 0.
fn floats_with_non_finite(volume: &Volume) -> Volume {
    let mut float = Volume {
        data: volume
            .data
            .iter()
            .enumerate()
            .map(|(i, v)| v + (i % 1_000_003) as f32 * 1e-4)
            .collect(),
        ..volume.clone()
    };
    let n = float.data.len();
    float.data[n / 3] = f32::NAN;
    float.data[n / 2] = f32::INFINITY;
    float
}

/// Import's IQM step reads the masks from the segmentation grid as it counts and never
/// keeps them at full resolution; `cdwqc iqm --file` builds every mask and measures
/// them. Both must give the same bits on every kind of image: integers (one histogram
/// bin per value), integers with a scaling slope (a table of distinct values), values
/// too many to bin (the voxel-by-voxel path), and non-finite voxels.
#[test]
fn import_step_equals_masks_then_measure_bit_for_bit() {
    let mut checked = 0;
    for (name, volume, contrast, _) in reference_cases() {
        let scaled = scaled_by_a_slope(&volume);
        let float = floats_with_non_finite(&volume);
        for (kind, v) in [("stored", &volume), ("scaled", &scaled), ("float", &float)] {
            let image = iqm::sanitised(&v.data);
            let separate = iqm::masks(&image, v.dims, v.voxel_size, contrast)
                .and_then(|m| iqm::measure(&image, v.voxel_size, &m));
            let step = iqm::compute(v, contrast);
            match (separate, step) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(
                        a.wm_median.to_bits(),
                        b.wm_median.to_bits(),
                        "{name} {kind}"
                    );
                    for ((column, x), y) in iqm::COLUMNS.iter().zip(&a.values).zip(&b.values) {
                        assert_eq!(x.to_bits(), y.to_bits(), "{name} {kind} {column}: {x} {y}");
                    }
                    checked += 1;
                }
                (a, b) => assert_eq!(a.err(), b.err(), "{name} {kind}"),
            }
        }
    }
    assert!(checked >= 27, "{checked} images measured both ways");
}

/// Import hands the step what the intensity summary and the header established (all
/// values finite, all integers between two values), which spares it the passes that
/// test them; the metrics are the same to the bit, and wrong facts are never needed:
/// the images below cover the integer bins, the table of values (a scaling slope, and
/// integers too far apart for bins) and the voxel-by-voxel path.
#[test]
fn the_step_given_import_facts_equals_the_step_that_tests_them() {
    let (mut checked, mut header_checked) = (0, 0);
    for (name, volume, contrast, _) in reference_cases() {
        let scaled = scaled_by_a_slope(&volume);
        // Integers spanning more values than the histogram's bins.
        let (lo, hi) = volume
            .data
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let stretch = (70_000.0 / (hi - lo)).ceil();
        let wide = Volume {
            data: volume.data.iter().map(|v| (v * stretch).round()).collect(),
            ..volume.clone()
        };
        let float = floats_with_non_finite(&volume);
        // Integers past 2^31 (an int32 or int64 image with a large offset): the step's
        // own test turns them away to the table of values, the facts bin them as
        // integers, and the metrics agree.
        let huge = Volume {
            data: volume.data.iter().map(|v| v.round() + 3.0e9).collect(),
            ..volume.clone()
        };
        // Stored integers scaled as a header says (a fractional slope, upwards and
        // downwards): the facts bin them by their stored integer.
        let stored_integers = volume.data.iter().all(|x| x.fract() == 0.0);
        let by_header = |slope: f64, inter: f64| Volume {
            data: volume
                .data
                .iter()
                .map(|&v| nifti::scale_intensity(v, slope, inter))
                .collect(),
            ..volume.clone()
        };
        let header_scalings = [(0.731, 12.5), (-2.25, 1000.3)];
        let header_scaled = header_scalings.map(|(slope, inter)| by_header(slope, inter));
        for (kind, v, scaling) in [
            ("stored", &volume, None),
            ("scaled", &scaled, None),
            ("wide", &wide, None),
            ("float", &float, None),
            ("huge", &huge, None),
            ("header-scaled", &header_scaled[0], Some(header_scalings[0])),
            (
                "header-scaled down",
                &header_scaled[1],
                Some(header_scalings[1]),
            ),
        ] {
            if scaling.is_some() && !stored_integers {
                continue;
            }
            let summary = cdwqc::imaging::stats::summarise(&v.data).expect("finite values");
            let integers = v.data.iter().all(|x| x.fract() == 0.0);
            let known = iqm::Known {
                finite: summary.nonfinite == 0,
                integers_within: integers.then_some((summary.min as f32, summary.max as f32)),
                scaled_integers: scaling.map(|(slope, inter)| iqm::ScaledIntegers {
                    slope,
                    inter,
                    lo: summary.min as f32,
                    hi: summary.max as f32,
                }),
            };
            if kind == "stored" || kind == "wide" || kind == "huge" {
                assert!(
                    known.finite && known.integers_within.is_some(),
                    "{name} {kind}"
                );
            }
            if scaling.is_some() {
                assert!(known.finite && !integers, "{name} {kind}");
                header_checked += 1;
            }
            match (
                iqm::compute(v, contrast),
                iqm::compute_known(v, contrast, known),
            ) {
                (Ok(a), Ok(b)) => {
                    for ((column, x), y) in iqm::COLUMNS.iter().zip(&a.values).zip(&b.values) {
                        assert_eq!(x.to_bits(), y.to_bits(), "{name} {kind} {column}: {x} {y}");
                    }
                    checked += 1;
                }
                (a, b) => assert_eq!(a.err(), b.err(), "{name} {kind}"),
            }
        }
    }
    // The MNI template (values 0 to 255) keeps one or two values past 2^31, where floats
    // are 256 apart, and finds no grey matter either way.
    assert!(checked >= 44, "{checked} images measured both ways");
    assert!(
        header_checked >= 4,
        "{header_checked} images scaled by a header"
    );
}

/// `cdwqc iqm --file` builds the masks at full resolution only when `--masks` asks to
/// write them; both ways print the same metrics, on files and on every phantom.
#[test]
fn iqm_file_prints_the_same_metrics_with_and_without_written_masks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let flair = dir.join("sub-01_FLAIR.nii.gz");
    write_phantom(&flair, "flair");
    let file = flair.to_str().expect("utf-8 path");
    let metrics = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["iqm", "--file", file, "--phantom", "all"];
        args.extend_from_slice(extra);
        ok(dir, &args)
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).expect("one JSON object per line");
                v.as_object_mut().expect("object").remove("seconds");
                v
            })
            .collect()
    };
    let without = metrics(&[]);
    let with = metrics(&["--masks", "masks"]);
    assert_eq!(without.len(), 1 + iqm::PHANTOMS.len());
    assert!(
        without.iter().all(|v| v["iqms"]["cnr"].is_number()),
        "{without:?}"
    );
    assert_eq!(without, with);
    assert!(dir.join("masks/sub-01_FLAIR/tissue.nii.gz").is_file());
}

fn write_phantom(path: &Path, name: &str) {
    write_phantom_scaled(path, name, (1.0, 0.0));
}

/// A phantom stored as int16 with a scaling slope and offset.
fn write_phantom_scaled(path: &Path, name: &str, (scl_slope, scl_inter): (f32, f32)) {
    let (volume, _) = iqm::phantom(name).expect("phantom");
    let image = NiftiImage {
        dims: volume.dims,
        data: &volume.data,
        affine: volume.affine,
        stored: StoredType::Int16,
        scl_slope,
        scl_inter,
        intent_code: 0,
        description: "phantom",
    };
    std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
    write_nifti_gz(path, &image).expect("written");
}

fn sql(dir: &Path, query: &str) -> String {
    ok(dir, &["sql", query, "--format", "csv"])
}

#[test]
fn import_fills_metrics_and_iqm_exports_mriqc_group_tables() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    write_phantom(&w.join("sub-01/anat/sub-01_T1w.nii.gz"), "t1_clean");
    write_phantom(&w.join("sub-02/anat/sub-02_T1w.nii.gz"), "t1_noisy");
    write_phantom(&w.join("sub-01/anat/sub-01_FLAIR.nii.gz"), "flair");
    std::fs::write(w.join("sub-03_T1w.nii.gz"), b"not an image").expect("bad file");
    ok(dir, &["init"]);
    ok(dir, &["import", "w"]);

    // Every ok 3D image has metrics; the bad file has a failed row and none.
    let counts = sql(
        dir,
        "select count(*) filter (where error is null and cnr is not null), count(*) from iqms",
    );
    assert!(counts.contains("3,3"), "{counts}");
    let contrasts = sql(
        dir,
        "select i.suffix, q.contrast from iqms q join images i using (image_id) order by all",
    );
    assert!(
        contrasts.contains("FLAIR,FLAIR") && contrasts.contains("T1w,T1w"),
        "{contrasts}"
    );
    // The noisy image has the lower SNR.
    let snr = sql(
        dir,
        "select i.subject, round(q.snr_wm, 3) from iqms q join images i using (image_id) \
         where i.suffix = 'T1w' order by q.snr_wm",
    );
    let first = snr.lines().nth(1).unwrap_or_default();
    assert!(first.starts_with("02,"), "{snr}");

    // A re-import changes nothing; `cdwqc iqm` finds nothing to do.
    ok(dir, &["import", "w"]);
    let out = ok(dir, &["iqm"]);
    assert!(out.starts_with("0 images measured"), "{out}");

    // A store from before the metrics (or a wiped table) is filled by `cdwqc iqm`;
    // a file gone since import gets a row that says so and stops nothing.
    ok(dir, &["sql", "--write", "delete from iqms"]);
    std::fs::remove_file(w.join("sub-02/anat/sub-02_T1w.nii.gz")).expect("remove");
    let out = ok(dir, &["iqm"]);
    assert!(
        out.starts_with("2 images measured, 1 without metrics"),
        "{out}"
    );
    let errors = sql(dir, "select error from iqms where error is not null");
    assert!(errors.contains("cannot read"), "{errors}");

    // Export: one table per sequence, MRIQC's column layout.
    write_phantom(&w.join("sub-02/anat/sub-02_T1w.nii.gz"), "t1_noisy");
    ok(dir, &["import", "w"]);
    let out = ok(dir, &["iqm"]);
    assert!(out.starts_with("1 images measured, 0 without"), "{out}");
    let out = ok(dir, &["iqm", "--export", "tables"]);
    assert!(out.contains("group_T1w.tsv: 2 images"), "{out}");
    let t1 = std::fs::read_to_string(dir.join("tables/group_T1w.tsv")).expect("group_T1w.tsv");
    let flair = std::fs::read_to_string(dir.join("tables/group_FLAIR.tsv")).expect("FLAIR");
    let header: Vec<&str> = t1.lines().next().expect("header").split('\t').collect();
    assert_eq!(header[0], "bids_name");
    let mut sorted = header[1..].to_vec();
    sorted.sort_unstable();
    assert_eq!(
        header[1..],
        sorted[..],
        "IQM columns in name order, as MRIQC writes them"
    );
    for column in COLUMNS
        .iter()
        .chain(["qi_2", "rpve_wm", "tpm_overlap_gm"].iter())
    {
        assert!(header.contains(column), "{column}");
    }
    let rows: Vec<&str> = t1.lines().skip(1).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].starts_with("sub-01_T1w\t"), "{}", rows[0]);
    let qi2 = header.iter().position(|h| *h == "qi_2").expect("qi_2");
    assert_eq!(rows[0].split('\t').nth(qi2), Some("n/a"));
    assert_eq!(flair.lines().count(), 2);

    // --force recomputes all of them.
    let o = cdwqc(dir, &["iqm", "--force"]);
    assert!(
        stdout(&o).starts_with("3 images measured"),
        "{}",
        stdout(&o)
    );

    // A file replaced since import is not measured as the image the store describes,
    // and the metrics stored for it stay.
    let kept = sql(dir, "select count(*) from iqms where error is null");
    write_phantom(&w.join("sub-01/anat/sub-01_FLAIR.nii.gz"), "t1_noisy");
    let out = ok(dir, &["iqm", "--force"]);
    assert!(
        out.starts_with("2 images measured, 1 without metrics")
            && out.contains("changed since it was imported"),
        "{out}"
    );
    assert_eq!(
        sql(dir, "select count(*) from iqms where error is null"),
        kept
    );
}

/// Images stored as integers with a fractional slope (as many scanners write them):
/// import and `cdwqc iqm` bin them by their stored integers, and `cdwqc iqm --file`,
/// which is told nothing of the values, by their distinct values. All three agree to
/// the last digit.
#[test]
fn scaled_integers_measure_the_same_at_import_in_the_store_and_from_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    let scalings = [(0.731, 12.5), (-2.25, 1000.25), (3.801_887, 0.0)];
    for (n, scaling) in scalings.iter().enumerate() {
        let name = if n == 1 { "flair" } else { "t1_noisy" };
        let suffix = if n == 1 { "FLAIR" } else { "T1w" };
        write_phantom_scaled(
            &w.join(format!("sub-0{n}/anat/sub-0{n}_{suffix}.nii.gz")),
            name,
            *scaling,
        );
    }
    ok(dir, &["init"]);
    ok(dir, &["import", "w"]);
    let query = format!(
        "select i.rel_path, {} from iqms q join images i using (image_id) order by 1",
        COLUMNS
            .iter()
            .map(|c| format!("q.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let imported = sql(dir, &query);
    assert_eq!(imported.lines().count(), 1 + scalings.len(), "{imported}");
    let slopes = sql(
        dir,
        "select count(*) from images where scl_slope not in (0, 1)",
    );
    assert!(slopes.contains("\n3"), "{slopes}");
    let out = ok(dir, &["iqm", "--force"]);
    assert!(out.starts_with("3 images measured, 0 without"), "{out}");
    assert_eq!(sql(dir, &query), imported);
    // From the files, one JSON object per line.
    let mut compared = 0;
    for line in imported.lines().skip(1) {
        let mut fields = line.split(',');
        let rel = fields.next().expect("path");
        let file = w.join(rel);
        let printed = ok(dir, &["iqm", "--file", file.to_str().expect("utf-8")]);
        for (column, stored) in COLUMNS.iter().zip(fields) {
            // The printed digits, parsed with correct rounding (serde_json's default
            // parser may land one unit in the last place away).
            let key = format!("\"{column}\":");
            let at = printed.find(&key).expect("column printed") + key.len();
            let digits = printed[at..].split([',', '}']).next().expect("value");
            let value: Option<f64> = digits.parse().ok();
            let stored: Option<f64> = stored.parse().ok();
            assert_eq!(
                value.map(f64::to_bits),
                stored.map(f64::to_bits),
                "{rel} {column}: {digits}"
            );
            compared += usize::from(value.is_some());
        }
    }
    assert!(compared >= 3 * 30, "{compared} values compared");
}

#[test]
fn per_scanner_robust_z_scores_flag_the_noisy_head() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let w = dir.join("w");
    // Five T1w heads of one (unknown) scanner: three with the usual noise, one
    // cleaner, one much noisier.
    let heads = [
        "t1_bias",
        "t1_ghost",
        "t1_zero_padded",
        "t1_clean",
        "t1_noisy",
    ];
    for (n, name) in heads.iter().enumerate() {
        write_phantom(&w.join(format!("sub-0{n}/anat/sub-0{n}_T1w.nii.gz")), name);
    }
    ok(dir, &["init"]);
    ok(dir, &["import", "w"]);
    let rows = sql(
        dir,
        "select i.subject, o.scanner, o.group_images, o.outlier,
                abs(o.robust_z - 0.6745 * (o.value - o.group_median) / o.group_mad) < 1e-9 as exact
         from iqm_outliers o join images i using (image_id)
         where o.metric = 'fber' order by i.subject",
    );
    let lines: Vec<&str> = rows.lines().skip(1).collect();
    assert_eq!(lines.len(), 5, "{rows}");
    for line in &lines {
        assert!(line.contains(",unknown,5,"), "{rows}");
        assert!(line.ends_with(",true"), "z as defined: {rows}");
    }
    // FBER (foreground to background energy) falls with noise: the noisy head lies far
    // below its scanner's usual heads, the clean one far above.
    assert!(lines[4].starts_with("04,unknown,5,true"), "noisy: {rows}");
    assert!(lines[3].starts_with("03,unknown,5,true"), "clean: {rows}");
    for usual in &lines[..3] {
        assert!(usual.contains(",5,false,"), "usual heads: {rows}");
    }
    // Every screening metric of every image is there.
    let metrics = sql(
        dir,
        "select count(distinct metric), count(distinct image_id) from iqm_outliers",
    );
    assert!(metrics.contains("10,5"), "{metrics}");
}

#[test]
fn an_iqm_forest_run_is_compared_beside_the_cnn_on_the_same_split() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    crate::train::tiny_rated_warehouse(dir);
    ok(
        dir,
        &[
            "train",
            "--preset",
            "tiny",
            "--task",
            "usable",
            "--method",
            "target-only",
            "--epochs",
            "1",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    let refused = cdwqc(dir, &["train", "--method", "iqm-forest"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--split-of"),
        "{}",
        stderr(&refused)
    );

    let cnn = "usable-target-only-seed1";
    let forest = "usable-target-only-seed1-iqm-forest";
    let out = ok(
        dir,
        &[
            "train",
            "--method",
            "iqm-forest",
            "--split-of",
            cnn,
            "--trees",
            "50",
        ],
    );
    assert!(out.contains(forest), "{out}");
    // The same split, and the same held-out images predicted.
    let counts = ok(
        dir,
        &[
            "sql",
            "select run_id, split_id, count(*) as n from predictions join runs using (run_id) group by all order by run_id",
            "--format",
            "csv",
        ],
    );
    let lines: Vec<&str> = counts.lines().collect();
    assert_eq!(lines.len(), 3, "{counts}");
    let n_of = |line: &str| line.rsplit(',').next().unwrap_or_default().to_string();
    assert!(lines[1].starts_with(&format!("{cnn},{cnn},")), "{counts}");
    assert!(
        lines[2].starts_with(&format!("{forest},{cnn},")),
        "{counts}"
    );
    assert_eq!(n_of(lines[1]), n_of(lines[2]), "{counts}");

    let compare: Value = serde_json::from_str(&ok(
        dir,
        &[
            "report",
            "compare",
            "usable-*",
            "--json",
            "--bootstrap",
            "100",
        ],
    ))
    .expect("compare JSON");
    let runs = compare["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{compare}");
    assert_eq!(runs[1]["method"], "iqm-forest");
    assert!(runs[1]["images"].as_u64().unwrap_or(0) > 0, "{compare}");
    let paired = compare["versus_baseline"].as_array().expect("paired");
    assert_eq!(paired.len(), 1, "{compare}");
    assert_eq!(paired[0]["run_id"], forest);
    assert_eq!(paired[0]["images"], runs[0]["images"]);
    let markdown = ok(
        dir,
        &["report", "compare", "usable-*", "--bootstrap", "100"],
    );
    assert!(markdown.contains("iqm-forest"), "{markdown}");

    // The same seed grows the same forest.
    ok(
        dir,
        &[
            "train",
            "--method",
            "iqm-forest",
            "--split-of",
            cnn,
            "--trees",
            "50",
            "--run",
            "again",
        ],
    );
    let differing = ok(
        dir,
        &[
            "sql",
            &format!(
                "select count(*) as differing from predictions a join predictions b using (image_id, task) \
                 where a.run_id = '{forest}' and b.run_id = 'again' \
                 and a.probabilities is distinct from b.probabilities"
            ),
            "--format",
            "csv",
        ],
    );
    assert_eq!(differing, "differing\n0\n");
}
