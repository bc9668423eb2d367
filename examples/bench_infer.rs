//! End-to-end inference throughput against the pure forward pass, on the same volumes in
//! the same process.
//!
//! ```text
//! bench_infer --db DB --run RUN [--sequence FLAIR] [--repeat 3] [--threads T] [--loaders L]
//! ```
//!
//! Runs in the folder whose `models/runs/RUN` holds the trained run, on the store's images
//! of the sequence. Each repetition runs, in an order that rotates every repetition:
//! - `cold`: `run_inference` as `cdwqc infer` runs it (model loading, the loader pool
//!   decoding and preprocessing every file, the forward passes) with an empty
//!   preprocessing cache, which it fills;
//! - `warm`: the same, every tensor found in the cache `cold` filled (so, as in
//!   `cdwqc infer` when `--loaders` is not given, the network gets every thread);
//! - `forward`: the forward pass alone (batches of 8, softmax, probabilities back in
//!   memory) on the same tensors, already in memory, with the libtorch threads the
//!   pipeline gives the network;
//! - `forward_all`: the same with all `--threads` given to libtorch.
//!
//! Threads are split as `cdwqc infer` splits them (`ThreadSplit`; `--threads` default: the
//! machine's). Prints one JSON object: median seconds per volume of each, and the median
//! per-repetition throughput ratios cold / forward, warm / forward (and against
//! `forward_all`), min and max beside them. Also checks that cold and warm predictions
//! agree: the same labels, probabilities within rounding (the largest difference is
//! printed; a warm run's network may have more threads, which changes the last bits).
//! Freed memory stays in the process as in `cdwqc` (`retained_freed_memory`, false when
//! the environment sets glibc's malloc variables, e.g. `MALLOC_MMAP_MAX_=65536` for the
//! allocator's own behaviour).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, bail};
use cdwqc::jobs::plan::{InferRequest, plan_inference};
use cdwqc::jobs::{InferPlan, run_inference, runs_dir};
use cdwqc::model::data::{Item, ItemLoader};
use cdwqc::model::infer::{LogitsModel, Predictor};
use cdwqc::model::pipeline::ThreadSplit;
use cdwqc::report::agreement::Task;
use cdwqc::store::{Access, Store};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).map(String::as_str)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn spread(values: &[f64]) -> serde_json::Value {
    json!({
        "median": median(values.to_vec()),
        "min": values.iter().copied().fold(f64::INFINITY, f64::min),
        "max": values.iter().copied().fold(0.0, f64::max),
    })
}

