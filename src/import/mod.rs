//! Indexing a warehouse: walk a BIDS tree (or plain folders) of NIfTI files, analyse
//! new and changed files on all cores, and write them to the store in small atomic
//! batches so an interrupted import leaves a consistent store and the next one resumes.

pub mod analyse;
pub mod budget;
pub mod fuzz;
pub mod walk;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::store::images::{ImageWrite, KnownFile};
use crate::store::{Store, StoreError};
use analyse::{FileStamp, Outcome};

/// Writes are committed at least this often, so little work is lost on a crash. The
/// age bounds the loss on a crash; the size only caps a batch's memory, since each
/// batch costs a fixed few milliseconds of set-based statements in the store.
const BATCH_SIZE: usize = 512;
const BATCH_AGE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot import: {reason}")]
    Root { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub root: PathBuf,
    /// Also index `derivatives/` and `sourcedata/` folders.
    pub include_derivatives: bool,
    /// Re-analyse files even when size and modification time are unchanged.
    pub force: bool,
    /// Draw a progress bar on stderr (only effective on a terminal).
    pub progress: bool,
    /// Compute the image quality metrics of every new or changed 3D image.
    pub iqm: bool,
}

/// One problem file, for the summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileNote {
    pub path: String,
    pub message: String,
}

/// The outcome of one import run. `added + updated + unchanged + failed` is the
/// number of image files found; `missing` counts files known before and now gone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    pub root: String,
    pub found: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub missing: u64,
    /// Files that failed in an earlier import and are unchanged since.
    pub still_failing: u64,
    pub interrupted: bool,
    pub seconds: f64,
    pub failures: Vec<FileNote>,
    pub warnings: Vec<FileNote>,
}

impl ImportSummary {
    /// Added, updated, unchanged, failed, missing: the `imports` row's counts.
    pub fn counts(&self) -> [u64; 5] {
        [
            self.added,
            self.updated,
            self.unchanged,
            self.failed,
            self.missing,
        ]
    }
}

/// What an import has to do: the files found under its root, the new or changed ones
/// to analyse (with what the store knew of each), and those it can leave.
#[derive(Debug, Clone)]
pub struct ImportPlan {
    /// The canonical root, as stored.
    pub root: PathBuf,
    /// Every image file found, in walk order.
    pub walked: Vec<PathBuf>,
    /// New or changed files, with the store's row for the same path.
    pub todo: Vec<(PathBuf, Option<KnownFile>)>,
    /// Files whose size and modification time are unchanged.
    pub unchanged: u64,
    /// Unchanged files that failed in an earlier import.
    pub still_failing: u64,
    /// Folders or entries the walk could not read.
    pub warnings: Vec<FileNote>,
    /// Folders the walk could not list, as stored paths.
    pub unlisted: Vec<String>,
}

