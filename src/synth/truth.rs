//! Ground truth and rating files of a synthetic warehouse (kept apart: raters never see the truth file).

use std::fmt::Write as _;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::anatomy::AnatomySource;
use super::artefacts::{Artefact, ProtocolAxis};
use super::raters::{self, RaterProfile, Rating, Seen};
use super::{ImageClass, ImagePlan, SynthConfig, SynthError, derive_seed};

/// Folder of the generator's derivatives, relative to the dataset root.
pub const DERIVATIVES: &str = "derivatives/cdwqc-synth";

/// One generated image and what is true about it.
#[derive(Clone, Debug)]
pub struct TruthRecord {
    pub plan: ImagePlan,
    pub dims: [usize; 3],
    pub voxel_mm: [f64; 3],
    pub orientation: String,
    pub datatype: String,
    pub manufacturer: String,
    pub field_strength: f64,
    pub sidecar_errors: String,
    pub bytes: u64,
    /// The affine part of the subject's world (scanner) mm -> template mm map, rows of a
    /// 3x4 matrix (the smooth warp and ventricle change come on top of it).
    pub world_to_template: [[f64; 4]; 3],
}

impl TruthRecord {
    pub fn usable(&self) -> bool {
        !matches!(self.plan.class, ImageClass::Reject(_))
    }

    pub fn grade(&self, axis: ProtocolAxis) -> u8 {
        if self.usable() {
            self.plan.severities.axis_grade(axis)
        } else {
            0
        }
    }

    pub fn tier(&self) -> u8 {
        raters::tier(
            self.usable(),
            self.grade(ProtocolAxis::Motion),
            self.grade(ProtocolAxis::Contrast),
            self.grade(ProtocolAxis::Noise),
        )
    }

    pub fn code(&self) -> String {
        raters::notebook_code(
            self.usable(),
            self.plan.gado,
            self.grade(ProtocolAxis::Motion),
            self.grade(ProtocolAxis::Contrast),
            self.grade(ProtocolAxis::Noise),
        )
    }

    /// Class label: good, <artefact>_<grade of that artefact>, reject_<kind>.
    pub fn class_label(&self) -> String {
        match self.plan.class {
            ImageClass::Good => "good".into(),
            ImageClass::Artefact(a) => {
                format!("{}_{}", a.name(), a.grade(self.plan.severities.get(a)))
            }
            ImageClass::Reject(kind) => format!("reject_{}", kind.name()),
        }
    }

    /// The rater-visible view of the truth.
    pub fn seen(&self) -> Seen<'_> {
        self.plan.seen()
    }

    fn key_columns(&self) -> String {
        let p = &self.plan;
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            p.subject,
            p.session,
            p.acq,
            p.run,
            p.label.name(),
            p.path
        )
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), SynthError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| SynthError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub const GROUND_TRUTH_HEADER: &str = "subject\tsession\tacq\trun\tsuffix\tpath\tusable\treject_reason\treject_kind\ttrue_sequence\tgado\tmotion\tcontrast\tnoise\ttier\tcode\tclass\tsev_motion\tsev_ghosting\tsev_blur\tsev_noise\tsev_contrast_loss\tsev_bias_field\tlesions\tdims\tvoxel_mm\torientation\tdatatype\tmanufacturer\tfield_strength\tsidecar_errors\tworld_to_template";

