//! Reject cases: images that are not a proper 3D brain MRI of the labelled sequence.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::anatomy::TissueSample;
use super::contrast::{Sequence, TissueContrast};

/// How an image fails the "proper 3D brain image of the sequence" check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// 2D acquisition with thick slices (e.g. 0.9 x 0.9 x 5 mm).
    ThickSlice,
    /// Field of view cutting off part of the brain.
    TruncatedFov,
    /// Tissue segmentation label map.
    SegmentationMap,
    /// Tissue probability map.
    ProbabilityMap,
    /// Another sequence (T2w or DWI b0) labelled as the expected one.
    WrongSequence,
    /// A volume of another body part.
    NonBrain,
    /// Localizer / scout: a few thick slices.
    Localizer,
}

impl RejectKind {
    pub const ALL: [RejectKind; 7] = [
        RejectKind::ThickSlice,
        RejectKind::TruncatedFov,
        RejectKind::SegmentationMap,
        RejectKind::ProbabilityMap,
        RejectKind::WrongSequence,
        RejectKind::NonBrain,
        RejectKind::Localizer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RejectKind::ThickSlice => "thick_slice_2d",
            RejectKind::TruncatedFov => "truncated_fov",
            RejectKind::SegmentationMap => "segmentation_map",
            RejectKind::ProbabilityMap => "probability_map",
            RejectKind::WrongSequence => "wrong_sequence",
            RejectKind::NonBrain => "non_brain",
            RejectKind::Localizer => "localizer",
        }
    }

    /// The protocol's reject reason.
    pub fn reason(self) -> &'static str {
        match self {
            RejectKind::ThickSlice | RejectKind::Localizer => "not_3d",
            RejectKind::TruncatedFov => "truncated_fov",
            RejectKind::SegmentationMap | RejectKind::ProbabilityMap => "derived_map",
            RejectKind::WrongSequence => "wrong_sequence",
            RejectKind::NonBrain => "not_brain",
        }
    }

    /// How easily a rater overlooks it (multiplies the rater's miss rate).
    pub fn subtlety(self) -> f64 {
        match self {
            RejectKind::TruncatedFov => 1.8,
            RejectKind::WrongSequence => 1.5,
            RejectKind::ThickSlice => 1.0,
            RejectKind::ProbabilityMap => 0.6,
            RejectKind::SegmentationMap | RejectKind::NonBrain | RejectKind::Localizer => 0.3,
        }
    }
}

/// The real sequence shown in a file labelled `labelled` when it is a wrong-sequence reject.
pub fn wrong_sequence_for(labelled: Sequence, rng: &mut ChaCha8Rng) -> Sequence {
    let choices: &[Sequence] = match labelled {
        Sequence::Flair => &[Sequence::T2w, Sequence::DwiB0, Sequence::T1w],
        Sequence::T1w => &[Sequence::T2w, Sequence::Flair, Sequence::DwiB0],
        Sequence::T2w | Sequence::DwiB0 => &[Sequence::T1w, Sequence::Flair],
    };
    choices[rng.random_range(0..choices.len())]
}

/// Tissue label of a segmentation map: 0 background, 1 CSF, 2 grey matter, 3 white matter.
pub fn segmentation_label(t: &TissueSample) -> f32 {
    let brain = t.gm + t.wm + t.csf;
    if brain < 0.5 {
        0.0
    } else if t.wm >= t.gm && t.wm >= t.csf {
        3.0
    } else if t.gm >= t.csf {
        2.0
    } else {
        1.0
    }
}

/// A procedural torso-like section (fat, muscle, organs, spine) standing in for a non-brain volume.
#[derive(Clone, Debug)]
pub struct BodyPhantom {
    centre: [f64; 3],
    semi: [f64; 2],
    fat_mm: f64,
    organs: Vec<([f64; 3], [f64; 3], f32)>,
    spine_radius: f64,
}

