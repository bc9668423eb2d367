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

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init::run(&cli.db, args),
        Command::Import(args) => import::run(&cli.db, args),
        Command::Sql(args) => sql::run(&cli.db, args),
        Command::Inspect(args) => inspect::run(args),
        Command::Iqm(args) => iqm::run(&cli.db, args),
        Command::Info(args) => info::run(&cli.db, args),
        Command::Raters(args) => raters::run(&cli.db, args),
        Command::Ratings(args) => ratings::run(&cli.db, args),
        Command::Report(args) => report::run(&cli.db, args),
        Command::Synth(args) => synth::run(args),
        Command::Register(args) => register::run(args),
        Command::Queue(args) => queue::run(&cli.db, args),
        Command::Rate(args) => rate::run(&cli.db, args),
        Command::Train(args) => train::run(&cli.db, args),
        Command::Infer(args) => infer::run(&cli.db, args),
        Command::Job(args) => job::run(args),
        Command::Model(args) => model::run(&cli.db, args),
        Command::Merge(args) => merge::run(&cli.db, args),
        Command::Slurm(args) => slurm::run(&cli.db, args),
        Command::Tui(args) => tui::run(&cli.db, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}
