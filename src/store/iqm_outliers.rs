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
        let db = |e| self.err(e);
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/iqm_groups.sql"))
            .map_err(db)?;
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
