//! From the store to a job plan (labels, data split, image files), and a job's epochs
//! and outcome back into the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{InferPlan, InferResult, ModelSource, PlanItem, TrainPlan, TrainResult};
use crate::model::ModelError;
use crate::model::augment::ArtefactRule;
use crate::model::card::{CardMetrics, ExportedModel, ModelCard, TrainingInfo, WeightsInfo};
use crate::model::preset::Preset;
use crate::model::recipe::Recipe;
use crate::model::split::{Set, split_by_subject};
use crate::model::train::{
    CheckpointState, EpochReport, InitialWeights, Method, Selection, TrainConfig, TrainStatus,
};
use crate::rate::labels::image_labels;
use crate::rate::latent::{ConsensusMethod, latent_labels};
use crate::report::agreement::Task;
use crate::store::runs::{EpochRow, ModelImage, ModelRun, NewRun, RunRow, SplitRow};
use crate::store::{Store, StoreError};

/// Why a job could not be planned or recorded.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> PlanError {
    PlanError::Invalid(message.into())
}

/// A built-in preset by name, or a preset file.
pub fn load_preset(name: &str) -> Result<Preset, ModelError> {
    if Path::new(name).is_file() {
        Preset::from_file(Path::new(name))
    } else {
        Preset::builtin(name)
    }
}

/// What a user asks to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRequest {
    /// Built-in preset name or TOML file; absent: the initial model's preset, else
    /// [`DEFAULT_PRESET`].
    pub preset: Option<String>,
    pub task: Task,
    /// Labelled source sequence (BIDS suffix).
    pub source: String,
    /// Target sequence: few labelled, many unlabelled images.
    pub target: String,
    pub method: String,
    pub epochs: Option<usize>,
    pub seed: u64,
    /// The seed that draws the train / validation / test split by subject; absent:
    /// `seed`. Runs with several seeds on one split measure the seed's effect alone.
    pub split_seed: Option<u64>,
    pub device: String,
    /// Run name (default: <task>-<method>-seed<seed>).
    pub run: Option<String>,
    /// Continue this interrupted run: its stored configuration, task, sequences and
    /// split; everything else in the request but `device` is ignored.
    pub resume: Option<String>,
    pub learning_rate: Option<f64>,
    /// `clinicadl` or `cdwqc`, in place of the preset's `[training]` recipe.
    pub recipe: Option<String>,
    /// Majority consensus or Dawid-Skene latent truth (a resumed run keeps its own).
    pub labels: ConsensusMethod,
    /// Train towards the latent truth's posterior of each labelled image instead of its
    /// most probable class (Dawid-Skene labels only; a resumed run keeps its own).
    pub soft_targets: bool,
    /// An exported model (a name under `models/` or a folder) whose weights the run
    /// starts from; `finetune` then skips its source pretraining.
    pub init_model: Option<String>,
    /// Which epoch's weights to keep; absent: [`Selection::auto`] on the validation set.
    pub selection: Option<Selection>,
}

/// The preset of a run that names none and starts from no model.
pub const DEFAULT_PRESET: &str = "cpu-small";

impl Default for TrainRequest {
    fn default() -> Self {
        Self {
            preset: None,
            task: Task::Usable,
            source: "T1w".into(),
            target: "FLAIR".into(),
            method: "ssda".into(),
            epochs: None,
            seed: 0,
            split_seed: None,
            device: "auto".into(),
            run: None,
            resume: None,
            learning_rate: None,
            recipe: None,
            labels: ConsensusMethod::Majority,
            soft_targets: false,
            init_model: None,
            selection: None,
        }
    }
}

/// The exported model a run starts from, its card checked against the task and its
/// weights verified (size and SHA-256).
fn initial_model(name: &str, task: Task) -> Result<(ExportedModel, PathBuf), PlanError> {
    let model = ExportedModel::open(&ExportedModel::resolve(name, &super::models_dir())?)?;
    if model.card.task()? != task {
        return Err(invalid(format!(
            "model {} predicts task {}, not {}: give --task {} or another model",
            model.card.name,
            model.card.task,
            task.name(),
            model.card.task
        )));
    }
    if !model.card.members.is_empty() {
        return Err(invalid(format!(
            "model {} averages {} networks; a run starts from one: export one of its runs alone ({}) and start from that",
            model.card.name,
            model.card.members.len() + 1,
            model.card.training.run
        )));
    }
    let weights = model.verified_weights()?;
    Ok((model, weights))
}

fn grid_words(preset: &Preset) -> String {
    let [x, y, z] = preset.preprocess.shape;
    format!("{x}x{y}x{z} at {} mm", preset.preprocess.spacing_mm)
}

/// A planned training run and the rows that record its start.
#[derive(Debug, Clone)]
pub struct PlannedTraining {
    pub plan: TrainPlan,
    /// The run and its split, for a new run (a resumed run has them already).
    start: Option<(NewRun, Vec<SplitRow>)>,
    /// Image counts per set, for the user.
    pub summary: String,
}

