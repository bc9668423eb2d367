//! Importing a rating file into the store: parse, match every row to a stored image,
//! then save all rows, and the raters the file introduces, in one transaction — or
//! nothing, when a row is invalid or matches no image and `skip_invalid` is off, or
//! when the store refuses a row. A file imported again saves only the ratings it did not
//! save before (per rater and image).
//! Missing values (`n/a`, `NA`, empty) are no rating and no problem; the report
//! counts them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::formats::{FileFormat, ImageKey, ParseOptions, ParsedRow, read_ratings_file};
use crate::import::analyse::hex_sha256;
use crate::protocol::Quality;
use crate::store::lookup::{ImageIndex, ImageRef};
use crate::store::ratings::NewRating;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RatingImportError {
    #[error("{0}")]
    Format(#[from] super::formats::FormatError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Arguments(String),
    /// `--rater` names someone else than the file's rater column: importing would
    /// credit one rater with another's ratings.
    #[error(
        "rating file {}, line {line}: --rater {given} contradicts the file's rater column, which names {in_file}; drop --rater (the file names its raters) or import the right file",
        path.display()
    )]
    RaterConflict {
        path: std::path::PathBuf,
        line: usize,
        given: String,
        in_file: String,
    },
}

/// A row that cannot be imported, by line number.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowProblem {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RatingImportReport {
    pub file: String,
    pub format: &'static str,
    pub rows: usize,
    pub imported: usize,
    /// Ratings the file leaves missing (`n/a`, `NA`, empty): no rating, no problem.
    pub missing: usize,
    pub problems: Vec<RowProblem>,
    /// Raters created because the file named them.
    pub new_raters: Vec<String>,
    /// Set when the same file (same bytes) was imported before and holds no rating it
    /// did not save then: nothing was saved.
    pub already_imported: Option<String>,
    /// Ratings an earlier import of the same file saved, left out of this one.
    pub earlier: usize,
    /// False when problems stopped the import (nothing saved).
    pub saved: bool,
}

fn format_name(f: FileFormat) -> &'static str {
    match f {
        FileFormat::Native => "native",
        FileFormat::Notebook => "notebook",
        FileFormat::Mriqc => "mriqc",
        FileFormat::MriqcJson => "mriqc-json",
        FileFormat::Fetmrqc => "fetmrqc",
    }
}

fn image_id(index: &ImageIndex, key: &ImageKey) -> Result<i64, String> {
    match key {
        ImageKey::Bids(b) => index
            .find(&ImageRef::Entities {
                subject: b.subject.clone(),
                session: b.session.clone(),
                acq: b.acq.clone(),
                run: b.run.clone(),
                suffix: b.suffix.clone(),
            })
            .map_err(|e| e.to_string()),
        ImageKey::Path(p) => index
            .find(&ImageRef::Path(p.clone()))
            .or_else(|_| index.find(&ImageRef::Stem(p.clone())))
            .or_else(|_| {
                let stem = crate::imaging::bids::stem(Path::new(p));
                index.find(&ImageRef::Stem(stem))
            })
            .map_err(|e| e.to_string()),
    }
}

fn to_new_rating(row: &ParsedRow, image_id: i64, rater: &str, source: &str) -> NewRating {
    let r = &row.rating;
    NewRating {
        image_id,
        rater: rater.to_string(),
        usable: r.is_usable(),
        reject_reason: r.usable.reject_reason().map(|x| x.name().to_string()),
        gado: r.gado,
        motion: r.motion.level(),
        contrast: r.contrast.level(),
        noise: r.noise.level(),
        quality_only: !row.grades_known,
        quality: r.quality().map(|q: Quality| q.name().to_string()),
        code: if row.grades_known {
            r.code()
        } else {
            String::new()
        },
        comment: row.comment.clone(),
        confidence: row.confidence,
        time_ms: row.time_ms.map(|t| t as i64),
        review_later: false,
        source: source.to_string(),
        rated_at: row.rated_at.clone(),
    }
}

