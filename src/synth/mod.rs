//! Synthetic clinical data warehouse: a BIDS dataset of T1w/FLAIR (and other) images from a real brain
//! template, with graded artefacts, reject cases, ground truth and simulated raters.

pub mod anatomy;
pub mod artefacts;
pub mod contrast;
pub mod font;
pub mod montage;
pub mod nifti_writer;
pub mod posed;
pub mod raters;
pub mod rejects;
pub mod render;
pub mod scanner;
pub mod truth;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use anatomy::{AnatomySource, TissueModel};
use artefacts::{Artefact, Severities};
use contrast::Sequence;
use rejects::RejectKind;

pub use montage::write_montage;

/// Resolution of the generated warehouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// About 4 mm voxels (~50 a side): unit tests and quick looks.
    Tiny,
    /// About 2 mm voxels (~90-115 a side): the demo warehouse and CPU training.
    Small,
    /// About 1 mm voxels (~180-230 a side): clinical resolution.
    Clinical,
}

impl Grid {
    /// Nominal voxel size in mm (also the spacing of the anatomy maps).
    pub fn spacing(self) -> f64 {
        match self {
            Grid::Tiny => 4.0,
            Grid::Small => 2.0,
            Grid::Clinical => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Grid::Tiny => "tiny",
            Grid::Small => "small",
            Grid::Clinical => "clinical",
        }
    }
}

impl std::str::FromStr for Grid {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tiny" => Ok(Grid::Tiny),
            "small" => Ok(Grid::Small),
            "clinical" => Ok(Grid::Clinical),
            other => Err(SynthError::Invalid(format!(
                "grid {other:?}: expected tiny, small or clinical"
            ))),
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Dataset root (created if missing; existing generated files are overwritten).
    pub out: PathBuf,
    /// Images labelled T1w.
    pub n_t1: usize,
    /// Images labelled FLAIR.
    pub n_flair: usize,
    /// Correctly labelled images of other sequences (T2w, DWI b0).
    pub n_other: usize,
    /// Simulated raters (rater1, rater2, ...).
    pub n_raters: usize,
    pub grid: Grid,
    pub seed: u64,
    /// Folder holding the MNI ICBM152 2009 T1/GM/WM files; None uses the procedural phantom.
    pub template_dir: Option<PathBuf>,
}

/// What was generated.
#[derive(Clone, Debug, Default)]
pub struct SynthSummary {
    pub images: usize,
    /// Images per labelled suffix (T1w, FLAIR, T2w, dwi).
    pub per_suffix: BTreeMap<String, usize>,
    /// Images per ground-truth class (good, motion_1, ..., reject_truncated_fov).
    pub per_class: BTreeMap<String, usize>,
    pub subjects: usize,
    pub raters: usize,
    /// "mni_icbm152_2009" or "phantom".
    pub anatomy: String,
    pub bytes_written: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("anatomy template: {0}")]
    Template(String),
    #[error("invalid synthesis input: {0}")]
    Invalid(String),
    #[error("montage: {0}")]
    Montage(String),
}

impl From<crate::replace::ReplaceError> for SynthError {
    fn from(e: crate::replace::ReplaceError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// Ground-truth class of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageClass {
    Good,
    Artefact(Artefact),
    Reject(RejectKind),
}

/// Everything decided about one image before rendering (sequential, from the master seed).
#[derive(Clone, Debug)]
pub struct ImagePlan {
    pub index: usize,
    pub subject: String,
    pub session: String,
    pub acq: String,
    pub run: String,
    /// Sequence in the file name.
    pub label: Sequence,
    /// Sequence actually rendered.
    pub shown: Sequence,
    pub class: ImageClass,
    pub severities: Severities,
    pub gado: bool,
    pub lesions: bool,
    pub subject_seed: u64,
    pub image_seed: u64,
    /// Path relative to the dataset root.
    pub path: String,
}

impl ImagePlan {
    /// What a rater can perceive of this image (its true state).
    pub fn seen(&self) -> raters::Seen<'_> {
        raters::Seen {
            reject: match self.class {
                ImageClass::Reject(kind) => Some(kind),
                _ => None,
            },
            severities: &self.severities,
            gado: self.gado,
        }
    }

    /// Ground-truth tier: 4 reject, else 1 + worst protocol grade.
    pub fn tier(&self) -> u8 {
        match self.class {
            ImageClass::Reject(_) => 4,
            _ => raters::tier(
                true,
                self.severities.axis_grade(artefacts::ProtocolAxis::Motion),
                self.severities
                    .axis_grade(artefacts::ProtocolAxis::Contrast),
                self.severities.axis_grade(artefacts::ProtocolAxis::Noise),
            ),
        }
    }
}

