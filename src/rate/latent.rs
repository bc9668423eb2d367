//! Latent truth of every rated image: per task, Dawid-Skene over the raters' task
//! labels in force (the same labels the agreement report reads), as posterior
//! probabilities and hard labels for export and training.
//!
//! Each task is fitted on its own, over every rater and every image that has a label
//! for it. As with the majority consensus, the quality and gado labels of an image
//! apply only when its usable label is "usable": the raters' quality and gado labels
//! exist only for images they called usable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::metrics::{DawidSkene, DawidSkeneConfig, MetricError, Ratings, dawid_skene};
use crate::report::ReportError;
use crate::report::agreement::{AgreementOptions, Task, load_labels};
use crate::store::Store;

/// How the ratings of several raters become one label per image.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ConsensusMethod {
    /// Majority vote, ties broken by adjudicators (`rate::consensus`).
    #[default]
    Majority,
    /// Dawid-Skene latent truth, the most probable class.
    DawidSkene,
    /// Dawid-Skene with an ordinal prior on the quality grade's confusion matrices
    /// (raters confuse neighbouring grades rather than far ones): better estimates for
    /// raters with few ratings, the same as `dawid-skene` for raters with many.
    DawidSkeneOrdinal,
}

/// The ordinal prior's weight: pseudo-ratings per true grade and rater. Measured on
/// simulated raters who confuse neighbouring grades (unit test in metrics::dawid_skene):
/// with about 13 ratings per rater, the confusion matrices' error halves and more grades
/// are right; with hundreds, nothing changes.
pub const ORDINAL_PRIOR_WEIGHT: f64 = 2.0;

impl ConsensusMethod {
    pub fn name(self) -> &'static str {
        match self {
            ConsensusMethod::Majority => "majority",
            ConsensusMethod::DawidSkene => "dawid-skene",
            ConsensusMethod::DawidSkeneOrdinal => "dawid-skene-ordinal",
        }
    }

    /// The method of a name [`ConsensusMethod::name`] gave.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Majority, Self::DawidSkene, Self::DawidSkeneOrdinal]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// The Dawid-Skene settings of a task: the ordinal prior only for the quality grade,
    /// the one task whose classes are ordered.
    pub fn config(self, task: Task) -> DawidSkeneConfig {
        DawidSkeneConfig {
            ordinal_prior: (self == Self::DawidSkeneOrdinal && task == Task::Quality)
                .then_some(ORDINAL_PRIOR_WEIGHT),
            ..DawidSkeneConfig::default()
        }
    }
}

/// One task's fit: rows of `model` are `images`, columns `raters`.
#[derive(Debug, Clone)]
pub struct TaskLatentTruth {
    pub task: Task,
    pub raters: Vec<String>,
    pub images: Vec<i64>,
    /// Labels given per rater, in `raters` order.
    pub ratings_per_rater: Vec<u64>,
    pub model: DawidSkene,
}