/// Seconds of the forward pass over `batches` (softmax and the copy back included).
fn forward(model: &Predictor, batches: &[Tensor]) -> anyhow::Result<f64> {
    let _guard = tch::no_grad_guard();
    let started = Instant::now();
    for input in batches {
        let probs = model
            .logits(input)?
            .softmax(-1, Kind::Float)
            .to_device(Device::Cpu)
            .contiguous();
        let _values = Vec::<f32>::try_from(&probs.view([-1]))?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let retained = cdwqc::memory::retain_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let db = PathBuf::from(option(&args, "--db").context("--db DB")?);
    let run = option(&args, "--run").context("--run RUN")?.to_string();
    let sequence = option(&args, "--sequence").unwrap_or("FLAIR").to_string();
    let repeat: usize = option(&args, "--repeat").unwrap_or("3").parse()?;
    let threads = option(&args, "--threads").map(str::parse).transpose()?;
    let loaders = option(&args, "--loaders").map(str::parse).transpose()?;
    let split = ThreadSplit::new(threads, loaders);
    let all_threads = split.loaders + split.torch;

    let store = Store::open(&db, Access::ReadOnly)?;
    let request = InferRequest {
        run: Some(run.clone()),
        torchscript: None,
        preset: None,
        task: Task::Usable,
        sequence,
        unrated: false,
        device: "cpu".into(),
    };
    let scratch = tempfile::tempdir()?;
    let plan_with = |cache: PathBuf| -> anyhow::Result<InferPlan> {
        let mut plan = plan_inference(&store, &request, &runs_dir(), Some(cache))?;
        plan.loaders = Some(split.loaders);
        plan.warm_threads = ThreadSplit::warm_threads(threads, loaders);
        Ok(plan)
    };
    let probe = plan_with(scratch.path().join("probe"))?;
    let volumes = probe.items.len();
    if volumes == 0 {
        bail!("no images of the sequence in {}", db.display());
    }

    // The tensors the forward pass gets, in the batches the pipeline makes.
    tch::set_num_threads(split.torch as i32);
    let predictor = Predictor::from_run_dir(&runs_dir().join(&run), Device::Cpu)?;
    let loader = ItemLoader::new(predictor.preset().clone(), None);
    let [_, d, h, w] = predictor.preset().input_shape();
    let items: Vec<Item> = probe
        .items
        .iter()
        .map(|i| Item::from_file(i.image_id.to_string(), &i.path, None, None))
        .collect();
    let mut batches = Vec::new();
    for chunk in items.chunks(8) {
        let values: Vec<f32> = chunk
            .iter()
            .map(|item| loader.load(item).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?
            .concat();
        batches.push(Tensor::from_slice(&values).view([chunk.len() as i64, 1, d, h, w]));
    }
    forward(&predictor, &batches[..1])?;

    let modes = ["cold", "warm", "forward", "forward_all"];
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let cancel = Arc::new(AtomicBool::new(false));
    let mut warm_difference = 0f64;
    for repetition in 0..repeat {
        let cache = scratch.path().join(format!("cache-{repetition}"));
        let mut cold_rows = None;
        // Cold must come before warm (it fills the cache); the forward passes move around.
        let order: Vec<usize> = match repetition % 3 {
            0 => vec![0, 1, 2, 3],
            1 => vec![2, 0, 3, 1],
            _ => vec![3, 2, 0, 1],
        };
        for mode in order {
            let elapsed = match modes[mode] {
                "cold" | "warm" => {
                    tch::set_num_threads(split.torch as i32);
                    let plan = plan_with(cache.clone())?;
                    let started = Instant::now();
                    let result = run_inference(&plan, &cancel, &mut |_| {})?;
                    let elapsed = started.elapsed().as_secs_f64();
                    if result.failed > 0 {
                        bail!("{} images failed", result.failed);
                    }
                    match &cold_rows {
                        None => cold_rows = Some(result.rows),
                        Some(rows) => {
                            let difference = largest_difference(rows, &result.rows)?;
                            warm_difference = warm_difference.max(difference);
                        }
                    }
                    elapsed
                }
                "forward" => {
                    tch::set_num_threads(split.torch as i32);
                    forward(&predictor, &batches)?
                }
                _ => {
                    tch::set_num_threads(all_threads as i32);
                    forward(&predictor, &batches)?
                }
            };
            eprintln!(
                "repetition {}: {} {elapsed:.2} s",
                repetition + 1,
                modes[mode]
            );
            seconds[mode].push(elapsed);
        }
    }
    let ratio = |a: usize, b: usize| -> Vec<f64> {
        seconds[a]
            .iter()
            .zip(&seconds[b])
            .map(|(x, y)| x / y)
            .collect()
    };
    let report = json!({
        "volumes": volumes,
        "repeat": repeat,
        "loaders": split.loaders,
        "retained_freed_memory": retained,
        "torch_threads": split.torch,
        "ms_per_volume": modes.iter().zip(&seconds)
            .map(|(m, s)| (m.to_string(), json!(1000.0 * median(s.clone()) / volumes as f64)))
            .collect::<serde_json::Map<_, _>>(),
        "warm_largest_probability_difference_to_cold": warm_difference,
        "throughput_cold_over_forward": spread(&ratio(2, 0)),
        "throughput_warm_over_forward": spread(&ratio(2, 1)),
        "throughput_cold_over_forward_all_threads": spread(&ratio(3, 0)),
        "throughput_warm_over_forward_all_threads": spread(&ratio(3, 1)),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The largest difference between two runs' probabilities, the same images in the same
/// order with the same labels. A warm run whose tensors are all cached gives libtorch
/// every thread, and a different thread count changes the last bits of a forward pass
/// (the cached tensors themselves are identical: `cdwqc infer --loaders 1` twice gives
/// the same rows bit for bit), so the two agree to rounding, not bit for bit.
fn largest_difference(
    cold: &[cdwqc::store::runs::PredictionRow],
    warm: &[cdwqc::store::runs::PredictionRow],
) -> anyhow::Result<f64> {
    if cold.len() != warm.len() {
        bail!("warm predicted {} images, cold {}", warm.len(), cold.len());
    }
    let mut largest = 0f64;
    for (c, w) in cold.iter().zip(warm) {
        if c.image_id != w.image_id || c.label != w.label || c.error != w.error {
            bail!("image {}: warm and cold predictions disagree", c.image_id);
        }
        for (a, b) in c
            .probabilities
            .iter()
            .flatten()
            .zip(w.probabilities.iter().flatten())
        {
            largest = largest.max((a - b).abs());
        }
    }
    if largest > 1e-5 {
        bail!("warm probabilities differ from cold ones by {largest}, more than rounding");
    }
    Ok(largest)
}
