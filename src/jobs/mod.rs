//! Training and inference jobs as self-contained plans: planned from the store, run by
//! a worker that never opens the store, and recorded back by the store's writer.
//!
//! `cdwqc train` and `cdwqc infer` plan, run and record in one process. The dashboard
//! holds the store for writing, and DuckDB lets no other process open a file held that
//! way, so it plans and records itself and runs the plan in a child process
//! (`cdwqc job PLAN`) that reports [`JobEvent`]s as JSON lines on its standard output.

pub mod iqm_forest;
pub mod plan;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::imaging::preprocess::TensorCache;
use crate::imaging::registration::RegistrationMode;
use crate::metrics::ConfusionMatrix;
use crate::model::ModelError;
use crate::model::card::ExportedModel;
use crate::model::data::Item;
use crate::model::infer::{
    InferOptions, LogitsModel, Prediction, Predictor, ScriptModel, predict_items, predict_stream,
};
use crate::model::preset::Preset;
use crate::model::train::{
    EpochReport, RunOptions, TrainConfig, TrainData, TrainEvent, TrainOutcome, TrainStatus, train,
};
use crate::report::agreement::Task;
use crate::store::runs::PredictionRow;

/// Where training runs keep their weights, checkpoints and plans (relative to the
/// working directory, like every `models/` path).
pub fn runs_dir() -> PathBuf {
    PathBuf::from("models/runs")
}

/// Where `cdwqc model export` writes model folders and `--model NAME` finds them.
pub fn models_dir() -> PathBuf {
    PathBuf::from("models")
}

/// The cache of preprocessed tensors shared by every job.
pub fn cache_dir() -> PathBuf {
    PathBuf::from("models/cache")
}

/// One image of a plan: the file and, for labelled sets, its class index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanItem {
    pub image_id: i64,
    pub path: String,
    pub sha256: Option<String>,
    /// Size and modification time at import: a file that no longer has them is refused
    /// rather than read as the image the store describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<crate::import::analyse::FileStamp>,
    pub label: Option<usize>,
    /// The probability of each class to train towards (`train --soft-targets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_label: Option<Vec<f32>>,
}

impl PlanItem {
    fn item(&self) -> Item {
        Item::from_file(
            self.image_id.to_string(),
            &self.path,
            self.sha256.clone(),
            self.label,
        )
        .with_stamp(self.stamp)
        .with_soft_label(self.soft_label.clone())
    }
}

fn items(plan_items: &[PlanItem]) -> Vec<Item> {
    plan_items.iter().map(PlanItem::item).collect()
}

/// A training run with its data split fixed: everything the worker needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub task: Task,
    pub config: TrainConfig,
    /// Continue from the run's checkpoint.
    pub resume: bool,
    pub source: Vec<PlanItem>,
    pub target_train: Vec<PlanItem>,
    pub target_validation: Vec<PlanItem>,
    pub target_unlabelled: Vec<PlanItem>,
    /// Held-out target images, predicted with the best weights at the end.
    pub target_test: Vec<PlanItem>,
    pub cache_dir: Option<PathBuf>,
}

/// The model an inference job runs.
// One per job, serialized into the plan file: the preset's size costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ModelSource {
    /// A training run's best weights.
    Run { dir: PathBuf },
    /// A TorchScript model on a preset's grid.
    TorchScript { path: PathBuf, preset: Preset },
    /// An exported model folder (`model.toml` + weights, checked on load).
    Exported { dir: PathBuf },
}

