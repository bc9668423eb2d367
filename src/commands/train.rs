//! `cdwqc train`: train a QC model from the store's consensus labels (semi-supervised
//! adversarial domain adaptation or a baseline), recording split, epochs and outcome.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::jobs::iqm_forest::{IqmForestRequest, train_iqm_forest};
use crate::jobs::plan::{TrainRequest, plan_training, record_epoch, record_start, record_training};
use crate::jobs::{JobEvent, cache_dir, run_training, runs_dir};
use crate::model::iqm_forest::{ForestConfig, METHOD};
use crate::model::train::{Selection, TrainStatus};
use crate::report::agreement::Task;
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Model preset: tiny, demo, cpu-small, paper, pretrained, or a TOML file
    /// (default: the --init-model's preset, else cpu-small).
    #[arg(long)]
    pub preset: Option<String>,
    #[arg(long, value_enum, default_value = "usable")]
    pub task: Task,
    /// Labelled source sequence (BIDS suffix).
    #[arg(long, default_value = "T1w")]
    pub source: String,
    /// Target sequence: few labelled, many unlabelled images.
    #[arg(long, default_value = "FLAIR")]
    pub target: String,
    /// ssda, target-only, source-only, finetune or ssda-no-domain; or iqm-forest, the
    /// IQM-only baseline (a random forest on the stored image quality metrics), which
    /// needs --split-of.
    #[arg(long, default_value = "ssda")]
    pub method: String,
    /// With --method iqm-forest: the training run whose data split and task it uses.
    #[arg(long)]
    pub split_of: Option<String>,
    /// With --method iqm-forest: trees in the forest.
    #[arg(long, default_value_t = 200)]
    pub trees: u16,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw the train / validation / test split with this seed instead of --seed, so that
    /// runs of several seeds share one split.
    #[arg(long)]
    pub split_seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub threads: Option<i32>,
    /// Run name (default: <task>-<method>-seed<seed>).
    #[arg(long)]
    pub run: Option<String>,
    /// Continue an interrupted run of this name on its stored split, sequences and
    /// configuration (only --device and --threads apply); refused when the labels
    /// changed since it started.
    #[arg(long)]
    pub resume: Option<String>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Training rules: clinicadl (the published code's) or cdwqc (this project's);
    /// default: the preset's [training] recipe, else cdwqc. Kept by --resume.
    #[arg(long, value_parser = ["clinicadl", "cdwqc"])]
    pub recipe: Option<String>,
    /// Labels from the ratings in force: `majority` (consensus with adjudicators),
    /// `dawid-skene` (the most probable class of the latent truth) or
    /// `dawid-skene-ordinal` (the same, the quality grade fitted with an ordinal prior).
    /// Kept by --resume.
    #[arg(long, value_enum, default_value = "majority")]
    pub labels: crate::rate::latent::ConsensusMethod,
    /// Train towards each labelled image's posterior under the latent truth (the
    /// probability of each class) instead of its most probable class, so that an image
    /// the raters disagree on counts as what it is; needs a Dawid-Skene --labels.
    /// Kept by --resume.
    #[arg(long)]
    pub soft_targets: bool,
    /// Start from an exported model's weights (a name under models/, such as a shipped
    /// model, or a model folder) instead of a random initialisation; its preset is used
    /// unless --preset prepares images the same way. `finetune` then skips its source
    /// pretraining. Kept by --resume.
    #[arg(long, value_name = "MODEL")]
    pub init_model: Option<String>,
    /// Which epoch's weights the run keeps: `val-loss` (the lowest target validation
    /// loss, early stopping by the recipe's patience) or `last` (every epoch runs).
    /// Default: val-loss, unless the cdwqc recipe's validation set holds fewer than 5
    /// images of a class, where the last epoch is kept. Kept by --resume.
    #[arg(long, value_enum)]
    pub select: Option<Selection>,
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

