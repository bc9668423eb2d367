//! Blinded work queues (`queues`, `queue_items`) and what a rater should see next.

use duckdb::params;
use serde::Serialize;

use super::{Store, StoreError};

/// Why one image went into a queue (stored on each of its queue items).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemReason {
    /// `uncertain`, `random` or `triage`.
    pub reason: String,
    /// Entropy of the predicted probabilities in bits (`uncertain`), or the predicted
    /// probability of the task's last class (`triage`).
    pub score: Option<f64>,
    /// Distance from the labelled target domain, where one was measured.
    pub domain_distance: Option<f64>,
}

/// How a queue was filled: its strategy, the run whose predictions ranked its images
/// and, for triage, the band.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueOrigin {
    pub strategy: String,
    pub run_id: Option<String>,
    pub triage_rate: Option<f64>,
    pub accept_below: Option<f64>,
    pub reject_from: Option<f64>,
}

/// Why an image sits in one rater's queue, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueuedReason {
    pub queue: String,
    pub rater: String,
    pub shared: bool,
    #[serde(flatten)]
    pub origin: QueueOrigin,
    /// `None` for every-image queues and queues made before reasons were stored.
    pub item: Option<ItemReason>,
}

impl QueuedReason {
    /// Why the image was queued, as short lines (the reason, the run, the domain
    /// distance, the overlap); none when the queue stored no reason (queues made
    /// before reasons were kept).
    pub fn describe(&self) -> Vec<String> {
        let main = match (&self.item, self.origin.strategy.as_str()) {
            (None, "all") => "every readable image".to_string(),
            (None, _) => return Vec::new(),
            (Some(item), _) => match (item.reason.as_str(), item.score) {
                ("uncertain", Some(entropy)) => format!("uncertain: entropy {entropy:.3} bits"),
                ("random", _) => "random share (unbiased accuracy)".to_string(),
                ("triage", Some(score)) => {
                    let rate = self
                        .origin
                        .triage_rate
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default();
                    match (self.origin.accept_below, self.origin.reject_from) {
                        (Some(a), Some(b)) => {
                            format!("triage{rate}: P {score:.3} in [{a:.3}, {b:.3})")
                        }
                        _ => format!("triage{rate}: P {score:.3}"),
                    }
                }
                (other, Some(score)) => format!("{other}: {score:.3}"),
                (other, None) => other.to_string(),
            },
        };
        let mut lines = vec![main];
        if let Some(run) = &self.origin.run_id {
            lines.push(format!("run {run}"));
        }
        if let Some(d) = self.item.as_ref().and_then(|i| i.domain_distance) {
            lines.push(format!("{d:.3} bits from the target domain"));
        }
        if self.shared {
            lines.push("shared by every rater".to_string());
        }
        lines
    }
}

/// What a rater working a queue blind may learn of how it was filled: the strategy
/// alone, the same words for every image of the queue, since an image's own reason
/// (uncertain or random, its entropy, its place in the triage band) comes from a
/// model's prediction.
pub fn blind_queue_note(strategy: Option<&str>) -> Option<&'static str> {
    match strategy? {
        "all" => Some("every readable image"),
        "uncertainty" | "triage" => {
            Some("picked from a model's predictions; why stays hidden while rating blind")
        }
        _ => None,
    }
}

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

/// Reads a row of `queued_reasons.sql` (or a query with the same columns).
pub(super) fn queued_reason_row(r: &duckdb::Row<'_>) -> duckdb::Result<QueuedReason> {
    let reason: Option<String> = r.get(8)?;
    Ok(QueuedReason {
        queue: r.get(0)?,
        rater: r.get(1)?,
        shared: r.get(2)?,
        origin: QueueOrigin {
            strategy: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            run_id: r.get(4)?,
            triage_rate: r.get(5)?,
            accept_below: r.get(6)?,
            reject_from: r.get(7)?,
        },
        item: match reason {
            Some(reason) => Some(ItemReason {
                reason,
                score: r.get(9)?,
                domain_distance: r.get(10)?,
            }),
            None => None,
        },
    })
}

