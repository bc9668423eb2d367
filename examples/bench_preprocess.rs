//! Preprocessing speed against the previous implementation, on the same volumes in the
//! same run, with the largest difference between their tensors.
//!
//! ```text
//! bench_preprocess [--repeat 3] [--grid 80 96 80] [--spacing 2] [--out DIR] FILE.nii.gz...
//! ```
//!
//! Per file: read, gunzip, NIfTI decoding, then `preprocess` (resampling to the grid
//! around the head, clipping to the 0.5-99.5th percentiles, min-max) and the previous
//! implementation kept below (`previous`: four percentile selections on copies of the
//! volume, per-voxel coordinates), alternating which runs first. Prints one JSON object:
//! median seconds per stage over the files and repetitions (wall, and the thread's CPU
//! time for the two preprocessings), the median per-volume ratio, and the largest absolute
//! difference between the two tensors. Volumes of integers scaled by their header are also
//! preprocessed from the counts of their stored integers (as `cdwqc infer` loads them):
//! their thread CPU time, counting included, against `preprocess`, and the largest
//! difference between those tensors. With `--out` each tensor is written there as raw
//! little-endian f32 (`<file stem>.f32`) for comparison with nibabel + scipy.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cdwqc::imaging::preprocess::{PreprocessSpec, preprocess, preprocess_counted};
use cdwqc::imaging::{Volume, nifti};
use serde_json::json;

/// The implementation before radix-selected percentiles and per-axis coordinate terms,
/// as it was, for timing and for the difference in output.
mod previous {
    use cdwqc::imaging::Volume;
    use cdwqc::imaging::preprocess::{PreprocessSpec, grid_voxel_to_world};

    fn percentile(values: &mut [f32], percentile: f64) -> f32 {
        if values.is_empty() {
            return 0.0;
        }
        let rank = ((percentile / 100.0) * (values.len() - 1) as f64).round() as usize;
        let rank = rank.min(values.len() - 1);
        *values.select_nth_unstable_by(rank, f32::total_cmp).1
    }

    fn apply(affine: &[[f64; 4]; 4], voxel: [f64; 3]) -> [f64; 3] {
        let mut out = [0.0; 3];
        for (r, value) in out.iter_mut().enumerate() {
            *value = affine[r][3] + (0..3).map(|c| affine[r][c] * voxel[c]).sum::<f64>();
        }
        out
    }

    fn invert_affine(m: &[[f64; 4]; 4]) -> [[f64; 4]; 3] {
        let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        let mut inv = [[0.0; 4]; 3];
        for (r, row) in inv.iter_mut().enumerate() {
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            for (c, value) in row.iter_mut().take(3).enumerate() {
                let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
                *value = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
            }
            row[3] = -(0..3).map(|c| row[c] * m[c][3]).sum::<f64>();
        }
        inv
    }

    fn head_centre(volume: &Volume) -> [f64; 3] {
        let mut finite: Vec<f32> = volume
            .data
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let low = percentile(&mut finite, 2.0);
        let high = percentile(&mut finite, 98.0);
        let threshold = low + 0.1 * (high - low);
        let [nx, ny, _] = volume.dims;
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        let mut found = false;
        for (index, value) in volume.data.iter().enumerate() {
            if value.is_finite() && *value > threshold {
                let voxel = [index % nx, (index / nx) % ny, index / (nx * ny)];
                for axis in 0..3 {
                    lo[axis] = lo[axis].min(voxel[axis]);
                    hi[axis] = hi[axis].max(voxel[axis]);
                }
                found = true;
            }
        }
        if !found {
            lo = [0; 3];
            hi = [volume.dims[0] - 1, volume.dims[1] - 1, volume.dims[2] - 1];
        }
        let centre = [0, 1, 2].map(|a| (lo[a] + hi[a]) as f64 / 2.0);
        apply(&volume.affine, centre)
    }

