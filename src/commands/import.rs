//! `cdwqc import DIR`: index a warehouse folder, print a summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::import::{self, ImportOptions, ImportSummary};
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The folder to index (a BIDS dataset or any folder of .nii / .nii.gz files).
    #[arg(required_unless_present = "work_list")]
    pub dir: Option<PathBuf>,
    /// Also index derivatives/ and sourcedata/ folders.
    #[arg(long)]
    pub include_derivatives: bool,
    /// Re-analyse every file, even those whose size, time and bytes are unchanged (to
    /// read sidecars fixed or added since: a sidecar alone changing is not noticed).
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip the image quality metrics (`cdwqc iqm` computes them later).
    #[arg(long)]
    pub no_iqm: bool,
    /// Analyse one shard of a frozen import list (`cdwqc slurm submit import` writes
    /// it): K/N, shards numbered from 0; `/N` takes K from $SLURM_ARRAY_TASK_ID. The part
    /// and its manifest go beside the list; the store is not opened.
    #[arg(long, requires = "work_list", conflicts_with = "dir")]
    pub shard: Option<String>,
    /// The import list a shard reads (import-list.parquet in a job folder).
    #[arg(long, value_name = "FILE", requires = "shard")]
    pub work_list: Option<PathBuf>,
}

pub fn run(db: &Path, args: ImportArgs) -> anyhow::Result<ExitCode> {
    crate::memory::retain_freed_memory();
    if let (Some(shard), Some(work_list)) = (&args.shard, &args.work_list) {
        return super::slurm::run_import_shard_command(work_list, shard);
    }
    let Some(dir) = args.dir.clone() else {
        anyhow::bail!("give the folder to import");
    };
    let mut store = Store::open(db, Access::ReadWrite)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    // First Ctrl-C: finish the files in flight, commit, stop. The next import resumes.
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: committing what is done (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    let opts = ImportOptions {
        root: dir,
        include_derivatives: args.include_derivatives,
        force: args.force,
        progress: !args.json,
        iqm: !args.no_iqm,
    };
    let summary = import::run(&mut store, &opts, &cancel)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(s: &ImportSummary) {
    use crate::display::printable;
    println!(
        "{}: {} image files: {} imported ({} new, {} changed), {} unchanged, {} failed, {} missing ({:.1} s)",
        printable(&s.root, false),
        s.found,
        s.added + s.updated,
        s.added,
        s.updated,
        s.unchanged,
        s.failed,
        s.missing,
        s.seconds
    );
    if s.interrupted {
        println!("interrupted: run the same import again to finish");
    }
    if !s.failures.is_empty() {
        println!("failed:");
        for f in &s.failures {
            println!(
                "  {}: {}",
                printable(&f.path, false),
                printable(&f.message, false)
            );
        }
    }
    if s.still_failing > 0 {
        println!(
            "{} unchanged files still fail from earlier imports (cdwqc sql -f sql/queries/import_failures.sql)",
            s.still_failing
        );
    }
    if !s.warnings.is_empty() {
        println!("warnings:");
        for w in &s.warnings {
            println!(
                "  {}: {}",
                printable(&w.path, false),
                printable(&w.message, false)
            );
        }
    }
}
