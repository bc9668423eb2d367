//! Shared helpers: paths to test data, running the binary, writing NIfTI bytes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Real NIfTI files extracted by scripts/setup.sh. Missing files fail the test:
/// run scripts/setup.sh first.
pub fn external(name: &str) -> PathBuf {
    let p = repo().join("tests/data/external").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh to fetch the test images",
        p.display()
    );
    p
}

pub fn cdwqc(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args(args)
        .current_dir(dir)
        .env_remove("CDWQC_DB")
        .output()
        .expect("the cdwqc binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary and fails the test with its output unless it succeeds.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = cdwqc(dir, args);
    assert!(
        o.status.success(),
        "cdwqc {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Fails the test unless the command failed; returns its stderr, where the reason is.
pub fn failure(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected a failure, got success\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

/// A minimal little-endian NIfTI-1 single file.
pub fn nifti1(dim: [i16; 8], datatype: i16, bitpix: i16, vox_offset: f32, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in dim.iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&datatype.to_le_bytes());
    h[72..74].copy_from_slice(&bitpix.to_le_bytes());
    for i in 0..4 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1.0f32.to_le_bytes());
    }
    h[108..112].copy_from_slice(&vox_offset.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(data);
    h
}

pub fn float_volume(n: [i16; 3], f: impl Fn(usize) -> f32) -> Vec<u8> {
    let count = n.iter().map(|&d| d as usize).product::<usize>();
    let data: Vec<u8> = (0..count).flat_map(|i| f(i).to_le_bytes()).collect();
    nifti1([3, n[0], n[1], n[2], 1, 1, 1, 1], 16, 32, 352.0, &data)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Checks, through `cdwqc sql` on the store `db` (read-only), that the per-image
/// summaries the image browser filters on (migration 011) are marked fresh and equal
/// what the views `ratings_latest` and `rater_labels` and the newest `usable`
/// prediction give from scratch, image by image.
pub fn assert_summaries_exact(dir: &Path, db: &str) {
    let out = ok(
        dir,
        &[
            "--db",
            db,
            "sql",
            "--format",
            "csv",
            "WITH votes AS (
                 SELECT l.image_id, count(*) AS raters,
                        count(*) FILTER (WHERE b.usable_label = 'usable') AS usable,
                        count(*) FILTER (WHERE b.usable_label = 'reject') AS reject
                 FROM ratings_latest l LEFT JOIN rater_labels b USING (image_id, rater)
                 GROUP BY l.image_id
             ),
             newest AS (
                 SELECT image_id, label FROM (
                     SELECT image_id, label,
                            row_number() OVER (PARTITION BY image_id
                                               ORDER BY predicted_at DESC, run_id) AS k
                     FROM predictions WHERE task = 'usable' AND label IS NOT NULL)
                 WHERE k = 1
             )
             SELECT (SELECT count(*) FROM images) AS images,
                    (SELECT count(*) FROM images i
                     LEFT JOIN votes v USING (image_id) LEFT JOIN newest n USING (image_id)
                     WHERE i.raters_in_force <> coalesce(v.raters, 0)
                        OR i.raters_usable <> coalesce(v.usable, 0)
                        OR i.raters_reject <> coalesce(v.reject, 0)
                        OR i.usable_prediction IS DISTINCT FROM n.label) AS differ,
                    (SELECT NOT stale AND ratings = (SELECT count(*) FROM ratings)
                            AND predictions = (SELECT count(*) FROM predictions)
                     FROM image_summary_state) AS fresh",
        ],
    );
    let line = out.lines().nth(1).unwrap_or_default().to_string();
    let cells: Vec<&str> = line.split(',').collect();
    assert!(
        cells.len() == 3 && cells[1] == "0" && cells[2] == "true",
        "summaries of {db} (images, differing, fresh): {line}"
    );
}

/// Saves a traced model over `grid` whose logits are `[5 - 10 m, 10 m - 5]`, `m` the
/// mean intensity: a TorchScript model following the documented input contract, whose
/// outputs are known.
pub fn write_mean_classifier(path: &Path, grid: [i64; 3]) {
    write_mean_classifier_with_gain(path, grid, 10.0);
}

/// A TorchScript classifier of mean brightness whose logits are `gain * mean - gain / 2`
/// for the second class: another gain, another file with the same contract.
pub fn write_mean_classifier_with_gain(path: &Path, grid: [i64; 3], gain: f64) {
    use tch::{CModule, Device, Kind, Tensor};
    let example = Tensor::zeros(
        [2, 1, grid[0], grid[1], grid[2]],
        (Kind::Float, Device::Cpu),
    );
    let module = CModule::create_by_tracing("MeanClassifier", "forward", &[example], &mut |xs| {
        let mean = xs[0].mean_dim([1, 2, 3, 4].as_slice(), false, Kind::Float);
        let bright = &mean * gain - gain / 2.0;
        vec![Tensor::stack(&[-&bright, bright], 1)]
    })
    .expect("tracing the mean classifier");
    module.save(path).expect("saving the mean classifier");
}
