//! Loading the parts of a sharded import into the store: every file's row, previews and
//! quality metrics in one transaction, with the files the store changed since the work
//! list was frozen left alone.

use std::path::{Path, PathBuf};

use super::{Store, StoreError};

/// What a merge of import parts did, file by file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportMergeCounts {
    /// New readable files.
    pub added: u64,
    /// Changed readable files.
    pub updated: u64,
    /// New or changed files that cannot be indexed (stored with their reason).
    pub failed: u64,
    pub touched: u64,
    pub unchanged: u64,
    pub missing: u64,
    /// Held by the store already, as the parts say (merged before).
    pub merged_before: u64,
    /// Changed in the store since the work list was frozen: left as stored.
    pub moved: u64,
}

impl ImportMergeCounts {
    /// Rows the merge wrote.
    pub fn written(&self) -> u64 {
        self.added + self.updated + self.failed + self.touched + self.missing
    }
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "''"))
}

impl Store {
    /// The import staging table's columns, in order (created if need be).
    pub fn staged_image_columns(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        conn.execute_batch(include_str!("../../sql/store/stage_images_create.sql"))
            .map_err(|e| self.err(e))?;
        let mut stmt = conn
            .prepare(include_str!("../../sql/store/stage_columns.sql"))
            .map_err(|e| self.err(e))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(names)
    }

    /// Applies checked import parts (`parts`, made from the work list at `list`) in one
    /// transaction: all of it or nothing.
    pub fn merge_import_parts(
        &mut self,
        list: &Path,
        parts: &[PathBuf],
    ) -> Result<ImportMergeCounts, StoreError> {
        let columns: Vec<String> = self
            .staged_image_columns()?
            .iter()
            .map(|c| format!("p.\"{}\"", c.replace('"', "\"\"")))
            .collect();
        self.staging_ready = true;
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let part_list = format!(
            "[{}]",
            parts
                .iter()
                .map(|p| quoted(p))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let tx = self.conn_mut().transaction().map_err(db)?;
        tx.execute_batch(
            &include_str!("../../sql/store/merge_import_load.sql")
                .replace("{parts}", &part_list)
                .replace("{list}", &quoted(list)),
        )
        .map_err(db)?;
        let mut counts = ImportMergeCounts::default();
        {
            let mut stmt = tx
                .prepare(include_str!("../../sql/store/merge_import_counts.sql"))
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (action, status, n) = row.map_err(db)?;
                let n = n.max(0) as u64;
                let failed = status == "failed";
                match action.as_str() {
                    "add" | "update" if failed => counts.failed += n,
                    "add" => counts.added += n,
                    "update" => counts.updated += n,
                    "touch" => counts.touched += n,
                    "unchanged" => counts.unchanged += n,
                    "missing" => counts.missing += n,
                    "merged" => counts.merged_before += n,
                    _ => counts.moved += n,
                }
            }
        }
        tx.execute_batch(
            &include_str!("../../sql/store/merge_import_stage.sql")
                .replace("{columns}", &columns.join(", ")),
        )
        .map_err(db)?;
        super::images::apply_staged_images(&tx).map_err(db)?;
        tx.execute_batch(include_str!("../../sql/store/merge_import_finish.sql"))
            .map_err(db)?;
        tx.execute_batch(include_str!("../../sql/store/apply_staged_touches.sql"))
            .map_err(db)?;
        tx.execute_batch(include_str!("../../sql/store/stage_images_clear.sql"))
            .map_err(db)?;
        tx.execute_batch(include_str!("../../sql/store/merge_import_drop.sql"))
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(counts)
    }
}
