//! Exported models: a folder `models/<name>/` holding `model.toml` (the model card: task,
//! classes, preset, method, training data, metrics, licence, the weights' SHA-256) and
//! `weights.safetensors`, which predicts in any store. The weights are checked against
//! the card's SHA-256 and size every time they are loaded.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;

use super::ModelError;
use super::infer::{Ensemble, Predictor};
use super::iqm_forest::{self, ForestConfig, PortableForest};
use super::network::Head;
use super::preset::Preset;
use crate::imaging::iqm::IQM_VERSION;
use crate::import::analyse::hex_sha256;
use crate::report::agreement::Task;

pub const CARD_FILE: &str = "model.toml";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The IQM forest's training rows, beside the card when it has a forest.
pub const FOREST_FILE: &str = "iqm-forest.safetensors";
/// The card format this build writes and reads.
pub const CARD_FORMAT: &str = "cdwqc.model-card/1";
pub const ARCHITECTURE: &str = "Conv5_FC3_SSDA";

/// The weights file a card describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsInfo {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A further network of an ensemble (`cdwqc model export --member-run`): its weights
/// file and the training run it comes from, trained on the same split as the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub run: String,
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_val_balanced_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_balanced_accuracy: Option<f64>,
}

/// How the model was trained, from the training run's records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// What the model learnt from, in words.
    pub data: String,
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// SHA-256 of the labels the run used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_snapshot: Option<String>,
    #[serde(default)]
    pub raters: Vec<String>,
    pub seed: u64,
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub source_images: u64,
    pub target_train_images: u64,
    pub target_validation_images: u64,
    pub target_test_images: u64,
    pub target_unlabelled_images: u64,
}

/// The training run's own figures (its validation and held-out test subjects).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CardMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_completed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_val_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_val_balanced_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_images: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_balanced_accuracy: Option<f64>,
}

/// One class against the rest, on an evaluation's images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassEvaluation {
    pub class: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<[f64; 2]>,
}

/// The model scored on a named set of images of some store (`cdwqc model evaluate`),
/// with the subject-level bootstrap CIs of `cdwqc report model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardEvaluation {
    /// Short name of the image set; a later evaluation of the same name replaces it.
    pub label: String,
    #[serde(default)]
    pub description: String,
    /// The predictions scored: the run in that store, and the truth.
    pub run: String,
    pub against: String,
    pub images: u64,
    pub subjects: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced_accuracy_ci95: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    pub confusion: Vec<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_vs_rest: Vec<ClassEvaluation>,
}

/// The model card, `model.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `usable`, `quality` or `gado`.
    pub task: String,
    /// Output classes in the order of the network's logits.
    pub classes: Vec<String>,
    /// Training method (`ssda`, `target-only`, ...).
    pub method: String,
    pub architecture: String,
    /// The head that predicts: `target` or `source`.
    pub head: String,
    pub source_classes: usize,
    pub target_classes: usize,
    /// BIDS suffixes: the labelled source sequence and the sequence the model is for.
    pub source_sequence: String,
    pub target_sequence: String,
    pub licence: String,
    pub cdwqc_version: String,
    pub weights: WeightsInfo,
    /// The preset, with its whole preprocessing section: inputs must be prepared so.
    pub preset: Preset,
    pub training: TrainingInfo,
    pub metrics: CardMetrics,
    /// Scores on image sets other than the training run's own (an external test set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluations: Vec<CardEvaluation>,
    /// An IQM forest whose probabilities are mixed with the network's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iqm_forest: Option<IqmForestInfo>,
    /// Further networks of the same shape, preset and split: the model's network
    /// probabilities are the mean of theirs and the first's (`[weights]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberInfo>,
}

/// The IQM forest an exported model carries (`cdwqc model export --iqm-forest`): the
/// image quality metrics of the images it predicts, scaled within their scanner groups
/// among those images, go through a random forest, and its class probabilities are
/// mixed with the network's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IqmForestInfo {
    /// The forest's training rows and classes, beside the card.
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    /// The metrics' version (`iqms.iqm_version`) and columns the rows hold.
    pub iqm_version: i32,
    pub features: Vec<String>,
    pub trees: u16,
    pub seed: u64,
    /// The forest's share of the mixed probabilities, in (0, 1].
    pub weight: f64,
    /// How the metrics are scaled (before training and before predicting).
    pub scaling: String,
    /// What the forest was trained on, in words.
    pub data: String,
    pub training_images: u64,
}

