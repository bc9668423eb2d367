//! The `images`, `previews` and `imports` tables: what the importer writes and reads.

use std::collections::HashMap;

use duckdb::params;
use serde::Serialize;

use super::{Store, StoreError};

/// Everything the store keeps about one image file (one `images` row).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImageRow {
    pub path: String,
    pub root: String,
    pub rel_path: String,
    pub status: ImageStatus,
    pub error: Option<String>,
    pub warnings: Option<String>,
    pub subject: Option<String>,
    pub session: Option<String>,
    pub acq: Option<String>,
    pub rec: Option<String>,
    pub run: Option<String>,
    pub suffix: Option<String>,
    pub bids_datatype: Option<String>,
    pub other_entities: Option<String>,
    pub file_size: i64,
    pub mtime_ns: i64,
    pub sha256: Option<String>,
    pub header: Option<HeaderFacts>,
    pub intensity: Option<crate::imaging::stats::IntensitySummary>,
    pub sidecar: Option<crate::imaging::sidecar::Sidecar>,
}

/// Header facts of a readable image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderFacts {
    pub nifti_version: u8,
    pub dims: [i64; 3],
    pub n_volumes: i64,
    pub voxel_size: [f64; 3],
    pub datatype: String,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub qform_code: i32,
    pub sform_code: i32,
    pub affine_source: String,
    pub orientation: String,
    pub affine: [[f64; 4]; 4],
    pub intent_code: i32,
    pub description: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    #[default]
    Ok,
    Failed,
    Missing,
}

impl ImageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Missing => "missing",
        }
    }
}

/// One preview slice ready for the `previews` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRow {
    pub plane: &'static str,
    pub width: u32,
    pub height: u32,
    pub png: Vec<u8>,
}

/// What the store knows of a file from an earlier import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFile {
    pub image_id: i64,
    pub file_size: i64,
    pub mtime_ns: i64,
    pub sha256: Option<String>,
    pub status: String,
}

/// A write the importer hands to the store; a batch of them is one transaction.
#[derive(Debug, Clone)]
pub enum ImageWrite {
    Upsert {
        row: Box<ImageRow>,
        previews: Vec<PreviewRow>,
        /// Quality metrics of a readable 3D image; `None` drops stale ones.
        iqm: Option<Box<super::iqms::IqmRow>>,
    },
    /// Same content, new modification time.
    Touch { image_id: i64, mtime_ns: i64 },
}

