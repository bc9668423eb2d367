//! `cdwqc infer`: run a trained run, an exported model (or a TorchScript model) over
//! stored images and save class probabilities and labels; an image that fails to load
//! gets a row with the error, never a crash.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

use crate::jobs::iqm_forest::mix_forest;
use crate::jobs::plan::{
    InferRequest, ModelInferRequest, plan_inference, plan_model_inference, plan_torchscript_run,
    record_inference, record_model_failure, record_model_inference, record_model_start,
    record_torchscript_start,
};
use crate::jobs::{
    InferPlan, InferResult, JobEvent, cache_dir, models_dir, run_inference, runs_dir,
};
use crate::model::pipeline::ThreadSplit;
use crate::report::agreement::Task;
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The training run whose best weights predict.
    #[arg(long, required_unless_present_any = ["torchscript", "model", "work_list"], conflicts_with = "model")]
    pub run: Option<String>,
    /// An exported model (`cdwqc model export`): a folder, or a name under ./models.
    /// Its predictions are stored under the run `model:<name>`, with its card.
    #[arg(long, conflicts_with = "torchscript")]
    pub model: Option<String>,
    /// With --model or --torchscript: the run id to store the predictions under
    /// (default model:<name>, or torchscript-<file name>).
    #[arg(long = "as", value_name = "RUN", conflicts_with_all = ["run", "work_list"])]
    pub store_as: Option<String>,
    /// A TorchScript model instead (input [N,1,D,H,W] float32 in [0,1] on the preset
    /// grid, output logits [N,K] in the task's class order).
    #[arg(long, requires = "preset")]
    pub torchscript: Option<PathBuf>,
    /// Preset of a TorchScript model.
    #[arg(long)]
    pub preset: Option<String>,
    /// Task of a TorchScript model.
    #[arg(long, value_enum, default_value = "usable")]
    pub task: Task,
    /// Adapt the network to this warehouse first, with no label: re-estimate its
    /// BatchNorm statistics on up to N of the images to predict (AdaBN; default 256).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "256",
          conflicts_with = "torchscript")]
    pub adapt_batchnorm: Option<usize>,
    /// With --model: leave out the model's IQM forest and store the network's
    /// probabilities alone.
    #[arg(long, requires = "model")]
    pub network_only: bool,
    /// Sequence to predict (BIDS suffix; default FLAIR, or the model card's target).
    #[arg(long)]
    pub sequence: Option<String>,
    /// Only images without a consensus label.
    #[arg(long)]
    pub unrated: bool,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Threads for the network (half of them, the odd one included) and the loaders
    /// that decode and preprocess images ahead of it (the other half and one more, to
    /// use the network's core while it waits); default: the machine's. When every
    /// image's tensor is already cached, the network gets them all (unless --loaders
    /// is given).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub threads: Option<i32>,
    /// Of --threads, how many decode and preprocess images ahead of the network; given,
    /// the split stands even when every tensor is cached.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub loaders: Option<u16>,
    /// Label an image with the task's last class (reject, bad, gado) when its
    /// probability reaches this threshold, a number in [0, 1]; `auto` picks it on the
    /// run's validation images for --target-sensitivity (cdwqc report model shows it).
    /// Default: the most probable class. With --model or --torchscript, a number only
    /// (their validation images are not in this store).
    #[arg(long)]
    pub threshold: Option<String>,
    /// The sensitivity `--threshold auto` aims at on the validation images.
    #[arg(long, default_value_t = 0.95)]
    pub target_sensitivity: f64,
    /// Predict one shard of a frozen work list (`cdwqc slurm submit infer` writes it):
    /// K/N, shards numbered from 0; `/N` takes K from $SLURM_ARRAY_TASK_ID. The part and
    /// its manifest line go beside the work list; the store is not opened.
    #[arg(long, value_name = "K/N", requires = "work_list",
          conflicts_with_all = ["run", "model", "torchscript", "threshold", "adapt_batchnorm"])]
    pub shard: Option<String>,
    /// The work list a shard reads (work-list.parquet in a job folder).
    #[arg(long, value_name = "FILE", requires = "shard")]
    pub work_list: Option<PathBuf>,
}

