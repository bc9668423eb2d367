//! One module per subcommand; each turns parsed arguments into library calls and output.

pub mod completions;
pub mod import;
pub mod infer;
pub mod info;
pub mod init;
pub mod inspect;
pub mod iqm;
pub mod job;
pub mod man;
pub mod merge;
pub mod model;
pub mod queue;
pub mod rate;
pub mod raters;
pub mod ratings;
pub mod register;
pub mod report;
pub mod slurm;
pub mod sql;
pub mod synth;
pub mod train;
pub mod tui;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs any command in this process: the `cdwqc-torch` binary, which links libtorch.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(args) => train::run(&cli.db, args),
        Command::Infer(args) => infer::run(&cli.db, args),
        Command::Job(args) => job::run(args),
        Command::Info(args) => info::run(&cli.db, args),
        _ => run_without_libtorch(cli),
    }
}

/// Runs a command that does not need libtorch (`Command::needs_libtorch` is false). The
/// `cdwqc` binary calls only this, so nothing it links reaches libtorch and it starts
/// without loading it; the others are handed to `cdwqc-torch` by [`exec_libtorch_binary`].
pub fn run_without_libtorch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init::run(&cli.db, args),
        Command::Import(args) => import::run(&cli.db, args),
        Command::Sql(args) => sql::run(&cli.db, args),
        Command::Inspect(args) => inspect::run(args),
        Command::Iqm(args) => iqm::run(&cli.db, args),
        Command::Raters(args) => raters::run(&cli.db, args),
        Command::Ratings(args) => ratings::run(&cli.db, args),
        Command::Report(args) => report::run(&cli.db, args),
        Command::Synth(args) => synth::run(&cli.db, args),
        Command::Register(args) => register::run(&cli.db, args),
        Command::Queue(args) => queue::run(&cli.db, args),
        Command::Rate(args) => rate::run(&cli.db, args),
        Command::Tui(args) => tui::run(&cli.db, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Model(args) => model::run(&cli.db, args),
        Command::Merge(args) => merge::run(&cli.db, args),
        Command::Slurm(args) => slurm::run(&cli.db, args),
        Command::Train(_) | Command::Infer(_) | Command::Job(_) | Command::Info(_) => {
            anyhow::bail!("this command needs libtorch: it runs in `{LIBTORCH_BINARY}`")
        }
    }
}

/// The binary beside `cdwqc` that links libtorch and runs the commands that need it.
pub const LIBTORCH_BINARY: &str = "cdwqc-torch";

/// The `cdwqc` binary, also when called from `cdwqc-torch`: the program that job scripts
/// and workers start, which hands each command to the binary it needs.
pub fn cdwqc_binary() -> std::io::Result<std::path::PathBuf> {
    let here = std::env::current_exe()?;
    let front = here.with_file_name("cdwqc");
    let in_torch_binary = here.file_name() == Some(std::ffi::OsStr::new(LIBTORCH_BINARY));
    Ok(if in_torch_binary && front.is_file() {
        front
    } else {
        here
    })
}

/// Replaces this process with `cdwqc-torch` from this binary's folder, with the same
/// arguments, environment, standard streams and process id (so a signal sent to this
/// process, such as the dashboard stopping a job, reaches the worker). Returns only when
/// that binary cannot be started.
pub fn exec_libtorch_binary() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let here = match std::env::current_exe() {
        Ok(here) => here,
        Err(e) => return anyhow::anyhow!("locating the cdwqc binary: {e}"),
    };
    let torch = here.with_file_name(LIBTORCH_BINARY);
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(&torch);
    // The same program name, so that usage lines and messages still say `cdwqc`.
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    let e = command.args(args).exec();
    anyhow::anyhow!(
        "this command needs libtorch and runs in {} (installed beside {}): {e}; build both \
         binaries with `cargo build --release` (or scripts/setup.sh) and keep them together",
        torch.display(),
        here.display()
    )
}
