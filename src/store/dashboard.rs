//! Read queries behind the terminal dashboard: summaries, a paged and filtered image
//! list, one image's facts, previews and ratings, and a rater's next images.

use duckdb::params;
use duckdb::types::ToSql;

use super::{Access, Store, StoreError};

/// Images per sequence and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceCounts {
    pub sequence: String,
    pub ok: i64,
    pub failed: i64,
    pub missing: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaterProgress {
    pub rater: String,
    pub role: String,
    pub images_rated: i64,
    pub rejected: i64,
    pub review_later: i64,
    pub last_saved: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueProgress {
    pub queue: String,
    pub rater: String,
    pub items: i64,
    pub pending: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: String,
    pub kind: String,
    pub task: String,
    pub status: String,
    pub started_at: String,
    /// A training run's balanced accuracy on its test subjects, empty otherwise.
    pub test_balanced_accuracy: String,
}

/// Inter-rater agreement of one task over the images two or more raters labelled, as
/// the dashboard shows it. Filled by `report::agreement::at_a_glance` with the same
/// statistics as the agreement report; `None` where a statistic is undefined.
#[derive(Debug, Clone, PartialEq)]
pub struct AgreementGlance {
    pub task: String,
    /// Images with two or more labels for this task.
    pub images: u64,
    /// Pairwise percent agreement, as a share (0..1).
    pub percent_agreement: Option<f64>,
    /// Fleiss' kappa on the images labelled by every rater.
    pub fleiss_kappa: Option<f64>,
    pub fleiss_images: u64,
    /// Krippendorff's alpha (ordinal for quality), missing labels allowed.
    pub krippendorff_alpha: Option<f64>,
}

/// How many images got one combination of label counts, for images rated by two or
/// more raters; counts in the order of each task's categories (usable: usable,
/// reject; quality: good, medium, bad).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelPattern {
    pub usable: [u32; 2],
    pub quality: [u32; 3],
    pub images: u64,
}

/// Everything the dashboard's first view shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DashboardSummary {
    pub sequences: Vec<SequenceCounts>,
    pub raters: Vec<RaterProgress>,
    pub queues: Vec<QueueProgress>,
    pub runs: Vec<RunSummary>,
    /// Per task; `None` when not asked for (blind rating mode keeps other raters'
    /// labels out of sight, aggregated or not).
    pub agreement: Option<Vec<AgreementGlance>>,
    /// The rating and queue progress and the agreement are still being counted:
    /// they are read over every rating in force, which on a large store takes
    /// longer than the rest.
    pub refining: bool,
}

/// Filters of the image browser; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ImageFilter {
    pub sequence: Option<String>,
    pub status: Option<String>,
    pub rated: Option<bool>,
    pub subject: Option<String>,
    /// The newest `usable` prediction's label (`usable` or `reject`).
    pub predicted: Option<String>,
    /// Only images whose newest `usable` prediction differs from a rater's label.
    pub disagreement: Option<bool>,
    /// Only images with metrics of the newest version of which some are (`true`) or
    /// none is (`false`) a per-scanner outlier (`iqm_outliers`).
    pub iqm_outlier: Option<bool>,
    /// Which computation of the outlier flags the filter reads: the flags depend on
    /// every image's metrics, so a connection computes them once and keeps them until
    /// a filter names another epoch (after metrics may have changed).
    pub iqm_epoch: u64,
}

impl ImageFilter {
    /// `$1..$6` of the filtered image queries (`sql/store/images_*_summary.sql`,
    /// `images_filtered.sql`), `subject` being the search text when not empty.
    fn sql_params<'a>(&'a self, subject: &'a Option<&'a str>) -> [&'a dyn ToSql; 6] {
        [
            &self.sequence,
            &self.status,
            &self.rated,
            subject,
            &self.predicted,
            &self.disagreement,
        ]
    }
}

/// One line of the image browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageListRow {
    pub image_id: i64,
    pub subject: String,
    pub session: String,
    pub suffix: String,
    pub status: String,
    pub shape: String,
    pub orientation: String,
    pub rated_by: i64,
    /// The newest `usable` prediction's label, empty without one.
    pub predicted: String,
}

