//! Training loop for the SSDA method and its ablation baselines under a recipe (see
//! `recipe`), keeping the weights with the lowest target validation loss, with optional
//! early stopping, augmentation on the fly, checkpoints, cancel and resume.
//!
//! Deterministic for a seed and a CPU thread count: batches, augmentation, initial
//! weights and dropout masks come from ChaCha generators seeded from the run's seed
//! (never from libtorch's global generator, which every thread of a process shares), and
//! items are loaded in parallel but assembled in a fixed order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::ModelError;
use super::augment::{ArtefactRule, Augmenter};
use super::data::{Item, ItemLoader, LoadedBatch, Prefetcher, StreamAugment, sequential_batches};
use super::grl::{grl_alpha, grl_alpha_for_epoch};
use super::network::{Conv5Fc3Ssda, Head, NetworkSpec};
use super::parse_device;
use super::preset::Preset;
use super::recipe::{AlphaSchedule, BatchComposition, DomainOutputs, Recipe, RecipeSettings};
use crate::imaging::preprocess::TensorCache;
use crate::synth::derive_seed;

/// Training method: the published SSDA and the ablation baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Source and labelled target classification plus the adversarial domain loss.
    Ssda,
    /// Labelled target images only.
    TargetOnly,
    /// Labelled source images only; target images predicted with the source head.
    SourceOnly,
    /// Source-only pretraining, then target-only fine-tuning of the whole network.
    Finetune,
    /// SSDA without the domain branch.
    SsdaNoDomain,
}

impl Method {
    /// In the paper's order: the method, then its baselines.
    pub const ALL: [Method; 5] = [
        Method::Ssda,
        Method::TargetOnly,
        Method::SourceOnly,
        Method::Finetune,
        Method::SsdaNoDomain,
    ];

    /// The name on the command line and in the store.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ssda => "ssda",
            Method::TargetOnly => "target-only",
            Method::SourceOnly => "source-only",
            Method::Finetune => "finetune",
            Method::SsdaNoDomain => "ssda-no-domain",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, ModelError> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
            ModelError::Config(format!(
                "method {text:?}: expected ssda, target-only, source-only, finetune or ssda-no-domain"
            ))
        })
    }
}

/// Everything that defines a training run; stored as JSON with the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub method: Method,
    pub preset: Preset,
    pub source_classes: usize,
    pub target_classes: usize,
    /// Epochs of the main phase (the fine-tuning phase for `finetune`).
    pub epochs: usize,
    /// Source-only epochs before fine-tuning (`finetune` only).
    pub pretrain_epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Weight of the summed domain losses.
    pub domain_weight: f64,
    /// Epochs without a lower target validation loss before stopping; 0 = never stops.
    pub patience: usize,
    pub seed: u64,
    /// "auto", "cpu", "cuda" or "cuda:N".
    pub device: String,
    /// Batches each loading stream prepares ahead of compute.
    pub prefetch_batches: usize,
    /// The training rules; configurations stored before recipes existed read as `cdwqc`.
    #[serde(default)]
    pub recipe: RecipeSettings,
    /// How strong augmentation artefacts may be without changing this task's labels.
    #[serde(default)]
    pub artefact_rule: ArtefactRule,
    /// How the labels were made from the ratings: `dawid-skene`, or absent for the
    /// majority consensus (every configuration stored before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_source: Option<String>,
    /// The items carry soft labels (the latent truth's posteriors) to train towards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft_targets: bool,
    /// An exported model whose weights replace the random initialisation (absent: random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_weights: Option<InitialWeights>,
    /// Which epoch's weights the run keeps; configurations stored before this field
    /// existed kept the lowest validation loss's.
    #[serde(default, skip_serializing_if = "Selection::is_val_loss")]
    pub selection: Selection,
}

/// Which epoch's weights a run keeps as its result (`best.safetensors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The epoch with the lowest target validation loss; the recipe's patience stops
    /// the run early.
    #[default]
    ValLoss,
    /// The last epoch, every epoch run: for a validation set too small to tell epochs
    /// apart.
    Last,
}

impl Selection {
    /// Below this many validation images of a class, `auto` keeps the last epoch: one
    /// image then moves that class's recall by 20 points or more, and the lowest
    /// validation loss picks among epochs by noise. On the label-efficiency study's 75
    /// runs (2 to 10 validation images) it kept the first, barely trained epoch of 7
    /// runs, which then scored 0.50 to 0.60 on the test warehouse (docs/training.md).
    pub const MIN_VALIDATION_PER_CLASS: usize = 5;

    pub fn is_val_loss(&self) -> bool {
        *self == Selection::ValLoss
    }

    /// The rule `--select` leaves to the data: the published code's recipe always
    /// chooses by validation loss (as that code does); this project's keeps the last
    /// epoch when a target class has fewer than [`Self::MIN_VALIDATION_PER_CLASS`]
    /// validation images. Returns the rule and, for `Last`, the smallest class count.
    pub fn auto(recipe: Recipe, validation_labels: &[usize], classes: usize) -> (Self, usize) {
        let mut counts = vec![0usize; classes];
        for &y in validation_labels {
            if let Some(c) = counts.get_mut(y) {
                *c += 1;
            }
        }
        let fewest = counts.iter().copied().min().unwrap_or(0);
        if recipe == Recipe::Clinicadl || fewest >= Self::MIN_VALIDATION_PER_CLASS {
            (Selection::ValLoss, fewest)
        } else {
            (Selection::Last, fewest)
        }
    }
}

/// The weights of an exported model a run starts from (`cdwqc train --init-model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitialWeights {
    /// The model's name in its card.
    pub model: String,
    pub weights: PathBuf,
    /// Checked again when training starts: the file the run was planned with.
    pub sha256: String,
    /// The head the model predicts with; a source head also becomes the target head,
    /// so that every method starts from the model's own decision.
    pub head: Head,
}