impl ModelCard {
    pub fn task(&self) -> Result<Task, ModelError> {
        Task::from_name(&self.task).ok_or_else(|| {
            ModelError::Config(format!(
                "model {}: unknown task {:?} (expected usable, quality or gado)",
                self.name, self.task
            ))
        })
    }

    pub fn prediction_head(&self) -> Result<Head, ModelError> {
        match self.head.as_str() {
            "target" => Ok(Head::Target),
            "source" => Ok(Head::Source),
            other => Err(ModelError::Config(format!(
                "model {}: unknown head {other:?} (expected target or source)",
                self.name
            ))),
        }
    }

    fn check(&self, path: &Path) -> Result<(), ModelError> {
        let error = |detail: String| ModelError::File {
            path: path.to_path_buf(),
            detail,
        };
        let fail = |detail: String| Err(error(detail));
        if self.format != CARD_FORMAT {
            return fail(format!(
                "model card format {:?}, this cdwqc reads {CARD_FORMAT:?}",
                self.format
            ));
        }
        if self.architecture != ARCHITECTURE {
            return fail(format!(
                "architecture {:?}, this cdwqc runs {ARCHITECTURE:?}",
                self.architecture
            ));
        }
        let task = self.task().map_err(|e| error(e.to_string()))?;
        let expected: Vec<String> = task.categories().iter().map(|c| c.to_string()).collect();
        if self.classes != expected {
            return fail(format!(
                "classes {:?} do not match task {} ({:?})",
                self.classes, self.task, expected
            ));
        }
        let head = self.prediction_head().map_err(|e| error(e.to_string()))?;
        let outputs = match head {
            Head::Source => self.source_classes,
            _ => self.target_classes,
        };
        if outputs != self.classes.len() {
            return fail(format!(
                "the {} head has {outputs} outputs for {} classes",
                self.head,
                self.classes.len()
            ));
        }
        if self.weights.file.contains('/') || self.weights.file.contains('\\') {
            return fail(format!(
                "weights file {:?} must be a file name beside the card",
                self.weights.file
            ));
        }
        let sha = &self.weights.sha256;
        if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return fail(format!("weights sha256 {sha:?} is not 64 hex digits"));
        }
        if self.preset.batch_size == 0 || self.preset.preprocess.shape.contains(&0) {
            return fail("the preset's batch size and grid sizes must be positive".into());
        }
        super::network::NetworkSpec::new(
            self.preset.preprocess.shape,
            self.source_classes,
            self.target_classes,
        )
        .check()
        .map_err(error)?;
        if let Some(forest) = &self.iqm_forest {
            check_forest(forest).map_err(error)?;
        }
        Ok(())
    }
}

/// What this build needs of a card's forest: a plain file name, a SHA-256, a weight in
/// (0, 1] and the metrics (version and columns) this build measures.
fn check_forest(forest: &IqmForestInfo) -> Result<(), String> {
    if forest.file.contains('/') || forest.file.contains('\\') || forest.file.is_empty() {
        return Err(format!(
            "IQM forest file {:?} must be a file name beside the card",
            forest.file
        ));
    }
    let sha = &forest.sha256;
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("IQM forest sha256 {sha:?} is not 64 hex digits"));
    }
    if !(forest.weight > 0.0 && forest.weight <= 1.0) {
        return Err(format!(
            "IQM forest weight {} is not in (0, 1]",
            forest.weight
        ));
    }
    if forest.trees == 0 {
        return Err("the IQM forest has no tree".into());
    }
    let names = iqm_forest::feature_names();
    if forest.iqm_version != IQM_VERSION || forest.features != names {
        return Err(format!(
            "the IQM forest reads image quality metrics of version {} ({} columns); this cdwqc measures version {IQM_VERSION} ({} columns)",
            forest.iqm_version,
            forest.features.len(),
            names.len()
        ));
    }
    Ok(())
}

/// A model name usable as a folder name and in a run id.
pub fn check_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ModelError::Config(format!(
            "model name {name:?}: use letters, digits, '-', '_' and '.', not starting with '.'"
        )))
    }
}

