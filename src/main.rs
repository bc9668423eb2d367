//! The `cdwqc` command: parse the command line, then run the command here, or hand it
//! to `cdwqc-torch` when it needs libtorch. This binary links nothing that reaches
//! libtorch (build.rs hides the static archives' symbols so the linker can drop it), so
//! the everyday commands start in milliseconds instead of loading libtorch first.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cdwqc::cli::Cli::parse();
    if cli.command.needs_libtorch() {
        return cdwqc::cli::exit(Err(cdwqc::commands::exec_libtorch_binary()));
    }
    cdwqc::cli::prepare_signals(&cli.command);
    cdwqc::cli::end_quietly_on_a_closed_stdout();
    cdwqc::cli::exit(cdwqc::commands::run_without_libtorch(cli))
}
