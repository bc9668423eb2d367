//! Training and inference records: `runs`, `epochs`, `splits` and `predictions`.

use duckdb::params;
use serde::Serialize;

use super::{Store, StoreError};

/// The start of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewRun {
    pub run_id: String,
    /// `train` or `infer`.
    pub kind: String,
    pub task: Option<String>,
    pub method: Option<String>,
    pub preset: Option<String>,
    /// The full configuration as JSON.
    pub config: String,
    pub git_commit: Option<String>,
    pub split_id: Option<String>,
    pub label_snapshot: Option<String>,
    pub weights_path: Option<String>,
    /// The labelled source sequence (BIDS suffix) of a training run.
    pub source_sequence: Option<String>,
    /// The target sequence (BIDS suffix) of a training run.
    pub target_sequence: Option<String>,
}

/// One epoch's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EpochRow {
    pub epoch: i32,
    pub train_loss: Option<f64>,
    pub source_loss: Option<f64>,
    pub target_loss: Option<f64>,
    pub domain_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_balanced_accuracy: Option<f64>,
    pub alpha: Option<f64>,
    pub seconds: Option<f64>,
}

/// One image's place in a data split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitRow {
    pub image_id: i64,
    pub subject: Option<String>,
    /// `source` or `target`.
    pub domain: String,
    /// `train`, `validation`, `test` or `unlabelled`.
    pub set: String,
    pub label: Option<String>,
}

/// One model output for one image: probabilities and label, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PredictionRow {
    pub image_id: i64,
    pub task: String,
    pub label: Option<String>,
    pub probabilities: Option<Vec<f64>>,
    pub error: Option<String>,
    /// The domain head's probability of the target domain (SSDA networks only).
    #[serde(default)]
    pub domain_target: Option<f64>,
    /// Why the label was given without the network: the image does not register to
    /// the model's template, so a usability model stores it as a reject.
    #[serde(default)]
    pub reason: Option<String>,
}

impl PredictionRow {
    /// Runs an insert whose parameters are the predictions table's columns in order
    /// (run id, image, task, label, probabilities as JSON text, error, domain output,
    /// reason),
    /// as the store's and the cluster parts' inserts take them.
    pub(crate) fn execute(
        &self,
        stmt: &mut duckdb::Statement<'_>,
        run_id: &str,
    ) -> duckdb::Result<usize> {
        stmt.execute(params![
            run_id,
            self.image_id,
            self.task,
            self.label,
            self.probabilities_json(),
            self.error,
            self.domain_target,
            self.reason
        ])
    }

    /// The probabilities as the JSON array the predictions' `DOUBLE[]` column is cast
    /// from.
    pub fn probabilities_json(&self) -> Option<String> {
        self.probabilities
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_else(|_| "[]".into()))
    }
}

/// A run as listed for users.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub kind: String,
    pub task: Option<String>,
    pub method: Option<String>,
    pub status: String,
    pub metrics: Option<String>,
    pub started_at: String,
}