/// Where the models shipped with cdwqc live: `models/` in the project folder the binary
/// was built in (like the MNI template the registration reads).
pub fn shipped_models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// An exported model folder with its card read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedModel {
    pub dir: PathBuf,
    pub card: ModelCard,
}

impl ExportedModel {
    /// Finds a model: a folder holding `model.toml`, else `<models_dir>/<name>`, else a
    /// model shipped with cdwqc (`models/<name>` in the project folder the binary was
    /// built in), so that `--model cdwqc-flair-usable` works from any folder.
    pub fn resolve(name_or_dir: &str, models_dir: &Path) -> Result<PathBuf, ModelError> {
        Self::resolve_in(name_or_dir, models_dir, &shipped_models_dir())
    }

    fn resolve_in(
        name_or_dir: &str,
        models_dir: &Path,
        shipped_dir: &Path,
    ) -> Result<PathBuf, ModelError> {
        let mut tried = vec![PathBuf::from(name_or_dir), models_dir.join(name_or_dir)];
        // A path is never looked up among the shipped models: only a bare name is.
        if Path::new(name_or_dir).components().count() == 1 && shipped_dir != models_dir {
            tried.push(shipped_dir.join(name_or_dir));
        }
        if let Some(found) = tried.iter().find(|dir| dir.join(CARD_FILE).is_file()) {
            return Ok(found.clone());
        }
        let cards: Vec<String> = tried
            .iter()
            .map(|dir| dir.join(CARD_FILE).display().to_string())
            .collect();
        Err(ModelError::Config(format!(
            "no model {name_or_dir:?}: none of {} exists (cdwqc model export writes one)",
            cards.join(", ")
        )))
    }

