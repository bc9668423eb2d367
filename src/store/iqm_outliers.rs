//! The per-scanner IQM outliers as the dashboard reads them: one image's newest
//! metrics, the groups of the `iqm_outliers` view (migration 008) read once, and the
//! robust z-scores and flags of an image computed against them exactly as the view does.

use std::collections::HashMap;

use duckdb::params;

use super::{Store, StoreError};

/// The view's screening metrics, in its order (and that of `image_iqms.sql`).
pub const SCREENING: [&str; 10] = [
    "snr_total",
    "snrd_total",
    "cnr",
    "cjv",
    "efc",
    "fber",
    "wm2max",
    "qi_1",
    "fwhm_avg",
    "inu_range",
];

/// The view's modified z-score scale (Iglewicz and Hoaglin).
const Z_SCALE: f64 = 0.6745;
/// `|z|` above this is an outlier...
const Z_LIMIT: f64 = 3.5;
/// ...in a group of at least this many images.
const MIN_GROUP: i64 = 5;

/// One image's newest stored metrics and the group it is scored in.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageIqms {
    pub iqm_version: i32,
    /// Why the metrics could not be computed; the values are then all `None`.
    pub error: Option<String>,
    pub suffix: Option<String>,
    /// Vendor and field strength, or `unknown`, as `iqm_outliers` groups them.
    pub scanner: String,
    /// In [`SCREENING`] order; `None` for a value that was not finite.
    pub values: [Option<f64>; 10],
}

/// One group's statistics of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IqmGroup {
    pub median: Option<f64>,
    pub mad: Option<f64>,
    pub images: i64,
}

/// Every group of `iqm_outliers`: (sequence, scanner, metric) to its statistics, for
/// the newest metric version in the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IqmGroups {
    /// `None` when no image has metrics.
    pub iqm_version: Option<i32>,
    pub groups: HashMap<(String, String, String), IqmGroup>,
}

/// One metric of an image, scored in its group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IqmScore {
    pub metric: &'static str,
    pub value: Option<f64>,
    /// `None` without a value, a group or with a MAD of 0.
    pub robust_z: Option<f64>,
    pub outlier: bool,
}

impl IqmGroups {
    /// An image's screening metrics scored against its group, in [`SCREENING`] order.
    /// Metrics of another version than the groups' get no z-score (the view leaves
    /// them out).
    pub fn score(&self, iqms: &ImageIqms) -> Vec<IqmScore> {
        let current = self.iqm_version == Some(iqms.iqm_version) && iqms.error.is_none();
        SCREENING
            .iter()
            .zip(iqms.values)
            .map(|(&metric, value)| {
                let group = match (&iqms.suffix, value) {
                    (Some(suffix), Some(_)) if current => {
                        self.groups
                            .get(&(suffix.clone(), iqms.scanner.clone(), metric.to_string()))
                    }
                    _ => None,
                };
                let (robust_z, outlier) = match (value, group) {
                    (Some(x), Some(g)) => score_in(x, g),
                    _ => (None, false),
                };
                IqmScore {
                    metric,
                    value,
                    robust_z,
                    outlier,
                }
            })
            .collect()
    }

    /// The size of the group an image is scored in (its largest over the metrics).
    pub fn group_size(&self, iqms: &ImageIqms) -> Option<i64> {
        let suffix = iqms.suffix.as_ref()?;
        SCREENING
            .iter()
            .filter_map(|m| {
                self.groups
                    .get(&(suffix.clone(), iqms.scanner.clone(), m.to_string()))
            })
            .map(|g| g.images)
            .max()
    }
}

/// The view's z-score and flag, with its arithmetic in its order.
fn score_in(x: f64, group: &IqmGroup) -> (Option<f64>, bool) {
    match (group.median, group.mad) {
        (Some(median), Some(mad)) if mad > 0.0 => {
            let z = Z_SCALE * (x - median) / mad;
            (Some(z), group.images >= MIN_GROUP && z.abs() > Z_LIMIT)
        }
        _ => (None, false),
    }
}

impl Store {
    /// The image's metrics of its highest stored version, `None` without any.
    pub fn image_iqms(&self, image_id: i64) -> Result<Option<ImageIqms>, StoreError> {
        let db = |e| self.err(e);
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/image_iqms.sql"))
            .map_err(db)?;
        let mut rows = stmt.query(params![image_id]).map_err(db)?;
        let Some(r) = rows.next().map_err(db)? else {
            return Ok(None);
        };
        let iqms = (|| -> duckdb::Result<ImageIqms> {
            let mut values = [None; 10];
            for (i, v) in values.iter_mut().enumerate() {
                *v = r.get::<_, Option<f64>>(4 + i)?;
            }
            Ok(ImageIqms {
                iqm_version: r.get(0)?,
                error: r.get(1)?,
                suffix: r.get(2)?,
                scanner: r.get(3)?,
                values,
            })
        })()
        .map_err(db)?;
        Ok(Some(iqms))
    }

