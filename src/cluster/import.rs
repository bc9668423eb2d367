//! Sharded import: the frozen list of files a submitting command exports from the store,
//! each worker's analysis of its share into a Parquet part (image rows, previews and
//! quality metrics), and the merge that checks every part and loads them in one
//! transaction.
//!
//! Workers never open the store. Each analyses its files exactly as `cdwqc import` does
//! and writes them into a private scratch store (so rows, previews and metrics take the
//! very code and layout of a plain import), which it copies to its part and deletes.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use duckdb::params;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    ClusterError, Shard, assign_shards, db, file_sha256, hex, host_name, invalid, io, memory_db,
    publish, short, sql_string,
};
use crate::import::analyse::{self, Outcome};
use crate::import::{ImportOptions, ImportPlan};
use crate::store::Store;
use crate::store::images::{ImageWrite, KnownFile};
use crate::store::import_merge::ImportMergeCounts;

/// The import work list's file name in a job folder.
pub const IMPORT_LIST: &str = "import-list.parquet";

/// Files analysed and written to the scratch store per step: bounds a worker's memory.
const STEP: usize = 256;

/// What a file of the list is to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// New or changed: a shard analyses it.
    Todo,
    /// Same size and modification time as stored.
    Unchanged,
    /// Stored under the root and no longer found: the merge marks it missing.
    Gone,
}

impl FileState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Todo => "todo",
            Self::Unchanged => "unchanged",
            Self::Gone => "gone",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "todo" => Some(Self::Todo),
            "unchanged" => Some(Self::Unchanged),
            "gone" => Some(Self::Gone),
            _ => None,
        }
    }
}

/// The store's row for a file when the list was frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownRow {
    pub image_id: i64,
    pub size: i64,
    pub mtime_ns: i64,
    pub sha256: Option<String>,
    pub status: String,
}

impl KnownRow {
    fn of(k: &KnownFile) -> Self {
        Self {
            image_id: k.image_id,
            size: k.file_size,
            mtime_ns: k.mtime_ns,
            sha256: k.sha256.clone(),
            status: k.status.clone(),
        }
    }

    fn known_file(&self) -> KnownFile {
        KnownFile {
            image_id: self.image_id,
            file_size: self.size,
            mtime_ns: self.mtime_ns,
            sha256: self.sha256.clone(),
            status: self.status.clone(),
        }
    }
}

/// One file of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedFile {
    pub path: String,
    pub state: FileState,
    pub size: u64,
    pub known: Option<KnownRow>,
}

/// A frozen import work list.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportWorkList {
    /// The canonical root, as the store names it.
    pub root: String,
    /// Compute the quality metrics of 3D images.
    pub iqm: bool,
    pub files: Vec<ListedFile>,
    pub plan_hash: String,
    pub shards: usize,
    /// The store the list was made from (as the submitter named it).
    pub store: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    root: &'a str,
    iqm: bool,
    files: &'a [ListedFile],
}

fn list_hash(root: &str, iqm: bool, files: &[ListedFile]) -> String {
    let json = serde_json::to_vec(&Hashed { root, iqm, files }).unwrap_or_default();
    hex(&Sha256::digest(&json))
}

impl ImportWorkList {
    /// Freezes an import plan for `shards` workers. `known` is what the store held under
    /// the root: those not walked are listed as gone.
    pub fn new(
        plan: &ImportPlan,
        known: &HashMap<String, KnownFile>,
        opts: &ImportOptions,
        shards: usize,
        store: &Path,
    ) -> Self {
        let todo: HashMap<&Path, Option<&KnownFile>> = plan
            .todo
            .iter()
            .map(|(p, k)| (p.as_path(), k.as_ref()))
            .collect();
        let mut files: Vec<ListedFile> = plan
            .walked
            .iter()
            .map(|p| {
                let text = crate::import::path_text(p);
                let state = if todo.contains_key(p.as_path()) {
                    FileState::Todo
                } else {
                    FileState::Unchanged
                };
                ListedFile {
                    size: std::fs::metadata(p).map_or(0, |m| m.len()),
                    known: known.get(&text).map(KnownRow::of),
                    path: text,
                    state,
                }
            })
            .collect();
        let mut gone: Vec<ListedFile> = plan
            .gone(known)
            .into_iter()
            .map(|(path, k)| ListedFile {
                path: path.clone(),
                state: FileState::Gone,
                size: 0,
                known: Some(KnownRow::of(k)),
            })
            .collect();
        gone.sort_by(|a, b| a.path.cmp(&b.path));
        files.extend(gone);
        let root = plan.root.to_string_lossy().into_owned();
        Self {
            plan_hash: list_hash(&root, opts.iqm, &files),
            root,
            iqm: opts.iqm,
            files,
            shards: shards.max(1),
            store: store.display().to_string(),
        }
    }