fn plan_item(image: &ModelImage, label: Option<usize>) -> PlanItem {
    PlanItem {
        image_id: image.image_id,
        path: image.path.clone(),
        sha256: image.sha256.clone(),
        stamp: Some(image.stamp),
        label,
        soft_label: None,
    }
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The labelled images of a task in two sequences, as the store has them now.
struct LabelledImages {
    source_images: Vec<ModelImage>,
    target_images: Vec<ModelImage>,
    /// Labelled source images.
    source: Vec<PlanItem>,
    /// Labelled target images: (image, subject, class).
    target: Vec<(i64, String, usize)>,
    /// Every image with a consensus label (any task).
    rated: HashSet<i64>,
    /// The latent truth's posterior of the task's classes, per labelled image (Dawid-Skene
    /// labels only).
    posteriors: HashMap<i64, Vec<f32>>,
}

fn labelled_images(
    store: &Store,
    task: Task,
    source_sequence: &str,
    target_sequence: &str,
    method: ConsensusMethod,
) -> Result<LabelledImages, PlanError> {
    // image -> class of the task; `rated` keeps every image with any label.
    let mut posteriors: HashMap<i64, Vec<f32>> = HashMap::new();
    let (labels, rated): (HashMap<i64, usize>, HashSet<i64>) = match method {
        ConsensusMethod::Majority => {
            let all = image_labels(store)?;
            (
                all.iter()
                    .filter_map(|(id, l)| Some((*id, l.class_of(task)?)))
                    .collect(),
                all.keys().copied().collect(),
            )
        }
        ConsensusMethod::DawidSkene | ConsensusMethod::DawidSkeneOrdinal => {
            let all = latent_labels(store, method).map_err(|e| invalid(e.to_string()))?;
            posteriors = all
                .iter()
                .filter(|(_, l)| l.class_of(task).is_some())
                .filter_map(|(id, l)| {
                    let p = l.posterior(task)?;
                    Some((*id, p.iter().map(|&v| v as f32).collect()))
                })
                .collect();
            (
                all.iter()
                    .filter_map(|(id, l)| Some((*id, l.class_of(task)?)))
                    .collect(),
                all.keys().copied().collect(),
            )
        }
    };
    let label_of = |image: &ModelImage| labels.get(&image.image_id).copied();
    // Image ids follow the order in which a parallel import finished its files; the path
    // order is the same whenever the same warehouse is imported, so is the training.
    let mut source_images = store.model_images(source_sequence)?;
    let mut target_images = store.model_images(target_sequence)?;
    source_images.sort_by(|a, b| a.path.cmp(&b.path));
    target_images.sort_by(|a, b| a.path.cmp(&b.path));
    let source = source_images
        .iter()
        .filter_map(|image| label_of(image).map(|y| plan_item(image, Some(y))))
        .collect();
    let target = target_images
        .iter()
        .filter_map(|image| label_of(image).map(|y| (image.image_id, image.subject.clone(), y)))
        .collect();
    Ok(LabelledImages {
        source,
        target,
        rated,
        source_images,
        target_images,
        posteriors,
    })
}

impl LabelledImages {
    /// The labels a run trains on, as a fingerprint stored with the run: SHA-256 of the
    /// sorted (image, class) pairs of the labelled target and source images, and with
    /// `soft` targets their posteriors too (to 6 decimals), since a new rating can move
    /// those without changing a class.
    fn snapshot(&self, soft: bool) -> String {
        let mut pairs: Vec<(i64, usize)> = self.target.iter().map(|(i, _, y)| (*i, *y)).collect();
        pairs.extend(
            self.source
                .iter()
                .filter_map(|s| Some((s.image_id, s.label?))),
        );
        pairs.sort_unstable();
        let mut text = serde_json::to_string(&pairs).unwrap_or_default();
        if soft {
            for (id, _) in &pairs {
                let p = self.soft_label(*id, true).unwrap_or_default();
                let p: Vec<String> = p.iter().map(|v| format!("{v:.6}")).collect();
                text.push_str(&format!(";{id}:{}", p.join(",")));
            }
        }
        crate::import::analyse::hex_sha256(text.as_bytes())
    }

    /// The soft target of a labelled image when a run trains on them.
    fn soft_label(&self, image_id: i64, soft: bool) -> Option<Vec<f32>> {
        if soft {
            self.posteriors.get(&image_id).cloned()
        } else {
            None
        }
    }
}

/// Reads labels and images and fixes the subject-level split of a training run, or,
/// with `resume`, reads back the stored split of the run to continue. Reads only:
/// [`record_start`] writes the run.
pub fn plan_training(
    store: &Store,
    request: &TrainRequest,
    runs_dir: &Path,
    cache_dir: Option<PathBuf>,
) -> Result<PlannedTraining, PlanError> {
    if let Some(run) = &request.resume {
        return plan_resume(store, run, request, runs_dir, cache_dir);
    }
    let task = request.task;
    let seed = request.seed;
    let method = request
        .method
        .parse::<Method>()
        .map_err(|e| invalid(e.to_string()))?;
    let initial = request
        .init_model
        .as_deref()
        .map(|name| initial_model(name, task))
        .transpose()?;
    let preset = match (&request.preset, &initial) {
        (Some(name), _) => load_preset(name)?,
        (None, Some((model, _))) => model.card.preset.clone(),
        (None, None) => load_preset(DEFAULT_PRESET)?,
    };
    if let Some((model, _)) = &initial
        && model.card.preset.preprocess != preset.preprocess
    {
        return Err(invalid(format!(
            "model {} was trained on images prepared by preset {} ({}), but preset {} prepares them otherwise: leave --preset out to use the model's",
            model.card.name,
            model.card.preset.name,
            grid_words(&model.card.preset),
            preset.name
        )));
    }
    let method_name = request.method.clone();
    let run_id = request
        .run
        .clone()
        .unwrap_or_else(|| format!("{}-{}-seed{}", task.name(), request.method, request.seed));
    if store.run_row(&run_id)?.is_some() {
        return Err(invalid(format!(
            "run {run_id} exists already: give another run name, or resume {run_id}"
        )));
    }
    let recipe = request
        .recipe
        .as_deref()
        .map(str::parse::<Recipe>)
        .transpose()?;
    let classes = task.categories();
    if request.soft_targets && request.labels == ConsensusMethod::Majority {
        return Err(invalid(
            "soft targets are the latent truth's posteriors: give --labels dawid-skene (or \
             dawid-skene-ordinal) with --soft-targets",
        ));
    }
    let soft = request.soft_targets;
    let now = labelled_images(
        store,
        task,
        &request.source,
        &request.target,
        request.labels,
    )?;
    let source: Vec<PlanItem> = now
        .source
        .iter()
        .cloned()
        .map(|item| {
            let soft_label = now.soft_label(item.image_id, soft);
            PlanItem { soft_label, ..item }
        })
        .collect();
    let labelled = &now.target;
    let split = split_by_subject(labelled, 0.2, 0.2, request.split_seed.unwrap_or(seed));
    let set_of: BTreeMap<i64, Set> = split.iter().copied().collect();
    let by_id: BTreeMap<i64, &ModelImage> =
        now.target_images.iter().map(|i| (i.image_id, i)).collect();
    let pick = |set: Set| -> Vec<PlanItem> {
        labelled
            .iter()
            .filter(|(id, _, _)| set_of.get(id) == Some(&set))
            .map(|(id, _, y)| PlanItem {
                soft_label: now.soft_label(*id, soft),
                ..plan_item(by_id[id], Some(*y))
            })
            .collect()
    };
    let unlabelled: Vec<PlanItem> = now
        .target_images
        .iter()
        .filter(|image| !now.rated.contains(&image.image_id))
        .map(|image| plan_item(image, None))
        .collect();
    let (train, validation, test) = (pick(Set::Train), pick(Set::Validation), pick(Set::Test));
    let summary = split_summary(
        &run_id,
        (&request.source, &request.target),
        &source,
        [&train, &validation, &test, &unlabelled],
    );
    if validation.is_empty() || (train.is_empty() && method != Method::SourceOnly) {
        return Err(invalid(format!(
            "not enough labelled {} images for task {} (rate more, or import ratings)",
            request.target,
            task.name()
        )));
    }

    let mut config = TrainConfig::new(method, preset.clone(), classes.len(), classes.len());
    if let Some(e) = request.epochs {
        config.epochs = e;
        config.pretrain_epochs = e;
    }
    if let Some(lr) = request.learning_rate {
        config.learning_rate = lr;
    }
    if let Some(recipe) = recipe {
        config.use_recipe(recipe);
    }
    config.artefact_rule = match task {
        Task::Quality => ArtefactRule::BelowModerate,
        _ => ArtefactRule::AnyGrade,
    };
    config.seed = seed;
    if let Some((model, weights)) = &initial {
        // The model is the pretraining: fine-tuning starts from it at once.
        config.pretrain_epochs = 0;
        config.initial_weights = Some(InitialWeights {
            model: model.card.name.clone(),
            weights: weights.clone(),
            sha256: model.card.weights.sha256.clone(),
            head: model.card.prediction_head()?,
        });
    }
    config.label_source =
        (request.labels != ConsensusMethod::Majority).then(|| request.labels.name().to_string());
    config.soft_targets = soft;
    let validation_labels: Vec<usize> = validation.iter().filter_map(|i| i.label).collect();
    let (auto, _) = Selection::auto(config.recipe.recipe, &validation_labels, classes.len());
    config.selection = request.selection.unwrap_or(auto);
    let summary = with_recipe(summary, &config, &validation);
    config.device = request.device.clone();
    config.validate()?;
    let run_dir = runs_dir.join(&run_id);
    let run = NewRun {
        run_id: run_id.clone(),
        kind: "train".into(),
        task: Some(task.name().into()),
        method: Some(method_name),
        preset: Some(preset.name.clone()),
        config: serde_json::to_string(&config).unwrap_or_default(),
        git_commit: git_commit(),
        split_id: Some(run_id.clone()),
        label_snapshot: Some(now.snapshot(soft)),
        weights_path: Some(
            run_dir
                .join(crate::model::train::BEST_WEIGHTS)
                .display()
                .to_string(),
        ),
        source_sequence: Some(request.source.clone()),
        target_sequence: Some(request.target.clone()),
    };
    let label_by_id: BTreeMap<i64, usize> = labelled.iter().map(|(i, _, y)| (*i, *y)).collect();
    let class_name = |y: Option<usize>| y.and_then(|y| classes.get(y)).map(|s| s.to_string());
    let mut rows: Vec<SplitRow> = split
        .iter()
        .map(|(image_id, set)| SplitRow {
            image_id: *image_id,
            subject: by_id.get(image_id).map(|i| i.subject.clone()),
            domain: "target".into(),
            set: set.name().into(),
            label: class_name(label_by_id.get(image_id).copied()),
        })
        .collect();
    rows.extend(source.iter().map(|s| SplitRow {
        image_id: s.image_id,
        subject: None,
        domain: "source".into(),
        set: "train".into(),
        label: class_name(s.label),
    }));
    rows.extend(unlabelled.iter().map(|s| SplitRow {
        image_id: s.image_id,
        subject: None,
        domain: "target".into(),
        set: "unlabelled".into(),
        label: None,
    }));
    Ok(PlannedTraining {
        plan: TrainPlan {
            run_id,
            run_dir,
            task,
            config,
            resume: false,
            source,
            target_train: train,
            target_validation: validation,
            target_unlabelled: unlabelled,
            target_test: test,
            cache_dir,
        },
        start: Some((run, rows)),
        summary,
    })
}

/// The plan's summary line with the training rules it runs under.
fn with_recipe(summary: String, config: &TrainConfig, validation: &[PlanItem]) -> String {
    let augmentation = if config.preset.augment.enabled {
        "on"
    } else {
        "off"
    };
    format!(
        "{summary}; recipe {}, augmentation {augmentation}{}{}{}",
        config.recipe.recipe.name(),
        config
            .label_source
            .as_deref()
            .map(|l| {
                let soft = if config.soft_targets {
                    " (soft targets)"
                } else {
                    ""
                };
                format!(", labels {l}{soft}")
            })
            .unwrap_or_default(),
        config
            .initial_weights
            .as_ref()
            .map(|w| format!(", starting from model {}", w.model))
            .unwrap_or_default(),
        selection_note(config, validation)
    )
}

/// Says when a run keeps its last epoch rather than its lowest validation loss's, and
/// how small the validation set is that made `auto` choose so.
fn selection_note(config: &TrainConfig, validation: &[PlanItem]) -> String {
    if config.selection == Selection::ValLoss {
        return String::new();
    }
    let labels: Vec<usize> = validation.iter().filter_map(|i| i.label).collect();
    let (_, fewest) = Selection::auto(config.recipe.recipe, &labels, config.target_classes);
    format!(
        "; keeps the last epoch (the smallest class has {fewest} validation image(s); from {} \
         an epoch is chosen by validation loss, or with --select val-loss)",
        Selection::MIN_VALIDATION_PER_CLASS
    )
}

fn split_summary(
    run_id: &str,
    (source_sequence, target_sequence): (&str, &str),
    source: &[PlanItem],
    [train, validation, test, unlabelled]: [&[PlanItem]; 4],
) -> String {
    format!(
        "{run_id}: {} labelled {source_sequence} (source), {} / {} / {} labelled {target_sequence} (train / validation / test), {} unlabelled",
        source.len(),
        train.len(),
        validation.len(),
        test.len(),
        unlabelled.len()
    )
}

/// The source and target sequences of a stored run: its own columns, or for runs
/// recorded before runs kept them, the sequences of its split's images.
fn run_sequences(
    store: &Store,
    run: &str,
    row: &RunRow,
    split_id: &str,
) -> Result<(String, String), PlanError> {
    if let (Some(source), Some(target)) = (&row.source_sequence, &row.target_sequence) {
        return Ok((source.clone(), target.clone()));
    }
    let pairs = store.split_sequences(split_id)?;
    let only = |domain: &str| -> Result<String, PlanError> {
        let found: Vec<&String> = pairs
            .iter()
            .filter(|(d, _)| d == domain)
            .map(|(_, suffix)| suffix)
            .collect();
        match found[..] {
            [one] => Ok(one.clone()),
            _ => Err(invalid(format!(
                "run {run} does not record its {domain} sequence and its split does not tell it \
                 (found {found:?}); start a new run"
            ))),
        }
    };
    Ok((only("source")?, only("target")?))
}

/// Plans the continuation of a stored run: its configuration, task and sequences, and
/// the very split it started with; refused when the labels changed since.
fn plan_resume(
    store: &Store,
    run: &str,
    request: &TrainRequest,
    runs_dir: &Path,
    cache_dir: Option<PathBuf>,
) -> Result<PlannedTraining, PlanError> {
    let Some(row) = store.run_row(run)? else {
        return Err(invalid(format!(
            "no run {run} to resume (cdwqc sql \"select run_id, status from runs\")"
        )));
    };
    if row.kind != "train" {
        return Err(invalid(format!(
            "run {run} is an {} run: only training runs resume",
            row.kind
        )));
    }
    let task = row
        .task
        .as_deref()
        .and_then(Task::from_name)
        .ok_or_else(|| invalid(format!("run {run} records no task it trains for")))?;
    let mut config: TrainConfig = row
        .config
        .as_deref()
        .ok_or_else(|| invalid(format!("run {run} has no stored configuration")))
        .and_then(|text| {
            serde_json::from_str(text)
                .map_err(|e| invalid(format!("the stored configuration of run {run}: {e}")))
        })?;
    if let Some(wanted) = request
        .recipe
        .as_deref()
        .map(str::parse::<Recipe>)
        .transpose()?
        && wanted != config.recipe.recipe
    {
        return Err(invalid(format!(
            "run {run} was trained with the {} recipe; a resumed run keeps it",
            config.recipe.recipe.name()
        )));
    }
    let split_id = row
        .split_id
        .clone()
        .ok_or_else(|| invalid(format!("run {run} has no stored split")))?;
    let (source_sequence, target_sequence) = run_sequences(store, run, &row, &split_id)?;
    let new_run = format!(
        "cdwqc train --task {} --method {} --preset {} --source {source_sequence} --target {target_sequence} --seed {} --run NEW",
        task.name(),
        config.method.name(),
        row.preset.as_deref().unwrap_or(&config.preset.name),
        config.seed
    );
    let label_method = match config.label_source.as_deref() {
        None => ConsensusMethod::Majority,
        Some(name) => ConsensusMethod::from_name(name).ok_or_else(|| {
            invalid(format!(
                "run {run} was trained on {name:?} labels, which this version does not know"
            ))
        })?,
    };
    if request.labels != ConsensusMethod::Majority && request.labels != label_method {
        return Err(invalid(format!(
            "run {run} was trained on {} labels; a resumed run keeps them",
            label_method.name()
        )));
    }
    if request.soft_targets && !config.soft_targets {
        return Err(invalid(format!(
            "run {run} was trained on hard labels; a resumed run keeps them"
        )));
    }
    let soft = config.soft_targets;
    let now = labelled_images(
        store,
        task,
        &source_sequence,
        &target_sequence,
        label_method,
    )?;
    match &row.label_snapshot {
        Some(snapshot) if *snapshot == now.snapshot(soft) => {}
        Some(_) => {
            return Err(invalid(format!(
                "the labels changed since run {run} started (ratings were added or changed), so \
                 its split no longer matches them; resuming would mix two label sets. Start a \
                 new run on the current labels instead: {new_run}"
            )));
        }
        None => {
            return Err(invalid(format!(
                "run {run} records no label snapshot, so whether its labels changed cannot be \
                 checked; start a new run instead: {new_run}"
            )));
        }
    }
    let split = store.split_rows(&split_id)?;
    if split.is_empty() {
        return Err(invalid(format!(
            "the split {split_id} of run {run} is not in the store; start a new run: {new_run}"
        )));
    }
    let images: BTreeMap<i64, &ModelImage> = now
        .source_images
        .iter()
        .chain(&now.target_images)
        .map(|image| (image.image_id, image))
        .collect();
    let classes = task.categories();
    let (mut source, mut train, mut validation, mut test, mut unlabelled) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in &split {
        let id = entry.image_id;
        let image = images.get(&id).ok_or_else(|| {
            invalid(format!(
                "image {id} of run {run}'s split is no longer a readable {source_sequence} or \
                 {target_sequence} image (cdwqc sql \"select path, status, suffix from images \
                 where image_id = {id}\"); start a new run: {new_run}"
            ))
        })?;
        let label = entry
            .label
            .as_deref()
            .map(|name| {
                classes.iter().position(|c| *c == name).ok_or_else(|| {
                    invalid(format!(
                        "image {id} of run {run}'s split has label {name:?}, not a {} class",
                        task.name()
                    ))
                })
            })
            .transpose()?;
        let (set, labelled) = match (entry.domain.as_str(), entry.set.as_str()) {
            ("source", _) => (&mut source, true),
            ("target", "train") => (&mut train, true),
            ("target", "validation") => (&mut validation, true),
            ("target", "test") => (&mut test, true),
            ("target", "unlabelled") => (&mut unlabelled, false),
            (domain, set) => {
                return Err(invalid(format!(
                    "image {id} of run {run}'s split is in {domain} set {set}, which training does not know"
                )));
            }
        };
        if labelled && label.is_none() {
            return Err(invalid(format!(
                "image {id} of run {run}'s split has no label in a labelled set"
            )));
        }
        set.push(PlanItem {
            soft_label: label.and_then(|_| now.soft_label(id, soft)),
            ..plan_item(image, label)
        });
    }
    let summary = with_recipe(
        split_summary(
            run,
            (&source_sequence, &target_sequence),
            &source,
            [&train, &validation, &test, &unlabelled],
        ),
        &config,
        &validation,
    );
    config.device = request.device.clone();
    config.validate()?;
    Ok(PlannedTraining {
        plan: TrainPlan {
            run_id: run.to_string(),
            run_dir: runs_dir.join(run),
            task,
            config,
            resume: true,
            source,
            target_train: train,
            target_validation: validation,
            target_unlabelled: unlabelled,
            target_test: test,
            cache_dir,
        },
        start: None,
        summary,
    })
}

/// Records that a planned run starts: the run and its split, or `running` again for a
/// resumed run; creates the run's folder.
pub fn record_start(store: &mut Store, planned: &PlannedTraining) -> Result<(), PlanError> {
    let run_dir = &planned.plan.run_dir;
    std::fs::create_dir_all(run_dir).map_err(|source| ModelError::Io {
        path: run_dir.clone(),
        source,
    })?;
    match &planned.start {
        Some((run, split)) => {
            store.begin_run(run)?;
            store.save_split(&run.run_id, split)?;
        }
        None => store.set_run_status(&planned.plan.run_id, "running", None, None)?,
    }
    Ok(())
}

/// The stored row of an epoch (NULL where a figure is undefined).
pub fn epoch_row(report: &EpochReport) -> EpochRow {
    let finite = |v: f64| v.is_finite().then_some(v);
    EpochRow {
        epoch: report.epoch as i32,
        train_loss: finite(report.train_loss),
        source_loss: finite(report.source_loss),
        target_loss: finite(report.target_loss),
        domain_loss: finite(report.domain_loss),
        val_loss: finite(report.val_loss),
        val_balanced_accuracy: finite(report.val_balanced_accuracy),
        alpha: finite(report.alpha),
        seconds: Some(report.seconds),
    }
}

/// Records a finished epoch.
pub fn record_epoch(store: &Store, run_id: &str, report: &EpochReport) -> Result<(), PlanError> {
    Ok(store.record_epoch(run_id, &epoch_row(report))?)
}

/// The status a training run ends with in the store.
pub fn final_status(result: &Result<TrainResult, String>) -> &'static str {
    match result {
        Ok(r) if r.outcome.status == TrainStatus::Cancelled => "interrupted",
        Ok(_) => "completed",
        Err(_) => "failed",
    }
}

