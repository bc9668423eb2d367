//! Speed of Conv5_FC3_SSDA with tch, in three modes. `scripts/bench_model.py` drives the
//! first two against PyTorch and the third for end-to-end inference.
//!
//! ```sh
//! # one shot on random tensors: training and inference volumes/s
//! cargo run --release --example bench_model -- [D H W] [batch] [batches] [device]
//! # server: reads commands on standard input, answers one JSON line each
//! bench_model serve --grid D H W --batch B --batches N --threads T --input FILE
//! # where the time of `cdwqc infer` goes, stage by stage, on one thread
//! bench_model stages --db DB --run RUN [--sequence FLAIR] [--batch 8] [--threads 1]
//! ```
//!
//! Training is one step per batch: the extractor in training mode, the source head and the
//! domain head (through gradient reversal, alpha 0.5), cross-entropy (labels alternate 0,
//! 1), source loss + 0.1 x domain loss, backward, Adam (lr 1e-4, L2 weight decay 1e-4).
//! Inference is the target head in eval mode under `no_grad`, then softmax.
//!
//! `serve` reads `--input FILE`: batches x batch x D x H x W little-endian f32 values, no
//! header (the volumes both sides compute on). It first prints
//! `{"parameters": P, "buffers": B, "threads": T}`, then answers each command line with
//! `{"command": ..., "seconds": ...}`: `train` (one epoch over the N batches), `infer`
//! (the network's eval mode, what PyTorch runs by default), `infer-folded` (BatchNorm
//! folded into the convolutions) and `infer-folded-cl` (folded, channels-last 3D layout:
//! what `cdwqc infer` runs on the CPU); `warmup` runs one training step and each
//! inference mode on the first batch, untimed; `quit` ends.
//!
//! `stages` runs in the folder whose `models/runs/RUN` holds the trained run, on the
//! store's images of the sequence, one after the other with no overlap: reading the file,
//! gunzip, NIfTI decoding, preprocessing, the forward pass in batches (folded as `cdwqc
//! infer` does it, and unfolded), and saving the predictions in the store. It prints one
//! JSON object with the seconds of each stage and the files it read.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use cdwqc::imaging::{Volume, nifti, preprocess::preprocess};
use cdwqc::model::infer::{LogitsModel, Predictor};
use cdwqc::model::network::{Conv5Fc3Ssda, Head, NetworkSpec};
use cdwqc::model::parse_device;
use cdwqc::store::runs::PredictionRow;
use cdwqc::store::{Access, Store};
use serde_json::json;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Value of `--name` in `args` (the words after it, `count` of them).
fn option<'a>(args: &'a [String], name: &str, count: usize) -> Option<&'a [String]> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1..at + 1 + count)
}

fn number(args: &[String], name: &str, default: usize) -> anyhow::Result<usize> {
    match option(args, name, 1) {
        Some([value]) => value.parse().with_context(|| format!("{name} {value}")),
        _ => Ok(default),
    }
}

struct Bench {
    vs: nn::VarStore,
    net: Conv5Fc3Ssda,
    optimizer: nn::Optimizer,
    labels: Tensor,
}

impl Bench {
    fn new(grid: [usize; 3], batch: usize, device: Device) -> anyhow::Result<Self> {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(device);
        let net = Conv5Fc3Ssda::new(&vs.root(), &NetworkSpec::new(grid, 2, 2));
        let optimizer = nn::Adam {
            wd: 1e-4,
            ..Default::default()
        }
        .build(&vs, 1e-4)?;
        let labels: Vec<i64> = (0..batch as i64).map(|i| i % 2).collect();
        let labels = Tensor::from_slice(&labels).to_device(device);
        Ok(Self {
            vs,
            net,
            optimizer,
            labels,
        })
    }

    /// Trainable values, and BatchNorm running statistics.
    fn counts(&self) -> (i64, i64) {
        let trainable: i64 = self
            .vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>() as i64;
        let all: i64 = self
            .vs
            .variables()
            .values()
            .map(Tensor::numel)
            .sum::<usize>() as i64;
        (trainable, all - trainable)
    }

    fn step(&mut self, input: &Tensor) -> f64 {
        let features = self.net.features(input, true);
        let source = self.net.head_logits(&features, Head::Source, 0.5, true);
        let domain = self.net.head_logits(&features, Head::Domain, 0.5, true);
        let loss = source.cross_entropy_for_logits(&self.labels)
            + domain.cross_entropy_for_logits(&self.labels) * 0.1;
        self.optimizer.backward_step(&loss);
        loss.double_value(&[])
    }

