//! `cdwqc-torch`: every `cdwqc` command, libtorch linked. `cdwqc` replaces itself with
//! this binary for the commands that need libtorch (`Command::needs_libtorch`: training,
//! inference, `info` and the dashboard's job worker).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cdwqc::cli::Cli::parse();
    cdwqc::cli::prepare_signals(&cli.command);
    cdwqc::cli::end_quietly_on_a_closed_stdout();
    cdwqc::cli::exit(cdwqc::commands::run(cli))
}
