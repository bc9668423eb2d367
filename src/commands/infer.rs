//! `cdwqc infer`: run a trained model (or a TorchScript model) over stored images and
//! save class probabilities and labels; an image that fails to load gets a row with the
//! error, never a crash.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::train::{class_names, runs_dir};
use crate::imaging::preprocess::TensorCache;
use crate::model::data::Item;
use crate::model::infer::{
    InferOptions, LogitsModel, Prediction, Predictor, ScriptModel, predict_items,
};
use crate::model::preset::Preset;
use crate::model::train::CheckpointState;
use crate::report::agreement::Task;
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The training run whose best weights predict.
    #[arg(long, required_unless_present = "torchscript")]
    pub run: Option<String>,
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
    /// Sequence to predict (BIDS suffix).
    #[arg(long, default_value = "FLAIR")]
    pub sequence: String,
    /// Only images without a consensus label.
    #[arg(long)]
    pub unrated: bool,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long)]
    pub threads: Option<i32>,
}

pub fn run(db: &Path, args: InferArgs) -> anyhow::Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads.max(1));
    let device = crate::model::parse_device(&args.device)?;
    let mut store = Store::open(db, Access::ReadWrite)?;
    let (run_id, task, model): (String, Task, Box<dyn LogitsModel>) =
        match (&args.run, &args.torchscript) {
            (Some(run), _) => {
                let dir = runs_dir().join(run);
                let Some(row) = store.run_row(run)? else {
                    bail!("no run {run} in the store (cdwqc sql \"select run_id from runs\")");
                };
                let task = row
                    .task
                    .as_deref()
                    .and_then(Task::from_name)
                    .unwrap_or(Task::Usable);
                CheckpointState::read(&dir)
                    .with_context(|| format!("run {run} has no checkpoint in {}", dir.display()))?;
                (
                    run.clone(),
                    task,
                    Box::new(Predictor::from_run_dir(&dir, device)?),
                )
            }
            (None, Some(path)) => {
                let name = args.preset.as_deref().unwrap_or("cpu-small");
                let preset = if Path::new(name).is_file() {
                    Preset::from_file(Path::new(name))?
                } else {
                    Preset::builtin(name)?
                };
                let run_id = format!("torchscript-{}", crate::imaging::bids::stem(path));
                (
                    run_id,
                    args.task,
                    Box::new(ScriptModel::load(path, preset, device)?),
                )
            }
            (None, None) => bail!("give --run RUN or --torchscript FILE"),
        };
    let labels = crate::rate::labels::image_labels(&store)?;
    let images = store.model_images(&args.sequence)?;
    let items: Vec<Item> = images
        .iter()
        .filter(|i| !args.unrated || !labels.contains_key(&i.image_id))
        .map(|i| Item::from_file(i.image_id.to_string(), &i.path, i.sha256.clone(), None))
        .collect();
    if items.is_empty() {
        bail!("no {} image to predict", args.sequence);
    }
    let started = std::time::Instant::now();
    let results = predict_items(
        model.as_ref(),
        &items,
        &InferOptions {
            cache: Some(TensorCache::new(PathBuf::from("models/cache"))),
            ..InferOptions::default()
        },
        &mut |_, _| {},
    );
    let names = class_names(task);
    let mut rows = Vec::with_capacity(results.len());
    let mut failed = 0;
    for (item, result) in items.iter().zip(results) {
        let image_id: i64 = item.id.parse().context("image id")?;
        failed += usize::from(result.is_err());
        rows.push(Prediction::row(&result, image_id, task.name(), names));
    }
    store.save_predictions(&run_id, &rows)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{run_id}: {} {} images predicted ({failed} failed) in {seconds:.1} s ({:.1} images/s)",
        rows.len(),
        args.sequence,
        rows.len() as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