/// Predicting a set of images with one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferPlan {
    /// The run the predictions are stored under.
    pub run_id: String,
    pub model: ModelSource,
    pub task: Task,
    pub sequence: String,
    pub device: String,
    pub items: Vec<PlanItem>,
    pub cache_dir: Option<PathBuf>,
    /// Re-estimate the network's BatchNorm statistics on up to this many of the images
    /// before predicting (AdaBN; unlabelled images only).
    #[serde(default)]
    pub adapt_batchnorm: Option<usize>,
    /// Threads decoding and preprocessing images (default: half the machine's).
    #[serde(default)]
    pub loaders: Option<usize>,
    /// libtorch's threads when every planned image's tensor is already in the cache: the
    /// loaders then only read files, so the network may take every core (absent: the
    /// threads stay as set). Left out of the JSON when absent, so that a work list
    /// written before the field existed still hashes to its recorded plan hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_threads: Option<usize>,
    /// An exported model's sharded job: the run row its predictions go under, written
    /// by the merge, with the card whose IQM forest the merge mixes in (absent for a
    /// training run's job and for one process, which records its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_run: Option<crate::store::runs::ModelRun>,
}

/// What a worker runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum JobPlan {
    // Boxed: the plans are large and of unequal size.
    Train(Box<TrainPlan>),
    Infer(Box<InferPlan>),
}

impl JobPlan {
    pub fn run_id(&self) -> &str {
        match self {
            JobPlan::Train(p) => &p.run_id,
            JobPlan::Infer(p) => &p.run_id,
        }
    }

    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let text = crate::regular::read_text(path, 1 << 30).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let plan: Self = serde_json::from_str(&text).map_err(|e| ModelError::File {
            path: path.to_path_buf(),
            detail: format!("not a job plan: {e}"),
        })?;
        // As `--threads` on the command line: 100,000 threads overflowed a stack.
        if let JobPlan::Infer(p) = &plan {
            for (name, value) in [("loaders", p.loaders), ("warm_threads", p.warm_threads)] {
                if let Some(n) = value.filter(|n| !(1..=1024).contains(n)) {
                    return Err(ModelError::File {
                        path: path.to_path_buf(),
                        detail: format!("{name} {n} is not in 1..=1024"),
                    });
                }
            }
        }
        Ok(plan)
    }

    /// Writes the plan through a temporary file, so a reader never sees half of it.
    pub fn write(&self, path: &Path) -> Result<(), ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string(self).map_err(|e| ModelError::File {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        crate::replace::replace(
            path,
            text.as_bytes(),
            crate::replace::Durability::ContentAndName,
        )
        .map_err(ModelError::from)
    }
}

/// The end of a training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainResult {
    pub outcome: TrainOutcome,
    /// The best weights' predictions of the held-out test images (none if cancelled).
    pub test_predictions: Vec<PredictionRow>,
    pub test_images: usize,
    pub test_balanced_accuracy: Option<f64>,
    /// The best weights' predictions of the validation images: the data the
    /// temperature and operating points are fitted on.
    #[serde(default)]
    pub validation_predictions: Vec<PredictionRow>,
    /// Temperature scaling fitted on the validation images.
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

/// Temperature scaling of a run, fitted on its validation images at the end of
/// training (`metrics::fit_temperature`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub temperature: f64,
    pub validation_images: usize,
    pub nll_before: f64,
    pub nll_after: f64,
    /// The optimum is at a bound of the search: the validation images are separable.
    pub at_bound: bool,
}

/// The end of an inference job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResult {
    pub rows: Vec<PredictionRow>,
    pub failed: usize,
    /// Images stored as a reject because they do not register (among `rows`, not
    /// `failed`).
    #[serde(default)]
    pub not_registered: usize,
    pub seconds: f64,
    /// Stopped before every image was predicted; `rows` holds those that were.
    pub cancelled: bool,
    /// Images the BatchNorm statistics were re-estimated on, when asked.
    #[serde(default)]
    pub adapted_images: Option<usize>,
    /// The libtorch threads the network ran on because every tensor was cached
    /// ([`InferPlan::warm_threads`]).
    #[serde(default)]
    pub warm_threads: Option<usize>,
}

/// Progress and outcome of a job, one JSON object per line on the worker's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
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
    Epoch {
        report: EpochReport,
    },
    /// An image could not be loaded; it is left out.
    ItemFailed {
        id: String,
        error: String,
    },
    /// An image does not register to the model's template; a usability model stores it
    /// as a reject with this reason.
    ItemNotRegistered {
        id: String,
        reason: String,
    },
    /// Inference progress over images.
    Progress {
        done: usize,
        total: usize,
    },
    Trained {
        result: Box<TrainResult>,
    },
    Predicted {
        result: Box<InferResult>,
    },
    Failed {
        error: String,
    },
}