    /// The files a shard analyses, in list order: the new and changed files, dealt by
    /// size.
    pub fn shard_files(&self, shard: Shard) -> Vec<&ListedFile> {
        let todo: Vec<&ListedFile> = self
            .files
            .iter()
            .filter(|f| f.state == FileState::Todo)
            .collect();
        let sizes: Vec<u64> = todo.iter().map(|f| f.size).collect();
        assign_shards(&sizes, self.shards, 1)
            .into_iter()
            .zip(todo)
            .filter(|(k, _)| *k == shard.index)
            .map(|(_, f)| f)
            .collect()
    }

    /// How many files the shards analyse.
    pub fn todo(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.state == FileState::Todo)
            .count()
    }

    /// Writes the list as Parquet, atomically.
    pub fn write(&self, path: &Path) -> Result<(), ClusterError> {
        let conn = memory_db(path)?;
        conn.execute_batch(include_str!("../../sql/cluster/import_list_create.sql"))
            .map_err(db(path))?;
        {
            let mut appender = conn.appender("import_list").map_err(db(path))?;
            for (position, f) in self.files.iter().enumerate() {
                let k = f.known.as_ref();
                appender
                    .append_row(params![
                        position as i64,
                        f.path,
                        f.state.as_str(),
                        f.size as i64,
                        k.map(|k| k.image_id),
                        k.map(|k| k.size),
                        k.map(|k| k.mtime_ns),
                        k.and_then(|k| k.sha256.clone()),
                        k.map(|k| k.status.clone()),
                        self.root,
                        self.iqm,
                        self.plan_hash,
                        self.shards as i64,
                        self.store
                    ])
                    .map_err(db(path))?;
            }
            appender.flush().map_err(db(path))?;
        }
        publish(path, |temp| {
            super::copy_to_parquet(&conn, "import_list", temp)
        })
    }

    /// Reads a list and checks that it still hashes to what it says.
    pub fn read(path: &Path) -> Result<Self, ClusterError> {
        if !path.is_file() {
            return Err(invalid(path, "no import work list here"));
        }
        let conn = memory_db(path)?;
        let mut stmt = conn
            .prepare(include_str!("../../sql/cluster/import_list_read.sql"))
            .map_err(db(path))?;
        let text = path.display().to_string();
        type Row = (ListedFile, String, String, bool, String, i64, String);
        let rows: Vec<Row> = stmt
            .query_map([text.as_str()], |r| {
                let state: String = r.get(2)?;
                let known = match r.get::<_, Option<i64>>(4)? {
                    Some(image_id) => Some(KnownRow {
                        image_id,
                        size: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                        mtime_ns: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                        sha256: r.get(7)?,
                        status: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                    }),
                    None => None,
                };
                Ok((
                    ListedFile {
                        path: r.get(1)?,
                        state: FileState::parse(&state).unwrap_or(FileState::Todo),
                        size: r.get::<_, i64>(3)?.max(0) as u64,
                        known,
                    },
                    state,
                    r.get::<_, String>(9)?,
                    r.get::<_, bool>(10)?,
                    r.get::<_, String>(11)?,
                    r.get::<_, i64>(12)?,
                    r.get::<_, String>(13)?,
                ))
            })
            .map_err(db(path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db(path))?;
        let Some((_, _, root, iqm, hash, shards, store)) = rows.first().cloned() else {
            return Err(invalid(path, "the import work list holds no file"));
        };
        let mut files = Vec::with_capacity(rows.len());
        for (file, state, _, _, row_hash, _, _) in rows {
            if FileState::parse(&state).is_none() {
                return Err(invalid(
                    path,
                    format!("{}: unknown state {state:?}", file.path),
                ));
            }
            if row_hash != hash {
                return Err(invalid(path, "rows of two different lists"));
            }
            files.push(file);
        }
        let actual = list_hash(&root, iqm, &files);
        if actual != hash {
            return Err(invalid(
                path,
                format!(
                    "the list hashes to {actual}, not to the {hash} it was written with: the file was changed"
                ),
            ));
        }
        Ok(Self {
            root,
            iqm,
            files,
            plan_hash: hash,
            shards: shards.max(1) as usize,
            store,
        })
    }
}

