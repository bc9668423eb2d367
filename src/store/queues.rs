//! Blinded work queues (`queues`, `queue_items`) and what a rater should see next.

use duckdb::params;
use serde::Serialize;

use super::{Store, StoreError};

/// One rater's share of a queue.
#[derive(Debug, Clone)]
pub struct QueueAssignment {
    pub rater: String,
    /// Image ids in this rater's order, with whether each is shared by every rater.
    pub images: Vec<(i64, bool)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueProgress {
    pub queue: String,
    pub rater: String,
    pub assigned: i64,
    pub shared: i64,
    pub rated: i64,
    pub remaining: i64,
}

/// The next image a rater should rate.
#[derive(Debug, Clone, PartialEq)]
pub struct NextImage {
    pub image_id: i64,
    pub queue: Option<String>,
    /// How the image is named to the rater (BIDS entities or file name).
    pub label: String,
    pub remaining: i64,
}

impl Store {
    /// Image ids of readable images, optionally of one sequence (BIDS suffix).
    pub fn rateable_images(&self, sequence: Option<&str>) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT image_id FROM images WHERE status = 'ok' \
                 AND ($1::VARCHAR IS NULL OR suffix = $1) ORDER BY image_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sequence], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// A run's predicted probabilities of a task on readable images, as (image,
    /// subject, probabilities), optionally of one sequence.
    pub fn queue_candidates(
        &self,
        run_id: &str,
        task: &str,
        sequence: Option<&str>,
    ) -> Result<Vec<(i64, String, Vec<f64>)>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/queue_candidates.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id, task, sequence], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, subject, text) = row.map_err(|e| self.err(e))?;
            let probabilities: Vec<f64> =
                serde_json::from_str(&text).map_err(|e| StoreError::Invalid {
                    path: self.path().to_path_buf(),
                    message: format!(
                        "run {run_id}: probabilities of image {id} are not a list of numbers ({text}): {e}"
                    ),
                })?;
            out.push((id, subject, probabilities));
        }
        Ok(out)
    }

    /// Stores a queue and its assignments in one transaction.
    pub fn create_queue(
        &mut self,
        name: &str,
        sequence: Option<&str>,
        overlap: f64,
        seed: u64,
        assignments: &[QueueAssignment],
    ) -> Result<i64, StoreError> {
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        let exists: i64 = tx
            .query_row(
                "SELECT count(*) FROM queues WHERE name = ?",
                params![name],
                |r| r.get(0),
            )
            .map_err(db)?;
        if exists > 0 {
            return Err(StoreError::Invalid {
                path,
                message: format!("a queue named {name:?} exists already; choose another --name"),
            });
        }
        let queue_id: i64 = tx
            .query_row(
                "INSERT INTO queues (name, sequence, overlap, seed) VALUES (?, ?, ?, ?) RETURNING queue_id",
                params![name, sequence, overlap, seed as i64],
                |r| r.get(0),
            )
            .map_err(db)?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO queue_items (queue_id, rater, position, image_id, shared) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .map_err(db)?;
            for a in assignments {
                for (position, (image_id, shared)) in a.images.iter().enumerate() {
                    stmt.execute(params![
                        queue_id,
                        a.rater,
                        position as i64,
                        image_id,
                        shared
                    ])
                    .map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)?;
        Ok(queue_id)
    }

    pub fn queue_progress(&self) -> Result<Vec<QueueProgress>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/queue_progress.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(QueueProgress {
                    queue: r.get(0)?,
                    rater: r.get(1)?,
                    assigned: r.get(2)?,
                    shared: r.get(3)?,
                    rated: r.get(4)?,
                    remaining: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The rater's next image: the first pending item of their queues (of `queue` when
    /// given), or, for a rater without a queue, the first readable image they have not
    /// rated. `skip` holds images passed over in this session.
    pub fn next_image_for(
        &self,
        rater: &str,
        queue: Option<&str>,
        skip: &[i64],
    ) -> Result<Option<NextImage>, StoreError> {
        let skip_list = format!(
            "[{}]",
            skip.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let row = self
            .conn()
            .query_row(
                include_str!("../../sql/store/next_image_for_rater.sql"),
                params![rater, queue, skip_list],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                duckdb::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(|e| self.err(e))?;
        Ok(row.map(|(image_id, queue, label, remaining)| NextImage {
            image_id,
            queue,
            label,
            remaining,
        }))
    }

    /// The stored PNG previews of an image, by plane name.
    pub fn preview_pngs(&self, image_id: i64) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT plane, png FROM previews WHERE image_id = ? \
                 ORDER BY CASE plane WHEN 'axial' THEN 0 WHEN 'coronal' THEN 1 ELSE 2 END",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![image_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}