/// Records how a training run ended: the held-out predictions and metrics of a finished
/// run, `interrupted` (resumable) for a cancelled one, the error of a failed one.
pub fn record_training(
    store: &mut Store,
    run_id: &str,
    result: &Result<TrainResult, String>,
) -> Result<(), PlanError> {
    let status = final_status(result);
    match result {
        Err(error) => store.set_run_status(run_id, status, None, Some(error))?,
        Ok(_) if status == "interrupted" => store.set_run_status(run_id, status, None, None)?,
        Ok(r) => {
            // The held-out predictions stay with the run, so `cdwqc report model` can
            // score it.
            store.save_predictions(run_id, &r.test_predictions)?;
            store.save_predictions(run_id, &r.validation_predictions)?;
            let o = &r.outcome;
            let metrics = json!({
                "status": o.status,
                "best_epoch": o.best_epoch,
                "epochs_completed": o.epochs_completed,
                "best_val_loss": o.best_val_loss,
                "best_val_balanced_accuracy": o.best_val_balanced_accuracy,
                "test_images": r.test_images,
                "test_balanced_accuracy": r.test_balanced_accuracy,
                "calibration": r.calibration,
            });
            store.set_run_status(run_id, status, Some(&metrics.to_string()), None)?;
        }
    }
    Ok(())
}

