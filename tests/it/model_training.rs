//! Training, checkpointing, resume and inference on a synthetic task at the tiny preset.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cdwqc::model::data::Item;
use cdwqc::model::infer::{InferOptions, Predictor, predict_items};
use cdwqc::model::network::Head;
use cdwqc::model::preset::Preset;
use cdwqc::model::train::{
    CheckpointState, Method, RunOptions, TrainConfig, TrainData, TrainEvent, TrainStatus, train,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Device;

/// Class 1: a bright Gaussian blob at a random place; class 0: noise only.
/// `shift` changes the background level to mimic a second domain.
fn synthetic(prefix: &str, count: usize, shift: f32, seed: u64, labelled: bool) -> Vec<Item> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = 24;
    (0..count)
        .map(|index| {
            let label = index % 2;
            let centre = [
                rng.random_range(7.0..17.0f32),
                rng.random_range(7.0..17.0f32),
                rng.random_range(7.0..17.0f32),
            ];
            let mut values = Vec::with_capacity(n * n * n);
            for x in 0..n {
                for y in 0..n {
                    for z in 0..n {
                        let noise: f32 = rng.random_range(0.0..0.3);
                        let d2 = (x as f32 - centre[0]).powi(2)
                            + (y as f32 - centre[1]).powi(2)
                            + (z as f32 - centre[2]).powi(2);
                        let blob = if label == 1 { (-d2 / 8.0).exp() } else { 0.0 };
                        values.push((shift + noise + 0.7 * blob).min(1.0));
                    }
                }
            }
            Item::from_tensor(
                format!("{prefix}{index}"),
                values,
                labelled.then_some(label),
            )
        })
        .collect()
}

/// One libtorch thread: on a shared, busy CPU, OpenMP spinning across threads costs more
/// than it gains at this tiny grid.
fn data() -> TrainData {
    tch::set_num_threads(1);
    TrainData {
        source: synthetic("s", 16, 0.0, 1, true),
        target_train: synthetic("t", 8, 0.1, 2, true),
        target_val: synthetic("v", 12, 0.1, 3, true),
        target_unlabelled: synthetic("u", 8, 0.1, 4, false),
    }
}

fn config(method: Method, epochs: usize) -> TrainConfig {
    let mut config = TrainConfig::new(method, Preset::builtin("tiny").unwrap(), 2, 2);
    config.epochs = epochs;
    config.pretrain_epochs = 2;
    config.batch_size = 4;
    config.learning_rate = 1e-3;
    config.patience = 10;
    config.seed = 3;
    config.device = "cpu".into();
    config
}

#[test]
fn ssda_learns_and_saved_weights_reload_to_identical_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        run_dir: dir.path().join("run"),
        resume: false,
        cache: None,
    };
    let mut reports = Vec::new();
    let cancel = Arc::new(AtomicBool::new(false));
    let outcome = train(
        &config(Method::Ssda, 8),
        &data(),
        &options,
        &cancel,
        &mut |event| {
            if let TrainEvent::Epoch(report) = event {
                reports.push(report);
            }
        },
    )
    .unwrap();
    assert_eq!(outcome.status, TrainStatus::Completed);
    assert_eq!(reports.len(), 8);
    assert!(
        reports
            .iter()
            .all(|r| r.domain_loss > 0.0 && r.val_loss.is_finite())
    );
    assert!(reports.windows(2).all(|w| w[1].alpha > w[0].alpha));
    assert!(
        outcome.best_val_balanced_accuracy.unwrap() >= 0.8,
        "balanced accuracy {:?} in {reports:?}",
        outcome.best_val_balanced_accuracy
    );

    let predictor = Predictor::from_run_dir(&options.run_dir, Device::Cpu).unwrap();
    let mut items = data().target_val;
    items.push(Item::from_file(
        "broken",
        "/nonexistent/broken.nii.gz",
        None,
        None,
    ));
    let first = predict_items(&predictor, &items, &InferOptions::default(), &mut |_, _| {});
    let copy = dir.path().join("copy.safetensors");
    predictor.var_store().save(&copy).unwrap();
    let preset = Preset::builtin("tiny").unwrap();
    // An SSDA network: the run's predictor gives the domain head's output too.
    assert!(first[0].as_ref().unwrap().domain_target.is_some());
    let reloaded = Predictor::load(&copy, preset.clone(), 2, 2, Head::Target, Device::Cpu)
        .unwrap()
        .with_domain(true);
    let second = predict_items(&reloaded, &items, &InferOptions::default(), &mut |_, _| {});
    assert_eq!(first, second);
    let broken = first.last().unwrap().as_ref().unwrap_err();
    assert_eq!(broken.id, "broken");
    assert!(broken.error.contains("/nonexistent/broken.nii.gz"));
    let correct = first
        .iter()
        .zip(&items)
        .filter(|(p, item)| p.as_ref().is_ok_and(|p| Some(p.label) == item.label))
        .count();
    assert!(correct >= 10, "{correct} of 12 correct");

    // Weights of another shape are refused with the file named.
    let err = Predictor::load(&copy, preset, 3, 2, Head::Target, Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("copy.safetensors"));
}

