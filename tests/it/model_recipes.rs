//! Bit-identical training for a seed, and the two recipes' schedules, at the tiny preset.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cdwqc::model::augment::ArtefactRule;
use cdwqc::model::data::Item;
use cdwqc::model::preset::Preset;
use cdwqc::model::recipe::Recipe;
use cdwqc::model::train::{
    EpochReport, Method, RunOptions, TrainConfig, TrainData, TrainEvent, TrainStatus, train,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Class 1 carries a bright blob; `shift` raises the background of the second domain.
fn items(prefix: &str, count: usize, shift: f32, seed: u64, labelled: bool) -> Vec<Item> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = 24usize;
    (0..count)
        .map(|index| {
            let label = index % 2;
            let centre = [0; 3].map(|_| rng.random_range(8.0..16.0f32));
            let values = (0..n * n * n)
                .map(|v| {
                    let at = [v / (n * n), (v / n) % n, v % n];
                    let d2: f32 = (0..3).map(|a| (at[a] as f32 - centre[a]).powi(2)).sum();
                    let blob = if label == 1 { (-d2 / 8.0).exp() } else { 0.0 };
                    (shift + rng.random_range(0.0..0.3f32) + 0.7 * blob).min(1.0)
                })
                .collect();
            Item::from_tensor(
                format!("{prefix}{index}"),
                values,
                labelled.then_some(label),
            )
        })
        .collect()
}

fn data() -> TrainData {
    TrainData {
        source: items("s", 10, 0.0, 1, true),
        target_train: items("t", 6, 0.1, 2, true),
        target_val: items("v", 6, 0.1, 3, true),
        target_unlabelled: items("u", 8, 0.1, 4, false),
    }
}

fn config(recipe: Recipe, augment: bool, seed: u64) -> TrainConfig {
    let mut preset = Preset::builtin("tiny").unwrap();
    preset.augment.enabled = augment;
    for artefact in [
        &mut preset.augment.motion,
        &mut preset.augment.noise,
        &mut preset.augment.bias_field,
    ] {
        artefact.probability = 0.5;
    }
    let mut config = TrainConfig::new(Method::Ssda, preset, 2, 2);
    config.use_recipe(recipe);
    config.epochs = 2;
    config.batch_size = 4;
    config.learning_rate = 1e-3;
    config.seed = seed;
    config.device = "cpu".into();
    config.artefact_rule = ArtefactRule::AnyGrade;
    config
}

/// Trains in a fresh folder; the bytes of the best and last weights, and the epochs.
fn run(config: &TrainConfig, dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<EpochReport>) {
    let options = RunOptions {
        run_dir: dir.to_path_buf(),
        resume: false,
        cache: None,
    };
    let mut reports = Vec::new();
    let cancel = Arc::new(AtomicBool::new(false));
    let outcome = train(config, &data(), &options, &cancel, &mut |event| {
        if let TrainEvent::Epoch(report) = event {
            reports.push(report);
        }
    })
    .unwrap();
    assert_eq!(outcome.status, TrainStatus::Completed);
    let read = |path: &Path| std::fs::read(path).unwrap();
    (
        read(&outcome.weights_path),
        read(&outcome.last_weights_path),
        reports,
    )
}

#[test]
fn the_same_seed_and_threads_give_bit_identical_weights() {
    // Two threads, so that libtorch's parallel reductions and the parallel loading of
    // items both run.
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    for (recipe, augment) in [(Recipe::Cdwqc, true), (Recipe::Clinicadl, false)] {
        let config = config(recipe, augment, 7);
        let first = run(&config, &dir.path().join(format!("{recipe:?}-a")));
        let second = run(&config, &dir.path().join(format!("{recipe:?}-b")));
        assert!(first.1 == second.1, "{recipe:?}: last weights differ");
        assert!(first.0 == second.0, "{recipe:?}: best weights differ");
        let losses = |r: &[EpochReport]| r.iter().map(|e| e.train_loss).collect::<Vec<_>>();
        assert_eq!(losses(&first.2), losses(&second.2));
        let other = run(
            &TrainConfig {
                seed: 8,
                ..config.clone()
            },
            &dir.path().join(format!("{recipe:?}-c")),
        );
        assert!(first.1 != other.1, "{recipe:?}: another seed, same weights");
    }
}

#[test]
fn the_clinicadl_recipe_keeps_alpha_per_epoch_and_never_stops_early() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(Recipe::Clinicadl, false, 3);
    config.epochs = 3;
    // A learning rate this high makes the validation loss rise: no early stop still.
    config.learning_rate = 0.05;
    let (_, _, reports) = run(&config, dir.path());
    assert_eq!(reports.len(), 3);
    let alphas: Vec<f64> = reports.iter().map(|r| r.alpha).collect();
    assert_eq!(alphas[0], 0.0);
    assert!((alphas[1] - 0.5f64.tanh()).abs() < 1e-12, "{alphas:?}");
    assert!((alphas[2] - 1.0f64.tanh()).abs() < 1e-12, "{alphas:?}");
    assert!(reports.iter().all(|r| r.domain_loss > 0.0));

    // cdwqc: alpha moves every iteration. 10 source images in batches of 4 make 3
    // iterations (4, 4, 2), so the last of epoch 1 is at progress 2/6, of epoch 2 at 5/6.
    let mut config = self::config(Recipe::Cdwqc, false, 3);
    config.epochs = 2;
    let (_, _, reports) = run(&config, &dir.path().join("cdwqc"));
    assert!(
        (reports[0].alpha - grl(2.0 / 6.0)).abs() < 1e-12,
        "{reports:?}"
    );
    assert!(
        (reports[1].alpha - grl(5.0 / 6.0)).abs() < 1e-12,
        "{reports:?}"
    );
}

/// `2 / (1 + exp(-10 p)) - 1`.
fn grl(progress: f64) -> f64 {
    2.0 / (1.0 + (-10.0 * progress).exp()) - 1.0
}

#[test]
fn the_clinicadl_recipe_needs_a_full_batch_of_unlabelled_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = data();
    data.target_unlabelled.truncate(3);
    let options = RunOptions {
        run_dir: dir.path().to_path_buf(),
        resume: false,
        cache: None,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let err = train(
        &config(Recipe::Clinicadl, false, 1),
        &data,
        &options,
        &cancel,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("clinicadl") && err.contains("3 unlabelled"),
        "{err}"
    );
}