impl JobEvent {
    /// Whether the job ends with this event.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobEvent::Trained { .. } | JobEvent::Predicted { .. } | JobEvent::Failed { .. }
        )
    }
}

fn cache(dir: &Option<PathBuf>) -> Option<TensorCache> {
    dir.clone().map(TensorCache::new)
}

/// Trains as planned; epochs and batches go to `emit`. A cancelled run returns with
/// status `Cancelled` after its checkpoint.
pub fn run_training(
    plan: &TrainPlan,
    cancel: &Arc<AtomicBool>,
    emit: &mut dyn FnMut(JobEvent),
) -> Result<TrainResult, ModelError> {
    let data = TrainData {
        source: items(&plan.source),
        target_train: items(&plan.target_train),
        target_val: items(&plan.target_validation),
        target_unlabelled: items(&plan.target_unlabelled),
    };
    let options = RunOptions {
        run_dir: plan.run_dir.clone(),
        resume: plan.resume,
        cache: cache(&plan.cache_dir),
    };
    let outcome = train(
        &plan.config,
        &data,
        &options,
        cancel,
        &mut |event| match event {
            TrainEvent::Started {
                first_epoch,
                total_epochs,
                device,
            } => emit(JobEvent::Started {
                first_epoch,
                total_epochs,
                device,
            }),
            TrainEvent::Batch {
                epoch,
                batch,
                batches,
            } => emit(JobEvent::Batch {
                epoch,
                batch,
                batches,
            }),
            TrainEvent::Epoch(report) => emit(JobEvent::Epoch { report }),
            TrainEvent::ItemFailed { id, error } => emit(JobEvent::ItemFailed { id, error }),
            TrainEvent::Checkpoint { .. } => {}
        },
    )?;
    if outcome.status == TrainStatus::Cancelled {
        return Ok(TrainResult {
            outcome,
            test_predictions: Vec::new(),
            test_images: 0,
            test_balanced_accuracy: None,
            validation_predictions: Vec::new(),
            calibration: None,
        });
    }
    // Final metrics: the best weights on the held-out target test subjects.
    let device = crate::model::parse_device(&plan.config.device)?;
    let predictor = Predictor::from_run_dir(&plan.run_dir, device)?;
    let n_test = plan.target_test.len();
    let mut both = items(&plan.target_test);
    both.extend(items(&plan.target_validation));
    let mut predictions = predict_items(
        &predictor,
        &both,
        &InferOptions {
            cache: cache(&plan.cache_dir),
            ..InferOptions::default()
        },
        &mut |_, _| {},
    );
    let validation = predictions.split_off(n_test);
    let names = plan.task.categories();
    let (mut val_probabilities, mut val_truth) = (Vec::new(), Vec::new());
    let mut validation_predictions = Vec::with_capacity(validation.len());
    for (item, p) in plan.target_validation.iter().zip(&validation) {
        if let (Some(y), Ok(p)) = (item.label, p) {
            val_probabilities.push(p.probs.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>());
            val_truth.push(y);
        }
        validation_predictions.push(Prediction::row(p, item.image_id, plan.task.name(), names));
    }
    let calibration = crate::metrics::fit_temperature(&val_probabilities, &val_truth)
        .ok()
        .map(|t| Calibration {
            temperature: t.temperature,
            validation_images: val_truth.len(),
            nll_before: t.nll_before,
            nll_after: t.nll_after,
            at_bound: t.at_bound,
        });
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    let mut rows = Vec::with_capacity(n_test);
    for (item, p) in plan.target_test.iter().zip(&predictions) {
        let row = Prediction::row(p, item.image_id, plan.task.name(), names);
        // Scored as the stored row is, so the run's figure is `report model`'s: a
        // reject for want of a registration counts as one.
        let label = row
            .label
            .as_deref()
            .and_then(|l| names.iter().position(|&n| n == l));
        if let (Some(y), Some(label)) = (item.label, label) {
            truth.push(y);
            predicted.push(label);
        }
        rows.push(row);
    }
    let test_balanced_accuracy = ConfusionMatrix::from_indices(&truth, &predicted, names.len())
        .ok()
        .and_then(|m| m.balanced_accuracy().ok());
    Ok(TrainResult {
        outcome,
        test_predictions: rows,
        test_images: truth.len(),
        test_balanced_accuracy,
        validation_predictions,
        calibration,
    })
}

