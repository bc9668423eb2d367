//! The store's ratings, their consensus and the models' predictions written as a BIDS
//! derivatives dataset, `DIR/derivatives/cdwqc/`: one TSV per kind of row, keyed by
//! each image's path in the raw dataset, each with a JSON sidecar that describes every
//! column and every level (docs/ecosystem.md says why this layout).
//!
//! Files are written beside their final name and renamed into place, so an export cut
//! short leaves the previous files whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::protocol::RejectReason;
use crate::report::agreement::Task;
use crate::store::bids::{BidsPredictionRow, BidsRatingRow, BidsRunRow};
use crate::store::{Store, StoreError};

/// The pipeline folder under `derivatives/`.
pub const PIPELINE: &str = "cdwqc";
/// Missing values, as BIDS writes them.
const NA: &str = "n/a";

#[derive(Debug, thiserror::Error)]
pub enum BidsExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BidsExport {
    pub folder: String,
    pub ratings: usize,
    pub images_rated: usize,
    pub predictions: usize,
    pub files: Vec<String>,
    /// Rated or predicted images whose files lie outside the dataset folder: a BIDS
    /// path cannot name them, so they are left out.
    pub outside_dataset: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BidsExportError + '_ {
    move |source| BidsExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` whole ([`crate::replace`]): no link planted in the folder, under the
/// file's name or any other, is written through.
impl From<crate::replace::ReplaceError> for BidsExportError {
    fn from(e: crate::replace::ReplaceError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// The image's path relative to the dataset folder, `/`-separated; `None` outside it.
fn bids_path(dataset: &Path, image: &str) -> Option<String> {
    let relative = Path::new(image).strip_prefix(dataset).ok()?;
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn entity(prefix: &str, value: &Option<String>) -> String {
    match value {
        Some(v) if v.starts_with(prefix) => v.clone(),
        Some(v) => format!("{prefix}{v}"),
        None => NA.to_string(),
    }
}

fn text<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map_or(NA.to_string(), ToString::to_string)
}

/// One TSV file: tab-separated, `n/a` for missing values; a cell holding a tab, a line
/// break or a quote is quoted (RFC 4180 style), which `cdwqc ratings import` reads back.
fn tsv(header: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>, BidsExportError> {
    let mut writer = csv::WriterBuilder::new()
        .delimiter(b'\t')
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(Vec::new());
    let fail = |e: csv::Error| BidsExportError::Invalid(format!("writing a TSV table: {e}"));
    writer.write_record(header).map_err(fail)?;
    for row in rows {
        writer.write_record(row).map_err(fail)?;
    }
    writer
        .into_inner()
        .map_err(|e| BidsExportError::Invalid(format!("writing a TSV table: {e}")))
}

fn column(long_name: &str, description: &str) -> Value {
    json!({ "LongName": long_name, "Description": description })
}

fn column_with_levels(long_name: &str, description: &str, levels: &[(&str, &str)]) -> Value {
    let mut levels_map = Map::new();
    for (level, meaning) in levels {
        levels_map.insert((*level).to_string(), Value::String((*meaning).to_string()));
    }
    json!({ "LongName": long_name, "Description": description, "Levels": levels_map })
}

const GRADE_LEVELS: [(&str, &str); 3] = [
    ("0", "none: no visible artefact of this kind"),
    (
        "1",
        "moderate: visible, the image is still usable for most analyses",
    ),
    ("2", "severe: the artefact dominates the image"),
];

fn reject_levels() -> Vec<(&'static str, &'static str)> {
    RejectReason::ALL
        .iter()
        .map(|r| {
            (
                r.name(),
                match r {
                    RejectReason::NotBrain => "not a brain image",
                    RejectReason::WrongSequence => {
                        "a brain image of another sequence than expected"
                    }
                    RejectReason::Not3d => "a 2D or thick-slice acquisition",
                    RejectReason::DerivedMap => "a segmentation, probability or statistic map",
                    RejectReason::TruncatedFov => "the field of view cuts the brain",
                    RejectReason::Corrupted => "unreadable or broken data",
                    RejectReason::Other => "any other reason",
                },
            )
        })
        .collect()
}

const PROTOCOL: &str = "cdwqc QC protocol (docs/ecosystem.md): usable = a proper 3D brain MRI of the expected sequence, else a reject reason; for usable images gadolinium (yes/no) and motion, contrast and noise graded 0 none, 1 moderate, 2 severe; quality = the worst grade: good (0), medium (1), bad (2).";

fn key_columns(sidecar: &mut Map<String, Value>) {
    sidecar.insert(
        "filename".into(),
        column(
            "Image file",
            "Path of the rated NIfTI image relative to the root of the raw BIDS dataset (the folder that holds derivatives/).",
        ),
    );
    sidecar.insert(
        "participant_id".into(),
        column(
            "Participant",
            "The image's sub- entity, as in participants.tsv.",
        ),
    );
    sidecar.insert(
        "session_id".into(),
        column("Session", "The image's ses- entity; n/a without sessions."),
    );
}

fn ratings_sidecar(
    raters: &BTreeMap<String, (String, usize)>,
    protocol_versions: &BTreeSet<String>,
) -> Value {
    let mut s = Map::new();
    key_columns(&mut s);
    let rater_levels: Vec<(String, String)> = raters
        .iter()
        .map(|(name, (role, n))| (name.clone(), format!("{role}; {n} ratings in this file")))
        .collect();
    let mut rater = Map::new();
    rater.insert("LongName".into(), "Rater".into());
    rater.insert(
        "Description".into(),
        "Who gave the rating. Raters rate blind to each other and to the models. An adjudicator's vote breaks ties in the consensus (consensus.tsv).".into(),
    );
    rater.insert(
        "Levels".into(),
        Value::Object(
            rater_levels
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    );
    s.insert("rater".into(), Value::Object(rater));
    s.insert(
        "usable".into(),
        column_with_levels(
            "Usable",
            &format!(
                "Is the image a proper 3D brain MRI of the expected sequence? Protocol version(s): {}. {PROTOCOL}",
                protocol_versions.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            &[("true", "usable"), ("false", "rejected (see reject_reason)")],
        ),
    );
    s.insert(
        "reject_reason".into(),
        column_with_levels(
            "Reject reason",
            "Why a rejected image is not usable; n/a for usable images.",
            &reject_levels(),
        ),
    );
    s.insert(
        "gado".into(),
        column_with_levels(
            "Gadolinium",
            "Contrast agent injected (recorded, does not change the quality). n/a for rejected images and for ratings that give only a quality.",
            &[("true", "contrast agent visible"), ("false", "no contrast agent")],
        ),
    );
    for (name, long) in [
        ("motion", "Motion"),
        ("contrast", "Contrast"),
        ("noise", "Noise"),
    ] {
        s.insert(
            name.into(),
            column_with_levels(
                &format!("{long} artefact grade"),
                &format!(
                    "Severity of {name} artefacts. n/a for rejected images and for ratings that give only a quality (imported from MRIQC or fetMRQC)."
                ),
                &GRADE_LEVELS,
            ),
        );
    }
    s.insert(
        "quality".into(),
        column_with_levels(
            "Quality",
            "The worst of motion, contrast and noise for usable images, or the only judgement of a quality-only rating; n/a for rejected images.",
            &[
                ("good", "no artefact (worst grade 0)"),
                ("medium", "moderate artefacts (worst grade 1)"),
                ("bad", "severe artefacts (worst grade 2)"),
            ],
        ),
    );
    s.insert(
        "confidence".into(),
        column_with_levels(
            "Rater confidence",
            "How sure the rater was, when recorded.",
            &[
                ("1", "very unsure"),
                ("2", "unsure"),
                ("3", "fairly sure"),
                ("4", "sure"),
                ("5", "certain"),
            ],
        ),
    );
    let mut time = column("Rating time", "Time spent rating the image, when recorded.");
    time["Units"] = "ms".into();
    s.insert("time_ms".into(), time);
    s.insert(
        "rated_at".into(),
        column("Rated at", "When the rating was given, RFC 3339 in UTC."),
    );
    s.insert(
        "comment".into(),
        column("Comment", "The rater's free-text comment."),
    );
    Value::Object(s)
}

fn consensus_sidecar() -> Value {
    let mut s = Map::new();
    key_columns(&mut s);
    s.insert(
        "raters".into(),
        column(
            "Raters",
            "How many raters have a rating in force for the image.",
        ),
    );
    s.insert(
        "usable_decision".into(),
        column_with_levels(
            "How usable was decided",
            "Consensus method: each field is decided on its own by the majority of the raters' ratings in force (ratings.tsv); reject_reason by the majority of the raters who rejected; gado and the grades by the majority of those who said usable; the quality label by the majority of the per-rater quality classes among those who said usable. Ties are broken by the adjudicators among the voters, else the field is disputed (n/a).",
            &[
                ("majority", "a strict majority of raters agreed"),
                ("adjudicated", "a tie broken by the adjudicators"),
                ("disputed", "a tie nobody broke: no consensus label"),
            ],
        ),
    );
    let ratings = ratings_sidecar(&BTreeMap::new(), &BTreeSet::new());
    for name in [
        "usable",
        "reject_reason",
        "gado",
        "motion",
        "contrast",
        "noise",
        "quality",
    ] {
        let mut description = ratings[name].clone();
        let text = description["Description"].as_str().map(str::to_string);
        if let Some(text) = text {
            description["Description"] = format!("Consensus of the raters. {text}").into();
        }
        s.insert(name.into(), description);
    }
    Value::Object(s)
}

fn run_level(run: &BidsRunRow) -> String {
    let mut parts = vec![format!("{} run", run.kind)];
    for (name, value) in [
        ("task", &run.task),
        ("method", &run.method),
        ("preset", &run.preset),
        ("split", &run.split_id),
        ("started", &run.started_at),
    ] {
        if let Some(v) = value {
            parts.push(format!("{name} {v}"));
        }
    }
    parts.push(format!("status {}", run.status));
    if let Some(metrics) = run
        .metrics
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        && let (Some(ba), Some(n)) = (
            metrics["test_balanced_accuracy"].as_f64(),
            metrics["test_images"].as_u64(),
        )
    {
        parts.push(format!(
            "held-out test balanced accuracy {ba:.3} on {n} images"
        ));
    }
    parts.join(", ")
}

fn predictions_sidecar(runs: &[BidsRunRow]) -> Value {
    let mut s = Map::new();
    key_columns(&mut s);
    s.insert(
        "model_run".into(),
        Value::Object(
            [
                ("LongName".to_string(), Value::from("Model run")),
                (
                    "Description".to_string(),
                    Value::from("The cdwqc training or inference run that predicted (cdwqc report model --run RUN scores it)."),
                ),
                (
                    "Levels".to_string(),
                    Value::Object(
                        runs.iter()
                            .map(|r| (r.run_id.clone(), Value::String(run_level(r))))
                            .collect(),
                    ),
                ),
            ]
            .into_iter()
            .collect(),
        ),
    );
    s.insert(
        "task".into(),
        column_with_levels(
            "Prediction task",
            "What the model predicts.",
            &[
                ("usable", "usable versus reject"),
                ("quality", "good, medium or bad, on usable images"),
                ("gado", "gadolinium or not"),
            ],
        ),
    );
    s.insert(
        "label".into(),
        column(
            "Predicted class",
            "The most probable class of the task; n/a when the image could not be predicted (see error).",
        ),
    );
    for task in Task::ALL {
        for class in task.categories() {
            let mut c = column(
                &format!("Probability of {class}"),
                &format!(
                    "The model's probability that the image is {class} ({} task); n/a for the other tasks' rows.",
                    task.name()
                ),
            );
            c["Units"] = "arbitrary".into();
            s.insert(format!("probability_{class}"), c);
        }
    }
    s.insert(
        "error".into(),
        column(
            "Error",
            "Why the image could not be predicted; n/a when it was.",
        ),
    );
    s.insert(
        "reason".into(),
        column(
            "Reason",
            "Why the label was given without the network: the image does not register to the model's template, so a usability model labels it reject; n/a for the network's own predictions.",
        ),
    );
    s.insert(
        "predicted_at".into(),
        column(
            "Predicted at",
            "When the prediction was stored, RFC 3339 in UTC.",
        ),
    );
    Value::Object(s)
}

fn json_bytes(value: &Value) -> Result<Vec<u8>, BidsExportError> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| BidsExportError::Invalid(format!("writing JSON: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

const README: &str = "# cdwqc quality-control ratings and predictions\n\n\
Written by `cdwqc ratings export --bids-derivatives`. Each table is keyed by `filename`, the image's path in the raw dataset two folders up, and has a JSON sidecar describing every column and level.\n\n\
- `ratings.tsv`: the rating in force of each rater for each image (re-import with `cdwqc ratings import ratings.tsv`).\n\
- `consensus.tsv`: one row per rated image, the raters' consensus (method in `consensus.json`).\n\
- `predictions.tsv`: the models' predictions, one row per image, run and task (runs described in `predictions.json`).\n";

/// Writes the export under `dataset_dir/derivatives/cdwqc/`.
pub fn export(store: &Store, dataset_dir: &Path) -> Result<BidsExport, BidsExportError> {
    let dataset = dataset_dir.canonicalize().map_err(io(dataset_dir))?;
    // Stored paths are absolute as the import saw them, which may go through links.
    let as_given = std::path::absolute(dataset_dir).map_err(io(dataset_dir))?;
    let filename_of =
        |image: &str| bids_path(&dataset, image).or_else(|| bids_path(&as_given, image));
    if !dataset.is_dir() {
        return Err(BidsExportError::Invalid(format!(
            "{} is not a folder: give the BIDS dataset's root",
            dataset.display()
        )));
    }
    let out = dataset.join("derivatives").join(PIPELINE);
    // Only into the dataset's own folders: a link planted as `derivatives` or
    // `derivatives/cdwqc` sent every file of the export wherever it pointed.
    for folder in [dataset.join("derivatives"), out.clone()] {
        if std::fs::symlink_metadata(&folder).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(BidsExportError::Invalid(format!(
                "{} is a symbolic link: the export writes only into the dataset's own \
                 folders (remove the link, or export into the dataset it points to)",
                folder.display()
            )));
        }
    }
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let mut files = Vec::new();
    let mut outside = BTreeSet::new();

    let description = json!({
        "Name": "cdwqc quality control",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "cdwqc",
            "Version": env!("CARGO_PKG_VERSION"),
            "Description": "Quality control of brain MRIs in clinical data warehouses: human ratings (ratings.tsv), their consensus (consensus.tsv) and QC model predictions (predictions.tsv)."
        }],
        "HowToAcknowledge": "Name cdwqc and its QC protocol (see the sidecars) when you use these ratings."
    });
    // Every file is staged before any replaces its old version: an export that fails
    // part way (a full disk, a store error) leaves the previous export whole.
    let mut staged = crate::replace::Staged::new();
    let mut write = |name: &str, bytes: Vec<u8>| -> Result<(), BidsExportError> {
        let target = out.join(name);
        // Renamed over the store (or a file DuckDB keeps beside it), the export would
        // unlink it.
        if crate::query::is_store_file(&target, store.path()) {
            return Err(BidsExportError::Invalid(format!(
                "{} is the store: export the ratings of a store kept outside the dataset's \
                 derivatives/{PIPELINE} folder",
                target.display()
            )));
        }
        staged.add(&target, &bytes)?;
        files.push(name.to_string());
        Ok(())
    };
    write("dataset_description.json", json_bytes(&description)?)?;
    write("README.md", README.as_bytes().to_vec())?;

    // Ratings in force.
    let stored: Vec<BidsRatingRow> = store.bids_ratings()?;
    let roles: BTreeMap<String, String> = store
        .raters()?
        .into_iter()
        .map(|r| (r.name, r.role))
        .collect();
    let mut raters: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut versions = BTreeSet::new();
    let mut rows = Vec::new();
    let mut rated = BTreeSet::new();
    for r in &stored {
        let Some(filename) = filename_of(&r.path) else {
            outside.insert(r.path.clone());
            continue;
        };
        let role = roles
            .get(&r.rater)
            .cloned()
            .unwrap_or_else(|| "rater".into());
        raters.entry(r.rater.clone()).or_insert((role, 0)).1 += 1;
        versions.insert(r.protocol_version.clone());
        rated.insert(filename.clone());
        rows.push(vec![
            filename,
            entity("sub-", &r.subject),
            entity("ses-", &r.session),
            r.rater.clone(),
            r.usable.to_string(),
            text(&r.reject_reason),
            // A rejected image has no gado flag or grades: not applicable.
            text(&r.gado.filter(|_| r.usable)),
            text(&r.motion.filter(|_| r.usable)),
            text(&r.contrast.filter(|_| r.usable)),
            text(&r.noise.filter(|_| r.usable)),
            text(&r.quality),
            text(&r.confidence),
            text(&r.time_ms),
            text(&r.rated_at),
            r.comment
                .clone()
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| NA.into()),
        ]);
    }
    let header = [
        "filename",
        "participant_id",
        "session_id",
        "rater",
        "usable",
        "reject_reason",
        "gado",
        "motion",
        "contrast",
        "noise",
        "quality",
        "confidence",
        "time_ms",
        "rated_at",
        "comment",
    ];
    let n_ratings = rows.len();
    write("ratings.tsv", tsv(&header, &rows)?)?;
    write(
        "ratings.json",
        json_bytes(&ratings_sidecar(&raters, &versions))?,
    )?;

    // Consensus per rated image.
    let labels = crate::rate::labels::image_labels(store)?;
    let keys = store.image_keys()?;
    let paths = store.image_paths()?;
    let mut consensus_rows = Vec::new();
    for (id, l) in &labels {
        let Some(path) = paths.get(id) else { continue };
        let Some(filename) = filename_of(path) else {
            outside.insert(path.clone());
            continue;
        };
        let k = keys.get(id).cloned().unwrap_or_default();
        consensus_rows.push(vec![
            filename,
            entity("sub-", &k.subject),
            entity("ses-", &k.session),
            l.raters.to_string(),
            l.usable_decision.to_string(),
            text(&l.usable),
            text(&l.reject_reason),
            text(&l.gado),
            text(&l.motion),
            text(&l.contrast),
            text(&l.noise),
            text(&l.quality),
        ]);
    }
    consensus_rows.sort();
    write(
        "consensus.tsv",
        tsv(
            &[
                "filename",
                "participant_id",
                "session_id",
                "raters",
                "usable_decision",
                "usable",
                "reject_reason",
                "gado",
                "motion",
                "contrast",
                "noise",
                "quality",
            ],
            &consensus_rows,
        )?,
    )?;
    write("consensus.json", json_bytes(&consensus_sidecar())?)?;

    // Predictions.
    let predictions: Vec<BidsPredictionRow> = store.bids_predictions()?;
    let classes: Vec<&str> = Task::ALL
        .iter()
        .flat_map(|t| t.categories().iter().copied())
        .collect();
    let mut prediction_rows = Vec::new();
    for p in &predictions {
        let Some(filename) = filename_of(&p.path) else {
            outside.insert(p.path.clone());
            continue;
        };
        let task_classes = Task::from_name(&p.task)
            .map(|t| t.categories())
            .unwrap_or(&[]);
        let probabilities: Vec<f64> = p
            .probabilities
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let mut row = vec![
            filename,
            entity("sub-", &p.subject),
            entity("ses-", &p.session),
            p.run_id.clone(),
            p.task.clone(),
            text(&p.label),
        ];
        for class in &classes {
            row.push(
                task_classes
                    .iter()
                    .position(|c| c == class)
                    .and_then(|i| probabilities.get(i))
                    .map_or(NA.to_string(), |v| format!("{v:.6}")),
            );
        }
        row.push(text(&p.error));
        row.push(text(&p.reason));
        row.push(text(&p.predicted_at));
        prediction_rows.push(row);
    }
    let mut header: Vec<String> = [
        "filename",
        "participant_id",
        "session_id",
        "model_run",
        "task",
        "label",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(classes.iter().map(|c| format!("probability_{c}")));
    header.extend(["error", "reason", "predicted_at"].map(String::from));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    write("predictions.tsv", tsv(&header, &prediction_rows)?)?;
    write(
        "predictions.json",
        json_bytes(&predictions_sidecar(&store.bids_runs()?))?,
    )?;
    staged.commit()?;

    Ok(BidsExport {
        folder: out.display().to_string(),
        ratings: n_ratings,
        images_rated: rated.len(),
        predictions: prediction_rows.len(),
        files,
        outside_dataset: outside.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bids_paths_are_relative_to_the_dataset_and_nothing_outside() {
        let root = Path::new("/data/bids");
        assert_eq!(
            bids_path(root, "/data/bids/sub-01/anat/sub-01_T1w.nii.gz").as_deref(),
            Some("sub-01/anat/sub-01_T1w.nii.gz")
        );
        assert_eq!(bids_path(root, "/data/other/sub-01_T1w.nii.gz"), None);
        assert_eq!(bids_path(root, "/data/bids"), None);
    }

    #[test]
    fn every_level_of_the_protocol_is_described() {
        let s = ratings_sidecar(&BTreeMap::new(), &BTreeSet::new());
        for reason in RejectReason::ALL {
            assert!(s["reject_reason"]["Levels"][reason.name()].is_string());
        }
        for grade in ["0", "1", "2"] {
            assert!(s["motion"]["Levels"][grade].is_string());
        }
        let p = predictions_sidecar(&[]);
        for task in Task::ALL {
            for class in task.categories() {
                assert!(p[format!("probability_{class}")]["Description"].is_string());
            }
        }
    }

    #[test]
    fn cells_with_tabs_are_quoted_and_missing_values_are_n_a() {
        let bytes = tsv(&["a", "b"], &[vec!["x\ty".into(), text::<u8>(&None)]]).expect("tsv");
        assert_eq!(
            String::from_utf8(bytes).expect("utf8"),
            "a\tb\n\"x\ty\"\tn/a\n"
        );
    }
}