/// What a user asks to predict.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The training run whose best weights predict.
    pub run: Option<String>,
    /// A TorchScript model instead, on `preset`'s grid, for `task`.
    pub torchscript: Option<PathBuf>,
    pub preset: Option<String>,
    pub task: Task,
    pub sequence: String,
    /// Only images without a consensus label.
    pub unrated: bool,
    pub device: String,
}

/// Picks the model and the images of an inference job. Reads only.
pub fn plan_inference(
    store: &Store,
    request: &InferRequest,
    runs_dir: &Path,
    cache_dir: Option<PathBuf>,
) -> Result<InferPlan, PlanError> {
    let (run_id, task, model) = match (&request.run, &request.torchscript) {
        (Some(run), _) => {
            let dir = runs_dir.join(run);
            let Some(row) = store.run_row(run)? else {
                return Err(invalid(format!(
                    "no run {run} in the store (cdwqc sql \"select run_id from runs\")"
                )));
            };
            let task = row
                .task
                .as_deref()
                .and_then(Task::from_name)
                .unwrap_or(Task::Usable);
            CheckpointState::read(&dir).map_err(|e| {
                invalid(format!(
                    "run {run} has no checkpoint in {}: {e}",
                    dir.display()
                ))
            })?;
            (run.clone(), task, ModelSource::Run { dir })
        }
        (None, Some(path)) => {
            let preset = load_preset(request.preset.as_deref().unwrap_or("cpu-small"))?;
            (
                format!("torchscript-{}", crate::imaging::bids::stem(path)),
                request.task,
                ModelSource::TorchScript {
                    path: path.clone(),
                    preset,
                },
            )
        }
        (None, None) => return Err(invalid("give a run or a TorchScript file")),
    };
    let items = inference_items(store, &request.sequence, request.unrated)?;
    Ok(InferPlan {
        run_id,
        model,
        task,
        sequence: request.sequence.clone(),
        device: request.device.clone(),
        items,
        cache_dir,
        adapt_batchnorm: None,
        loaders: None,
        warm_threads: None,
        model_run: None,
    })
}

