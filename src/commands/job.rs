//! `cdwqc job PLAN`: runs a planned training or inference job without opening the
//! store, reporting JSON lines on stdout; the dashboard starts it and records.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::jobs::{EventWriter, JobPlan};
use crate::model::pipeline::ThreadSplit;

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The plan (JSON) that the dashboard wrote.
    pub plan: PathBuf,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub threads: Option<i32>,
}

pub fn run(args: JobArgs) -> anyhow::Result<ExitCode> {
    let mut plan = JobPlan::read(&args.plan)?;
    let threads = match &mut plan {
        // Inference splits the threads as `cdwqc infer` does: loaders beside libtorch,
        // and every thread to libtorch when every tensor is cached.
        JobPlan::Infer(p) => {
            let total = args.threads.map(|t| t.max(1) as usize);
            let split = ThreadSplit::new(total, p.loaders);
            if p.warm_threads.is_none() {
                p.warm_threads = ThreadSplit::warm_threads(total, p.loaders);
            }
            p.loaders = Some(split.loaders);
            split.torch as i32
        }
        JobPlan::Train(_) => args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32)),
    };
    tch::set_num_threads(threads.max(1));
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
