//! The command line: global options and one subcommand per task.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{
    completions::CompletionsArgs,
    import::ImportArgs,
    infer::InferArgs,
    info::InfoArgs,
    init::InitArgs,
    inspect::InspectArgs,
    iqm::IqmArgs,
    job::JobArgs,
    man::ManArgs,
    merge::MergeArgs,
    model::ModelArgs,
    queue::QueueArgs,
    rate::RateArgs,
    raters::RatersArgs,
    ratings::{RatingsAction, RatingsArgs},
    register::RegisterArgs,
    report::ReportArgs,
    slurm::SlurmArgs,
    sql::SqlArgs,
    synth::SynthArgs,
    train::TrainArgs,
    tui::TuiArgs,
};

#[derive(Debug, Parser)]
#[command(
    name = "cdwqc",
    version,
    about = "Quality control of brain MRIs in clinical data warehouses",
    long_about = "Quality control of brain MRIs in clinical data warehouses: index NIfTI \
                  images into a DuckDB store, rate them, train and run QC models, report \
                  agreement and accuracy."
)]
pub struct Cli {
    /// The store (a DuckDB file).
    #[arg(long, global = true, env = "CDWQC_DB", default_value = "cdwqc.duckdb")]
    pub db: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store (or bring an older one up to date).
    Init(InitArgs),
    /// Index a BIDS tree or folders of NIfTI images into the store.
    Import(ImportArgs),
    /// Run SQL on the store (read-only unless --write).
    Sql(SqlArgs),
    /// Print the header facts of NIfTI files without touching the store.
    Inspect(InspectArgs),
    /// MRIQC's image quality metrics: compute them for stored images (or files), or
    /// export them as MRIQC group tables.
    Iqm(IqmArgs),
    /// Versions, compute devices (CPU / CUDA) and the store's schema.
    Info(InfoArgs),
    /// Add and list raters.
    Raters(RatersArgs),
    /// Import and export ratings.
    Ratings(RatingsArgs),
    /// Blinded work queues: create, progress.
    Queue(QueueArgs),
    /// Rate images in the terminal, line by line (the dashboard has a full rating screen).
    Rate(RateArgs),
    /// Train a QC model (SSDA or a baseline) from the consensus labels.
    Train(TrainArgs),
    /// Predict with a trained run, an exported model (or a TorchScript model) and store
    /// the predictions.
    Infer(InferArgs),
    /// Check every part of a sharded job and load them into the store in one
    /// transaction (or nothing, naming what is missing or wrong).
    Merge(MergeArgs),
    /// Sharded inference on a Slurm cluster (or here with --local): submit, status.
    Slurm(SlurmArgs),
    /// Export a trained run as a portable model folder (card + weights); show a model.
    Model(ModelArgs),
    /// Run a job plan written by the dashboard (JSON lines on stdout; opens no store).
    #[command(hide = true)]
    Job(JobArgs),
    /// Agreement and model reports (Markdown, JSON, HTML).
    Report(ReportArgs),
    /// Write a synthetic clinical warehouse (BIDS) with graded artefacts and raters.
    Synth(SynthArgs),
    /// Bias-correct and register one image to the MNI template; write it on the preset grid.
    Register(RegisterArgs),
    /// The terminal dashboard: browse, view and rate images.
    Tui(TuiArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write man pages: cdwqc(1) on stdout, or one page per command into --out DIR.
    Man(ManArgs),
}

impl Command {
    /// Commands that only print what they read: when the reader of their output goes
    /// away (`cdwqc sql ... | head`), they end quietly, as Unix tools do, instead of
    /// failing to print. Commands that work on the store or run jobs keep Rust's
    /// default, so a closed pipe is an error they handle, never a sudden death.
    pub fn ends_quietly_on_a_closed_pipe(&self) -> bool {
        if let Command::Ratings(RatingsArgs {
            action: RatingsAction::Export(export),
        }) = self
        {
            // Ratings written to stdout only: the BIDS export replaces files.
            return export.out.is_none() && export.bids_derivatives.is_none();
        }
        matches!(
            self,
            Command::Sql(_)
                | Command::Report(_)
                | Command::Inspect(_)
                | Command::Info(_)
                | Command::Raters(_)
                | Command::Model(_)
                | Command::Completions(_)
                | Command::Man(_)
        )
    }

    /// Commands that train or run networks, or report libtorch's devices, need
    /// libtorch: the `cdwqc` binary hands them to `cdwqc-torch`, so that every other
    /// command starts without loading libtorch (0.26-0.33 s of wall time on a 2-core
    /// machine).
    pub fn needs_libtorch(&self) -> bool {
        matches!(
            self,
            Command::Train(_) | Command::Infer(_) | Command::Job(_) | Command::Info(_)
        )
    }
}

/// What a binary returns: the command's exit code, or its error on one line with exit
/// code 1.
pub fn exit(result: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            // Messages quote what users gave (file names, cells, headers): never a
            // terminal's escape sequence.
            eprintln!("error: {}", crate::display::printable(&message(&err), true));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the message
/// already carries (library errors embed their source in their own message).
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Ends the process quietly, as a closed pipe's signal would (status 141), when printing
/// to standard output fails because its reader went away (`cdwqc import | head -1`):
/// Rust's `println!` panics there, which printed a panic message and exited 101 after
/// the work was committed. Any other failure to print (a full disk, `> /dev/full`) is an
/// error with its reason and status 1. Other panics keep the default report.
pub fn end_quietly_on_a_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.starts_with("failed printing to stdout") {
            if text.contains("Broken pipe") {
                std::process::exit(141);
            }
            // A full disk or a closed terminal: an error like any other, not a crash.
            eprintln!(
                "error: {}",
                crate::display::printable(text.trim_start_matches("failed "), true)
            );
            std::process::exit(1);
        }
        default(info);
    }));
}

/// Restores the default SIGPIPE disposition for a command that ends quietly on a closed
/// pipe (see `Command::ends_quietly_on_a_closed_pipe`).
pub fn prepare_signals(command: &Command) {
    if command.ends_quietly_on_a_closed_pipe() {
        // SAFETY: sets a signal disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}
