//! The command line: global options and one subcommand per task.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{
    import::ImportArgs, info::InfoArgs, init::InitArgs, inspect::InspectArgs, raters::RatersArgs,
    sql::SqlArgs, tui::TuiArgs,
};

#[derive(Debug, Parser)]
#[command(
    name = "cdwqc",
    version,
    about = "Quality control of brain MRIs in clinical data warehouses",
    long_about = "Quality control of brain MRIs in clinical data warehouses: index NIfTI \
                  images into a DuckDB store, rate them, train and run QC models, report \
                  agreement and accuracy."
)]
pub struct Cli {
    /// The store (a DuckDB file).
    #[arg(long, global = true, env = "CDWQC_DB", default_value = "cdwqc.duckdb")]
    pub db: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store (or bring an older one up to date).
    Init(InitArgs),
    /// Index a BIDS tree or folders of NIfTI images into the store.
    Import(ImportArgs),
    /// Run SQL on the store (read-only unless --write).
    Sql(SqlArgs),
    /// Print the header facts of NIfTI files without touching the store.
    Inspect(InspectArgs),
    /// Versions, compute devices (CPU / CUDA) and the store's schema.
    Info(InfoArgs),
    /// Add and list raters.
    Raters(RatersArgs),
    /// The terminal dashboard: browse, view and rate images.
    Tui(TuiArgs),
}