    /// The groups of `iqm_outliers`: one pass over the metrics of the newest version.
    pub fn iqm_groups(&self) -> Result<IqmGroups, StoreError> {
        self.read_iqm_groups(include_str!("../../sql/store/iqm_groups.sql"))
    }

    /// [`Store::iqm_groups`], then every image's outlier flag against those groups into
    /// [`shared_flags_table`]`(epoch)`, which every connection of this DuckDB instance
    /// sees: the image list's connection joins it for the IQM filter instead of
    /// computing the groups' medians again on the keys' path. Tables of earlier epochs
    /// are dropped.
    pub fn iqm_groups_with_shared_flags(&self, epoch: u64) -> Result<IqmGroups, StoreError> {
        let db = |e| self.err(e);
        self.conn()
            .execute_batch(include_str!("../../sql/store/iqm_group_stats.sql"))
            .map_err(db)?;
        self.conn()
            .execute_batch(&format!(
                "INSERT INTO temp.iqm_group_stats\n{}",
                include_str!("../../sql/store/iqm_groups.sql")
            ))
            .map_err(db)?;
        let groups = self.read_iqm_groups("SELECT * FROM temp.iqm_group_stats")?;
        // The flags are a cache: the list's connection computes them itself when this
        // table is not there, so failing to build it does not fail the groups.
        let _ = self.build_shared_flags(epoch);
        Ok(groups)
    }

    /// Every image's outlier flag against `temp.iqm_group_stats` into
    /// [`shared_flags_table`]`(epoch)`; earlier epochs' tables dropped.
    fn build_shared_flags(&self, epoch: u64) -> Result<(), StoreError> {
        let db = |e| self.err(e);
        let table = shared_flags_table(epoch);
        self.conn()
            .execute_batch(&format!(
                "ATTACH IF NOT EXISTS ':memory:' AS {SHARED_CACHE};\n\
                 CREATE OR REPLACE TABLE {table} AS\n{}\n;",
                include_str!("../../sql/store/image_iqm_flags_from_groups.sql")
            ))
            .map_err(db)?;
        let older: Vec<String> = self
            .conn()
            .prepare(
                "SELECT table_name FROM duckdb_tables()
                 WHERE database_name = ? AND starts_with(table_name, ?)",
            )
            .map_err(db)?
            .query_map(params![SHARED_CACHE, FLAGS_PREFIX], |r| {
                r.get::<_, String>(0)
            })
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        for name in older {
            let earlier = name
                .strip_prefix(FLAGS_PREFIX)
                .and_then(|e| e.parse::<u64>().ok())
                .is_some_and(|e| e < epoch);
            if earlier {
                self.conn()
                    .execute_batch(&format!("DROP TABLE IF EXISTS {SHARED_CACHE}.{name}"))
                    .map_err(db)?;
            }
        }
        Ok(())
    }

    /// Whether [`Store::iqm_groups_with_shared_flags`] has built the flags of `epoch`.
    pub fn shared_flags_ready(&self, epoch: u64) -> Result<bool, StoreError> {
        let db = |e| self.err(e);
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                params![SHARED_CACHE, format!("{FLAGS_PREFIX}{epoch}")],
                |r| r.get(0),
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    /// Groups from `sql`, whose rows are those of `iqm_groups.sql`.
    fn read_iqm_groups(&self, sql: &str) -> Result<IqmGroups, StoreError> {
        let db = |e| self.err(e);
        let mut stmt = self.conn().prepare(sql).map_err(db)?;
        let mut rows = stmt.query([]).map_err(db)?;
        let mut out = IqmGroups::default();
        while let Some(r) = rows.next().map_err(db)? {
            // Images without a sequence join no group in the view either.
            let Some(suffix) = r.get::<_, Option<String>>(0).map_err(db)? else {
                continue;
            };
            let key = (suffix, r.get(1).map_err(db)?, r.get(2).map_err(db)?);
            let group = IqmGroup {
                median: r.get(3).map_err(db)?,
                mad: r.get(4).map_err(db)?,
                images: r.get(5).map_err(db)?,
            };
            out.iqm_version = r.get(6).map_err(db)?;
            out.groups.insert(key, group);
        }
        Ok(out)
    }
}

/// The in-memory database attached to the store's DuckDB instance, so seen by every
/// connection of this process, that holds the outlier flags computed off the keys'
/// path. It is never written to the store's file.
pub const SHARED_CACHE: &str = "dashboard_cache";

const FLAGS_PREFIX: &str = "iqm_flags_";

/// The table of [`SHARED_CACHE`] holding the outlier flags of `epoch`.
pub fn shared_flags_table(epoch: u64) -> String {
    format!("{SHARED_CACHE}.{FLAGS_PREFIX}{epoch}")
}
