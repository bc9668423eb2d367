//! `cdwqc train`, `cdwqc infer` and the model reports end to end on a tiny synthetic
//! warehouse: the split, the run and epoch rows, predictions for every target image,
//! resume after Ctrl-C on the stored split and sequences, and resume refusals (labels
//! changed since the run started).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{cdwqc, float_volume, ok, stderr};

/// 16 T1w and 16 FLAIR images on the tiny grid, imported, with three raters' ratings.
pub(crate) fn tiny_rated_warehouse(dir: &Path) {
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
}

#[test]
fn train_then_infer_on_a_tiny_warehouse() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
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
        out.contains("completed after") || out.contains("stopped early after"),
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

    // Training keeps its held-out predictions, so the run can be scored at once.
    let report: Value = serde_json::from_str(&ok(
        dir,
        &[
            "report",
            "model",
            "--run",
            "usable-ssda-seed1",
            "--json",
            "--bootstrap",
            "200",
            "--html",
            "model.html",
        ],
    ))
    .expect("model report JSON");
    assert_eq!(report["schema"], "cdwqc.model/1");
    assert_eq!(report["set"], "test");
    let test_images: u64 = ok(
        dir,
        &[
            "sql",
            "select count(*) from splits where split_id = 'usable-ssda-seed1' and \"set\" = 'test'",
            "--format",
            "csv",
        ],
    )
    .lines()
    .nth(1)
    .and_then(|n| n.parse().ok())
    .expect("count");
    assert!(test_images > 0);
    assert_eq!(report["overall"]["images"].as_u64(), Some(test_images));
    let confusion_total: u64 = report["overall"]["confusion"]
        .as_array()
        .expect("confusion")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|c| c.as_u64().expect("count"))
        })
        .sum();
    assert_eq!(confusion_total, test_images);
    let html = std::fs::read_to_string(dir.join("model.html")).expect("html written");
    assert!(
        html.contains("<svg") && html.contains("ROC"),
        "plots in the HTML"
    );
    let markdown = ok(
        dir,
        &[
            "report",
            "model",
            "--run",
            "usable-ssda-seed1",
            "--bootstrap",
            "100",
        ],
    );
    assert!(
        markdown.contains("balanced accuracy [95% CI]"),
        "{markdown}"
    );

    // A baseline, then the comparison with the paired difference against it.
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
    assert_eq!(compare["schema"], "cdwqc.compare/1");
    let runs = compare["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0]["method"], "ssda",
        "methods in the ablation table's order"
    );
    let paired = compare["versus_baseline"].as_array().expect("paired");
    assert_eq!(paired.len(), 1);
    assert_eq!(paired[0]["baseline_run_id"], "usable-target-only-seed1");
    assert_eq!(paired[0]["images"].as_u64(), Some(test_images));
    let nothing = cdwqc(dir, &["report", "compare", "nothing-*"]);
    assert!(!nothing.status.success());
    assert!(
        stderr(&nothing).contains("no run matches nothing-*"),
        "{}",
        stderr(&nothing)
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
            "select count(*), count(label), min(len(probabilities)) from predictions where run_id = 'usable-ssda-seed1'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(predictions.lines().nth(1), Some("16,16,2"));
    // After inference every FLAIR image has a prediction; `--set all` scores the rated ones.
    let all: Value = serde_json::from_str(&ok(
        dir,
        &[
            "report",
            "model",
            "--run",
            "usable-ssda-seed1",
            "--set",
            "all",
            "--against",
            "rater1",
            "--json",
            "--bootstrap",
            "50",
        ],
    ))
    .expect("JSON");
    assert_eq!(all["predictions"].as_u64(), Some(16));
    assert_eq!(all["against"], "rater rater1");

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

#[test]
fn training_interrupted_by_ctrl_c_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
    // Sequences other than the defaults (T1w source, FLAIR target): a resume must not
    // fall back to them.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdwqc"))
        .args([
            "train",
            "--preset",
            "tiny",
            "--method",
            "ssda",
            "--source",
            "FLAIR",
            "--target",
            "T1w",
            "--epochs",
            "60",
            "--seed",
            "2",
            "--run",
            "long",
            "--device",
            "cpu",
            "--threads",
            "1",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let planned = lines.next().expect("the plan's summary").expect("line");
    assert!(
        planned.starts_with("long: ") && planned.contains("labelled FLAIR (source)"),
        "{planned}"
    );
    // Ctrl-C as soon as the first epoch is reported.
    for line in lines.by_ref() {
        if line.expect("line").starts_with("epoch") {
            break;
        }
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("interrupted after")),
        "{rest:?}"
    );
    let before = ok(
        dir,
        &[
            "sql",
            "select status, (select count(*) from epochs where run_id = 'long') as epochs from runs where run_id = 'long'",
            "--format",
            "csv",
        ],
    );
    let row = before.lines().nth(1).expect("row").to_string();
    assert!(row.starts_with("interrupted,"), "{before}");
    let epochs_before: u64 = row["interrupted,".len()..].parse().expect("count");
    assert!(epochs_before >= 1);

    // A new, unrated T1w image: a fresh split would count it as unlabelled target.
    let extra = dir.join("w/sub-extra/anat");
    std::fs::create_dir_all(&extra).expect("mkdir");
    std::fs::write(
        extra.join("sub-extra_T1w.nii"),
        float_volume([8, 8, 8], |v| v as f32),
    )
    .expect("write");
    ok(dir, &["import", "w"]);
    let split_before = ok(
        dir,
        &[
            "sql",
            "select domain, \"set\", count(*) from splits where split_id = 'long' group by all order by all",
            "--format",
            "csv",
        ],
    );

    // Only the run name: the stored configuration (method, preset, seed), sequences and
    // split are reused.
    let resumed = ok(
        dir,
        &[
            "train",
            "--resume",
            "long",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    assert!(
        resumed.contains("completed after") || resumed.contains("stopped early after"),
        "{resumed}"
    );
    assert_eq!(
        resumed.lines().next(),
        Some(planned.as_str()),
        "the resumed plan is the stored one: same sequences, same sets"
    );
    let split_after = ok(
        dir,
        &[
            "sql",
            "select domain, \"set\", count(*) from splits where split_id = 'long' group by all order by all",
            "--format",
            "csv",
        ],
    );
    assert_eq!(split_after, split_before);
    let sequences = ok(
        dir,
        &[
            "sql",
            "select source_sequence, target_sequence from runs where run_id = 'long'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(sequences.lines().nth(1), Some("FLAIR,T1w"));
    let after = ok(
        dir,
        &[
            "sql",
            "select status, count(e.epoch), min(e.epoch), max(e.epoch) from runs r join epochs e using (run_id) where run_id = 'long' group by status",
            "--format",
            "csv",
        ],
    );
    let fields: Vec<String> = after
        .lines()
        .nth(1)
        .expect("row")
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(fields[0], "completed", "{after}");
    let (count, first, last): (u64, u64, u64) = (
        fields[1].parse().expect("count"),
        fields[2].parse().expect("min"),
        fields[3].parse().expect("max"),
    );
    assert!(
        count > epochs_before,
        "training went on after the resume: {after}"
    );
    assert_eq!(
        last - first + 1,
        count,
        "no epoch lost or repeated: {after}"
    );

    // Rating the new target image changes the labels the run was trained on: a resume
    // is refused and says how to start a new run.
    std::fs::write(
        dir.join("extra.tsv"),
        "subject\tsuffix\tcode\nextra\tT1w\ta\n",
    )
    .expect("write");
    ok(
        dir,
        &["ratings", "import", "extra.tsv", "--rater", "rater1"],
    );
    let refused = cdwqc(
        dir,
        &[
            "train",
            "--resume",
            "long",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    assert!(
        !refused.status.success(),
        "{}",
        crate::support::stdout(&refused)
    );
    let message = stderr(&refused);
    for part in [
        "labels changed since run long started",
        "cdwqc train --task usable --method ssda --preset tiny --source FLAIR --target T1w --seed 2 --run NEW",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    let status = ok(
        dir,
        &[
            "sql",
            "select status from runs where run_id = 'long'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        status, "status\ncompleted\n",
        "a refused resume changes nothing"
    );
}