/// What a TorchScript model's run row records in its `config`: the file's bytes and the
/// grid and task it was run with, so that a second file or another grid can never mix
/// its predictions into the same run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TorchScriptRunConfig {
    pub format: String,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub task: String,
    pub preset: Preset,
}

const TORCHSCRIPT_RUN_FORMAT: &str = "cdwqc.torchscript-run/1";

impl TorchScriptRunConfig {
    /// The configuration of a run's row, if the run is a TorchScript model's.
    pub fn parse(config: &str) -> Option<Self> {
        serde_json::from_str::<Self>(config)
            .ok()
            .filter(|c| c.format == TORCHSCRIPT_RUN_FORMAT)
    }
}

/// The run row a TorchScript model's predictions go under (`plan.run_id`). Reads only:
/// [`record_torchscript_start`] writes it. A run id already holding the
/// predictions of anything else (another file, the same file on another grid or task,
/// a training run, an exported model) is refused, so predictions are never mixed.
pub fn plan_torchscript_run(
    store: &Store,
    plan: &InferPlan,
) -> Result<(ModelRun, TorchScriptRunConfig), PlanError> {
    let ModelSource::TorchScript { path, preset } = &plan.model else {
        return Err(invalid("not a TorchScript model's plan"));
    };
    let metadata = std::fs::metadata(path)
        .map_err(|e| invalid(format!("TorchScript model {}: {e}", path.display())))?;
    // Hashing a device or a pipe (`/dev/zero`, a FIFO) would never end.
    if !metadata.is_file() {
        return Err(invalid(format!(
            "TorchScript model {}: not a regular file",
            path.display()
        )));
    }
    let bytes = metadata.len();
    let sha256 = crate::cluster::file_sha256(path)
        .map_err(|e| invalid(format!("TorchScript model {}: {e}", path.display())))?;
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    let config = TorchScriptRunConfig {
        format: TORCHSCRIPT_RUN_FORMAT.into(),
        file: absolute.display().to_string(),
        sha256,
        bytes,
        task: plan.task.name().into(),
        preset: preset.clone(),
    };
    let run_id = &plan.run_id;
    if let Some((kind, stored)) = store.run_kind_and_config(run_id)? {
        let stored = stored.as_deref().and_then(TorchScriptRunConfig::parse);
        let Some(stored) = stored.filter(|_| kind == "infer") else {
            return Err(invalid(format!(
                "run {run_id} exists and is not a TorchScript model's run: give another --as"
            )));
        };
        if stored.sha256 != config.sha256 {
            return Err(invalid(format!(
                "run {run_id} holds the predictions of another TorchScript file ({}, SHA-256 {}), \
                 not those of {} ({}): give another --as",
                stored.file,
                stored.sha256,
                path.display(),
                config.sha256
            )));
        }
        if stored.task != config.task {
            return Err(invalid(format!(
                "run {run_id} holds this file's {} predictions, not {}: give another --as",
                stored.task, config.task
            )));
        }
        if stored.preset != config.preset {
            return Err(invalid(format!(
                "run {run_id} holds this file's predictions on the preset {} ({}), \
                 not on {} ({}): give another --as",
                stored.preset.name,
                stored.preset.description,
                config.preset.name,
                config.preset.description
            )));
        }
    }
    let run = ModelRun {
        run_id: run_id.clone(),
        task: config.task.clone(),
        method: "torchscript".into(),
        preset: preset.name.clone(),
        card: serde_json::to_string(&config).map_err(|e| invalid(e.to_string()))?,
        git_commit: git_commit(),
        label_snapshot: None,
        weights_path: config.file.clone(),
    };
    Ok((run, config))
}

