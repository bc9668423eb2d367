//! `cdwqc sql`: run ad-hoc SQL on the store and print or save the result.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::query::{Format, Session, SessionOptions, write_output};

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
    /// Write the result to this file instead of standard output (never the store, its
    /// WAL or another DuckDB database, also through links).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Allow statements that change the store.
    #[arg(long)]
    pub write: bool,
    /// Let a read-only session read files (read_csv, read_parquet...) anywhere; SQL
    /// reaches no file otherwise.
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
    let session = Session::open(
        db,
        &SessionOptions {
            write: args.write,
            allow_files: args.allow_files,
        },
    )?;
    if format == Format::Parquet {
        let Some(out) = &args.out else {
            bail!("--format parquet needs --out FILE");
        };
        let n = session.copy_to_parquet(&sql, out)?;
        eprintln!("wrote {n} rows to {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    // Refused or unbound, nothing ran: the error is the checks' own.
    session.check(&sql)?;
    let result = match session.run(&sql) {
        Ok(result) => result,
        // A failing statement of a writing script: DuckDB has committed the ones before
        // it, which the error alone does not say.
        Err(crate::query::QueryError::Sql(message))
            if args.write && sql.trim().trim_end_matches(';').contains(';') =>
        {
            bail!(
                "{message}\nWith --write each statement commits itself: the statements before \
                 the failing one were saved, unless they were inside BEGIN ... COMMIT, which \
                 a failure rolls back whole."
            );
        }
        Err(e) => return Err(e.into()),
    };
    // The command ends with the session: an open transaction would be rolled back
    // silently, after its statements reported their counts as if saved.
    let conn = session.store().conn();
    if crate::query::transaction_open(conn) {
        let _ = conn.execute_batch("ROLLBACK");
        bail!(
            "the SQL began a transaction it did not end: it was rolled back, and nothing \
             after BEGIN was saved (statements before it committed themselves); end it \
             with COMMIT, or leave BEGIN off: each statement commits itself"
        );
    }
    match &args.out {
        Some(path) => {
            write_output(path, db, format, &result)?;
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
