//! `cdwqc train` and `cdwqc infer` end to end on a tiny synthetic warehouse: the split,
//! the run and epoch rows, predictions for every target image, and resume refusals.

use crate::support::{cdwqc, ok, stderr};

#[test]
fn train_then_infer_on_a_tiny_warehouse() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(
        dir,
        &[
            "synth", "--out", "w", "--t1", "16", "--flair", "16", "--other", "0", "--grid", "tiny",
            "--seed", "3",
        ],
    );
    ok(dir, &["init"]);
    ok(dir, &["import", "w"]);
    for r in ["rater1", "rater2", "rater3"] {
        ok(
            dir,
            &[
                "ratings",
                "import",
                &format!("w/derivatives/cdwqc-synth/ratings/{r}.tsv"),
                "--rater",
                r,
            ],
        );
    }
    let out = ok(
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
            "2",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    assert!(
        out.contains("Completed") || out.contains("EarlyStopped"),
        "{out}"
    );
    let run = ok(
        dir,
        &[
            "sql",
            "select status, split_id, label_snapshot is not null as snap from runs",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        run,
        "status,split_id,snap\ncompleted,usable-ssda-seed1,true\n"
    );
    let epochs = ok(
        dir,
        &[
            "sql",
            "select count(*) from epochs where run_id = 'usable-ssda-seed1'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(epochs.lines().nth(1), Some("2"));
    // No subject in two target sets.
    let leaks = ok(
        dir,
        &[
            "sql",
            "select count(*) from (select subject from splits where domain = 'target' and subject is not null group by subject having count(distinct \"set\") > 1)",
            "--format",
            "csv",
        ],
    );
    assert_eq!(leaks.lines().nth(1), Some("0"));
    assert!(
        dir.join("models/runs/usable-ssda-seed1/best.safetensors")
            .is_file()
    );

    ok(
        dir,
        &[
            "infer",
            "--run",
            "usable-ssda-seed1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    let predictions = ok(
        dir,
        &[
            "sql",
            "select count(*), count(label), min(len(probabilities)) from predictions",
            "--format",
            "csv",
        ],
    );
    assert_eq!(predictions.lines().nth(1), Some("16,16,2"));

    let again = cdwqc(
        dir,
        &[
            "train", "--preset", "tiny", "--epochs", "1", "--seed", "1", "--device", "cpu",
        ],
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );
    let missing = cdwqc(
        dir,
        &[
            "train", "--resume", "nope", "--preset", "tiny", "--device", "cpu",
        ],
    );
    assert!(
        stderr(&missing).contains("no run nope"),
        "{}",
        stderr(&missing)
    );
}
