//! Augmentation on the fly of training volumes (random affine, gamma, bias field and the
//! synthetic warehouse's own artefacts), with the rules that keep each transform from
//! changing the label it trains.
//!
//! Volumes are preprocessed values on the preset grid (`[D, H, W]`, W fastest, in
//! [0, 1]); the artefacts come from `crate::synth::artefacts`, whose `Image3` stores the
//! same order with the axes named the other way round. After any transform the volume is
//! min-max scaled back to [0, 1], as preprocessing leaves it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::ModelError;
use crate::synth::anatomy::rotation_matrix;
use crate::synth::artefacts::{self, Artefact, Image3};
use crate::synth::derive_seed;

/// Which artefact strengths keep a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtefactRule {
    /// The label is a quality grade: an artefact at the moderate threshold would make a
    /// good image medium, so artefacts stay at or below `below_moderate_limit` grade
    /// units (1 = the synthetic warehouse's moderate threshold) and gamma changes below
    /// the contrast change of that strength.
    #[default]
    BelowModerate,
    /// The label does not depend on artefacts (usable: an artefact never makes an image
    /// a reject; gadolinium): any configured strength.
    AnyGrade,
}

/// Random rotation, isotropic scaling and translation about the grid centre.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AffineSpec {
    pub probability: f64,
    /// Largest rotation about each axis, degrees.
    pub rotation_deg: f64,
    /// Largest relative change of size (0.05 = +-5%).
    pub scale: f64,
    /// Largest shift along each axis, mm.
    pub translation_mm: f64,
}

impl Default for AffineSpec {
    fn default() -> Self {
        Self {
            probability: 0.5,
            rotation_deg: 5.0,
            scale: 0.05,
            translation_mm: 4.0,
        }
    }
}

/// Intensity and contrast jitter: `x -> x^gamma`, `log gamma` uniform in +-`log_gamma`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GammaSpec {
    pub probability: f64,
    pub log_gamma: f64,
}

impl Default for GammaSpec {
    fn default() -> Self {
        Self {
            probability: 0.5,
            log_gamma: 0.1,
        }
    }
}

/// One of the warehouse's artefacts at a random strength in [0, `max_grade`] grade units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArtefactSpec {
    pub probability: f64,
    /// Strength on the grade scale of `Artefact::grade_units`: 1 at the moderate
    /// threshold, 2 at the severe one.
    pub max_grade: f64,
}

impl Default for ArtefactSpec {
    fn default() -> Self {
        Self {
            probability: 0.2,
            max_grade: 1.5,
        }
    }
}

/// A preset's `[augment]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentSpec {
    pub enabled: bool,
    pub affine: AffineSpec,
    pub gamma: GammaSpec,
    pub bias_field: ArtefactSpec,
    pub noise: ArtefactSpec,
    pub motion: ArtefactSpec,
    pub ghosting: ArtefactSpec,
    pub blur: ArtefactSpec,
    /// Largest artefact strength, in grade units, under `ArtefactRule::BelowModerate`.
    pub below_moderate_limit: f64,
}

impl Default for AugmentSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            affine: AffineSpec::default(),
            gamma: GammaSpec::default(),
            bias_field: ArtefactSpec::default(),
            noise: ArtefactSpec::default(),
            motion: ArtefactSpec::default(),
            ghosting: ArtefactSpec::default(),
            blur: ArtefactSpec::default(),
            below_moderate_limit: 0.5,
        }
    }
}

