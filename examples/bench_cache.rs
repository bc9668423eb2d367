//! What reading a tensor from the cache costs beyond reading its file: the entry's
//! checks (size, key digest, CRC-32, finite values) against a plain read of the same
//! bytes, alternating, on the cpu-small grid (80x96x80).
//!
//! `cargo run --release --example bench_cache -- [--repeat N]`

use std::time::Instant;

use cdwqc::imaging::preprocess::TensorCache;
use cdwqc::model::preset::Preset;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let repeat: usize = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(200), |n| n.parse())?;
    // As `cdwqc infer` runs: freed memory kept, so buffers do not fault in anew.
    cdwqc::memory::retain_freed_memory();
    let preset = Preset::builtin("cpu-small")?;
    let spec = &preset.preprocess;
    let dir = tempfile::tempdir()?;
    let cache = TensorCache::new(dir.path());
    let values: Vec<f32> = (0..spec.voxel_count())
        .map(|i| (i % 1000) as f32 / 1000.0)
        .collect();
    let path = cache.put("feedbeef", &preset.name, spec, &values)?;
    let (mut checked, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        let started = Instant::now();
        let got = cache.get("feedbeef", &preset.name, spec)?;
        checked.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(got.as_deref(), Some(&values[..]));
        let started = Instant::now();
        let bytes = std::fs::read(&path)?;
        let floats: Vec<f32> = bytes[56..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        plain.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(floats.len(), values.len());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, p) = (median(&mut checked), median(&mut plain));
    println!(
        "{} values ({:.1} MB): cache get {c:.3} ms, plain read and decode {p:.3} ms, checks add {:.3} ms ({:.2}x), median of {repeat}",
        values.len(),
        (56 + 4 * values.len()) as f64 / 1e6,
        c - p,
        c / p
    );
    Ok(())
}
