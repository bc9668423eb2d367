//! The IQM-only baseline as a run: read a training run's split and the stored image
//! quality metrics, grow the forest on the split's labelled training images, predict
//! its validation and test images, and record a run of method `iqm-forest` on the same
//! split, so that `cdwqc report compare` scores it beside the CNN on the same images.

use std::collections::HashMap;

use serde_json::json;

use super::plan::PlanError;
use crate::imaging::iqm::IQM_VERSION;
use crate::model::card::IqmForestInfo;
use crate::model::iqm_forest::{self, ForestConfig, METHOD, PortableForest};
use crate::report::agreement::Task;
use crate::store::Store;
use crate::store::runs::{NewRun, PredictionRow};

/// What a user asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct IqmForestRequest {
    /// The training run whose split (and task) the baseline uses.
    pub split_of: String,
    /// Run name (default: `<split_of>-iqm-forest`).
    pub run: Option<String>,
    pub forest: ForestConfig,
}

/// What the run did, for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct IqmForestSummary {
    pub run_id: String,
    pub task: Task,
    pub trained_on: usize,
    /// Validation and test images predicted.
    pub predicted: usize,
    /// Images of the split left out of training or given an error for want of metrics.
    pub without_metrics: usize,
    pub test_images: usize,
    /// Share of test images whose predicted class is their split label.
    pub test_accuracy: Option<f64>,
}

/// An image's scanner group and its metrics in [`crate::imaging::iqm::COLUMNS`] order.
type ScannerMetrics = (String, Vec<Option<f64>>);

/// The current metrics of every ok image that has them, by image id.
fn metrics_by_image(store: &Store) -> Result<HashMap<i64, ScannerMetrics>, PlanError> {
    Ok(store
        .iqm_features()?
        .into_iter()
        .map(|f| (f.image_id, (f.scanner, f.values)))
        .collect())
}

/// Metrics scaled within their scanner groups among these images, groups under
/// [`iqm_forest::MIN_GROUP_IMAGES`] pooled: how the portable forest's rows are scaled,
/// for training and for predicting alike.
fn scaled_in_pooled_groups<'a>(images: impl Iterator<Item = &'a ScannerMetrics>) -> Vec<Vec<f64>> {
    let images: Vec<&ScannerMetrics> = images.collect();
    let groups = iqm_forest::pooled_groups(&images.iter().map(|m| m.0.clone()).collect::<Vec<_>>());
    let rows: Vec<(&str, &[Option<f64>])> = groups
        .iter()
        .zip(&images)
        .map(|(g, m)| (g.as_str(), m.1.as_slice()))
        .collect();
    iqm_forest::scaled_features(&rows)
}

/// Why an image has no prediction.
const NO_METRICS: &str = "no image quality metrics for this image (run `cdwqc iqm`)";

