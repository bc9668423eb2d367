//! `cdwqc merge DIR`: checks every part of a sharded job against its work list and
//! manifests, then loads them all into the store in one transaction, or nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cluster::merge;
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The job folder: the work list, and one part and manifest line per shard.
    pub dir: PathBuf,
}

pub fn run(db: &Path, args: MergeArgs) -> anyhow::Result<ExitCode> {
    let mut store = Store::open(db, Access::ReadWrite)?;
    let started = std::time::Instant::now();
    let report = merge(&mut store, &args.dir)?;
    println!(
        "{}: {} predictions from {} parts checked ({} failed images); {} in {:.2} s",
        report.run_id,
        report.rows,
        report.shards,
        report.failed,
        if report.written == 0 {
            "the store holds them already, nothing written".to_string()
        } else {
            format!("{} rows written in one transaction", report.written)
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
