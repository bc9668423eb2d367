//! `cdwqc model export` and `cdwqc infer --model`: a tiny trained run exported to a
//! model folder predicts in another store under a run of its own, which `report model`
//! scores against that store's consensus; tampered or truncated weights are refused.

use std::path::Path;

use serde_json::Value;

use crate::support::{cdwqc, failure, ok, stderr, stdout};
use crate::train::{tiny_rated_warehouse, train_tiny};

fn csv(dir: &Path, db: &str, sql: &str) -> String {
    ok(dir, &["--db", db, "sql", sql, "--format", "csv"])
}

#[test]
fn exported_model_predicts_in_another_store_and_refuses_tampered_weights() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
    ok(
        dir,
        &[
            "train",
            "--preset",
            "tiny",
            "--task",
            "quality",
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
            "q1",
        ],
    );
    let out = ok(
        dir,
        &[
            "model",
            "export",
            "--run",
            "q1",
            "--name",
            "tiny-quality",
            "--out",
            "exported",
            "--licence",
            "CC0-1.0",
        ],
    );
    assert!(out.contains("exported/tiny-quality"), "{out}");
    let model_dir = dir.join("exported/tiny-quality");
    let card = std::fs::read_to_string(model_dir.join("model.toml")).expect("card");
    for line in [
        "task = \"quality\"",
        "classes = [\"good\", \"medium\", \"bad\"]",
        "method = \"ssda\"",
        "licence = \"CC0-1.0\"",
        "[preset.preprocess]",
        "shape = [24, 24, 24]",
        "run = \"q1\"",
    ] {
        assert!(card.contains(line), "{line} missing from\n{card}");
    }
    let weights = std::fs::read(model_dir.join("weights.safetensors")).expect("weights");
    assert_eq!(
        weights,
        std::fs::read(dir.join("models/runs/q1/best.safetensors")).expect("best")
    );
    // Exporting over an existing model needs --force; a training run that is not
    // there cannot be exported.
    let again = cdwqc(
        dir,
        &[
            "model",
            "export",
            "--run",
            "q1",
            "--name",
            "tiny-quality",
            "--out",
            "exported",
        ],
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );
    let none = cdwqc(dir, &["model", "export", "--run", "nope", "--name", "x"]);
    assert!(stderr(&none).contains("no run nope"), "{}", stderr(&none));

    // Another store, another warehouse: no training there.
    let other = dir.join("other");
    std::fs::create_dir(&other).expect("other");
    ok(
        &other,
        &[
            "synth", "--out", "w", "--t1", "0", "--flair", "10", "--other", "0", "--grid", "tiny",
            "--seed", "9",
        ],
    );
    ok(&other, &["init"]);
    ok(&other, &["import", "w"]);
    ok(
        &other,
        &[
            "ratings",
            "import",
            "w/derivatives/cdwqc-synth/ratings/rater1.tsv",
            "--rater",
            "r1",
        ],
    );
    let model = model_dir.display().to_string();
    let infer = [
        "infer",
        "--model",
        model.as_str(),
        "--device",
        "cpu",
        "--threads",
        "1",
    ];
    let printed = ok(&other, &infer);
    assert!(printed.contains("model:tiny-quality"), "{printed}");
    let db = "cdwqc.duckdb";
    assert_eq!(
        csv(
            &other,
            db,
            "select kind, task, method, preset, status from runs"
        ),
        "kind,task,method,preset,status\ninfer,quality,ssda,tiny,completed\n"
    );
    let flair = csv(
        &other,
        db,
        "select count(*) from images where suffix = 'FLAIR'",
    );
    let predicted = csv(
        &other,
        db,
        "select count(*) from predictions where run_id = 'model:tiny-quality' and error is null",
    );
    assert_eq!(predicted.lines().nth(1), flair.lines().nth(1));
    // An exported SSDA model gives its domain head's output with each prediction.
    let with_domain = csv(
        &other,
        db,
        "select count(*) from predictions where run_id = 'model:tiny-quality' and domain_target between 0 and 1",
    );
    assert_eq!(with_domain.lines().nth(1), flair.lines().nth(1));
    // Adapted to this warehouse (AdaBN on 4 of its images, no label): a run of its own,
    // other probabilities, the images used in its metrics.
    let adapted = ok(
        &other,
        &[
            "infer",
            "--model",
            model.as_str(),
            "--as",
            "model:adapted",
            "--adapt-batchnorm",
            "4",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    assert!(adapted.contains("on up to 4 of the"), "{adapted}");
    // --threshold with --model: every image reaches a threshold of 0 on its last class
    // (it was accepted, and ignored); `auto` has no validation images to pick from, and
    // a number out of [0, 1] is refused, both before any run is stored.
    ok(
        &other,
        &[
            "infer",
            "--model",
            model.as_str(),
            "--as",
            "model:all-bad",
            "--threshold",
            "0",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    assert_eq!(
        csv(
            &other,
            db,
            "select string_agg(distinct label, ',') as labels from predictions
             where run_id = 'model:all-bad' and error is null"
        ),
        "labels\nbad\n"
    );
    for (threshold, said) in [("auto", "give a number in [0, 1]"), ("1.5", "[0, 1]")] {
        let o = cdwqc(
            &other,
            &[
                "infer",
                "--model",
                model.as_str(),
                "--as",
                "model:refused",
                "--threshold",
                threshold,
                "--device",
                "cpu",
            ],
        );
        assert!(!o.status.success(), "{threshold}");
        assert!(stderr(&o).contains(said), "{threshold}: {}", stderr(&o));
    }
    assert_eq!(
        csv(
            &other,
            db,
            "select count(*) as n from runs where run_id = 'model:refused'"
        ),
        "n\n0\n"
    );
    ok(
        &other,
        &[
            "sql",
            "--write",
            "delete from predictions where run_id = 'model:all-bad'; delete from runs where run_id = 'model:all-bad'",
        ],
    );
    assert_eq!(
        csv(
            &other,
            db,
            "select metrics->>'adapted_batchnorm_images' as used from runs where run_id = 'model:adapted'"
        ),
        "used\n4\n"
    );
    assert_eq!(
        csv(
            &other,
            db,
            "select count(*) as same from predictions a join predictions b using (image_id)
             where a.run_id = 'model:tiny-quality' and b.run_id = 'model:adapted'
               and a.probabilities = b.probabilities"
        ),
        "same\n0\n",
        "adapting changes every prediction"
    );
    ok(
        &other,
        &[
            "sql",
            "--write",
            "delete from predictions where run_id = 'model:adapted'; delete from runs where run_id = 'model:adapted'",
        ],
    );

    // Predicting again replaces the predictions under the same run.
    ok(&other, &infer);
    assert_eq!(
        csv(&other, db, "select count(*) from runs").lines().nth(1),
        Some("1")
    );

    let report: Value = serde_json::from_str(&ok(
        &other,
        &[
            "report",
            "model",
            "--run",
            "model:tiny-quality",
            "--set",
            "all",
            "--json",
            "--bootstrap",
            "50",
        ],
    ))
    .expect("model report JSON");
    assert_eq!(report["task"], "quality");
    assert_eq!(report["run"]["kind"], "infer");
    let sha = card
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("sha256 line");
    assert_eq!(report["run"]["model_sha256"], sha);
    assert!(report["overall"]["images"].as_u64().expect("images") > 0);
    let bad = &report["overall"]["per_class"][2];
    assert_eq!(bad["class"], "bad");
    assert!(bad.get("balanced_accuracy_one_vs_rest").is_some(), "{bad}");
    // No split here: every image is unseen by the model, none is held-out test.
    let unseen: Value = serde_json::from_str(&ok(
        &other,
        &[
            "report",
            "model",
            "--run",
            "model:tiny-quality",
            "--set",
            "unseen",
            "--json",
            "--bootstrap",
            "50",
        ],
    ))
    .expect("unseen JSON");
    assert_eq!(unseen["overall"]["images"], report["overall"]["images"]);
    let test = cdwqc(
        &other,
        &[
            "report",
            "model",
            "--run",
            "model:tiny-quality",
            "--set",
            "test",
        ],
    );
    assert!(
        stderr(&test).contains("no data split, so it has no test set"),
        "{}",
        stderr(&test)
    );

    // The score goes into the card under its label, with the same figures as the report.
    let evaluate = [
        "model",
        "evaluate",
        model.as_str(),
        "--label",
        "other-warehouse",
        "--description",
        "ten FLAIR images of another seed",
        "--set",
        "all",
        "--bootstrap",
        "50",
        "--json",
    ];
    let recorded: Value = serde_json::from_str(&ok(&other, &evaluate)).expect("evaluation JSON");
    assert_eq!(recorded["run"], "model:tiny-quality");
    assert_eq!(recorded["images"], report["overall"]["images"]);
    assert_eq!(
        recorded["balanced_accuracy"],
        report["overall"]["balanced_accuracy"]["value"]
    );
    assert_eq!(recorded["one_vs_rest"][2]["class"], "bad");
    ok(&other, &evaluate);
    let card_now = std::fs::read_to_string(model_dir.join("model.toml")).expect("card");
    assert_eq!(
        card_now.matches("[[evaluations]]").count(),
        1,
        "a second evaluation of a label replaces the first: {card_now}"
    );
    assert!(
        card_now.contains("label = \"other-warehouse\""),
        "{card_now}"
    );
    ok(&other, &["model", "show", model.as_str()]);
    // A run of another task is refused, and the card is left as it was.
    let wrong = cdwqc(
        &other,
        &[
            "model",
            "evaluate",
            model.as_str(),
            "--label",
            "x",
            "--run",
            "nope",
        ],
    );
    assert!(!wrong.status.success());
    assert_eq!(
        std::fs::read_to_string(model_dir.join("model.toml")).expect("card"),
        card_now
    );

    // Tampered weights (one byte changed) and truncated weights are refused, naming
    // the file; nothing is predicted.
    let path = model_dir.join("weights.safetensors");
    let mut tampered = weights.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    std::fs::write(&path, &tampered).expect("tamper");
    let refused = cdwqc(&other, &infer);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("weights.safetensors") && message.contains("SHA-256"),
        "{message}"
    );
    let shown = cdwqc(dir, &["model", "show", &model]);
    assert!(!shown.status.success(), "model show checks the weights too");
    std::fs::write(&path, &weights[..weights.len() / 2]).expect("truncate");
    let message = stderr(&cdwqc(&other, &infer));
    assert!(
        message.contains("weights.safetensors") && message.contains("truncated"),
        "{message}"
    );
    std::fs::write(&path, &weights).expect("restore");
    let shown = ok(dir, &["model", "show", &model]);
    assert!(shown.contains("name = \"tiny-quality\""), "{shown}");

    // An image whose prediction failed (a flagged registration) is left out of the
    // scores, or scored as the class `--failed-as` names.
    let chosen = csv(
        &other,
        db,
        "select p.image_id, p.label from predictions p join ratings_latest r using (image_id)
         where p.run_id = 'model:tiny-quality' and r.quality is not null order by 1 limit 1",
    );
    let (image, was) = chosen
        .lines()
        .nth(1)
        .and_then(|l| l.split_once(','))
        .expect("a scored image");
    ok(
        &other,
        &[
            "sql",
            "--write",
            &format!(
                "update predictions set label = null, probabilities = null,
                 error = 'registration failed: test' where run_id = 'model:tiny-quality' and image_id = {image}"
            ),
        ],
    );
    let report_args = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec![
            "report",
            "model",
            "--run",
            "model:tiny-quality",
            "--set",
            "all",
        ];
        args.extend_from_slice(extra);
        args
    };
    let scored = |extra: &[&'static str]| -> Value {
        let args = report_args(&[&["--json", "--bootstrap", "20"], extra].concat());
        serde_json::from_str(&ok(&other, &args)).expect("report JSON")
    };
    let predicted_bad = |r: &Value| -> u64 {
        r["overall"]["confusion"]
            .as_array()
            .expect("confusion")
            .iter()
            .map(|row| row[2].as_u64().expect("count"))
            .sum()
    };
    let images = report["overall"]["images"].as_u64().expect("images");
    let left_out = scored(&[]);
    assert_eq!(left_out["failed"], 1);
    assert_eq!(left_out["overall"]["images"].as_u64(), Some(images - 1));
    assert!(left_out.get("failed_as").is_none_or(|v| v.is_null()));
    let as_bad = scored(&["--failed-as", "bad"]);
    assert_eq!(as_bad["failed"], 1);
    assert_eq!(as_bad["failed_as"], "bad");
    assert_eq!(as_bad["overall"]["images"].as_u64(), Some(images));
    let before = predicted_bad(&report) - u64::from(was == "bad");
    assert_eq!(predicted_bad(&as_bad), before + 1, "{}", as_bad["overall"]);
    let text = ok(&other, &report_args(&["--failed-as", "bad"]));
    assert!(text.contains("1 failed to load, scored as bad"), "{text}");
    let wrong = cdwqc(&other, &report_args(&["--failed-as", "reject"]));
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong)
            .contains("--failed-as reject: task quality has the classes good, medium, bad"),
        "{}",
        stderr(&wrong)
    );
}

