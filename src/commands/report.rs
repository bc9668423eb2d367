//! `cdwqc report`: agreement between raters (and, with trained models, model reports)
//! as Markdown on standard output, JSON, or a self-contained HTML file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use crate::metrics::{BootstrapConfig, OperatingTarget};
use crate::report::agreement::{self, AgreementOptions};
use crate::report::document::Document;
use crate::report::model::{self, EvalSet, ModelOptions, Truth};
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub kind: ReportKind,
}

#[derive(Debug, Subcommand)]
pub enum ReportKind {
    /// Agreement between raters, per task: every pair and all raters together.
    Agreement(AgreementArgs),
    /// A trained run scored against the consensus or one rater: balanced accuracy and
    /// AUC with bootstrap CIs, per-class metrics, confusion, per scanner, ROC and
    /// reliability plots.
    Model(ModelArgs),
    /// Runs side by side: balanced accuracy per method and task with CIs, and every
    /// method against the target-only baseline on the same images.
    Compare(CompareArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScoringArgs {
    /// Truth: `consensus` or a rater's name.
    #[arg(long, default_value = "consensus")]
    pub against: Truth,
    /// Images scored: the run's held-out test subjects (default when the run has a
    /// split), every image it did not learn labels from, or all (optimistic).
    #[arg(long, value_enum)]
    pub set: Option<EvalSet>,
    /// Bootstrap replicates for the 95% CIs (subjects are resampled).
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with plots.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

impl ScoringArgs {
    pub(crate) fn options(&self) -> ModelOptions {
        ModelOptions {
            against: self.against.clone(),
            set: self.set,
            bootstrap: BootstrapConfig {
                replicates: self.bootstrap.max(1),
                seed: self.seed,
                ..BootstrapConfig::default()
            },
            figures: self.html.is_some(),
            target: None,
            triage: None,
            failed_as: None,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// The run to score (see `cdwqc sql "select run_id from runs"`).
    #[arg(long)]
    pub run: String,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Pick the threshold on the run's validation images that detects this share of
    /// the last class (reject, bad, gado), and report the test set at it.
    #[arg(long, group = "operating_point")]
    pub target_sensitivity: Option<f64>,
    /// Pick the threshold on the validation images that keeps this share of the other
    /// classes unflagged.
    #[arg(long, group = "operating_point")]
    pub target_specificity: Option<f64>,
    /// Triage at this rate (e.g. 0.95): on the validation images, pick the score below
    /// which the model accepts an image and the score from which it rejects one, so that
    /// this share of the last class escapes acceptance and this share of the others
    /// escapes rejection; report how many ratings the band between saves.
    #[arg(long, value_name = "RATE")]
    pub triage: Option<f64>,
    /// Score the images whose prediction failed (unreadable, or a flagged registration)
    /// as this class (e.g. reject, bad) instead of leaving them out.
    #[arg(long, value_name = "CLASS")]
    pub failed_as: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Runs to compare; `*` matches any text (`'demo-*'`).
    #[arg(required = true)]
    pub runs: Vec<String>,
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

#[derive(Debug, clap::Args)]
pub struct AgreementArgs {
    /// Only images of this sequence (BIDS suffix, e.g. FLAIR).
    #[arg(long)]
    pub sequence: Option<String>,
    /// Only these raters (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub raters: Vec<String>,
    /// Print JSON (schema cdwqc.agreement/1) instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with plots.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

pub fn run(db: &Path, args: ReportArgs) -> anyhow::Result<ExitCode> {
    match args.kind {
        ReportKind::Agreement(a) => agreement_report(db, a),
        ReportKind::Model(a) => model_report(db, a),
        ReportKind::Compare(a) => compare_report(db, a),
    }
}

/// Refuses an unusable `--html` before any work, so that a refused file does not come
/// after the report was printed or computed for nothing.
fn check_html(db: &Path, html: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = html {
        crate::query::resolve_output(path, db)?;
    }
    Ok(())
}

/// Markdown or JSON on standard output, and the HTML file when asked.
fn emit(
    db: &Path,
    json: impl serde::Serialize,
    as_json: bool,
    doc: &Document,
    html: Option<&Path>,
) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", doc.markdown());
    }
    if let Some(path) = html {
        // Never the store, its WAL or another DuckDB file, through links either.
        crate::query::write_file(path, db, doc.html().as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn model_report(db: &Path, args: ModelArgs) -> anyhow::Result<ExitCode> {
    check_html(db, args.scoring.html.as_deref())?;
    let store = Store::open(db, Access::ReadOnly)?;
    let mut options = args.scoring.options();
    options.target = match (args.target_sensitivity, args.target_specificity) {
        (Some(v), _) => Some(OperatingTarget::Sensitivity(v)),
        (None, Some(v)) => Some(OperatingTarget::Specificity(v)),
        (None, None) => None,
    };
    if let Some(OperatingTarget::Sensitivity(v) | OperatingTarget::Specificity(v)) = options.target
        && !(v > 0.0 && v <= 1.0)
    {
        bail!("the target rate {v} is not in (0, 1]");
    }
    if let Some(rate) = args.triage {
        if !(rate > 0.0 && rate <= 1.0) {
            bail!("--triage {rate} is not in (0, 1]");
        }
        options.triage = Some(rate);
    }
    options.failed_as = args.failed_as.clone();
    let report = model::build(&store, &args.run, &options)?;
    let doc = model::document(&report);
    emit(
        db,
        &report,
        args.scoring.json,
        &doc,
        args.scoring.html.as_deref(),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn compare_report(db: &Path, args: CompareArgs) -> anyhow::Result<ExitCode> {
    check_html(db, args.scoring.html.as_deref())?;
    let store = Store::open(db, Access::ReadOnly)?;
    let runs = model::resolve_runs(&store, &args.runs)?;
    let comparison = model::compare(&store, &runs, &args.scoring.options())?;
    let doc = model::compare_document(&comparison);
    emit(
        db,
        &comparison,
        args.scoring.json,
        &doc,
        args.scoring.html.as_deref(),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn agreement_report(db: &Path, args: AgreementArgs) -> anyhow::Result<ExitCode> {
    check_html(db, args.html.as_deref())?;
    let store = Store::open(db, Access::ReadOnly)?;
    let report = agreement::build(
        &store,
        &AgreementOptions {
            sequence: args.sequence,
            raters: args.raters,
        },
    )?;
    let doc = agreement::document(&report);
    emit(db, &report, args.json, &doc, args.html.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
