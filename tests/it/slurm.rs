//! Sharded inference: shards run here (`cdwqc slurm submit infer --local`) or as a
//! real Slurm array on a one-node cluster (scripts/slurm_cluster.sh) leave the store
//! exactly the predictions of one `cdwqc infer` process, bit for bit; a merge refuses
//! missing, foreign or altered parts and writes nothing then; a killed shard leaves no
//! part and its re-run gives the same store.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cdwqc::store::runs::PredictionRow;
use cdwqc::store::{Access, Store};

use crate::sharded_import::contents;
use crate::support::{assert_summaries_exact, cdwqc, is_root, ok, repo, stderr, stdout};
use crate::train::tiny_rated_warehouse;

/// A tiny warehouse, a one-epoch run `u1`, and `ref.duckdb`: a copy of the store in
/// which one `cdwqc infer` process predicted every FLAIR image.
fn trained_with_reference(dir: &Path) {
    tiny_rated_warehouse(dir);
    ok(
        dir,
        &[
            "train",
            "--preset",
            "tiny",
            "--task",
            "usable",
            "--method",
            "ssda",
            "--epochs",
            "1",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--run",
            "u1",
        ],
    );
    std::fs::copy(dir.join("cdwqc.duckdb"), dir.join("ref.duckdb")).expect("copy the store");
    ok(
        dir,
        &[
            "--db",
            "ref.duckdb",
            "infer",
            "--run",
            "u1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
}

fn predictions(db: &Path) -> Vec<PredictionRow> {
    Store::open(db, Access::ReadOnly)
        .expect("open the store")
        .run_predictions("u1")
        .expect("predictions")
}

/// Equal rows, probabilities bit for bit (PartialEq on f64 would also pass -0.0 == 0.0).
fn assert_same_predictions(got: &[PredictionRow], want: &[PredictionRow]) {
    assert_eq!(got.len(), want.len());
    assert!(got.len() >= 16, "{} predictions", got.len());
    for (g, w) in got.iter().zip(want) {
        let bits = |r: &PredictionRow| {
            r.probabilities
                .as_ref()
                .map(|p| p.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(
            (g.image_id, &g.task, &g.label, &g.error, bits(g)),
            (w.image_id, &w.task, &w.label, &w.error, bits(w)),
            "image {}: {g:?} != {w:?}",
            g.image_id
        );
    }
}

fn merge_fails(dir: &Path, contains: &[&str]) {
    let out = cdwqc(dir, &["merge", "shards"]);
    assert!(!out.status.success(), "merge succeeded: {}", stdout(&out));
    for text in contains {
        assert!(
            stderr(&out).contains(text),
            "{text:?} not in\n{}",
            stderr(&out)
        );
    }
}

#[test]
fn local_shards_merge_into_exactly_what_one_process_predicts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    trained_with_reference(dir);
    let before = predictions(&dir.join("cdwqc.duckdb"));
    let reference = predictions(&dir.join("ref.duckdb"));
    assert_ne!(
        before, reference,
        "the reference must differ from the store before"
    );

    let submit = [
        "slurm",
        "submit",
        "infer",
        "--run",
        "u1",
        "--shards",
        "4",
        "--device",
        "cpu",
        "--dir",
        "shards",
        "--local",
        "--cpus-per-task",
        "1",
    ];
    let out = ok(dir, &submit);
    assert!(out.contains("16 predictions from 4 parts checked"), "{out}");
    let shards = dir.join("shards");
    for k in 0..4 {
        for ext in ["parquet", "json"] {
            assert!(shards.join(format!("part-{k:05}-of-00004.{ext}")).is_file());
        }
    }
    let merged = predictions(&dir.join("cdwqc.duckdb"));
    assert_same_predictions(&merged, &reference);
    // `infer` (the reference) and `merge` keep the image list's summaries exact.
    assert_summaries_exact(dir, "ref.duckdb");
    assert_summaries_exact(dir, "cdwqc.duckdb");

    // Merging twice changes nothing.
    let again = ok(dir, &["merge", "shards"]);
    assert!(again.contains("nothing written"), "{again}");
    assert_eq!(predictions(&dir.join("cdwqc.duckdb")), merged);

    // Every bad part is named and nothing is written (the run's predictions are
    // deleted first, so that any write would show).
    Store::open(&dir.join("cdwqc.duckdb"), Access::ReadWrite)
        .expect("store")
        .conn()
        .execute("DELETE FROM predictions WHERE run_id = 'u1'", [])
        .expect("delete");
    let manifest = |k: usize| shards.join(format!("part-{k:05}-of-00004.json"));
    let part = |k: usize| shards.join(format!("part-{k:05}-of-00004.parquet"));
    let saved_first = std::fs::read_to_string(manifest(0)).expect("manifest");
    let saved_manifest = std::fs::read_to_string(manifest(1)).expect("manifest");
    let saved_part = std::fs::read(part(2)).expect("part");
    std::fs::remove_file(manifest(0)).expect("remove");
    std::fs::write(
        manifest(1),
        saved_manifest.replace("\"plan_hash\":\"", "\"plan_hash\":\"0"),
    )
    .expect("tamper");
    let mut flipped = saved_part.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    std::fs::write(part(2), &flipped).expect("corrupt");
    merge_fails(
        dir,
        &[
            "nothing was merged",
            "shard 0/4: missing",
            "shard 1/4: plan hash",
            "shard 2/4: part-00002-of-00004.parquet has SHA-256",
        ],
    );
    assert!(predictions(&dir.join("cdwqc.duckdb")).is_empty());

    // A worker that dies leaves no manifest line (a part published just before is
    // never read without one); its temporary file is never read; re-running the shard
    // (K from the array task's variable) completes the merge.
    std::fs::write(manifest(0), &saved_first).expect("restore");
    std::fs::write(manifest(1), &saved_manifest).expect("restore");
    std::fs::write(part(2), &saved_part).expect("restore");
    std::fs::remove_file(part(3)).expect("remove");
    std::fs::remove_file(manifest(3)).expect("remove");
    std::fs::write(
        shards.join(".part-00003-of-00004.parquet.tmp-1"),
        b"PAR1 half",
    )
    .expect("tmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args([
            "infer",
            "--shard",
            "3/4",
            "--work-list",
            "shards/work-list.parquet",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a shard");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().ok();
    child.wait().expect("wait");
    if !manifest(3).is_file() {
        // Killed before its manifest line: whether or not its part was published, the
        // shard counts as missing and nothing is merged.
        merge_fails(dir, &["shard 3/4: missing"]);
        assert!(predictions(&dir.join("cdwqc.duckdb")).is_empty());
    }
    let rerun = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args([
            "infer",
            "--shard",
            "/4",
            "--work-list",
            "shards/work-list.parquet",
        ])
        .env("SLURM_ARRAY_TASK_ID", "3")
        .current_dir(dir)
        .output()
        .expect("re-run the shard");
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert!(
        stdout(&rerun).contains("shard 3/4 of run u1"),
        "{}",
        stdout(&rerun)
    );
    ok(dir, &["merge", "shards"]);
    assert_same_predictions(&predictions(&dir.join("cdwqc.duckdb")), &reference);

    // A store other than the work list's is refused.
    ok(dir, &["--db", "other.duckdb", "init"]);
    let other = cdwqc(dir, &["--db", "other.duckdb", "merge", "shards"]);
    assert!(!other.status.success());
    assert!(
        stderr(&other).contains("other files under the same ids"),
        "{}",
        stderr(&other)
    );
}

/// Stops the cluster when the test ends, passed or not.
struct Cluster;

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/slurm_cluster.sh"))
            .arg("stop")
            .status();
    }
}

#[test]
fn a_slurm_array_merges_into_exactly_what_one_process_predicts() {
    if !is_root() {
        eprintln!("SKIPPED: a Slurm cluster needs root to start here (scripts/slurm_cluster.sh)");
        return;
    }
    let start = Command::new(repo().join("scripts/slurm_cluster.sh"))
        .arg("start")
        .output()
        .expect("run scripts/slurm_cluster.sh");
    let said = String::from_utf8_lossy(&start.stderr).into_owned();
    match start.status.code() {
        Some(0) => {}
        Some(2) | Some(3) => {
            eprintln!("SKIPPED: the Slurm cluster cannot start here: {said}");
            return;
        }
        _ => panic!("scripts/slurm_cluster.sh start failed: {said}"),
    }
    let _cluster = Cluster;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    trained_with_reference(dir);
    let out = ok(
        dir,
        &[
            "slurm",
            "submit",
            "infer",
            "--run",
            "u1",
            "--shards",
            "4",
            "--device",
            "cpu",
            "--cpus-per-task",
            "1",
            "--time",
            "5",
            "--dir",
            "shards",
        ],
    );
    assert!(out.contains("submitted array job"), "{out}");
    let script = std::fs::read_to_string(dir.join("shards/infer.sbatch")).expect("script");
    assert!(script.contains("#SBATCH --array=0-3\n"), "{script}");
    let (merge_job, status) = wait_for_merge(dir, "shards");
    assert!(status.contains("4/4 parts written"), "{status}");
    assert!(
        status.contains(&format!("merge job {merge_job}: COMPLETED")),
        "{status}"
    );
    assert_same_predictions(
        &predictions(&dir.join("cdwqc.duckdb")),
        &predictions(&dir.join("ref.duckdb")),
    );

    // The same folder imported by a two-task array into a new store: what one import
    // stored in the first.
    ok(dir, &["--db", "sharded.duckdb", "init"]);
    let out = ok(
        dir,
        &[
            "--db",
            "sharded.duckdb",
            "slurm",
            "submit",
            "import",
            "w",
            "--shards",
            "2",
            "--cpus-per-task",
            "1",
            "--time",
            "5",
            "--dir",
            "imports",
        ],
    );
    assert!(out.contains("submitted array job"), "{out}");
    let script = std::fs::read_to_string(dir.join("imports/import.sbatch")).expect("script");
    assert!(script.contains("import \\\n    --shard"), "{script}");
    let (merge_job, status) = wait_for_merge(dir, "imports");
    assert!(status.contains("2/2 parts written"), "{status}");
    assert!(
        status.contains(&format!("merge job {merge_job}: COMPLETED")),
        "{status}"
    );
    assert_eq!(
        contents(&dir.join("sharded.duckdb")),
        contents(&dir.join("cdwqc.duckdb"))
    );
}

/// Waits (90 s at most) until Slurm is done with the merge job of the job folder `jobs`;
/// returns its id and the last `cdwqc slurm status`.
fn wait_for_merge(dir: &Path, jobs: &str) -> (String, String) {
    let submission: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(jobs).join("submission.json")).expect("submission"),
    )
    .expect("json");
    let merge_job = submission["merge_job"]
        .as_str()
        .expect("merge job")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = ok(dir, &["slurm", "status", jobs]);
        let done = [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "no longer known",
        ];
        let merge_line = status
            .lines()
            .find(|l| l.contains(&format!("merge job {merge_job}")))
            .unwrap_or_default()
            .to_string();
        if done.iter().any(|d| merge_line.contains(d)) {
            return (merge_job, status);
        }
        assert!(
            Instant::now() < deadline,
            "the jobs did not finish in 90 s:\n{status}\n{}",
            std::fs::read_dir(dir.join(jobs).join("logs"))
                .map(|d| d
                    .filter_map(Result::ok)
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
