//! Times the IQM step's two halves (masks and tissue split, then the metrics) on real
//! files, beside reading the file and beside the whole step as import runs it
//! (`iqm::compute`, which never keeps the masks at full resolution), in milliseconds
//! of CPU time of the running thread (so that other work on the machine does not
//! inflate them). It fails when the two ways give different values.
//!
//! ```sh
//! cargo run --release --example bench_iqm -- [--repeats 3] [--step-only] FILE.nii.gz...
//! ```
//!
//! Each file is read once per repeat; the best of the repeats is printed per file and
//! stage. `perf record -g` on this example gives the split within the stages;
//! `--step-only` times import's step alone (for profiling it).

use std::path::PathBuf;

use cdwqc::imaging::iqm::{self, Contrast};
use cdwqc::imaging::load_volume;

/// Read, masks, metrics, their ratio to reading, the import step and its ratio, as
/// printed columns; a stage not timed (`--step-only`) prints as `-`.
fn row(ms: [f64; 4]) -> String {
    let cell = |x: f64, digits: usize| {
        if x.is_finite() {
            format!("{x:.digits$}")
        } else {
            "-".to_string()
        }
    };
    [
        cell(ms[0], 1),
        cell(ms[1], 1),
        cell(ms[2], 1),
        cell((ms[1] + ms[2]) / ms[0], 2),
        cell(ms[3], 1),
        cell(ms[3] / ms[0], 2),
    ]
    .join("\t")
}

/// CPU time of the calling thread, in milliseconds.
fn thread_cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

fn main() -> anyhow::Result<()> {
    // As in `cdwqc`: freed volumes stay in the process for the next.
    cdwqc::memory::retain_freed_memory();
    let mut repeats = 3usize;
    let mut step_only = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--step-only" {
            step_only = true;
        } else if a == "--repeats" {
            repeats = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("--repeats needs a number"))?
                .parse()?;
        } else {
            files.push(PathBuf::from(a));
        }
    }
    if files.is_empty() {
        anyhow::bail!("usage: bench_iqm [--repeats N] [--step-only] FILE.nii.gz...");
    }
    println!(
        "file\tvoxels\tread_ms\tmasks_ms\tmetrics_ms\tiqm_over_read\timport_step_ms\tstep_over_read"
    );
    let mut total = [0.0f64; 4];
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let suffix = name
            .trim_end_matches(".nii.gz")
            .trim_end_matches(".nii")
            .rsplit('_')
            .next()
            .map(str::to_string);
        let contrast = Contrast::from_suffix(suffix.as_deref());
        let mut best = [f64::INFINITY; 4];
        let mut voxels = 0;
        for _ in 0..repeats {
            let t = thread_cpu_ms();
            let volume =
                load_volume(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let read = thread_cpu_ms() - t;
            voxels = volume.data.len();
            if step_only {
                let t = thread_cpu_ms();
                let step = iqm::compute(&volume, contrast)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                best[3] = best[3].min(thread_cpu_ms() - t);
                best[0] = best[0].min(read);
                std::hint::black_box(step);
                continue;
            }
            let image = iqm::sanitised(&volume.data);
            let t = thread_cpu_ms();
            let masks = iqm::masks(&image, volume.dims, volume.voxel_size, contrast)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let masks_ms = thread_cpu_ms() - t;
            let t = thread_cpu_ms();
            let metrics = iqm::measure(&image, volume.voxel_size, &masks)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let metrics_ms = thread_cpu_ms() - t;
            let t = thread_cpu_ms();
            let step = iqm::compute(&volume, contrast)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let step_ms = thread_cpu_ms() - t;
            let same = step.wm_median.to_bits() == metrics.wm_median.to_bits()
                && step.values.len() == metrics.values.len()
                && step
                    .values
                    .iter()
                    .zip(&metrics.values)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            if !same {
                let differing: Vec<String> = step
                    .values
                    .iter()
                    .zip(&metrics.values)
                    .zip(iqm::COLUMNS)
                    .filter(|((a, b), _)| a.to_bits() != b.to_bits())
                    .map(|((a, b), name)| format!("{name} {a:?} against {b:?}"))
                    .collect();
                anyhow::bail!(
                    "{}: import's IQM step differs from masks + measure: {}",
                    path.display(),
                    differing.join(", ")
                );
            }
            for (b, v) in best.iter_mut().zip([read, masks_ms, metrics_ms, step_ms]) {
                *b = b.min(v);
            }
        }
        for (t, b) in total.iter_mut().zip(best) {
            *t += b;
        }
        println!("{name}\t{voxels}\t{}", row(best));
    }
    println!("total\t\t{}", row(total));
    Ok(())
}