/// Trains the baseline on `request.split_of`'s split and records it as a completed run.
pub fn train_iqm_forest(
    store: &mut Store,
    request: &IqmForestRequest,
) -> Result<IqmForestSummary, PlanError> {
    let invalid = PlanError::Invalid;
    let of = &request.split_of;
    let row = store.run_row(of)?.ok_or_else(|| {
        invalid(format!(
            "no run {of} in the store (cdwqc sql \"select run_id, method from runs\")"
        ))
    })?;
    let split_id = row
        .split_id
        .clone()
        .ok_or_else(|| invalid(format!("run {of} has no data split: give a training run")))?;
    let task = row
        .task
        .as_deref()
        .and_then(Task::from_name)
        .ok_or_else(|| invalid(format!("run {of} has no known task")))?;
    let run_id = request
        .run
        .clone()
        .unwrap_or_else(|| format!("{of}-{METHOD}"));
    if store.run_row(&run_id)?.is_some() {
        return Err(invalid(format!(
            "run {run_id} exists already: give another name with --run"
        )));
    }
    let classes = task.categories();
    let split = store.split_rows(&split_id)?;
    let metrics = metrics_by_image(store)?;
    // Scaling groups: the split's domain (its sequence) and the scanner.
    let measured: Vec<(usize, String)> = split
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let (scanner, _) = metrics.get(&s.image_id)?;
            Some((i, format!("{} {scanner}", s.domain)))
        })
        .collect();
    let rows: Vec<(&str, &[Option<f64>])> = measured
        .iter()
        .map(|(i, group)| (group.as_str(), metrics[&split[*i].image_id].1.as_slice()))
        .collect();
    let scaled = iqm_forest::scaled_features(&rows);
    let features: HashMap<usize, &Vec<f64>> = measured
        .iter()
        .zip(&scaled)
        .map(|((i, _), x)| (*i, x))
        .collect();
    let class_of = |label: &Option<String>| {
        label
            .as_deref()
            .and_then(|l| classes.iter().position(|c| *c == l))
    };
    let (mut train, mut labels) = (Vec::new(), Vec::new());
    let mut queries: Vec<usize> = Vec::new();
    let mut without_metrics = 0usize;
    for (i, s) in split.iter().enumerate() {
        let wanted = match s.set.as_str() {
            "train" => class_of(&s.label).is_some(),
            "validation" | "test" => s.domain == "target",
            _ => false,
        };
        if !wanted {
            continue;
        }
        match (features.get(&i), s.set.as_str()) {
            (None, _) => without_metrics += 1,
            (Some(x), "train") => {
                train.push((*x).clone());
                labels.push(class_of(&s.label).unwrap_or(0));
            }
            (Some(_), _) => queries.push(i),
        }
    }
    let query_rows: Vec<Vec<f64>> = queries.iter().map(|i| features[i].clone()).collect();
    let probabilities =
        iqm_forest::fit_predict(&train, &labels, &query_rows, classes.len(), &request.forest)
            .map_err(|e| invalid(e.to_string()))?;
    let mut predictions: Vec<PredictionRow> = queries
        .iter()
        .zip(&probabilities)
        .map(|(i, p)| {
            let best = (0..p.len()).fold(0, |b, c| if p[c] > p[b] { c } else { b });
            PredictionRow {
                image_id: split[*i].image_id,
                task: task.name().to_string(),
                label: Some(classes[best].to_string()),
                probabilities: Some(p.clone()),
                error: None,
                domain_target: None,
                reason: None,
            }
        })
        .collect();
    // Held-out images without metrics count as failed, as an unreadable image does.
    predictions.extend(
        split
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                s.domain == "target"
                    && matches!(s.set.as_str(), "validation" | "test")
                    && !features.contains_key(i)
            })
            .map(|(_, s)| PredictionRow {
                image_id: s.image_id,
                task: task.name().to_string(),
                label: None,
                probabilities: None,
                error: Some(NO_METRICS.to_string()),
                domain_target: None,
                reason: None,
            }),
    );
    let test: Vec<(usize, &PredictionRow)> = queries
        .iter()
        .zip(&predictions)
        .filter(|(i, _)| split[**i].set == "test")
        .map(|(i, p)| (*i, p))
        .collect();
    let correct = test
        .iter()
        .filter(|(i, p)| p.label.is_some() && p.label == split[*i].label)
        .count();
    let test_accuracy = (!test.is_empty()).then(|| correct as f64 / test.len() as f64);
    let config = json!({
        "method": METHOD,
        "split_of": of,
        "trees": request.forest.trees,
        "seed": request.forest.seed,
        "features": iqm_forest::feature_names(),
        "scaling": "robust (median, IQR) within split domain and scanner",
    });
    store.begin_run(&NewRun {
        run_id: run_id.clone(),
        kind: "train".into(),
        task: Some(task.name().into()),
        method: Some(METHOD.into()),
        preset: None,
        config: config.to_string(),
        git_commit: None,
        split_id: Some(split_id),
        label_snapshot: row.label_snapshot.clone(),
        weights_path: None,
        source_sequence: row.source_sequence.clone(),
        target_sequence: row.target_sequence.clone(),
    })?;
    store.save_predictions(&run_id, &predictions)?;
    let summary = IqmForestSummary {
        run_id: run_id.clone(),
        task,
        trained_on: train.len(),
        predicted: queries.len(),
        without_metrics,
        test_images: test.len(),
        test_accuracy,
    };
    let metrics = json!({
        "status": "completed",
        "trained_on": summary.trained_on,
        "predicted": summary.predicted,
        "without_metrics": summary.without_metrics,
        "test_images": summary.test_images,
        "test_accuracy": summary.test_accuracy,
    });
    store.set_run_status(&run_id, "completed", Some(&metrics.to_string()), None)?;
    Ok(summary)
}