/// Imports rating files: one table, or MRIQC widget JSON files (files and folders of
/// them, all saved as one batch). `rater` names the rater of files without a rater
/// column.
pub fn import_files(
    store: &mut Store,
    paths: &[PathBuf],
    rater: Option<&str>,
    options: &ParseOptions,
    skip_invalid: bool,
) -> Result<RatingImportReport, RatingImportError> {
    let is_json = |p: &PathBuf| {
        p.is_dir()
            || p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    };
    let widget = options.format == Some(FileFormat::MriqcJson)
        || (options.format.is_none() && !paths.is_empty() && paths.iter().all(is_json));
    if !widget {
        return match paths {
            [path] => import_file(store, path, rater, options, skip_invalid),
            _ => Err(RatingImportError::Arguments(format!(
                "{} files given: only mriqc-json imports several files (or a folder) at once",
                paths.len()
            ))),
        };
    }
    let files = super::external::widget_files(paths)?;
    if files.is_empty() {
        return Err(RatingImportError::Arguments(format!(
            "no .json rating file in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut all_bytes = Vec::new();
    let mut texts = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = std::fs::read(file).map_err(|source| RatingImportError::Read {
            path: file.clone(),
            source,
        })?;
        all_bytes.extend_from_slice(file.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
        all_bytes.extend_from_slice(&bytes);
        texts.push((file.clone(), String::from_utf8_lossy(&bytes).into_owned()));
    }
    let source = format!("import:{}", hex_sha256(&all_bytes));
    let parsed = super::external::parse_widget_files(&texts, options.mriqc_exclude);
    let shown = match paths {
        [one] => one.display().to_string(),
        _ => format!("{} files", files.len()),
    };
    import_parsed(store, &shown, parsed, source, rater, skip_invalid)
}

/// Imports `path`. `rater` names the rater of files without a rater column.
pub fn import_file(
    store: &mut Store,
    path: &Path,
    rater: Option<&str>,
    options: &ParseOptions,
    skip_invalid: bool,
) -> Result<RatingImportReport, RatingImportError> {
    let bytes = std::fs::read(path).map_err(|source| RatingImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let source = format!("import:{}", hex_sha256(&bytes));
    let parsed = read_ratings_file(path, options)?;
    import_parsed(
        store,
        &path.display().to_string(),
        parsed,
        source,
        rater,
        skip_invalid,
    )
}

/// Matches parsed rows to images and saves them (or nothing) as `source`.
fn import_parsed(
    store: &mut Store,
    shown: &str,
    parsed: super::formats::ParsedFile,
    source: String,
    rater: Option<&str>,
    skip_invalid: bool,
) -> Result<RatingImportReport, RatingImportError> {
    let path = Path::new(shown);
    let mut report = RatingImportReport {
        file: shown.to_string(),
        format: format_name(parsed.format),
        rows: parsed.rows.len() + parsed.invalid.len(),
        imported: 0,
        missing: parsed.missing,
        problems: parsed
            .invalid
            .iter()
            .map(|i| RowProblem {
                line: i.line,
                message: i.message.clone(),
            })
            .collect(),
        new_raters: Vec::new(),
        already_imported: None,
        earlier: 0,
        saved: false,
    };
    let index = ImageIndex::load(store)?;
    let known: std::collections::HashSet<String> =
        store.raters()?.into_iter().map(|r| r.name).collect();
    let mut ratings = Vec::with_capacity(parsed.rows.len());
    let mut raters_needed = std::collections::BTreeSet::new();
    for row in &parsed.rows {
        let who = match (rater, row.rater.as_deref()) {
            (Some(given), Some(in_file)) if given != in_file => {
                return Err(RatingImportError::RaterConflict {
                    path: path.to_path_buf(),
                    line: row.line,
                    given: given.to_string(),
                    in_file: in_file.to_string(),
                });
            }
            (Some(r), _) => r,
            (None, Some(r)) => r,
            (None, None) => {
                report.problems.push(RowProblem {
                    line: row.line,
                    message: "no rater: the file has no rater column; give --rater NAME".into(),
                });
                continue;
            }
        };
        if let Err(message) = crate::store::raters::validate_name(who) {
            report.problems.push(RowProblem {
                line: row.line,
                message,
            });
            continue;
        }
        match image_id(&index, &row.key) {
            Ok(id) => {
                if !known.contains(who) {
                    raters_needed.insert(who.to_string());
                }
                ratings.push(to_new_rating(row, id, who, &source));
            }
            Err(message) => report.problems.push(RowProblem {
                line: row.line,
                message,
            }),
        }
    }
    report.problems.sort_by_key(|p| p.line);
    // The same file imported again saves only what it did not save before: rows skipped
    // then (`--skip-invalid`, an image not yet imported) and rows for another rater
    // (two raters' files can hold the same bytes when they have no rater column).
    // Counted per rater and image, so a file that rates an image twice keeps both.
    let before = store.ratings_from_source(&source)?;
    if before.total > 0 {
        let mut left = before.per_rater_image;
        ratings.retain(|r| match left.get_mut(&(r.rater.clone(), r.image_id)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        });
        raters_needed.retain(|name| ratings.iter().any(|r| &r.rater == name));
        if ratings.is_empty() {
            report.already_imported = Some(format!(
                "{} ratings from this file were saved on {}",
                before.total,
                before.first_saved.unwrap_or_default()
            ));
            return Ok(report);
        }
        report.earlier = before.total;
    }
    if !report.problems.is_empty() && !skip_invalid {
        return Ok(report);
    }
    let new_raters: Vec<String> = raters_needed.into_iter().collect();
    store.save_ratings_with_raters(&new_raters, &ratings)?;
    report.new_raters = new_raters;
    report.imported = ratings.len();
    report.saved = true;
    Ok(report)
}