#[test]
fn cancelled_run_resumes_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = RunOptions {
        run_dir: dir.path().join("run"),
        resume: false,
        cache: None,
    };
    let config = config(Method::Finetune, 2);
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    let outcome = train(&config, &data(), &options, &cancel, &mut |event| {
        if let TrainEvent::Batch {
            epoch: 2, batch: 2, ..
        } = event
        {
            flag.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    assert_eq!(outcome.status, TrainStatus::Cancelled);
    assert_eq!(outcome.epochs_completed, 1);
    let state = CheckpointState::read(&options.run_dir).unwrap();
    assert_eq!(state.next_epoch, 1);

    cancel.store(false, Ordering::SeqCst);
    options.resume = true;
    let mut epochs = Vec::new();
    let outcome = train(&config, &data(), &options, &cancel, &mut |event| {
        if let TrainEvent::Epoch(report) = event {
            epochs.push(report.epoch);
        }
    })
    .unwrap();
    assert_eq!(outcome.status, TrainStatus::Completed);
    assert_eq!(epochs, vec![2, 3, 4]);
    assert_eq!(outcome.epochs_completed, 4);
    assert!(outcome.best_epoch.is_some_and(|e| e >= 3));
    assert!(outcome.weights_path.exists());

    // A different configuration must not silently continue this checkpoint.
    let mut other = config.clone();
    other.learning_rate = 0.5;
    assert!(train(&other, &data(), &options, &cancel, &mut |_| {}).is_err());
}

#[test]
fn other_methods_run_and_report_the_right_losses() {
    for method in [Method::TargetOnly, Method::SourceOnly, Method::SsdaNoDomain] {
        let dir = tempfile::tempdir().unwrap();
        let options = RunOptions {
            run_dir: dir.path().to_path_buf(),
            resume: false,
            cache: None,
        };
        let mut reports = Vec::new();
        let cancel = Arc::new(AtomicBool::new(false));
        train(
            &config(method, 1),
            &data(),
            &options,
            &cancel,
            &mut |event| {
                if let TrainEvent::Epoch(report) = event {
                    reports.push(report);
                }
            },
        )
        .unwrap();
        let report = &reports[0];
        assert_eq!(report.domain_loss, 0.0, "{method:?}");
        assert_eq!(
            report.source_loss > 0.0,
            method != Method::TargetOnly,
            "{method:?}"
        );
        assert_eq!(
            report.target_loss > 0.0,
            method != Method::SourceOnly,
            "{method:?}"
        );
    }
}

#[test]
fn bad_labels_are_rejected_with_the_item_named() {
    let mut data = data();
    data.target_train[3].label = Some(5);
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        run_dir: dir.path().to_path_buf(),
        resume: false,
        cache: None,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let err = train(
        &config(Method::Ssda, 1),
        &data,
        &options,
        &cancel,
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("t3"), "{err}");
}