impl Store {
    /// Files the store already holds under `root`, by absolute path.
    pub fn known_files(&self, root: &str) -> Result<HashMap<String, KnownFile>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/known_files.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![root], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    KnownFile {
                        image_id: r.get(1)?,
                        file_size: r.get(2)?,
                        mtime_ns: r.get(3)?,
                        sha256: r.get(4)?,
                        status: r.get(5)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<HashMap<_, _>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Applies a batch of importer writes atomically: all of them or none.
    ///
    /// The batch is appended to connection-local staging tables (DuckDB's Appender,
    /// flushed explicitly so a bad value fails here and not on drop) and applied with a
    /// few set-based statements: one update of the known paths, one insert of the new
    /// ones, their previews replaced, new modification times recorded. Row-at-a-time
    /// upserts spent most of an import in DuckDB's per-statement overhead.
    pub fn apply_image_writes(&mut self, writes: &[ImageWrite]) -> Result<(), StoreError> {
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        if !self.staging_ready {
            self.conn()
                .execute_batch(include_str!("../../sql/store/stage_images_create.sql"))
                .map_err(db)?;
            self.staging_ready = true;
        }
        let tx = self.conn_mut().transaction().map_err(db)?;
        let staged = stage(&tx, writes).map_err(db)?;
        if staged.images > 0 {
            apply_staged_images(&tx).map_err(db)?;
            write_iqms(&tx).map_err(db)?;
        }
        if staged.touches > 0 {
            tx.execute_batch(include_str!("../../sql/store/apply_staged_touches.sql"))
                .map_err(db)?;
        }
        // Staged rows are part of the transaction: a failed batch leaves none behind.
        tx.execute_batch(include_str!("../../sql/store/stage_images_clear.sql"))
            .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Marks vanished files as missing; returns how many changed status.
    pub fn mark_missing(&mut self, image_ids: &[i64]) -> Result<usize, StoreError> {
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        let mut changed = 0;
        {
            let mut stmt = tx
                .prepare(include_str!("../../sql/store/mark_missing.sql"))
                .map_err(db)?;
            for id in image_ids {
                changed += stmt.execute(params![id]).map_err(db)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(changed)
    }

    /// Records the start of an import run.
    pub fn begin_import(&self, root: &str) -> Result<i64, StoreError> {
        self.conn()
            .execute_batch(include_str!("../../sql/store/interrupt_stale_imports.sql"))
            .map_err(|e| self.err(e))?;
        self.conn()
            .query_row(
                "INSERT INTO imports (root, status) VALUES (?, 'running') RETURNING import_id",
                params![root],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Records the outcome of an import run.
    pub fn finish_import(
        &self,
        import_id: i64,
        status: &str,
        counts: [u64; 5],
    ) -> Result<(), StoreError> {
        let [added, updated, unchanged, failed, missing] = counts.map(|c| c as i64);
        self.conn()
            .execute(
                "UPDATE imports SET status = ?, finished_at = current_timestamp, added = ?, \
                 updated = ?, unchanged = ?, failed = ?, missing = ? WHERE import_id = ?",
                params![
                    status, added, updated, unchanged, failed, missing, import_id
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// Moves the staged image rows and previews into the store inside `tx`, recomputes the
/// touched images' rating and prediction summaries, and drops their stale quality
/// metrics (the caller writes the new ones): what every import path shares.
pub(super) fn apply_staged_images(tx: &duckdb::Transaction<'_>) -> duckdb::Result<()> {
    tx.execute_batch(include_str!("../../sql/store/apply_staged_images.sql"))?;
    // A new image row starts with empty summaries; ratings or predictions written for
    // its id before it existed (by hand) are counted here.
    let ids: Vec<i64> = tx
        .prepare(include_str!("../../sql/store/staged_image_ids.sql"))
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<i64>, _>>()
        })?;
    super::summaries::refresh_ratings(tx, ids.iter().copied())?;
    super::summaries::refresh_predictions(tx, ids)?;
    tx.execute_batch(include_str!("../../sql/store/delete_staged_iqms.sql"))
}

/// How many rows a batch staged.
struct Staged {
    images: usize,
    touches: usize,
}

/// Appends a batch to the staging tables. A path written twice in one batch keeps its
/// last write, as one statement per write in order would have left it.
fn stage(conn: &duckdb::Connection, writes: &[ImageWrite]) -> duckdb::Result<Staged> {
    let last_write = last_writes(writes);
    let mut images = conn.appender_to_catalog_and_db("stage_images", "temp", "main")?;
    let mut previews = conn.appender_to_catalog_and_db("stage_previews", "temp", "main")?;
    let mut touches = conn.appender_to_catalog_and_db("stage_touches", "temp", "main")?;
    let mut iqms = conn.appender_to_catalog_and_db("stage_iqms", "temp", "main")?;
    let mut staged = Staged {
        images: 0,
        touches: 0,
    };
    for (at, write) in writes.iter().enumerate() {
        match write {
            ImageWrite::Upsert {
                row,
                previews: slices,
                iqm,
            } => {
                if last_write.get(row.path.as_str()) != Some(&at) {
                    continue;
                }
                append_image(&mut images, row)?;
                for p in slices {
                    previews.append_row(params![row.path, p.plane, p.width, p.height, p.png])?;
                }
                if let Some(iqm) = iqm {
                    let key = duckdb::types::Value::Text(row.path.clone());
                    iqms.append_row(duckdb::appender_params_from_iter(super::iqms::row_values(
                        key,
                        row.sha256.as_deref(),
                        iqm,
                    )))?;
                }
                staged.images += 1;
            }
            ImageWrite::Touch { image_id, mtime_ns } => {
                touches.append_row(params![image_id, mtime_ns])?;
                staged.touches += 1;
            }
        }
    }
    images.flush()?;
    previews.flush()?;
    touches.flush()?;
    iqms.flush()?;
    Ok(staged)
}

/// Where each path of a batch is written last: earlier writes of a path are dropped.
fn last_writes(writes: &[ImageWrite]) -> HashMap<&str, usize> {
    let mut last = HashMap::new();
    for (at, write) in writes.iter().enumerate() {
        if let ImageWrite::Upsert { row, .. } = write {
            last.insert(row.path.as_str(), at);
        }
    }
    last
}

/// Moves the staged metrics of a batch's images into `iqms`, once the staged rows gave
/// them their ids. One row per image appended and one statement for the batch: a
/// lookup and an upsert per image cost small files 45x their import time.
fn write_iqms(conn: &duckdb::Connection) -> duckdb::Result<()> {
    conn.execute_batch(include_str!("../../sql/store/apply_staged_iqms.sql"))
}

fn append_image(appender: &mut duckdb::Appender<'_>, row: &ImageRow) -> duckdb::Result<()> {
    let h = row.header.as_ref();
    let i = row.intensity.as_ref();
    let s = row.sidecar.as_ref();
    let affine = h.map(|h| serde_json::to_string(&h.affine).unwrap_or_default());
    appender.append_row(params![
        row.path,
        row.root,
        row.rel_path,
        row.status.as_str(),
        row.error,
        row.warnings,
        row.subject,
        row.session,
        row.acq,
        row.rec,
        row.run,
        row.suffix,
        row.bids_datatype,
        row.other_entities,
        row.file_size,
        row.mtime_ns,
        row.sha256,
        h.map(|h| h.nifti_version),
        h.map(|h| h.dims[0]),
        h.map(|h| h.dims[1]),
        h.map(|h| h.dims[2]),
        h.map(|h| h.n_volumes),
        h.map(|h| h.voxel_size[0]),
        h.map(|h| h.voxel_size[1]),
        h.map(|h| h.voxel_size[2]),
        h.map(|h| h.datatype.clone()),
        h.map(|h| h.scl_slope),
        h.map(|h| h.scl_inter),
        h.map(|h| h.qform_code),
        h.map(|h| h.sform_code),
        h.map(|h| h.affine_source.clone()),
        h.map(|h| h.orientation.clone()),
        affine,
        h.map(|h| h.intent_code),
        h.map(|h| h.description.clone()),
        i.map(|i| i.min),
        i.map(|i| i.max),
        i.map(|i| i.mean),
        i.map(|i| i.std),
        i.map(|i| i.p01),
        i.map(|i| i.p50),
        i.map(|i| i.p99),
        i.map(|i| i.zero_fraction),
        i.map(|i| i.nonfinite as i64),
        s.and_then(|s| s.manufacturer.clone()),
        s.and_then(|s| s.model.clone()),
        s.and_then(|s| s.field_strength),
        s.and_then(|s| s.acquisition_type.clone()),
        s.and_then(|s| s.series_description.clone()),
        s.and_then(|s| s.protocol_name.clone()),
        s.and_then(|s| s.institution.clone()),
        s.and_then(|s| s.station.clone()),
        s.map(|s| s.raw.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(path: &str, status: ImageStatus, planes: &[&'static str]) -> ImageWrite {
        ImageWrite::Upsert {
            row: Box::new(ImageRow {
                path: path.into(),
                root: "/r".into(),
                rel_path: path.trim_start_matches("/r/").into(),
                status,
                file_size: 10,
                mtime_ns: 1,
                ..ImageRow::default()
            }),
            previews: planes
                .iter()
                .map(|&plane| PreviewRow {
                    plane,
                    width: 2,
                    height: 1,
                    png: vec![status as u8, 1],
                })
                .collect(),
            iqm: None,
        }
    }

    fn state(store: &Store) -> Vec<(i64, String, String, i64, i64)> {
        let mut stmt = store
            .conn()
            .prepare(
                "SELECT image_id, path, status, mtime_ns,
                        (SELECT count(*) FROM previews p WHERE p.image_id = i.image_id)
                 FROM images i ORDER BY image_id",
            )
            .expect("prepare");
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    #[test]
    fn an_import_killed_before_it_ended_is_marked_interrupted_by_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        let killed = store.begin_import("/r").expect("begin");
        let done = store.begin_import("/r").expect("begin");
        store
            .finish_import(done, "completed", [1, 0, 0, 0, 0])
            .expect("finish");
        let statuses: Vec<(i64, String)> = {
            let mut stmt = store
                .conn()
                .prepare("SELECT import_id, status FROM imports ORDER BY import_id")
                .expect("prepare");
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(
            statuses,
            [
                (killed, "interrupted".to_string()),
                (done, "completed".to_string())
            ]
        );
    }

    #[test]
    fn staged_batches_insert_update_touch_and_keep_image_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        let all = ["axial", "coronal", "sagittal"];
        store
            .apply_image_writes(&[
                upsert("/r/a.nii", ImageStatus::Ok, &all),
                upsert("/r/b.nii", ImageStatus::Ok, &all),
            ])
            .expect("first batch");
        let first = state(&store);
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|r| r.2 == "ok" && r.4 == 3));
        let (a, b) = (first[0].0, first[1].0);
        // b stops being readable (its previews go), a is rewritten twice in one batch
        // (the last write wins), c is new, and a touch changes only a time.
        store
            .apply_image_writes(&[
                upsert("/r/a.nii", ImageStatus::Failed, &[]),
                upsert("/r/b.nii", ImageStatus::Failed, &[]),
                upsert("/r/c.nii", ImageStatus::Ok, &["axial"]),
                upsert("/r/a.nii", ImageStatus::Ok, &["axial", "coronal"]),
            ])
            .expect("second batch");
        store
            .apply_image_writes(&[ImageWrite::Touch {
                image_id: b,
                mtime_ns: 99,
            }])
            .expect("touch");
        let second = state(&store);
        assert_eq!(second.len(), 3);
        assert_eq!(second[0], (a, "/r/a.nii".into(), "ok".into(), 1, 2));
        assert_eq!(second[1], (b, "/r/b.nii".into(), "failed".into(), 99, 0));
        assert_eq!((&second[2].1[..], second[2].4), ("/r/c.nii", 1));
        assert!(second[2].0 > b);
        // Nothing stays staged between batches.
        let staged: i64 = store
            .conn()
            .query_row(
                "SELECT (SELECT count(*) FROM stage_images) + (SELECT count(*) FROM stage_previews)
                      + (SELECT count(*) FROM stage_touches)",
                [],
                |r| r.get(0),
            )
            .expect("staged");
        assert_eq!(staged, 0);
    }

    #[test]
    fn staged_metrics_land_in_their_columns_and_the_last_write_wins() {
        use crate::imaging::iqm::COLUMNS;
        use crate::store::iqms::IqmRow;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        let with_metrics = |path: &str, first: f64, error: Option<&str>| {
            let mut write = upsert(path, ImageStatus::Ok, &["axial"]);
            if let ImageWrite::Upsert { row, iqm, .. } = &mut write {
                row.sha256 = Some(format!("sha-{first}"));
                *iqm = Some(Box::new(IqmRow {
                    contrast: "t1".into(),
                    // Each metric its own value: a shifted column would show.
                    values: error
                        .is_none()
                        .then(|| (0..COLUMNS.len()).map(|i| first + i as f64).collect()),
                    error: error.map(str::to_string),
                    seconds: 0.5,
                }));
            }
            write
        };
        store
            .apply_image_writes(&[
                with_metrics("/r/a.nii", 1.0, None),
                with_metrics("/r/b.nii", 100.0, None),
                with_metrics("/r/a.nii", 10.0, None),
            ])
            .expect("first batch");
        // b is rewritten without metrics (they go), c's could not be computed.
        store
            .apply_image_writes(&[
                upsert("/r/b.nii", ImageStatus::Ok, &["axial"]),
                with_metrics("/r/c.nii", 0.0, Some("image too small")),
            ])
            .expect("second batch");
        let last = COLUMNS[COLUMNS.len() - 1];
        let mut stmt = store
            .conn()
            .prepare(&format!(
                "SELECT i.path, q.sha256, q.contrast, q.seconds, q.error, q.cjv, q.{last}
                 FROM iqms q JOIN images i USING (image_id) ORDER BY i.path"
            ))
            .expect("prepare");
        type Stored = (
            String,
            String,
            String,
            f64,
            Option<String>,
            Option<f64>,
            Option<f64>,
        );
        let rows: Vec<Stored> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let top = 10.0 + (COLUMNS.len() - 1) as f64;
        assert_eq!(
            rows,
            vec![
                (
                    "/r/a.nii".into(),
                    "sha-10".into(),
                    "t1".into(),
                    0.5,
                    None,
                    Some(10.0),
                    Some(top)
                ),
                (
                    "/r/c.nii".into(),
                    "sha-0".into(),
                    "t1".into(),
                    0.5,
                    Some("image too small".into()),
                    None,
                    None
                ),
            ]
        );
        let staged: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM stage_iqms", [], |r| r.get(0))
            .expect("staged");
        assert_eq!(staged, 0);
    }

    #[test]
    fn a_failed_batch_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        store
            .apply_image_writes(&[upsert("/r/a.nii", ImageStatus::Ok, &["axial"])])
            .expect("first batch");
        let before = state(&store);
        // Two previews of one plane break the previews key: the whole batch is refused.
        let broken = upsert("/r/b.nii", ImageStatus::Ok, &["axial", "axial"]);
        assert!(
            store
                .apply_image_writes(&[upsert("/r/a.nii", ImageStatus::Failed, &[]), broken])
                .is_err()
        );
        assert_eq!(state(&store), before);
        store
            .apply_image_writes(&[upsert("/r/c.nii", ImageStatus::Ok, &["axial"])])
            .expect("the next batch still works");
        assert_eq!(state(&store).len(), 2);
    }
}