    fn resample(volume: &Volume, spec: &PreprocessSpec, centre: [f64; 3], fill: f32) -> Vec<f32> {
        let inverse = invert_affine(&volume.affine);
        let [sx, sy, sz] = volume.dims;
        let [nx, ny, nz] = spec.shape;
        let sample = |i: isize, j: isize, k: isize| -> f32 {
            if i < 0 || j < 0 || k < 0 || i >= sx as isize || j >= sy as isize || k >= sz as isize {
                return fill;
            }
            let value = volume.data[i as usize + sx * (j as usize + sy * k as usize)];
            if value.is_finite() { value } else { fill }
        };
        let mut out = vec![fill; nx * ny * nz];
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    let world = grid_voxel_to_world(spec, centre, [x, y, z]);
                    let mut v = [0.0; 3];
                    for (r, coordinate) in v.iter_mut().enumerate() {
                        *coordinate =
                            inverse[r][3] + (0..3).map(|c| inverse[r][c] * world[c]).sum::<f64>();
                    }
                    if v[0] < -1.0
                        || v[1] < -1.0
                        || v[2] < -1.0
                        || v[0] > sx as f64
                        || v[1] > sy as f64
                        || v[2] > sz as f64
                    {
                        continue;
                    }
                    let base = [v[0].floor(), v[1].floor(), v[2].floor()];
                    let frac = [v[0] - base[0], v[1] - base[1], v[2] - base[2]];
                    let (i0, j0, k0) = (base[0] as isize, base[1] as isize, base[2] as isize);
                    let mut acc = 0.0f64;
                    for (di, wi) in [(0, 1.0 - frac[0]), (1, frac[0])] {
                        for (dj, wj) in [(0, 1.0 - frac[1]), (1, frac[1])] {
                            for (dk, wk) in [(0, 1.0 - frac[2]), (1, frac[2])] {
                                let weight = wi * wj * wk;
                                if weight > 0.0 {
                                    acc += weight * sample(i0 + di, j0 + dj, k0 + dk) as f64;
                                }
                            }
                        }
                    }
                    out[z + nz * (y + ny * x)] = acc as f32;
                }
            }
        }
        out
    }

    pub fn preprocess(volume: &Volume, spec: &PreprocessSpec) -> Vec<f32> {
        let centre = head_centre(volume);
        let mut finite: Vec<f32> = volume
            .data
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let low = percentile(&mut finite, spec.clip_low_percentile);
        let high = percentile(&mut finite, spec.clip_high_percentile);
        drop(finite);
        let mut out = resample(volume, spec, centre, low);
        let range = high - low;
        let wide_range = f64::from(high) - f64::from(low);
        for value in &mut out {
            *value = if !(range > 0.0 && value.is_finite()) {
                0.0
            } else if range.is_finite() {
                ((value.clamp(low, high) - low) / range).clamp(0.0, 1.0)
            } else {
                ((f64::from(value.clamp(low, high)) - f64::from(low)) / wide_range).clamp(0.0, 1.0)
                    as f32
            };
        }
        out
    }
}

