//! The consensus of the ratings in force and the task labels (`usable`, `quality`,
//! `gado`) that training and reports read.

use std::collections::HashMap;

use serde::Serialize;

use super::consensus::{ImageConsensus, LatestRating, consensus};
use super::formats::quality_only;
use crate::protocol::{Grade, Quality, Rating, RejectReason};
use crate::report::agreement::Task;
use crate::store::ratings::StoredRating;
use crate::store::{Store, StoreError};

/// A stored rating as a protocol rating; `false` when its grades are unknown
/// (a quality-only rating).
pub fn to_protocol(r: &StoredRating) -> (Rating, bool) {
    if !r.usable {
        let reason = r
            .reject_reason
            .as_deref()
            .and_then(|s| s.parse::<RejectReason>().ok())
            .unwrap_or(RejectReason::Other);
        return (Rating::reject(reason), true);
    }
    let grade = |g: Option<u8>| g.and_then(Grade::from_level);
    match (r.gado, grade(r.motion), grade(r.contrast), grade(r.noise)) {
        (Some(gado), Some(m), Some(c), Some(n)) => (Rating::usable(gado, m, c, n), true),
        _ => {
            let q = r
                .quality
                .as_deref()
                .and_then(|q| q.parse::<Quality>().ok())
                .unwrap_or(Quality::Good);
            (quality_only(q), false)
        }
    }
}

/// One image's consensus and labels, for export and training.
#[derive(Debug, Clone, Serialize)]
pub struct ImageLabels {
    pub image_id: i64,
    pub raters: usize,
    /// majority, adjudicated or disputed.
    pub usable_decision: &'static str,
    pub usable: Option<bool>,
    pub reject_reason: Option<String>,
    pub quality: Option<&'static str>,
    pub gado: Option<bool>,
    pub motion: Option<u8>,
    pub contrast: Option<u8>,
    pub noise: Option<u8>,
}

impl From<&ImageConsensus<i64>> for ImageLabels {
    fn from(c: &ImageConsensus<i64>) -> Self {
        let level = |d: &Option<super::consensus::Decision<Grade>>| {
            d.as_ref().and_then(|d| d.value()).map(Grade::level)
        };
        Self {
            image_id: c.image,
            raters: c.n_raters,
            usable_decision: c.usable.kind(),
            usable: c.usable_label(),
            reject_reason: c
                .reject_reason
                .as_ref()
                .and_then(|d| d.value())
                .map(|r| r.name().to_string()),
            quality: c.quality_label().map(Quality::name),
            gado: c.gado_label(),
            motion: level(&c.motion),
            contrast: level(&c.contrast),
            noise: level(&c.noise),
        }
    }
}

impl ImageLabels {
    /// The class index of the consensus label for a task, in `Task::categories` order.
    pub fn class_of(&self, task: Task) -> Option<usize> {
        match task {
            Task::Usable => self.usable.map(|u| usize::from(!u)),
            Task::Quality => self
                .quality
                .and_then(|q| task.categories().iter().position(|c| *c == q)),
            Task::Gado => self.gado.map(usize::from),
        }
    }
}

/// The consensus of every rated image, keyed by image id.
pub fn image_labels(store: &Store) -> Result<HashMap<i64, ImageLabels>, StoreError> {
    let stored = store.ratings_in_force()?;
    let adjudicators = store.adjudicators()?;
    let latest: Vec<LatestRating<i64>> = stored
        .iter()
        .map(|r| {
            let (rating, grades_known) = to_protocol(r);
            LatestRating {
                image: r.image_id,
                rater: r.rater.clone(),
                rating,
                grades_known,
            }
        })
        .collect();
    Ok(consensus(&latest, &adjudicators)
        .iter()
        .map(|c| (c.image, ImageLabels::from(c)))
        .collect())
}
