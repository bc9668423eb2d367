//! `cdwqc ratings`: move ratings in and out of the store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::query::{Format, Session, SessionOptions};

#[derive(Debug, clap::Args)]
pub struct RatingsArgs {
    #[command(subcommand)]
    pub action: RatingsAction,
}

#[derive(Debug, Subcommand)]
pub enum RatingsAction {
    /// Write ratings out: those in force (default), the whole history, or the consensus.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The rating in force per (image, rater) (the default).
    #[arg(long, group = "what")]
    pub latest: bool,
    /// Every save and undo, oldest first.
    #[arg(long, group = "what")]
    pub history: bool,
    #[arg(long, value_enum, default_value = "tsv")]
    pub format: Format,
    /// Write to this file (required for parquet); standard output otherwise.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

pub fn run(db: &Path, args: RatingsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        RatingsAction::Export(a) => export(db, a),
    }
}

fn export(db: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let sql = if args.history {
        include_str!("../../sql/store/export_history.sql")
    } else {
        include_str!("../../sql/store/export_latest.sql")
    };
    // The SQL is ours, so the session may write the file the user named.
    let session = Session::open(
        db,
        &SessionOptions {
            write: false,
            allow_files: true,
            extra_dirs: Vec::new(),
        },
    )?;
    if args.format == Format::Parquet {
        let Some(out) = &args.out else {
            bail!("--format parquet needs --out FILE");
        };
        let n = session.copy_to_parquet(sql, out)?;
        eprintln!("wrote {n} ratings to {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let result = session.run(sql)?;
    match &args.out {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            result
                .write(args.format, &mut file)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ratings to {}", result.rows.len(), path.display());
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            if let Err(e) = result
                .write(args.format, &mut lock)
                .and_then(|_| lock.flush())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e).context("writing the ratings");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
