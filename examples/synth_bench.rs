//! Generates a synthetic warehouse, reports images per second and writes its montage.
//!
//! Usage: synth_bench OUT_DIR [tiny|small|clinical] [N_T1] [N_FLAIR] [N_OTHER] [TEMPLATE_DIR|-]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use cdwqc::synth::{Grid, SynthConfig, generate, write_montage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(
        args.first()
            .map(String::as_str)
            .unwrap_or("synth_bench_out"),
    );
    let grid: Grid = args.get(1).map(String::as_str).unwrap_or("small").parse()?;
    let number =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let template_dir = match args.get(5).map(String::as_str) {
        Some("-") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/external")),
    };
    let cfg = SynthConfig {
        out: out.clone(),
        n_t1: number(2, 300),
        n_flair: number(3, 250),
        n_other: number(4, 50),
        n_raters: 3,
        grid,
        seed: 2024,
        template_dir,
    };
    let last = AtomicUsize::new(0);
    let summary = generate(&cfg, &|done, total| {
        let step = (total / 10).max(1);
        if done == total || done / step > last.load(Ordering::Relaxed) {
            last.store(done / step, Ordering::Relaxed);
            eprintln!("{done}/{total}");
        }
    })?;
    println!(
        "{} images ({:?}) from {} in {:.1} s on {} threads: {:.2} images/s, {:.0} kB per image",
        summary.images,
        grid,
        summary.anatomy,
        summary.seconds,
        rayon::current_num_threads(),
        summary.images as f64 / summary.seconds,
        summary.bytes_written as f64 / summary.images as f64 / 1024.0
    );
    println!("per suffix: {:?}", summary.per_suffix);
    println!("per class: {:?}", summary.per_class);
    let montage = out.join("montage.png");
    write_montage(&out, &montage)?;
    println!("montage: {}", montage.display());
    Ok(())
}
