//! `cdwqc merge DIR`: checks every part of a sharded job (inference or import) against
//! its work list and manifests, then loads them all into the store in one transaction,
//! or nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cluster::import::{IMPORT_LIST, merge_import};
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
    let line = merge_folder(&mut store, &args.dir)?;
    println!("{line} in {:.2} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Merges a job folder of either kind; returns the summary line.
pub fn merge_folder(store: &mut Store, dir: &Path) -> anyhow::Result<String> {
    if dir.join(IMPORT_LIST).is_file() {
        let report = merge_import(store, dir)?;
        let c = &report.counts;
        let written = c.written();
        return Ok(format!(
            "{}: {} files from {} parts checked: {} new, {} changed, {} failed, {} touched, \
             {} unchanged, {} missing{}{}; {}",
            report.root,
            report.files,
            report.shards,
            c.added,
            c.updated,
            c.failed,
            c.touched,
            c.unchanged,
            c.missing,
            if c.merged_before > 0 {
                format!(", {} merged before", c.merged_before)
            } else {
                String::new()
            },
            if c.moved > 0 {
                format!(
                    ", {} changed in the store since the list was made (left as stored)",
                    c.moved
                )
            } else {
                String::new()
            },
            if written == 0 {
                "the store holds them already, nothing written".to_string()
            } else {
                format!("{written} rows written in one transaction")
            }
        ));
    }
    let report = merge(store, dir)?;
    let forest = match &report.forest {
        Some(mix) => match &mix.skipped {
            Some(why) => format!("; IQM forest not mixed in: {why}"),
            None => format!(
                "; IQM forest mixed into {} ({} without metrics: the network's alone)",
                mix.mixed, mix.without_metrics
            ),
        },
        None => String::new(),
    };
    Ok(format!(
        "{}: {} predictions from {} parts checked ({} failed images{}){forest}; {}",
        report.run_id,
        report.rows,
        report.shards,
        report.failed,
        match report.not_registered {
            0 => String::new(),
            n => format!(", {n} stored as reject: not registered"),
        },
        if report.written == 0 {
            "the store holds them already, nothing written".to_string()
        } else {
            format!("{} rows written in one transaction", report.written)
        }
    ))
}
