//! Importing a rating file into the store: parse, match every row to a stored image,
//! then save all rows, and the raters the file introduces, in one transaction — or
//! nothing, when a row is invalid or matches no image and `skip_invalid` is off, or
//! when the store refuses a row. A file imported again saves only the ratings it did not
//! save before (per rater and image).
//! Missing values (`n/a`, `NA`, empty) are no rating and no problem; the report
//! counts them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::formats::{FileFormat, ImageKey, ParseOptions, ParsedRow, parse_ratings_bytes};
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
    /// No row names its rater and `--rater` is absent: one error for the file, not the
    /// same problem on every line.
    #[error(
        "rating file {}: no row names its rater (the file has no rater column, or it is empty); give --rater NAME",
        path.display()
    )]
    NoRater { path: std::path::PathBuf },
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
    /// Rows of a history export withdrawn by an undo in the same file (the undos
    /// included): not saved.
    pub withdrawn: usize,
    /// Rows whose rating is the one last saved from another version of the same file (path)
    /// (the file was edited, or grew): not saved again, so that corrections and undos
    /// made since stay in force.
    pub unchanged: usize,
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
        // A path with folders names a file: matched by path only (`ImageIndex::find`).
        // A bare name may be a file name or a notebook `img_id` stem.
        ImageKey::Path(p) if p.trim_start_matches("./").contains('/') => index
            .find(&ImageRef::Path(p.clone()))
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
    let mut each = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = read_rating_file(file)?;
        // Each file is bounded; so is the folder, whose files are all held at once.
        if all_bytes.len() + bytes.len() > RATING_FILE_MAX_BYTES as usize {
            return Err(RatingImportError::Arguments(format!(
                "{}: the widget files given hold more than the {} MiB one import may read: import them in parts",
                file.display(),
                RATING_FILE_MAX_BYTES >> 20
            )));
        }
        all_bytes.extend_from_slice(file.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
        all_bytes.extend_from_slice(&bytes);
        each.push(format!("import:{}", hex_sha256(&bytes)));
        let text = super::formats::decode_text(&bytes, &file.display().to_string())?;
        texts.push((file.clone(), text.into_owned()));
    }
    let parsed = super::external::parse_widget_files(&texts, options.mriqc_exclude);
    let shown = match paths {
        [one] => one.display().to_string(),
        _ => format!("{} files", files.len()),
    };
    // Each widget file is its own source: a folder imported again after a few more
    // ratings saves those only. Earlier builds took the whole batch as one source.
    let origin = Origin {
        files: each,
        one_row_per_file: true,
        earlier: vec![format!("import:{}", hex_sha256(&all_bytes))],
        name: None,
    };
    import_parsed(store, &shown, parsed, &origin, rater, skip_invalid)
}

/// Where the rows of a parse come from, so that each saved rating can name its source:
/// `import:<SHA-256 of its file>:<its line>`.
struct Origin {
    /// `import:<SHA-256>` of each file.
    files: Vec<String>,
    /// MRIQC widget files: row `n` (its "line") is the whole of file `n`.
    one_row_per_file: bool,
    /// Sources that earlier builds gave the same ratings, without lines.
    earlier: Vec<String>,
    /// The absolute path of a table file (not a widget batch), which names its
    /// versions: its rows unchanged since the latest save from a version of the file
    /// are not saved again.
    name: Option<String>,
}

impl Origin {
    fn one_file(bytes: &[u8], path: &Path) -> Self {
        let file = format!("import:{}", hex_sha256(bytes));
        // An earlier build's source for it is the file's own, already in `files`.
        Self {
            files: vec![file],
            one_row_per_file: false,
            earlier: Vec::new(),
            // The file's place, not its name alone: two sites' `ratings.tsv` are two
            // files, and the later one's save counted as the other's last version.
            name: path
                .canonicalize()
                .or_else(|_| std::path::absolute(path))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
        }
    }

    /// The row's file's source and its own.
    fn of(&self, line: usize) -> (&str, String) {
        if self.one_row_per_file {
            let file = self
                .files
                .get(line.saturating_sub(1))
                .map_or("", String::as_str);
            (file, format!("{file}:1"))
        } else {
            let file = self.files.first().map_or("", String::as_str);
            (file, format!("{file}:{line}"))
        }
    }
}

/// The largest rating file read, millions of rows: a larger one is refused before any
/// byte is read (`/dev/zero` or a sparse file of terabytes filled memory).
pub const RATING_FILE_MAX_BYTES: u64 = 256 << 20;

