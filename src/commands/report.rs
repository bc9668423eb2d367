//! `cdwqc report`: agreement between raters (and, with trained models, model reports)
//! as Markdown on standard output, JSON, or a self-contained HTML file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::report::agreement::{self, AgreementOptions};
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
    }
}

fn agreement_report(db: &Path, args: AgreementArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(db, Access::ReadOnly)?;
    let report = agreement::build(
        &store,
        &AgreementOptions {
            sequence: args.sequence,
            raters: args.raters,
        },
    )?;
    let doc = agreement::document(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", doc.markdown());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, doc.html()).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