    /// Sum of the target head's probabilities for `inputs` (forces the computation).
    fn infer(&self, inputs: &[Tensor], mode: &str) -> anyhow::Result<f64> {
        let _guard = tch::no_grad_guard();
        let folded = match mode {
            "infer" => None,
            "infer-folded" => Some(self.net.folded_extractor(false)),
            "infer-folded-cl" => Some(self.net.folded_extractor(true)),
            other => bail!("unknown inference mode {other}"),
        };
        let mut total = 0.0;
        for input in inputs {
            let logits = match &folded {
                Some(folded) => {
                    self.net
                        .head_logits(&folded.features(input), Head::Target, 1.0, false)
                }
                None => self.net.forward_head(input, Head::Target, false),
            };
            total += logits
                .softmax(-1, Kind::Float)
                .sum(Kind::Float)
                .double_value(&[]);
        }
        Ok(total)
    }
}

fn one_shot(args: &[String]) -> anyhow::Result<()> {
    let number = |index: usize, default: usize| -> anyhow::Result<usize> {
        Ok(match args.get(index) {
            Some(text) => text.parse()?,
            None => default,
        })
    };
    let grid = [number(0, 80)?, number(1, 96)?, number(2, 80)?];
    let batch = number(3, 8)?;
    let batches = number(4, 4)?;
    let device = parse_device(args.get(5).map_or("auto", String::as_str))?;
    let mut bench = Bench::new(grid, batch, device)?;
    let shape = [
        batch as i64,
        1,
        grid[0] as i64,
        grid[1] as i64,
        grid[2] as i64,
    ];
    let inputs: Vec<Tensor> = (0..batches)
        .map(|_| Tensor::rand(shape, (Kind::Float, device)))
        .collect();
    bench.step(&inputs[0]);
    let started = Instant::now();
    for input in &inputs {
        bench.step(input);
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let volumes = (batch * batches) as f64;
    println!(
        "tch grid {grid:?} batch {batch} batches {batches} device {device:?} threads {}",
        tch::get_num_threads()
    );
    println!(
        "train: {:.2} volumes/s ({train_seconds:.2} s for {volumes} volumes)",
        volumes / train_seconds
    );
    for mode in ["infer", "infer-folded-cl"] {
        bench.infer(&inputs[..1], mode)?;
        let started = Instant::now();
        bench.infer(&inputs, mode)?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{mode}: {:.2} volumes/s ({seconds:.2} s for {volumes} volumes)",
            volumes / seconds
        );
    }
    Ok(())
}

fn read_f32(path: &Path, count: usize) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    if bytes.len() != 4 * count {
        bail!(
            "{}: {} bytes, expected {count} f32 values",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    let grid = match option(args, "--grid", 3) {
        Some(values) => {
            let mut grid = [0usize; 3];
            for (slot, value) in grid.iter_mut().zip(values) {
                *slot = value.parse().context("--grid")?;
            }
            grid
        }
        None => [80, 96, 80],
    };
    let batch = number(args, "--batch", 8)?;
    let batches = number(args, "--batches", 4)?;
    let threads = number(args, "--threads", 1)?;
    let input = option(args, "--input", 1).context("--input FILE")?[0].clone();
    tch::set_num_threads(threads as i32);
    let device = Device::Cpu;
    let volume: usize = grid.iter().product();
    let values = read_f32(Path::new(&input), batches * batch * volume)?;
    let shape = [
        batch as i64,
        1,
        grid[0] as i64,
        grid[1] as i64,
        grid[2] as i64,
    ];
    let inputs: Vec<Tensor> = values
        .chunks_exact(batch * volume)
        .map(|chunk| Tensor::from_slice(chunk).view(shape))
        .collect();
    drop(values);
    let mut bench = Bench::new(grid, batch, device)?;
    let (parameters, buffers) = bench.counts();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({"parameters": parameters, "buffers": buffers, "threads": tch::get_num_threads()})
    )?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let command = line?.trim().to_string();
        let started = Instant::now();
        let value = match command.as_str() {
            "quit" => break,
            "warmup" => {
                bench.step(&inputs[0]);
                for mode in ["infer", "infer-folded", "infer-folded-cl"] {
                    bench.infer(&inputs[..1], mode)?;
                }
                0.0
            }
            "train" => inputs.iter().map(|input| bench.step(input)).sum::<f64>(),
            mode => bench.infer(&inputs, mode)?,
        };
        let seconds = started.elapsed().as_secs_f64();
        writeln!(
            out,
            "{}",
            json!({"command": command, "seconds": seconds, "value": value})
        )?;
        out.flush()?;
    }
    Ok(())
}

