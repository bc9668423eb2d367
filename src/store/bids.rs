//! The rows a BIDS-derivatives export reads: ratings in force, predictions and the
//! runs that made them, each with the image's absolute path and entities.

use super::{Store, StoreError};

/// A rating in force with its image.
#[derive(Debug, Clone, PartialEq)]
pub struct BidsRatingRow {
    pub path: String,
    pub subject: Option<String>,
    pub session: Option<String>,
    pub rater: String,
    pub usable: bool,
    pub reject_reason: Option<String>,
    pub gado: Option<bool>,
    pub motion: Option<u8>,
    pub contrast: Option<u8>,
    pub noise: Option<u8>,
    pub quality: Option<String>,
    pub confidence: Option<u8>,
    pub time_ms: Option<i64>,
    pub rated_at: Option<String>,
    pub comment: Option<String>,
    pub protocol_version: String,
}

/// A prediction with its image.
#[derive(Debug, Clone, PartialEq)]
pub struct BidsPredictionRow {
    pub path: String,
    pub subject: Option<String>,
    pub session: Option<String>,
    pub run_id: String,
    pub task: String,
    pub label: Option<String>,
    /// JSON array of the class probabilities; `None` for a failed image.
    pub probabilities: Option<String>,
    pub error: Option<String>,
    /// Why the label was given without the network (an image that does not register).
    pub reason: Option<String>,
    pub predicted_at: Option<String>,
}

/// A run that made predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct BidsRunRow {
    pub run_id: String,
    pub kind: String,
    pub task: Option<String>,
    pub method: Option<String>,
    pub preset: Option<String>,
    pub status: String,
    pub metrics: Option<String>,
    pub split_id: Option<String>,
    pub started_at: Option<String>,
}

impl Store {
    /// Every image's absolute path, by image id.
    pub fn image_paths(&self) -> Result<std::collections::HashMap<i64, String>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/image_paths.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn bids_ratings(&self) -> Result<Vec<BidsRatingRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/bids_ratings.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BidsRatingRow {
                    path: r.get(0)?,
                    subject: r.get(1)?,
                    session: r.get(2)?,
                    rater: r.get(3)?,
                    usable: r.get(4)?,
                    reject_reason: r.get(5)?,
                    gado: r.get(6)?,
                    motion: r.get(7)?,
                    contrast: r.get(8)?,
                    noise: r.get(9)?,
                    quality: r.get(10)?,
                    confidence: r.get(11)?,
                    time_ms: r.get(12)?,
                    rated_at: r.get(13)?,
                    comment: r.get(14)?,
                    protocol_version: r.get(15)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn bids_predictions(&self) -> Result<Vec<BidsPredictionRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/bids_predictions.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BidsPredictionRow {
                    path: r.get(0)?,
                    subject: r.get(1)?,
                    session: r.get(2)?,
                    run_id: r.get(3)?,
                    task: r.get(4)?,
                    label: r.get(5)?,
                    probabilities: r.get(6)?,
                    error: r.get(7)?,
                    predicted_at: r.get(8)?,
                    reason: r.get(9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn bids_runs(&self) -> Result<Vec<BidsRunRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/bids_runs.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BidsRunRow {
                    run_id: r.get(0)?,
                    kind: r.get(1)?,
                    task: r.get(2)?,
                    method: r.get(3)?,
                    preset: r.get(4)?,
                    status: r.get(5)?,
                    metrics: r.get(6)?,
                    split_id: r.get(7)?,
                    started_at: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}