/// SplitMix64 step: independent per-image seeds that do not depend on rendering order.
pub fn derive_seed(master: u64, stream: u64, index: u64) -> u64 {
    let mut z = master
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Class mix of T1w and FLAIR images (weights sum to 1).
const MAIN_CLASS_WEIGHTS: [(ImageClass, f64); 14] = [
    (ImageClass::Good, 0.34),
    (ImageClass::Artefact(Artefact::Motion), 0.10),
    (ImageClass::Artefact(Artefact::Ghosting), 0.05),
    (ImageClass::Artefact(Artefact::Blur), 0.05),
    (ImageClass::Artefact(Artefact::Noise), 0.09),
    (ImageClass::Artefact(Artefact::ContrastLoss), 0.07),
    (ImageClass::Artefact(Artefact::BiasField), 0.06),
    (ImageClass::Reject(RejectKind::ThickSlice), 0.06),
    (ImageClass::Reject(RejectKind::TruncatedFov), 0.03),
    (ImageClass::Reject(RejectKind::SegmentationMap), 0.02),
    (ImageClass::Reject(RejectKind::ProbabilityMap), 0.02),
    (ImageClass::Reject(RejectKind::WrongSequence), 0.05),
    (ImageClass::Reject(RejectKind::NonBrain), 0.02),
    (ImageClass::Reject(RejectKind::Localizer), 0.04),
];

/// Exactly `n` classes in proportion to the weights (largest remainders), shuffled.
fn allocate_classes(
    n: usize,
    weights: &[(ImageClass, f64)],
    rng: &mut ChaCha8Rng,
) -> Vec<ImageClass> {
    let total: f64 = weights.iter().map(|w| w.1).sum();
    let mut counts: Vec<(usize, f64)> = weights
        .iter()
        .map(|w| {
            (
                (n as f64 * w.1 / total).floor() as usize,
                n as f64 * w.1 / total,
            )
        })
        .collect();
    let assigned: usize = counts.iter().map(|c| c.0).sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (counts[b].1 - counts[b].0 as f64)
            .total_cmp(&(counts[a].1 - counts[a].0 as f64))
            .then(a.cmp(&b))
    });
    for &i in order.iter().take(n.saturating_sub(assigned)) {
        counts[i].0 += 1;
    }
    let mut classes: Vec<ImageClass> = weights
        .iter()
        .zip(&counts)
        .flat_map(|(w, c)| std::iter::repeat_n(w.0, c.0))
        .collect();
    classes.shuffle(rng);
    classes
}

/// Artefact severities of an image of `class`: the wanted artefact at a grade, the rest below threshold.
fn plan_severities(class: ImageClass, wanted_grade: u8, rng: &mut ChaCha8Rng) -> Severities {
    let mut severities = Severities::default();
    let derived = matches!(
        class,
        ImageClass::Reject(RejectKind::SegmentationMap | RejectKind::ProbabilityMap)
    );
    if derived {
        return severities;
    }
    for a in Artefact::ALL {
        if a == Artefact::Noise || rng.random_bool(0.3) {
            severities.set(a, a.sample_severity(0, rng));
        }
    }
    if let ImageClass::Artefact(a) = class {
        severities.set(a, a.sample_severity(wanted_grade, rng));
        if rng.random_bool(0.15) {
            let other = Artefact::ALL[rng.random_range(0..Artefact::ALL.len())];
            if other != a {
                severities.set(other, other.sample_severity(1, rng));
            }
        }
    }
    severities
}

fn bids_path(subject: &str, session: &str, acq: &str, run: &str, label: Sequence) -> String {
    let folder = if label == Sequence::DwiB0 {
        "dwi"
    } else {
        "anat"
    };
    let mut stem = format!("sub-{subject}_ses-{session}");
    if !acq.is_empty() {
        stem.push_str(&format!("_acq-{acq}"));
    }
    if !run.is_empty() {
        stem.push_str(&format!("_run-{run}"));
    }
    format!(
        "sub-{subject}/ses-{session}/{folder}/{stem}_{}.nii.gz",
        label.name()
    )
}

