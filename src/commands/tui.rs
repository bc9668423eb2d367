//! `cdwqc tui`: the terminal dashboard.

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct TuiArgs {
    /// Rate as this rater (blind: other raters' ratings stay hidden).
    #[arg(long)]
    pub rater: Option<String>,
}

pub fn run(db: &Path, args: TuiArgs) -> anyhow::Result<ExitCode> {
    crate::tui::run(db, args.rater)?;
    Ok(ExitCode::SUCCESS)
}