impl AugmentSpec {
    pub fn validate(&self, origin: &str) -> Result<(), ModelError> {
        let fail = |what: &str| {
            Err(ModelError::Config(format!(
                "preset {origin}: [augment] {what}"
            )))
        };
        let probabilities = [
            ("affine", self.affine.probability),
            ("gamma", self.gamma.probability),
            ("bias_field", self.bias_field.probability),
            ("noise", self.noise.probability),
            ("motion", self.motion.probability),
            ("ghosting", self.ghosting.probability),
            ("blur", self.blur.probability),
        ];
        for (name, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return fail(&format!("{name}.probability {p} outside [0, 1]"));
            }
        }
        for (name, spec) in self.artefacts() {
            if !(0.0..=3.0).contains(&spec.max_grade) {
                return fail(&format!(
                    "{name}.max_grade {} outside [0, 3]",
                    spec.max_grade
                ));
            }
        }
        let affine = &self.affine;
        if !(0.0..=45.0).contains(&affine.rotation_deg)
            || !(0.0..0.5).contains(&affine.scale)
            || !affine.translation_mm.is_finite()
            || affine.translation_mm < 0.0
        {
            return fail("affine: rotation_deg in [0, 45], scale in [0, 0.5), translation_mm >= 0");
        }
        if !(0.0..=1.0).contains(&self.gamma.log_gamma) {
            return fail("gamma.log_gamma outside [0, 1]");
        }
        if !(self.below_moderate_limit > 0.0 && self.below_moderate_limit < 1.0) {
            return fail("below_moderate_limit must be in (0, 1): 1 is the moderate threshold");
        }
        Ok(())
    }

    fn artefacts(&self) -> [(&'static str, &ArtefactSpec); 5] {
        [
            ("bias_field", &self.bias_field),
            ("noise", &self.noise),
            ("motion", &self.motion),
            ("ghosting", &self.ghosting),
            ("blur", &self.blur),
        ]
    }
}

/// A transform that changed a volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Applied {
    Affine,
    Gamma { log_gamma: f64 },
    Artefact { artefact: Artefact, severity: f64 },
}

/// Augments volumes of one grid under one label rule.
#[derive(Debug, Clone)]
pub struct Augmenter {
    spec: AugmentSpec,
    rule: ArtefactRule,
    grid: [usize; 3],
    spacing_mm: f64,
}

/// The severity `grade_units` maps to `units` (its inverse).
fn severity_at(artefact: Artefact, units: f64) -> f64 {
    let [moderate, severe] = artefact.thresholds();
    if units < 1.0 {
        units * moderate
    } else {
        moderate + (units - 1.0) * (severe - moderate)
    }
}

/// How the warehouse renders a contrast-loss severity `c` as a gamma change:
/// `log gamma = -0.7 c` (see `synth::render`).
const LOG_GAMMA_PER_CONTRAST_LOSS: f64 = 0.7;

impl Augmenter {
    /// `None` when the spec is not enabled.
    pub fn new(
        spec: &AugmentSpec,
        rule: ArtefactRule,
        grid: [usize; 3],
        spacing_mm: f64,
    ) -> Option<Self> {
        spec.enabled.then(|| Self {
            spec: spec.clone(),
            rule,
            grid,
            spacing_mm,
        })
    }

    /// Largest strength, in grade units, that `spec` may give `artefact` under the rule.
    pub fn grade_limit(&self, spec: &ArtefactSpec) -> f64 {
        match self.rule {
            ArtefactRule::BelowModerate => spec.max_grade.min(self.spec.below_moderate_limit),
            ArtefactRule::AnyGrade => spec.max_grade,
        }
    }

    /// A random severity of `artefact` (in its own units) within the rule's limit.
    pub fn draw_severity(
        &self,
        artefact: Artefact,
        spec: &ArtefactSpec,
        rng: &mut ChaCha8Rng,
    ) -> f64 {
        let limit = self.grade_limit(spec);
        let units = if limit > 0.0 {
            rng.random_range(0.0..=limit)
        } else {
            0.0
        };
        severity_at(artefact, units)
    }

    /// Largest |log gamma|: under `BelowModerate`, below the gamma change the warehouse
    /// renders for a contrast loss of `below_moderate_limit` grade units.
    pub fn log_gamma_limit(&self) -> f64 {
        match self.rule {
            ArtefactRule::BelowModerate => self.spec.gamma.log_gamma.min(
                LOG_GAMMA_PER_CONTRAST_LOSS
                    * severity_at(Artefact::ContrastLoss, self.spec.below_moderate_limit),
            ),
            ArtefactRule::AnyGrade => self.spec.gamma.log_gamma,
        }
    }

