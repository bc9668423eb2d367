//! Sharded inference past one machine: the frozen work list a submitting command
//! exports, each shard's Parquet part and manifest line, and the merge that checks them
//! all and loads them into the store in one transaction.
//!
//! Workers never open the store: DuckDB allows one writer per file, and a cluster runs
//! many workers at once. A worker reads the work list with an in-memory DuckDB, predicts
//! its share, and publishes its part by renaming a synced temporary file, so a worker
//! that dies leaves either nothing or a complete part.

pub mod import;
pub mod slurm;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use duckdb::types::Value;
use duckdb::{Connection, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::jobs::iqm_forest::{ForestMix, mix_forest};
use crate::jobs::{InferPlan, JobEvent, ModelSource, PlanItem, run_inference};
use crate::model::ModelError;
use crate::model::card::{ExportedModel, ModelCard};
use crate::store::runs::{ModelRun, PredictionRow};
use crate::store::{Store, StoreError};

/// The work list's file name in a job folder.
pub const WORK_LIST: &str = "work-list.parquet";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Db {
        path: PathBuf,
        source: Box<duckdb::Error>,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{dir}: nothing was merged, the parts are not complete and consistent:\n  {}",
        problems.join("\n  ")
    )]
    Parts { dir: PathBuf, problems: Vec<String> },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::replace::ReplaceError> for ClusterError {
    fn from(e: crate::replace::ReplaceError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn db(path: &Path) -> impl FnOnce(duckdb::Error) -> ClusterError + '_ {
    move |source| ClusterError::Db {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> ClusterError {
    ClusterError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Which share of a work list a worker predicts: shard `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The environment variable Slurm sets to an array task's index.
pub const ARRAY_TASK_ENV: &str = "SLURM_ARRAY_TASK_ID";

impl Shard {
    /// Parses `K/N`; `N` or `/N` alone take K from `$SLURM_ARRAY_TASK_ID` (`task_id`).
    pub fn parse(text: &str, task_id: Option<&str>) -> Result<Self, String> {
        let (index, count) = match text.split_once('/') {
            Some((k, n)) if !k.trim().is_empty() => (k.trim().to_string(), n),
            Some((_, n)) => (Self::task_index(task_id)?, n),
            None => (Self::task_index(task_id)?, text),
        };
        let count: usize = count
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--shard {text:?}: the shard count must be a number from 1"))?;
        let index: usize = index
            .parse()
            .map_err(|_| format!("--shard {text:?}: the shard index {index:?} is not a number"))?;
        if index >= count {
            return Err(format!(
                "--shard {text:?}: shards are numbered 0 to {} (Slurm: --array=0-{})",
                count - 1,
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    fn task_index(task_id: Option<&str>) -> Result<String, String> {
        task_id.map(|t| t.trim().to_string()).ok_or_else(|| {
            format!(
                "no shard index: give --shard K/N or run as a Slurm array task (${ARRAY_TASK_ENV})"
            )
        })
    }

    /// The part's file name: `part-00002-of-00004.parquet`.
    pub fn part_name(&self) -> String {
        format!("part-{:05}-of-{:05}.parquet", self.index, self.count)
    }

    /// The manifest's file name beside the part.
    pub fn manifest_name(&self) -> String {
        format!("part-{:05}-of-{:05}.json", self.index, self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Images per unit that shards are dealt: the forward batch of an inference pass. Each
/// shard then predicts every image in the same batch, beside the same images, as one
/// `cdwqc infer` process does, and so gives the same probabilities to the last bit
/// (libtorch's CPU kernels round differently for different batch sizes).
pub fn deal_unit() -> usize {
    crate::model::infer::InferOptions::default()
        .batch_size
        .max(1)
}

/// Assigns every item to a shard in runs of `unit` consecutive items (plan order),
/// balancing the shards' total bytes: the largest run first, each to the shard with the
/// fewest bytes so far (ties to the lower shard), so the same sizes always give the same
/// shares. Equal sizes deal the runs round-robin.
pub fn assign_shards(sizes: &[u64], shards: usize, unit: usize) -> Vec<usize> {
    let shards = shards.max(1);
    let unit = unit.max(1);
    // Empty files count one byte, so that they also spread out.
    let runs: Vec<u64> = sizes
        .chunks(unit)
        .map(|run| run.iter().map(|&s| s.max(1)).sum())
        .collect();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| runs[b].cmp(&runs[a]).then(a.cmp(&b)));
    let mut load = vec![0u64; shards];
    let mut run_shard = vec![0; runs.len()];
    for run in order {
        let shard = (0..shards).min_by_key(|&k| (load[k], k)).unwrap_or(0);
        load[shard] += runs[run];
        run_shard[run] = shard;
    }
    (0..sizes.len()).map(|i| run_shard[i / unit]).collect()
}

/// A frozen work list: the plan with its items, their file sizes, the shard count.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkList {
    pub plan: InferPlan,
    pub plan_hash: String,
    pub shards: usize,
    pub sizes: Vec<u64>,
    /// The store the plan was made from (as the submitter named it).
    pub store: String,
    /// Consecutive images dealt together ([`deal_unit`] when frozen).
    pub unit: usize,
}

impl WorkList {
    /// Freezes `plan` for `shards` workers; file sizes are read now (0 for a file that
    /// is gone: its worker records the failure).
    pub fn new(plan: InferPlan, shards: usize, store: &Path) -> Self {
        let sizes = plan
            .items
            .iter()
            .map(|i| std::fs::metadata(&i.path).map_or(0, |m| m.len()))
            .collect();
        Self {
            plan_hash: plan_hash(&plan),
            plan,
            shards: shards.max(1),
            sizes,
            store: store.display().to_string(),
            unit: deal_unit(),
        }
    }

    /// The items of one shard, in plan order.
    pub fn shard_items(&self, shard: Shard) -> Vec<PlanItem> {
        assign_shards(&self.sizes, self.shards, self.unit)
            .into_iter()
            .zip(&self.plan.items)
            .filter(|(k, _)| *k == shard.index)
            .map(|(_, item)| item.clone())
            .collect()
    }

    /// Writes the work list as Parquet, atomically.
    pub fn write(&self, path: &Path) -> Result<(), ClusterError> {
        let conn = memory_db(path)?;
        conn.execute_batch(include_str!("../../sql/cluster/work_list_create.sql"))
            .map_err(db(path))?;
        let mut bare = self.plan.clone();
        bare.items.clear();
        let plan_json = serde_json::to_string(&bare)
            .map_err(|e| invalid(path, format!("plan does not serialize: {e}")))?;
        {
            let mut appender = conn.appender("work").map_err(db(path))?;
            for (position, (item, size)) in self.plan.items.iter().zip(&self.sizes).enumerate() {
                appender
                    .append_row(params![
                        position as i64,
                        item.image_id,
                        item.path,
                        item.sha256,
                        item.label.map(|l| l as i64),
                        *size as i64,
                        self.plan.run_id,
                        self.plan_hash,
                        self.shards as i64,
                        plan_json,
                        self.store,
                        self.unit as i64,
                        item.stamp.map(|s| s.size),
                        item.stamp.map(|s| s.mtime_ns)
                    ])
                    .map_err(db(path))?;
            }
            appender.flush().map_err(db(path))?;
        }
        publish(path, |temp| copy_to_parquet(&conn, "work", temp))?;
        Ok(())
    }

    /// Reads a work list and checks that its plan still hashes to what it says.
    pub fn read(path: &Path) -> Result<Self, ClusterError> {
        if !path.is_file() {
            return Err(invalid(path, "no work list here"));
        }
        let conn = memory_db(path)?;
        let mut stmt = conn
            .prepare(include_str!("../../sql/cluster/work_list_read.sql"))
            .map_err(db(path))?;
        let text = path.display().to_string();
        let rows = stmt
            .query_map([text.as_str()], |r| {
                Ok((
                    PlanItem {
                        image_id: r.get(1)?,
                        path: r.get(2)?,
                        sha256: r.get(3)?,
                        stamp: match (r.get::<_, Option<i64>>(12)?, r.get::<_, Option<i64>>(13)?) {
                            (Some(size), Some(mtime_ns)) => {
                                Some(crate::import::analyse::FileStamp { size, mtime_ns })
                            }
                            _ => None,
                        },
                        label: r.get::<_, Option<i64>>(4)?.map(|l| l as usize),
                        soft_label: None,
                    },
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, i64>(11)?,
                ))
            })
            .map_err(db(path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db(path))?;
        let Some((_, _, _, hash, shards, plan_json, store, unit)) = rows.first().cloned() else {
            return Err(invalid(path, "the work list holds no image"));
        };
        let mut plan: InferPlan = serde_json::from_str(&plan_json)
            .map_err(|e| invalid(path, format!("the work list's plan does not parse: {e}")))?;
        let mut sizes = Vec::with_capacity(rows.len());
        for (item, size, _, row_hash, _, _, _, _) in rows {
            if row_hash != hash {
                return Err(invalid(path, "rows of two different plans"));
            }
            plan.items.push(item);
            sizes.push(size.max(0) as u64);
        }
        let actual = plan_hash(&plan);
        if actual != hash {
            return Err(invalid(
                path,
                format!(
                    "the plan hashes to {actual}, not to the {hash} it was written with: the file was changed"
                ),
            ));
        }
        Ok(Self {
            plan,
            plan_hash: hash,
            shards: shards.max(1) as usize,
            sizes,
            store,
            unit: unit.max(1) as usize,
        })
    }
}

/// SHA-256 of the plan's JSON (items included): what every part must have been made from.
pub fn plan_hash(plan: &InferPlan) -> String {
    let json = serde_json::to_vec(plan).unwrap_or_default();
    hex(&Sha256::digest(&json))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a shard's part could not be hashed: missing, or what else is wrong with it (a
/// FIFO or a folder planted under its name).
fn part_problem(name: &str, error: &ClusterError) -> String {
    match error {
        ClusterError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            format!("{name} is missing")
        }
        other => format!("{name}: {other}"),
    }
}

/// The most a shard's manifest may hold: one JSON line of counts and a hash.
pub(crate) const MANIFEST_MAX_BYTES: u64 = 1 << 20;

/// SHA-256 of a file's bytes.
pub fn file_sha256(path: &Path) -> Result<String, ClusterError> {
    // Regular files only, never blocking: a FIFO planted as a part must not hang a merge
    // that holds the store.
    let (mut file, _) = crate::regular::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// An in-memory DuckDB that reads and writes Parquet and never touches the network.
fn memory_db(path: &Path) -> Result<Connection, ClusterError> {
    let config = duckdb::Config::default()
        .with("autoload_known_extensions", "false")
        .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        .map_err(db(path))?;
    Connection::open_in_memory_with_flags(config).map_err(db(path))
}

fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn copy_to_parquet(conn: &Connection, table: &str, path: &Path) -> Result<(), ClusterError> {
    let sql = include_str!("../../sql/cluster/copy_to_parquet.sql")
        .replace("{table}", table)
        .replace("{path}", &sql_string(&path.display().to_string()));
    conn.execute_batch(&sql).map_err(db(path))
}

/// Writes `path` through a new temporary file in the same folder ([`crate::replace`]):
/// `write` fills it, and it is synced and renamed into place (and the folder synced), so
/// a reader sees the whole file or none. A temporary file left by a dead writer is never
/// read.
fn publish(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), ClusterError>,
) -> Result<(), ClusterError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    crate::replace::replace_with(
        path,
        crate::replace::Durability::ContentAndName,
        |temp, _| write(temp),
    )
}

/// A part's manifest line: what was predicted, from which plan, and the part's checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartManifest {
    pub run_id: String,
    pub plan_hash: String,
    pub shard: usize,
    pub shards: usize,
    pub part: String,
    pub rows: usize,
    pub failed: usize,
    pub sha256: String,
    pub seconds: f64,
    pub host: String,
}

/// What a finished shard left.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardOutcome {
    pub manifest: PartManifest,
    pub part: PathBuf,
}

/// Predicts one shard of the work list at `work_list` and publishes its part and
/// manifest in the work list's folder. An interrupted shard publishes nothing; a killed
/// one at most its part, which no merge reads without the manifest line published after
/// it.
pub fn run_shard(
    work_list: &Path,
    shard: Shard,
    cancel: &Arc<AtomicBool>,
    emit: &mut dyn FnMut(JobEvent),
) -> Result<ShardOutcome, ClusterError> {
    let list = WorkList::read(work_list)?;
    if shard.count != list.shards {
        return Err(invalid(
            work_list,
            format!(
                "the work list was frozen for {} shards, not {}: use --shard K/{}",
                list.shards, shard.count, list.shards
            ),
        ));
    }
    if list.plan.adapt_batchnorm.is_some() {
        return Err(invalid(
            work_list,
            "BatchNorm adaptation needs every image in one process; shards cannot share it",
        ));
    }
    let mut plan = list.plan.clone();
    plan.items = list.shard_items(shard);
    let result = run_inference(&plan, cancel, emit)?;
    if result.cancelled {
        return Err(invalid(
            work_list,
            format!("shard {shard} was interrupted: no part written, run it again"),
        ));
    }
    let dir = work_list
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let part = dir.join(shard.part_name());
    write_part(&part, &plan.run_id, &result.rows)?;
    let manifest = PartManifest {
        run_id: plan.run_id.clone(),
        plan_hash: list.plan_hash.clone(),
        shard: shard.index,
        shards: shard.count,
        part: shard.part_name(),
        rows: result.rows.len(),
        failed: result.failed,
        sha256: file_sha256(&part)?,
        seconds: result.seconds,
        host: host_name(),
    };
    let line = serde_json::to_string(&manifest)
        .map_err(|e| invalid(&part, format!("manifest does not serialize: {e}")))?;
    let manifest_path = dir.join(shard.manifest_name());
    publish(&manifest_path, |temp| {
        std::fs::write(temp, format!("{line}\n")).map_err(io(temp))
    })?;
    Ok(ShardOutcome { manifest, part })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn write_part(path: &Path, run_id: &str, rows: &[PredictionRow]) -> Result<(), ClusterError> {
    let conn = memory_db(path)?;
    conn.execute_batch(include_str!("../../sql/cluster/part_create.sql"))
        .map_err(db(path))?;
    {
        let mut stmt = conn
            .prepare(include_str!("../../sql/cluster/part_insert.sql"))
            .map_err(db(path))?;
        for r in rows {
            r.execute(&mut stmt, run_id).map_err(db(path))?;
        }
    }
    publish(path, |temp| copy_to_parquet(&conn, "part", temp))
}

/// A list of doubles as DuckDB returns it.
pub(crate) fn f64_list(value: Value) -> Option<Vec<f64>> {
    match value {
        Value::List(items) | Value::Array(items) => Some(
            items
                .into_iter()
                .map(|v| match v {
                    Value::Double(x) => x,
                    Value::Float(x) => f64::from(x),
                    _ => f64::NAN,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The rows of a part (run id first), by image.
pub fn read_part(path: &Path) -> Result<Vec<(String, PredictionRow)>, ClusterError> {
    let conn = memory_db(path)?;
    conn.execute_batch(include_str!("../../sql/cluster/part_create.sql"))
        .map_err(db(path))?;
    let text = path.display().to_string();
    conn.execute(
        include_str!("../../sql/cluster/part_load.sql"),
        [text.as_str()],
    )
    .map_err(db(path))?;
    let mut stmt = conn
        .prepare(include_str!("../../sql/cluster/part_read.sql"))
        .map_err(db(path))?;
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            PredictionRow {
                image_id: r.get(1)?,
                task: r.get(2)?,
                label: r.get(3)?,
                probabilities: f64_list(r.get::<_, Value>(4)?),
                error: r.get(5)?,
                domain_target: r.get(6)?,
                reason: r.get(7)?,
            },
        ))
    })
    .map_err(db(path))?
    .collect::<Result<Vec<_>, _>>()
    .map_err(db(path))
}

/// Every part of a job folder, checked against the work list and the manifests.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedParts {
    pub list: WorkList,
    pub manifests: Vec<PartManifest>,
    /// Every prediction, by image.
    pub rows: Vec<PredictionRow>,
}

/// Checks a job folder: a manifest for every shard, each naming this run, plan and shard
/// count, its part's SHA-256 and row count right, and the parts together covering the
/// work list's images exactly as the shards were dealt. Every problem is named.
pub fn check_parts(dir: &Path) -> Result<CheckedParts, ClusterError> {
    let list = WorkList::read(&dir.join(WORK_LIST))?;
    let assigned = assign_shards(&list.sizes, list.shards, list.unit);
    let mut expected: Vec<Vec<i64>> = vec![Vec::new(); list.shards];
    for (item, &k) in list.plan.items.iter().zip(&assigned) {
        expected[k].push(item.image_id);
    }
    let mut problems = Vec::new();
    let mut manifests = Vec::new();
    let mut rows = Vec::new();
    for (index, ids) in expected.iter().enumerate() {
        let shard = Shard {
            index,
            count: list.shards,
        };
        let manifest_path = dir.join(shard.manifest_name());
        let part_path = dir.join(shard.part_name());
        let text = match crate::regular::read_text(&manifest_path, MANIFEST_MAX_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!(
                    "shard {shard}: missing ({} not written; run the shard again)",
                    shard.manifest_name()
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("shard {shard}: {}: {e}", manifest_path.display()));
                continue;
            }
        };
        let manifest: PartManifest = match serde_json::from_str(text.trim()) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!(
                    "shard {shard}: {} is not a manifest line: {e}",
                    shard.manifest_name()
                ));
                continue;
            }
        };
        let mut wrong = Vec::new();
        if manifest.run_id != list.plan.run_id {
            wrong.push(format!(
                "run {} instead of {}",
                manifest.run_id, list.plan.run_id
            ));
        }
        if manifest.plan_hash != list.plan_hash {
            wrong.push(format!(
                "plan hash {} instead of {} (made from another work list)",
                short(&manifest.plan_hash),
                short(&list.plan_hash)
            ));
        }
        if (manifest.shard, manifest.shards) != (index, list.shards) {
            wrong.push(format!("says shard {}/{}", manifest.shard, manifest.shards));
        }
        if !wrong.is_empty() {
            problems.push(format!("shard {shard}: {}", wrong.join("; ")));
            continue;
        }
        let sha = match file_sha256(&part_path) {
            Ok(sha) => sha,
            Err(e) => {
                problems.push(format!(
                    "shard {shard}: {}",
                    part_problem(&shard.part_name(), &e)
                ));
                continue;
            }
        };
        if sha != manifest.sha256 {
            problems.push(format!(
                "shard {shard}: {} has SHA-256 {}, its manifest says {}",
                shard.part_name(),
                short(&sha),
                short(&manifest.sha256)
            ));
            continue;
        }
        let part = match read_part(&part_path) {
            Ok(part) => part,
            Err(e) => {
                problems.push(format!("shard {shard}: {e}"));
                continue;
            }
        };
        let mut got: Vec<i64> = part.iter().map(|(_, r)| r.image_id).collect();
        let mut want = ids.clone();
        got.sort_unstable();
        want.sort_unstable();
        if part.len() != manifest.rows || got != want {
            problems.push(format!(
                "shard {shard}: {} rows in the part, {} in its manifest, {} images dealt to it",
                part.len(),
                manifest.rows,
                want.len()
            ));
            continue;
        }
        if part.iter().any(|(run, _)| *run != list.plan.run_id) {
            problems.push(format!("shard {shard}: rows of another run"));
            continue;
        }
        rows.extend(part.into_iter().map(|(_, r)| r));
        manifests.push(manifest);
    }
    if !problems.is_empty() {
        return Err(ClusterError::Parts {
            dir: dir.to_path_buf(),
            problems,
        });
    }
    rows.sort_by_key(|r| r.image_id);
    Ok(CheckedParts {
        list,
        manifests,
        rows,
    })
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    pub run_id: String,
    pub shards: usize,
    pub rows: usize,
    pub failed: usize,
    /// Rejects stored because the image does not register (not among `failed`).
    pub not_registered: usize,
    /// Rows that were new or different in the store (0 when merged before).
    pub written: usize,
    /// An exported model's IQM forest, mixed in by the merge.
    pub forest: Option<ForestMix>,
}

/// Checks every part of `dir`, then stores the predictions in one transaction. The
/// store must be the one the work list was made from: each image id must name the same
/// file. Rows the store holds already, equal, are left alone, so merging twice writes
/// nothing.
pub fn merge(store: &mut Store, dir: &Path) -> Result<MergeReport, ClusterError> {
    let checked = check_parts(dir)?;
    let run_id = checked.list.plan.run_id.clone();
    let paths = store.image_paths()?;
    let foreign: Vec<String> = checked
        .list
        .plan
        .items
        .iter()
        .filter(|i| paths.get(&i.image_id) != Some(&i.path))
        .take(3)
        .map(|i| format!("image {} ({})", i.image_id, i.path))
        .collect();
    if !foreign.is_empty() {
        return Err(ClusterError::Parts {
            dir: dir.to_path_buf(),
            problems: vec![format!(
                "the work list was made from store {}, and {} holds other files under the same ids: {}",
                checked.list.store,
                store.path().display(),
                foreign.join(", ")
            )],
        });
    }
    let mut rows = checked.rows;
    let plan = &checked.list.plan;
    let model = match &plan.model_run {
        Some(run) => Some((run, model_run_rows(store, dir, plan, run, &mut rows)?)),
        None => None,
    };
    let stored: HashMap<i64, PredictionRow> = store
        .run_predictions(&run_id)?
        .into_iter()
        .map(|r| (r.image_id, r))
        .collect();
    let changed: Vec<PredictionRow> = rows
        .iter()
        .filter(|r| !same_row(stored.get(&r.image_id), r))
        .cloned()
        .collect();
    // A model's run is recorded when rows changed, and again when an earlier merge
    // ended before marking it completed.
    let unfinished = || -> Result<bool, StoreError> {
        Ok(store
            .run_row(&run_id)?
            .is_none_or(|row| row.status != "completed"))
    };
    if let Some((run, mix)) = &model
        && (!changed.is_empty() || unfinished()?)
    {
        store.begin_model_run(run)?;
        store.save_predictions(&run_id, &changed)?;
        let metrics = serde_json::json!({
            "images": rows.len(),
            "failed": rows.iter().filter(|r| r.error.is_some()).count(),
            "not_registered": rows.iter().filter(|r| r.reason.is_some()).count(),
            "shards": checked.list.shards,
            "iqm_forest_images": mix.as_ref().map(|f| f.mixed),
            "iqm_forest_without_metrics": mix.as_ref().map(|f| f.without_metrics),
            "iqm_forest_skipped": mix.as_ref().and_then(|f| f.skipped.clone()),
        });
        store.set_run_status(&run_id, "completed", Some(&metrics.to_string()), None)?;
    } else if !changed.is_empty() {
        store.save_predictions(&run_id, &changed)?;
    }
    Ok(MergeReport {
        run_id,
        shards: checked.list.shards,
        rows: rows.len(),
        failed: rows.iter().filter(|r| r.error.is_some()).count(),
        not_registered: rows.iter().filter(|r| r.reason.is_some()).count(),
        written: changed.len(),
        forest: model.and_then(|(_, mix)| mix),
    })
}

/// An exported model's merged rows: its IQM forest mixed in from the store's metrics, as
/// `cdwqc infer --model` mixes it in one process. The model folder must still hold the
/// card the job was planned with, and the store no other predictions under its run.
fn model_run_rows(
    store: &Store,
    dir: &Path,
    plan: &InferPlan,
    run: &ModelRun,
    rows: &mut [PredictionRow],
) -> Result<Option<ForestMix>, ClusterError> {
    let refuse = |message: String| ClusterError::Invalid {
        path: dir.to_path_buf(),
        message,
    };
    let planned: ModelCard = serde_json::from_str(&run.card)
        .map_err(|e| refuse(format!("the work list's model card does not parse: {e}")))?;
    if let Some((_, config)) = store.run_kind_and_config(&run.run_id)?
        && config.as_deref() != Some(run.card.as_str())
    {
        return Err(refuse(format!(
            "run {} holds predictions of another model or of the same without its IQM forest \
             since this job was submitted: nothing merged (submit again with another --as)",
            run.run_id
        )));
    }
    let Some(info) = &planned.iqm_forest else {
        return Ok(None);
    };
    let ModelSource::Exported { dir: model_dir } = &plan.model else {
        return Err(refuse(
            "the work list names a model run without a model folder".into(),
        ));
    };
    let model = ExportedModel::open(model_dir)?;
    let same = |c: &ModelCard| {
        (
            c.weights.sha256.clone(),
            c.iqm_forest.as_ref().map(|f| f.sha256.clone()),
        )
    };
    if same(&model.card) != same(&planned) {
        return Err(refuse(format!(
            "the model folder {} no longer holds the model this job was submitted with",
            model_dir.display()
        )));
    }
    let Some(forest) = model.verified_forest()? else {
        return Ok(None);
    };
    let mix = mix_forest(store, &forest, info.weight, plan.task.categories(), rows)
        .map_err(|e| refuse(e.to_string()))?;
    Ok(Some(mix))
}

/// Equal rows, probabilities compared bit for bit.
fn same_row(stored: Option<&PredictionRow>, row: &PredictionRow) -> bool {
    let Some(stored) = stored else {
        return false;
    };
    let bits = |p: &Option<Vec<f64>>| {
        p.as_ref()
            .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>())
    };
    stored.task == row.task
        && stored.label == row.label
        && stored.error == row.error
        && stored.reason == row.reason
        && stored.domain_target.map(f64::to_bits) == row.domain_target.map(f64::to_bits)
        && bits(&stored.probabilities) == bits(&row.probabilities)
}

/// The parts present in a job folder (inference or import), by shard (for status lines).
pub fn parts_present(dir: &Path, shards: usize) -> BTreeMap<usize, bool> {
    let import = dir.join(import::IMPORT_LIST).is_file();
    (0..shards)
        .map(|index| {
            let shard = Shard {
                index,
                count: shards,
            };
            let manifest = if import {
                import::manifest_name(shard)
            } else {
                shard.manifest_name()
            };
            (index, dir.join(manifest).is_file())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_work_list_carries_each_files_stamp_to_its_worker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let item = |image_id: i64, stamp| PlanItem {
            image_id,
            path: format!("/data/sub-{image_id}_FLAIR.nii.gz"),
            sha256: Some("ab".into()),
            stamp,
            label: None,
            soft_label: None,
        };
        let plan = InferPlan {
            run_id: "r".into(),
            model: ModelSource::Run {
                dir: PathBuf::from("models/runs/r"),
            },
            task: crate::report::agreement::Task::Usable,
            sequence: "FLAIR".into(),
            device: "cpu".into(),
            items: vec![
                item(
                    1,
                    Some(crate::import::analyse::FileStamp {
                        size: 8_123_456,
                        mtime_ns: 1_764_556_800_123_456_789,
                    }),
                ),
                item(2, None),
            ],
            cache_dir: None,
            adapt_batchnorm: None,
            loaders: None,
            warm_threads: None,
            model_run: None,
        };
        let path = dir.path().join(WORK_LIST);
        WorkList::new(plan.clone(), 2, Path::new("store.duckdb"))
            .write(&path)
            .expect("written");
        let back = WorkList::read(&path).expect("read");
        assert_eq!(back.plan, plan);
    }

    #[test]
    fn shards_parse_from_the_flag_or_the_array_task() {
        assert_eq!(Shard::parse("2/4", None), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(
            Shard::parse("/4", Some("3")),
            Ok(Shard { index: 3, count: 4 })
        );
        assert_eq!(
            Shard::parse("4", Some("0")),
            Ok(Shard { index: 0, count: 4 })
        );
        assert!(Shard::parse("4/4", None).unwrap_err().contains("0 to 3"));
        assert!(
            Shard::parse("/4", None)
                .unwrap_err()
                .contains("SLURM_ARRAY_TASK_ID")
        );
        assert!(Shard::parse("1/0", None).is_err());
        assert!(Shard::parse("x/2", None).is_err());
    }

    #[test]
    fn shards_balance_bytes_deterministically() {
        let sizes = [100, 1, 1, 1, 50, 50, 1, 1];
        let a = assign_shards(&sizes, 2, 1);
        assert_eq!(a, assign_shards(&sizes, 2, 1));
        let load = |k| {
            sizes
                .iter()
                .zip(&a)
                .filter(|(_, s)| **s == k)
                .map(|(b, _)| *b)
                .sum::<u64>()
        };
        assert_eq!((load(0), load(1)), (103, 102));
        // Equal sizes: dealt round-robin, every shard within one item of the others.
        let even = assign_shards(&[7; 10], 4, 1);
        let counts: Vec<usize> = (0..4)
            .map(|k| even.iter().filter(|&&s| s == k).count())
            .collect();
        assert_eq!(counts, [3, 3, 2, 2]);
        // More shards than items: the extra shards are empty.
        assert_eq!(assign_shards(&[5, 5], 4, 1), [0, 1]);
        // Runs of consecutive items stay together: a forward batch is never split.
        assert_eq!(
            assign_shards(&[7; 10], 2, 4),
            [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
        );
    }

    #[test]
    fn a_part_round_trips_exactly_and_is_published_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("part-00000-of-00001.parquet");
        let rows = vec![
            PredictionRow {
                image_id: 3,
                task: "usable".into(),
                label: Some("usable".into()),
                probabilities: Some(vec![0.1f32 as f64, 1.0 - 0.1f32 as f64]),
                error: None,
                domain_target: Some(0.75),
                reason: None,
            },
            PredictionRow {
                image_id: 9,
                task: "usable".into(),
                label: None,
                probabilities: None,
                error: Some("truncated".into()),
                domain_target: None,
                reason: None,
            },
            PredictionRow {
                image_id: 12,
                task: "usable".into(),
                label: Some("reject".into()),
                probabilities: Some(vec![0.0, 1.0]),
                error: None,
                domain_target: None,
                reason: Some("box.nii: registration failed: no brain".into()),
            },
        ];
        write_part(&path, "r1", &rows).expect("part");
        let back: Vec<PredictionRow> = read_part(&path)
            .expect("read")
            .into_iter()
            .map(|(run, r)| {
                assert_eq!(run, "r1");
                r
            })
            .collect();
        assert_eq!(back, rows);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["part-00000-of-00001.parquet"],
            "no temporary file left"
        );
    }

    #[test]
    fn a_part_from_before_the_domain_column_reads_with_it_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.parquet");
        let conn = memory_db(&path).expect("db");
        conn.execute_batch(&format!(
            "CREATE TABLE old AS SELECT 'r' AS run_id, 5::BIGINT AS image_id, 'usable' AS task, \
             'reject' AS label, [0.2, 0.8]::DOUBLE[] AS probabilities, NULL::VARCHAR AS error; \
             COPY old TO {} (FORMAT parquet)",
            sql_string(&path.display().to_string())
        ))
        .expect("an old part");
        let rows = read_part(&path).expect("reads");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "r");
        assert_eq!(rows[0].1.probabilities, Some(vec![0.2, 0.8]));
        assert_eq!(rows[0].1.domain_target, None);
        assert_eq!(rows[0].1.reason, None);
    }
}