/// Decides every image of the warehouse from the master seed.
pub fn plan_dataset(cfg: &SynthConfig) -> Vec<ImagePlan> {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, 1, 0));
    let t1_classes = allocate_classes(cfg.n_t1, &MAIN_CLASS_WEIGHTS, &mut rng);
    let flair_classes = allocate_classes(cfg.n_flair, &MAIN_CLASS_WEIGHTS, &mut rng);
    let other_weights: Vec<(ImageClass, f64)> = MAIN_CLASS_WEIGHTS
        .iter()
        .copied()
        .filter(|(c, _)| {
            matches!(
                c,
                ImageClass::Good
                    | ImageClass::Artefact(_)
                    | ImageClass::Reject(RejectKind::ThickSlice)
            )
        })
        .map(|(c, w)| {
            if c == ImageClass::Reject(RejectKind::ThickSlice) {
                (c, 0.3)
            } else {
                (c, w)
            }
        })
        .collect();
    let other_classes = allocate_classes(cfg.n_other, &other_weights, &mut rng);
    let (mut t1, mut flair, mut other) = (
        t1_classes.into_iter(),
        flair_classes.into_iter(),
        other_classes.into_iter(),
    );
    let (mut t1_left, mut flair_left, mut other_left) = (cfg.n_t1, cfg.n_flair, cfg.n_other);
    let other_rate = cfg.n_other as f64 / cfg.n_t1.max(cfg.n_flair).max(1) as f64;
    let mut plans: Vec<ImagePlan> = Vec::new();
    let mut grade_toggle: BTreeMap<String, u8> = BTreeMap::new();
    let mut subject_index = 0usize;
    while t1_left + flair_left + other_left > 0 {
        subject_index += 1;
        let subject = format!("{subject_index:04}");
        let subject_seed = derive_seed(cfg.seed, 2, subject_index as u64);
        let lesions = rng.random_bool(0.35);
        let sessions = if rng.random_bool(0.3) { 2 } else { 1 };
        for session_index in 1..=sessions {
            if t1_left + flair_left + other_left == 0 {
                break;
            }
            let session = format!("{:02}", session_index);
            let mut wanted: Vec<(Sequence, ImageClass)> = Vec::new();
            if let Some(c) = t1.next() {
                t1_left -= 1;
                wanted.push((Sequence::T1w, c));
            }
            if let Some(c) = flair.next() {
                flair_left -= 1;
                wanted.push((Sequence::Flair, c));
            }
            let take_other = other_left > 0
                && (rng.random_bool(other_rate.min(1.0)) || t1_left + flair_left == 0);
            if take_other && let Some(c) = other.next() {
                other_left -= 1;
                let sequence = if rng.random_bool(0.5) {
                    Sequence::T2w
                } else {
                    Sequence::DwiB0
                };
                let c = if sequence == Sequence::DwiB0 {
                    ImageClass::Reject(RejectKind::ThickSlice)
                } else {
                    c
                };
                wanted.push((sequence, c));
            }
            for (label, class) in wanted {
                let index = plans.len();
                let key = format!("{class:?}");
                let toggle = grade_toggle.entry(key).or_insert(0);
                *toggle = toggle.wrapping_add(1);
                let wanted_grade = if *toggle % 2 == 1 { 1 } else { 2 };
                let severities = plan_severities(class, wanted_grade, &mut rng);
                let shown = match class {
                    ImageClass::Reject(RejectKind::WrongSequence) => {
                        rejects::wrong_sequence_for(label, &mut rng)
                    }
                    _ => label,
                };
                let gado_rate = match label {
                    Sequence::T1w => 0.25,
                    Sequence::Flair => 0.1,
                    _ => 0.05,
                };
                let gado = rng.random_bool(gado_rate);
                let acq = if class == ImageClass::Reject(RejectKind::ThickSlice)
                    && rng.random_bool(0.4)
                {
                    "2D".to_string()
                } else if rng.random_bool(0.25) {
                    let names: &[&str] = match label {
                        Sequence::T1w => &["mprage", "bravo", "tfe", "3D"],
                        Sequence::Flair => &["space", "cube", "3D", "vista"],
                        _ => &["ax", "tse"],
                    };
                    names[rng.random_range(0..names.len())].to_string()
                } else {
                    String::new()
                };
                let run = if rng.random_bool(0.05) {
                    "1".to_string()
                } else {
                    String::new()
                };
                let path = bids_path(&subject, &session, &acq, &run, label);
                plans.push(ImagePlan {
                    index,
                    subject: subject.clone(),
                    session: session.clone(),
                    acq,
                    run,
                    label,
                    shown,
                    class,
                    severities,
                    gado,
                    lesions,
                    subject_seed,
                    image_seed: derive_seed(cfg.seed, 3, index as u64),
                    path,
                });
            }
        }
    }
    plans
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Builds the anatomy for a grid: the template when `template_dir` is given, else the phantom.
pub fn load_anatomy(template_dir: Option<&Path>, grid: Grid) -> Result<TissueModel, SynthError> {
    match template_dir {
        Some(dir) => TissueModel::from_template(dir, grid.spacing()),
        None => Ok(TissueModel::phantom(grid.spacing())),
    }
}