/// Whether the cache holds the tensor of every item for `preset` (a file of the name the
/// loader would read; one `stat` per image).
fn every_tensor_cached(items: &[PlanItem], preset: &Preset, cache: &Option<TensorCache>) -> bool {
    let Some(cache) = cache else {
        return false;
    };
    let registers = preset.preprocess.registration != RegistrationMode::None;
    items.iter().all(|item| {
        item.sha256.as_deref().is_some_and(|sha| {
            let spec = &preset.preprocess;
            cache.path_for(sha, &preset.name, spec).is_file()
                // A recorded failed registration is read, not registered again.
                || (registers && cache.failure_path_for(sha, &preset.name, spec).is_file())
        })
    })
}

/// Predicts the planned images; `cancel` stops between batches.
pub fn run_inference(
    plan: &InferPlan,
    cancel: &Arc<AtomicBool>,
    emit: &mut dyn FnMut(JobEvent),
) -> Result<InferResult, ModelError> {
    let device = crate::model::parse_device(&plan.device)?;
    let started = std::time::Instant::now();
    let mut adapted_images = None;
    let adaptation = |preset: &crate::model::preset::Preset| {
        plan.adapt_batchnorm.map(|limit| {
            let voxels = preset.preprocess.voxel_count();
            items(&adaptation_sample(&plan.items, limit, voxels))
        })
    };
    let mut adapt = |mut predictor: Predictor| -> Box<dyn LogitsModel> {
        if let Some(sample) = adaptation(predictor.preset()) {
            adapted_images = Some(predictor.adapt_batchnorm(&sample, cache(&plan.cache_dir)));
        }
        Box::new(predictor)
    };
    let model: Box<dyn LogitsModel> = match &plan.model {
        ModelSource::Run { dir } => adapt(Predictor::from_run_dir(dir, device)?),
        ModelSource::TorchScript { path, preset } => {
            if plan.adapt_batchnorm.is_some() {
                return Err(ModelError::Config(
                    "BatchNorm adaptation needs a cdwqc network, not a TorchScript model".into(),
                ));
            }
            Box::new(ScriptModel::load(path, preset.clone(), device)?)
        }
        ModelSource::Exported { dir } => {
            let mut ensemble = ExportedModel::open(dir)?.network(device)?;
            if let Some(sample) = adaptation(ensemble.preset()) {
                adapted_images = Some(ensemble.adapt_batchnorm(&sample, cache(&plan.cache_dir)));
            }
            Box::new(ensemble)
        }
    };
    let mut options = InferOptions {
        cache: cache(&plan.cache_dir),
        ..InferOptions::default()
    };
    if let Some(loaders) = plan.loaders {
        options.loaders = loaders.max(1);
    }
    let warm_threads = plan
        .warm_threads
        .filter(|_| every_tensor_cached(&plan.items, model.preset(), &options.cache));
    if let Some(threads) = warm_threads {
        tch::set_num_threads(threads.max(1) as i32);
    }
    let names = plan.task.categories();
    let total = plan.items.len();
    let mut rows = Vec::with_capacity(total);
    let (mut failed, mut not_registered) = (0, 0);
    let mut cancelled = cancel.load(Ordering::SeqCst);
    if !cancelled {
        // One pool over the whole plan, so loading never pauses; cancellation is seen
        // between batches.
        predict_stream(
            model.as_ref(),
            Arc::new(items(&plan.items)),
            &options,
            &mut |batch| {
                for (index, result) in batch {
                    let row = Prediction::row(
                        &result,
                        plan.items[index].image_id,
                        plan.task.name(),
                        names,
                    );
                    if let Err(e) = &result {
                        if row.reason.is_some() {
                            not_registered += 1;
                            emit(JobEvent::ItemNotRegistered {
                                id: e.id.clone(),
                                reason: e.error.clone(),
                            });
                        } else {
                            failed += 1;
                            emit(JobEvent::ItemFailed {
                                id: e.id.clone(),
                                error: e.error.clone(),
                            });
                        }
                    }
                    rows.push(row);
                }
                emit(JobEvent::Progress {
                    done: rows.len(),
                    total,
                });
                if cancel.load(Ordering::SeqCst) && rows.len() < total {
                    cancelled = true;
                }
                !cancelled
            },
        );
    }
    Ok(InferResult {
        rows,
        failed,
        not_registered,
        seconds: started.elapsed().as_secs_f64(),
        cancelled,
        adapted_images,
        warm_threads,
    })
}

