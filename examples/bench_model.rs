//! Throughput of Conv5_FC3_SSDA with tch: training volumes/s (source and domain heads,
//! backward, Adam step) and inference volumes/s (target head, no_grad), on random tensors.
//! The same measurement in PyTorch: scripts/bench_model.py.
//!
//! Usage: cargo run --release --example bench_model -- [D H W] [batch] [batches] [device]

use std::time::Instant;

use cdwqc::model::network::{Conv5Fc3Ssda, Head, NetworkSpec};
use cdwqc::model::parse_device;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = Conv5Fc3Ssda::new(
        &vs.root(),
        &NetworkSpec {
            grid,
            source_classes: 2,
            target_classes: 2,
        },
    );
    let mut optimizer = nn::Adam {
        wd: 1e-4,
        ..Default::default()
    }
    .build(&vs, 1e-4)?;
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
    let labels = Tensor::zeros([batch as i64], (Kind::Int64, device));
    let step = |optimizer: &mut nn::Optimizer, input: &Tensor| {
        let features = net.features(input, true);
        let source = net.head_logits(&features, Head::Source, 0.5, true);
        let domain = net.head_logits(&features, Head::Domain, 0.5, true);
        let loss = source.cross_entropy_for_logits(&labels)
            + domain.cross_entropy_for_logits(&labels) * 0.1;
        optimizer.backward_step(&loss);
        loss.double_value(&[])
    };
    step(&mut optimizer, &inputs[0]);
    let started = Instant::now();
    for input in &inputs {
        step(&mut optimizer, input);
    }
    let train_seconds = started.elapsed().as_secs_f64();

    let infer = |input: &Tensor| {
        let _guard = tch::no_grad_guard();
        net.forward_head(input, Head::Target, false)
            .softmax(-1, Kind::Float)
            .sum(Kind::Float)
            .double_value(&[])
    };
    infer(&inputs[0]);
    let started = Instant::now();
    for input in &inputs {
        infer(input);
    }
    let infer_seconds = started.elapsed().as_secs_f64();
    let volumes = (batch * batches) as f64;
    println!(
        "tch grid {grid:?} batch {batch} batches {batches} device {device:?} threads {}",
        tch::get_num_threads()
    );
    println!(
        "train: {:.2} volumes/s ({train_seconds:.2} s for {volumes} volumes)",
        volumes / train_seconds
    );
    println!(
        "infer: {:.2} volumes/s ({infer_seconds:.2} s for {volumes} volumes)",
        volumes / infer_seconds
    );
    Ok(())
}