/// CPU time of this thread: on a shared machine, wall time also counts waiting.
fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // As in `cdwqc`: freed volumes stay in the process for the next.
    cdwqc::memory::retain_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 3usize;
    let mut grid = [80usize, 96, 80];
    let mut spacing = 2.0f64;
    let mut out_dir: Option<PathBuf> = None;
    let mut files = Vec::new();
    let mut at = 0;
    while at < args.len() {
        match args[at].as_str() {
            "--repeat" => {
                repeat = args.get(at + 1).context("--repeat N")?.parse()?;
                at += 1;
            }
            "--spacing" => {
                spacing = args.get(at + 1).context("--spacing MM")?.parse()?;
                at += 1;
            }
            "--out" => {
                out_dir = Some(PathBuf::from(args.get(at + 1).context("--out DIR")?));
                at += 1;
            }
            "--grid" => {
                for (axis, size) in grid.iter_mut().enumerate() {
                    *size = args.get(at + 1 + axis).context("--grid X Y Z")?.parse()?;
                }
                at += 3;
            }
            file => files.push(PathBuf::from(file)),
        }
        at += 1;
    }
    anyhow::ensure!(!files.is_empty(), "give NIfTI files to preprocess");
    let spec = PreprocessSpec::grid(grid, spacing);
    let mut times: [Vec<f64>; 7] = Default::default();
    let mut max_abs_difference = 0.0f64;
    // Volumes of scaled integers, preprocessed from the counts of their stored integers
    // (as `cdwqc infer` loads them) against `preprocess` on the same volume.
    let (mut counted_cpu, mut uncounted_cpu) = (Vec::new(), Vec::new());
    let mut max_abs_difference_counted = 0.0f64;
    let mut dims = Vec::new();
    for repetition in 0..repeat {
        for (n, path) in files.iter().enumerate() {
            let started = Instant::now();
            let raw = nifti::read_file(path)?;
            let read = Instant::now();
            let bytes = nifti::decompress(path, raw)?;
            let gunzipped = Instant::now();
            let decoded_file = nifti::decode(path, &bytes)?;
            let decoded = Instant::now();
            let counting_cpu = thread_cpu_seconds();
            let counts = nifti::ScaledCounts::of(&decoded_file.header, &bytes);
            let counting_cpu = thread_cpu_seconds() - counting_cpu;
            let volume = Volume::from_decoded(decoded_file);
            drop(bytes);
            times[0].push((read - started).as_secs_f64());
            times[1].push((gunzipped - read).as_secs_f64());
            times[2].push((decoded - gunzipped).as_secs_f64());
            let current_first = (repetition + n) % 2 == 0;
            let run_current = || -> anyhow::Result<(Vec<f32>, [f64; 2])> {
                let (started, cpu) = (Instant::now(), thread_cpu_seconds());
                let values = preprocess(&volume, &spec)?;
                let spent = [started.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu];
                Ok((values, spent))
            };
            let run_previous = || {
                let (started, cpu) = (Instant::now(), thread_cpu_seconds());
                let values = previous::preprocess(&volume, &spec);
                let spent = [started.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu];
                (values, spent)
            };
            let ((current, t_current), (old, t_previous)) = if current_first {
                let c = run_current()?;
                (c, run_previous())
            } else {
                let p = run_previous();
                (run_current()?, p)
            };
            times[3].push(t_current[0]);
            times[4].push(t_previous[0]);
            times[5].push(t_current[1]);
            times[6].push(t_previous[1]);
            if let Some(counts) = &counts {
                let cpu = thread_cpu_seconds();
                let values = preprocess_counted(&volume, &spec, Some(counts))?.values;
                counted_cpu.push(counting_cpu + thread_cpu_seconds() - cpu);
                uncounted_cpu.push(t_current[1]);
                for (a, b) in values.iter().zip(&current) {
                    max_abs_difference_counted =
                        max_abs_difference_counted.max(f64::from((a - b).abs()));
                }
            }
            for (a, b) in current.iter().zip(&old) {
                max_abs_difference = max_abs_difference.max(f64::from((a - b).abs()));
            }
            if repetition == 0 {
                dims.push(volume.dims);
                if let Some(dir) = &out_dir {
                    std::fs::create_dir_all(dir)?;
                    let stem = file_stem(path);
                    let bytes: Vec<u8> = current.iter().flat_map(|v| v.to_le_bytes()).collect();
                    std::fs::write(dir.join(format!("{stem}.f32")), bytes)?;
                }
            }
        }
    }
    let ratios: Vec<f64> = times[4].iter().zip(&times[3]).map(|(p, c)| p / c).collect();
    let cpu_ratios: Vec<f64> = times[6].iter().zip(&times[5]).map(|(p, c)| p / c).collect();
    let [
        read,
        gunzip,
        decode,
        current,
        previous,
        current_cpu,
        previous_cpu,
    ] = times.map(median);
    println!(
        "{}",
        json!({
            "files": files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "dims": dims,
            "grid": grid,
            "spacing_mm": spacing,
            "repeat": repeat,
            "median_seconds": {
                "read": read, "gunzip": gunzip, "decode": decode,
                "preprocess": current, "preprocess_previous": previous,
                "preprocess_cpu": current_cpu, "preprocess_previous_cpu": previous_cpu,
            },
            "previous_over_current": median(ratios),
            "previous_over_current_cpu": median(cpu_ratios),
            "max_abs_difference_to_previous": max_abs_difference,
            "scaled_integer_volumes": counted_cpu.len() / repeat.max(1),
            "scaled_integers_cpu_seconds": {
                "preprocess": median(uncounted_cpu.clone()),
                "counted": median(counted_cpu.clone()),
            },
            "scaled_integers_preprocess_over_counted_cpu": median(
                uncounted_cpu.iter().zip(&counted_cpu).map(|(u, c)| u / c).collect()
            ),
            "max_abs_difference_counted_to_preprocess": max_abs_difference_counted,
        })
    );
    Ok(())
}

fn file_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    name.trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .to_string()
}
