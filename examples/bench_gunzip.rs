//! Whole-buffer gzip inflation of NIfTI files by the decoders the reader was chosen
//! among, on the same files in the same run, each checked to give the same bytes.
//!
//! ```text
//! bench_gunzip [--repeat 5] FILE.nii.gz...
//! ```
//!
//! Per file and repetition, in an order that rotates every repetition: flate2 with its
//! zlib-rs backend (`MultiGzDecoder` read to the end into a buffer of the final size:
//! what the reader streamed through before), miniz_oxide (flate2's pure-Rust backend,
//! called directly on the DEFLATE stream into a buffer of the final size, then the CRC32
//! checked with flate2's), libdeflater
//! (`gzip_decompress` into a buffer of the final size) and `cdwqc::imaging::nifti::
//! decompress` (the reader now: header peek, trailer and size checks, libdeflate).
//! Prints one JSON object: the thread's CPU seconds per file (median over files and
//! repetitions) and each decoder's median per-file ratio to flate2 + zlib-rs.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::json;

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
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Where the DEFLATE stream of a single gzip member starts (RFC 1952 header fields).
fn deflate_start(gz: &[u8]) -> anyhow::Result<usize> {
    if gz.len() < 18 || gz[0] != 0x1f || gz[1] != 0x8b || gz[2] != 8 {
        bail!("not a gzip member");
    }
    let flags = gz[3];
    let mut at = 10;
    if flags & 4 != 0 {
        let extra = u16::from_le_bytes([gz[at], gz[at + 1]]) as usize;
        at += 2 + extra;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            at += gz[at..]
                .iter()
                .position(|&b| b == 0)
                .context("unterminated name")?
                + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    Ok(at)
}

const DECODERS: [&str; 4] = ["flate2_zlib_rs", "miniz_oxide", "libdeflater", "cdwqc_now"];

fn inflate(decoder: &str, gz: &[u8], size: usize) -> anyhow::Result<Vec<u8>> {
    Ok(match decoder {
        "flate2_zlib_rs" => {
            let mut out = Vec::with_capacity(size);
            flate2::read::MultiGzDecoder::new(gz).read_to_end(&mut out)?;
            out
        }
        "miniz_oxide" => {
            let mut out = vec![0u8; size];
            let deflate = &gz[deflate_start(gz)?..gz.len() - 8];
            let n = miniz_oxide::inflate::decompress_slice_iter_to_slice(
                &mut out,
                std::iter::once(deflate),
                false,
                true,
            )
            .map_err(|e| anyhow::anyhow!("miniz_oxide: {e:?}"))?;
            out.truncate(n);
            // The others check the gzip CRC32; so must this one, to be comparable.
            let mut crc = flate2::Crc::new();
            crc.update(&out);
            let stored = u32::from_le_bytes(gz[gz.len() - 8..gz.len() - 4].try_into()?);
            if crc.sum() != stored {
                bail!("miniz_oxide: CRC mismatch");
            }
            out
        }
        "libdeflater" => {
            let mut out = vec![0u8; size];
            let n = libdeflater::Decompressor::new()
                .gzip_decompress(gz, &mut out)
                .map_err(|e| anyhow::anyhow!("libdeflater: {e}"))?;
            out.truncate(n);
            out
        }
        _ => cdwqc::imaging::nifti::decompress(std::path::Path::new("bench"), gz.to_vec())?,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 5usize;
    let mut files = Vec::new();
    let mut at = 0;
    while at < args.len() {
        if args[at] == "--repeat" {
            repeat = args.get(at + 1).context("--repeat N")?.parse()?;
            at += 2;
        } else {
            files.push(PathBuf::from(&args[at]));
            at += 1;
        }
    }
    if files.is_empty() {
        bail!("usage: bench_gunzip [--repeat N] FILE.nii.gz...");
    }
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); DECODERS.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); DECODERS.len()];
    let mut inflated_bytes = 0u64;
    let mut compressed_bytes = 0u64;
    for file in &files {
        let gz = std::fs::read(file).with_context(|| file.display().to_string())?;
        let reference = inflate("flate2_zlib_rs", &gz, 0)?;
        inflated_bytes += reference.len() as u64;
        compressed_bytes += gz.len() as u64;
        for repetition in 0..repeat {
            let mut times = [0.0f64; DECODERS.len()];
            for k in 0..DECODERS.len() {
                let which = (k + repetition) % DECODERS.len();
                let started = thread_cpu_seconds();
                let out = inflate(DECODERS[which], &gz, reference.len())?;
                times[which] = thread_cpu_seconds() - started;
                // nifti::decompress stops at the end of the data the header describes.
                if out[..] != reference[..out.len()] || out.len() + (1 << 20) < reference.len() {
                    bail!("{}: {} gives other bytes", file.display(), DECODERS[which]);
                }
            }
            for (k, &t) in times.iter().enumerate() {
                seconds[k].push(t);
                ratios[k].push(times[0] / t);
            }
        }
    }
    let report = json!({
        "files": files.len(),
        "repeat": repeat,
        "mean_compressed_mb": compressed_bytes as f64 / files.len() as f64 / 1e6,
        "mean_inflated_mb": inflated_bytes as f64 / files.len() as f64 / 1e6,
        "cpu_seconds_median": DECODERS.iter().zip(&seconds)
            .map(|(d, s)| (d.to_string(), json!(median(s.clone()))))
            .collect::<serde_json::Map<_, _>>(),
        "speedup_over_flate2_zlib_rs": DECODERS.iter().zip(&ratios)
            .map(|(d, r)| (d.to_string(), json!({
                "median": median(r.clone()),
                "min": r.iter().copied().fold(f64::INFINITY, f64::min),
                "max": r.iter().copied().fold(0.0, f64::max),
            })))
            .collect::<serde_json::Map<_, _>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