    /// Augments one volume in place; returns what it applied, in order.
    pub fn apply(&self, values: &mut Vec<f32>, rng: &mut ChaCha8Rng) -> Vec<Applied> {
        let [d, h, w] = self.grid;
        if values.len() != d * h * w {
            return Vec::new();
        }
        let mut image = Image3 {
            dims: [w, h, d],
            voxel_mm: [self.spacing_mm; 3],
            data: std::mem::take(values),
        };
        let mut applied = Vec::new();
        let spec = &self.spec;
        if rng.random_bool(spec.affine.probability) {
            random_affine(&mut image, &spec.affine, rng);
            applied.push(Applied::Affine);
        }
        if rng.random_bool(spec.bias_field.probability) {
            let severity = self.draw_severity(Artefact::BiasField, &spec.bias_field, rng);
            artefacts::apply_bias_field(&mut image, severity, rng);
            applied.push(Applied::Artefact {
                artefact: Artefact::BiasField,
                severity,
            });
        }
        if rng.random_bool(spec.gamma.probability) {
            let limit = self.log_gamma_limit();
            let log_gamma = if limit > 0.0 {
                rng.random_range(-limit..=limit)
            } else {
                0.0
            };
            apply_gamma(&mut image, log_gamma);
            applied.push(Applied::Gamma { log_gamma });
        }
        if rng.random_bool(spec.blur.probability) {
            let severity = self.draw_severity(Artefact::Blur, &spec.blur, rng);
            artefacts::apply_blur(&mut image, severity);
            applied.push(Applied::Artefact {
                artefact: Artefact::Blur,
                severity,
            });
        }
        if rng.random_bool(spec.motion.probability) {
            let severity = self.draw_severity(Artefact::Motion, &spec.motion, rng);
            let movements = artefacts::random_movements(severity, rng);
            let phase_axis = rng.random_range(0..3);
            artefacts::apply_motion(&mut image, &movements, phase_axis);
            applied.push(Applied::Artefact {
                artefact: Artefact::Motion,
                severity,
            });
        }
        if rng.random_bool(spec.ghosting.probability) {
            // An attenuation of 1 removes the lines altogether; beyond it is meaningless.
            let severity = self
                .draw_severity(Artefact::Ghosting, &spec.ghosting, rng)
                .min(0.95);
            let period = rng.random_range(2..=4);
            let phase_axis = rng.random_range(0..3);
            artefacts::apply_ghosting(&mut image, severity, period, phase_axis);
            applied.push(Applied::Artefact {
                artefact: Artefact::Ghosting,
                severity,
            });
        }
        if rng.random_bool(spec.noise.probability) {
            let severity = self.draw_severity(Artefact::Noise, &spec.noise, rng);
            let level = image.signal_level();
            artefacts::add_rician_noise(&mut image, level * (severity / 100.0) as f32, rng);
            applied.push(Applied::Artefact {
                artefact: Artefact::Noise,
                severity,
            });
        }
        if !applied.is_empty() {
            rescale_to_unit(&mut image.data);
        }
        *values = image.data;
        applied
    }
}

/// The random generator of one item of one batch of one stream of one epoch: items are
/// augmented on worker threads in any order, and each draws from its own stream.
pub fn item_rng(stream_seed: u64, batch: usize, position: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(stream_seed, batch as u64, position as u64))
}

/// Resamples `image` through a random rotation, isotropic scale and translation about
/// its centre (trilinear, zero outside).
pub fn random_affine(image: &mut Image3, spec: &AffineSpec, rng: &mut ChaCha8Rng) {
    let symmetric = |rng: &mut ChaCha8Rng, bound: f64| {
        if bound > 0.0 {
            rng.random_range(-bound..=bound)
        } else {
            0.0
        }
    };
    let radians = std::f64::consts::PI / 180.0;
    let angles = [0; 3].map(|_| symmetric(rng, spec.rotation_deg) * radians);
    let scale = 1.0 + symmetric(rng, spec.scale);
    let shift = [0; 3].map(|_| symmetric(rng, spec.translation_mm));
    let rotation = rotation_matrix(angles);
    let centre = [0, 1, 2].map(|a| (image.dims[a] as f64 - 1.0) / 2.0);
    let source = image.clone();
    let [nx, ny, nz] = image.dims;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = [i, j, k];
                // Output point in mm from the centre, mapped back: x = R^T (p - t) / s.
                let q = [0, 1, 2].map(|a| (p[a] as f64 - centre[a]) * image.voxel_mm[a] - shift[a]);
                let from = [0, 1, 2].map(|c| {
                    (0..3).map(|r| rotation[r][c] * q[r]).sum::<f64>() / scale / image.voxel_mm[c]
                        + centre[c]
                });
                let at = image.index(i, j, k);
                image.data[at] = source.trilinear(from);
            }
        }
    }
}