/// An import part's file name: `import-part-00002-of-00004.parquet`.
pub fn part_name(shard: Shard) -> String {
    format!("import-{}", shard.part_name())
}

/// The manifest's file name beside an import part.
pub fn manifest_name(shard: Shard) -> String {
    format!("import-{}", shard.manifest_name())
}

/// An import part's manifest line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportManifest {
    pub root: String,
    pub plan_hash: String,
    pub shard: usize,
    pub shards: usize,
    pub part: String,
    /// Files the part answers for (every file dealt to the shard).
    pub rows: usize,
    pub imported: usize,
    pub failed: usize,
    pub unchanged: usize,
    pub sha256: String,
    pub seconds: f64,
    pub host: String,
}

/// What a finished import shard left.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportShardOutcome {
    pub manifest: ImportManifest,
    pub part: PathBuf,
    /// One line per file that could not be imported: `path: reason`.
    pub failures: Vec<String>,
}

/// A worker's private store: removed with its write-ahead log when the shard ends, in
/// success or error.
struct Scratch(PathBuf);

impl Scratch {
    fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.0);
        let mut wal = self.0.clone().into_os_string();
        wal.push(".wal");
        let _ = std::fs::remove_file(PathBuf::from(wal));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove_files();
    }
}

/// Analyses one shard of the import list at `list_path` and publishes its part and
/// manifest in the list's folder. An interrupted shard publishes nothing.
pub fn run_import_shard(
    list_path: &Path,
    shard: Shard,
    cancel: &AtomicBool,
) -> Result<ImportShardOutcome, ClusterError> {
    let started = Instant::now();
    let list = ImportWorkList::read(list_path)?;
    if shard.count != list.shards {
        return Err(invalid(
            list_path,
            format!(
                "the import list was frozen for {} shards, not {}: use --shard K/{}",
                list.shards, shard.count, list.shards
            ),
        ));
    }
    let root = PathBuf::from(&list.root);
    let files = list.shard_files(shard);
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "cdwqc-import-{}-{}-{}.duckdb",
        short(&list.plan_hash),
        shard.index,
        std::process::id()
    )));
    // A process of the same id may have died here before (containers reuse ids).
    scratch.remove_files();
    let mut store = Store::create(&scratch.0)?;
    let mut touches: Vec<(String, i64, i64)> = Vec::new();
    let mut unchanged: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    let (mut imported, mut failed) = (0, 0);
    for step in files.chunks(STEP) {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let outcomes: Vec<(&ListedFile, Outcome)> = step
            .par_iter()
            .map(|f| {
                let known = f.known.as_ref().map(KnownRow::known_file);
                let outcome =
                    analyse::analyse_with(Path::new(&f.path), &root, known.as_ref(), list.iqm);
                (*f, outcome)
            })
            .collect();
        let mut writes = Vec::with_capacity(outcomes.len());
        for (file, outcome) in outcomes {
            match outcome {
                Outcome::Imported { write, .. } => {
                    imported += 1;
                    writes.push(write);
                }
                Outcome::Failed { write, reason } => {
                    failed += 1;
                    failures.push(format!("{}: {reason}", file.path));
                    writes.push(write);
                }
                Outcome::Unchanged {
                    write: Some(ImageWrite::Touch { image_id, mtime_ns }),
                } => touches.push((file.path.clone(), image_id, mtime_ns)),
                Outcome::Unchanged { .. } => unchanged.push(file.path.clone()),
            }
        }
        store.apply_image_writes(&writes)?;
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(invalid(
            list_path,
            format!("import shard {shard} was interrupted: no part written, run it again"),
        ));
    }
    let dir = list_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let part = dir.join(part_name(shard));
    export_part(&store, &part, &touches, &unchanged)?;
    drop(store);
    drop(scratch);
    let manifest = ImportManifest {
        root: list.root.clone(),
        plan_hash: list.plan_hash.clone(),
        shard: shard.index,
        shards: shard.count,
        part: part_name(shard),
        rows: files.len(),
        imported,
        failed,
        unchanged: touches.len() + unchanged.len(),
        sha256: file_sha256(&part)?,
        seconds: started.elapsed().as_secs_f64(),
        host: host_name(),
    };
    let line = serde_json::to_string(&manifest)
        .map_err(|e| invalid(&part, format!("manifest does not serialize: {e}")))?;
    let manifest_path = dir.join(manifest_name(shard));
    publish(&manifest_path, |temp| {
        std::fs::write(temp, format!("{line}\n")).map_err(io(temp))
    })?;
    failures.sort();
    Ok(ImportShardOutcome {
        manifest,
        part,
        failures,
    })
}