/// ground_truth.tsv, dataset_description.json and participants.tsv.
pub fn write_dataset_files(
    cfg: &SynthConfig,
    records: &[TruthRecord],
    source: AnatomySource,
) -> Result<(), SynthError> {
    let mut text = String::from(GROUND_TRUTH_HEADER);
    text.push('\n');
    for r in records {
        let usable = r.usable();
        let (reason, kind) = match r.plan.class {
            ImageClass::Reject(k) => (k.reason(), k.name()),
            _ => ("", ""),
        };
        let grade = |axis| {
            if usable {
                r.grade(axis).to_string()
            } else {
                String::new()
            }
        };
        let _ = write!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.key_columns(),
            u8::from(usable),
            reason,
            kind,
            r.plan.shown.name(),
            u8::from(r.plan.gado),
            grade(ProtocolAxis::Motion),
            grade(ProtocolAxis::Contrast),
            grade(ProtocolAxis::Noise),
            r.tier(),
            r.code(),
            r.class_label()
        );
        for a in Artefact::ALL {
            let _ = write!(text, "\t{:.4}", r.plan.severities.get(a));
        }
        let affine: Vec<String> = r
            .world_to_template
            .iter()
            .flatten()
            .map(|v| format!("{v:.6}"))
            .collect();
        let _ = writeln!(
            text,
            "\t{}\t{}x{}x{}\t{:.3}x{:.3}x{:.3}\t{}\t{}\t{}\t{}\t{}\t{}",
            u8::from(r.plan.lesions),
            r.dims[0],
            r.dims[1],
            r.dims[2],
            r.voxel_mm[0],
            r.voxel_mm[1],
            r.voxel_mm[2],
            r.orientation,
            r.datatype,
            r.manufacturer,
            r.field_strength,
            r.sidecar_errors,
            affine.join(",")
        );
    }
    write_file(&cfg.out.join(DERIVATIVES).join("ground_truth.tsv"), &text)?;
    let anatomy = match source {
        AnatomySource::MniTemplate => {
            "MNI ICBM152 2009c nonlinear symmetric template (T1, GM, WM maps) with a synthetic scalp and skull"
        }
        AnatomySource::Phantom => "procedural ellipsoid head phantom",
    };
    let description = serde_json::json!({
        "Name": "cdwqc synthetic clinical data warehouse",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{
            "Name": "cdwqc synth",
            "Version": env!("CARGO_PKG_VERSION"),
            "Description": format!("seed {}, grid {}, anatomy: {}", cfg.seed, cfg.grid.name(), anatomy)
        }]
    });
    let pretty = serde_json::to_string_pretty(&description)
        .map_err(|e| SynthError::Invalid(format!("dataset_description.json: {e}")))?;
    write_file(&cfg.out.join("dataset_description.json"), &(pretty + "\n"))?;
    let derivative_description = serde_json::json!({
        "Name": "cdwqc synthetic ground truth and simulated ratings",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{ "Name": "cdwqc synth", "Version": env!("CARGO_PKG_VERSION") }]
    });
    let pretty = serde_json::to_string_pretty(&derivative_description)
        .map_err(|e| SynthError::Invalid(format!("derivative description: {e}")))?;
    write_file(
        &cfg.out.join(DERIVATIVES).join("dataset_description.json"),
        &(pretty + "\n"),
    )?;
    let mut participants = String::from("participant_id\tsessions\n");
    let mut subjects: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for r in records {
        subjects
            .entry(&r.plan.subject)
            .or_default()
            .insert(&r.plan.session);
    }
    for (subject, sessions) in subjects {
        let _ = writeln!(participants, "sub-{subject}\t{}", sessions.len());
    }
    write_file(&cfg.out.join("participants.tsv"), &participants)
}

pub const RATING_HEADER: &str = "subject\tsession\tacq\trun\tsuffix\tpath\tcode\tusable\treject_reason\tgado\tmotion\tcontrast\tnoise";

/// Every rater's native TSV, plus rater1's file in the authors' notebook format.
pub fn write_ratings(
    cfg: &SynthConfig,
    records: &[TruthRecord],
    profiles: &[RaterProfile],
) -> Result<(), SynthError> {
    let folder = cfg.out.join(DERIVATIVES).join("ratings");
    for (r, profile) in profiles.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, 4, r as u64));
        let ratings: Vec<Rating> = records
            .iter()
            .map(|record| raters::rate(profile, &record.seen(), &mut rng))
            .collect();
        let mut text = String::from(RATING_HEADER);
        text.push('\n');
        for (record, rating) in records.iter().zip(&ratings) {
            let code = raters::notebook_code(
                rating.usable,
                rating.gado,
                rating.motion,
                rating.contrast,
                rating.noise,
            );
            let grade = |g: u8| {
                if rating.usable {
                    g.to_string()
                } else {
                    String::new()
                }
            };
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                record.key_columns(),
                code,
                u8::from(rating.usable),
                rating.reject_reason,
                grade(u8::from(rating.gado)),
                grade(rating.motion),
                grade(rating.contrast),
                grade(rating.noise)
            );
        }
        write_file(&folder.join(format!("{}.tsv", profile.name)), &text)?;
        if r == 0 {
            let mut notebook = String::from("index\timg_id\tcode\tlabel\n");
            for (index, (record, rating)) in records.iter().zip(&ratings).enumerate() {
                let code = raters::notebook_code(
                    rating.usable,
                    rating.gado,
                    rating.motion,
                    rating.contrast,
                    rating.noise,
                );
                let stem = record
                    .plan
                    .path
                    .rsplit('/')
                    .next()
                    .unwrap_or(&record.plan.path)
                    .trim_end_matches(".nii.gz");
                let label =
                    raters::tier(rating.usable, rating.motion, rating.contrast, rating.noise);
                let _ = writeln!(notebook, "{index}\t{stem}\t{code}\t{label}");
            }
            write_file(
                &folder.join(format!("{}_notebook.tsv", profile.name)),
                &notebook,
            )?;
        }
    }
    Ok(())
}
