//! Rating files of neighbouring QC tools, read into the protocol's rows.
//!
//! # MRIQC rating widget (`mriqc-json`)
//! The widget in MRIQC's visual reports (nireports' `rating-widget`) downloads one JSON
//! file per image, named `<dataset>_<bids name>.json`, holding `dataset`, `subject`
//! (the image's BIDS name, e.g. `sub-01_ses-1_T1w`), `rating` (the slider, 1.0 to 4.0
//! in steps of 0.05, written as a string), `artifacts` (a list of names such as
//! `head-motion`, `noise-global`, `inu`), `time_sec`, and, when filled in,
//! `confidence` (a 0.0-4.0 slider from doubtful to confident) and `comments`. The
//! slider's four labels are coloured by the widget at 1.5, 2.5 and 3.5:
//! - below 1.5 Exclude -> reject, reason `other` (or usable, quality bad with
//!   `--mriqc-exclude bad`, as for MRIQC tables);
//! - 1.5 to 2.5 Poor -> usable, quality bad;
//! - 2.5 to 3.5 Acceptable -> usable, quality medium;
//! - above 3.5 Excellent -> usable, quality good.
//!
//! The widget grades no artefact separately, so these are quality-only ratings
//! (grades unknown). The artefact names and the comments become the rating's comment,
//! `time_sec` its time, `confidence` the protocol's 1-5 (round(c) + 1). The file names
//! no rater: `--rater` is required. The image is the `subject` field's BIDS name, else
//! the `sub-...` part of the file name.
//!
//! # fetMRQC merged CSV (`fetmrqc`)
//! fetMRQC's `qc_ratings_to_csv` merges its widget's JSON files into one CSV with the
//! columns `name` (index), `sub`, `ses`, `run`, `rating` (0-4), `rating_text`,
//! `orientation`, `fetal_motion` and `bias_field` (0-3, with `_text`), `artifacts`,
//! `nselected`, `selected_slices`, `comments`, `time_sec`, `timestamp`, `dataset`, `im`
//! (the image's path), `mask` and `ratings_json`. Its own thresholds
//! (`rating_text`) give the mapping: below 1 exclude -> reject `other` (or bad, as
//! above), 1-2 poor -> bad, 2-3 acceptable -> medium, 3-4 excellent -> good. The image
//! is `im` (its BIDS file name), else `sub`/`ses`/`run`. `fetal_motion` and
//! `bias_field` (low below 1, moderate below 2, high) and the artefact list are kept in
//! the comment; the rating is quality-only. No rater column: `--rater` is required.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::formats::{
    Delimiter, FileFormat, FormatError, ImageKey, InvalidRow, MriqcExclude, ParsedFile, ParsedRow,
    quality_only,
};
use crate::protocol::{Quality, Rating, RejectReason};

/// The protocol rating of an MRIQC widget score (1.0-4.0).
pub fn mriqc_widget_rating(score: f64, exclude: MriqcExclude) -> Rating {
    if score < 1.5 {
        excluded(exclude)
    } else if score < 2.5 {
        quality_only(Quality::Bad)
    } else if score <= 3.5 {
        quality_only(Quality::Medium)
    } else {
        quality_only(Quality::Good)
    }
}

/// The protocol rating of a fetMRQC score (0-4, fetMRQC's `rating_text` thresholds).
pub fn fetmrqc_rating(score: f64, exclude: MriqcExclude) -> Rating {
    if score < 1.0 {
        excluded(exclude)
    } else if score < 2.0 {
        quality_only(Quality::Bad)
    } else if score < 3.0 {
        quality_only(Quality::Medium)
    } else {
        quality_only(Quality::Good)
    }
}

/// fetMRQC's words for an artefact score (0-3).
pub fn fetmrqc_artefact_level(value: f64) -> &'static str {
    if value < 1.0 {
        "low"
    } else if value < 2.0 {
        "moderate"
    } else {
        "high"
    }
}

fn excluded(exclude: MriqcExclude) -> Rating {
    match exclude {
        MriqcExclude::Reject => Rating::reject(RejectReason::Other),
        MriqcExclude::Bad => quality_only(Quality::Bad),
    }
}

/// The JSON files to read: each folder's `*.json` files (sorted by name), each file as
/// given.
pub fn widget_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FormatError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| FormatError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// A number written as a number or as a string (the widget writes slider values as
/// strings).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| v.is_finite())
}

/// The image a widget file names: its `subject` field, else the file name's `sub-` part.
fn widget_key(json: &Value, path: &Path) -> Option<ImageKey> {
    if let Some(name) = json["subject"].as_str().filter(|s| !s.trim().is_empty()) {
        return Some(ImageKey::from_name(name));
    }
    let stem = path.file_stem()?.to_str()?;
    let at = stem.find("sub-")?;
    Some(ImageKey::from_name(&stem[at..]))
}

