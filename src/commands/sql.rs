//! `cdwqc sql`: run ad-hoc SQL on the store and print or save the result.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::query::{Format, Session, SessionOptions};

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The SQL to run (several statements separated by `;`; the last one's result is shown).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub query: Option<String>,
    /// Read the SQL from a file instead.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Output format: table on a terminal, CSV otherwise.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the result to this file instead of standard output.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Allow statements that change the store.
    #[arg(long)]
    pub write: bool,
    /// Allow reading and writing files outside the store's folder (read_csv, COPY...).
    #[arg(long)]
    pub allow_files: bool,
}

pub fn run(db: &Path, args: SqlArgs) -> anyhow::Result<ExitCode> {
    let sql = match (&args.query, &args.file) {
        (Some(q), _) => q.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading SQL from {}", f.display()))?,
        (None, None) => bail!("give a query or --file"),
    };
    let format = args.format.unwrap_or_else(|| {
        if args.out.is_none() && std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Csv
        }
    });
    let out_dir = args.out.as_ref().map(|o| {
        let parent = o
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf())
    });
    let session = Session::open(
        db,
        &SessionOptions {
            write: args.write,
            allow_files: args.allow_files,
            extra_dirs: out_dir.into_iter().collect(),
        },
    )?;
    if format == Format::Parquet {
        let Some(out) = &args.out else {
            bail!("--format parquet needs --out FILE");
        };
        let target = absolute(out);
        let n = session.copy_to_parquet(&sql, &target)?;
        eprintln!("wrote {n} rows to {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let result = session.run(&sql)?;
    match &args.out {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            result
                .write(format, &mut file)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} rows to {}", result.rows.len(), path.display());
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            if let Err(e) = result.write(format, &mut lock).and_then(|_| lock.flush()) {
                // A closed pipe (`| head`) is not an error worth reporting.
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("writing the result");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
