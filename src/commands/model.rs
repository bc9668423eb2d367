//! `cdwqc model`: export a trained run as a portable model folder (`model.toml` card +
//! `weights.safetensors`), and show a model's card after checking its weights.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::jobs::plan::{ExportRequest, plan_export};
use crate::jobs::{models_dir, runs_dir};
use crate::model::card::{CARD_FILE, ExportedModel};
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub action: ModelAction,
}

#[derive(Debug, Subcommand)]
pub enum ModelAction {
    /// Write a completed training run's best weights and model card to <out>/<name>/.
    Export(ExportArgs),
    /// Check a model's weights against its card and print the card.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The completed training run to export.
    #[arg(long)]
    pub run: String,
    /// The model's name (its folder; `cdwqc infer --model NAME`).
    #[arg(long)]
    pub name: String,
    /// Folder that receives the model folder.
    #[arg(long, default_value = "models")]
    pub out: PathBuf,
    /// What the model is for, in one sentence (default: task, classes, method).
    #[arg(long)]
    pub description: Option<String>,
    /// The licence of the weights, as the card states it.
    #[arg(
        long,
        default_value = "unspecified (set with cdwqc model export --licence)"
    )]
    pub licence: String,
    /// Replace an existing model folder of that name.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// A model folder, or a name under ./models.
    pub model: String,
}

pub fn run(db: &Path, args: ModelArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ModelAction::Export(a) => export(db, a),
        ModelAction::Show(a) => show(a),
    }
}

fn export(db: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(db, Access::ReadOnly)?;
    let request = ExportRequest {
        run: args.run.clone(),
        name: args.name.clone(),
        description: args.description,
        licence: args.licence,
    };
    let (card, weights) = plan_export(&store, &request, &runs_dir())?;
    let model = ExportedModel::write(card, &weights, &args.out, args.force)
        .with_context(|| format!("exporting run {}", args.run))?;
    let card = &model.card;
    println!(
        "{}: {} model ({}), preset {}, from run {}; weights sha256 {} ({} bytes)",
        model.dir.display(),
        card.task,
        card.classes.join(" / "),
        card.preset.name,
        args.run,
        card.weights.sha256,
        card.weights.bytes
    );
    println!("predict in any store: cdwqc --db STORE infer --model {}", {
        if args.out == models_dir() {
            card.name.clone()
        } else {
            model.dir.display().to_string()
        }
    });
    Ok(ExitCode::SUCCESS)
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let dir = ExportedModel::resolve(&args.model, &models_dir())?;
    let model = ExportedModel::open(&dir)?;
    let weights = model.verified_weights()?;
    let card_path = dir.join(CARD_FILE);
    let text = std::fs::read_to_string(&card_path)
        .with_context(|| format!("reading {}", card_path.display()))?;
    print!("{text}");
    eprintln!("{}: size and SHA-256 match the card", weights.display());
    Ok(ExitCode::SUCCESS)
}