/// A page of the filtered image list and the size of the whole list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagePage {
    pub offset: usize,
    pub total: usize,
    pub rows: Vec<ImageListRow>,
}

/// Header facts of one image, as the detail pane shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageFacts {
    pub image_id: i64,
    pub path: String,
    pub subject: String,
    pub session: String,
    pub suffix: String,
    pub status: String,
    pub error: Option<String>,
    pub warnings: Option<String>,
    pub shape: Option<[i64; 3]>,
    pub voxel_mm: Option<[f64; 3]>,
    pub datatype: Option<String>,
    pub orientation: Option<String>,
    pub manufacturer: Option<String>,
    pub field_strength: Option<f64>,
    pub series_description: Option<String>,
}

/// One run's prediction for an image.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionInForce {
    pub run_id: String,
    pub task: String,
    pub label: Option<String>,
    /// The probability of the predicted class.
    pub probability: Option<f64>,
    pub error: Option<String>,
    pub predicted_at: String,
    /// Why the label was given without the network (an image that does not register).
    pub reason: Option<String>,
}

/// A rating in force, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatingInForce {
    pub rater: String,
    pub code: String,
    pub usable: Option<bool>,
    pub gado: Option<bool>,
    pub motion: Option<i64>,
    pub contrast: Option<i64>,
    pub noise: Option<i64>,
    pub review_later: bool,
    pub saved_at: String,
}

/// A rater's next images and where they come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateWork {
    /// True when the images come from the rater's queues, false when the rater has
    /// none and gets every usable image they have not rated.
    pub from_queue: bool,
    pub image_ids: Vec<i64>,
    /// For queued images: the queue's name and strategy (`None` for queues made before
    /// strategies were stored).
    pub queues: std::collections::HashMap<i64, (String, Option<String>)>,
}

impl Store {
    /// A second connection to the same open database, for a reader thread. It shares
    /// this store's database instance, so it adds no second file lock.
    pub fn reader(&self) -> Result<Store, StoreError> {
        self.sibling(Access::ReadOnly)
    }

    /// Every summary; without `ratings`, all but the rating and queue progress,
    /// which then come back empty with `refining` set.
    pub fn dashboard_summary(&self, ratings: bool) -> Result<DashboardSummary, StoreError> {
        let sequences = self.rows(include_str!("../../sql/store/dashboard_images.sql"), |r| {
            Ok(SequenceCounts {
                sequence: r.get(0)?,
                ok: r.get(1)?,
                failed: r.get(2)?,
                missing: r.get(3)?,
            })
        })?;
        let raters = if !ratings {
            Vec::new()
        } else {
            self.rows(include_str!("../../sql/store/dashboard_raters.sql"), |r| {
                Ok(RaterProgress {
                    rater: r.get(0)?,
                    role: r.get(1)?,
                    images_rated: r.get(2)?,
                    rejected: r.get(3)?,
                    review_later: r.get(4)?,
                    last_saved: r.get(5)?,
                })
            })?
        };
        // Pending queue items are read against every rating in force, like the
        // rating progress.
        let queues = if !ratings {
            Vec::new()
        } else {
            self.rows(include_str!("../../sql/store/dashboard_queues.sql"), |r| {
                Ok(QueueProgress {
                    queue: r.get(0)?,
                    rater: r.get(1)?,
                    items: r.get(2)?,
                    pending: r.get(3)?,
                })
            })?
        };
        let runs = self.rows(include_str!("../../sql/store/dashboard_runs.sql"), |r| {
            Ok(RunSummary {
                run_id: r.get(0)?,
                kind: r.get(1)?,
                task: r.get(2)?,
                status: r.get(3)?,
                started_at: r.get(4)?,
                test_balanced_accuracy: r.get(5)?,
            })
        })?;
        Ok(DashboardSummary {
            sequences,
            raters,
            queues,
            runs,
            agreement: None,
            refining: !ratings,
        })
    }

    /// The label counts behind the dashboard's agreement panel, grouped by pattern,
    /// and the number of raters with a label in force.
    pub fn label_patterns(&self) -> Result<(Vec<LabelPattern>, u64), StoreError> {
        let mut raters = 0;
        let patterns = self.rows(
            include_str!("../../sql/store/dashboard_agreement.sql"),
            |r| {
                let count = |i| r.get::<_, i64>(i).map(|n| u32::try_from(n).unwrap_or(0));
                raters = r.get::<_, i64>(6)?;
                Ok(LabelPattern {
                    usable: [count(0)?, count(1)?],
                    quality: [count(2)?, count(3)?, count(4)?],
                    images: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                })
            },
        )?;
        Ok((patterns, u64::try_from(raters).unwrap_or(0)))
    }