fn stages(args: &[String]) -> anyhow::Result<()> {
    let db = PathBuf::from(&option(args, "--db", 1).context("--db DB")?[0]);
    let run = option(args, "--run", 1).context("--run RUN")?[0].clone();
    let sequence = option(args, "--sequence", 1).map_or("FLAIR".to_string(), |v| v[0].clone());
    let batch = number(args, "--batch", 8)?;
    tch::set_num_threads(number(args, "--threads", 1)? as i32);
    let mut seconds = serde_json::Map::new();
    let mut add = |name: &str, value: f64| {
        let entry = seconds.entry(name).or_insert(json!(0.0));
        *entry = json!(entry.as_f64().unwrap_or(0.0) + value);
    };

    let started = Instant::now();
    let mut store = Store::open(&db, Access::ReadWrite)?;
    let images = store.model_images(&sequence)?;
    add("store_open_and_list", started.elapsed().as_secs_f64());
    let run_dir = Path::new("models/runs").join(&run);
    let started = Instant::now();
    let predictor = Predictor::from_run_dir(&run_dir, Device::Cpu)?;
    add("model_load", started.elapsed().as_secs_f64());
    let spec = predictor.preset().preprocess.clone();

    let mut tensors = Vec::new();
    let mut files = Vec::new();
    for image in &images {
        let path = Path::new(&image.path);
        let started = Instant::now();
        let raw = nifti::read_file(path)?;
        let read = Instant::now();
        let bytes = nifti::decompress(path, raw)?;
        let gunzipped = Instant::now();
        let volume = Volume::from_decoded(nifti::decode(path, &bytes)?);
        drop(bytes);
        let decoded = Instant::now();
        let values = preprocess(&volume, &spec)?;
        let done = Instant::now();
        add("read", (read - started).as_secs_f64());
        add("gunzip", (gunzipped - read).as_secs_f64());
        add("decode", (decoded - gunzipped).as_secs_f64());
        add("preprocess", (done - decoded).as_secs_f64());
        files.push(json!({"image_id": image.image_id, "path": image.path,
                          "sha256": image.sha256, "dims": volume.dims}));
        tensors.push(values);
    }

    let [_, d, h, w] = predictor.preset().input_shape();
    let forward = |model: &dyn LogitsModel| -> anyhow::Result<(f64, Vec<Vec<f32>>)> {
        let _guard = tch::no_grad_guard();
        let started = Instant::now();
        let mut probs = Vec::new();
        for chunk in tensors.chunks(batch) {
            let values: Vec<f32> = chunk.concat();
            let input = Tensor::from_slice(&values).view([chunk.len() as i64, 1, d, h, w]);
            let out = model.logits(&input)?.softmax(-1, Kind::Float).contiguous();
            let classes = out.size()[1] as usize;
            let flat = Vec::<f32>::try_from(&out.view([-1]))?;
            probs.extend(flat.chunks(classes).map(<[f32]>::to_vec));
        }
        Ok((started.elapsed().as_secs_f64(), probs))
    };
    // Warm-up (first-call allocations and oneDNN kernel selection), then the timings.
    forward(&predictor)?;
    let (folded_seconds, probs) = forward(&predictor)?;
    add("forward_folded", folded_seconds);
    let unfolded = Predictor::from_run_dir(&run_dir, Device::Cpu)?.unfolded();
    forward(&unfolded)?;
    let (unfolded_seconds, unfolded_probs) = forward(&unfolded)?;
    add("forward_unfolded", unfolded_seconds);
    let difference = probs
        .iter()
        .flatten()
        .zip(unfolded_probs.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);

    let task = store
        .run_row(&run)?
        .and_then(|row| row.task)
        .unwrap_or_else(|| "usable".into());
    let rows: Vec<PredictionRow> = images
        .iter()
        .zip(&probs)
        .map(|(image, p)| PredictionRow {
            image_id: image.image_id,
            task: task.clone(),
            label: p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(class, _)| format!("class {class}")),
            probabilities: Some(p.iter().map(|&x| f64::from(x)).collect()),
            error: None,
            domain_target: None,
            reason: None,
        })
        .collect();
    let started = Instant::now();
    store.save_predictions(&run, &rows)?;
    add("store_write", started.elapsed().as_secs_f64());
    println!(
        "{}",
        json!({"volumes": images.len(), "grid": spec.shape, "batch": batch,
               "threads": tch::get_num_threads(), "seconds": seconds,
               "max_probability_difference_folded_unfolded": difference, "files": files})
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("stages") => stages(&args[1..]),
        _ => one_shot(&args),
    }
}
