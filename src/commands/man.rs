//! `cdwqc man [--out DIR]`: man pages generated from the command line's own definition.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};

use crate::cli::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Read it at once: cdwqc man | man -l -\n\
                        Install the pages: cdwqc man --out ~/.local/share/man/man1")]
pub struct ManArgs {
    /// Write cdwqc.1 and one page per command (cdwqc-ratings-import.1, ...) into this
    /// folder, created if missing, instead of cdwqc.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: ManArgs) -> anyhow::Result<ExitCode> {
    let command = Cli::command();
    match args.out {
        None => {
            let mut stdout = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut stdout)
                .context("writing the man page to stdout")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            let mut pages: Vec<String> = std::fs::read_dir(&dir)
                .with_context(|| format!("listing {}", dir.display()))?
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("cdwqc") && name.ends_with(".1"))
                .collect();
            pages.sort();
            println!("{} man pages in {}", pages.len(), dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