    /// One page of the filtered image list, ordered by image id (a stable key).
    /// `known_total`, the size of the list from an earlier page with the same filter,
    /// saves counting it again.
    ///
    /// Read from the per-image summaries (`images` alone, whatever the filters) unless
    /// they are marked stale, then from the ratings and predictions themselves.
    pub fn image_page(
        &self,
        filter: &ImageFilter,
        offset: usize,
        limit: usize,
        known_total: Option<usize>,
    ) -> Result<ImagePage, StoreError> {
        let fresh = self.summaries_fresh();
        if let Some(outlier) = filter.iqm_outlier {
            return self.image_page_by_iqm_flag(filter, outlier, fresh, offset, limit, known_total);
        }
        if !fresh {
            return self.image_page_from_scratch(filter, offset, limit, known_total);
        }
        self.image_page_from_summaries(filter, offset, limit, known_total)
    }

    /// [`Store::image_page`] with the IQM outlier filter: the other filters' images
    /// (from the summaries when `fresh`, else from the ratings and predictions), kept
    /// when their outlier flag is `outlier`; the page and the count in one pass. The
    /// flags are the `iqm_outliers` view's, computed once per `filter.iqm_epoch`: by
    /// [`Store::iqm_groups_with_shared_flags`] on another connection when it has run for
    /// that epoch, else over every image's metrics on this one. The other filters never
    /// pay for them, and paging through the filtered list pays once.
    fn image_page_by_iqm_flag(
        &self,
        filter: &ImageFilter,
        outlier: bool,
        fresh: bool,
        offset: usize,
        limit: usize,
        known_total: Option<usize>,
    ) -> Result<ImagePage, StoreError> {
        let db = |e| self.err(e);
        let subject = filter.subject.as_deref().filter(|s| !s.is_empty());
        let base = if fresh {
            include_str!("../../sql/store/images_filtered_summary.sql")
        } else {
            include_str!("../../sql/store/images_filtered.sql")
        };
        let shared = match self.iqm_flags_epoch.get() {
            Some((epoch, shared)) if epoch == filter.iqm_epoch => shared,
            _ => {
                self.iqm_flags_epoch.set(None);
                // The dashboard computes the flags off the keys' path with the groups
                // its IQM pane reads; until they are there, this connection computes
                // them itself (seconds at a million images) into a table of its own.
                let shared = self.shared_flags_ready(filter.iqm_epoch)?;
                if !shared {
                    self.conn
                        .execute_batch(&format!(
                            "CREATE OR REPLACE TEMP TABLE iqm_flag_cache AS\n{}\n;",
                            include_str!("../../sql/store/image_iqm_flags.sql")
                        ))
                        .map_err(db)?;
                }
                self.iqm_flags_epoch.set(Some((filter.iqm_epoch, shared)));
                shared
            }
        };
        let flags = if shared {
            super::iqm_outliers::shared_flags_table(filter.iqm_epoch)
        } else {
            "temp.iqm_flag_cache".to_string()
        };
        // The file text may end in a comment: it closes on a line of its own.
        let flagged = format!(
            "SELECT f.* FROM (\n{base}\n) AS f\n\
             JOIN {flags} AS c USING (image_id)\nWHERE c.outlier = $7"
        );
        let params: Vec<&dyn ToSql> = filter
            .sql_params(&subject)
            .into_iter()
            .chain([&outlier as &dyn ToSql])
            .collect();
        let (total, rows) = self.counted_page(&flagged, &params, offset, limit, known_total)?;
        Ok(ImagePage {
            offset,
            total: usize::try_from(total).unwrap_or(0),
            rows,
        })
    }