impl TrainConfig {
    /// ClinicaDL defaults (Adam, lr 1e-4, weight decay 1e-4, domain weight 0.1) with the
    /// preset's batch size, epochs and `[training]` recipe (patience included).
    pub fn new(
        method: Method,
        preset: Preset,
        source_classes: usize,
        target_classes: usize,
    ) -> Self {
        let (recipe, patience) = preset.training.resolve(None);
        Self {
            method,
            source_classes,
            target_classes,
            epochs: preset.epochs,
            pretrain_epochs: preset.epochs,
            batch_size: preset.batch_size,
            learning_rate: 1e-4,
            weight_decay: 1e-4,
            domain_weight: 0.1,
            patience,
            seed: 0,
            device: "auto".to_string(),
            prefetch_batches: 2,
            preset,
            recipe,
            artefact_rule: ArtefactRule::default(),
            label_source: None,
            soft_targets: false,
            initial_weights: None,
            selection: Selection::ValLoss,
        }
    }

    /// Trains with `recipe` instead of the preset's (the preset's explicit overrides and
    /// the recipe's patience included).
    pub fn use_recipe(&mut self, recipe: Recipe) {
        let (settings, patience) = self.preset.training.resolve(Some(recipe));
        self.recipe = settings;
        self.patience = patience;
    }

    pub fn network_spec(&self) -> NetworkSpec {
        NetworkSpec {
            domain_classes: match self.recipe.domain_outputs {
                DomainOutputs::Classes => self.target_classes.max(2),
                DomainOutputs::Two => 2,
            },
            dropout: self.recipe.dropout,
            pool_padding: self.recipe.pool_padding,
            ..NetworkSpec::new(
                self.preset.preprocess.shape,
                self.source_classes,
                self.target_classes,
            )
        }
    }

    /// Head that predicts target images for this method.
    pub fn prediction_head(&self) -> Head {
        match self.method {
            Method::SourceOnly => Head::Source,
            _ => Head::Target,
        }
    }

    fn total_epochs(&self) -> usize {
        match self.method {
            Method::Finetune => self.pretrain_epochs + self.epochs,
            _ => self.epochs,
        }
    }

    fn phase(&self, epoch: usize) -> Phase {
        if self.method == Method::Finetune && epoch < self.pretrain_epochs {
            Phase::Pretrain
        } else {
            Phase::Main
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let fail = |msg: &str| Err(ModelError::Config(msg.to_string()));
        if self.batch_size < 2 {
            return fail("batch size must be at least 2 (batch normalisation in training)");
        }
        if self.source_classes < 2 || self.target_classes < 2 {
            return fail("source and target tasks need at least 2 classes");
        }
        if self.epochs == 0 {
            return fail("epochs must be positive");
        }
        if matches!(self.method, Method::SourceOnly | Method::Finetune)
            && self.source_classes != self.target_classes
        {
            return fail("source-only and finetune need the same classes in source and target");
        }
        if !(self.learning_rate > 0.0 && self.weight_decay >= 0.0 && self.domain_weight >= 0.0) {
            return fail("learning rate must be positive, weight decay and domain weight >= 0");
        }
        if !(0.0..1.0).contains(&self.recipe.dropout) {
            return fail("dropout must be in [0, 1)");
        }
        self.preset.augment.validate(&self.preset.name)
    }
}

/// Streams of the seeds derived from a run's seed (`synth::derive_seed(seed, stream, n)`).
const SEED_INIT: u64 = 0x1417;
const SEED_DROPOUT: u64 = 0xD20;
/// Plus 0 (source), 1 (labelled target), 2 (unlabelled target).
const SEED_AUGMENT: u64 = 0xA0;

/// Overwrites the target head's weights with the source head's.
fn copy_source_head_to_target(vs: &nn::VarStore) {
    let _guard = tch::no_grad_guard();
    let vars = vs.variables();
    for (name, var) in &vars {
        if let Some(rest) = name.strip_prefix("target_head.")
            && let Some(src) = vars.get(&format!("source_head.{rest}"))
        {
            var.shallow_clone().copy_(src);
        }
    }
}

/// Replaces the random initialisation with an exported model's weights, after checking
/// that the file is still the one the run was planned with.
fn load_initial_weights(vs: &mut nn::VarStore, initial: &InitialWeights) -> Result<(), ModelError> {
    let path = &initial.weights;
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    let found = crate::import::analyse::hex_sha256(&bytes);
    if !found.eq_ignore_ascii_case(&initial.sha256) {
        return Err(ModelError::File {
            path: path.clone(),
            detail: format!(
                "SHA-256 {found}, but model {} had {} when the run was planned (the file was changed): training did not start",
                initial.model, initial.sha256
            ),
        });
    }
    vs.load(path).map_err(|err| ModelError::File {
        path: path.clone(),
        detail: format!(
            "the weights of model {} do not fit this run's network ({err}): the model and the run need the same grid, classes and domain head (recipe)",
            initial.model
        ),
    })?;
    if initial.head == Head::Source {
        copy_source_head_to_target(vs);
    }
    Ok(())
}

/// Labelled and unlabelled images of one run.
#[derive(Debug, Clone, Default)]
pub struct TrainData {
    pub source: Vec<Item>,
    pub target_train: Vec<Item>,
    pub target_val: Vec<Item>,
    pub target_unlabelled: Vec<Item>,
}

/// Training phase: the source pretraining of `finetune`, or the main phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Pretrain,
    Main,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pretrain => "pretrain",
            Self::Main => "main",
        })
    }
}

/// JSON has no NaN: non-finite values are written as null and read back as NaN.
mod float_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else {
            serializer.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

/// Metrics of one finished epoch (NaN where a value could not be computed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based, counted over all phases.
    pub epoch: usize,
    pub phase: Phase,
    /// Mean total training loss per iteration.
    #[serde(with = "float_or_null")]
    pub train_loss: f64,
    #[serde(with = "float_or_null")]
    pub source_loss: f64,
    #[serde(with = "float_or_null")]
    pub target_loss: f64,
    #[serde(with = "float_or_null")]
    pub domain_loss: f64,
    #[serde(with = "float_or_null")]
    pub val_loss: f64,
    /// Mean of per-class recall on the target validation set.
    #[serde(with = "float_or_null")]
    pub val_balanced_accuracy: f64,
    /// GRL factor at the end of the epoch.
    #[serde(with = "float_or_null")]
    pub alpha: f64,
    pub seconds: f64,
    /// Whether this epoch is the new best (lowest validation loss).
    pub improved: bool,
}

