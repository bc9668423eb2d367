//! Inference through a TorchScript model that follows the documented input contract.

use std::path::Path;

use cdwqc::model::data::Item;
use cdwqc::model::infer::{InferOptions, ScriptModel, predict_items};
use cdwqc::model::preset::Preset;
use tch::Device;

use crate::support::write_mean_classifier;

#[test]
fn torchscript_model_predicts_per_item_with_failures_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mean_classifier.pt");
    let preset = Preset::builtin("tiny").unwrap();
    let [_, d, h, w] = preset.input_shape();
    write_mean_classifier(&path, [d, h, w]);
    let n = preset.preprocess.voxel_count();
    let model = ScriptModel::load(&path, preset, Device::Cpu).unwrap();
    let items = vec![
        Item::from_tensor("dark", vec![0.2; n], None),
        Item::from_tensor("wrong-size", vec![0.2; 10], None),
        Item::from_tensor("bright", vec![0.8; n], None),
    ];
    let options = InferOptions {
        batch_size: 2,
        ..InferOptions::default()
    };
    let mut progress = Vec::new();
    let results = predict_items(&model, &items, &options, &mut |done, total| {
        progress.push((done, total))
    });
    assert_eq!(progress, vec![(2, 3), (3, 3)]);
    let dark = results[0].as_ref().unwrap();
    assert_eq!(dark.label, 0);
    // softmax([3, -3])[0] = 1 / (1 + e^-6)
    let expected = 1.0 / (1.0 + (-6.0f32).exp());
    assert!((dark.probs[0] - expected).abs() < 1e-5, "{:?}", dark.probs);
    assert!(
        results[1]
            .as_ref()
            .unwrap_err()
            .error
            .contains("wrong-size")
    );
    assert_eq!(results[2].as_ref().unwrap().label, 1);
}

#[test]
fn missing_torchscript_file_is_an_error_naming_it() {
    let preset = Preset::builtin("tiny").unwrap();
    let err = ScriptModel::load(Path::new("/nonexistent/model.pt"), preset, Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/model.pt"));
}

/// The run row of a TorchScript model's predictions, as `cdwqc sql` shows it.
fn torchscript_runs(dir: &Path) -> serde_json::Value {
    let rows = crate::support::ok(
        dir,
        &[
            "sql",
            "--format",
            "json",
            "SELECT run_id, kind, task, method, preset, status, config::JSON->>'sha256' AS sha256, \
             (SELECT count(*) FROM predictions p WHERE p.run_id = r.run_id) AS predictions \
             FROM runs r ORDER BY run_id",
        ],
    );
    serde_json::from_str(&rows).unwrap()
}

fn predictions_of(dir: &Path, run: &str) -> String {
    crate::support::ok(
        dir,
        &[
            "sql",
            "--format",
            "csv",
            &format!(
                "SELECT image_id, label, probabilities FROM predictions \
                 WHERE run_id = '{run}' ORDER BY image_id"
            ),
        ],
    )
}

#[test]
fn a_torchscript_run_has_a_row_and_never_mixes_another_files_predictions_into_it() {
    use crate::support::{cdwqc, ok, stderr, write_mean_classifier_with_gain};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(
        dir,
        &[
            "synth", "--out", "w", "--t1", "0", "--flair", "4", "--other", "0", "--grid", "tiny",
            "--seed", "3",
        ],
    );
    ok(dir, &["init"]);
    ok(dir, &["import", "w"]);
    let [_, d, h, w] = Preset::builtin("tiny").unwrap().input_shape();
    for (folder, gain) in [("a", 10.0), ("b", -10.0)] {
        std::fs::create_dir(dir.join(folder)).unwrap();
        write_mean_classifier_with_gain(&dir.join(folder).join("model.pt"), [d, h, w], gain);
    }
    let infer = |file: &str, extra: &[&str]| {
        let mut args = vec!["infer", "--torchscript", file];
        args.extend_from_slice(extra);
        if !extra.contains(&"--preset") {
            args.extend_from_slice(&["--preset", "tiny"]);
        }
        cdwqc(dir, &args)
    };

    let first = infer("a/model.pt", &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let runs = torchscript_runs(dir);
    let run = &runs[0];
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(run["run_id"], "torchscript-model.pt", "{run}");
    assert_eq!(
        (
            &run["kind"],
            &run["task"],
            &run["method"],
            &run["preset"],
            &run["status"]
        ),
        (
            &"infer".into(),
            &"usable".into(),
            &"torchscript".into(),
            &"tiny".into(),
            &"completed".into()
        ),
        "{run}"
    );
    assert_eq!(run["sha256"].as_str().unwrap().len(), 64, "{run}");
    assert_eq!(run["predictions"], 4, "{run}");
    let before = predictions_of(dir, "torchscript-model.pt");

    // The same file again replaces its own predictions under the same run.
    let again = infer("a/model.pt", &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(predictions_of(dir, "torchscript-model.pt"), before);

    // Another file with the same name would land in the same run: refused, naming both.
    let other = infer("b/model.pt", &[]);
    assert!(!other.status.success());
    let message = stderr(&other);
    assert!(
        message
            .contains("run torchscript-model.pt holds the predictions of another TorchScript file")
            && message.contains("a/model.pt")
            && message.contains("b/model.pt")
            && message.contains("--as"),
        "{message}"
    );
    // The same file for another task or on another grid: refused too.
    let task = infer("a/model.pt", &["--task", "quality"]);
    assert!(
        !task.status.success() && stderr(&task).contains("predictions, not quality"),
        "{}",
        stderr(&task)
    );
    std::fs::write(
        dir.join("wider.toml"),
        "name = \"tiny\"\ndescription = \"the tiny grid, clipped wider\"\nbatch_size = 4\n\
         epochs = 5\n[preprocess]\nshape = [24, 24, 24]\nspacing_mm = 8.0\n\
         clip_low_percentile = 0.0\nclip_high_percentile = 100.0\n",
    )
    .unwrap();
    let grid = infer("a/model.pt", &["--preset", "wider.toml"]);
    assert!(
        !grid.status.success() && stderr(&grid).contains("on the preset tiny"),
        "{}",
        stderr(&grid)
    );
    assert_eq!(predictions_of(dir, "torchscript-model.pt"), before);

    // Under a run id of its own the other file predicts; a training run's id is refused.
    let renamed = infer("b/model.pt", &["--as", "torchscript-b"]);
    assert!(renamed.status.success(), "{}", stderr(&renamed));
    let runs = torchscript_runs(dir);
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    assert_ne!(runs[0]["sha256"], runs[1]["sha256"], "{runs}");
    assert_eq!(predictions_of(dir, "torchscript-model.pt"), before);
    ok(
        dir,
        &[
            "sql",
            "--write",
            "INSERT INTO runs (run_id, kind, task, status, started_at) \
             VALUES ('trained', 'train', 'usable', 'completed', now())",
        ],
    );
    // A device is no model file: refused at once, not read forever.
    let device = infer("/dev/zero", &["--as", "zero"]);
    assert!(
        !device.status.success() && stderr(&device).contains("/dev/zero: not a regular file"),
        "{}",
        stderr(&device)
    );
    let trained = infer("a/model.pt", &["--as", "trained"]);
    assert!(
        !trained.status.success()
            && stderr(&trained).contains("run trained exists and is not a TorchScript model's run"),
        "{}",
        stderr(&trained)
    );
}
