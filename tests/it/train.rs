//! `cdwqc train`, `cdwqc infer` and the model reports end to end on a tiny synthetic
//! warehouse: the split, the run and epoch rows, predictions for every target image,
//! resume after Ctrl-C on the stored split and sequences, and resume refusals (labels
//! changed since the run started).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{cdwqc, failure, float_volume, ok, stderr};

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

/// One epoch of a `target-only` usable run on the tiny preset, one thread, with `extra`
/// options.
pub(crate) fn train_tiny(dir: &Path, run: &str, seed: &str, extra: &[&str]) -> String {
    let mut args = vec![
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
        seed,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--run",
        run,
    ];
    args.extend_from_slice(extra);
    ok(dir, &args)
}

/// A validation set with under five images of a class cannot tell epochs apart: the
/// run keeps its last epoch unless asked to choose by validation loss, says so, stores
/// the rule with its configuration and keeps it on resume.
#[test]
fn a_small_validation_set_keeps_the_last_epoch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
    let train = |run: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--preset",
            "tiny",
            "--task",
            "usable",
            "--method",
            "ssda",
            "--epochs",
            "3",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--run",
            run,
        ];
        args.extend_from_slice(extra);
        ok(dir, &args)
    };
    let config = |run: &str| {
        let out = ok(
            dir,
            &[
                "sql",
                &format!("select config from runs where run_id = '{run}'"),
                "--format",
                "json",
            ],
        );
        let rows: Value = serde_json::from_str(&out).expect("json rows");
        let text = rows[0]["config"].as_str().expect("config text").to_string();
        serde_json::from_str::<Value>(&text).expect("config json")
    };
    let weights = |run: &str, file: &str| {
        std::fs::read(dir.join("models/runs").join(run).join(file)).expect("weights")
    };

    let out = train("auto", &[]);
    assert!(
        out.contains("keeps the last epoch (the smallest class has"),
        "{out}"
    );
    assert!(
        out.contains("completed after 3 epochs; best epoch 3"),
        "{out}"
    );
    assert_eq!(config("auto")["selection"], "last");
    assert_eq!(
        weights("auto", "best.safetensors"),
        weights("auto", "last.safetensors")
    );

    let out = train("by-loss", &["--select", "val-loss"]);
    assert!(!out.contains("keeps the last epoch"), "{out}");
    assert!(config("by-loss").get("selection").is_none());
    let out = train("forced", &["--select", "last"]);
    assert!(out.contains("keeps the last epoch"), "{out}");
    assert_eq!(config("forced")["selection"], "last");
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
    // Temperature scaling fitted on the validation images and stored with the run.
    let calibration = &report["calibration"];
    assert_eq!(calibration["source"], "stored", "{calibration}");
    assert!(calibration["temperature"].as_f64().expect("T") > 0.0);
    assert!(calibration["ece_after"]["value"].is_f64(), "{calibration}");
    let stored = ok(
        dir,
        &[
            "sql",
            "select json_extract(metrics, '$.calibration.validation_images') > 0 from runs where run_id = 'usable-ssda-seed1'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(stored.lines().nth(1), Some("true"), "{stored}");
    let point: Value = serde_json::from_str(&ok(
        dir,
        &[
            "report",
            "model",
            "--run",
            "usable-ssda-seed1",
            "--json",
            "--bootstrap",
            "50",
            "--target-sensitivity",
            "0.95",
        ],
    ))
    .expect("JSON");
    let op = &point["operating_point"];
    assert_eq!(op["positive_class"], "reject", "{op}");
    assert_eq!(op["target"], "sensitivity");
    match op["threshold"]["value"].as_f64() {
        Some(_) => assert!(
            op["validation_sensitivity"]["value"]
                .as_f64()
                .expect("rate")
                >= 0.95,
            "{op}"
        ),
        None => assert!(op["threshold"]["undefined"].is_string(), "{op}"),
    }
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

    // With --loaders the user's split stands, cached or not.
    let chosen = ok(
        dir,
        &[
            "infer",
            "--run",
            "usable-ssda-seed1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--loaders",
            "1",
        ],
    );
    assert!(!chosen.contains("every tensor was cached"), "{chosen}");
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
    let probabilities_query = [
        "sql",
        "select image_id, probabilities from predictions where run_id = 'usable-ssda-seed1' order by image_id",
        "--format",
        "csv",
    ];
    let with_chosen_split = ok(dir, &probabilities_query);
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

    // Every image labelled reject at threshold 0. Every tensor is cached by now, so the
    // network gets every thread there is (the one given).
    let warm = ok(
        dir,
        &[
            "infer",
            "--run",
            "usable-ssda-seed1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--threshold",
            "0",
        ],
    );
    assert!(
        warm.contains("every tensor was cached, so the network ran on 1 thread"),
        "{warm}"
    );
    let labels = ok(
        dir,
        &[
            "sql",
            "select count(*) filter (where label = 'reject'), count(*) from predictions where run_id = 'usable-ssda-seed1'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(labels.lines().nth(1), Some("16,16"), "{labels}");
    // The same libtorch thread count gives the same probabilities bit for bit, through
    // the loader pool or the all-cached path alike (the threshold moves labels only).
    assert_eq!(ok(dir, &probabilities_query), with_chosen_split);
    // An SSDA network's predictions carry its domain head's probability of the target
    // domain.
    let domain = ok(
        dir,
        &[
            "sql",
            "select count(*) filter (where domain_target between 0 and 1), count(*) from predictions where run_id = 'usable-ssda-seed1'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(domain.lines().nth(1), Some("16,16"), "{domain}");
    let bad = cdwqc(
        dir,
        &["infer", "--run", "usable-ssda-seed1", "--threshold", "1.5"],
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--threshold"), "{}", stderr(&bad));

    // Labels from the Dawid-Skene latent truth, kept in the run's configuration.
    let train_on = |labels: &'static str, soft: bool, run: &'static str| {
        let mut args = vec![
            "train",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--seed",
            "2",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--labels",
            labels,
            "--run",
            run,
        ];
        if soft {
            args.push("--soft-targets");
        }
        args
    };
    let out = ok(dir, &train_on("dawid-skene", false, "ds-labels"));
    assert!(out.contains("labels dawid-skene"), "{out}");
    let source = ok(
        dir,
        &[
            "sql",
            "select json_extract_string(config, '$.label_source') from runs where run_id = 'ds-labels'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(source.lines().nth(1), Some("dawid-skene"), "{source}");

    // The same labels as soft targets: the same split and seed, a different loss.
    let out = ok(dir, &train_on("dawid-skene", true, "ds-soft"));
    assert!(out.contains("labels dawid-skene (soft targets)"), "{out}");
    let losses = ok(
        dir,
        &[
            "sql",
            "select r.run_id, json_extract(r.config, '$.soft_targets'), e.train_loss, r.label_snapshot              from runs r join epochs e using (run_id)              where run_id in ('ds-labels', 'ds-soft') and e.epoch = 1 order by r.run_id",
            "--format",
            "csv",
        ],
    );
    let rows: Vec<Vec<&str>> = losses
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{losses}");
    assert_eq!((rows[0][1], rows[1][1]), ("", "true"), "{losses}");
    assert_ne!(
        rows[0][2], rows[1][2],
        "soft targets change the loss: {losses}"
    );
    assert_ne!(
        rows[0][3], rows[1][3],
        "the snapshot holds the posteriors: {losses}"
    );
    let majority = cdwqc(dir, &train_on("majority", true, "soft-majority"));
    assert!(!majority.status.success());
    assert!(
        stderr(&majority).contains("give --labels dawid-skene"),
        "{}",
        stderr(&majority)
    );
    let hard_resumed = cdwqc(
        dir,
        &[
            "train",
            "--resume",
            "ds-labels",
            "--soft-targets",
            "--device",
            "cpu",
        ],
    );
    assert!(!hard_resumed.status.success());
    assert!(
        stderr(&hard_resumed).contains("trained on hard labels"),
        "{}",
        stderr(&hard_resumed)
    );

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

    // An uncertainty queue needs unrated images with predictions: every synthetic
    // image is rated, so first none qualifies, then three whose ratings are removed.
    let queue = |name: &str| {
        cdwqc(
            dir,
            &[
                "queue",
                "create",
                "--strategy",
                "uncertainty",
                "--run",
                "usable-ssda-seed1",
                "--size",
                "2",
                "--random-share",
                "0.5",
                "--raters",
                "zed",
                "--overlap",
                "0",
                "--name",
                name,
            ],
        )
    };
    let none = queue("al-0");
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("no prediction of an unrated image"),
        "{}",
        stderr(&none)
    );
    ok(
        dir,
        &[
            "sql",
            "--write",
            // Chosen by path (image ids follow the order a parallel import finished
            // its files) among usable images, so that the triage below keeps both
            // classes among its validation images on every run.
            "delete from ratings where image_id in (select image_id from splits s join images i using (image_id) \
             where s.split_id = 'usable-ssda-seed1' and s.domain = 'target' and s.label = 'usable' \
             order by i.rel_path limit 3)",
        ],
    );
    let made = queue("al-1");
    let text = String::from_utf8_lossy(&made.stdout).to_string();
    assert!(made.status.success(), "{text}{}", stderr(&made));
    assert!(text.contains("of 3 unrated images"), "{text}");
    assert!(
        text.contains("uncertain (entropy") && text.contains("random"),
        "{text}"
    );
    assert!(text.contains("bits from the target domain"), "{text}");
    let queued = ok(
        dir,
        &[
            "sql",
            "select count(*) from queue_items i join queues q using (queue_id) where q.name = 'al-1'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(queued.lines().nth(1), Some("2"), "{queued}");
    // Each item keeps why it was queued: one uncertain with its entropy, one random.
    let reasons = ok(
        dir,
        &[
            "sql",
            "select q.strategy, q.run_id, i.reason, i.score is not null as scored, \
             i.score between 0 and 1 as in_bits, i.domain_distance >= 0 as far \
             from queue_items i join queues q using (queue_id) \
             where q.name = 'al-1' order by i.reason",
            "--format",
            "csv",
        ],
    );
    let rows: Vec<&str> = reasons.lines().skip(1).collect();
    assert_eq!(
        rows,
        [
            "uncertainty,usable-ssda-seed1,random,false,,",
            "uncertainty,usable-ssda-seed1,uncertain,true,true,true"
        ],
        "{reasons}"
    );

    // Triage: the report's bands add up, and a triage queue holds exactly the unrated
    // images between the thresholds (or is refused when the model decides them all).
    let triage: Value = serde_json::from_str(&ok(
        dir,
        &[
            "report",
            "model",
            "--run",
            "usable-ssda-seed1",
            "--json",
            "--bootstrap",
            "50",
            "--triage",
            "0.95",
        ],
    ))
    .expect("JSON");
    let t = &triage["triage"];
    let count = |k: &str| t[k].as_u64().expect(k);
    assert_eq!(
        count("accepted") + count("rejected") + count("to_review"),
        count("images"),
        "{t}"
    );
    if let (Some(a), Some(r)) = (
        t["accept_below"]["value"].as_f64(),
        t["reject_from"]["value"].as_f64(),
    ) {
        assert!(a <= r, "{t}");
    }
    let bad_rate = cdwqc(
        dir,
        &[
            "report",
            "model",
            "--run",
            "usable-ssda-seed1",
            "--triage",
            "1.5",
        ],
    );
    assert!(
        stderr(&bad_rate).contains("--triage 1.5 is not in (0, 1]"),
        "{}",
        stderr(&bad_rate)
    );
    // Held-out test subjects become validation ones, so that the thresholds have
    // both classes to be picked on.
    ok(
        dir,
        &[
            "sql",
            "--write",
            "update splits set \"set\" = 'validation' where split_id = 'usable-ssda-seed1' and \"set\" = 'test'",
        ],
    );
    let made = cdwqc(
        dir,
        &[
            "queue",
            "create",
            "--strategy",
            "triage",
            "--run",
            "usable-ssda-seed1",
            "--triage",
            "0.95",
            "--raters",
            "zed",
            "--overlap",
            "0",
            "--name",
            "triage-1",
        ],
    );
    let text = format!("{}{}", String::from_utf8_lossy(&made.stdout), stderr(&made));
    assert!(text.contains("triage of 3 unrated images"), "{text}");
    let review: u64 = text
        .split(" to review")
        .next()
        .and_then(|head| head.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no review count in {text}"));
    let queued = ok(
        dir,
        &[
            "sql",
            "select count(*) from queue_items i join queues q using (queue_id) where q.name = 'triage-1'",
            "--format",
            "csv",
        ],
    );
    if review == 0 {
        assert!(!made.status.success() && text.contains("decides every unrated image"));
        assert_eq!(queued.lines().nth(1), Some("0"), "{queued}");
    } else {
        assert!(made.status.success(), "{text}");
        assert_eq!(
            queued.lines().nth(1),
            Some(review.to_string().as_str()),
            "{queued}"
        );
        // Every item is in the stored band: accept_below <= P(reject) < reject_from.
        let outside = ok(
            dir,
            &[
                "sql",
                "select count(*) filter (where i.reason <> 'triage' or q.strategy <> 'triage' \
                 or not (i.score >= q.accept_below and i.score < q.reject_from)) \
                 from queue_items i join queues q using (queue_id) where q.name = 'triage-1'",
                "--format",
                "csv",
            ],
        );
        assert_eq!(outside.lines().nth(1), Some("0"), "{outside}");
    }
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

/// `--split-seed` draws the split apart from the network's seed: two seeds on one split
/// hold the same test subjects, so their scores differ by the seed alone. `--split-of`,
/// which names the run an IQM forest takes its split from, is refused for a network.
#[test]
fn seeds_share_one_split_with_split_seed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
    let train = |run: &str, seed: &str, extra: &[&str]| train_tiny(dir, run, seed, extra);
    let split = |run: &str| {
        ok(
            dir,
            &[
                "sql",
                &format!(
                    "select image_id, \"set\" from splits where split_id = '{run}' order by image_id"
                ),
                "--format",
                "tsv",
            ],
        )
    };
    train("one", "1", &[]);
    train("two-on-one", "2", &["--split-seed", "1"]);
    train("two", "2", &[]);
    assert!(split("one").lines().count() > 10, "{}", split("one"));
    assert_eq!(split("one"), split("two-on-one"));
    assert_ne!(split("one"), split("two"));
    let weights =
        |run: &str| std::fs::read(dir.join("models/runs").join(run).join("best.safetensors"));
    assert_ne!(
        weights("one").expect("weights"),
        weights("two-on-one").expect("weights"),
        "the network's seed still counts"
    );

    let out = failure(&cdwqc(
        dir,
        &[
            "train",
            "--preset",
            "tiny",
            "--method",
            "target-only",
            "--split-of",
            "one",
            "--device",
            "cpu",
        ],
    ));
    assert!(
        out.contains("--split-of one applies to --method iqm-forest only"),
        "{out}"
    );
}