/// The threshold that `--threshold` asks for, if any.
fn resolve_threshold(store: &Store, args: &InferArgs) -> anyhow::Result<Option<f64>> {
    use crate::metrics::OperatingTarget;
    use crate::report::model::{ModelOptions, build};
    let Some(text) = args.threshold.as_deref() else {
        return Ok(None);
    };
    if let Some(value) = fixed_threshold(args)? {
        return Ok(Some(value));
    }
    if args.run.is_none() {
        bail!(
            "--threshold {text}: auto picks the threshold on a training run's validation images, \
             which an exported model or a TorchScript file does not bring: give a number in [0, 1] \
             (cdwqc report model --run RUN --target-sensitivity S shows one on this store's labels)"
        );
    }
    let target = args.target_sensitivity;
    if !(target > 0.0 && target <= 1.0) {
        bail!("--target-sensitivity {target} is not in (0, 1]");
    }
    let run = args.run.as_deref().unwrap_or_default();
    let report = build(
        store,
        run,
        &ModelOptions {
            target: Some(OperatingTarget::Sensitivity(target)),
            ..ModelOptions::thresholds_only()
        },
    )?;
    let point = report
        .operating_point
        .context("the model report picked no operating point")?;
    match point.threshold.value {
        Some(t) => {
            println!(
                "threshold {t:.4} on P({}): sensitivity {} on {} validation images (target {target})",
                point.positive_class,
                point.validation_sensitivity.text(),
                point.validation_images
            );
            Ok(Some(t))
        }
        None => bail!(
            "run {run}: no threshold for sensitivity {target} on its validation images ({}); \
             runs trained before validation predictions were stored have none: give a number",
            point.threshold.text()
        ),
    }
}

/// `--threshold` when it is a number, checked; `None` when absent or `auto`.
fn fixed_threshold(args: &InferArgs) -> anyhow::Result<Option<f64>> {
    match args.threshold.as_deref() {
        None | Some("auto") => Ok(None),
        Some(text) => text
            .parse()
            .ok()
            .filter(|v: &f64| (0.0..=1.0).contains(v))
            .map(Some)
            .with_context(|| format!("--threshold {text:?}: give auto or a number in [0, 1]")),
    }
}

/// Relabels predictions: the last class when its probability reaches `threshold`,
/// otherwise the most probable of the others.
fn apply_threshold(
    rows: &mut [crate::store::runs::PredictionRow],
    classes: &[&str],
    threshold: f64,
) {
    for row in rows {
        // A reject for want of a registration stays one, whatever the class order.
        let (Some(p), None) = (&row.probabilities, &row.reason) else {
            continue;
        };
        let Some(last) = p.len().checked_sub(1) else {
            continue;
        };
        let class = if p[last] >= threshold {
            last
        } else {
            (0..last).fold(0, |best, c| if p[c] > p[best] { c } else { best })
        };
        row.label = classes.get(class).map(|c| c.to_string());
    }
}

pub fn run(db: &Path, args: InferArgs) -> anyhow::Result<ExitCode> {
    crate::memory::retain_freed_memory();
    if let (Some(shard), Some(work_list)) = (&args.shard, &args.work_list) {
        return super::slurm::run_shard_command(work_list, shard, args.threads);
    }
    let threads = args.threads.map(|t| t.max(1) as usize);
    let loaders = args.loaders.map(usize::from);
    let split = ThreadSplit::new(threads, loaders);
    let warm_threads = ThreadSplit::warm_threads(threads, loaders);
    tch::set_num_threads(split.torch as i32);
    let mut store = Store::open(db, Access::ReadWrite)?;
    // Before any work: `auto` needs a run, and a number must be one.
    let threshold = resolve_threshold(&store, &args)?;
    if let Some(model) = args.model.clone() {
        return run_model(&mut store, model, args, split, warm_threads, threshold);
    }
    let request = InferRequest {
        run: args.run,
        torchscript: args.torchscript,
        preset: args.preset,
        task: args.task,
        sequence: args.sequence.unwrap_or_else(|| "FLAIR".into()),
        unrated: args.unrated,
        device: args.device,
    };
    let mut plan = plan_inference(&store, &request, &runs_dir(), Some(cache_dir()))?;
    plan.adapt_batchnorm = args.adapt_batchnorm;
    plan.loaders = Some(split.loaders);
    plan.warm_threads = warm_threads;
    if request.torchscript.is_some() {
        if let Some(run_id) = args.store_as {
            plan.run_id = run_id;
        }
        return run_torchscript(&mut store, &plan, threshold);
    }
    let (mut result, code) = predict(&plan)?;
    if let Some(t) = threshold {
        apply_threshold(&mut result.rows, plan.task.categories(), t);
    }
    record_inference(&mut store, &plan.run_id, &result)?;
    Ok(code)
}