/// `x -> x^exp(log_gamma)` on non-negative values scaled to their maximum.
pub fn apply_gamma(image: &mut Image3, log_gamma: f64) {
    let peak = image.data.iter().copied().fold(0.0f32, f32::max);
    if peak <= 0.0 {
        return;
    }
    let gamma = log_gamma.exp() as f32;
    for v in image.data.iter_mut() {
        *v = peak * (v.max(0.0) / peak).powf(gamma);
    }
}

/// Min-max scaling to [0, 1] (left as is when constant).
fn rescale_to_unit(values: &mut [f32]) {
    let (low, high) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    // No finite value leaves high = -inf below low = +inf.
    if high <= low {
        return;
    }
    let span = high - low;
    for v in values.iter_mut() {
        *v = if v.is_finite() {
            (*v - low) / span
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: [usize; 3] = [12, 14, 10];

    /// A bright ellipsoid on a dark background with a darker core, values in [0, 1].
    fn head() -> Vec<f32> {
        let [d, h, w] = GRID;
        let mut values = Vec::with_capacity(d * h * w);
        for z in 0..d {
            for y in 0..h {
                for x in 0..w {
                    let r = ((z as f32 - 4.5) / 4.0).powi(2)
                        + ((y as f32 - 6.5) / 5.0).powi(2)
                        + ((x as f32 - 5.5) / 4.5).powi(2);
                    values.push(if r < 0.3 {
                        0.6
                    } else if r < 1.0 {
                        1.0
                    } else {
                        0.02
                    });
                }
            }
        }
        values
    }

    fn only(name: &str) -> AugmentSpec {
        let mut spec = AugmentSpec {
            enabled: true,
            ..AugmentSpec::default()
        };
        spec.affine.probability = 0.0;
        spec.gamma.probability = 0.0;
        for artefact in [
            &mut spec.bias_field,
            &mut spec.noise,
            &mut spec.motion,
            &mut spec.ghosting,
            &mut spec.blur,
        ] {
            artefact.probability = 0.0;
            artefact.max_grade = 2.0;
        }
        match name {
            "affine" => spec.affine.probability = 1.0,
            "gamma" => spec.gamma.probability = 1.0,
            "bias_field" => spec.bias_field.probability = 1.0,
            "noise" => spec.noise.probability = 1.0,
            "motion" => spec.motion.probability = 1.0,
            "ghosting" => spec.ghosting.probability = 1.0,
            "blur" => spec.blur.probability = 1.0,
            other => panic!("{other}"),
        }
        spec
    }

    const TRANSFORMS: [&str; 7] = [
        "affine",
        "gamma",
        "bias_field",
        "noise",
        "motion",
        "ghosting",
        "blur",
    ];

    fn augmenter(spec: &AugmentSpec, rule: ArtefactRule) -> Augmenter {
        Augmenter::new(spec, rule, GRID, 4.0).unwrap()
    }

    #[test]
    fn every_transform_keeps_the_shape_and_range_and_changes_the_volume() {
        for name in TRANSFORMS {
            let augment = augmenter(&only(name), ArtefactRule::AnyGrade);
            let original = head();
            let mut values = original.clone();
            let applied = augment.apply(&mut values, &mut ChaCha8Rng::seed_from_u64(11));
            assert_eq!(applied.len(), 1, "{name}: {applied:?}");
            assert_eq!(values.len(), original.len(), "{name}");
            assert!(
                values
                    .iter()
                    .all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
                "{name}: values outside [0, 1]"
            );
            assert!(values != original, "{name} left the volume unchanged");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_volume_and_another_seed_another() {
        let mut spec = AugmentSpec {
            enabled: true,
            ..AugmentSpec::default()
        };
        for artefact in [
            &mut spec.bias_field,
            &mut spec.noise,
            &mut spec.motion,
            &mut spec.ghosting,
            &mut spec.blur,
        ] {
            artefact.probability = 1.0;
        }
        spec.affine.probability = 1.0;
        spec.gamma.probability = 1.0;
        let augment = augmenter(&spec, ArtefactRule::AnyGrade);
        let run = |seed: u64| {
            let mut values = head();
            augment.apply(&mut values, &mut item_rng(seed, 2, 3));
            values
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        assert_ne!(
            {
                let mut v = head();
                augment.apply(&mut v, &mut item_rng(5, 2, 4));
                v
            },
            run(5)
        );
    }

    #[test]
    fn quality_labels_get_artefacts_below_the_moderate_threshold_only() {
        let mut spec = AugmentSpec {
            enabled: true,
            ..AugmentSpec::default()
        };
        spec.gamma.log_gamma = 1.0;
        let strong = ArtefactSpec {
            probability: 1.0,
            max_grade: 3.0,
        };
        let quality = augmenter(&spec, ArtefactRule::BelowModerate);
        let usable = augmenter(&spec, ArtefactRule::AnyGrade);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for artefact in [
            Artefact::Motion,
            Artefact::Ghosting,
            Artefact::Blur,
            Artefact::Noise,
            Artefact::BiasField,
        ] {
            let worst = (0..500)
                .map(|_| quality.draw_severity(artefact, &strong, &mut rng))
                .fold(0.0, f64::max);
            assert_eq!(artefact.grade(worst), 0, "{artefact:?} at {worst}");
            assert!(worst <= 0.5 * artefact.thresholds()[0] + 1e-12);
            let worst_usable = (0..500)
                .map(|_| usable.draw_severity(artefact, &strong, &mut rng))
                .fold(0.0, f64::max);
            assert_eq!(artefact.grade(worst_usable), 2, "{artefact:?}");
        }
        // The gamma change stays below what the warehouse renders for a grade-0 contrast
        // loss of half the moderate threshold.
        let limit = quality.log_gamma_limit();
        assert!(limit < LOG_GAMMA_PER_CONTRAST_LOSS * Artefact::ContrastLoss.thresholds()[0]);
        assert_eq!(usable.log_gamma_limit(), 1.0);
        let mut values = head();
        let applied = augmenter(&only("gamma"), ArtefactRule::BelowModerate)
            .apply(&mut values, &mut ChaCha8Rng::seed_from_u64(3));
        match applied[..] {
            [Applied::Gamma { log_gamma }] => assert!(log_gamma.abs() <= limit),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn disabled_or_invalid_specs() {
        assert!(
            Augmenter::new(&AugmentSpec::default(), ArtefactRule::AnyGrade, GRID, 4.0).is_none()
        );
        let spec: AugmentSpec = toml::from_str(
            "enabled = true\n[motion]\nprobability = 0.5\nmax_grade = 0.8\n[affine]\nrotation_deg = 3.0",
        )
        .unwrap();
        assert_eq!(spec.motion.max_grade, 0.8);
        assert_eq!(spec.affine.scale, 0.05);
        spec.validate("inline").unwrap();
        let bad = AugmentSpec {
            below_moderate_limit: 1.0,
            ..AugmentSpec::default()
        };
        assert!(bad.validate("inline").is_err());
        let mut bad = AugmentSpec::default();
        bad.noise.probability = 1.5;
        let err = bad.validate("x.toml").unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("noise"), "{err}");
        assert!(toml::from_str::<AugmentSpec>("[motion]\nprob = 1.0").is_err());
    }

    #[test]
    fn a_volume_of_the_wrong_size_is_left_alone() {
        let augment = augmenter(&only("noise"), ArtefactRule::AnyGrade);
        let mut values = vec![0.5f32; 7];
        assert!(
            augment
                .apply(&mut values, &mut ChaCha8Rng::seed_from_u64(1))
                .is_empty()
        );
        assert_eq!(values, vec![0.5f32; 7]);
    }
}