    /// Reads and checks the card (not yet the weights: see [`Self::verified_weights`]).
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join(CARD_FILE);
        let text = read_card_text(&path)?;
        let card: ModelCard = toml::from_str(&text).map_err(|e| ModelError::File {
            path: path.clone(),
            detail: format!("not a model card: {e}"),
        })?;
        card.check(&path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            card,
        })
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(&self.card.weights.file)
    }

    /// The weights file, once its size and SHA-256 match the card.
    pub fn verified_weights(&self) -> Result<PathBuf, ModelError> {
        let path = self.weights_path();
        let expected = &self.card.weights;
        check_file(
            &path,
            expected.bytes,
            &expected.sha256,
            &self.dir.join(CARD_FILE),
            "the weights were",
        )?;
        Ok(path)
    }

    /// Every network's weights file (`[weights]`, then each member's), once each one's
    /// size and SHA-256 match the card.
    pub fn verified_networks(&self) -> Result<Vec<PathBuf>, ModelError> {
        let mut paths = vec![self.verified_weights()?];
        for member in &self.card.members {
            let path = self.dir.join(&member.file);
            check_file(
                &path,
                member.bytes,
                &member.sha256,
                &self.dir.join(CARD_FILE),
                "the ensemble member's weights were",
            )?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// The card's IQM forest, if it has one, once its file's size and SHA-256 match.
    pub fn verified_forest(&self) -> Result<Option<PortableForest>, ModelError> {
        let Some(info) = &self.card.iqm_forest else {
            return Ok(None);
        };
        let path = self.dir.join(&info.file);
        check_file(
            &path,
            info.bytes,
            &info.sha256,
            &self.dir.join(CARD_FILE),
            "the IQM forest was",
        )?;
        let config = ForestConfig {
            trees: info.trees,
            seed: info.seed,
        };
        PortableForest::read(&path, info.features.len(), self.card.classes.len(), config)
            .map(Some)
            .map_err(|e| ModelError::File {
                path: path.clone(),
                detail: e.to_string(),
            })
    }

    /// The network with the card's shape and head, from verified weights.
    pub fn predictor(&self, device: Device) -> Result<Predictor, ModelError> {
        self.load_network(&self.verified_weights()?, device)
    }

    /// Every network of the card (one, or an ensemble's), from verified weights.
    pub fn network(&self, device: Device) -> Result<Ensemble, ModelError> {
        let members = self
            .verified_networks()?
            .iter()
            .map(|weights| self.load_network(weights, device))
            .collect::<Result<Vec<_>, _>>()?;
        Ensemble::new(members)
    }

    fn load_network(&self, weights: &Path, device: Device) -> Result<Predictor, ModelError> {
        // An SSDA model's domain head was trained: its output travels with predictions.
        Ok(Predictor::load(
            weights,
            self.card.preset.clone(),
            self.card.source_classes,
            self.card.target_classes,
            self.card.prediction_head()?,
            device,
        )?
        .with_domain(self.card.method == "ssda"))
    }

    /// The SHA-256 of every network, `[weights]` first: what identifies the model's
    /// predictions.
    pub fn network_sha256s(card: &ModelCard) -> Vec<String> {
        std::iter::once(card.weights.sha256.clone())
            .chain(card.members.iter().map(|m| m.sha256.clone()))
            .collect()
    }

    /// Writes a model folder `<out_dir>/<card.name>/`: the weights copied from
    /// `weights` (and the IQM forest's rows from `forest`, when the card has a forest),
    /// their sizes and SHA-256 filled into the card. An existing folder is refused
    /// unless `replace`. Files are written under temporary names and renamed.
    pub fn write(
        card: ModelCard,
        weights: &Path,
        forest: Option<&Path>,
        out_dir: &Path,
        replace: bool,
    ) -> Result<Self, ModelError> {
        Self::write_ensemble(card, weights, &[], forest, out_dir, replace)
    }

    /// [`Self::write`] with further networks: `members[i]` is copied to
    /// `member-<i + 2>.safetensors`, its size and SHA-256 filled into `card.members[i]`.
    pub fn write_ensemble(
        mut card: ModelCard,
        weights: &Path,
        members: &[PathBuf],
        forest: Option<&Path>,
        out_dir: &Path,
        replace: bool,
    ) -> Result<Self, ModelError> {
        check_name(&card.name)?;
        if members.len() != card.members.len() {
            return Err(ModelError::Config(format!(
                "{} member weights files for {} members in the card",
                members.len(),
                card.members.len()
            )));
        }
        let dir = out_dir.join(&card.name);
        if dir.exists() && !replace {
            return Err(ModelError::Config(format!(
                "{} exists already: give another --name, or --force to replace it",
                dir.display()
            )));
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModelError::Io { path, source }
        };
        let bytes = std::fs::read(weights).map_err(io(weights))?;
        card.weights = WeightsInfo {
            file: WEIGHTS_FILE.to_string(),
            sha256: hex_sha256(&bytes),
            bytes: bytes.len() as u64,
        };
        let mut member_bytes = Vec::with_capacity(members.len());
        for (n, (path, info)) in members.iter().zip(card.members.iter_mut()).enumerate() {
            let content = std::fs::read(path).map_err(io(path))?;
            info.file = member_file(n);
            info.sha256 = hex_sha256(&content);
            info.bytes = content.len() as u64;
            member_bytes.push(content);
        }
        let forest_bytes = match (forest, card.iqm_forest.as_mut()) {
            (Some(path), Some(info)) => {
                let content = std::fs::read(path).map_err(io(path))?;
                info.file = FOREST_FILE.to_string();
                info.sha256 = hex_sha256(&content);
                info.bytes = content.len() as u64;
                Some(content)
            }
            (None, None) => None,
            _ => {
                return Err(ModelError::Config(
                    "an IQM forest needs both its file and its card section".into(),
                ));
            }
        };
        // A refused card leaves no folder behind.
        card.check(&dir.join(CARD_FILE))?;
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let text = card_text(&card, &dir)?;
        if let Some(content) = &forest_bytes {
            replace_file(&dir, FOREST_FILE, content)?;
        } else {
            // A forest left from an earlier export of this name is not this model's.
            let stale = dir.join(FOREST_FILE);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(io(&stale))?;
            }
        }
        // Members left from an earlier export of this name are not this model's.
        for n in members.len().. {
            let stale = dir.join(member_file(n));
            if !stale.exists() {
                break;
            }
            std::fs::remove_file(&stale).map_err(io(&stale))?;
        }
        for (n, content) in member_bytes.iter().enumerate() {
            replace_file(&dir, &member_file(n), content)?;
        }
        for (name, content) in [
            (WEIGHTS_FILE, bytes.as_slice()),
            (CARD_FILE, text.as_bytes()),
        ] {
            replace_file(&dir, name, content)?;
        }
        Ok(Self { dir, card })
    }

    /// Adds an evaluation to the card, replacing one of the same label, and rewrites
    /// `model.toml` (atomically; the weights are untouched).
    pub fn record_evaluation(&mut self, evaluation: CardEvaluation) -> Result<(), ModelError> {
        let mut card = self.card.clone();
        card.evaluations.retain(|e| e.label != evaluation.label);
        card.evaluations.push(evaluation);
        let text = card_text(&card, &self.dir)?;
        replace_file(&self.dir, CARD_FILE, text.as_bytes())?;
        self.card = card;
        Ok(())
    }
}