fn store_err(path: &Path) -> impl Fn(duckdb::Error) -> ClusterError + '_ {
    move |source| ClusterError::Db {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// Copies the scratch store's images (with previews and metrics), the touched and the
/// unchanged files to the part.
fn export_part(
    store: &Store,
    part: &Path,
    touches: &[(String, i64, i64)],
    unchanged: &[String],
) -> Result<(), ClusterError> {
    let columns: Vec<String> = store
        .staged_image_columns()?
        .iter()
        .map(|c| format!("i.\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let conn = store.conn();
    let err = store_err(store.path());
    conn.execute_batch(include_str!("../../sql/cluster/import_part_scratch.sql"))
        .map_err(&err)?;
    {
        let mut appender = conn
            .appender_to_catalog_and_db("part_touches", "temp", "main")
            .map_err(&err)?;
        for (path, image_id, mtime_ns) in touches {
            appender
                .append_row(params![path, image_id, mtime_ns])
                .map_err(&err)?;
        }
        appender.flush().map_err(&err)?;
        let mut appender = conn
            .appender_to_catalog_and_db("part_unchanged", "temp", "main")
            .map_err(&err)?;
        for path in unchanged {
            appender.append_row(params![path]).map_err(&err)?;
        }
        appender.flush().map_err(&err)?;
    }
    publish(part, |temp| {
        let sql = include_str!("../../sql/cluster/import_part_export.sql")
            .replace("{columns}", &columns.join(", "))
            .replace("{path}", &sql_string(&temp.display().to_string()));
        conn.execute_batch(&sql).map_err(db(temp))
    })
}

/// The files of a part, each with its kind (`upsert`, `touch`, `unchanged`) and the
/// image a touch names.
fn part_paths(path: &Path) -> Result<Vec<(String, String, Option<i64>)>, ClusterError> {
    let conn = memory_db(path)?;
    let mut stmt = conn
        .prepare(include_str!("../../sql/cluster/import_part_paths.sql"))
        .map_err(db(path))?;
    let text = path.display().to_string();
    stmt.query_map([text.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(db(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db(path))
}

/// Every part of an import job folder, checked against its list and manifests.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedImport {
    pub list: ImportWorkList,
    pub manifests: Vec<ImportManifest>,
    pub parts: Vec<PathBuf>,
}

/// Checks an import job folder: a manifest for every shard, each naming this list's
/// hash and shard count, its part's SHA-256 and row count right, and each part
/// answering for exactly the files dealt to its shard. Every problem is named.
pub fn check_import_parts(dir: &Path) -> Result<CheckedImport, ClusterError> {
    let list = ImportWorkList::read(&dir.join(IMPORT_LIST))?;
    let mut problems = Vec::new();
    let mut manifests = Vec::new();
    let mut parts = Vec::new();
    for index in 0..list.shards {
        let shard = Shard {
            index,
            count: list.shards,
        };
        let manifest_path = dir.join(manifest_name(shard));
        let part_path = dir.join(part_name(shard));
        let text = match crate::regular::read_text(&manifest_path, super::MANIFEST_MAX_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!(
                    "shard {shard}: missing ({} not written; run the shard again)",
                    manifest_name(shard)
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("shard {shard}: {}: {e}", manifest_path.display()));
                continue;
            }
        };
        let manifest: ImportManifest = match serde_json::from_str(text.trim()) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!(
                    "shard {shard}: {} is not a manifest line: {e}",
                    manifest_name(shard)
                ));
                continue;
            }
        };
        if manifest.plan_hash != list.plan_hash
            || (manifest.shard, manifest.shards) != (index, list.shards)
        {
            problems.push(format!(
                "shard {shard}: its manifest says list {} shard {}/{}, not list {} (made from another work list)",
                short(&manifest.plan_hash),
                manifest.shard,
                manifest.shards,
                short(&list.plan_hash)
            ));
            continue;
        }
        let sha = match file_sha256(&part_path) {
            Ok(sha) => sha,
            Err(e) => {
                problems.push(format!(
                    "shard {shard}: {}",
                    super::part_problem(&part_name(shard), &e)
                ));
                continue;
            }
        };
        if sha != manifest.sha256 {
            problems.push(format!(
                "shard {shard}: {} has SHA-256 {}, its manifest says {}",
                part_name(shard),
                short(&sha),
                short(&manifest.sha256)
            ));
            continue;
        }
        let rows = match part_paths(&part_path) {
            Ok(rows) => rows,
            Err(e) => {
                problems.push(format!("shard {shard}: {e}"));
                continue;
            }
        };
        let got: BTreeSet<&str> = rows.iter().map(|(p, _, _)| p.as_str()).collect();
        let dealt: HashMap<&str, &ListedFile> = list
            .shard_files(shard)
            .into_iter()
            .map(|f| (f.path.as_str(), f))
            .collect();
        let want: BTreeSet<&str> = dealt.keys().copied().collect();
        if rows.len() != manifest.rows || got != want || rows.len() != want.len() {
            problems.push(format!(
                "shard {shard}: {} rows in the part, {} in its manifest, {} files dealt to it",
                rows.len(),
                manifest.rows,
                want.len()
            ));
            continue;
        }
        // A touch only records a new time for the file's own stored image.
        let stray = rows.iter().find(|(path, kind, touched)| {
            let known = dealt
                .get(path.as_str())
                .and_then(|f| f.known.as_ref())
                .map(|k| k.image_id);
            match kind.as_str() {
                "touch" => touched.is_none() || *touched != known,
                "upsert" | "unchanged" => false,
                _ => true,
            }
        });
        if let Some((path, kind, touched)) = stray {
            problems.push(format!(
                "shard {shard}: {path}: a {kind:?} row{} that the import list does not allow",
                touched.map_or_else(String::new, |id| format!(" naming image {id}"))
            ));
            continue;
        }
        manifests.push(manifest);
        parts.push(part_path);
    }
    if !problems.is_empty() {
        return Err(ClusterError::Parts {
            dir: dir.to_path_buf(),
            problems,
        });
    }
    Ok(CheckedImport {
        list,
        manifests,
        parts,
    })
}

/// What an import merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportMergeReport {
    pub root: String,
    pub shards: usize,
    pub files: usize,
    pub counts: ImportMergeCounts,
}

/// Checks every part of an import job folder, then loads them into the store in one
/// transaction. Files the store already holds as the parts say are left alone, so
/// merging twice writes nothing; so are files the store changed since the list was
/// frozen (counted as moved).
pub fn merge_import(store: &mut Store, dir: &Path) -> Result<ImportMergeReport, ClusterError> {
    let checked = check_import_parts(dir)?;
    let counts = store.merge_import_parts(&dir.join(IMPORT_LIST), &checked.parts)?;
    if counts.written() > 0 {
        let import_id = store.begin_import(&checked.list.root)?;
        store.finish_import(
            import_id,
            "completed",
            [
                counts.added,
                counts.updated,
                counts.unchanged + counts.touched,
                counts.failed,
                counts.missing,
            ],
        )?;
    }
    Ok(ImportMergeReport {
        root: checked.list.root,
        shards: checked.list.shards,
        files: checked.list.files.len(),
        counts,
    })
}
