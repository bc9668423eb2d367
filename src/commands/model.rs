//! `cdwqc model`: export a trained run as a portable model folder (`model.toml` card +
//! `weights.safetensors`), and show a model's card after checking its weights.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::commands::report::ScoringArgs;
use crate::jobs::iqm_forest::companion_forest;
use crate::jobs::plan::{ExportRequest, plan_export};
use crate::jobs::{models_dir, runs_dir};
use crate::model::card::{
    CARD_FILE, CardEvaluation, ClassEvaluation, ExportedModel, FOREST_FILE, MemberInfo, ModelCard,
};
use crate::model::iqm_forest::ForestConfig;
use crate::report::model as report_model;
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
    /// Score a model's predictions in this store (`cdwqc infer --model`) and record the
    /// result in its card under a label (e.g. an external test set).
    Evaluate(EvaluateArgs),
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
    /// Also carry an IQM forest, grown on the run's labelled training and validation
    /// images' quality metrics, whose probabilities `infer --model` mixes with the
    /// network's (docs/pretrained.md).
    #[arg(long)]
    pub iqm_forest: bool,
    /// The forest's share of the mixed probabilities, in (0, 1].
    #[arg(long, default_value_t = 0.5, requires = "iqm_forest")]
    pub iqm_forest_weight: f64,
    /// Trees in the forest.
    #[arg(long, default_value_t = 200, requires = "iqm_forest",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub trees: u16,
    /// Another completed training run (repeatable) whose network predicts with the
    /// run's: the model's network probabilities are the mean of all (an ensemble of
    /// seeds). Each needs the run's task, method, preset and split (`train
    /// --split-seed`), so the card's held-out figures stay held out for every network.
    #[arg(long = "member-run", value_name = "RUN")]
    pub member_runs: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// A model folder, or a name under ./models.
    pub model: String,
}

#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// A model folder, or a name under ./models.
    pub model: String,
    /// The name the evaluation is recorded under (one per label: a later one replaces it).
    #[arg(long)]
    pub label: String,
    /// What the images are, in one sentence.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The run holding the model's predictions (default: model:<name>).
    #[arg(long)]
    pub run: Option<String>,
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

pub fn run(db: &Path, args: ModelArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ModelAction::Export(a) => export(db, a),
        ModelAction::Show(a) => show(a),
        ModelAction::Evaluate(a) => evaluate(db, a),
    }
}

fn evaluate(db: &Path, args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let dir = ExportedModel::resolve(&args.model, &models_dir())?;
    let mut model = ExportedModel::open(&dir)?;
    let run = args
        .run
        .clone()
        .unwrap_or_else(|| format!("model:{}", model.card.name));
    let store = Store::open(db, Access::ReadOnly)?;
    let report = report_model::build(&store, &run, &args.scoring.options())
        .with_context(|| format!("scoring run {run} in {}", db.display()))?;
    if report.task.name() != model.card.task {
        anyhow::bail!(
            "run {run} predicts {}, but model {} is a {} model",
            report.task.name(),
            model.card.name,
            model.card.task
        );
    }
    let overall = &report.overall;
    let evaluation = CardEvaluation {
        label: args.label.clone(),
        description: args.description.clone(),
        run: run.clone(),
        against: report.against.clone(),
        images: overall.images,
        subjects: overall.subjects,
        balanced_accuracy: overall.balanced_accuracy.value,
        balanced_accuracy_ci95: overall.balanced_accuracy.ci95,
        roc_auc: overall.auc.value,
        confusion: overall.confusion.clone(),
        one_vs_rest: overall
            .per_class
            .iter()
            .map(|c| ClassEvaluation {
                class: c.class.clone(),
                balanced_accuracy: c.balanced_accuracy_one_vs_rest.value,
                ci95: c.balanced_accuracy_one_vs_rest.ci95,
            })
            .collect(),
    };
    model
        .record_evaluation(evaluation.clone())
        .with_context(|| format!("recording the evaluation in {}", dir.display()))?;
    if args.scoring.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
    } else {
        let show = |v: Option<f64>, ci: Option<[f64; 2]>| match (v, ci) {
            (Some(v), Some([lo, hi])) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
            (Some(v), None) => format!("{v:.3}"),
            _ => "undefined".to_string(),
        };
        println!(
            "{}: {} on {} ({} images): balanced accuracy {}",
            model.card.name,
            args.label,
            run,
            evaluation.images,
            show(
                evaluation.balanced_accuracy,
                evaluation.balanced_accuracy_ci95
            )
        );
        for class in &evaluation.one_vs_rest {
            println!(
                "  {} vs rest: {}",
                class.class,
                show(class.balanced_accuracy, class.ci95)
            );
        }
        println!("recorded in {}", dir.join(CARD_FILE).display());
    }
    Ok(ExitCode::SUCCESS)
}