/// The weights file of the `n`-th further network (the card's first is `weights`).
fn member_file(n: usize) -> String {
    format!("member-{}.safetensors", n + 2)
}

fn card_text(card: &ModelCard, dir: &Path) -> Result<String, ModelError> {
    let text = toml::to_string(card).map_err(|e| ModelError::File {
        path: dir.join(CARD_FILE),
        detail: format!("writing the model card: {e}"),
    })?;
    Ok(format!(
        "# Model card of an exported cdwqc QC model (`cdwqc model export`).\n\
         # `cdwqc infer --model {}` predicts with it in any store; the weights are\n\
         # checked against [weights] sha256 and bytes when loaded.\n{text}",
        card.name
    ))
}

/// The most a model card may hold (the shipped ones are a few kB).
const CARD_MAX_BYTES: u64 = 1 << 20;

/// A model card's text: a regular file, never blocking, of at most [`CARD_MAX_BYTES`].
fn read_card_text(path: &Path) -> Result<String, ModelError> {
    let refused = |detail: String| ModelError::File {
        path: path.to_path_buf(),
        detail,
    };
    let (file, size) = match crate::imaging::nifti::open_regular(path) {
        Ok(opened) => opened,
        // A missing card keeps its plain I/O error (and its kind, which callers test).
        Err(crate::imaging::ImagingError::Io { source, .. }) => {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        Err(e) => return Err(refused(e.reason())),
    };
    if size > CARD_MAX_BYTES {
        return Err(refused(format!(
            "{size} bytes: a model card holds at most {} kB",
            CARD_MAX_BYTES >> 10
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut { file }, &mut text)
        .map_err(|e| refused(format!("cannot read it as text: {e}")))?;
    Ok(text)
}

/// Checks a model file's size and SHA-256 against its card: `what` (the weights, the
/// IQM forest) is never loaded from a truncated or changed file.
fn check_file(
    path: &Path,
    bytes: u64,
    sha256: &str,
    card: &Path,
    what: &str,
) -> Result<(), ModelError> {
    // Regular files only, never blocking, and never read past the size the card says:
    // a FIFO here held `infer`, and the store with it, forever.
    let (file, size) = crate::imaging::nifti::open_regular(path).map_err(|e| ModelError::File {
        path: path.to_path_buf(),
        detail: format!("{}: {what} not loaded", e.reason()),
    })?;
    let mut content = Vec::new();
    if size == bytes {
        std::io::Read::read_to_end(&mut { file }, &mut content).map_err(|source| {
            ModelError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    if size != bytes || content.len() as u64 != bytes {
        let found = if size == bytes {
            content.len() as u64
        } else {
            size
        };
        return Err(ModelError::File {
            path: path.to_path_buf(),
            detail: format!(
                "{found} bytes, but the model card {} says {bytes} (truncated or replaced): {what} not loaded",
                card.display(),
            ),
        });
    }
    let found = hex_sha256(&content);
    if !found.eq_ignore_ascii_case(sha256) {
        return Err(ModelError::File {
            path: path.to_path_buf(),
            detail: format!(
                "SHA-256 {found} does not match {sha256} in the model card {} (the file was changed): {what} not loaded",
                card.display()
            ),
        });
    }
    Ok(())
}

/// Replaces `dir/name` whole ([`crate::replace`]).
fn replace_file(dir: &Path, name: &str, content: &[u8]) -> Result<(), ModelError> {
    crate::replace::replace(
        &dir.join(name),
        content,
        crate::replace::Durability::ContentAndName,
    )
    .map_err(ModelError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard {
            format: CARD_FORMAT.into(),
            name: "m1".into(),
            description: String::new(),
            task: "quality".into(),
            classes: vec!["good".into(), "medium".into(), "bad".into()],
            method: "ssda".into(),
            architecture: ARCHITECTURE.into(),
            head: "target".into(),
            source_classes: 3,
            target_classes: 3,
            source_sequence: "T1w".into(),
            target_sequence: "FLAIR".into(),
            licence: "CC-BY-4.0".into(),
            cdwqc_version: "0".into(),
            weights: WeightsInfo {
                file: WEIGHTS_FILE.into(),
                sha256: String::new(),
                bytes: 0,
            },
            preset: Preset::builtin("tiny").expect("tiny"),
            training: TrainingInfo::default(),
            metrics: CardMetrics {
                test_balanced_accuracy: Some(0.5),
                ..CardMetrics::default()
            },
            evaluations: Vec::new(),
            iqm_forest: None,
            members: Vec::new(),
        }
    }

    #[test]
    fn an_evaluation_is_added_then_replaced_by_one_of_the_same_label() {
        let dir = tempfile::tempdir().expect("tempdir");
        let weights = dir.path().join("w.bin");
        std::fs::write(&weights, b"0123456789").expect("weights");
        let mut model =
            ExportedModel::write(card(), &weights, None, dir.path(), false).expect("write");
        let evaluation = |ba: f64| CardEvaluation {
            label: "external".into(),
            description: "150 images of another simulator".into(),
            run: "model:m1".into(),
            against: "consensus".into(),
            images: 150,
            subjects: 150,
            balanced_accuracy: Some(ba),
            balanced_accuracy_ci95: Some([ba - 0.05, ba + 0.05]),
            roc_auc: Some(0.9),
            confusion: vec![vec![90, 10], vec![5, 45]],
            one_vs_rest: vec![ClassEvaluation {
                class: "bad".into(),
                balanced_accuracy: Some(0.8),
                ci95: None,
            }],
        };
        model.record_evaluation(evaluation(0.8)).expect("first");
        model.record_evaluation(evaluation(0.9)).expect("again");
        let read = ExportedModel::open(&dir.path().join("m1")).expect("open");
        assert_eq!(read.card.evaluations, vec![evaluation(0.9)]);
        read.verified_weights().expect("weights untouched");
        assert!(!dir.path().join("m1/.model.toml.partial").exists());
    }

    #[test]
    fn a_written_card_reads_back_and_checks_its_weights() {
        let dir = tempfile::tempdir().expect("tempdir");
        let weights = dir.path().join("w.bin");
        std::fs::write(&weights, b"0123456789").expect("weights");
        let written =
            ExportedModel::write(card(), &weights, None, dir.path(), false).expect("write");
        let read = ExportedModel::open(&dir.path().join("m1")).expect("open");
        assert_eq!(read, written);
        assert_eq!(read.card.weights.bytes, 10);
        assert_eq!(read.card.preset, Preset::builtin("tiny").expect("tiny"));
        read.verified_weights().expect("weights as written");
        let again = ExportedModel::write(card(), &weights, None, dir.path(), false).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");

        // Same size, other bytes: the hash tells; fewer bytes: the size tells.
        std::fs::write(read.weights_path(), b"0123456780").expect("tamper");
        let err = read.verified_weights().unwrap_err().to_string();
        assert!(
            err.contains("weights.safetensors") && err.contains("SHA-256"),
            "{err}"
        );
        std::fs::write(read.weights_path(), b"01234").expect("truncate");
        let err = read.verified_weights().unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn cards_that_do_not_fit_their_task_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let weights = dir.path().join("w.bin");
        std::fs::write(&weights, b"x").expect("weights");
        let mut wrong = card();
        wrong.classes.swap(0, 2);
        assert!(ExportedModel::write(wrong, &weights, None, dir.path(), false).is_err());
        let mut bad_name = card();
        bad_name.name = "../x".into();
        assert!(ExportedModel::write(bad_name, &weights, None, dir.path(), false).is_err());
        let written =
            ExportedModel::write(card(), &weights, None, dir.path(), false).expect("write");
        let path = written.dir.join(CARD_FILE);
        let text = std::fs::read_to_string(&path).expect("card");
        std::fs::write(
            &path,
            text.replace("task = \"quality\"", "task = \"usable\""),
        )
        .expect("edit");
        let err = ExportedModel::open(&written.dir).unwrap_err().to_string();
        assert!(
            err.contains("model.toml") && err.contains("classes"),
            "{err}"
        );
        assert!(ExportedModel::resolve("m1", dir.path()).is_ok());
        assert!(ExportedModel::resolve("nope", dir.path()).is_err());
    }

    #[test]
    fn a_bare_name_falls_back_to_the_shipped_models_and_a_local_model_wins() {
        let weights_dir = tempfile::tempdir().expect("tempdir");
        let weights = weights_dir.path().join("w.bin");
        std::fs::write(&weights, b"x").expect("weights");
        let (local, shipped) = (
            tempfile::tempdir().expect("local"),
            tempfile::tempdir().expect("shipped"),
        );
        ExportedModel::write(card(), &weights, None, shipped.path(), false).expect("shipped");
        let found = ExportedModel::resolve_in("m1", local.path(), shipped.path()).expect("shipped");
        assert_eq!(found, shipped.path().join("m1"));
        // A path names one folder: it is never looked for among the shipped models.
        let as_path = local.path().join("m1");
        let err =
            ExportedModel::resolve_in(&as_path.display().to_string(), local.path(), shipped.path())
                .unwrap_err()
                .to_string();
        assert!(
            !err.contains(&shipped.path().display().to_string()),
            "{err}"
        );
        ExportedModel::write(card(), &weights, None, local.path(), false).expect("local");
        let found = ExportedModel::resolve_in("m1", local.path(), shipped.path()).expect("local");
        assert_eq!(found, local.path().join("m1"));
        let err = ExportedModel::resolve_in("nope", local.path(), shipped.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&local.path().join("nope/model.toml").display().to_string())
                && err.contains(&shipped.path().join("nope/model.toml").display().to_string()),
            "{err}"
        );
        assert!(
            shipped_models_dir()
                .join("cdwqc-flair-usable")
                .join(CARD_FILE)
                .is_file()
        );
    }

    fn forest_info() -> IqmForestInfo {
        IqmForestInfo {
            file: String::new(),
            sha256: String::new(),
            bytes: 0,
            iqm_version: IQM_VERSION,
            features: iqm_forest::feature_names()
                .into_iter()
                .map(String::from)
                .collect(),
            trees: 5,
            seed: 0,
            weight: 0.5,
            scaling: "test".into(),
            data: "test".into(),
            training_images: 12,
        }
    }

    #[test]
    fn a_card_forest_must_fit_this_build_and_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let weights = dir.path().join("w.bin");
        std::fs::write(&weights, b"x").expect("weights");
        let forest = dir.path().join("f.bin");
        let rows = PortableForest {
            features: vec![vec![0.0; iqm_forest::feature_names().len()]; 12],
            labels: (0..12).map(|i| i % 3).collect(),
            classes: 3,
            config: ForestConfig { trees: 5, seed: 0 },
        };
        rows.write(&forest).expect("forest");
        let with = |info: IqmForestInfo| ModelCard {
            iqm_forest: Some(info),
            ..card()
        };
        // A forest needs its file, and a file needs its section.
        assert!(
            ExportedModel::write(with(forest_info()), &weights, None, dir.path(), false).is_err()
        );
        assert!(ExportedModel::write(card(), &weights, Some(&forest), dir.path(), false).is_err());
        for (change, expected) in [
            (
                IqmForestInfo {
                    weight: 0.0,
                    ..forest_info()
                },
                "weight",
            ),
            (
                IqmForestInfo {
                    weight: 1.5,
                    ..forest_info()
                },
                "weight",
            ),
            (
                IqmForestInfo {
                    iqm_version: IQM_VERSION + 1,
                    ..forest_info()
                },
                "version",
            ),
            (
                IqmForestInfo {
                    features: vec!["cjv".into()],
                    ..forest_info()
                },
                "1 columns",
            ),
        ] {
            let err =
                ExportedModel::write(with(change), &weights, Some(&forest), dir.path(), false)
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(
                !dir.path().join("m1").exists(),
                "a refused card leaves no folder"
            );
        }
        let written = ExportedModel::write(
            with(forest_info()),
            &weights,
            Some(&forest),
            dir.path(),
            false,
        )
        .expect("write");
        let read = ExportedModel::open(&written.dir).expect("open");
        assert_eq!(read.verified_forest().expect("forest"), Some(rows));
        // Exported again without a forest: the old forest file goes too.
        let again = ExportedModel::write(card(), &weights, None, dir.path(), true).expect("write");
        assert!(!again.dir.join(FOREST_FILE).exists());
        assert_eq!(again.verified_forest().expect("no forest"), None);
    }
}
