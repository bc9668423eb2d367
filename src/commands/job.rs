//! `cdwqc job PLAN`: runs a planned training or inference job without opening the
//! store, reporting JSON lines on stdout; the dashboard starts it and records.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::jobs::{EventWriter, JobPlan};

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The plan (JSON) that the dashboard wrote.
    pub plan: PathBuf,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
}

pub fn run(args: JobArgs) -> anyhow::Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads.max(1));
    let plan = JobPlan::read(&args.plan)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    // The first interrupt asks for a checkpoint; a second one ends at once.
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    })
    .context("installing the interrupt handler")?;
    let mut writer = EventWriter::new(std::io::stdout().lock(), Arc::clone(&cancel));
    crate::jobs::run(&plan, &cancel, &mut |event| writer.emit(&event));
    Ok(ExitCode::SUCCESS)
}