/// A rating file's bytes, read once. Regular files only, opened without blocking: a
/// FIFO that no one writes hung the import while it held the store for writing.
fn read_rating_file(path: &Path) -> Result<Vec<u8>, RatingImportError> {
    let refused = |reason: String| RatingImportError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::other(reason),
    };
    let (mut file, size) = match crate::imaging::nifti::open_regular(path) {
        Ok(opened) => opened,
        // The parser says what an empty rating file lacks.
        Err(crate::imaging::ImagingError::Empty { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(refused(e.reason())),
    };
    if size > RATING_FILE_MAX_BYTES {
        return Err(refused(format!(
            "{size} bytes, more than the {} MiB a rating file may hold: split it",
            RATING_FILE_MAX_BYTES >> 20
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|source| {
        RatingImportError::Read {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(bytes)
}

/// Imports `path`. `rater` names the rater of files without a rater column.
pub fn import_file(
    store: &mut Store,
    path: &Path,
    rater: Option<&str>,
    options: &ParseOptions,
    skip_invalid: bool,
) -> Result<RatingImportReport, RatingImportError> {
    let bytes = read_rating_file(path)?;
    let parsed = parse_ratings_bytes(&bytes, path, options)?;
    import_parsed(
        store,
        &path.display().to_string(),
        parsed,
        &Origin::one_file(&bytes, path),
        rater,
        skip_invalid,
    )
}

/// Matches parsed rows to images and saves them (or nothing), each under its source.
fn import_parsed(
    store: &mut Store,
    shown: &str,
    parsed: super::formats::ParsedFile,
    origin: &Origin,
    rater: Option<&str>,
    skip_invalid: bool,
) -> Result<RatingImportReport, RatingImportError> {
    let path = Path::new(shown);
    let mut report = RatingImportReport {
        file: shown.to_string(),
        format: format_name(parsed.format),
        rows: parsed.rows.len() + parsed.invalid.len() + parsed.withdrawn,
        imported: 0,
        missing: parsed.missing,
        withdrawn: parsed.withdrawn,
        unchanged: 0,
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
    if rater.is_none() && !parsed.rows.is_empty() && parsed.rows.iter().all(|r| r.rater.is_none()) {
        return Err(RatingImportError::NoRater {
            path: path.to_path_buf(),
        });
    }
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
        // Names differ in case only by mistake: `Alice` would become a second rater
        // and save alice's file again.
        if !known.contains(who)
            && let Some(existing) = known
                .iter()
                .chain(&raters_needed)
                .find(|k| k.eq_ignore_ascii_case(who) && k.as_str() != who)
        {
            report.problems.push(RowProblem {
                line: row.line,
                message: format!(
                    "rater {who} differs from the existing rater {existing} in case only: \
                     use {existing}, or add {who} first with `cdwqc raters add {who}`"
                ),
            });
            continue;
        }
        match image_id(&index, &row.key) {
            Ok(id) => {
                if !known.contains(who) {
                    raters_needed.insert(who.to_string());
                }
                let (file, own) = origin.of(row.line);
                ratings.push((file.to_string(), to_new_rating(row, id, who, &own)));
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
    // (two raters' files can hold the same bytes when they have no rater column). A
    // rating names its file and line, so each row is matched to its own save; ratings
    // an earlier build saved name their file only, and are matched per rater and image.
    // A table file whose versions the store knows (from schema 14 on) is compared
    // with its last saves by value; bytes seen before are then no proof that nothing
    // is new: a version set back to an earlier one undoes a later version's change.
    let file = origin.name.as_deref().zip(match origin.files.as_slice() {
        [one] if !origin.one_row_per_file => Some(one.as_str()),
        _ => None,
    });
    let reverted = match file {
        Some((name, source)) => store
            .last_version_of_file(name)?
            .is_some_and(|last| last != source),
        None => false,
    };
    let mut sources: Vec<&str> = origin.files.iter().map(String::as_str).collect();
    sources.extend(origin.earlier.iter().map(String::as_str));
    sources.sort_unstable();
    sources.dedup();
    let before = store.ratings_from_sources(&sources)?;
    let total = ratings.len();
    if before.total > 0 && !reverted {
        let mut left = before.counts;
        let mut take = |key: (String, String, Option<i64>)| match left.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        // A widget file's one rating is matched with its image too: two files of the
        // same bytes (the image then comes from each file's name) are two ratings.
        let per_image = origin.one_row_per_file;
        let mut matched_raters = std::collections::BTreeSet::new();
        ratings.retain(|(file, r): &(String, NewRating)| {
            let image = per_image.then_some(r.image_id);
            let saved = take((r.source.clone(), r.rater.clone(), image))
                || std::iter::once(file)
                    .chain(&origin.earlier)
                    .any(|old| take((old.clone(), r.rater.clone(), Some(r.image_id))));
            if saved {
                matched_raters.insert(r.rater.clone());
            }
            !saved
        });
        raters_needed.retain(|name| ratings.iter().any(|(_, r)| &r.rater == name));
        report.earlier = total - ratings.len();
        if ratings.is_empty() && report.earlier > 0 {
            report.already_imported = Some(format!(
                "{} ratings from this file were saved on {}",
                report.earlier,
                matched_raters
                    .iter()
                    .filter_map(|rater| before.first_saved.get(rater))
                    .min()
                    .cloned()
                    .unwrap_or_default()
            ));
            return Ok(report);
        }
    }
    // Another version of a file imported before (same path, other bytes): its rows
    // whose rating is the one last saved from the file are what the rater saved then,
    // not a new rating; saved again, they overruled corrections and undos made since.
    if let Some((name, _)) = file {
        let latest = store.latest_from_file_name(name)?;
        if !latest.is_empty() {
            // A pair the file rates twice is judged by its last row, what the file
            // leaves in force: all its rows are saved, or none.
            let mut last = std::collections::HashMap::new();
            for (_, r) in &ratings {
                last.insert((r.rater.clone(), r.image_id), r.saved_values());
            }
            let before_count = ratings.len();
            ratings.retain(|(_, r)| {
                let pair = (r.rater.clone(), r.image_id);
                latest
                    .get(&pair)
                    .is_none_or(|saved| last.get(&pair) != Some(saved))
            });
            report.unchanged = before_count - ratings.len();
            raters_needed.retain(|name| ratings.iter().any(|(_, r)| &r.rater == name));
        }
    }
    if !report.problems.is_empty() && !skip_invalid {
        return Ok(report);
    }
    let ratings: Vec<NewRating> = ratings.into_iter().map(|(_, r)| r).collect();
    let new_raters: Vec<String> = raters_needed.into_iter().collect();
    store.save_ratings_from_file(
        &new_raters,
        &ratings,
        file.map(|(name, source)| (source, name)),
    )?;
    report.new_raters = new_raters;
    report.imported = ratings.len();
    report.saved = true;
    Ok(report)
}
