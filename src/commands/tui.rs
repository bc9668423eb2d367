//! `cdwqc tui`: the terminal dashboard.

use std::path::Path;
use std::process::ExitCode;

use crate::tui::graphics::GraphicsMode;

#[derive(Debug, clap::Args)]
pub struct TuiArgs {
    /// Rate as this rater (blind: other raters' ratings stay hidden).
    #[arg(long)]
    pub rater: Option<String>,
    /// How the Viewer draws slices: `auto` asks the terminal at start-up and uses
    /// sixel, kitty or iTerm2 graphics where it has them (half blocks otherwise, and
    /// always inside tmux or screen); `halfblocks` never asks.
    #[arg(long, value_enum, default_value_t, env = "CDWQC_GRAPHICS")]
    pub graphics: GraphicsMode,
}

pub fn run(db: &Path, args: TuiArgs) -> anyhow::Result<ExitCode> {
    crate::tui::run(db, args.rater, args.graphics)?;
    Ok(ExitCode::SUCCESS)
}