impl ImportPlan {
    /// Stored files under the root that the walk did not find, and that it could have
    /// found: a file under a folder it could not list (permissions, a name too long, a
    /// network error) is not gone.
    pub fn gone<'a>(
        &self,
        known: &'a HashMap<String, KnownFile>,
    ) -> Vec<(&'a String, &'a KnownFile)> {
        let seen: HashSet<String> = self.walked.iter().map(|p| path_text(p)).collect();
        let hidden = |path: &str| {
            self.unlisted.iter().any(|folder| {
                path.strip_prefix(folder.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        };
        known
            .iter()
            .filter(|(path, k)| k.status != "missing" && !seen.contains(*path) && !hidden(path))
            .collect()
    }
}

/// A path as the store keeps it: its text, or, for a name that is not UTF-8 (a file
/// import refuses), its text with each byte that is not UTF-8 and each backslash shown
/// as `\xNN`, followed by [`NOT_UTF8_MARK`]. No path a walk finds holds `//`, so such a
/// name can share its row neither with another such name nor with a UTF-8 name that
/// spells the same escapes (a file literally named `a\xFF.nii` once took turns with
/// `a<0xFF>.nii` over one row, and a rating on it moved between the two files).
pub fn path_text(path: &Path) -> String {
    match path.to_str() {
        Some(text) => text.to_string(),
        None => {
            use std::os::unix::ffi::OsStrExt;
            let mut text = String::new();
            for chunk in path.as_os_str().as_bytes().utf8_chunks() {
                for c in chunk.valid().chars() {
                    if c == '\\' {
                        text.push_str("\\x5C");
                    } else {
                        text.push(c);
                    }
                }
                for byte in chunk.invalid() {
                    text.push_str(&format!("\\x{byte:02X}"));
                }
            }
            text.push_str(NOT_UTF8_MARK);
            text
        }
    }
}

/// What ends the stored path of a file whose name is not UTF-8 (see [`path_text`]).
pub const NOT_UTF8_MARK: &str = "//not-UTF-8";

/// Walks `opts.root` and compares every file with what `known` (the store's files
/// under that root) says of it.
pub fn plan(
    opts: &ImportOptions,
    known: impl FnOnce(&str) -> Result<HashMap<String, KnownFile>, StoreError>,
) -> Result<(ImportPlan, HashMap<String, KnownFile>), ImportError> {
    let root = opts.root.canonicalize().map_err(|e| ImportError::Root {
        path: opts.root.clone(),
        reason: e.to_string(),
    })?;
    if !root.is_dir() {
        return Err(ImportError::Root {
            path: opts.root.clone(),
            reason: "not a folder".into(),
        });
    }
    let walked = walk::candidates(&root, opts.include_derivatives);
    let root_text = path_text(&root);
    // Every stored file under the root, whichever import stored it (this root, or a
    // folder above or below it), but those in folders this walk does not enter: a file
    // is gone only if the walk could have seen it.
    let known: HashMap<String, KnownFile> = known(&root_text)?
        .into_iter()
        .filter(|(path, _)| {
            path.strip_prefix(root_text.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .is_none_or(|rel| walk::enters_folders_of(rel, opts.include_derivatives))
        })
        .collect();
    let mut plan = ImportPlan {
        root,
        walked: Vec::new(),
        todo: Vec::new(),
        unchanged: 0,
        still_failing: 0,
        warnings: walked.errors,
        unlisted: walked.unlisted.iter().map(|p| path_text(p)).collect(),
    };
    for path in &walked.files {
        let key = path_text(path);
        let k = known.get(&key);
        if let (Some(k), false) = (k, opts.force)
            && k.status != "missing"
            && unchanged_stamp(path, k)
        {
            plan.unchanged += 1;
            plan.still_failing += u64::from(k.status == "failed");
            continue;
        }
        // Forced, a file whose bytes the store holds is analysed again too: its
        // sidecar may have been fixed or added, which its own bytes do not show.
        let k = k.cloned().map(|mut k| {
            if opts.force {
                k.sha256 = None;
            }
            k
        });
        plan.todo.push((path.clone(), k));
    }
    plan.walked = walked.files;
    Ok((plan, known))
}

/// Imports `opts.root` into the store. `cancel` stops the run between files: what was
/// analysed is committed, and the next import picks up the rest.
pub fn run(
    store: &mut Store,
    opts: &ImportOptions,
    cancel: &AtomicBool,
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let (plan, known) = plan(opts, |root| store.known_files(root))?;
    let root = plan.root.clone();
    let root_text = root.to_string_lossy().into_owned();
    let mut summary = ImportSummary {
        root: root_text.clone(),
        found: plan.walked.len() as u64,
        unchanged: plan.unchanged,
        still_failing: plan.still_failing,
        warnings: plan.warnings.clone(),
        ..ImportSummary::default()
    };
    let import_id = store.begin_import(&root_text)?;
    let todo = &plan.todo;

    let bar = progress_bar(opts.progress, todo.len() as u64);
    let (tx, rx) = mpsc::sync_channel::<(PathBuf, Outcome)>(BATCH_SIZE);
    let worker_root = root.clone();
    let result = std::thread::scope(|scope| -> Result<(), ImportError> {
        scope.spawn(move || {
            todo.par_iter().for_each_with(tx, |tx, (path, known)| {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let outcome = analyse::analyse_with(path, &worker_root, known.as_ref(), opts.iqm);
                // The receiver only hangs up when the store failed; stop quietly then.
                let _ = tx.send((path.clone(), outcome));
            });
        });
        let mut batch: Vec<ImageWrite> = Vec::with_capacity(BATCH_SIZE);
        let mut last_flush = Instant::now();
        loop {
            let message = rx.recv_timeout(BATCH_AGE);
            match message {
                Ok((path, outcome)) => {
                    bar.inc(1);
                    record(&mut summary, &path, outcome, &mut batch);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if batch.len() >= BATCH_SIZE || (!batch.is_empty() && last_flush.elapsed() >= BATCH_AGE)
            {
                store.apply_image_writes(&batch)?;
                batch.clear();
                last_flush = Instant::now();
            }
        }
        if !batch.is_empty() {
            store.apply_image_writes(&batch)?;
        }
        Ok(())
    });
    bar.finish_and_clear();
    if let Err(e) = result {
        // Best effort: the run row must not claim to be running forever.
        let _ = store.finish_import(import_id, "interrupted", summary.counts());
        return Err(e);
    }

    summary.interrupted = cancel.load(Ordering::Relaxed);
    if !summary.interrupted {
        // Only a complete walk may declare files gone.
        let gone: Vec<i64> = plan.gone(&known).iter().map(|(_, k)| k.image_id).collect();
        summary.missing = store.mark_missing(&gone)? as u64;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let status = if summary.interrupted {
        "interrupted"
    } else {
        "completed"
    };
    store.finish_import(import_id, status, summary.counts())?;
    summary.failures.sort_by(|a, b| a.path.cmp(&b.path));
    summary.warnings.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(summary)
}

fn unchanged_stamp(path: &Path, known: &KnownFile) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let stamp = FileStamp::of(&meta);
            stamp.size == known.file_size && stamp.mtime_ns == known.mtime_ns
        }
        // A broken link stays broken: same as before when it already failed.
        Err(_) => known.status == "failed" && known.file_size == 0 && known.mtime_ns == 0,
    }
}

pub(crate) fn record(
    summary: &mut ImportSummary,
    path: &Path,
    outcome: Outcome,
    batch: &mut Vec<ImageWrite>,
) {
    let path = path_text(path);
    match outcome {
        Outcome::Imported {
            write,
            new,
            warnings,
        } => {
            if new {
                summary.added += 1;
            } else {
                summary.updated += 1;
            }
            summary
                .warnings
                .extend(warnings.into_iter().map(|message| FileNote {
                    path: path.clone(),
                    message,
                }));
            batch.push(write);
        }
        Outcome::Failed { write, reason } => {
            summary.failed += 1;
            summary.failures.push(FileNote {
                path,
                message: reason,
            });
            batch.push(write);
        }
        Outcome::Unchanged { write } => {
            summary.unchanged += 1;
            batch.extend(write);
        }
    }
}

fn progress_bar(wanted: bool, len: u64) -> ProgressBar {
    use std::io::IsTerminal;
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} importing [{bar:40}] {pos}/{len} files {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(id: i64, status: &str) -> KnownFile {
        KnownFile {
            image_id: id,
            file_size: 1,
            mtime_ns: 1,
            sha256: None,
            status: status.into(),
        }
    }

    #[test]
    fn files_under_a_folder_the_walk_could_not_list_are_not_gone() {
        let plan = ImportPlan {
            root: PathBuf::from("/w"),
            walked: vec![PathBuf::from("/w/a/seen.nii")],
            todo: Vec::new(),
            unchanged: 0,
            still_failing: 0,
            warnings: Vec::new(),
            unlisted: vec!["/w/locked".into()],
        };
        let stored: HashMap<String, KnownFile> = [
            ("/w/a/seen.nii", known(1, "ok")),
            ("/w/a/deleted.nii", known(2, "ok")),
            ("/w/locked/hidden.nii", known(3, "ok")),
            ("/w/locked/deeper/hidden.nii", known(4, "failed")),
            // A sibling whose name only starts like the folder's is not under it.
            ("/w/locked2/deleted.nii", known(5, "ok")),
            ("/w/a/gone_before.nii", known(6, "missing")),
        ]
        .into_iter()
        .map(|(p, k)| (p.to_string(), k))
        .collect();
        let mut gone: Vec<i64> = plan.gone(&stored).iter().map(|(_, k)| k.image_id).collect();
        gone.sort_unstable();
        assert_eq!(gone, [2, 5]);
        // An error that named no folder hides the whole root.
        let blind = ImportPlan {
            unlisted: vec!["/w".into()],
            ..plan
        };
        assert!(blind.gone(&stored).is_empty());
    }

    #[test]
    fn names_that_are_not_utf8_keep_their_bytes_apart() {
        use std::os::unix::ffi::OsStrExt;
        let name = |bytes: &[u8]| path_text(Path::new(std::ffi::OsStr::from_bytes(bytes)));
        assert_eq!(name(b"/w/sub-01_T1w.nii"), "/w/sub-01_T1w.nii");
        assert_eq!(name("/w/é.nii".as_bytes()), "/w/é.nii");
        assert_eq!(name(b"/w/a\xFF.nii"), "/w/a\\xFF.nii//not-UTF-8");
        assert_ne!(name(b"/w/a\xFF.nii"), name(b"/w/a\xFE.nii"));
        // No UTF-8 name spells a name that is not: a walk never finds `//`.
        assert_ne!(name(b"/w/a\xFF.nii"), name(b"/w/a\\xFF.nii"));
        // Nor do two that are not: their backslashes are escaped too.
        assert_ne!(name(b"/w/a\\xFF\xFF.nii"), name(b"/w/a\xFF\\xFF.nii"));
        assert_eq!(name(b"/w/a\\\xFF"), "/w/a\\x5C\\xFF//not-UTF-8");
    }
}