impl Store {
    pub fn begin_run(&self, run: &NewRun) -> Result<(), StoreError> {
        self.conn()
            .execute(
                include_str!("../../sql/store/begin_run.sql"),
                params![
                    run.run_id,
                    run.kind,
                    run.task,
                    run.method,
                    run.preset,
                    run.config,
                    run.git_commit,
                    run.split_id,
                    run.label_snapshot,
                    run.weights_path,
                    run.source_sequence,
                    run.target_sequence
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Sets a run's final status (`completed`, `failed`, `interrupted`), metrics JSON and
    /// error; `running` again when a run is resumed.
    pub fn set_run_status(
        &self,
        run_id: &str,
        status: &str,
        metrics: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let finished = status != "running";
        self.conn()
            .execute(
                "UPDATE runs SET status = ?, metrics = coalesce(?, metrics), error = ?, \
                 finished_at = CASE WHEN ? THEN current_timestamp ELSE NULL END WHERE run_id = ?",
                params![status, metrics, error, finished, run_id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn record_epoch(&self, run_id: &str, e: &EpochRow) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO epochs (run_id, epoch, train_loss, source_loss, target_loss, \
                 domain_loss, val_loss, val_balanced_accuracy, alpha, seconds) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    run_id,
                    e.epoch,
                    e.train_loss,
                    e.source_loss,
                    e.target_loss,
                    e.domain_loss,
                    e.val_loss,
                    e.val_balanced_accuracy,
                    e.alpha,
                    e.seconds
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Stores a split in one transaction.
    pub fn save_split(&mut self, split_id: &str, rows: &[SplitRow]) -> Result<(), StoreError> {
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO splits (split_id, image_id, subject, domain, \"set\", label) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .map_err(db)?;
            for r in rows {
                stmt.execute(params![
                    split_id, r.image_id, r.subject, r.domain, r.set, r.label
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Stores predictions in one transaction; a re-run of the same run replaces them.
    pub fn save_predictions(
        &mut self,
        run_id: &str,
        rows: &[PredictionRow],
    ) -> Result<(), StoreError> {
        let path = self.path().to_path_buf();
        let db = |source| super::classify(&path, source);
        let tx = self.conn_mut().transaction().map_err(db)?;
        let before = super::summaries::predictions_count(&tx).map_err(db)?;
        {
            let mut stmt = tx
                .prepare(include_str!("../../sql/store/save_prediction.sql"))
                .map_err(db)?;
            for r in rows {
                r.execute(&mut stmt, run_id).map_err(db)?;
            }
        }
        super::summaries::refresh_predictions(&tx, rows.iter().map(|r| r.image_id)).map_err(db)?;
        let added = super::summaries::predictions_count(&tx).map_err(db)? - before;
        super::summaries::advance_counts(&tx, 0, added).map_err(db)?;
        tx.commit().map_err(db)
    }

    /// One run's stored predictions, by image.
    pub fn run_predictions(&self, run_id: &str) -> Result<Vec<PredictionRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/run_predictions.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(PredictionRow {
                    image_id: r.get(0)?,
                    task: r.get(1)?,
                    label: r.get(2)?,
                    probabilities: crate::cluster::f64_list(r.get(3)?),
                    error: r.get(4)?,
                    domain_target: r.get(5)?,
                    reason: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// One run's epochs, in order.
    pub fn run_epochs(&self, run_id: &str) -> Result<Vec<EpochRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/run_epochs.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(EpochRow {
                    epoch: r.get(0)?,
                    train_loss: r.get(1)?,
                    source_loss: r.get(2)?,
                    target_loss: r.get(3)?,
                    domain_loss: r.get(4)?,
                    val_loss: r.get(5)?,
                    val_balanced_accuracy: r.get(6)?,
                    alpha: r.get(7)?,
                    seconds: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Marks runs left `running` by a process that ended as `interrupted`; call only
    /// while holding the store for writing (then no run can really be running).
    /// Returns how many.
    pub fn interrupt_stale_runs(&self) -> Result<usize, StoreError> {
        let runs = self
            .conn()
            .execute(include_str!("../../sql/store/interrupt_stale_runs.sql"), [])
            .map_err(|e| self.err(e))?;
        self.conn()
            .execute(include_str!("../../sql/store/fail_stale_jobs.sql"), [])
            .map_err(|e| self.err(e))?;
        Ok(runs)
    }

    /// Records a job the dashboard starts (`args`: the worker's arguments as JSON);
    /// returns its `job_id`.
    pub fn begin_job(&self, kind: &str, args: &str, run_id: &str) -> Result<i64, StoreError> {
        self.conn()
            .query_row(
                include_str!("../../sql/store/begin_job.sql"),
                params![kind, args, run_id],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Records how a job ended: `completed`, `failed` or `cancelled`.
    pub fn finish_job(
        &self,
        job_id: i64,
        status: &str,
        progress: f64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                include_str!("../../sql/store/finish_job.sql"),
                params![status, progress, error, job_id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT run_id, kind, task, method, status, metrics, \
                 strftime(started_at, '%Y-%m-%d %H:%M:%S') FROM runs ORDER BY started_at DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunSummary {
                    run_id: r.get(0)?,
                    kind: r.get(1)?,
                    task: r.get(2)?,
                    method: r.get(3)?,
                    status: r.get(4)?,
                    metrics: r.get(5)?,
                    started_at: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_with_epochs_split_and_predictions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::create(&dir.path().join("s.duckdb")).expect("store");
        store
            .begin_run(&NewRun {
                run_id: "r1".into(),
                kind: "train".into(),
                task: Some("usable".into()),
                config: "{}".into(),
                ..NewRun::default()
            })
            .expect("begin");
        store
            .record_epoch(
                "r1",
                &EpochRow {
                    epoch: 1,
                    val_loss: Some(0.5),
                    ..EpochRow::default()
                },
            )
            .expect("epoch");
        store
            .save_split(
                "s1",
                &[SplitRow {
                    image_id: 1,
                    subject: Some("01".into()),
                    domain: "target".into(),
                    set: "train".into(),
                    label: Some("usable".into()),
                }],
            )
            .expect("split");
        store
            .save_predictions(
                "r1",
                &[
                    PredictionRow {
                        image_id: 1,
                        task: "usable".into(),
                        label: Some("usable".into()),
                        probabilities: Some(vec![0.25, 0.75]),
                        error: None,
                        domain_target: Some(0.625),
                        reason: None,
                    },
                    PredictionRow {
                        image_id: 2,
                        task: "usable".into(),
                        label: None,
                        probabilities: None,
                        error: Some("x.nii: truncated".into()),
                        domain_target: None,
                        reason: None,
                    },
                ],
            )
            .expect("predictions");
        let epochs = store.run_epochs("r1").expect("epochs");
        assert_eq!(epochs.len(), 1);
        assert_eq!((epochs[0].epoch, epochs[0].val_loss), (1, Some(0.5)));
        assert!(store.run_epochs("none").expect("no epochs").is_empty());
        let done = store
            .begin_job("train", r#"["job","a.json"]"#, "r1")
            .expect("job");
        store
            .finish_job(done, "completed", 1.0, None)
            .expect("finish");
        let cut = store
            .begin_job("infer", r#"["job","b.json"]"#, "r1")
            .expect("job");
        assert!(cut > done);
        // Held for writing, a run or job still marked running was cut off.
        assert_eq!(store.interrupt_stale_runs().expect("stale"), 1);
        assert_eq!(store.runs().expect("runs")[0].status, "interrupted");
        let jobs: Vec<(String, String)> = store
            .conn()
            .prepare("SELECT kind, status FROM jobs ORDER BY job_id")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .expect("jobs");
        assert_eq!(
            jobs,
            [
                ("train".to_string(), "completed".to_string()),
                ("infer".to_string(), "failed".to_string())
            ]
        );
        store
            .set_run_status("r1", "completed", Some("{\"ba\":0.9}"), None)
            .expect("finish");
        let runs = store.runs().expect("runs");
        assert_eq!(runs[0].status, "completed");
        let p: f64 = store
            .conn()
            .query_row(
                "SELECT probabilities[2] FROM predictions WHERE image_id = 1",
                [],
                |r| r.get(0),
            )
            .expect("list element");
        assert_eq!(p, 0.75);
    }
}

/// What training and inference read back of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub kind: String,
    pub task: Option<String>,
    pub method: Option<String>,
    pub preset: Option<String>,
    pub status: String,
    pub weights_path: Option<String>,
    /// The training configuration as JSON.
    pub config: Option<String>,
    pub split_id: Option<String>,
    /// SHA-256 of the labels the run started with.
    pub label_snapshot: Option<String>,
    pub source_sequence: Option<String>,
    pub target_sequence: Option<String>,
}

/// A readable image as training and inference need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelImage {
    pub image_id: i64,
    pub path: String,
    pub sha256: Option<String>,
    /// The subject, or the file path for images outside a BIDS layout.
    pub subject: String,
    /// Size and modification time at import.
    pub stamp: crate::import::analyse::FileStamp,
}

impl Store {
    /// Readable images of one sequence (BIDS suffix).
    pub fn model_images(&self, suffix: &str) -> Result<Vec<ModelImage>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT image_id, path, sha256, coalesce(subject, path), file_size, mtime_ns \
                 FROM images WHERE status = 'ok' AND suffix = ? ORDER BY image_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![suffix], |r| {
                Ok(ModelImage {
                    image_id: r.get(0)?,
                    path: r.get(1)?,
                    sha256: r.get(2)?,
                    subject: r.get(3)?,
                    stamp: crate::import::analyse::FileStamp {
                        size: r.get(4)?,
                        mtime_ns: r.get(5)?,
                    },
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// A run's stored row.
    pub fn run_row(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        self.conn()
            .query_row(
                include_str!("../../sql/store/run_row.sql"),
                params![run_id],
                |r| {
                    Ok(RunRow {
                        kind: r.get(0)?,
                        task: r.get(1)?,
                        method: r.get(2)?,
                        preset: r.get(3)?,
                        status: r.get(4)?,
                        weights_path: r.get(5)?,
                        config: r.get(6)?,
                        split_id: r.get(7)?,
                        label_snapshot: r.get(8)?,
                        source_sequence: r.get(9)?,
                        target_sequence: r.get(10)?,
                    })
                },
            )
            .map(Some)
            .or_else(|e| match e {
                duckdb::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(|e| self.err(e))
    }
}

impl Store {
    /// The rows of a stored split, in image order (the order a plan lists images in).
    pub fn split_rows(&self, split_id: &str) -> Result<Vec<SplitRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/split_rows.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![split_id], |r| {
                Ok(SplitRow {
                    image_id: r.get(0)?,
                    subject: r.get(1)?,
                    domain: r.get(2)?,
                    set: r.get(3)?,
                    label: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The sequences (BIDS suffixes) of a split's images, `(domain, suffix)` pairs, for
    /// runs recorded before runs kept their sequences.
    pub fn split_sequences(&self, split_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/split_sequences.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![split_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

/// What exporting a training run reads of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRun {
    pub kind: String,
    pub task: Option<String>,
    pub method: Option<String>,
    pub preset: Option<String>,
    pub status: String,
    pub config: Option<String>,
    pub git_commit: Option<String>,
    pub label_snapshot: Option<String>,
    pub metrics: Option<String>,
    pub split_id: Option<String>,
}

/// How many images of one sequence a split puts in one (domain, set).
#[derive(Debug, Clone, PartialEq)]
pub struct SplitCount {
    pub domain: String,
    pub set: String,
    pub suffix: String,
    pub images: i64,
}

/// The run row of an exported model's predictions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelRun {
    pub run_id: String,
    pub task: String,
    pub method: String,
    pub preset: String,
    /// The model card as JSON.
    pub card: String,
    pub git_commit: Option<String>,
    pub label_snapshot: Option<String>,
    pub weights_path: String,
}

impl Store {
    fn optional_row<T>(
        &self,
        sql: &str,
        params: &[&dyn duckdb::ToSql],
        map: impl FnOnce(&duckdb::Row<'_>) -> duckdb::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        self.conn()
            .query_row(sql, params, map)
            .map(Some)
            .or_else(|e| match e {
                duckdb::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(|e| self.err(e))
    }

    pub fn export_run(&self, run_id: &str) -> Result<Option<ExportRun>, StoreError> {
        self.optional_row(
            include_str!("../../sql/store/export_run.sql"),
            &[&run_id],
            |r| {
                Ok(ExportRun {
                    kind: r.get(0)?,
                    task: r.get(1)?,
                    method: r.get(2)?,
                    preset: r.get(3)?,
                    status: r.get(4)?,
                    config: r.get(5)?,
                    git_commit: r.get(6)?,
                    label_snapshot: r.get(7)?,
                    metrics: r.get(8)?,
                    split_id: r.get(9)?,
                })
            },
        )
    }

    /// Images per (domain, set, sequence) of a split.
    pub fn split_counts(&self, split_id: &str) -> Result<Vec<SplitCount>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/export_split_counts.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![split_id], |r| {
                Ok(SplitCount {
                    domain: r.get(0)?,
                    set: r.get(1)?,
                    suffix: r.get(2)?,
                    images: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// How many labelled target images two splits place in different sets (0: the same
    /// train, validation and test images).
    pub fn split_differences(&self, a: &str, b: &str) -> Result<i64, StoreError> {
        self.conn()
            .query_row(
                include_str!("../../sql/store/split_differences.sql"),
                params![a, b],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The raters whose ratings in force cover labelled images of a split.
    pub fn split_raters(&self, split_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(include_str!("../../sql/store/export_split_raters.sql"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![split_id], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// A run's kind and configuration JSON, if the run exists.
    pub fn run_kind_and_config(
        &self,
        run_id: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        self.optional_row(
            include_str!("../../sql/store/model_run_weights.sql"),
            &[&run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Creates (or restarts) the `infer` run of an exported model, status `running`.
    pub fn begin_model_run(&self, run: &ModelRun) -> Result<(), StoreError> {
        self.conn()
            .execute(
                include_str!("../../sql/store/model_run.sql"),
                params![
                    run.run_id,
                    run.task,
                    run.method,
                    run.preset,
                    run.card,
                    run.git_commit,
                    run.label_snapshot,
                    run.weights_path
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
