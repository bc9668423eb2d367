//! Runs the structured NIfTI fuzzer (`cdwqc::import::fuzz`) for as many cases as asked,
//! on all cores, and prints a JSON summary; exits 1 when any case panicked, allocated
//! absurdly or produced a row the store refuses.
//!
//! Usage:
//!   cargo run --release --example fuzz_nifti -- --cases 200000 --seed 1
//!   options: --first N (first case index), --jobs N, --bomb-mib N (a bomb's zeros),
//!            --seeds PATH (real NIfTI files or folders; repeatable; default: the
//!            repository's tests/data files when present), --no-real-seeds,
//!            --save DIR (write the files of findings there), --store (write every
//!            row to a scratch DuckDB store too), --show N (print case N and stop)

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use cdwqc::import::fuzz::{self, FuzzConfig, FuzzSummary};
use cdwqc::store::Store;
use rayon::prelude::*;

#[global_allocator]
static ALLOCATOR: fuzz::LargestAllocation = fuzz::LargestAllocation;

/// Cases per unit of work: large enough to amortise, small enough to balance cores.
const CHUNK: u64 = 500;

struct Args {
    cases: u64,
    first: u64,
    seed: u64,
    jobs: usize,
    bomb_mib: u64,
    seeds: Vec<PathBuf>,
    real_seeds: bool,
    save: Option<PathBuf>,
    store: bool,
    show: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cases: 10_000,
        first: 0,
        seed: 1,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        bomb_mib: 256,
        seeds: Vec::new(),
        real_seeds: true,
        save: None,
        store: false,
        show: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--cases" => args.cases = number(value()?)?,
            "--first" => args.first = number(value()?)?,
            "--seed" => args.seed = number(value()?)?,
            "--jobs" => args.jobs = number(value()?)?.max(1) as usize,
            "--bomb-mib" => args.bomb_mib = number(value()?)?,
            "--seeds" => args.seeds.push(PathBuf::from(value()?)),
            "--no-real-seeds" => args.real_seeds = false,
            "--save" => args.save = Some(PathBuf::from(value()?)),
            "--store" => args.store = true,
            "--show" => args.show = Some(number(value()?)?),
            other => {
                return Err(format!(
                    "unknown argument {other:?} (see the file's header)"
                ));
            }
        }
    }
    Ok(args)
}

fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    let args = parse_args()?;
    if !fuzz::allocation_probe_installed() {
        return Err("the allocation probe is not installed".into());
    }
    let mut seeds = fuzz::builtin_seeds();
    if args.real_seeds {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let paths = if args.seeds.is_empty() {
            vec![
                repo.join("tests/data/qform_oblique.nii.gz"),
                repo.join("tests/data/external"),
            ]
        } else {
            args.seeds.clone()
        };
        seeds.extend(fuzz::seeds_from(&paths));
    }
    let config = FuzzConfig {
        seed: args.seed,
        bomb_bytes: args.bomb_mib << 20,
        ..FuzzConfig::default()
    };
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().join("warehouse");

    if let Some(index) = args.show {
        let case = fuzz::make_case(&config, &seeds, index);
        eprintln!(
            "case {index}: seed {}, {} bytes, mutations {:?}",
            case.seed_name,
            case.bytes.len(),
            case.mutations
        );
        let result = fuzz::run_case(&config, &case, &root);
        match &result {
            Ok(r) => println!("{}", r.verdict),
            Err(f) => println!("{f:#?}"),
        }
        if let Some(dir) = &args.save {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(case.file_name()), &case.bytes)?;
        }
        return Ok(std::process::ExitCode::from(u8::from(result.is_err())));
    }

    eprintln!(
        "fuzzing cases {}..{} of seed {} on {} threads, {} seed files",
        args.first,
        args.first + args.cases,
        args.seed,
        args.jobs,
        seeds.len()
    );
    let store = if args.store {
        Some(Mutex::new(Store::create(
            &scratch.path().join("fuzz.duckdb"),
        )?))
    } else {
        None
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs)
        .build()?;
    let started = Instant::now();
    let end = args.first + args.cases;
    let chunks: Vec<u64> = (args.first..end).step_by(CHUNK as usize).collect();
    let done = Mutex::new(FuzzSummary {
        seed: args.seed,
        ..FuzzSummary::default()
    });
    pool.install(|| {
        chunks.par_iter().for_each(|&start| {
            let mut writes = Vec::new();
            let part = fuzz::run_range(
                &config,
                &seeds,
                &root,
                start..(start + CHUNK).min(end),
                |_, w| {
                    if store.is_some() {
                        writes.push(w);
                    }
                },
            );
            let mut refused = Vec::new();
            if let Some(store) = &store {
                let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
                for write in &writes {
                    if let Err(e) = store.apply_image_writes(std::slice::from_ref(write)) {
                        refused.push(format!("the store refused a row: {e}"));
                    }
                }
            }
            let mut summary = done.lock().unwrap_or_else(|e| e.into_inner());
            summary.merge(part);
            for problem in refused {
                summary.findings.push(fuzz::Finding {
                    index: start,
                    seed_name: String::new(),
                    mutations: vec![format!("a case of chunk {start}")],
                    stage: "store".into(),
                    problem,
                });
            }
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!(
                "{:>9} cases  {:>6.0} cases/s  {} findings",
                summary.cases,
                summary.cases as f64 / elapsed,
                summary.findings.len()
            );
        });
    });
    let summary = done.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir)?;
        for finding in &summary.findings {
            let case = fuzz::make_case(&config, &seeds, finding.index);
            std::fs::write(dir.join(case.file_name()), &case.bytes)?;
        }
    }
    let report = serde_json::json!({
        "seed": summary.seed,
        "first_case": args.first,
        "cases": summary.cases,
        "imported": summary.imported,
        "failed": summary.failed,
        "findings": summary.findings,
        "reasons": summary.reasons,
        "seed_files": seeds.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(std::process::ExitCode::from(u8::from(
        !summary.findings.is_empty(),
    )))
}