/// The images an inference job predicts: every readable image of a sequence, or only
/// those without a consensus label.
fn inference_items(
    store: &Store,
    sequence: &str,
    unrated: bool,
) -> Result<Vec<PlanItem>, PlanError> {
    let labels = image_labels(store)?;
    let items: Vec<PlanItem> = store
        .model_images(sequence)?
        .iter()
        .filter(|i| !unrated || !labels.contains_key(&i.image_id))
        .map(|i| plan_item(i, None))
        .collect();
    if items.is_empty() {
        return Err(invalid(format!("no {sequence} image to predict")));
    }
    Ok(items)
}

/// Stores an inference job's predictions (also those of a cancelled job), one
/// transaction.
pub fn record_inference(
    store: &mut Store,
    run_id: &str,
    result: &InferResult,
) -> Result<(), PlanError> {
    Ok(store.save_predictions(run_id, &result.rows)?)
}

/// Predicting with an exported model (`cdwqc infer --model`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInferRequest {
    /// A model folder, or a name under the models folder.
    pub model: String,
    /// The run the predictions are stored under (default `model:<name>`).
    pub run: Option<String>,
    /// Sequence to predict (default: the card's target sequence).
    pub sequence: Option<String>,
    pub unrated: bool,
    pub device: String,
    /// Re-estimate BatchNorm statistics on up to this many of the images first (AdaBN).
    pub adapt_batchnorm: Option<usize>,
    /// Leave out the card's IQM forest: the network's probabilities alone.
    pub network_only: bool,
}

