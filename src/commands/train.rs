//! `cdwqc train`: train a QC model from the store's consensus labels (semi-supervised
//! adversarial domain adaptation or a baseline), recording split, epochs and outcome.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::io::IsTerminal;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::imaging::preprocess::TensorCache;
use crate::metrics::ConfusionMatrix;
use crate::model::data::Item;
use crate::model::infer::{InferOptions, Prediction, Predictor, predict_items};
use crate::model::preset::Preset;
use crate::model::split::{Set, split_by_subject};
use crate::model::train::{
    Method, RunOptions, TrainConfig, TrainData, TrainEvent, TrainStatus, train,
};
use crate::rate::labels::image_labels;
use crate::report::agreement::Task;
use crate::store::runs::{EpochRow, NewRun, SplitRow};
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Model preset: tiny, cpu-small, paper, or a TOML file.
    #[arg(long, default_value = "cpu-small")]
    pub preset: String,
    #[arg(long, value_enum, default_value = "usable")]
    pub task: Task,
    /// Labelled source sequence (BIDS suffix).
    #[arg(long, default_value = "T1w")]
    pub source: String,
    /// Target sequence: few labelled, many unlabelled images.
    #[arg(long, default_value = "FLAIR")]
    pub target: String,
    /// ssda, target-only, source-only, finetune or ssda-no-domain.
    #[arg(long, default_value = "ssda")]
    pub method: String,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Run name (default: <task>-<method>-seed<seed>).
    #[arg(long)]
    pub run: Option<String>,
    /// Continue an interrupted run of this name.
    #[arg(long)]
    pub resume: Option<String>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
}

pub(crate) fn class_names(task: Task) -> &'static [&'static str] {
    task.categories()
}