/// Largest absolute difference between the convolution weights of two weight files.
fn conv_weight_distance(a: &Path, b: &Path) -> f64 {
    let read = |p: &Path| -> std::collections::BTreeMap<String, tch::Tensor> {
        tch::Tensor::read_safetensors(p)
            .expect("safetensors")
            .into_iter()
            .filter(|(name, _)| name.contains("conv") && name.ends_with("weight"))
            .collect()
    };
    let (a, b) = (read(a), read(b));
    assert!(!a.is_empty(), "no convolution weights in {}", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(name, t)| (t - &b[name]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn a_run_starts_from_an_exported_model_and_refuses_one_that_does_not_fit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--task",
            "quality",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        cdwqc(dir, &args)
    };
    let first = train(&["--preset", "tiny", "--seed", "1", "--run", "q1"]);
    assert!(first.status.success(), "{}", stderr(&first));
    ok(
        dir,
        &[
            "model",
            "export",
            "--run",
            "q1",
            "--name",
            "tiny-quality",
            "--out",
            "exported",
        ],
    );
    let model = dir.join("exported/tiny-quality");
    let model_weights = model.join("weights.safetensors");

    // No --preset: the model's own (tiny). A learning rate of 1e-9 leaves the weights
    // where the model put them; finetune skips its source pretraining.
    let started = train(&[
        "--seed",
        "1",
        "--method",
        "finetune",
        "--init-model",
        "exported/tiny-quality",
        "--learning-rate",
        "1e-9",
        "--run",
        "from-model",
    ]);
    assert!(started.status.success(), "{}", stderr(&started));
    assert!(
        stdout(&started).contains("starting from model tiny-quality"),
        "{}",
        stdout(&started)
    );
    assert_eq!(
        csv(
            dir,
            "cdwqc.duckdb",
            "select preset, config->'initial_weights'->>'model' as model,
                    (select count(*) from epochs e where e.run_id = r.run_id) as epochs
             from runs r where run_id = 'from-model'"
        ),
        "preset,model,epochs\ntiny,tiny-quality,1\n"
    );
    let from_model = dir.join("models/runs/from-model/last.safetensors");
    let near = conv_weight_distance(&model_weights, &from_model);
    assert!(near < 1e-5, "weights moved by {near} from the model's");
    // A random start (another seed than the model's) is far from the model.
    let random = train(&[
        "--seed",
        "2",
        "--preset",
        "tiny",
        "--method",
        "target-only",
        "--learning-rate",
        "1e-9",
        "--run",
        "random",
    ]);
    assert!(random.status.success(), "{}", stderr(&random));
    let far = conv_weight_distance(
        &model_weights,
        &dir.join("models/runs/random/last.safetensors"),
    );
    assert!(far > 1e-3, "a random start is only {far} from the model");

    // Refused before anything is stored: another grid, another task, changed weights.
    let runs = || csv(dir, "cdwqc.duckdb", "select count(*) as n from runs");
    let before = runs();
    let grid = train(&["--preset", "demo", "--init-model", "exported/tiny-quality"]);
    assert!(!grid.status.success());
    assert!(
        stderr(&grid).contains("was trained on images prepared by preset tiny (24x24x24"),
        "{}",
        stderr(&grid)
    );
    let task = cdwqc(
        dir,
        &[
            "train",
            "--task",
            "usable",
            "--init-model",
            "exported/tiny-quality",
            "--device",
            "cpu",
        ],
    );
    assert!(
        stderr(&task).contains("predicts task quality, not usable"),
        "{}",
        stderr(&task)
    );
    let mut bytes = std::fs::read(&model_weights).expect("weights");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model_weights, &bytes).expect("tamper");
    let tampered = train(&["--init-model", "exported/tiny-quality", "--run", "t"]);
    assert!(
        stderr(&tampered).contains("does not match")
            && stderr(&tampered).contains("weights.safetensors"),
        "{}",
        stderr(&tampered)
    );
    let missing = train(&["--init-model", "no-such-model"]);
    assert!(
        stderr(&missing).contains("no model \"no-such-model\""),
        "{}",
        stderr(&missing)
    );
    assert_eq!(runs(), before, "a refused run stores nothing");
}

