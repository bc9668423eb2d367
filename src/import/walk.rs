//! Finding candidate image files under an import root.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::FileNote;
use crate::imaging::nifti::is_nifti_path;

/// Folders a BIDS dataset keeps for non-raw data; skipped unless asked for.
const NON_RAW_FOLDERS: [&str; 2] = ["derivatives", "sourcedata"];

#[derive(Debug, Default)]
pub struct Walked {
    /// Absolute paths of `.nii` / `.nii.gz` entries (files, links, broken links), sorted.
    pub files: Vec<PathBuf>,
    /// Folders that could not be listed.
    pub errors: Vec<FileNote>,
    /// The folders behind those errors (the root when an error names none): the files
    /// stored under them were not seen, which does not make them gone.
    pub unlisted: Vec<PathBuf>,
}

/// Whether a walk enters every folder of `rel`, a file's path below the root: no hidden
/// folder, and no non-raw one unless `include_derivatives` (what [`candidates`] skips).
pub fn enters_folders_of(rel: &str, include_derivatives: bool) -> bool {
    let mut folders = rel.split('/').collect::<Vec<_>>();
    folders.pop();
    folders.iter().all(|name| {
        !(name.starts_with('.') || (!include_derivatives && NON_RAW_FOLDERS.contains(name)))
    })
}

pub fn candidates(root: &Path, include_derivatives: bool) -> Walked {
    let mut walked = Walked::default();
    let walker = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            if e.depth() == 0 || !e.file_type().is_dir() {
                return true;
            }
            let name = e.file_name().to_string_lossy();
            !(name.starts_with('.')
                || (!include_derivatives && NON_RAW_FOLDERS.contains(&name.as_ref())))
        });
    for entry in walker {
        match entry {
            Ok(e) if !e.file_type().is_dir() && is_nifti_path(e.path()) => {
                walked.files.push(e.into_path());
            }
            Ok(_) => {}
            Err(err) => {
                let folder = err.path().unwrap_or(root).to_path_buf();
                walked.errors.push(FileNote {
                    path: folder.display().to_string(),
                    message: format!("cannot list folder: {err}"),
                });
                walked.unlisted.push(folder);
            }
        }
    }
    walked
}