/// Memory the images held for BatchNorm adaptation may take (all are kept for the
/// layer-by-layer passes): 1,337 images of the 3 mm grid, 42 of the paper's 1 mm grid.
const ADAPT_MEMORY_BYTES: usize = 1 << 30;

/// Up to `limit` of the items (fewer where `voxels`-sized images would pass
/// [`ADAPT_MEMORY_BYTES`]), evenly spread over the list (which follows the store's
/// order), so the same plan always adapts on the same images.
fn adaptation_sample(items: &[PlanItem], limit: usize, voxels: usize) -> Vec<PlanItem> {
    let fit = ADAPT_MEMORY_BYTES / (voxels.max(1) * std::mem::size_of::<f32>());
    let limit = limit.min(fit.max(1));
    if items.len() <= limit {
        return items.to_vec();
    }
    (0..limit)
        .map(|k| items[k * items.len() / limit].clone())
        .collect()
}

/// Runs a plan to its end: every event, the final one included, goes to `emit`.
pub fn run(plan: &JobPlan, cancel: &Arc<AtomicBool>, emit: &mut dyn FnMut(JobEvent)) {
    let last = match plan {
        JobPlan::Train(p) => match run_training(p, cancel, emit) {
            Ok(result) => JobEvent::Trained {
                result: Box::new(result),
            },
            Err(e) => JobEvent::Failed {
                error: e.to_string(),
            },
        },
        JobPlan::Infer(p) => match run_inference(p, cancel, emit) {
            Ok(result) => JobEvent::Predicted {
                result: Box::new(result),
            },
            Err(e) => JobEvent::Failed {
                error: e.to_string(),
            },
        },
    };
    emit(last);
}

/// Writes events as JSON lines. The first failed write (the dashboard is gone) sets
/// `cancel`, so a training run checkpoints and stops instead of running unwatched.
pub struct EventWriter<W: Write> {
    out: W,
    cancel: Arc<AtomicBool>,
    /// Batch events are many; they are written at most this often.
    last_batch: Option<std::time::Instant>,
}

