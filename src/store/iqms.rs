//! The `iqms` table: MRIQC's image quality metrics per image and metric version.

use duckdb::params;
use duckdb::types::Value;

use super::{Store, StoreError};
use crate::imaging::iqm::{COLUMNS, IQM_VERSION};

/// One image's metrics (or why there are none), ready for the `iqms` table.
#[derive(Debug, Clone, PartialEq)]
pub struct IqmRow {
    pub contrast: String,
    /// In [`COLUMNS`] order; `None` when the metrics could not be computed.
    pub values: Option<Vec<f64>>,
    pub error: Option<String>,
    pub seconds: f64,
}

/// A stored image waiting for its metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIqm {
    pub image_id: i64,
    pub path: String,
    pub suffix: Option<String>,
    pub sha256: Option<String>,
    /// Size and modification time at import.
    pub stamp: crate::import::analyse::FileStamp,
}

/// One exported row: the image's path and sequence, and its metrics in [`COLUMNS`]
/// order (`None` for a value that was not finite).
#[derive(Debug, Clone, PartialEq)]
pub struct IqmExportRow {
    pub path: String,
    pub suffix: String,
    pub values: Vec<Option<f64>>,
}

/// One image's metrics as classifier features: its scanner group and its metrics in
/// [`COLUMNS`] order (`None` for a value that was not finite).
#[derive(Debug, Clone, PartialEq)]
pub struct IqmFeatures {
    pub image_id: i64,
    pub scanner: String,
    pub values: Vec<Option<f64>>,
}

/// Writes one row with a statement prepared from `sql/store/upsert_iqm.sql`.
pub(crate) fn upsert_iqm(
    stmt: &mut duckdb::Statement<'_>,
    image_id: i64,
    sha256: Option<&str>,
    row: &IqmRow,
) -> duckdb::Result<()> {
    let values = row_values(Value::BigInt(image_id), sha256, row);
    stmt.execute(duckdb::params_from_iter(values)).map(|_| ())
}

/// A row's values after its key (an image id, or a path when staged): the metric
/// version, the content's hash, the contrast, the seconds, the error, and the metrics in
/// [`COLUMNS`] order (NULL where not finite).
pub(crate) fn row_values(key: Value, sha256: Option<&str>, row: &IqmRow) -> Vec<Value> {
    let mut values: Vec<Value> = vec![
        key,
        Value::Int(IQM_VERSION),
        sha256.map_or(Value::Null, |s| Value::Text(s.to_string())),
        Value::Text(row.contrast.clone()),
        Value::Double(row.seconds),
        row.error.clone().map_or(Value::Null, Value::Text),
    ];
    for i in 0..COLUMNS.len() {
        let v = row.values.as_ref().and_then(|v| v.get(i).copied());
        values.push(match v {
            Some(x) if x.is_finite() => Value::Double(x),
            _ => Value::Null,
        });
    }
    values
}

impl Store {
    /// Stored ok 3D images without metrics of this version for their current content
    /// (every ok 3D image with `all`).
    pub fn pending_iqms(&self, all: bool) -> Result<Vec<PendingIqm>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/iqm_pending.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![IQM_VERSION, all], |r| {
                Ok(PendingIqm {
                    image_id: r.get(0)?,
                    path: r.get(1)?,
                    suffix: r.get(2)?,
                    sha256: r.get(3)?,
                    stamp: crate::import::analyse::FileStamp {
                        size: r.get(4)?,
                        mtime_ns: r.get(5)?,
                    },
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Writes a batch of metrics atomically.
    pub fn write_iqms(&mut self, rows: &[(PendingIqm, IqmRow)]) -> Result<(), StoreError> {
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached(include_str!("../../sql/store/upsert_iqm.sql"))
                .map_err(db)?;
            for (image, row) in rows {
                upsert_iqm(&mut stmt, image.image_id, image.sha256.as_deref(), row).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Metrics of this version of every ok image measured on its current content, with
    /// its scanner group, in image order.
    pub fn iqm_features(&self) -> Result<Vec<IqmFeatures>, StoreError> {
        self.metric_rows(
            include_str!("../../sql/store/iqm_features.sql"),
            |r, values| {
                Ok(IqmFeatures {
                    image_id: r.get(0)?,
                    scanner: r.get(1)?,
                    values,
                })
            },
        )
    }

    /// Metrics of this version of every ok image, for export.
    pub fn iqm_export_rows(&self) -> Result<Vec<IqmExportRow>, StoreError> {
        self.metric_rows(
            include_str!("../../sql/store/iqm_export.sql"),
            |r, values| {
                Ok(IqmExportRow {
                    path: r.get(0)?,
                    suffix: r.get(1)?,
                    values,
                })
            },
        )
    }

    /// Rows of `sql` (parameter: this metric version): two leading columns that `row`
    /// reads, then the metrics in [`COLUMNS`] order.
    fn metric_rows<T>(
        &self,
        sql: &str,
        row: impl Fn(&duckdb::Row<'_>, Vec<Option<f64>>) -> duckdb::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        const FIRST_METRIC: usize = 2;
        let mut stmt = self.conn().prepare(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![IQM_VERSION]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let values = (0..COLUMNS.len())
                .map(|i| r.get::<_, Option<f64>>(FIRST_METRIC + i))
                .collect::<duckdb::Result<Vec<_>>>()
                .map_err(|e| self.err(e))?;
            out.push(row(r, values).map_err(|e| self.err(e))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(sql: &str) -> Vec<String> {
        sql.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("--"))
            .flat_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn sql_files_name_every_metric_column_in_order() {
        let insert = names_in(include_str!("../../sql/store/upsert_iqm.sql"));
        let table = names_in(include_str!("../../sql/migrations/007_iqms.sql"));
        let in_order = |words: &[String]| -> Vec<String> {
            words
                .iter()
                .filter(|w| COLUMNS.contains(&w.as_str()))
                .cloned()
                .collect()
        };
        let want: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        assert_eq!(in_order(&insert), want);
        assert_eq!(in_order(&table), want);
        let placeholders = include_str!("../../sql/store/upsert_iqm.sql")
            .matches('?')
            .count();
        assert_eq!(placeholders, 6 + COLUMNS.len());
    }
}