/// Probabilities of a run, per image, in image order.
fn probabilities(dir: &Path, run: &str) -> Vec<(i64, Vec<f64>)> {
    let text = csv(
        dir,
        "cdwqc.duckdb",
        &format!(
            "select image_id, array_to_string(probabilities, ' ') as p from predictions
             where run_id = '{run}' and error is null order by image_id"
        ),
    );
    text.lines()
        .skip(1)
        .map(|line| {
            let (id, p) = line.split_once(',').expect("two columns");
            let p = p
                .split(' ')
                .map(|v| v.parse::<f64>().expect("probability"))
                .collect();
            (id.parse().expect("image id"), p)
        })
        .collect()
}

#[test]
fn a_model_with_an_iqm_forest_mixes_it_in_and_refuses_a_tampered_forest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(
        dir,
        &[
            "synth", "--out", "w", "--t1", "0", "--flair", "40", "--other", "0", "--grid", "tiny",
            "--seed", "5",
        ],
    );
    ok(dir, &["init"]);
    ok(dir, &["import", "w"]);
    ok(
        dir,
        &[
            "ratings",
            "import",
            "w/derivatives/cdwqc-synth/ratings/rater1.tsv",
            "--rater",
            "r1",
        ],
    );
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
            "--run",
            "u1",
        ],
    );
    let export = |name: &str, weight: &str| {
        ok(
            dir,
            &[
                "model",
                "export",
                "--run",
                "u1",
                "--name",
                name,
                "--out",
                "exported",
                "--iqm-forest",
                "--iqm-forest-weight",
                weight,
                "--trees",
                "25",
            ],
        )
    };
    let printed = export("mixed", "0.5");
    assert!(printed.contains("IQM forest: 25 trees on"), "{printed}");
    export("forest", "1");
    let mixed_dir = dir.join("exported/mixed");
    let card = std::fs::read_to_string(mixed_dir.join("model.toml")).expect("card");
    for line in [
        "[iqm_forest]",
        "file = \"iqm-forest.safetensors\"",
        "weight = 0.5",
        "trees = 25",
    ] {
        assert!(card.contains(line), "{line} missing from\n{card}");
    }
    // The forest's file holds what grows it, and the same file grows the same forest.
    let forest_file = std::fs::read(mixed_dir.join("iqm-forest.safetensors")).expect("forest");
    assert_eq!(
        forest_file,
        std::fs::read(dir.join("exported/forest/iqm-forest.safetensors")).expect("forest")
    );

    let other = dir.join("other");
    std::fs::create_dir(&other).expect("other");
    ok(
        &other,
        &[
            "synth", "--out", "w", "--t1", "0", "--flair", "24", "--other", "0", "--grid", "tiny",
            "--seed", "9",
        ],
    );
    ok(&other, &["init"]);
    ok(&other, &["import", "w"]);
    std::fs::copy(other.join("cdwqc.duckdb"), other.join("sharded.duckdb")).expect("copy");
    let infer = |model: &str, extra: &[&str]| {
        let path = dir.join("exported").join(model).display().to_string();
        let mut args = vec![
            "infer",
            "--model",
            &path,
            "--device",
            "cpu",
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        cdwqc(&other, &args)
    };
    let mixed = infer("mixed", &[]);
    assert!(mixed.status.success(), "{}", stderr(&mixed));
    let printed = stdout(&mixed);
    assert!(printed.contains("IQM forest mixed into"), "{printed}");
    let network = infer("mixed", &["--network-only", "--as", "model:network"]);
    assert!(network.status.success(), "{}", stderr(&network));
    assert!(
        !stdout(&network).contains("IQM forest"),
        "{}",
        stdout(&network)
    );
    assert!(infer("forest", &[]).status.success());
    let (m, n, f) = (
        probabilities(&other, "model:mixed"),
        probabilities(&other, "model:network"),
        probabilities(&other, "model:forest"),
    );
    assert!(m.len() >= 10, "{m:?}");
    assert_eq!(m.len(), n.len());
    let mut differs = false;
    for ((mi, mp), ((ni, np), (fi, fp))) in m.iter().zip(n.iter().zip(&f)) {
        assert_eq!((mi, mi), (ni, fi));
        for c in 0..2 {
            let expected = 0.5 * np[c] + 0.5 * fp[c];
            assert!(
                (mp[c] - expected).abs() < 1e-9,
                "{mp:?} vs {np:?} and {fp:?}"
            );
        }
        differs |= (mp[1] - np[1]).abs() > 1e-9;
    }
    assert!(differs, "the forest changes some probability");

    // Sharded: three shards predict with the network, the merge records the model's run
    // and mixes its forest in: the very predictions of the one process above.
    let mixed_path = mixed_dir.display().to_string();
    let sharded = ok(
        &other,
        &[
            "--db",
            "sharded.duckdb",
            "slurm",
            "submit",
            "infer",
            "--model",
            &mixed_path,
            "--shards",
            "3",
            "--device",
            "cpu",
            "--dir",
            "shards",
            "--local",
            "--cpus-per-task",
            "1",
        ],
    );
    assert!(
        sharded.contains(&format!(
            "model:mixed: {} predictions from 3 parts checked (0 failed images); IQM forest mixed into {}",
            m.len(),
            m.len()
        )),
        "{sharded}"
    );
    let rows = |db: &str| {
        csv(
            &other,
            db,
            "select image_id, label, array_to_string(probabilities, ' ') as p from predictions \
             where run_id = 'model:mixed' order by image_id",
        )
    };
    assert_eq!(rows("sharded.duckdb"), rows("cdwqc.duckdb"));
    let run = |db: &str| {
        csv(
            &other,
            db,
            "select kind, status, method, config, metrics->>'iqm_forest_images' as mixed \
             from runs where run_id = 'model:mixed'",
        )
    };
    assert_eq!(run("sharded.duckdb"), run("cdwqc.duckdb"));
    let again = ok(&other, &["--db", "sharded.duckdb", "merge", "shards"]);
    assert!(again.contains("nothing written"), "{again}");
    // A merge cut off after storing the rows but before completing the run: the next
    // merge completes it.
    ok(
        &other,
        &[
            "--db",
            "sharded.duckdb",
            "sql",
            "--write",
            "update runs set status = 'running' where run_id = 'model:mixed'",
        ],
    );
    ok(&other, &["--db", "sharded.duckdb", "merge", "shards"]);
    assert_eq!(run("sharded.duckdb"), run("cdwqc.duckdb"));
    assert_eq!(
        csv(
            &other,
            "cdwqc.duckdb",
            "select metrics->>'iqm_forest_images' as mixed from runs where run_id = 'model:mixed'"
        ),
        format!("mixed\n{}\n", m.len())
    );
    // A target-only network has no trained domain head: no domain output is stored.
    assert_eq!(
        csv(
            &other,
            "cdwqc.duckdb",
            "select count(*) as with_domain from predictions where domain_target is not null"
        ),
        "with_domain\n0\n"
    );
    // The network's predictions do not go under the mixed run's id, nor the reverse.
    let clash = infer("mixed", &["--network-only"]);
    assert!(!clash.status.success());
    assert!(
        stderr(&clash).contains("with its IQM forest"),
        "{}",
        stderr(&clash)
    );

    // A changed forest file is refused before anything is predicted.
    let path = mixed_dir.join("iqm-forest.safetensors");
    let mut tampered = forest_file.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    std::fs::write(&path, &tampered).expect("tamper");
    let refused = infer("mixed", &["--as", "model:again"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("iqm-forest.safetensors") && message.contains("SHA-256"),
        "{message}"
    );
    assert_eq!(
        csv(
            &other,
            "cdwqc.duckdb",
            "select count(*) as n from runs where run_id = 'model:again'"
        ),
        "n\n0\n"
    );
    // Sharded: refused at submission, and a merge of the job submitted before the file
    // changed refuses too and writes nothing.
    let submit = cdwqc(
        &other,
        &[
            "--db",
            "sharded.duckdb",
            "slurm",
            "submit",
            "infer",
            "--model",
            &mixed_path,
            "--as",
            "model:again",
            "--shards",
            "2",
            "--dir",
            "shards-again",
            "--local",
        ],
    );
    assert!(!submit.status.success());
    assert!(
        stderr(&submit).contains("iqm-forest.safetensors"),
        "{}",
        stderr(&submit)
    );
    assert!(!other.join("shards-again").exists(), "nothing submitted");
    let before = rows("sharded.duckdb");
    let remerge = cdwqc(&other, &["--db", "sharded.duckdb", "merge", "shards"]);
    assert!(!remerge.status.success());
    assert!(
        stderr(&remerge).contains("iqm-forest.safetensors"),
        "{}",
        stderr(&remerge)
    );
    assert_eq!(rows("sharded.duckdb"), before);
    let shown = cdwqc(dir, &["model", "show", &mixed_dir.display().to_string()]);
    assert!(!shown.status.success(), "model show checks the forest too");
    assert!(
        stderr(&shown).contains("iqm-forest.safetensors"),
        "{}",
        stderr(&shown)
    );
    std::fs::write(&path, &forest_file).expect("restore");
    let shown = cdwqc(dir, &["model", "show", &mixed_dir.display().to_string()]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(
        stderr(&shown).contains("training rows of 55 metrics"),
        "{}",
        stderr(&shown)
    );
}

/// `model export --member-run`: seeds trained on one split become one model whose
/// probabilities are the mean of its networks'. A run on another split, a tampered
/// member and an ensemble as a starting point are refused, each naming why.
#[test]
fn an_ensemble_averages_its_networks_and_refuses_another_split() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
    let train = |run: &str, seed: &str, extra: &[&str]| train_tiny(dir, run, seed, extra);
    train("a", "1", &[]);
    train("b", "2", &["--split-seed", "1"]);
    train("c", "3", &[]);
    let export = |name: &str, run: &str, members: &[&str]| {
        let mut args = vec![
            "model", "export", "--run", run, "--name", name, "--out", "exported",
        ];
        for member in members {
            args.extend_from_slice(&["--member-run", member]);
        }
        cdwqc(dir, &args)
    };
    for (name, run) in [("one-a", "a"), ("one-b", "b")] {
        let out = export(name, run, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = export("both", "a", &["b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ensemble member from run b (seed 2)"),
        "{}",
        stdout(&out)
    );
    let card = std::fs::read_to_string(dir.join("exported/both/model.toml")).expect("card");
    for line in [
        "[[members]]",
        "file = \"member-2.safetensors\"",
        "run = \"b\"",
    ] {
        assert!(card.contains(line), "{line} missing from\n{card}");
    }
    let refused = failure(&export("split", "a", &["c"]));
    assert!(
        refused.contains("run c cannot join run a in one model")
            && refused.contains("--split-seed"),
        "{refused}"
    );
    assert!(
        !dir.join("exported/split").exists(),
        "a refused export writes nothing"
    );

    let infer = |model: &str| {
        let path = dir.join("exported").join(model).display().to_string();
        cdwqc(
            dir,
            &[
                "infer",
                "--model",
                &path,
                "--device",
                "cpu",
                "--threads",
                "1",
            ],
        )
    };
    for model in ["one-a", "one-b", "both"] {
        let out = infer(model);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (a, b) = (
        probabilities(dir, "model:one-a"),
        probabilities(dir, "model:one-b"),
    );
    let both = probabilities(dir, "model:both");
    assert_eq!(both.len(), 16);
    assert_ne!(a, b, "two seeds, two networks");
    for ((image, p), ((_, x), (_, y))) in both.iter().zip(a.iter().zip(&b)) {
        for (k, value) in p.iter().enumerate() {
            let mean = (x[k] + y[k]) / 2.0;
            assert!(
                (value - mean).abs() < 1e-5,
                "image {image}: {value} against {mean}"
            );
        }
    }

    let shown = cdwqc(
        dir,
        &[
            "model",
            "show",
            &dir.join("exported/both").display().to_string(),
        ],
    );
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(
        stderr(&shown).contains("member-2.safetensors: size and SHA-256 match the card"),
        "{}",
        stderr(&shown)
    );
    let start = failure(&cdwqc(
        dir,
        &[
            "train",
            "--preset",
            "tiny",
            "--task",
            "usable",
            "--method",
            "finetune",
            "--init-model",
            &dir.join("exported/both").display().to_string(),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--run",
            "from-both",
        ],
    ));
    assert!(
        start.contains("averages 2 networks; a run starts from one"),
        "{start}"
    );

    let member = dir.join("exported/both/member-2.safetensors");
    let mut bytes = std::fs::read(&member).expect("member");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&member, bytes).expect("tamper");
    let tampered = failure(&cdwqc(
        dir,
        &[
            "infer",
            "--model",
            &dir.join("exported/both").display().to_string(),
            "--as",
            "model:tampered",
            "--device",
            "cpu",
        ],
    ));
    assert!(tampered.contains("member-2.safetensors"), "{tampered}");
}

#[test]
fn the_shipped_models_are_found_by_name_from_any_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shown = ok(dir.path(), &["model", "show", "cdwqc-flair-usable"]);
    assert!(
        shown.contains("cdwqc-flair-usable") && shown.contains("usable"),
        "{shown}"
    );
    // A folder of the same name in the working folder's `models/` comes first: a broken
    // one is reported, not silently replaced by the shipped model.
    std::fs::create_dir_all(dir.path().join("models/cdwqc-flair-usable")).expect("dir");
    std::fs::write(
        dir.path().join("models/cdwqc-flair-usable/model.toml"),
        "not a card",
    )
    .expect("card");
    let refused = cdwqc(dir.path(), &["model", "show", "cdwqc-flair-usable"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not a model card"),
        "{}",
        stderr(&refused)
    );
    let missing = cdwqc(dir.path(), &["model", "show", "no-such-model"]);
    assert!(
        stderr(&missing).contains("no model \"no-such-model\""),
        "{}",
        stderr(&missing)
    );
}
