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
    pub fn apply_image_writes(&mut self, writes: &[ImageWrite]) -> Result<(), StoreError> {
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        {
            let mut upsert = tx
                .prepare_cached(include_str!("../../sql/store/upsert_image.sql"))
                .map_err(db)?;
            let mut preview = tx
                .prepare_cached(include_str!("../../sql/store/replace_preview.sql"))
                .map_err(db)?;
            let mut touch = tx
                .prepare_cached(include_str!("../../sql/store/touch_image.sql"))
                .map_err(db)?;
            let mut iqm_upsert = tx
                .prepare_cached(include_str!("../../sql/store/upsert_iqm.sql"))
                .map_err(db)?;
            for write in writes {
                match write {
                    ImageWrite::Upsert { row, previews, iqm } => {
                        let image_id = upsert_row(&mut upsert, row).map_err(db)?;
                        match iqm {
                            Some(iqm) => super::iqms::upsert_iqm(
                                &mut iqm_upsert,
                                image_id,
                                row.sha256.as_deref(),
                                iqm,
                            )
                            .map_err(db)?,
                            // New content without metrics: the old content's are stale.
                            None => {
                                tx.execute(
                                    "DELETE FROM iqms WHERE image_id = ?",
                                    params![image_id],
                                )
                                .map_err(db)?;
                            }
                        }
                        if previews.is_empty() {
                            // A file that stopped being readable loses its stale previews.
                            tx.execute(
                                "DELETE FROM previews WHERE image_id = ?",
                                params![image_id],
                            )
                            .map_err(db)?;
                        }
                        for p in previews {
                            preview
                                .execute(params![image_id, p.plane, p.width, p.height, p.png])
                                .map_err(db)?;
                        }
                    }
                    ImageWrite::Touch { image_id, mtime_ns } => {
                        touch.execute(params![mtime_ns, image_id]).map_err(db)?;
                    }
                }
            }
        }
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

fn upsert_row(stmt: &mut duckdb::Statement<'_>, row: &ImageRow) -> duckdb::Result<i64> {
    let h = row.header.as_ref();
    let i = row.intensity.as_ref();
    let s = row.sidecar.as_ref();
    let affine = h.map(|h| serde_json::to_string(&h.affine).unwrap_or_default());
    stmt.query_row(
        params![
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
        ],
        |r| r.get(0),
    )
}