pub fn run(db: &Path, args: TrainArgs) -> anyhow::Result<ExitCode> {
    if args.method == METHOD {
        if args.split_seed.is_some() {
            bail!(
                "--method {METHOD} takes its split from --split-of RUN; --split-seed draws the split of a network run"
            );
        }
        return run_iqm_forest(db, &args);
    }
    if let Some(run) = &args.split_of {
        bail!(
            "--split-of {run} applies to --method {METHOD} only; to train several seeds of {} on one split, give each the same --split-seed",
            args.method
        );
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads.max(1));
    let mut store = Store::open(db, Access::ReadWrite)?;
    // Held for writing: a run still marked running was cut off (and can be resumed).
    let stale = store.interrupt_stale_runs()?;
    if stale > 0 {
        eprintln!("{stale} run(s) left running by a process that ended are now marked interrupted");
    }
    let request = TrainRequest {
        preset: args.preset,
        task: args.task,
        source: args.source,
        target: args.target,
        method: args.method,
        epochs: args.epochs,
        seed: args.seed,
        split_seed: args.split_seed,
        device: args.device,
        run: args.run,
        resume: args.resume,
        learning_rate: args.learning_rate,
        recipe: args.recipe,
        labels: args.labels,
        soft_targets: args.soft_targets,
        init_model: args.init_model,
        selection: args.select,
    };
    let planned = plan_training(&store, &request, &runs_dir(), Some(cache_dir()))?;
    println!("{}", planned.summary);
    record_start(&mut store, &planned)?;
    let plan = &planned.plan;
    let run_id = &plan.run_id;

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving a checkpoint (cdwqc train --resume to continue)");
    })
    .context("installing the Ctrl-C handler")?;
    let mut store_error = None;
    let bar = epoch_bar();
    let result = run_training(plan, &cancel, &mut |event| match event {
        JobEvent::Batch {
            epoch,
            batch,
            batches,
        } => {
            bar.set_length(batches as u64);
            bar.set_position(batch as u64);
            bar.set_message(format!("epoch {epoch:>3}"));
        }
        JobEvent::Epoch { report: e } => {
            bar.suspend(|| {
                println!(
                    "epoch {:>3} [{}] loss {:.4} val loss {:.4} val BA {:.3} alpha {:.2} ({:.1} s){}",
                    e.epoch,
                    e.phase,
                    e.train_loss,
                    e.val_loss,
                    e.val_balanced_accuracy,
                    e.alpha,
                    e.seconds,
                    if e.improved { " *" } else { "" }
                )
            });
            if let Err(err) = record_epoch(&store, run_id, &e) {
                store_error.get_or_insert(err);
            }
        }
        JobEvent::ItemFailed { id, error } => {
            bar.suspend(|| eprintln!("image {id}: {error}"));
        }
        _ => {}
    })
    .map_err(|e| e.to_string());
    bar.finish_and_clear();
    if let Some(e) = store_error {
        return Err(e.into());
    }
    record_training(&mut store, run_id, &result)?;
    let result = match result {
        Ok(r) => r,
        Err(e) => bail!(e),
    };
    let outcome = &result.outcome;
    if outcome.status == TrainStatus::Cancelled {
        println!(
            "{run_id}: interrupted after {} epochs; cdwqc train --resume {run_id}",
            outcome.epochs_completed
        );
        return Ok(ExitCode::from(130));
    }
    println!(
        "{run_id}: {} after {} epochs; best epoch {}, validation BA {}, test BA {} on {} images; weights {}",
        outcome.status,
        outcome.epochs_completed,
        outcome.best_epoch.map_or("none".into(), |e| e.to_string()),
        outcome
            .best_val_balanced_accuracy
            .map_or("undefined".into(), |b| format!("{b:.3}")),
        result
            .test_balanced_accuracy
            .map_or("undefined".into(), |b| format!("{b:.3}")),
        result.test_images,
        outcome.weights_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The IQM-only baseline: no network, so none of the training options but the seed,
/// the run name and --split-of apply.
fn run_iqm_forest(db: &Path, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let Some(split_of) = args.split_of.clone() else {
        bail!(
            "--method {METHOD} needs --split-of RUN: the training run whose split it uses, so that both are scored on the same images"
        );
    };
    let mut store = Store::open(db, Access::ReadWrite)?;
    let request = IqmForestRequest {
        split_of,
        run: args.run.clone(),
        forest: ForestConfig {
            trees: args.trees,
            seed: args.seed,
        },
    };
    let s = train_iqm_forest(&mut store, &request)?;
    let accuracy = s
        .test_accuracy
        .map_or("n/a".to_string(), |a| format!("{a:.3}"));
    println!(
        "{}: {} forest of {} trees on the image quality metrics of {} training images; {} validation and test images predicted ({} test, accuracy {accuracy}); {} images of the split without metrics",
        s.run_id,
        s.task.name(),
        args.trees,
        s.trained_on,
        s.predicted,
        s.test_images,
        s.without_metrics
    );
    Ok(ExitCode::SUCCESS)
}
