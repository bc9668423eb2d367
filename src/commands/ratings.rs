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
    /// Read a rating file (native TSV/CSV, the authors' notebook files, MRIQC tables).
    Import(ImportArgs),
    /// Write ratings out: those in force (default), the whole history, or the consensus.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The rating file; for mriqc-json, JSON files or folders of them (one batch).
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The rater of a file without a rater column (notebook files, most native files);
    /// refused when it contradicts the file's rater column (or MRIQC rater columns).
    #[arg(long)]
    pub rater: Option<String>,
    /// auto, native, notebook, mriqc (tables), mriqc-json (MRIQC rating-widget files)
    /// or fetmrqc (fetMRQC's merged CSV); docs/ecosystem.md has the mappings.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// MRIQC's -1 (exclude): `reject` (not usable) or `bad` (usable, bad quality).
    #[arg(long, default_value = "reject")]
    pub mriqc_exclude: String,
    /// Import the valid rows even when others are invalid or match no image.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The rating in force per (image, rater) (the default).
    #[arg(long, group = "what")]
    pub latest: bool,
    /// Every save and undo, oldest first.
    #[arg(long, group = "what")]
    pub history: bool,
    /// One row per rated image from the ratings in force: `majority` (the default) gives
    /// the majority consensus and its task labels; `dawid-skene` the latent truth, with
    /// the posterior probability of each class of each task as columns;
    /// `dawid-skene-ordinal` the same with an ordinal prior on the quality grade.
    #[arg(long, group = "what", value_enum, num_args = 0..=1, default_missing_value = "majority")]
    pub consensus: Option<crate::rate::latent::ConsensusMethod>,
    /// One rater's ratings in force in the authors' notebook format
    /// (index, img_id, code, label), tab-separated.
    #[arg(long, group = "what", requires = "rater")]
    pub notebook: bool,
    /// Write ratings, consensus and predictions as a BIDS derivatives dataset under
    /// DIR/derivatives/cdwqc/ (DIR: the raw BIDS dataset's root).
    #[arg(long, group = "what", value_name = "DIR")]
    pub bids_derivatives: Option<PathBuf>,
    /// Only this rater's ratings (--latest, --history), or the rater for --notebook.
    #[arg(long, conflicts_with_all = ["consensus", "bids_derivatives"])]
    pub rater: Option<String>,
    #[arg(long, value_enum, default_value = "tsv")]
    pub format: Format,
    /// Write to this file (required for parquet); standard output otherwise.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// With --bids-derivatives: print what was written as JSON.
    #[arg(long, requires = "bids_derivatives")]
    pub json: bool,
}

pub fn run(db: &Path, args: RatingsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        RatingsAction::Import(a) => import(db, a),
        RatingsAction::Export(a) => export(db, a),
    }
}

