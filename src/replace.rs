//! Files replaced whole: written into a new file beside them, synced, then renamed over
//! them, so that a reader never sees half a file and no link planted under either name
//! is written through.
//!
//! The temporary file is created with `O_CREAT | O_EXCL`, which fails on any existing
//! entry, a link included, rather than following it: a fixed temporary name written with
//! `std::fs::write` let a link planted under it (`dataset_description.partial` pointing
//! at the store) truncate the store and write JSON into it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A replacement that failed, and the file it failed on (the temporary file or the
/// target); the temporary file is removed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ReplaceError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// How durable the replacement is once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Nothing is synced: a crash may leave the old file, or an empty one, under the
    /// name (files a run writes anew, such as a synthetic warehouse's thousands).
    None,
    /// The content is synced; the rename may be lost in a crash, leaving the old file
    /// (a cache entry, recomputed when missing).
    Content,
    /// The content and the rename are synced (the folder too).
    ContentAndName,
}

/// Replaces `path` with `bytes`.
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), ReplaceError> {
    replace_with(path, durability, |temp, file| {
        file.write_all(bytes).map_err(|source| ReplaceError {
            path: temp.to_path_buf(),
            source,
        })
    })
}

/// Replaces `path` with what `write` writes: into the open new file, or by its path (a
/// library that saves to a file name), which names a file this call has just created
/// and so no link.
pub fn replace_with<E: From<ReplaceError>>(
    path: &Path,
    durability: Durability,
    write: impl FnOnce(&Path, &mut File) -> Result<(), E>,
) -> Result<(), E> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplaceError { path, source }
    };
    let dir = parent(path);
    let (temp, mut file) = create_temporary(path, dir)?;
    let written = write(&temp, &mut file).and_then(|()| {
        drop(file);
        if durability != Durability::None {
            // Reopened, as `write` may have written by path (a new inode under the name).
            File::open(&temp)
                .and_then(|f| f.sync_all())
                .map_err(failed(&temp))?;
        }
        std::fs::rename(&temp, path).map_err(failed(path))?;
        if durability == Durability::ContentAndName {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(failed(dir))?;
        }
        Ok(())
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Files replaced together: each one is written and synced under a new temporary name
/// as it comes; none replaces its target until [`Staged::commit`], which renames them
/// all and syncs their folders. A failure before the commit (a full disk, an error
/// while gathering the next file's content) leaves every target as it was; what was
/// staged is removed when the set is dropped uncommitted.
#[derive(Debug, Default)]
pub struct Staged {
    /// Temporary file and target, in the order they were staged.
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `bytes` for `path`, synced, under a temporary name beside it.
    pub fn add(&mut self, path: &Path, bytes: &[u8]) -> Result<(), ReplaceError> {
        let (temp, mut file) = create_temporary(path, parent(path))?;
        // Registered first, so that a failed write is removed with the rest.
        self.files.push((temp.clone(), path.to_path_buf()));
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|source| ReplaceError { path: temp, source })
    }

    /// Renames every staged file over its target, in the order staged, then syncs the
    /// folders. A rename that fails (rare: same folder, files already written) stops
    /// there; the files renamed before it stay replaced, each one whole.
    pub fn commit(mut self) -> Result<(), ReplaceError> {
        let files = std::mem::take(&mut self.files);
        let mut folders: Vec<&Path> = Vec::new();
        for (n, (temp, target)) in files.iter().enumerate() {
            if let Err(source) = std::fs::rename(temp, target) {
                for (temp, _) in &files[n..] {
                    let _ = std::fs::remove_file(temp);
                }
                return Err(ReplaceError {
                    path: target.clone(),
                    source,
                });
            }
            let folder = parent(target);
            if !folders.contains(&folder) {
                folders.push(folder);
            }
        }
        for folder in folders {
            File::open(folder)
                .and_then(|d| d.sync_all())
                .map_err(|source| ReplaceError {
                    path: folder.to_path_buf(),
                    source,
                })?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (temp, _) in &self.files {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// The folder holding `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Temporary files this process has named, so that its threads never pick one name.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// A new file beside `path`, named after it with its extension kept last (libraries
/// pick a format by it), created exclusively.
fn create_temporary(path: &Path, dir: &Path) -> Result<(PathBuf, File), ReplaceError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name near the file system's limit of 255 bytes keeps only its extension.
    let name = if name.len() > 200 {
        path.extension()
            .map(|e| format!("x.{}", e.to_string_lossy()))
            .filter(|n| n.len() <= 200)
            .unwrap_or_default()
    } else {
        name
    };
    let mut attempts = 0;
    loop {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".tmp-{}-{call}-{name}", std::process::id()));
        match File::create_new(&temp) {
            Ok(file) => return Ok((temp, file)),
            // A name taken (a leftover, or planted): another one, never that file.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 100 => {
                attempts += 1;
            }
            Err(source) => return Err(ReplaceError { path: temp, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_set_replaces_all_its_files_on_commit_and_none_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.tsv"), dir.path().join("b.json"));
        std::fs::write(&a, b"old a").expect("write");
        std::fs::write(&b, b"old b").expect("write");
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        // Abandoned part way (the export's next query failed): nothing replaced, nothing
        // left behind.
        let mut staged = Staged::new();
        staged.add(&a, b"new a").expect("staged");
        drop(staged);
        assert_eq!(std::fs::read(&a).expect("read"), b"old a");
        assert_eq!(listing(), ["a.tsv", "b.json"]);
        let mut staged = Staged::new();
        staged.add(&a, b"new a").expect("staged");
        staged.add(&b, b"new b").expect("staged");
        assert_eq!(std::fs::read(&b).expect("read"), b"old b");
        staged.commit().expect("committed");
        assert_eq!(std::fs::read(&a).expect("read"), b"new a");
        assert_eq!(std::fs::read(&b).expect("read"), b"new b");
        assert_eq!(listing(), ["a.tsv", "b.json"]);
    }

    #[test]
    fn a_link_planted_under_any_name_is_never_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        let target = dir.path().join("out.json");
        // Links under every temporary name the next calls could pick (other tests may
        // take some meanwhile), and under the target itself.
        let next = CALLS.load(Ordering::Relaxed);
        for call in next..next + 50 {
            let name = format!(".tmp-{}-{call}-out.json", std::process::id());
            let _ = std::os::unix::fs::symlink(&victim, dir.path().join(name));
        }
        std::os::unix::fs::symlink(&victim, &target).expect("link");
        replace(&target, b"{}", Durability::ContentAndName).expect("replaced");
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
        assert_eq!(std::fs::read(&target).expect("read"), b"{}");
        assert!(!target.is_symlink());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("model.safetensors");
        std::fs::write(&target, b"old").expect("write");
        let result: Result<(), ReplaceError> =
            replace_with(&target, Durability::Content, |temp, _| {
                assert!(temp.to_string_lossy().ends_with("model.safetensors"));
                Err(ReplaceError {
                    path: temp.to_path_buf(),
                    source: std::io::Error::other("disk full"),
                })
            });
        assert!(result.is_err());
        assert_eq!(std::fs::read(&target).expect("read"), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("model.safetensors")]);
    }

    #[test]
    fn a_name_near_the_limit_is_replaced_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join(format!("{}.parquet", "n".repeat(240)));
        replace(&target, b"x", Durability::Content).expect("replaced");
        assert_eq!(std::fs::read(&target).expect("read"), b"x");
    }

    #[test]
    fn a_file_written_by_path_replaces_the_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("w.bin");
        replace_with(&target, Durability::Content, |temp, _| {
            std::fs::write(temp, b"by path").map_err(|source| ReplaceError {
                path: temp.to_path_buf(),
                source,
            })
        })
        .expect("replaced");
        assert_eq!(std::fs::read(&target).expect("read"), b"by path");
    }
}