/// Subjects x raters category matrix of one task, from (image, rater, category).
pub fn task_matrix(
    labels: &[(i64, String, usize)],
    n_categories: usize,
) -> Result<(Vec<i64>, Vec<String>, Ratings), MetricError> {
    let raters: Vec<String> = labels
        .iter()
        .map(|(_, r, _)| r.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let column: HashMap<&str, usize> = raters
        .iter()
        .enumerate()
        .map(|(i, r)| (r.as_str(), i))
        .collect();
    let mut by_image: BTreeMap<i64, Vec<Option<usize>>> = BTreeMap::new();
    for (image, rater, category) in labels {
        by_image
            .entry(*image)
            .or_insert_with(|| vec![None; raters.len()])[column[rater.as_str()]] = Some(*category);
    }
    let images: Vec<i64> = by_image.keys().copied().collect();
    let rows: Vec<Vec<Option<usize>>> = by_image.into_values().collect();
    let ratings = if rows.is_empty() {
        Ratings::new(Vec::new(), 1, n_categories)?
    } else {
        Ratings::from_rows(&rows, n_categories)?
    };
    Ok((images, raters, ratings))
}

/// Fits one task on (image, rater, category) labels; `None` when there is none.
pub fn fit_task(
    task: Task,
    labels: &[(i64, String, usize)],
    config: &DawidSkeneConfig,
) -> Result<Option<TaskLatentTruth>, MetricError> {
    if labels.is_empty() {
        return Ok(None);
    }
    let (images, raters, ratings) = task_matrix(labels, task.categories().len())?;
    let mut ratings_per_rater = vec![0u64; raters.len()];
    for s in 0..ratings.n_subjects() {
        for (r, cell) in ratings.subject(s).iter().enumerate() {
            ratings_per_rater[r] += u64::from(cell.is_some());
        }
    }
    let model = dawid_skene(&ratings, config)?;
    Ok(Some(TaskLatentTruth {
        task,
        raters,
        images,
        ratings_per_rater,
        model,
    }))
}

/// Every task fitted on the ratings in force that `opts` selects, with the settings of
/// `method` (a Dawid-Skene variant).
pub fn fit_store(
    store: &Store,
    opts: &AgreementOptions,
    method: ConsensusMethod,
) -> Result<Vec<TaskLatentTruth>, ReportError> {
    let rows = load_labels(store, opts)?;
    let mut out = Vec::new();
    for (t, task) in Task::ALL.into_iter().enumerate() {
        let categories = task.categories();
        let labels: Vec<(i64, String, usize)> = rows
            .iter()
            .filter_map(|row| {
                let label = row.labels[t].as_deref()?;
                let c = categories.iter().position(|c| *c == label)?;
                Some((row.image_id, row.rater.clone(), c))
            })
            .collect();
        let fitted = fit_task(task, &labels, &method.config(task))
            .map_err(|e| ReportError::Input(format!("Dawid-Skene for {}: {e}", task.name())))?;
        out.extend(fitted);
    }
    Ok(out)
}

/// One image's latent truth: per task, the posterior of each class (in
/// `Task::categories` order) where some rater labelled it for that task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatentLabels {
    pub posteriors: [Option<Vec<f64>>; 3],
}

impl LatentLabels {
    pub fn posterior(&self, task: Task) -> Option<&[f64]> {
        self.posteriors[task_index(task)].as_deref()
    }

    /// The most probable class of a task; quality and gado only on an image whose
    /// most probable usable class is "usable".
    pub fn class_of(&self, task: Task) -> Option<usize> {
        if task != Task::Usable && self.class_of(Task::Usable) != Some(0) {
            return None;
        }
        let p = self.posterior(task)?;
        let mut best = 0;
        for (c, &v) in p.iter().enumerate() {
            if v > p[best] {
                best = c;
            }
        }
        Some(best)
    }
}

fn task_index(task: Task) -> usize {
    match task {
        Task::Usable => 0,
        Task::Quality => 1,
        Task::Gado => 2,
    }
}

/// The latent truth of every rated image (all sequences, all raters), keyed by image,
/// by a Dawid-Skene `method`.
pub fn latent_labels(
    store: &Store,
    method: ConsensusMethod,
) -> Result<HashMap<i64, LatentLabels>, ReportError> {
    let fits = fit_store(store, &AgreementOptions::default(), method)?;
    Ok(labels_of(&fits))
}

/// The per-image view of fitted tasks.
pub fn labels_of(fits: &[TaskLatentTruth]) -> HashMap<i64, LatentLabels> {
    let mut out: HashMap<i64, LatentLabels> = HashMap::new();
    for fit in fits {
        for (row, image) in fit.images.iter().enumerate() {
            if let Some(p) = &fit.model.posteriors[row] {
                out.entry(*image).or_default().posteriors[task_index(fit.task)] = Some(p.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_applies_only_to_usable_images() {
        let mut l = LatentLabels::default();
        l.posteriors[1] = Some(vec![0.1, 0.7, 0.2]);
        assert_eq!(l.class_of(Task::Quality), None, "no usable posterior");
        l.posteriors[0] = Some(vec![0.3, 0.7]);
        assert_eq!(l.class_of(Task::Usable), Some(1));
        assert_eq!(l.class_of(Task::Quality), None, "most likely a reject");
        l.posteriors[0] = Some(vec![0.8, 0.2]);
        assert_eq!(l.class_of(Task::Quality), Some(1));
    }

    #[test]
    fn the_matrix_has_one_row_per_image_and_one_column_per_rater() {
        let labels = vec![
            (7, "bob".to_string(), 1),
            (3, "ann".to_string(), 0),
            (7, "ann".to_string(), 1),
        ];
        let (images, raters, m) = task_matrix(&labels, 2).expect("matrix");
        assert_eq!(images, vec![3, 7]);
        assert_eq!(raters, vec!["ann".to_string(), "bob".to_string()]);
        assert_eq!(m.subject(0), &[Some(0), None]);
        assert_eq!(m.subject(1), &[Some(1), Some(1)]);
    }
}
