//! `cdwqc completions SHELL`: the shell completion script, generated from the command
//! line's own definition so it never falls behind it.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(Debug, Args)]
#[command(
    after_help = "Load it for this shell: source <(cdwqc completions bash)\n\
                        Install it: cdwqc completions bash > ~/.local/share/bash-completion/completions/cdwqc\n\
                        zsh: cdwqc completions zsh > ~/.zfunc/_cdwqc (with ~/.zfunc on $fpath)\n\
                        fish: cdwqc completions fish > ~/.config/fish/completions/cdwqc.fish"
)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