/// The IQM forest an exported model carries, grown on the same images as its network:
/// the run's labelled target images of training and validation that have metrics,
/// scaled within their scanner groups among those images (small groups pooled). The
/// test images stay out, so the card's test figures stay held out for both.
pub fn companion_forest(
    store: &Store,
    run_id: &str,
    forest: ForestConfig,
    weight: f64,
) -> Result<(PortableForest, IqmForestInfo), PlanError> {
    let invalid = PlanError::Invalid;
    let row = store
        .run_row(run_id)?
        .ok_or_else(|| invalid(format!("no run {run_id} in the store")))?;
    let split_id = row.split_id.clone().unwrap_or_else(|| run_id.to_string());
    let task = row
        .task
        .as_deref()
        .and_then(Task::from_name)
        .ok_or_else(|| invalid(format!("run {run_id} has no known task")))?;
    let classes = task.categories();
    let metrics = metrics_by_image(store)?;
    let mut chosen: Vec<(&ScannerMetrics, usize)> = Vec::new();
    let mut without_metrics = 0usize;
    for s in store.split_rows(&split_id)? {
        let class = s
            .label
            .as_deref()
            .and_then(|l| classes.iter().position(|c| *c == l));
        let wanted = s.domain == "target" && matches!(s.set.as_str(), "train" | "validation");
        match (wanted, class, metrics.get(&s.image_id)) {
            (true, Some(class), Some(m)) => chosen.push((m, class)),
            (true, Some(_), None) => without_metrics += 1,
            _ => {}
        }
    }
    if chosen.len() < iqm_forest::MIN_GROUP_IMAGES {
        return Err(invalid(format!(
            "run {run_id}: {} labelled training and validation images have image quality metrics ({without_metrics} have none: run `cdwqc iqm`); an IQM forest needs at least {}",
            chosen.len(),
            iqm_forest::MIN_GROUP_IMAGES
        )));
    }
    let portable = PortableForest {
        features: scaled_in_pooled_groups(chosen.iter().map(|(m, _)| *m)),
        labels: chosen.iter().map(|(_, c)| *c).collect(),
        classes: classes.len(),
        config: forest,
    };
    let counts: Vec<String> = classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let n = portable.labels.iter().filter(|&&l| l == c).count();
            format!("{n} {name}")
        })
        .collect();
    let info = IqmForestInfo {
        file: String::new(),
        sha256: String::new(),
        bytes: 0,
        iqm_version: IQM_VERSION,
        features: iqm_forest::feature_names()
            .into_iter()
            .map(String::from)
            .collect(),
        trees: forest.trees,
        seed: forest.seed,
        weight,
        scaling: SCALING.to_string(),
        data: format!(
            "the labelled target training and validation images of run {run_id} that have metrics ({}; {without_metrics} without metrics left out)",
            counts.join(", ")
        ),
        training_images: portable.labels.len() as u64,
    };
    Ok((portable, info))
}

/// How the forest's metrics are scaled, as the card states it.
const SCALING: &str = "(x - median) / IQR within each scanner group (vendor and field strength) of the images scaled together; groups under 10 images pooled";

/// What mixing the forest into a model's predictions did.
#[derive(Debug, Clone, PartialEq)]
pub struct ForestMix {
    /// Predictions whose probabilities are now the mix.
    pub mixed: usize,
    /// Predictions left as the network's, for want of metrics.
    pub without_metrics: usize,
    /// Why nothing was mixed, when nothing was.
    pub skipped: Option<String>,
}

/// A prediction the network made: one with probabilities and no reason (an image that
/// does not register is a reject by rule, and stays out of the mix and of the scaling).
fn by_network(row: &PredictionRow) -> bool {
    row.probabilities.is_some() && row.reason.is_none()
}

/// Mixes the forest's probabilities into each prediction that has metrics, and labels
/// it with the mix's most probable class. The metrics are scaled within scanner groups
/// among the predicted images themselves (labels unused), the way the forest's
/// training rows were: like AdaBN, a look at this warehouse's statistics, no label.
pub fn mix_forest(
    store: &Store,
    forest: &PortableForest,
    weight: f64,
    classes: &[&str],
    rows: &mut [PredictionRow],
) -> Result<ForestMix, PlanError> {
    let metrics = metrics_by_image(store)?;
    let measured: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| by_network(r) && metrics.contains_key(&r.image_id))
        .map(|(i, _)| i)
        .collect();
    let without_metrics = rows
        .iter()
        .filter(|r| by_network(r) && !metrics.contains_key(&r.image_id))
        .count();
    if measured.len() < iqm_forest::MIN_GROUP_IMAGES {
        return Ok(ForestMix {
            mixed: 0,
            without_metrics,
            skipped: Some(format!(
                "{} predicted images have image quality metrics; scaling them needs at least {} (run `cdwqc iqm`, or predict more images at once)",
                measured.len(),
                iqm_forest::MIN_GROUP_IMAGES
            )),
        });
    }
    let scaled = scaled_in_pooled_groups(measured.iter().map(|&i| &metrics[&rows[i].image_id]));
    let probabilities = forest
        .predict(&scaled)
        .map_err(|e| PlanError::Invalid(e.to_string()))?;
    for (&i, p_forest) in measured.iter().zip(&probabilities) {
        let row = &mut rows[i];
        let Some(p_network) = &row.probabilities else {
            continue;
        };
        let mixed = iqm_forest::blend(p_network, p_forest, weight);
        let best = (0..mixed.len()).fold(0, |b, c| if mixed[c] > mixed[b] { c } else { b });
        row.label = classes.get(best).map(|c| c.to_string());
        row.probabilities = Some(mixed);
    }
    Ok(ForestMix {
        mixed: measured.len(),
        without_metrics,
        skipped: None,
    })
}