/// An exported model's inference job and the run row it is recorded under.
#[derive(Debug, Clone)]
pub struct PlannedModelInference {
    pub plan: InferPlan,
    pub run: ModelRun,
    pub model: ExportedModel,
}

/// The run id an exported model's predictions go under by default.
pub fn model_run_id(name: &str) -> String {
    format!("model:{name}")
}

/// Reads the model card, checks the weights against it and picks the images. Reads
/// only: [`record_model_start`] writes the run. A run id already holding another
/// model's predictions (other weights, or a training run) is refused.
pub fn plan_model_inference(
    store: &Store,
    request: &ModelInferRequest,
    models_dir: &Path,
    cache_dir: Option<PathBuf>,
) -> Result<PlannedModelInference, PlanError> {
    let dir = ExportedModel::resolve(&request.model, models_dir)?;
    let mut model = ExportedModel::open(&dir)?;
    let weights = model.verified_networks()?.remove(0);
    if request.network_only {
        // The run's card says what predicted: the network alone.
        model.card.iqm_forest = None;
    }
    let card = &model.card;
    let task = card.task()?;
    let run_id = request
        .run
        .clone()
        .unwrap_or_else(|| model_run_id(&card.name));
    if let Some((kind, config)) = store.run_kind_and_config(&run_id)? {
        let stored = config
            .as_deref()
            .and_then(|c| serde_json::from_str::<ModelCard>(c).ok());
        let stored_shas = stored.as_ref().map(ExportedModel::network_sha256s);
        let stored_sha = stored.as_ref().map(|c| c.weights.sha256.clone());
        let stored_forest = stored.as_ref().map(|c| c.iqm_forest.is_some());
        let same_networks = stored_shas.as_ref() == Some(&ExportedModel::network_sha256s(card));
        if same_networks && stored_forest != Some(card.iqm_forest.is_some()) {
            return Err(invalid(format!(
                "run {run_id} holds this model's predictions {} its IQM forest: give another --as",
                if stored_forest == Some(true) {
                    "with"
                } else {
                    "without"
                }
            )));
        }
        if kind != "infer" || stored_sha.is_none() {
            return Err(invalid(format!(
                "run {run_id} exists and is not an exported model's run: give another --as"
            )));
        }
        if stored_sha.as_deref() != Some(card.weights.sha256.as_str()) {
            return Err(invalid(format!(
                "run {run_id} holds the predictions of other weights (SHA-256 {}), not those of {} ({}): give another --as",
                stored_sha.unwrap_or_default(),
                weights.display(),
                card.weights.sha256
            )));
        }
        if !same_networks {
            return Err(invalid(format!(
                "run {run_id} holds the predictions of another set of networks ({} of them), not the {} of model {}: give another --as",
                stored_shas.map_or(0, |s| s.len()),
                card.members.len() + 1,
                card.name
            )));
        }
    }
    let sequence = request
        .sequence
        .clone()
        .unwrap_or_else(|| card.target_sequence.clone());
    let items = inference_items(store, &sequence, request.unrated)?;
    let absolute = std::fs::canonicalize(&weights).unwrap_or(weights);
    let run = ModelRun {
        run_id: run_id.clone(),
        task: task.name().to_string(),
        method: card.method.clone(),
        preset: card.preset.name.clone(),
        card: serde_json::to_string(card).map_err(|e| invalid(e.to_string()))?,
        git_commit: git_commit(),
        label_snapshot: card.training.label_snapshot.clone(),
        weights_path: absolute.display().to_string(),
    };
    Ok(PlannedModelInference {
        plan: InferPlan {
            run_id,
            model: ModelSource::Exported { dir: dir.clone() },
            task,
            sequence,
            device: request.device.clone(),
            items,
            cache_dir,
            adapt_batchnorm: request.adapt_batchnorm,
            loaders: None,
            warm_threads: None,
            model_run: None,
        },
        run,
        model,
    })
}

/// Records that an exported model starts predicting: its run row, `running`.
pub fn record_model_start(store: &Store, planned: &PlannedModelInference) -> Result<(), PlanError> {
    Ok(store.begin_model_run(&planned.run)?)
}

/// Records that a TorchScript model starts predicting: its run row, `running`.
pub fn record_torchscript_start(store: &Store, run: &ModelRun) -> Result<(), PlanError> {
    Ok(store.begin_model_run(run)?)
}

/// Stores an exported model's (or a TorchScript model's) predictions and ends its run: `completed`, or
/// `interrupted` when cancelled (the predictions made so far are kept).
pub fn record_model_inference(
    store: &mut Store,
    run_id: &str,
    result: &InferResult,
    forest: Option<&super::iqm_forest::ForestMix>,
) -> Result<(), PlanError> {
    store.save_predictions(run_id, &result.rows)?;
    let status = if result.cancelled {
        "interrupted"
    } else {
        "completed"
    };
    let metrics = json!({
        "images": result.rows.len(),
        "failed": result.failed,
        "not_registered": result.not_registered,
        "seconds": result.seconds,
        "adapted_batchnorm_images": result.adapted_images,
        "iqm_forest_images": forest.map(|f| f.mixed),
        "iqm_forest_without_metrics": forest.map(|f| f.without_metrics),
        "iqm_forest_skipped": forest.and_then(|f| f.skipped.clone()),
    });
    store.set_run_status(run_id, status, Some(&metrics.to_string()), None)?;
    Ok(())
}

/// Records a model run that failed before predicting.
pub fn record_model_failure(store: &Store, run_id: &str, error: &str) -> Result<(), PlanError> {
    Ok(store.set_run_status(run_id, "failed", None, Some(error))?)
}