/// Progress of a run, delivered through the caller's callback.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    Started {
        first_epoch: usize,
        total_epochs: usize,
        device: String,
    },
    Batch {
        epoch: usize,
        batch: usize,
        batches: usize,
    },
    /// An item could not be loaded; it is left out of its batch.
    ItemFailed {
        id: String,
        error: String,
    },
    Epoch(EpochReport),
    Checkpoint {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainStatus {
    Completed,
    EarlyStopped,
    Cancelled,
}

impl std::fmt::Display for TrainStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Completed => "completed",
            Self::EarlyStopped => "stopped early",
            Self::Cancelled => "cancelled",
        })
    }
}

/// Result of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub status: TrainStatus,
    /// 1-based epoch of the best weights, if any epoch finished.
    pub best_epoch: Option<usize>,
    pub best_val_loss: Option<f64>,
    pub best_val_balanced_accuracy: Option<f64>,
    pub epochs_completed: usize,
    /// Weights with the lowest target validation loss (`best.safetensors`).
    pub weights_path: PathBuf,
    /// Weights at the last checkpoint (`last.safetensors`), used by resume.
    pub last_weights_path: PathBuf,
}

/// Checkpoint state written beside the weights (`state.json`); no optimizer moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub config: TrainConfig,
    /// 0-based epoch to run next; an interrupted epoch restarts from its beginning.
    pub next_epoch: usize,
    pub best_epoch: Option<usize>,
    pub best_val_loss: Option<f64>,
    pub best_val_balanced_accuracy: Option<f64>,
    pub epochs_since_improvement: usize,
    pub status: Option<TrainStatus>,
    pub history: Vec<EpochReport>,
}

pub const BEST_WEIGHTS: &str = "best.safetensors";
pub const LAST_WEIGHTS: &str = "last.safetensors";
pub const STATE_FILE: &str = "state.json";

impl CheckpointState {
    pub fn read(run_dir: &Path) -> Result<Self, ModelError> {
        let path = run_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|err| ModelError::File {
            path,
            detail: err.to_string(),
        })
    }

    fn write(&self, run_dir: &Path) -> Result<(), ModelError> {
        let path = run_dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|err| ModelError::File {
            path: path.clone(),
            detail: err.to_string(),
        })?;
        crate::replace::replace(
            &path,
            text.as_bytes(),
            crate::replace::Durability::ContentAndName,
        )
        .map_err(ModelError::from)
    }
}

fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<(), ModelError> {
    // VarStore::save writes by name, into the file the replacement has just created;
    // the temporary name ends with the target's, so it picks the safetensors format.
    crate::replace::replace_with(
        path,
        crate::replace::Durability::ContentAndName,
        |temp, _| Ok::<_, ModelError>(vs.save(temp)?),
    )
}

/// Inverse class frequency weights `w_c = N / (K n_c)` (0 for absent classes).
pub fn class_weights(labels: &[usize], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &label in labels {
        if label < classes {
            counts[label] += 1;
        }
    }
    let total = labels.len() as f64;
    counts
        .iter()
        .map(|&n| {
            if n == 0 {
                0.0
            } else {
                total / (classes as f64 * n as f64)
            }
        })
        .collect()
}

/// Mean of per-class recall over the classes present in `truth`.
pub fn balanced_accuracy(truth: &[usize], predicted: &[usize]) -> f64 {
    let classes = truth.iter().copied().max().map_or(0, |m| m + 1);
    let mut hits = vec![0usize; classes];
    let mut counts = vec![0usize; classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        counts[t] += 1;
        if t == p {
            hits[t] += 1;
        }
    }
    let recalls: Vec<f64> = counts
        .iter()
        .zip(&hits)
        .filter(|(n, _)| **n > 0)
        .map(|(&n, &h)| h as f64 / n as f64)
        .collect();
    if recalls.is_empty() {
        0.0
    } else {
        recalls.iter().sum::<f64>() / recalls.len() as f64
    }
}

fn check_labels(items: &[Item], classes: usize, what: &str) -> Result<(), ModelError> {
    for item in items {
        if let Some(p) = &item.soft_label {
            let total: f32 = p.iter().sum();
            if p.len() != classes
                || p.iter().any(|v| !v.is_finite() || *v < 0.0)
                || (total - 1.0).abs() > 1e-3
            {
                return Err(ModelError::Data(format!(
                    "{what} item {}: soft label {p:?} is not a probability for each of {classes} classes",
                    item.id
                )));
            }
        }
        match item.label {
            Some(label) if label < classes => {}
            Some(label) => {
                return Err(ModelError::Data(format!(
                    "{what} item {}: label {label} outside 0..{classes}",
                    item.id
                )));
            }
            None => {
                return Err(ModelError::Data(format!(
                    "{what} item {} has no label",
                    item.id
                )));
            }
        }
    }
    Ok(())
}

fn labels_of(items: &[Item]) -> Vec<usize> {
    items.iter().filter_map(|item| item.label).collect()
}