    /// One page (`limit` rows from `offset`, by the first column) of the image-list query
    /// `sql` and its whole count in one pass, with `params` as its `$1..$n`; `known_total`
    /// saves the count. An offset past the end returns no row to carry the count, which
    /// is then counted on its own.
    fn counted_page(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        offset: usize,
        limit: usize,
        known_total: Option<usize>,
    ) -> Result<(i64, Vec<ImageListRow>), StoreError> {
        let db = |e| self.err(e);
        let n = params.len();
        let mut total = known_total.map(|t| t as i64);
        let rows = self
            .conn
            .prepare(&format!(
                "SELECT *, count(*) OVER () FROM (\n{sql}\n)\nORDER BY 1 LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            ))
            .map_err(db)?
            .query_map(
                duckdb::params_from_iter(
                    params
                        .iter()
                        .copied()
                        .chain([&(limit as i64) as &dyn ToSql, &(offset as i64)]),
                ),
                |r| Ok((list_row(r)?, r.get::<_, i64>(9)?)),
            )
            .map_err(db)?
            .map(|r| {
                r.map(|(row, count)| {
                    total.get_or_insert(count);
                    row
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        let total = match total {
            Some(total) => total,
            None if offset == 0 => 0,
            None => self
                .conn
                .prepare(&format!("SELECT count(*) FROM (\n{sql}\n)"))
                .map_err(db)?
                .query_row(duckdb::params_from_iter(params.iter().copied()), |r| {
                    r.get(0)
                })
                .map_err(db)?,
        };
        Ok((total, rows))
    }

    /// [`Store::image_page`] from the summaries: a scan of `images` for the page and
    /// one for the count, however many ratings and predictions the store holds.
    pub(crate) fn image_page_from_summaries(
        &self,
        filter: &ImageFilter,
        offset: usize,
        limit: usize,
        known_total: Option<usize>,
    ) -> Result<ImagePage, StoreError> {
        let db = |e| self.err(e);
        let subject = filter.subject.as_deref().filter(|s| !s.is_empty());
        let total = match known_total {
            Some(total) => total as i64,
            None => self
                .conn
                .prepare(include_str!("../../sql/store/images_count_summary.sql"))
                .map_err(db)?
                .query_row(duckdb::params_from_iter(filter.sql_params(&subject)), |r| {
                    r.get(0)
                })
                .map_err(db)?,
        };
        let rows = self
            .conn
            .prepare(include_str!("../../sql/store/images_page_summary.sql"))
            .map_err(db)?
            .query_map(
                duckdb::params_from_iter(
                    filter
                        .sql_params(&subject)
                        .into_iter()
                        .chain([&(limit as i64) as &dyn ToSql, &(offset as i64)]),
                ),
                list_row,
            )
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(ImagePage {
            offset,
            total: usize::try_from(total).unwrap_or(0),
            rows,
        })
    }

    /// [`Store::image_page`] from the ratings and predictions themselves: exact while
    /// the summaries are stale, and the reference they are tested against.
    pub(crate) fn image_page_from_scratch(
        &self,
        filter: &ImageFilter,
        offset: usize,
        limit: usize,
        known_total: Option<usize>,
    ) -> Result<ImagePage, StoreError> {
        let db = |e| self.err(e);
        let subject = filter.subject.as_deref().filter(|s| !s.is_empty());
        let row = list_row;
        // Filters on `images` alone cut the page before anything is joined; the
        // ratings and predictions are then read for its rows only.
        let plain = filter.rated.is_none()
            && filter.predicted.is_none()
            && filter.disagreement != Some(true);
        let (total, rows) = if plain {
            let total = match known_total {
                Some(total) => total as i64,
                None => self
                    .conn
                    .prepare(include_str!("../../sql/store/images_count_plain.sql"))
                    .map_err(db)?
                    .query_row(params![filter.sequence, filter.status, subject], |r| {
                        r.get(0)
                    })
                    .map_err(db)?,
            };
            let rows = self
                .conn
                .prepare(include_str!("../../sql/store/images_page_plain.sql"))
                .map_err(db)?
                .query_map(
                    params![
                        filter.sequence,
                        filter.status,
                        subject,
                        limit as i64,
                        offset as i64
                    ],
                    row,
                )
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            (total, rows)
        } else {
            // The page and the count in one pass over the ratings and predictions.
            let params = filter.sql_params(&subject);
            self.counted_page(
                include_str!("../../sql/store/images_filtered.sql"),
                &params,
                offset,
                limit,
                known_total,
            )?
        };
        Ok(ImagePage {
            offset,
            total: usize::try_from(total).unwrap_or(0),
            rows,
        })
    }

    pub fn image_facts(&self, image_id: i64) -> Result<Option<ImageFacts>, StoreError> {
        let db = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(include_str!("../../sql/store/image_detail.sql"))
            .map_err(db)?;
        let mut rows = stmt.query(params![image_id]).map_err(db)?;
        let Some(r) = rows.next().map_err(db)? else {
            return Ok(None);
        };
        let facts = (|| -> duckdb::Result<ImageFacts> {
            let dims: [Option<i64>; 3] = [r.get(8)?, r.get(9)?, r.get(10)?];
            let voxels: [Option<f64>; 3] = [r.get(11)?, r.get(12)?, r.get(13)?];
            Ok(ImageFacts {
                image_id: r.get(0)?,
                path: r.get(1)?,
                subject: r.get(2)?,
                session: r.get(3)?,
                suffix: r.get(4)?,
                status: r.get(5)?,
                error: r.get(6)?,
                warnings: r.get(7)?,
                shape: match dims {
                    [Some(x), Some(y), Some(z)] => Some([x, y, z]),
                    _ => None,
                },
                voxel_mm: match voxels {
                    [Some(x), Some(y), Some(z)] => Some([x, y, z]),
                    _ => None,
                },
                datatype: r.get(14)?,
                orientation: r.get(15)?,
                manufacturer: r.get(16)?,
                field_strength: r.get(17)?,
                series_description: r.get(18)?,
            })
        })()
        .map_err(db)?;
        Ok(Some(facts))
    }

    /// The stored PNG preview slices of an image, as (plane name, PNG bytes).
    pub fn image_previews(&self, image_id: i64) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let db = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(include_str!("../../sql/store/image_previews.sql"))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![image_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    pub fn image_predictions(&self, image_id: i64) -> Result<Vec<PredictionInForce>, StoreError> {
        let db = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(include_str!("../../sql/store/image_predictions.sql"))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![image_id], |r| {
                Ok(PredictionInForce {
                    run_id: r.get(0)?,
                    task: r.get(1)?,
                    label: r.get(2)?,
                    probability: r.get(3)?,
                    error: r.get(4)?,
                    predicted_at: r.get(5)?,
                    reason: r.get(6)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    pub fn image_ratings(&self, image_id: i64) -> Result<Vec<RatingInForce>, StoreError> {
        let db = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(include_str!("../../sql/store/image_ratings.sql"))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![image_id], |r| {
                Ok(RatingInForce {
                    rater: r.get(0)?,
                    code: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    usable: r.get(2)?,
                    gado: r.get(3)?,
                    motion: r.get(4)?,
                    contrast: r.get(5)?,
                    noise: r.get(6)?,
                    review_later: r.get(7)?,
                    saved_at: r.get(8)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    /// The next images for a rater: their queue when they have one, else every usable
    /// image they have not rated, at most `limit`.
    pub fn rate_work(&self, rater: &str, limit: usize) -> Result<RateWork, StoreError> {
        let db = |e| self.err(e);
        let from_queue: bool = self
            .conn
            .prepare(include_str!("../../sql/store/rater_has_queue.sql"))
            .map_err(db)?
            .query_row(params![rater], |r| r.get(0))
            .map_err(db)?;
        let sql = if from_queue {
            include_str!("../../sql/store/rate_queue.sql")
        } else {
            include_str!("../../sql/store/rate_unqueued.sql")
        };
        let mut stmt = self.conn.prepare(sql).map_err(db)?;
        let rows = stmt
            .query_map(params![rater, limit as i64], |r| {
                let image_id: i64 = r.get(0)?;
                let queue = if from_queue {
                    Some((r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
                } else {
                    None
                };
                Ok((image_id, queue))
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        let mut work = RateWork {
            from_queue,
            ..RateWork::default()
        };
        for (image_id, queue) in rows {
            work.image_ids.push(image_id);
            if let Some(queue) = queue {
                work.queues.entry(image_id).or_insert(queue);
            }
        }
        Ok(work)
    }

    // Reads prepare afresh: DuckDB 1.5.6 statements kept prepared on a reader
    // connection returned corrupted strings once another connection had changed the
    // rows they read (see the test `a_reader_sees_runs_recorded_by_the_writer`).
    fn rows<T>(
        &self,
        sql: &str,
        map: impl FnMut(&duckdb::Row<'_>) -> duckdb::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let db = |e| self.err(e);
        let mut stmt = self.conn.prepare(sql).map_err(db)?;
        let rows = stmt.query_map([], map).map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }
}

/// One line of the image browser from its query's nine columns.
fn list_row(r: &duckdb::Row<'_>) -> duckdb::Result<ImageListRow> {
    Ok(ImageListRow {
        image_id: r.get(0)?,
        subject: r.get(1)?,
        session: r.get(2)?,
        suffix: r.get(3)?,
        status: r.get(4)?,
        shape: r.get(5)?,
        orientation: r.get(6)?,
        rated_by: r.get(7)?,
        predicted: r.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_runs_recorded_by_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        let reader = store.reader().expect("reader");
        assert!(
            reader
                .dashboard_summary(true)
                .expect("summary")
                .runs
                .is_empty()
        );
        store
            .begin_run(&crate::store::runs::NewRun {
                run_id: "r1".into(),
                kind: "train".into(),
                task: Some("usable".into()),
                config: "{}".into(),
                ..Default::default()
            })
            .expect("begin");
        for status in ["running", "completed"] {
            if status == "completed" {
                store
                    .set_run_status(
                        "r1",
                        status,
                        Some(r#"{"test_balanced_accuracy":1.0}"#),
                        None,
                    )
                    .expect("status");
            }
            let runs = reader.dashboard_summary(true).expect("summary").runs;
            assert_eq!(runs.len(), 1);
            assert_eq!(
                (
                    runs[0].run_id.as_str(),
                    runs[0].kind.as_str(),
                    runs[0].status.as_str()
                ),
                ("r1", "train", status)
            );
        }
    }

    #[test]
    fn empty_store_gives_empty_summaries_and_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        assert_eq!(
            store.dashboard_summary(true).expect("summary"),
            DashboardSummary::default()
        );
        let page = store
            .image_page(&ImageFilter::default(), 0, 50, None)
            .expect("page");
        assert_eq!(page.total, 0);
        assert!(store.image_facts(1).expect("facts").is_none());
        let work = store.rate_work("ann", 10).expect("work");
        assert!(!work.from_queue && work.image_ids.is_empty());
    }

    #[test]
    fn filters_and_pages_follow_image_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        store
            .conn()
            .execute_batch(
                "INSERT INTO images (path, root, rel_path, status, subject, suffix, file_size, mtime_ns) \
                 SELECT 'p' || i, 'r', 'p' || i, CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'ok' END, \
                        'sub' || (i % 7), CASE WHEN i % 2 = 0 THEN 'T1w' ELSE 'FLAIR' END, 0, 0 \
                 FROM range(1, 101) t(i)",
            )
            .expect("insert");
        let all = store
            .image_page(&ImageFilter::default(), 10, 5, None)
            .expect("page");
        assert_eq!(all.total, 100);
        assert_eq!(
            all.rows.iter().map(|r| r.image_id).collect::<Vec<_>>(),
            vec![11, 12, 13, 14, 15]
        );
        let failed = ImageFilter {
            status: Some("failed".into()),
            ..ImageFilter::default()
        };
        assert_eq!(
            store.image_page(&failed, 0, 100, None).expect("page").total,
            10
        );
        store
            .save_ratings(&[crate::store::ratings::NewRating {
                image_id: 3,
                rater: "ann".into(),
                usable: true,
                source: "test".into(),
                ..Default::default()
            }])
            .expect("save");
        let rated = ImageFilter {
            rated: Some(true),
            ..ImageFilter::default()
        };
        let page = store.image_page(&rated, 0, 100, None).expect("page");
        assert_eq!((page.total, page.rows[0].rated_by), (1, 1));
        let work = store.rate_work("ann", 3).expect("work");
        assert_eq!(work.image_ids, vec![1, 2, 4]);
        let search = ImageFilter {
            subject: Some("SUB3".into()),
            ..ImageFilter::default()
        };
        assert!(store.image_page(&search, 0, 100, None).expect("page").total > 0);
    }
}