/// One widget file's rating; `Err` names what is wrong with it.
fn widget_row(
    index: usize,
    path: &Path,
    text: &str,
    exclude: MriqcExclude,
) -> Result<ParsedRow, String> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    if !json.is_object() {
        return Err(format!("{}: expected a JSON object", path.display()));
    }
    let key = widget_key(&json, path).ok_or_else(|| {
        format!(
            "{}: no image: no subject field and no sub- in the file name",
            path.display()
        )
    })?;
    let score = number(&json["rating"])
        .filter(|s| (1.0..=4.0).contains(s))
        .ok_or_else(|| {
            format!(
                "{}: rating {} is not a number from 1 to 4",
                path.display(),
                json["rating"]
            )
        })?;
    let mut row = ParsedRow::new(index, key, mriqc_widget_rating(score, exclude));
    row.grades_known = false;
    let mut notes = Vec::new();
    if let Some(artifacts) = json["artifacts"].as_array() {
        let names: Vec<&str> = artifacts.iter().filter_map(Value::as_str).collect();
        if !names.is_empty() {
            notes.push(format!("artifacts: {}", names.join(", ")));
        }
    }
    if let Some(comments) = json["comments"].as_str().filter(|c| !c.trim().is_empty()) {
        notes.push(comments.to_string());
    }
    row.comment = (!notes.is_empty()).then(|| format!("MRIQC widget: {}", notes.join("; ")));
    row.time_ms = number(&json["time_sec"]).and_then(super::formats::seconds_to_ms);
    row.confidence = number(&json["confidence"])
        .filter(|c| (0.0..=4.0).contains(c))
        .map(|c| c.round() as u8 + 1);
    Ok(row)
}

/// Parses MRIQC widget files, given as (path, text) in order; a file that cannot be
/// read as a rating becomes an invalid row numbered by its place in the list.
pub fn parse_widget_files(files: &[(PathBuf, String)], exclude: MriqcExclude) -> ParsedFile {
    let mut parsed = ParsedFile {
        format: FileFormat::MriqcJson,
        delimiter: Delimiter::Comma,
        rows: Vec::new(),
        invalid: Vec::new(),
        missing: 0,
        withdrawn: 0,
    };
    for (i, (path, text)) in files.iter().enumerate() {
        match widget_row(i + 1, path, text, exclude) {
            Ok(row) => parsed.rows.push(row),
            Err(message) => parsed.invalid.push(InvalidRow {
                line: i + 1,
                message,
            }),
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widget_scores_follow_the_widget_colours() {
        let q = |s| mriqc_widget_rating(s, MriqcExclude::Reject);
        assert!(!q(1.0).is_usable() && !q(1.45).is_usable());
        assert_eq!(q(1.5).quality(), Some(Quality::Bad));
        assert_eq!(q(2.45).quality(), Some(Quality::Bad));
        assert_eq!(q(2.5).quality(), Some(Quality::Medium));
        assert_eq!(q(3.5).quality(), Some(Quality::Medium));
        assert_eq!(q(3.55).quality(), Some(Quality::Good));
        assert_eq!(
            mriqc_widget_rating(1.0, MriqcExclude::Bad).quality(),
            Some(Quality::Bad)
        );
    }

    #[test]
    fn fetmrqc_scores_follow_its_rating_text() {
        let q = |s| fetmrqc_rating(s, MriqcExclude::Reject);
        assert!(!q(0.9).is_usable());
        assert_eq!(q(1.0).quality(), Some(Quality::Bad));
        assert_eq!(q(2.0).quality(), Some(Quality::Medium));
        assert_eq!(q(3.0).quality(), Some(Quality::Good));
        assert_eq!(q(4.0).quality(), Some(Quality::Good));
        assert_eq!(fetmrqc_artefact_level(0.5), "low");
        assert_eq!(fetmrqc_artefact_level(1.5), "moderate");
        assert_eq!(fetmrqc_artefact_level(3.0), "high");
    }

    #[test]
    fn a_widget_file_gives_a_quality_only_rating_with_its_details() {
        let text = r#"{"dataset": "ds1", "subject": "sub-01_ses-1_T1w", "rating": "3.75",
            "artifacts": ["head-motion", "inu"], "time_sec": 12.5, "confidence": "3.5",
            "comments": "fine"}"#;
        let parsed = parse_widget_files(
            &[(PathBuf::from("ds1_sub-01_ses-1_T1w.json"), text.into())],
            MriqcExclude::Reject,
        );
        assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        let row = &parsed.rows[0];
        assert_eq!(row.key.name(), "sub-01_ses-1_T1w");
        assert_eq!(row.rating.quality(), Some(Quality::Good));
        assert!(!row.grades_known);
        assert_eq!(row.time_ms, Some(12_500));
        assert_eq!(row.confidence, Some(5));
        assert_eq!(
            row.comment.as_deref(),
            Some("MRIQC widget: artifacts: head-motion, inu; fine")
        );
    }

    #[test]
    fn a_bad_widget_file_is_an_invalid_row_naming_it() {
        let parsed = parse_widget_files(
            &[
                (PathBuf::from("a.json"), "not json".into()),
                (
                    PathBuf::from("ds_sub-02_T1w.json"),
                    r#"{"rating": 9}"#.into(),
                ),
                (
                    PathBuf::from("ds_sub-03_T1w.json"),
                    r#"{"rating": 1.2}"#.into(),
                ),
            ],
            MriqcExclude::Reject,
        );
        assert_eq!(parsed.invalid.len(), 2);
        assert!(parsed.invalid[0].message.starts_with("a.json: not JSON"));
        assert!(
            parsed.invalid[1]
                .message
                .contains("not a number from 1 to 4")
        );
        // No subject field: the file name names the image.
        assert_eq!(parsed.rows[0].key.name(), "sub-03_T1w");
        assert!(!parsed.rows[0].rating.is_usable());
    }
}