/// The least time between two batch events on the wire.
const BATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl<W: Write> EventWriter<W> {
    pub fn new(out: W, cancel: Arc<AtomicBool>) -> Self {
        Self {
            out,
            cancel,
            last_batch: None,
        }
    }

    pub fn emit(&mut self, event: &JobEvent) {
        if let JobEvent::Batch { batch, batches, .. } = event {
            let now = std::time::Instant::now();
            let recent = self.last_batch.is_some_and(|t| now - t < BATCH_EVERY);
            if recent && batch < batches {
                return;
            }
            self.last_batch = Some(now);
        }
        let written = serde_json::to_writer(&mut self.out, event)
            .map_err(std::io::Error::other)
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush());
        if written.is_err() {
            self.cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// Reads one line of a worker's output; `None` for a line that is not an event (a
/// library's stray print), which the caller shows as log text.
pub fn parse_event(line: &str) -> Option<JobEvent> {
    serde_json::from_str(line.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::train::Phase;

    #[test]
    fn events_round_trip_as_json_lines_with_nan_as_null() {
        let report = EpochReport {
            epoch: 2,
            phase: Phase::Main,
            train_loss: 0.5,
            source_loss: f64::NAN,
            target_loss: 0.25,
            domain_loss: 0.75,
            val_loss: 0.5,
            val_balanced_accuracy: 0.625,
            alpha: 0.1,
            seconds: 1.5,
            improved: true,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let mut buffer = Vec::new();
        {
            let mut writer = EventWriter::new(&mut buffer, Arc::clone(&cancel));
            writer.emit(&JobEvent::Epoch { report });
            writer.emit(&JobEvent::Failed {
                error: "boom".into(),
            });
        }
        let text = String::from_utf8(buffer).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(r#""event":"epoch""#), "{}", lines[0]);
        assert!(lines[0].contains(r#""source_loss":null"#), "{}", lines[0]);
        match parse_event(lines[0]) {
            Some(JobEvent::Epoch { report }) => {
                assert!(report.source_loss.is_nan());
                assert_eq!(report.val_balanced_accuracy, 0.625);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_event(lines[1]).is_some_and(|e| e.is_final()));
        assert_eq!(parse_event("libtorch says hello"), None);
        assert!(!cancel.load(Ordering::SeqCst));
    }

    #[test]
    fn a_closed_pipe_cancels_the_job() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let mut writer = EventWriter::new(Closed, Arc::clone(&cancel));
        writer.emit(&JobEvent::Progress { done: 1, total: 2 });
        assert!(cancel.load(Ordering::SeqCst));
    }

    #[test]
    fn batch_events_are_thinned_but_the_last_batch_always_goes() {
        let cancel = Arc::new(AtomicBool::new(false));
        let mut buffer = Vec::new();
        {
            let mut writer = EventWriter::new(&mut buffer, cancel);
            for batch in 1..=50 {
                writer.emit(&JobEvent::Batch {
                    epoch: 1,
                    batch,
                    batches: 50,
                });
            }
        }
        let text = String::from_utf8(buffer).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() < 50, "{} lines", lines.len());
        assert!(lines.last().unwrap().contains(r#""batch":50"#));
    }

    #[test]
    fn a_plan_written_before_the_newer_fields_serialises_back_to_the_same_bytes() {
        // A work list's plan hash is recomputed from the plan read back: fields added
        // since must not appear in the JSON of a plan that does not use them.
        let earlier = r#"{"run_id":"r","model":{"source":"run","dir":"models/runs/r"},"task":"usable","sequence":"FLAIR","device":"cpu","items":[{"image_id":7,"path":"/d/a.nii.gz","sha256":"ab","label":null}],"cache_dir":"/c","adapt_batchnorm":null,"loaders":null}"#;
        let plan: InferPlan = serde_json::from_str(earlier).unwrap();
        assert_eq!(serde_json::to_string(&plan).unwrap(), earlier);
    }

    #[test]
    fn plans_survive_a_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let plan = JobPlan::Infer(Box::new(InferPlan {
            run_id: "r".into(),
            model: ModelSource::Run {
                dir: PathBuf::from("models/runs/r"),
            },
            task: Task::Quality,
            sequence: "FLAIR".into(),
            device: "cpu".into(),
            items: vec![PlanItem {
                image_id: 7,
                path: "/data/sub-1_FLAIR.nii.gz".into(),
                sha256: None,
                stamp: Some(crate::import::analyse::FileStamp {
                    size: 9,
                    mtime_ns: -1,
                }),
                label: Some(2),
                soft_label: None,
            }],
            cache_dir: None,
            adapt_batchnorm: Some(64),
            loaders: Some(3),
            warm_threads: Some(2),
            model_run: None,
        }));
        let path = dir.path().join("job.json");
        plan.write(&path).unwrap();
        assert_eq!(JobPlan::read(&path).unwrap(), plan);
        std::fs::write(&path, "{").unwrap();
        let err = JobPlan::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("job.json") && err.contains("not a job plan"),
            "{err}"
        );
    }
}