fn import(db: &Path, args: ImportArgs) -> anyhow::Result<ExitCode> {
    use crate::rate::formats::{MriqcExclude, ParseOptions};
    let format = match args.format.as_str() {
        "auto" => None,
        other => Some(other.parse()?),
    };
    let mriqc_exclude = match args.mriqc_exclude.as_str() {
        "reject" => MriqcExclude::Reject,
        "bad" => MriqcExclude::Bad,
        other => bail!("--mriqc-exclude {other:?}: expected reject or bad"),
    };
    let mut store = crate::store::Store::open(db, crate::store::Access::ReadWrite)?;
    let report = crate::rate::import::import_files(
        &mut store,
        &args.files,
        args.rater.as_deref(),
        &ParseOptions {
            format,
            mriqc_exclude,
        },
        args.skip_invalid,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(note) = &report.already_imported {
            println!("{}: already imported, nothing saved ({note})", report.file);
            return Ok(ExitCode::SUCCESS);
        }
        for name in &report.new_raters {
            println!("added rater {name}");
        }
        for p in &report.problems {
            println!(
                "{}:{}: {}",
                crate::display::printable(&report.file, false),
                p.line,
                crate::display::printable(&p.message, false)
            );
        }
        if report.saved {
            println!(
                "{}: {} ratings imported ({} format, {} rows{}{}{}{}{})",
                report.file,
                report.imported,
                report.format,
                report.rows,
                counted(
                    ", ",
                    report.missing,
                    "missing values (n/a, NA or empty: no rating)"
                ),
                counted(", ", report.problems.len(), "skipped"),
                counted(
                    "; ",
                    report.earlier,
                    "saved by an earlier import of this file, not saved again"
                ),
                counted(
                    "; ",
                    report.withdrawn,
                    "rows withdrawn by an undo in the file (undos included), not saved"
                ),
                counted(
                    "; ",
                    report.unchanged,
                    "rows unchanged since the last import of this file, not saved again"
                )
            );
        } else {
            println!(
                "{}: nothing imported: {} of {} rows have problems (fix them, or pass --skip-invalid)",
                report.file,
                report.problems.len(),
                report.rows
            );
        }
    }
    Ok(if report.saved || report.already_imported.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn export(db: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.bids_derivatives {
        return export_bids(db, dir, args.json);
    }
    match args.consensus {
        Some(crate::rate::latent::ConsensusMethod::Majority) => {
            return export_consensus(db, &args);
        }
        Some(
            method @ (crate::rate::latent::ConsensusMethod::DawidSkene
            | crate::rate::latent::ConsensusMethod::DawidSkeneOrdinal),
        ) => {
            return export_latent(db, &args, method);
        }
        None => {}
    }
    if args.notebook {
        return export_notebook(db, &args);
    }
    let all = if args.history {
        include_str!("../../sql/store/export_history.sql")
    } else {
        include_str!("../../sql/store/export_latest.sql")
    };
    // One rater's own ratings: a rater asking for theirs gets no one else's, nor the
    // store's rating ids, which count everyone's saves.
    let sql = match &args.rater {
        Some(rater) => {
            crate::store::raters::validate_name(rater).map_err(anyhow::Error::msg)?;
            // A valid name holds letters, digits, '_', '-' and '.' only: no quote.
            let all = all.trim().trim_end_matches(';');
            if args.history {
                include_str!("../../sql/store/export_history_of_rater.sql")
                    .replace("{history}", all)
                    .replace("{rater}", rater)
            } else {
                format!("SELECT * FROM ({all}) WHERE rater = '{rater}'")
            }
        }
        None => all.to_string(),
    };
    let sql = sql.as_str();
    // The SQL is ours; the file is written by cdwqc, never over the store.
    let session = Session::open(
        db,
        &SessionOptions {
            write: false,
            allow_files: false,
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
    write_out(db, &result, &args, "ratings")
}

/// Writes a result to `--out` or standard output (a closed pipe is not an error).
fn write_out(
    db: &Path,
    result: &crate::query::ResultSet,
    args: &ExportArgs,
    what: &str,
) -> anyhow::Result<ExitCode> {
    match &args.out {
        Some(path) => {
            crate::query::write_output(path, db, args.format, result)?;
            eprintln!("wrote {} {what} to {}", result.rows.len(), path.display());
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            if let Err(e) = result
                .write(args.format, &mut lock)
                .and_then(|_| lock.flush())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e).context(format!("writing the {what}"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export_consensus(db: &Path, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    use crate::query::{Cell, ResultSet};
    let store = crate::store::Store::open(db, crate::store::Access::ReadOnly)?;
    let labels = crate::rate::labels::image_labels(&store)?;
    let keys = store.image_keys()?;
    let mut ids: Vec<&i64> = labels.keys().collect();
    ids.sort_by_key(|id| keys.get(*id).map(|k| k.rel_path.clone()));
    let text = |v: Option<String>| v.map_or(Cell::Null, Cell::Text);
    let int = |v: Option<u8>| v.map_or(Cell::Null, |v| Cell::Int(v.into()));
    let boolean = |v: Option<bool>| v.map_or(Cell::Null, Cell::Bool);
    let mut result = ResultSet {
        columns: [
            "subject",
            "session",
            "acq",
            "run",
            "suffix",
            "path",
            "raters",
            "usable_decision",
            "usable",
            "reject_reason",
            "quality",
            "gado",
            "motion",
            "contrast",
            "noise",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect(),
        rows: Vec::new(),
    };
    for id in ids {
        let l = &labels[id];
        let k = keys.get(id).cloned().unwrap_or_default();
        result.rows.push(vec![
            text(k.subject),
            text(k.session),
            text(k.acq),
            text(k.run),
            text(k.suffix),
            Cell::Text(k.rel_path),
            Cell::Int(l.raters as i128),
            Cell::Text(l.usable_decision.to_string()),
            boolean(l.usable),
            text(l.reject_reason.clone()),
            text(l.quality.map(str::to_string)),
            boolean(l.gado),
            int(l.motion),
            int(l.contrast),
            int(l.noise),
        ]);
    }
    if args.format == Format::Parquet {
        let Some(out) = &args.out else {
            bail!("--format parquet needs --out FILE");
        };
        // Checked and replaced as every output is: never the store, never through a link.
        crate::query::write_output(out, db, Format::Parquet, &result)?;
        eprintln!("wrote {} images to {}", result.rows.len(), out.display());
        return Ok(ExitCode::SUCCESS);
    }
    write_out(db, &result, args, "images")
}

/// Writes a result set as `--format` asks, to `--out` or standard output.
fn write_rows(
    db: &Path,
    result: &crate::query::ResultSet,
    args: &ExportArgs,
    what: &str,
) -> anyhow::Result<ExitCode> {
    if args.format == Format::Parquet {
        let Some(out) = &args.out else {
            bail!("--format parquet needs --out FILE");
        };
        crate::query::write_output(out, db, Format::Parquet, result)?;
        eprintln!("wrote {} {what} to {}", result.rows.len(), out.display());
        return Ok(ExitCode::SUCCESS);
    }
    write_out(db, result, args, what)
}

/// One row per rated image: per task, the Dawid-Skene posterior of each class
/// (`usable_p_reject`, `quality_p_good`, ...) and the most probable class.
fn export_latent(
    db: &Path,
    args: &ExportArgs,
    method: crate::rate::latent::ConsensusMethod,
) -> anyhow::Result<ExitCode> {
    use crate::query::{Cell, ResultSet};
    use crate::report::agreement::Task;
    let store = crate::store::Store::open(db, crate::store::Access::ReadOnly)?;
    let fits = crate::rate::latent::fit_store(&store, &Default::default(), method)?;
    for fit in &fits {
        eprintln!(
            "{}: Dawid-Skene over {} images and {} raters, {} after {} iterations",
            fit.task.name(),
            fit.images.len(),
            fit.raters.len(),
            if fit.model.converged {
                "converged"
            } else {
                "not converged"
            },
            fit.model.iterations
        );
    }
    let labels = crate::rate::latent::labels_of(&fits);
    let keys = store.image_keys()?;
    let mut ids: Vec<&i64> = labels.keys().collect();
    ids.sort_by_key(|id| (keys.get(*id).map(|k| k.rel_path.clone()), **id));
    let text = |v: Option<String>| v.map_or(Cell::Null, Cell::Text);
    let mut columns: Vec<String> = ["subject", "session", "acq", "run", "suffix", "path"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    for task in Task::ALL {
        for c in task.categories() {
            columns.push(format!("{}_p_{c}", task.name()));
        }
        columns.push(format!("{}_label", task.name()));
    }
    let mut result = ResultSet {
        columns,
        rows: Vec::new(),
    };
    for id in ids {
        let l = &labels[id];
        let k = keys.get(id).cloned().unwrap_or_default();
        let mut row = vec![
            text(k.subject),
            text(k.session),
            text(k.acq),
            text(k.run),
            text(k.suffix),
            Cell::Text(k.rel_path),
        ];
        for task in Task::ALL {
            let n = task.categories().len();
            match l.posterior(task) {
                Some(p) => row.extend(p.iter().map(|v| Cell::Float(*v))),
                None => row.extend(std::iter::repeat_n(Cell::Null, n)),
            }
            row.push(text(
                l.class_of(task).map(|c| task.categories()[c].to_string()),
            ));
        }
        result.rows.push(row);
    }
    write_rows(db, &result, args, "images")
}

fn export_notebook(db: &Path, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    use crate::rate::formats::{Delimiter, ImageKey, ParsedRow, write_notebook};
    let store = crate::store::Store::open(db, crate::store::Access::ReadOnly)?;
    let rater = args.rater.clone().unwrap_or_default();
    let keys = store.image_keys()?;
    let mut rows: Vec<(String, ParsedRow)> = Vec::new();
    for r in store
        .ratings_in_force()?
        .iter()
        .filter(|r| r.rater == rater)
    {
        let (rating, grades_known) = crate::rate::labels::to_protocol(r);
        let rel = keys
            .get(&r.image_id)
            .map(|k| k.rel_path.clone())
            .unwrap_or_default();
        let stem = crate::imaging::bids::stem(Path::new(&rel));
        let mut row = ParsedRow::new(0, ImageKey::Path(stem), rating);
        row.grades_known = grades_known;
        rows.push((rel, row));
    }
    if rows.is_empty() {
        bail!("rater {rater} has no rating in force");
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let rows: Vec<ParsedRow> = rows.into_iter().map(|(_, r)| r).collect();
    let text = write_notebook(&rows, Delimiter::Tab)?;
    match &args.out {
        Some(path) => {
            crate::query::write_file(path, db, text.as_bytes())?;
            eprintln!("wrote {} ratings to {}", rows.len(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `separator` and `n` `what`, or nothing when `n` is 0: the optional parts of the
/// import summary.
fn counted(separator: &str, n: usize, what: &str) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("{separator}{n} {what}")
    }
}

fn export_bids(db: &Path, dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::Store::open(db, crate::store::Access::ReadOnly)?;
    let written = crate::rate::bids::export(&store, dir)
        .with_context(|| format!("exporting BIDS derivatives into {}", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&written)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: {} ratings of {} images, {} predictions ({})",
        written.folder,
        written.ratings,
        written.images_rated,
        written.predictions,
        written.files.join(", ")
    );
    if written.outside_dataset > 0 {
        println!(
            "left out {} images outside {}: a BIDS path cannot name them",
            written.outside_dataset,
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