/// Generates the warehouse: images, sidecars, ground truth, rater files, dataset description.
/// The output must be a new or empty folder, or one a synthesis wrote (its
/// `dataset_description.json` generated by `cdwqc synth`): a mistyped `--out` naming a
/// real BIDS tree replaced its images and rating files with synthetic ones of the same
/// names.
fn check_output_folder(out: &Path) -> Result<(), SynthError> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(out)(e)),
    };
    if !meta.is_dir() {
        return Err(SynthError::Invalid(format!(
            "{} exists and is not a folder: give a new folder for the warehouse",
            out.display()
        )));
    }
    let mut entries = std::fs::read_dir(out).map_err(io_error(out))?;
    if entries.next().is_none() {
        return Ok(());
    }
    let synthetic = std::fs::read(out.join("dataset_description.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|d| d["GeneratedBy"][0]["Name"] == "cdwqc synth");
    if synthetic {
        return Ok(());
    }
    Err(SynthError::Invalid(format!(
        "{} holds files cdwqc synth did not write (no dataset_description.json of a \
         synthetic warehouse): give a new or empty folder, so that no file of yours is \
         replaced",
        out.display()
    )))
}

pub fn generate(
    cfg: &SynthConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<SynthSummary, SynthError> {
    let started = Instant::now();
    if cfg.n_t1 + cfg.n_flair + cfg.n_other == 0 {
        return Err(SynthError::Invalid(
            "no images requested (n_t1 + n_flair + n_other = 0)".into(),
        ));
    }
    check_output_folder(&cfg.out)?;
    let model = load_anatomy(cfg.template_dir.as_deref(), cfg.grid)?;
    let plans = plan_dataset(cfg);
    std::fs::create_dir_all(&cfg.out).map_err(io_error(&cfg.out))?;
    let total = plans.len();
    let done = AtomicUsize::new(0);
    progress(0, total);
    let results: Vec<Result<truth::TruthRecord, SynthError>> = plans
        .par_iter()
        .map(|plan| {
            let record = render::render_and_write(plan, &model, cfg)?;
            let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
            progress(finished, total);
            Ok(record)
        })
        .collect();
    let records: Vec<truth::TruthRecord> = results.into_iter().collect::<Result<_, _>>()?;
    truth::write_dataset_files(cfg, &records, model.source)?;
    let raters = raters::rater_profiles(cfg.n_raters, cfg.seed);
    truth::write_ratings(cfg, &records, &raters)?;
    let mut summary = SynthSummary {
        images: records.len(),
        raters: raters.len(),
        anatomy: match model.source {
            AnatomySource::MniTemplate => "mni_icbm152_2009".into(),
            AnatomySource::Phantom => "phantom".into(),
        },
        ..Default::default()
    };
    let mut subjects = std::collections::BTreeSet::new();
    for r in &records {
        *summary
            .per_suffix
            .entry(r.plan.label.name().to_string())
            .or_default() += 1;
        *summary.per_class.entry(r.class_label()).or_default() += 1;
        summary.bytes_written += r.bytes;
        subjects.insert(r.plan.subject.clone());
    }
    summary.subjects = subjects.len();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n: usize) -> SynthConfig {
        SynthConfig {
            out: PathBuf::from("unused"),
            n_t1: n,
            n_flair: n,
            n_other: n / 4,
            n_raters: 2,
            grid: Grid::Tiny,
            seed: 11,
            template_dir: None,
        }
    }

    #[test]
    fn plan_has_requested_counts_and_every_class() {
        let plans = plan_dataset(&config(100));
        let count = |s: Sequence| plans.iter().filter(|p| p.label == s).count();
        assert_eq!(count(Sequence::T1w), 100);
        assert_eq!(count(Sequence::Flair), 100);
        assert_eq!(count(Sequence::T2w) + count(Sequence::DwiB0), 25);
        for (class, _) in MAIN_CLASS_WEIGHTS {
            assert!(plans.iter().any(|p| p.class == class), "{class:?} missing");
        }
        let paths: std::collections::BTreeSet<&String> = plans.iter().map(|p| &p.path).collect();
        assert_eq!(paths.len(), plans.len(), "paths must be unique");
    }

    #[test]
    fn wrong_sequence_rejects_show_another_sequence() {
        for p in plan_dataset(&config(200)) {
            if p.class == ImageClass::Reject(RejectKind::WrongSequence) {
                assert_ne!(p.label, p.shown);
            } else {
                assert_eq!(p.label, p.shown);
            }
        }
    }

    #[test]
    fn grid_parses_names() {
        assert_eq!("Small".parse::<Grid>().ok(), Some(Grid::Small));
        assert!("huge".parse::<Grid>().is_err());
    }
}