fn export(db: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(db, Access::ReadOnly)?;
    let request = ExportRequest {
        run: args.run.clone(),
        name: args.name.clone(),
        description: args.description.clone(),
        licence: args.licence.clone(),
    };
    let (mut card, weights) = plan_export(&store, &request, &runs_dir())?;
    let mut member_weights = Vec::with_capacity(args.member_runs.len());
    for member in &args.member_runs {
        let (info, weights) = ensemble_member(&store, &args, &card, member)?;
        card.members.push(info);
        member_weights.push(weights);
    }
    let forest_file = if args.iqm_forest {
        let config = ForestConfig {
            trees: args.trees,
            seed: 0,
        };
        let (forest, info) = companion_forest(&store, &args.run, config, args.iqm_forest_weight)?;
        let path = std::env::temp_dir().join(format!(
            "cdwqc-{}-{}-{FOREST_FILE}",
            std::process::id(),
            args.name
        ));
        forest
            .write(&path)
            .with_context(|| format!("writing the IQM forest of run {}", args.run))?;
        println!("IQM forest: {} trees on {}", info.trees, info.data);
        card.iqm_forest = Some(info);
        Some(path)
    } else {
        None
    };
    let written = ExportedModel::write_ensemble(
        card,
        &weights,
        &member_weights,
        forest_file.as_deref(),
        &args.out,
        args.force,
    );
    if let Some(path) = &forest_file {
        let _ = std::fs::remove_file(path);
    }
    let model = written.with_context(|| format!("exporting run {}", args.run))?;
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
    for member in &card.members {
        println!(
            "ensemble member from run {} (seed {}): weights sha256 {} ({} bytes)",
            member.run, member.seed, member.sha256, member.bytes
        );
    }
    println!("predict in any store: cdwqc --db STORE infer --model {}", {
        if args.out == models_dir() {
            card.name.clone()
        } else {
            model.dir.display().to_string()
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// A further network for the exported model: a completed run of the same task, method,
/// network and preset, trained on the same split, and its best weights.
fn ensemble_member(
    store: &Store,
    args: &ExportArgs,
    card: &ModelCard,
    member: &str,
) -> anyhow::Result<(MemberInfo, PathBuf)> {
    let request = ExportRequest {
        run: member.to_string(),
        name: args.name.clone(),
        description: None,
        licence: args.licence.clone(),
    };
    let (other, weights) = plan_export(store, &request, &runs_dir())?;
    let differs = |what: &str, mine: String, theirs: String| -> anyhow::Result<()> {
        if mine != theirs {
            bail!(
                "run {member} cannot join run {} in one model: its {what} is {theirs}, not {mine}",
                args.run
            );
        }
        Ok(())
    };
    differs("task", card.task.clone(), other.task.clone())?;
    differs("method", card.method.clone(), other.method.clone())?;
    differs("prediction head", card.head.clone(), other.head.clone())?;
    differs(
        "network's classes (source, target)",
        format!("{}, {}", card.source_classes, card.target_classes),
        format!("{}, {}", other.source_classes, other.target_classes),
    )?;
    if card.preset != other.preset {
        bail!(
            "run {member} cannot join run {} in one model: it was trained with preset {}, which differs from run {}'s preset {}",
            args.run,
            other.preset.name,
            args.run,
            card.preset.name
        );
    }
    let split_of = |run: &str| -> anyhow::Result<String> {
        Ok(store
            .export_run(run)?
            .and_then(|r| r.split_id)
            .unwrap_or_else(|| run.to_string()))
    };
    let moved = store.split_differences(&split_of(&args.run)?, &split_of(member)?)?;
    if moved > 0 {
        bail!(
            "run {member} cannot join run {} in one model: {moved} of the labelled images are in another set of its split (train, validation, test), so the card's held-out figures would not be held out for every network; train the members with the same --split-seed",
            args.run
        );
    }
    Ok((
        MemberInfo {
            file: String::new(),
            sha256: String::new(),
            bytes: 0,
            run: member.to_string(),
            seed: other.training.seed,
            best_val_balanced_accuracy: other.metrics.best_val_balanced_accuracy,
            test_balanced_accuracy: other.metrics.test_balanced_accuracy,
        },
        weights,
    ))
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let dir = ExportedModel::resolve(&args.model, &models_dir())?;
    let model = ExportedModel::open(&dir)?;
    let networks = model.verified_networks()?;
    let forest = model.verified_forest()?;
    let card_path = dir.join(CARD_FILE);
    let text = std::fs::read_to_string(&card_path)
        .with_context(|| format!("reading {}", card_path.display()))?;
    print!("{text}");
    for weights in &networks {
        eprintln!("{}: size and SHA-256 match the card", weights.display());
    }
    if let (Some(forest), Some(info)) = (forest, &model.card.iqm_forest) {
        eprintln!(
            "{}: size and SHA-256 match the card ({} training rows of {} metrics)",
            dir.join(&info.file).display(),
            forest.labels.len(),
            info.features.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