/// Predicts with an exported model under a run row of its own, so `cdwqc report model
/// --run model:<name>` scores it against this store's labels.
fn run_model(
    store: &mut Store,
    model: String,
    args: InferArgs,
    split: ThreadSplit,
    warm_threads: Option<usize>,
    threshold: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let request = ModelInferRequest {
        model,
        run: args.store_as,
        sequence: args.sequence,
        unrated: args.unrated,
        device: args.device,
        adapt_batchnorm: args.adapt_batchnorm,
        network_only: args.network_only,
    };
    let mut planned = plan_model_inference(store, &request, &models_dir(), Some(cache_dir()))?;
    planned.plan.loaders = Some(split.loaders);
    planned.plan.warm_threads = warm_threads;
    let card = &planned.model.card;
    println!(
        "model {} ({} from {}, {}, preset {}; weights sha256 {} checked) -> run {}",
        card.name,
        card.task,
        card.training.run,
        card.method,
        card.preset.name,
        &card.weights.sha256[..12],
        planned.plan.run_id
    );
    if let Some(forest) = &card.iqm_forest {
        println!(
            "with its IQM forest ({} trees on {} images' metrics, weight {})",
            forest.trees, forest.training_images, forest.weight
        );
    }
    let forest = planned.model.verified_forest()?;
    record_model_start(store, &planned)?;
    match predict(&planned.plan) {
        Ok((mut result, code)) => {
            let mix = match (&forest, &planned.model.card.iqm_forest) {
                (Some(forest), Some(info)) => {
                    let mix = mix_forest(
                        store,
                        forest,
                        info.weight,
                        planned.plan.task.categories(),
                        &mut result.rows,
                    );
                    let mix = match mix {
                        Ok(mix) => mix,
                        Err(err) => {
                            record_model_failure(store, &planned.plan.run_id, &err.to_string())?;
                            return Err(err.into());
                        }
                    };
                    match &mix.skipped {
                        Some(why) => println!("IQM forest not mixed in: {why}"),
                        None => println!(
                            "IQM forest mixed into {} predictions ({} without metrics: the network's alone)",
                            mix.mixed, mix.without_metrics
                        ),
                    }
                    Some(mix)
                }
                _ => None,
            };
            // On the probabilities stored: the network's, or mixed with the forest's.
            if let Some(t) = threshold {
                apply_threshold(&mut result.rows, planned.plan.task.categories(), t);
            }
            record_model_inference(store, &planned.plan.run_id, &result, mix.as_ref())?;
            println!(
                "score it: cdwqc report model --run {} --set all",
                planned.plan.run_id
            );
            Ok(code)
        }
        Err(err) => {
            record_model_failure(store, &planned.plan.run_id, &format!("{err:#}"))?;
            Err(err)
        }
    }
}

/// Predicts with a TorchScript file under a run row of its own (the file's SHA-256, its
/// grid and task), so `cdwqc report model` and the queues find the run like any other.
fn run_torchscript(
    store: &mut Store,
    plan: &InferPlan,
    threshold: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let (run, config) = plan_torchscript_run(store, plan)?;
    println!(
        "TorchScript model {} (sha256 {}, preset {}, task {}) -> run {}",
        run.weights_path,
        &config.sha256[..12],
        run.preset,
        run.task,
        plan.run_id
    );
    record_torchscript_start(store, &run)?;
    match predict(plan) {
        Ok((mut result, code)) => {
            if let Some(t) = threshold {
                apply_threshold(&mut result.rows, plan.task.categories(), t);
            }
            record_model_inference(store, &plan.run_id, &result, None)?;
            println!(
                "score it: cdwqc report model --run {} --set all",
                plan.run_id
            );
            Ok(code)
        }
        Err(err) => {
            record_model_failure(store, &plan.run_id, &format!("{err:#}"))?;
            Err(err)
        }
    }
}

/// Runs an inference plan with Ctrl-C handling and prints its summary.
fn predict(plan: &InferPlan) -> anyhow::Result<(InferResult, ExitCode)> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: storing the predictions made so far");
    })
    .context("installing the Ctrl-C handler")?;
    if let Some(limit) = plan.adapt_batchnorm {
        println!(
            "adapting BatchNorm statistics to this warehouse on up to {limit} of the {} images (no labels)",
            plan.items.len()
        );
    }
    let result = run_inference(plan, &cancel, &mut |event| match event {
        JobEvent::ItemFailed { id, error } => eprintln!("image {id}: {error}"),
        JobEvent::ItemNotRegistered { id, reason } => {
            eprintln!("image {id}: stored as reject: {reason}")
        }
        _ => {}
    })?;
    let not_registered = match result.not_registered {
        0 => String::new(),
        n => format!(", {n} stored as reject: they do not register to the template"),
    };
    println!(
        "{}: {} {} images predicted ({} failed{not_registered}) in {:.1} s ({:.1} images/s){}",
        plan.run_id,
        result.rows.len(),
        plan.sequence,
        result.failed,
        result.seconds,
        result.rows.len() as f64 / result.seconds.max(1e-9),
        if result.cancelled {
            format!(
                "; interrupted before the other {}",
                plan.items.len() - result.rows.len()
            )
        } else if let Some(threads) = result.warm_threads {
            let s = if threads == 1 { "" } else { "s" };
            format!("; every tensor was cached, so the network ran on {threads} thread{s}")
        } else {
            String::new()
        }
    );
    let code = if result.cancelled {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    };
    Ok((result, code))
}
