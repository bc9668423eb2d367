//! Triage queues: the unrated images that a run's predictions leave between its triage
//! thresholds, picked and stored as `cdwqc queue create --strategy triage` and the
//! dashboard's Reports view queue them.

use std::collections::{HashMap, HashSet};

use crate::metrics::{TriageBand, TriageDecision};
use crate::rate::queue::{QueueError, assign};
use crate::report::ReportError;
use crate::report::model::{ModelOptions, build};
use crate::store::queues::{ItemReason, QueueAssignment, QueueOrigin};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Input(String),
}

/// What a run's triage band does with the unrated images it has predictions for.
#[derive(Debug, Clone, PartialEq)]
pub struct TriagePick {
    pub run_id: String,
    pub rate: f64,
    pub positive_class: String,
    pub accept_below: f64,
    pub reject_from: f64,
    pub unrated: usize,
    pub accepted: usize,
    pub rejected: usize,
    /// The images in the band, each with its score, in image order.
    pub review: Vec<(i64, ItemReason)>,
}

impl TriagePick {
    pub fn origin(&self) -> QueueOrigin {
        QueueOrigin {
            strategy: "triage".into(),
            run_id: Some(self.run_id.clone()),
            triage_rate: Some(self.rate),
            accept_below: Some(self.accept_below),
            reject_from: Some(self.reject_from),
        }
    }

    /// One line: the band and what it decides.
    pub fn summary(&self) -> String {
        format!(
            "triage of {} unrated images by run {} at {}: P({}) < {:.4} accepted ({}), >= {:.4} rejected ({}), {} to review ({:.1}% of the ratings saved)",
            self.unrated,
            self.run_id,
            self.rate,
            self.positive_class,
            self.accept_below,
            self.accepted,
            self.reject_from,
            self.rejected,
            self.review.len(),
            100.0 * (self.accepted + self.rejected) as f64 / self.unrated.max(1) as f64
        )
    }
}

/// Picks the unrated images between the run's triage thresholds at `rate` (chosen on
/// its validation images by `report model --triage`'s own function).
pub fn pick(
    store: &Store,
    run: &str,
    sequence: Option<&str>,
    rate: f64,
) -> Result<TriagePick, TriageError> {
    if !(rate > 0.0 && rate <= 1.0) {
        return Err(TriageError::Input(format!(
            "--triage {rate} is not in (0, 1]"
        )));
    }
    let report = build(
        store,
        run,
        &ModelOptions {
            triage: Some(rate),
            ..ModelOptions::thresholds_only()
        },
    )?;
    let triage = report
        .triage
        .ok_or_else(|| TriageError::Input("the model report computed no triage".into()))?;
    let (Some(accept), Some(reject)) = (triage.accept_below.value, triage.reject_from.value) else {
        return Err(TriageError::Input(format!(
            "run {run}: no triage thresholds at {rate} on its {} validation images ({}); \
             runs trained before validation predictions were stored have none",
            triage.validation_images,
            triage.accept_below.text()
        )));
    };
    let band = TriageBand { accept, reject };
    let rated = crate::rate::labels::image_labels(store)?;
    let mut out = TriagePick {
        run_id: run.to_string(),
        rate,
        positive_class: triage.positive_class,
        accept_below: accept,
        reject_from: reject,
        unrated: 0,
        accepted: 0,
        rejected: 0,
        review: Vec::new(),
    };
    for row in store.queue_candidates(run, report.task.name(), sequence)? {
        let (image_id, probabilities) = (row.image_id, row.probabilities);
        if rated.contains_key(&image_id) {
            continue;
        }
        let Some(score) = probabilities.last() else {
            continue;
        };
        out.unrated += 1;
        match band.decide(*score) {
            TriageDecision::Accept => out.accepted += 1,
            TriageDecision::Reject => out.rejected += 1,
            TriageDecision::Review => out.review.push((
                image_id,
                ItemReason {
                    reason: "triage".into(),
                    score: Some(*score),
                    domain_distance: None,
                },
            )),
        }
    }
    if out.unrated == 0 {
        return Err(TriageError::Input(format!(
            "run {run} has no prediction of an unrated image{}: predict them first (cdwqc infer --run {run} --unrated)",
            sequence
                .map(|s| format!(" of sequence {s}"))
                .unwrap_or_default()
        )));
    }
    Ok(out)
}

/// A queue dealt to its raters, ready to store.
#[derive(Debug, Clone)]
pub struct Dealt {
    pub rows: Vec<QueueAssignment>,
    /// Images given to every rater.
    pub shared: usize,
    pub reasons: HashMap<i64, ItemReason>,
}

/// Deals `images` of any strategy to `raters` (a shared `overlap`, blinded orders, by
/// `rate::queue::assign`), keeping why each image is queued.
pub fn deal(
    images: &[(i64, Option<ItemReason>)],
    raters: &[String],
    overlap: f64,
    seed: u64,
) -> Result<Dealt, TriageError> {
    let ids: Vec<String> = images.iter().map(|(id, _)| id.to_string()).collect();
    let assignment = assign(&ids, raters, overlap, seed)?;
    let shared: HashSet<&String> = assignment.shared.iter().collect();
    let mut rows = Vec::new();
    for q in &assignment.queues {
        let images = q
            .images
            .iter()
            .map(|id| {
                id.parse::<i64>()
                    .map(|n| (n, shared.contains(id)))
                    .map_err(|e| TriageError::Input(format!("image id {id}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(QueueAssignment {
            rater: q.rater.clone(),
            images,
        });
    }
    Ok(Dealt {
        rows,
        shared: assignment.shared.len(),
        reasons: images
            .iter()
            .filter_map(|(id, why)| Some((*id, why.clone()?)))
            .collect(),
    })
}