/// Shuffled batches of `batch_size` covering `count` items once; a trailing batch smaller
/// than 2 is dropped because batch normalisation cannot train on one image.
fn shuffled_batches(count: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(rng);
    order
        .chunks(batch_size)
        .filter(|chunk| chunk.len() >= 2)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Shuffled batches of `batch_size` covering `count` items once, whatever the size of
/// the last one (a DataLoader without `drop_last`).
fn every_batch(count: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(rng);
    order.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

/// Shuffled full batches of `batch_size`; an incomplete last batch is dropped (a
/// DataLoader with `drop_last`).
fn full_batches(count: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(rng);
    order
        .chunks_exact(batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// The merged ClinicaDL code's labelled target stream: the indices repeated to `length`
/// entries (`indices * (length // count) + indices[..length % count]`, so when `count`
/// exceeds `length` only the first `length` items are ever used), shuffled, one item per
/// batch.
fn oversampled_single_batches(
    count: usize,
    length: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    if count == 0 {
        return Vec::new();
    }
    let mut indices: Vec<usize> = (0..length / count).flat_map(|_| 0..count).collect();
    indices.extend(0..length % count);
    indices.shuffle(rng);
    indices.into_iter().map(|index| vec![index]).collect()
}

/// `iterations` batches drawn by cycling through reshuffled passes over `count` items
/// (oversampling the smaller labelled target set to match the source stream).
fn cycled_batches(
    count: usize,
    batch_size: usize,
    iterations: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let mut batches = Vec::with_capacity(iterations);
    let mut pool: Vec<usize> = Vec::new();
    while batches.len() < iterations && count >= 2 {
        let mut batch = Vec::with_capacity(batch_size);
        while batch.len() < batch_size.min(count) {
            if pool.is_empty() {
                pool = (0..count).collect();
                pool.shuffle(rng);
            }
            if let Some(index) = pool.pop() {
                batch.push(index);
            }
        }
        batches.push(batch);
    }
    batches
}

/// One batch on the device: inputs `[N, 1, D, H, W]` and labels `[N]`, plus the soft
/// targets `[N, K]` when its items carry them.
struct DeviceBatch {
    input: Tensor,
    labels: Tensor,
    targets: Option<Tensor>,
}

impl DeviceBatch {
    /// The batch's classification loss: soft cross-entropy towards its targets when it
    /// has them, else cross-entropy on its labels; class-weighted when `weights` are given.
    fn task_loss(&self, logits: &Tensor, weights: Option<&Tensor>) -> Tensor {
        match &self.targets {
            Some(targets) => soft_ce(logits, targets, weights),
            None => task_ce(logits, &self.labels, weights),
        }
    }
}

/// The `[N, K]` targets of `items` (by index) when any carries a soft label, the others
/// as one-hot rows of their label; `None` when none does, so hard-label runs keep their
/// loss bit for bit.
fn soft_targets(items: &[Item], indices: &[usize]) -> Option<Vec<f32>> {
    let classes = indices
        .iter()
        .find_map(|&i| items[i].soft_label.as_ref())?
        .len();
    let mut out = Vec::with_capacity(indices.len() * classes);
    for &i in indices {
        match &items[i].soft_label {
            Some(p) => out.extend_from_slice(p),
            None => out.extend((0..classes).map(|c| f32::from(items[i].label == Some(c)))),
        }
    }
    Some(out)
}

struct Stream {
    items: Arc<Vec<Item>>,
}

impl Stream {
    fn new(items: &[Item]) -> Self {
        Self {
            items: Arc::new(items.to_vec()),
        }
    }

    fn start(&self, batches: Vec<Vec<usize>>, loader: &ItemLoader, depth: usize) -> Prefetcher {
        Prefetcher::start(Arc::clone(&self.items), batches, loader.clone(), depth)
    }

    fn start_augmented(
        &self,
        batches: Vec<Vec<usize>>,
        loader: &ItemLoader,
        depth: usize,
        augment: Option<StreamAugment>,
    ) -> Prefetcher {
        Prefetcher::start_augmented(
            Arc::clone(&self.items),
            batches,
            loader.clone(),
            depth,
            augment,
        )
    }

    /// Tensors for the items that loaded; failures are reported; `None` when fewer than
    /// `min_items` remain.
    fn to_device(
        &self,
        batch: LoadedBatch,
        preset: &Preset,
        device: Device,
        min_items: usize,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Option<DeviceBatch> {
        for (index, error) in batch.failures {
            on_event(TrainEvent::ItemFailed {
                id: self.items[index].id.clone(),
                error: error.to_string(),
            });
        }
        if batch.loaded.is_empty() || batch.loaded.len() < min_items {
            return None;
        }
        let [_, d, h, w] = preset.input_shape();
        let input = Tensor::from_slice(&batch.values)
            .view([batch.loaded.len() as i64, 1, d, h, w])
            .to_device(device);
        let labels: Vec<i64> = batch
            .loaded
            .iter()
            .map(|&i| self.items[i].label.unwrap_or(0) as i64)
            .collect();
        let n = batch.loaded.len() as i64;
        let targets = soft_targets(&self.items, &batch.loaded)
            .map(|t| Tensor::from_slice(&t).view([n, -1]).to_device(device));
        Some(DeviceBatch {
            input,
            labels: Tensor::from_slice(&labels).to_device(device),
            targets,
        })
    }
}

/// Cross-entropy, class-weighted when `weights` are given (the weighted mean, as
/// PyTorch's `CrossEntropyLoss(weight=...)`).
fn task_ce(logits: &Tensor, labels: &Tensor, weights: Option<&Tensor>) -> Tensor {
    logits.cross_entropy_loss::<&Tensor>(labels, weights, tch::Reduction::Mean, -100, 0.0)
}

/// Cross-entropy towards soft targets `[N, K]`: `-sum_c t_c log q_c` per image, their
/// mean; with class weights, each (image, class) term weighted by `w_c` and the sum
/// divided by the sum of `w_c t_c`, which is PyTorch's weighted mean for one-hot targets.
fn soft_ce(logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Tensor {
    let terms = logits.log_softmax(-1, Kind::Float).neg() * targets;
    match weights {
        Some(weights) => {
            let weighted = targets * weights.unsqueeze(0);
            (terms * weights.unsqueeze(0)).sum(Kind::Float) / weighted.sum(Kind::Float)
        }
        None => terms
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float),
    }
}

fn domain_ce(logits: &Tensor, domain: i64) -> Tensor {
    let labels = Tensor::full([logits.size()[0]], domain, (Kind::Int64, logits.device()));
    logits.cross_entropy_for_logits(&labels)
}

struct Validation {
    loss: f64,
    balanced_accuracy: f64,
}

/// Loss and balanced accuracy on the target validation set. With class weights the loss
/// is the class-weighted mean over images; without, the mean of the per-batch mean
/// losses over sequential batches of B (the merged code sums them, which orders epochs
/// the same way).
fn validate(
    net: &Conv5Fc3Ssda,
    stream: &Stream,
    head: Head,
    weights: Option<&Tensor>,
    config: &TrainConfig,
    loader: &ItemLoader,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Validation {
    let _guard = tch::no_grad_guard();
    let device = net.device();
    let batches = sequential_batches(stream.items.len(), config.batch_size);
    let (mut weighted_loss, mut weight_total) = (0.0, 0.0);
    let (mut batch_means, mut batch_count) = (0.0, 0usize);
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    for batch in stream.start(batches, loader, config.prefetch_batches) {
        for (index, error) in &batch.failures {
            on_event(TrainEvent::ItemFailed {
                id: stream.items[*index].id.clone(),
                error: error.to_string(),
            });
        }
        if batch.loaded.is_empty() {
            continue;
        }
        let [_, d, h, w] = config.preset.input_shape();
        let input = Tensor::from_slice(&batch.values)
            .view([batch.loaded.len() as i64, 1, d, h, w])
            .to_device(device);
        let labels: Vec<i64> = batch
            .loaded
            .iter()
            .map(|&i| stream.items[i].label.unwrap_or(0) as i64)
            .collect();
        let labels_t = Tensor::from_slice(&labels).to_device(device);
        let logits = net.forward_head(&input, head, false);
        let log_q = logits.log_softmax(-1, Kind::Float);
        let n = batch.loaded.len() as i64;
        let targets = soft_targets(&stream.items, &batch.loaded)
            .map(|t| Tensor::from_slice(&t).view([n, -1]).to_device(device));
        let per_item = match &targets {
            Some(t) => (&log_q * t).sum_dim_intlist(-1, false, Kind::Float).neg(),
            None => log_q
                .gather(1, &labels_t.unsqueeze(1), false)
                .squeeze_dim(1)
                .neg(),
        };
        match weights {
            Some(weights) => {
                // Sums of w_c t_c (-log q_c) and of w_c t_c: the weighted mean of soft_ce.
                let (loss, weight) = match &targets {
                    Some(t) => {
                        let wt = t * weights.unsqueeze(0);
                        ((&log_q * &wt).sum(Kind::Float).neg(), wt.sum(Kind::Float))
                    }
                    None => {
                        let item_weights = weights.index_select(0, &labels_t);
                        (
                            (&per_item * &item_weights).sum(Kind::Float),
                            item_weights.sum(Kind::Float),
                        )
                    }
                };
                weighted_loss += loss.double_value(&[]);
                weight_total += weight.double_value(&[]);
            }
            None => {
                batch_means += per_item.mean(Kind::Float).double_value(&[]);
                batch_count += 1;
            }
        }
        let argmax = Vec::<i64>::try_from(logits.argmax(-1, false).to_device(Device::Cpu))
            .unwrap_or_default();
        truth.extend(labels.iter().map(|&l| l as usize));
        predicted.extend(argmax.iter().map(|&p| p as usize));
    }
    Validation {
        loss: if weights.is_none() && batch_count > 0 {
            batch_means / batch_count as f64
        } else if weights.is_some() && weight_total > 0.0 {
            weighted_loss / weight_total
        } else {
            f64::NAN
        },
        balanced_accuracy: balanced_accuracy(&truth, &predicted),
    }
}

/// Where a run keeps its files, and whether to continue from its checkpoint.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub run_dir: PathBuf,
    /// Continue from `state.json` and `last.safetensors` when they exist.
    pub resume: bool,
    /// Cache of preprocessed tensors for file items.
    pub cache: Option<TensorCache>,
}

/// Trains a network. Events go to `on_event`; setting `cancel` stops between batches,
/// after saving a checkpoint that `resume` continues from.
pub fn train(
    config: &TrainConfig,
    data: &TrainData,
    options: &RunOptions,
    cancel: &Arc<AtomicBool>,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome, ModelError> {
    config.validate()?;
    let uses_source = config.method != Method::TargetOnly;
    let uses_target = !matches!(config.method, Method::SourceOnly);
    if uses_source {
        check_labels(&data.source, config.source_classes, "source")?;
        if data.source.len() < 2 {
            return Err(ModelError::Data(
                "at least 2 source items are needed".into(),
            ));
        }
    }
    if uses_target {
        check_labels(&data.target_train, config.target_classes, "target training")?;
        if data.target_train.len() < 2 {
            return Err(ModelError::Data(
                "at least 2 labelled target training items are needed".into(),
            ));
        }
    }
    check_labels(&data.target_val, config.target_classes, "target validation")?;
    if data.target_val.is_empty() {
        return Err(ModelError::Data("target validation set is empty".into()));
    }
    let device = parse_device(&config.device)?;
    let run_dir = &options.run_dir;
    std::fs::create_dir_all(run_dir).map_err(|source| ModelError::Io {
        path: run_dir.clone(),
        source,
    })?;
    let best_path = run_dir.join(BEST_WEIGHTS);
    let last_path = run_dir.join(LAST_WEIGHTS);

    tch::manual_seed(config.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let net = Conv5Fc3Ssda::new(&vs.root(), &config.network_spec());
    net.initialise(
        config.recipe.weight_init,
        &mut ChaCha8Rng::seed_from_u64(derive_seed(config.seed, SEED_INIT, 0)),
    );
    let mut state = CheckpointState {
        config: config.clone(),
        next_epoch: 0,
        best_epoch: None,
        best_val_loss: None,
        best_val_balanced_accuracy: None,
        epochs_since_improvement: 0,
        status: None,
        history: Vec::new(),
    };
    let resuming = options.resume && run_dir.join(STATE_FILE).exists();
    if let Some(initial) = config.initial_weights.as_ref().filter(|_| !resuming) {
        load_initial_weights(&mut vs, initial)?;
    }
    if resuming {
        let saved = CheckpointState::read(run_dir)?;
        if saved.config != *config {
            return Err(ModelError::Config(format!(
                "{}: the checkpoint was made with a different configuration",
                run_dir.join(STATE_FILE).display()
            )));
        }
        vs.load(&last_path).map_err(|err| ModelError::File {
            path: last_path.clone(),
            detail: err.to_string(),
        })?;
        state = saved;
    }
    let outcome = |state: &CheckpointState, status: TrainStatus| TrainOutcome {
        status,
        best_epoch: state.best_epoch,
        best_val_loss: state.best_val_loss,
        best_val_balanced_accuracy: state.best_val_balanced_accuracy,
        epochs_completed: state.history.len(),
        weights_path: best_path.clone(),
        last_weights_path: last_path.clone(),
    };
    if let Some(status @ (TrainStatus::Completed | TrainStatus::EarlyStopped)) = state.status {
        return Ok(outcome(&state, status));
    }

    let loader = ItemLoader::new(config.preset.clone(), options.cache.clone());
    let source = Stream::new(&data.source);
    let target = Stream::new(&data.target_train);
    let unlabelled = Stream::new(&data.target_unlabelled);
    let validation = Stream::new(&data.target_val);
    let to_tensor = |w: Vec<f64>| {
        Tensor::from_slice(&w)
            .to_kind(Kind::Float)
            .to_device(device)
    };
    let with_weights = config.recipe.class_weights;
    let source_weights = with_weights.then(|| {
        to_tensor(class_weights(
            &labels_of(&data.source),
            config.source_classes,
        ))
    });
    let target_weights = with_weights.then(|| {
        to_tensor(class_weights(
            &labels_of(&data.target_train),
            config.target_classes,
        ))
    });
    let augmenter = Augmenter::new(
        &config.preset.augment,
        config.artefact_rule,
        config.preset.preprocess.shape,
        config.preset.preprocess.spacing_mm,
    )
    .map(Arc::new);
    // Single images are batches in the merged code's labelled target stream.
    let min_items = match config.recipe.batch_composition {
        BatchComposition::Clinicadl => 1,
        BatchComposition::Cdwqc => 2,
    };

    let total_epochs = config.total_epochs();
    on_event(TrainEvent::Started {
        first_epoch: state.next_epoch + 1,
        total_epochs,
        device: crate::model::device_name(device),
    });
    let mut optimizer = nn::Adam {
        wd: config.weight_decay,
        ..Default::default()
    }
    .build(&vs, config.learning_rate)?;
    let mut optimizer_phase = config.phase(state.next_epoch);

    while state.next_epoch < total_epochs {
        let epoch = state.next_epoch;
        let phase = config.phase(epoch);
        if phase != optimizer_phase {
            // Fine-tuning starts from the pretrained source classifier, with fresh moments.
            copy_source_head_to_target(&vs);
            optimizer = nn::Adam {
                wd: config.weight_decay,
                ..Default::default()
            }
            .build(&vs, config.learning_rate)?;
            optimizer_phase = phase;
        }
        let (phase_start, phase_epochs) = match (config.method, phase) {
            (Method::Finetune, Phase::Pretrain) => (0, config.pretrain_epochs),
            (Method::Finetune, Phase::Main) => (config.pretrain_epochs, config.epochs),
            _ => (0, config.epochs),
        };
        let started = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(epoch as u64 * 7919));
        tch::manual_seed(config.seed.wrapping_add(epoch as u64) as i64);
        net.seed_dropout(derive_seed(config.seed, SEED_DROPOUT, epoch as u64));
        let augment = |stream: u64| {
            augmenter.as_ref().map(|augmenter| StreamAugment {
                augmenter: Arc::clone(augmenter),
                seed: derive_seed(config.seed, SEED_AUGMENT + stream, epoch as u64),
            })
        };

        // Which streams feed this epoch, and which loss terms apply.
        let (main_source, with_target, with_domain) = match (config.method, phase) {
            (Method::Ssda, _) => (true, true, config.domain_weight > 0.0),
            (Method::SsdaNoDomain, _) => (true, true, false),
            (Method::SourceOnly, _) | (Method::Finetune, Phase::Pretrain) => (true, false, false),
            (Method::TargetOnly, _) | (Method::Finetune, Phase::Main) => (false, true, false),
        };
        let paired = main_source && with_target;
        let batch_size = config.batch_size;
        let (main_batches, target_batches, unlabelled_batches) = match config
            .recipe
            .batch_composition
        {
            BatchComposition::Cdwqc => {
                let main = if main_source {
                    shuffled_batches(source.items.len(), batch_size, &mut rng)
                } else {
                    shuffled_batches(target.items.len(), batch_size, &mut rng)
                };
                let iterations = main.len();
                let target_batches = paired
                    .then(|| cycled_batches(target.items.len(), batch_size, iterations, &mut rng));
                let unlabelled_batches = (with_domain && unlabelled.items.len() >= 2).then(|| {
                    cycled_batches(unlabelled.items.len(), batch_size, iterations, &mut rng)
                });
                (main, target_batches, unlabelled_batches)
            }
            BatchComposition::Clinicadl => {
                let main = match (main_source, paired) {
                    (true, true) => full_batches(source.items.len(), batch_size, &mut rng),
                    (true, false) => every_batch(source.items.len(), batch_size, &mut rng),
                    (false, _) => every_batch(target.items.len(), batch_size, &mut rng),
                };
                let target_batches = paired.then(|| {
                    oversampled_single_batches(
                        target.items.len(),
                        source.items.len() / batch_size,
                        &mut rng,
                    )
                });
                let unlabelled_batches =
                    with_domain.then(|| full_batches(unlabelled.items.len(), batch_size, &mut rng));
                (main, target_batches, unlabelled_batches)
            }
        };
        // The streams are zipped: an epoch lasts as long as the shortest.
        let iterations = [
            Some(main_batches.len()),
            target_batches.as_ref().map(Vec::len),
            unlabelled_batches.as_ref().map(Vec::len),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(0);
        if iterations == 0 {
            return Err(ModelError::Data(format!(
                "recipe {}: no training iteration in an epoch ({} source, {} labelled target \
                 and {} unlabelled target images, batch size {batch_size}; the merged code \
                 zips full batches of every stream, so each needs at least one)",
                config.recipe.recipe.name(),
                source.items.len(),
                target.items.len(),
                unlabelled.items.len()
            )));
        }
        let depth = config.prefetch_batches;
        let truncated = |mut batches: Vec<Vec<usize>>| {
            batches.truncate(iterations);
            batches
        };
        let main_batches = truncated(main_batches);
        let mut main_stream = if main_source {
            source.start_augmented(main_batches, &loader, depth, augment(0))
        } else {
            target.start_augmented(main_batches, &loader, depth, augment(1))
        };
        let mut target_stream = target_batches
            .map(|batches| target.start_augmented(truncated(batches), &loader, depth, augment(1)));
        let mut unlabelled_stream = unlabelled_batches.map(|batches| {
            unlabelled.start_augmented(truncated(batches), &loader, depth, augment(2))
        });

        let mut sums = [0.0f64; 4];
        let mut steps = 0usize;
        let mut alpha = 0.0;
        for iteration in 0..iterations {
            let Some(main) = main_stream.next() else {
                break;
            };
            let paired_target = target_stream.as_mut().and_then(Iterator::next);
            let paired_unlabelled = unlabelled_stream.as_mut().and_then(Iterator::next);
            alpha = match config.recipe.alpha_schedule {
                AlphaSchedule::PerEpoch => grl_alpha_for_epoch(epoch - phase_start),
                AlphaSchedule::PerIteration => grl_alpha(
                    ((epoch - phase_start) * iterations + iteration) as f64
                        / (phase_epochs * iterations).max(1) as f64,
                ),
            };
            let main_items = if main_source { &source } else { &target };
            let main = main_items.to_device(main, &config.preset, device, min_items, on_event);
            let tgt = paired_target
                .and_then(|b| target.to_device(b, &config.preset, device, min_items, on_event));
            let unl = paired_unlabelled
                .and_then(|b| unlabelled.to_device(b, &config.preset, device, min_items, on_event));

            let zero = || Tensor::zeros([], (Kind::Float, device));
            let (mut source_loss, mut target_loss) = (zero(), zero());
            let mut domain_terms = Vec::new();
            if let Some(batch) = &main {
                let features = net.features(&batch.input, true);
                if main_source {
                    let logits = net.head_logits(&features, Head::Source, alpha, true);
                    source_loss = batch.task_loss(&logits, source_weights.as_ref());
                    if with_domain {
                        let dom = net.head_logits(&features, Head::Domain, alpha, true);
                        domain_terms.push(domain_ce(&dom, 0));
                    }
                } else {
                    let logits = net.head_logits(&features, Head::Target, alpha, true);
                    target_loss = batch.task_loss(&logits, target_weights.as_ref());
                }
            }
            if let Some(batch) = &tgt {
                let features = net.features(&batch.input, true);
                let logits = net.head_logits(&features, Head::Target, alpha, true);
                target_loss = batch.task_loss(&logits, target_weights.as_ref());
                if with_domain {
                    let dom = net.head_logits(&features, Head::Domain, alpha, true);
                    domain_terms.push(domain_ce(&dom, 1));
                }
            }
            if let Some(batch) = &unl {
                let features = net.features(&batch.input, true);
                let dom = net.head_logits(&features, Head::Domain, alpha, true);
                domain_terms.push(domain_ce(&dom, 1));
            }
            let domain_loss = domain_terms.iter().fold(zero(), |sum, term| sum + term);
            if main.is_some() || tgt.is_some() {
                let loss = &source_loss + &target_loss + &domain_loss * config.domain_weight;
                optimizer.backward_step(&loss);
                sums[0] += loss.double_value(&[]);
                sums[1] += source_loss.double_value(&[]);
                sums[2] += target_loss.double_value(&[]);
                sums[3] += domain_loss.double_value(&[]);
                steps += 1;
            }
            on_event(TrainEvent::Batch {
                epoch: epoch + 1,
                batch: iteration + 1,
                batches: iterations,
            });
            if cancel.load(Ordering::SeqCst) {
                save_weights(&vs, &last_path)?;
                state.status = Some(TrainStatus::Cancelled);
                state.write(run_dir)?;
                on_event(TrainEvent::Checkpoint {
                    path: last_path.clone(),
                });
                return Ok(outcome(&state, TrainStatus::Cancelled));
            }
        }
        drop((main_stream, target_stream, unlabelled_stream));

        let head = if phase == Phase::Pretrain {
            Head::Source
        } else {
            config.prediction_head()
        };
        let val = validate(
            &net,
            &validation,
            head,
            target_weights.as_ref(),
            config,
            &loader,
            on_event,
        );
        // Pretraining epochs are reported but do not compete for the best weights.
        let improved = phase == Phase::Main
            && match config.selection {
                Selection::Last => true,
                Selection::ValLoss => {
                    val.loss.is_finite() && state.best_val_loss.is_none_or(|best| val.loss < best)
                }
            };
        if improved {
            state.best_val_loss = Some(val.loss);
            state.best_val_balanced_accuracy = Some(val.balanced_accuracy);
            state.best_epoch = Some(epoch + 1);
            state.epochs_since_improvement = 0;
            save_weights(&vs, &best_path)?;
        } else if phase == Phase::Main {
            state.epochs_since_improvement += 1;
        }
        let mean = |sum: f64| {
            if steps > 0 {
                sum / steps as f64
            } else {
                f64::NAN
            }
        };
        let report = EpochReport {
            epoch: epoch + 1,
            phase,
            train_loss: mean(sums[0]),
            source_loss: mean(sums[1]),
            target_loss: mean(sums[2]),
            domain_loss: mean(sums[3]),
            val_loss: val.loss,
            val_balanced_accuracy: val.balanced_accuracy,
            alpha,
            seconds: started.elapsed().as_secs_f64(),
            improved,
        };
        state.history.push(report.clone());
        state.next_epoch = epoch + 1;
        let early_stop = phase == Phase::Main
            && config.patience > 0
            && state.epochs_since_improvement >= config.patience;
        if early_stop {
            state.status = Some(TrainStatus::EarlyStopped);
        } else if state.next_epoch == total_epochs {
            state.status = Some(TrainStatus::Completed);
        } else {
            state.status = None;
        }
        save_weights(&vs, &last_path)?;
        state.write(run_dir)?;
        on_event(TrainEvent::Epoch(report));
        on_event(TrainEvent::Checkpoint {
            path: last_path.clone(),
        });
        if early_stop {
            return Ok(outcome(&state, TrainStatus::EarlyStopped));
        }
    }
    Ok(outcome(&state, TrainStatus::Completed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_the_last_epoch_when_a_validation_class_is_small() {
        let four_rejects = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
        assert_eq!(
            Selection::auto(Recipe::Cdwqc, &four_rejects, 2),
            (Selection::Last, 4)
        );
        let five_each = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1];
        assert_eq!(
            Selection::auto(Recipe::Cdwqc, &five_each, 2),
            (Selection::ValLoss, 5)
        );
        // A class absent from validation counts as zero images.
        assert_eq!(
            Selection::auto(Recipe::Cdwqc, &[1; 40], 2),
            (Selection::Last, 0)
        );
        // The published code's recipe always chooses by validation loss.
        assert_eq!(
            Selection::auto(Recipe::Clinicadl, &[0, 1], 2),
            (Selection::ValLoss, 1)
        );
        // Stored configurations without the field read as choosing by validation loss,
        // and such a configuration is written back without it.
        let config = TrainConfig::new(
            Method::Ssda,
            crate::model::preset::Preset::builtin("tiny").expect("tiny preset"),
            2,
            2,
        );
        let json = serde_json::to_value(&config).expect("serialise");
        assert!(json.get("selection").is_none());
        let last = TrainConfig {
            selection: Selection::Last,
            ..config
        };
        let json = serde_json::to_string(&last).expect("serialise");
        assert!(json.contains("\"selection\":\"last\""));
        let back: TrainConfig = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.selection, Selection::Last);
    }

    #[test]
    fn class_weights_are_inverse_frequency() {
        let weights = class_weights(&[0, 0, 0, 1], 2);
        assert!((weights[0] - 4.0 / 6.0).abs() < 1e-12);
        assert!((weights[1] - 2.0).abs() < 1e-12);
        assert_eq!(class_weights(&[0, 0], 3)[2], 0.0);
    }

    #[test]
    fn soft_cross_entropy_of_one_hot_targets_is_the_hard_loss() {
        let logits = Tensor::from_slice(&[0.3f32, -1.2, 2.0, 0.1, 0.0, -0.5]).view([3, 2]);
        let labels = Tensor::from_slice(&[1i64, 0, 0]);
        let one_hot = Tensor::from_slice(&[0f32, 1., 1., 0., 1., 0.]).view([3, 2]);
        let weights = Tensor::from_slice(&[0.75f32, 1.5]);
        for w in [None, Some(&weights)] {
            let hard = task_ce(&logits, &labels, w).double_value(&[]);
            let soft = soft_ce(&logits, &one_hot, w).double_value(&[]);
            assert!(
                (hard - soft).abs() < 1e-6,
                "{hard} vs {soft} (weights {w:?})"
            );
        }
    }

    #[test]
    fn soft_cross_entropy_weighs_each_class_term() {
        // q = (0.75, 0.25); target (0.7, 0.3); class weights (1, 3).
        let logits = Tensor::from_slice(&[3f32.ln(), 0.0]).view([1, 2]);
        let targets = Tensor::from_slice(&[0.7f32, 0.3]).view([1, 2]);
        let (a, b) = (-(0.75f64.ln()), -(0.25f64.ln()));
        let plain = soft_ce(&logits, &targets, None).double_value(&[]);
        assert!((plain - (0.7 * a + 0.3 * b)).abs() < 1e-6, "{plain}");
        let weights = Tensor::from_slice(&[1f32, 3.0]);
        let weighted = soft_ce(&logits, &targets, Some(&weights)).double_value(&[]);
        let expected = (0.7 * a + 0.9 * b) / (0.7 + 0.9);
        assert!(
            (weighted - expected).abs() < 1e-6,
            "{weighted} vs {expected}"
        );
    }

    #[test]
    fn soft_targets_fill_hard_items_with_one_hot_rows() {
        let hard = |id: &str, y| Item::from_tensor(id, vec![0.0], Some(y));
        let items = vec![
            hard("a", 1),
            hard("b", 0).with_soft_label(Some(vec![0.6, 0.4])),
            hard("c", 0),
        ];
        assert_eq!(
            soft_targets(&items, &[0, 2]),
            None,
            "no soft item: hard loss"
        );
        assert_eq!(
            soft_targets(&items, &[0, 1, 2]),
            Some(vec![0.0, 1.0, 0.6, 0.4, 1.0, 0.0])
        );
    }

    #[test]
    fn a_soft_label_that_is_not_a_probability_is_refused() {
        for bad in [
            vec![0.5, 0.4],
            vec![1.2, -0.2],
            vec![f32::NAN, 1.0],
            vec![1.0],
        ] {
            let items = [Item::from_tensor("x", vec![0.0], Some(0)).with_soft_label(Some(bad))];
            let error = check_labels(&items, 2, "target training").expect_err("refused");
            assert!(error.to_string().contains("item x: soft label"), "{error}");
        }
        let good =
            [Item::from_tensor("x", vec![0.0], Some(0)).with_soft_label(Some(vec![0.9, 0.1]))];
        assert!(check_labels(&good, 2, "target training").is_ok());
    }

    #[test]
    fn balanced_accuracy_is_mean_recall() {
        let value = balanced_accuracy(&[0, 0, 0, 1], &[0, 0, 1, 1]);
        assert!((value - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn cycled_batches_oversample_a_small_set() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let batches = cycled_batches(3, 4, 5, &mut rng);
        assert_eq!(batches.len(), 5);
        assert!(batches.iter().all(|b| b.len() == 3));
        let mut first: Vec<usize> = batches[0].clone();
        first.sort_unstable();
        assert_eq!(first, vec![0, 1, 2]);
    }

    #[test]
    fn merged_code_batches_drop_or_keep_the_last_batch_and_oversample_singles() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let full = full_batches(19, 8, &mut rng);
        assert_eq!(full.len(), 2);
        assert!(full.iter().all(|b| b.len() == 8));
        let every = every_batch(17, 8, &mut rng);
        assert_eq!(
            every.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![8, 8, 1]
        );
        // 3 items to 7 entries: each twice, then item 0 once more.
        let singles = oversampled_single_batches(3, 7, &mut rng);
        assert_eq!(singles.len(), 7);
        assert!(singles.iter().all(|b| b.len() == 1));
        let count = |i: usize| singles.iter().filter(|b| b[0] == i).count();
        assert_eq!((count(0), count(1), count(2)), (3, 2, 2));
        // More items than entries: only the first ones are ever used.
        let mut used: Vec<usize> = oversampled_single_batches(10, 4, &mut rng)
            .into_iter()
            .map(|b| b[0])
            .collect();
        used.sort_unstable();
        assert_eq!(used, vec![0, 1, 2, 3]);
    }

    #[test]
    fn recipes_set_the_network_and_the_patience() {
        let preset = Preset::builtin("tiny").unwrap();
        let mut config = TrainConfig::new(Method::Ssda, preset, 3, 3);
        assert_eq!(config.recipe.recipe, Recipe::Cdwqc);
        assert_eq!(config.patience, 5);
        assert_eq!(config.network_spec().domain_classes, 2);
        assert_eq!(config.network_spec().dropout, 0.5);
        config.use_recipe(Recipe::Clinicadl);
        assert_eq!(config.patience, 0);
        let spec = config.network_spec();
        assert_eq!(spec.domain_classes, 3);
        assert_eq!(spec.dropout, 0.0);
        assert_eq!(spec.pool_padding, super::super::network::PoolPadding::Front);
        let json = serde_json::to_string(&config).unwrap();
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn methods_parse_from_kebab_case() {
        assert_eq!(
            "ssda-no-domain".parse::<Method>().unwrap(),
            Method::SsdaNoDomain
        );
        assert!("ssda2".parse::<Method>().is_err());
    }
}
