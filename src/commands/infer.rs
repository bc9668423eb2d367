//! `cdwqc infer`: run a trained model (or a TorchScript model) over stored images and
//! save class probabilities and labels; an image that fails to load gets a row with the
//! error, never a crash.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::jobs::plan::{InferRequest, plan_inference, record_inference};
use crate::jobs::{JobEvent, cache_dir, run_inference, runs_dir};
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
    let mut store = Store::open(db, Access::ReadWrite)?;
    let request = InferRequest {
        run: args.run,
        torchscript: args.torchscript,
        preset: args.preset,
        task: args.task,
        sequence: args.sequence,
        unrated: args.unrated,
        device: args.device,
    };
    let plan = plan_inference(&store, &request, &runs_dir(), Some(cache_dir()))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: storing the predictions made so far");
    })
    .context("installing the Ctrl-C handler")?;
    let result = run_inference(&plan, &cancel, &mut |event| {
        if let JobEvent::ItemFailed { id, error } = event {
            eprintln!("image {id}: {error}");
        }
    })?;
    record_inference(&mut store, &plan.run_id, &result)?;
    println!(
        "{}: {} {} images predicted ({} failed) in {:.1} s ({:.1} images/s){}",
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
        } else {
            String::new()
        }
    );
    Ok(if result.cancelled {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}