/// The batches of the current epoch, on a terminal only (logs get one line per epoch).
fn epoch_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} batches, {per_sec}, eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub(crate) fn runs_dir() -> PathBuf {
    PathBuf::from("models/runs")
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn run(db: &Path, mut args: TrainArgs) -> anyhow::Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads.max(1));
    let mut store = Store::open(db, Access::ReadWrite)?;
    // A resumed run continues with the configuration it was started with.
    let stored: Option<TrainConfig> = match &args.resume {
        Some(run) => {
            let Some(row) = store.run_row(run)? else {
                bail!("no run {run} to resume (cdwqc sql \"select run_id, status from runs\")");
            };
            if let Some(task) = row.task.as_deref().and_then(Task::from_name) {
                args.task = task;
            }
            row.config
                .as_deref()
                .map(serde_json::from_str::<TrainConfig>)
                .transpose()
                .with_context(|| format!("reading the stored configuration of run {run}"))?
        }
        None => None,
    };
    let (method, preset) = match &stored {
        Some(c) => (c.method, c.preset.clone()),
        None => {
            let method: Method = args.method.parse()?;
            let preset = if Path::new(&args.preset).is_file() {
                Preset::from_file(Path::new(&args.preset))?
            } else {
                Preset::builtin(&args.preset)?
            };
            (method, preset)
        }
    };
    if let Some(c) = &stored {
        args.seed = c.seed;
    }
    let labels = image_labels(&store)?;
    let classes = class_names(args.task).len();
    let resume = args.resume.is_some();
    let run_id = args
        .resume
        .clone()
        .or(args.run.clone())
        .unwrap_or_else(|| format!("{}-{}-seed{}", args.task.name(), args.method, args.seed));
    let run_dir = runs_dir().join(&run_id);
    if !resume && store.run_row(&run_id)?.is_some() {
        bail!("run {run_id} exists already: give another --run NAME, or --resume {run_id}");
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;

    let item = |img: &crate::store::runs::ModelImage, label: Option<usize>| {
        Item::from_file(
            img.image_id.to_string(),
            &img.path,
            img.sha256.clone(),
            label,
        )
    };
    let source_images = store.model_images(&args.source)?;
    let target_images = store.model_images(&args.target)?;
    let source: Vec<Item> = source_images
        .iter()
        .filter_map(|img| {
            labels
                .get(&img.image_id)
                .and_then(|l| l.class_of(args.task))
                .map(|y| item(img, Some(y)))
        })
        .collect();
    let labelled_target: Vec<(i64, String, usize)> = target_images
        .iter()
        .filter_map(|img| {
            labels
                .get(&img.image_id)
                .and_then(|l| l.class_of(args.task))
                .map(|y| (img.image_id, img.subject.clone(), y))
        })
        .collect();
    let split = split_by_subject(&labelled_target, 0.2, 0.2, args.seed);
    let set_of: BTreeMap<i64, Set> = split.iter().copied().collect();
    let by_id: BTreeMap<i64, &crate::store::runs::ModelImage> =
        target_images.iter().map(|i| (i.image_id, i)).collect();
    let target_label: BTreeMap<i64, usize> =
        labelled_target.iter().map(|(i, _, y)| (*i, *y)).collect();
    let pick = |set: Set| -> Vec<Item> {
        labelled_target
            .iter()
            .filter(|(i, _, _)| set_of.get(i) == Some(&set))
            .map(|(i, _, y)| item(by_id[i], Some(*y)))
            .collect()
    };
    let unlabelled: Vec<Item> = target_images
        .iter()
        .filter(|img| !labels.contains_key(&img.image_id))
        .map(|img| item(img, None))
        .collect();
    let data = TrainData {
        source,
        target_train: pick(Set::Train),
        target_val: pick(Set::Validation),
        target_unlabelled: unlabelled,
    };
    let test_items = pick(Set::Test);
    println!(
        "{run_id}: {} labelled {} (source), {} / {} / {} labelled {} (train / validation / test), {} unlabelled",
        data.source.len(),
        args.source,
        data.target_train.len(),
        data.target_val.len(),
        test_items.len(),
        args.target,
        data.target_unlabelled.len()
    );
    if data.target_val.is_empty() || (data.target_train.is_empty() && method != Method::SourceOnly)
    {
        bail!(
            "not enough labelled {} images for task {} (rate more, or import ratings)",
            args.target,
            args.task.name()
        );
    }

    let mut config = match stored {
        Some(c) => c,
        None => {
            let mut config = TrainConfig::new(method, preset.clone(), classes, classes);
            if let Some(e) = args.epochs {
                config.epochs = e;
                config.pretrain_epochs = e;
            }
            if let Some(lr) = args.learning_rate {
                config.learning_rate = lr;
            }
            config.seed = args.seed;
            config
        }
    };
    config.device = args.device.clone();
    let weights = run_dir.join(crate::model::train::BEST_WEIGHTS);
    if !resume {
        let mut snapshot: Vec<(i64, usize)> = target_label.iter().map(|(i, y)| (*i, *y)).collect();
        snapshot.extend(
            data.source
                .iter()
                .filter_map(|it| Some((it.id.parse().ok()?, it.label?))),
        );
        snapshot.sort_unstable();
        let snapshot_text = serde_json::to_string(&snapshot)?;
        store.begin_run(&NewRun {
            run_id: run_id.clone(),
            kind: "train".into(),
            task: Some(args.task.name().into()),
            method: Some(args.method.clone()),
            preset: Some(preset.name.clone()),
            config: serde_json::to_string(&config)?,
            git_commit: git_commit(),
            split_id: Some(run_id.clone()),
            label_snapshot: Some(crate::import::analyse::hex_sha256(snapshot_text.as_bytes())),
            weights_path: Some(weights.display().to_string()),
        })?;
        let mut rows: Vec<SplitRow> = split
            .iter()
            .map(|(image_id, set)| SplitRow {
                image_id: *image_id,
                subject: by_id.get(image_id).map(|i| i.subject.clone()),
                domain: "target".into(),
                set: set.name().into(),
                label: target_label
                    .get(image_id)
                    .map(|y| class_names(args.task)[*y].to_string()),
            })
            .collect();
        rows.extend(data.source.iter().filter_map(|it| {
            Some(SplitRow {
                image_id: it.id.parse().ok()?,
                subject: None,
                domain: "source".into(),
                set: "train".into(),
                label: it.label.map(|y| class_names(args.task)[y].to_string()),
            })
        }));
        rows.extend(data.target_unlabelled.iter().filter_map(|it| {
            Some(SplitRow {
                image_id: it.id.parse().ok()?,
                subject: None,
                domain: "target".into(),
                set: "unlabelled".into(),
                label: None,
            })
        }));
        store.save_split(&run_id, &rows)?;
    } else {
        store.set_run_status(&run_id, "running", None, None)?;
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving a checkpoint (cdwqc train --resume to continue)");
    })
    .context("installing the Ctrl-C handler")?;
    let cache = TensorCache::new(PathBuf::from("models/cache"));
    let options = RunOptions {
        run_dir: run_dir.clone(),
        resume,
        cache: Some(cache.clone()),
    };
    let mut store_error = None;
    let bar = epoch_bar();
    let outcome = train(
        &config,
        &data,
        &options,
        &cancel,
        &mut |event| match event {
            TrainEvent::Batch {
                epoch,
                batch,
                batches,
            } => {
                bar.set_length(batches as u64);
                bar.set_position(batch as u64);
                bar.set_message(format!("epoch {epoch:>3}"));
            }
            TrainEvent::Epoch(e) => {
                let nan = |v: f64| v.is_finite().then_some(v);
                bar.suspend(|| println!(
                    "epoch {:>3} [{:?}] loss {:.4} val loss {:.4} val BA {:.3} alpha {:.2} ({:.1} s){}",
                    e.epoch,
                    e.phase,
                    e.train_loss,
                    e.val_loss,
                    e.val_balanced_accuracy,
                    e.alpha,
                    e.seconds,
                    if e.improved { " *" } else { "" }
                ));
                let row = EpochRow {
                    epoch: e.epoch as i32,
                    train_loss: nan(e.train_loss),
                    source_loss: nan(e.source_loss),
                    target_loss: nan(e.target_loss),
                    domain_loss: nan(e.domain_loss),
                    val_loss: nan(e.val_loss),
                    val_balanced_accuracy: nan(e.val_balanced_accuracy),
                    alpha: nan(e.alpha),
                    seconds: Some(e.seconds),
                };
                if let Err(err) = store.record_epoch(&run_id, &row) {
                    store_error.get_or_insert(err);
                }
            }
            TrainEvent::ItemFailed { id, error } => {
                bar.suspend(|| eprintln!("image {id}: {error}"));
            }
            _ => {}
        },
    );
    bar.finish_and_clear();
    if let Some(e) = store_error {
        return Err(e.into());
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            store.set_run_status(&run_id, "failed", None, Some(&e.to_string()))?;
            return Err(e.into());
        }
    };
    if outcome.status == TrainStatus::Cancelled {
        store.set_run_status(&run_id, "interrupted", None, None)?;
        println!(
            "{run_id}: interrupted after {} epochs; cdwqc train --resume {run_id}",
            outcome.epochs_completed
        );
        return Ok(ExitCode::from(130));
    }
    // Final metrics: the best weights on the held-out target test subjects.
    let device = crate::model::parse_device(&args.device)?;
    let predictor = Predictor::from_run_dir(&run_dir, device)?;
    let predictions = predict_items(
        &predictor,
        &test_items,
        &InferOptions {
            cache: Some(cache),
            ..InferOptions::default()
        },
        &mut |_, _| {},
    );
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    let names = class_names(args.task);
    let mut rows = Vec::with_capacity(test_items.len());
    for (it, p) in test_items.iter().zip(&predictions) {
        if let (Some(y), Ok(p)) = (it.label, p) {
            truth.push(y);
            predicted.push(p.label);
        }
        let Ok(image_id) = it.id.parse::<i64>() else {
            continue;
        };
        rows.push(Prediction::row(p, image_id, args.task.name(), names));
    }
    // The held-out predictions stay with the run, so `cdwqc report model` can score it.
    store.save_predictions(&run_id, &rows)?;
    let test_ba = ConfusionMatrix::from_indices(&truth, &predicted, classes)
        .ok()
        .and_then(|m| m.balanced_accuracy().ok());
    let metrics = json!({
        "status": format!("{:?}", outcome.status),
        "best_epoch": outcome.best_epoch,
        "epochs_completed": outcome.epochs_completed,
        "best_val_loss": outcome.best_val_loss,
        "best_val_balanced_accuracy": outcome.best_val_balanced_accuracy,
        "test_images": truth.len(),
        "test_balanced_accuracy": test_ba,
    });
    store.set_run_status(&run_id, "completed", Some(&metrics.to_string()), None)?;
    println!(
        "{run_id}: {:?} after {} epochs; best epoch {:?}, validation BA {:?}, test BA {} on {} images; weights {}",
        outcome.status,
        outcome.epochs_completed,
        outcome.best_epoch,
        outcome.best_val_balanced_accuracy,
        test_ba.map_or("undefined".into(), |b| format!("{b:.3}")),
        truth.len(),
        weights.display()
    );
    Ok(ExitCode::SUCCESS)
}