/// What a user asks to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRequest {
    pub run: String,
    pub name: String,
    pub description: Option<String>,
    pub licence: String,
}

fn metric<T: serde::de::DeserializeOwned>(metrics: &serde_json::Value, key: &str) -> Option<T> {
    metrics
        .get(key)
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The model card of a completed training run and its best weights file, from the
/// store's records and the run's checkpoint state. Reads only.
pub fn plan_export(
    store: &Store,
    request: &ExportRequest,
    runs_dir: &Path,
) -> Result<(ModelCard, PathBuf), PlanError> {
    let run_id = &request.run;
    crate::model::card::check_name(&request.name)?;
    let Some(run) = store.export_run(run_id)? else {
        return Err(invalid(format!(
            "no run {run_id} in the store (cdwqc sql \"select run_id, kind, status from runs\")"
        )));
    };
    if run.kind != "train" || run.status != "completed" {
        return Err(invalid(format!(
            "run {run_id} is a {} run with status {}: only a completed training run can be exported",
            run.kind, run.status
        )));
    }
    let run_dir = runs_dir.join(run_id);
    let state = CheckpointState::read(&run_dir).map_err(|e| {
        invalid(format!(
            "run {run_id} has no checkpoint in {}: {e}",
            run_dir.display()
        ))
    })?;
    let weights = run_dir.join(crate::model::train::BEST_WEIGHTS);
    if !weights.is_file() {
        return Err(invalid(format!(
            "run {run_id} has no best weights ({} is missing)",
            weights.display()
        )));
    }
    let task = run
        .task
        .as_deref()
        .and_then(Task::from_name)
        .ok_or_else(|| invalid(format!("run {run_id} has no known task")))?;
    let config = &state.config;
    let split_id = run.split_id.clone().unwrap_or_else(|| run_id.clone());
    let counts = store.split_counts(&split_id)?;
    let raters = store.split_raters(&split_id)?;
    let count = |domain: &str, set: &str| -> u64 {
        counts
            .iter()
            .filter(|c| c.domain == domain && c.set == set)
            .map(|c| c.images.max(0) as u64)
            .sum()
    };
    let sequence_of = |domain: &str, fallback: &str| -> String {
        counts
            .iter()
            .filter(|c| c.domain == domain)
            .max_by_key(|c| c.images)
            .map_or(fallback.to_string(), |c| c.suffix.clone())
    };
    let source_sequence = sequence_of("source", "T1w");
    let target_sequence = sequence_of("target", "FLAIR");
    let training = TrainingInfo {
        data: String::new(),
        run: run_id.clone(),
        git_commit: run.git_commit.clone(),
        label_snapshot: run.label_snapshot.clone(),
        raters: raters.clone(),
        seed: config.seed,
        epochs: config.epochs,
        learning_rate: config.learning_rate,
        batch_size: config.batch_size,
        source_images: count("source", "train"),
        target_train_images: count("target", "train"),
        target_validation_images: count("target", "validation"),
        target_test_images: count("target", "test"),
        target_unlabelled_images: count("target", "unlabelled"),
    };
    let labels = match (config.label_source.as_deref(), config.soft_targets) {
        (None, _) => "consensus labels".to_string(),
        (Some(method), false) => format!("{method} latent-truth labels"),
        (Some(method), true) => format!("{method} latent-truth posteriors (soft targets)"),
    };
    let data = format!(
        "{} {labels} (ratings in force of {}) in the store {}: {} labelled {source_sequence} images (source domain); {} / {} / {} labelled {target_sequence} images for training / validation (early stopping) / held-out test, split by subject; {} unlabelled {target_sequence} images (domain loss)",
        task.name(),
        if raters.is_empty() {
            "no rater".to_string()
        } else {
            raters.join(", ")
        },
        store
            .path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        training.source_images,
        training.target_train_images,
        training.target_validation_images,
        training.target_test_images,
        training.target_unlabelled_images,
    );
    let metrics: serde_json::Value = run
        .metrics
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(serde_json::Value::Null);
    let head = match config.prediction_head() {
        crate::model::network::Head::Source => "source",
        _ => "target",
    };
    let card = ModelCard {
        format: crate::model::card::CARD_FORMAT.to_string(),
        name: request.name.clone(),
        description: request.description.clone().unwrap_or_else(|| {
            format!(
                "{} QC of {target_sequence} images ({}), {} trained with cdwqc",
                task.name(),
                task.categories().join(" / "),
                config.method.name()
            )
        }),
        task: task.name().to_string(),
        classes: task.categories().iter().map(|c| c.to_string()).collect(),
        method: config.method.name().to_string(),
        architecture: crate::model::card::ARCHITECTURE.to_string(),
        head: head.to_string(),
        source_classes: config.source_classes,
        target_classes: config.target_classes,
        source_sequence,
        target_sequence,
        licence: request.licence.clone(),
        cdwqc_version: env!("CARGO_PKG_VERSION").to_string(),
        weights: WeightsInfo {
            file: crate::model::card::WEIGHTS_FILE.to_string(),
            sha256: String::new(),
            bytes: 0,
        },
        preset: config.preset.clone(),
        training: TrainingInfo { data, ..training },
        metrics: CardMetrics {
            best_epoch: metric(&metrics, "best_epoch").or(state.best_epoch.map(|e| e as u64)),
            epochs_completed: metric(&metrics, "epochs_completed"),
            best_val_loss: metric(&metrics, "best_val_loss").or(state.best_val_loss),
            best_val_balanced_accuracy: metric(&metrics, "best_val_balanced_accuracy")
                .or(state.best_val_balanced_accuracy),
            test_images: metric(&metrics, "test_images"),
            test_balanced_accuracy: metric(&metrics, "test_balanced_accuracy"),
        },
        evaluations: Vec::new(),
        iqm_forest: None,
        members: Vec::new(),
    };
    Ok((card, weights))
}