impl BodyPhantom {
    pub fn random(centre: [f64; 3], rng: &mut ChaCha8Rng) -> Self {
        let semi = [rng.random_range(70.0..95.0), rng.random_range(55.0..80.0)];
        let organs = (0..rng.random_range(3..7))
            .map(|_| {
                let c = [
                    centre[0] + rng.random_range(-0.5..0.5) * semi[0],
                    centre[1] + rng.random_range(-0.2..0.5) * semi[1],
                    centre[2] + rng.random_range(-60.0..60.0),
                ];
                let r = [
                    rng.random_range(15.0..35.0),
                    rng.random_range(12.0..30.0),
                    rng.random_range(25.0..70.0),
                ];
                (c, r, rng.random_range(0.25f32..0.9))
            })
            .collect();
        BodyPhantom {
            centre,
            semi,
            fat_mm: rng.random_range(6.0..18.0),
            organs,
            spine_radius: rng.random_range(12.0..17.0),
        }
    }

    pub fn signal(&self, p: [f64; 3], contrast: &TissueContrast) -> f32 {
        let (x, y) = (p[0] - self.centre[0], p[1] - self.centre[1]);
        let taper = 1.0 + 0.1 * ((p[2] - self.centre[2]) / 80.0).sin();
        let r =
            ((x / (self.semi[0] * taper)).powi(2) + (y / (self.semi[1] * taper)).powi(2)).sqrt();
        if r > 1.0 {
            return 0.0;
        }
        let depth = (1.0 - r) * self.semi[1];
        if depth < 1.5 {
            return contrast.scalp * 0.8;
        }
        if depth < self.fat_mm {
            return contrast.scalp;
        }
        let spine = [0.0, -0.7 * self.semi[1]];
        let ds = ((x - spine[0]).powi(2) + (y - spine[1]).powi(2)).sqrt();
        if ds < self.spine_radius * 0.35 {
            return contrast.csf;
        }
        if ds < self.spine_radius {
            return if ds > self.spine_radius - 2.0 {
                contrast.cortical_bone
            } else {
                contrast.marrow
            };
        }
        let muscle = 0.5 * contrast.wm;
        for (c, radii, level) in &self.organs {
            let q = [
                (p[0] - c[0]) / radii[0],
                (p[1] - c[1]) / radii[1],
                (p[2] - c[2]) / radii[2],
            ];
            if q[0] * q[0] + q[1] * q[1] + q[2] * q[2] < 1.0 {
                return level * contrast.gm.max(contrast.csf * 0.8);
            }
        }
        muscle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn reasons_are_protocol_reasons() {
        let allowed = [
            "not_brain",
            "wrong_sequence",
            "not_3d",
            "derived_map",
            "truncated_fov",
            "corrupted",
            "other",
        ];
        for kind in RejectKind::ALL {
            assert!(allowed.contains(&kind.reason()), "{kind:?}");
        }
    }

    #[test]
    fn wrong_sequence_differs_and_labels_are_ordered() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..20 {
            assert_ne!(
                wrong_sequence_for(Sequence::Flair, &mut rng),
                Sequence::Flair
            );
        }
        let wm = TissueSample {
            wm: 0.9,
            gm: 0.1,
            ..Default::default()
        };
        assert_eq!(segmentation_label(&wm), 3.0);
        assert_eq!(segmentation_label(&TissueSample::default()), 0.0);
    }

    #[test]
    fn body_phantom_is_dark_outside_and_bright_fat_at_the_edge() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let body = BodyPhantom::random([0.0; 3], &mut rng);
        let contrast = TissueContrast::random(Sequence::T1w, false, &mut rng);
        assert_eq!(body.signal([200.0, 0.0, 0.0], &contrast), 0.0);
        let edge = body.signal([body.semi[0] - 4.0, 0.0, 0.0], &contrast);
        assert!((edge - contrast.scalp).abs() < 1e-6);
    }
}
