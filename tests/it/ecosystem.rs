//! What users of neighbouring tools expect: output people read (no Rust debug forms),
//! shell completions and man pages, a labelled montage.

use std::path::Path;
use std::process::Command;

use crate::support::{cdwqc, ok, stdout};
use crate::train::tiny_rated_warehouse;

/// Fails when `text` holds Rust's debug form of an `Option` or of a shape.
fn assert_readable(command: &str, text: &str) {
    for debug in ["Some(", "None", "Cuda(", "EarlyStopped"] {
        assert!(
            !text.contains(debug),
            "`cdwqc {command}` printed {debug:?}:\n{text}"
        );
    }
}

#[test]
fn train_infer_and_inspect_print_no_debug_formatting() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
    let inspected = ok(dir, &["inspect", "w/sub-0001"]);
    assert_readable("inspect", &inspected);
    // Shapes and voxel sizes as people write them: 40x48x40, 1.000x1.000x1.000 mm.
    let first = inspected.lines().next().expect("a line per file");
    assert!(
        first.split("  ").any(|field| {
            let dims: Vec<&str> = field.split('x').collect();
            dims.len() >= 3 && dims.iter().all(|d| d.parse::<u32>().is_ok())
        }),
        "{first}"
    );
    assert!(!first.contains('['), "{first}");

    let trained = ok(
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
        ],
    );
    assert_readable("train", &trained);
    let last = trained.lines().last().expect("a summary line");
    assert!(
        last.contains("completed after 1 epochs; best epoch 1, validation BA "),
        "{last}"
    );
    assert!(trained.contains("epoch   1 [main] loss"), "{trained}");

    let predicted = ok(
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
    assert_readable("infer", &predicted);
    let report = ok(dir, &["report", "model", "--run", "usable-ssda-seed1"]);
    assert_readable("report model", &report);
    let agreement = ok(dir, &["report", "agreement"]);
    assert_readable("report agreement", &agreement);

}