/// A run's prediction of an image a queue may take: its subject (the path when it has
/// none), the class probabilities and, for SSDA networks, the domain head's probability
/// of the target domain.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateRow {
    pub image_id: i64,
    pub subject: String,
    pub probabilities: Vec<f64>,
    pub domain_target: Option<f64>,
    /// A reject stored because the image does not register (`predictions.reason`): the
    /// network never saw it, so it has no uncertainty to rank.
    pub not_registered: bool,
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

    /// A run's predictions of a task on readable images, optionally of one sequence.
    pub fn queue_candidates(
        &self,
        run_id: &str,
        task: &str,
        sequence: Option<&str>,
    ) -> Result<Vec<CandidateRow>, StoreError> {
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
                    r.get::<_, Option<f64>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, subject, text, domain_target, not_registered) =
                row.map_err(|e| self.err(e))?;
            let probabilities: Vec<f64> =
                serde_json::from_str(&text).map_err(|e| StoreError::Invalid {
                    path: self.path().to_path_buf(),
                    message: format!(
                        "run {run_id}: probabilities of image {id} are not a list of numbers ({text}): {e}"
                    ),
                })?;
            out.push(CandidateRow {
                image_id: id,
                subject,
                probabilities,
                domain_target,
                not_registered,
            });
        }
        Ok(out)
    }

    /// Stores a queue, how it was filled, its assignments, why each image is in it and
    /// the raters it names that the store did not know (as raters), in one transaction:
    /// a run cut short between them left raters added and no queue.
    #[allow(clippy::too_many_arguments)]
    pub fn create_queue(
        &mut self,
        name: &str,
        sequence: Option<&str>,
        overlap: f64,
        seed: u64,
        origin: &QueueOrigin,
        reasons: &std::collections::HashMap<i64, ItemReason>,
        assignments: &[QueueAssignment],
        new_raters: &[String],
    ) -> Result<i64, StoreError> {
        for rater in new_raters {
            super::raters::validate_name(rater).map_err(|message| StoreError::Invalid {
                path: self.path().to_path_buf(),
                message,
            })?;
            self.check_new_rater_case(rater)?;
        }
        for (i, a) in new_raters.iter().enumerate() {
            if let Some(b) = new_raters[..i]
                .iter()
                .find(|b| b.eq_ignore_ascii_case(a) && *b != a)
            {
                return Err(StoreError::Invalid {
                    path: self.path().to_path_buf(),
                    message: format!(
                        "raters {b} and {a} differ in case only: give one of them (add the other first with `cdwqc raters add` if they are two people)"
                    ),
                });
            }
        }
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        for rater in new_raters {
            tx.execute(
                include_str!("../../sql/store/add_rater_if_new.sql"),
                params![rater],
            )
            .map_err(db)?;
        }
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
                "INSERT INTO queues (name, sequence, overlap, seed, strategy, run_id, triage_rate, \
                 accept_below, reject_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING queue_id",
                params![
                    name,
                    sequence,
                    overlap,
                    seed as i64,
                    origin.strategy,
                    origin.run_id,
                    origin.triage_rate,
                    origin.accept_below,
                    origin.reject_from
                ],
                |r| r.get(0),
            )
            .map_err(db)?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO queue_items (queue_id, rater, position, image_id, shared, \
                     reason, score, domain_distance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .map_err(db)?;
            for a in assignments {
                for (position, (image_id, shared)) in a.images.iter().enumerate() {
                    let why = reasons.get(image_id);
                    stmt.execute(params![
                        queue_id,
                        a.rater,
                        position as i64,
                        image_id,
                        shared,
                        why.map(|w| w.reason.as_str()),
                        why.and_then(|w| w.score),
                        why.and_then(|w| w.domain_distance)
                    ])
                    .map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)?;
        Ok(queue_id)
    }

    /// Why an image sits in each queue that holds it, in queue order then by rater.
    pub fn queued_reasons(&self, image_id: i64) -> Result<Vec<QueuedReason>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/queued_reasons.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![image_id], queued_reason_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(strategy: &str, item: Option<ItemReason>) -> QueuedReason {
        QueuedReason {
            queue: "q".into(),
            rater: "ann".into(),
            shared: false,
            origin: QueueOrigin {
                strategy: strategy.into(),
                run_id: Some("r1".into()),
                triage_rate: Some(0.95),
                accept_below: Some(0.2),
                reject_from: Some(0.7),
            },
            item,
        }
    }

    #[test]
    fn reasons_in_words_and_none_for_old_queues() {
        let triage = ItemReason {
            reason: "triage".into(),
            score: Some(0.4567),
            domain_distance: None,
        };
        assert_eq!(
            queued("triage", Some(triage)).describe(),
            ["triage 0.95: P 0.457 in [0.200, 0.700)", "run r1"]
        );
        let mut all = queued("all", None);
        all.origin.run_id = None;
        all.shared = true;
        assert_eq!(
            all.describe(),
            ["every readable image", "shared by every rater"]
        );
        // A queue made before reasons were stored says nothing.
        assert!(queued("", None).describe().is_empty());
        assert_eq!(blind_queue_note(None), None);
        assert_eq!(
            blind_queue_note(Some("triage")),
            blind_queue_note(Some("uncertainty"))
        );
    }

    #[test]
    fn old_queues_read_back_with_no_reason_and_new_ones_with_theirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        store
            .conn()
            .execute_batch(
                "INSERT INTO images (path, root, rel_path, status, file_size, mtime_ns)
                 VALUES ('/a', '/', 'a', 'ok', 0, 0);
                 INSERT INTO queues (name, overlap, seed) VALUES ('old', 0, 1);
                 INSERT INTO queue_items (queue_id, rater, position, image_id, shared)
                 VALUES (1, 'ann', 0, 1, false);",
            )
            .expect("an old queue");
        let reasons = std::collections::HashMap::from([(
            1,
            ItemReason {
                reason: "uncertain".into(),
                score: Some(0.5),
                domain_distance: None,
            },
        )]);
        let origin = QueueOrigin {
            strategy: "uncertainty".into(),
            run_id: Some("r1".into()),
            ..QueueOrigin::default()
        };
        store
            .create_queue(
                "new",
                None,
                0.0,
                1,
                &origin,
                &reasons,
                &[QueueAssignment {
                    rater: "bob".into(),
                    images: vec![(1, false)],
                }],
                &[],
            )
            .expect("queue");
        let read = store.queued_reasons(1).expect("reasons");
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].queue.as_str(), &read[0].item), ("old", &None));
        assert!(read[0].describe().is_empty());
        assert_eq!(read[1].origin, origin);
        assert_eq!(read[1].item.as_ref(), reasons.get(&1));
    }
}
