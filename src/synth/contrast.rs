//! MR contrasts rendered from tissue content: T1w, 3D FLAIR, and the wrong sequences T2w and DWI b0.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::anatomy::TissueSample;

/// The sequence an image really is (its label in the file name may differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sequence {
    T1w,
    Flair,
    T2w,
    DwiB0,
}

impl Sequence {
    pub fn name(self) -> &'static str {
        match self {
            Sequence::T1w => "T1w",
            Sequence::Flair => "FLAIR",
            Sequence::T2w => "T2w",
            Sequence::DwiB0 => "dwi",
        }
    }
}

/// Relative signal of each tissue for one rendered image.
#[derive(Clone, Debug)]
pub struct TissueContrast {
    pub sequence: Sequence,
    pub gm: f32,
    pub wm: f32,
    pub csf: f32,
    pub lesion: f32,
    pub cortical_bone: f32,
    pub marrow: f32,
    pub scalp: f32,
    /// Signal of the dura and vessels (raised by gadolinium on T1w).
    pub meninges: f32,
    /// How much of the template's own T1 texture enters the brain signal.
    pub template_texture: f32,
}

impl TissueContrast {
    /// Contrast of `sequence` with scanner-to-scanner jitter of a few percent.
    pub fn random(sequence: Sequence, gado: bool, rng: &mut ChaCha8Rng) -> Self {
        let mut j = |v: f32| v * rng.random_range(0.93f32..1.07);
        let mut c = match sequence {
            Sequence::T1w => TissueContrast {
                sequence,
                gm: j(0.60),
                wm: 1.0,
                csf: j(0.18),
                lesion: j(0.55),
                cortical_bone: 0.04,
                marrow: j(0.35),
                scalp: j(0.8),
                meninges: j(0.25),
                template_texture: 1.0,
            },
            Sequence::Flair => TissueContrast {
                sequence,
                gm: j(0.78),
                wm: j(0.56),
                csf: j(0.07),
                lesion: j(1.25),
                cortical_bone: 0.03,
                marrow: j(0.3),
                scalp: j(0.6),
                meninges: j(0.2),
                template_texture: 0.0,
            },
            Sequence::T2w => TissueContrast {
                sequence,
                gm: j(0.58),
                wm: j(0.42),
                csf: j(1.0),
                lesion: j(0.85),
                cortical_bone: 0.03,
                marrow: j(0.4),
                scalp: j(0.55),
                meninges: j(0.5),
                template_texture: 0.0,
            },
            Sequence::DwiB0 => TissueContrast {
                sequence,
                gm: j(0.62),
                wm: j(0.5),
                csf: j(1.0),
                lesion: j(0.8),
                cortical_bone: 0.02,
                marrow: j(0.1),
                scalp: j(0.12),
                meninges: j(0.4),
                template_texture: 0.0,
            },
        };
        if gado && sequence == Sequence::T1w {
            c.meninges = 0.8;
        }
        c
    }

    /// Signal at a point with the given tissue content, lesion fraction and head-layer thicknesses.
    pub fn signal(&self, t: &TissueSample, lesion: f32, layers: &[f64; 5]) -> f32 {
        let brain = (t.gm + t.wm + t.csf).clamp(0.0, 1.0);
        let lesion_wm = t.wm * lesion;
        let modelled = self.gm * t.gm + self.wm * (t.wm - lesion_wm) + self.csf * t.csf;
        let brain_signal = if self.template_texture > 0.0 && brain > 0.0 {
            let model_t1 = 0.6 * t.gm + t.wm + 0.18 * t.csf;
            // Keep the template's fine texture while honouring this image's tissue contrast.
            let texture = if model_t1 > 0.05 {
                (t.t1 / model_t1).clamp(0.6, 1.5)
            } else {
                1.0
            };
            modelled * (1.0 + self.template_texture * (texture - 1.0))
        } else {
            modelled
        } + self.lesion * lesion_wm;
        let outside = 1.0 - brain;
        if outside <= 0.0 {
            return brain_signal;
        }
        brain_signal + outside * self.head_layer_signal(t.outside_mm as f64, layers)
    }

    fn head_layer_signal(&self, d: f64, layers: &[f64; 5]) -> f32 {
        let mut edge = 0.0;
        let signals = [
            self.csf.max(self.meninges),
            self.cortical_bone,
            self.marrow,
            self.cortical_bone,
            self.scalp,
            0.0,
        ];
        let mut value = 0f32;
        let mut previous = signals[0];
        value += previous;
        for (layer, &thickness) in layers.iter().enumerate() {
            edge += thickness;
            let next = signals[layer + 1];
            let step = smoothstep(edge - 0.6, edge + 0.6, d) as f32;
            value += (next - previous) * step;
            previous = next;
        }
        // A thin meningeal rim next to the cortex.
        let rim = (1.0 - smoothstep(0.0, 1.5, d)) as f32;
        value + rim * (self.meninges - signals[0]).max(0.0) * 0.5
    }
}

fn smoothstep(a: f64, b: f64, x: f64) -> f64 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn pure(gm: f32, wm: f32, csf: f32) -> TissueSample {
        TissueSample {
            gm,
            wm,
            csf,
            t1: 0.6 * gm + wm + 0.18 * csf,
            outside_mm: 0.0,
        }
    }

    #[test]
    fn tissue_orderings_match_each_sequence() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let layers = [2.0, 1.5, 2.0, 1.5, 5.0];
        let signal = |c: &TissueContrast, t: TissueSample, l: f32| c.signal(&t, l, &layers);
        let t1 = TissueContrast::random(Sequence::T1w, false, &mut rng);
        let (g, w, c) = (
            signal(&t1, pure(1.0, 0.0, 0.0), 0.0),
            signal(&t1, pure(0.0, 1.0, 0.0), 0.0),
            signal(&t1, pure(0.0, 0.0, 1.0), 0.0),
        );
        assert!(w > g && g > c);
        let flair = TissueContrast::random(Sequence::Flair, false, &mut rng);
        let (g, w, c) = (
            signal(&flair, pure(1.0, 0.0, 0.0), 0.0),
            signal(&flair, pure(0.0, 1.0, 0.0), 0.0),
            signal(&flair, pure(0.0, 0.0, 1.0), 0.0),
        );
        let lesion = signal(&flair, pure(0.0, 1.0, 0.0), 1.0);
        assert!(lesion > g && g > w && w > c);
        let t2 = TissueContrast::random(Sequence::T2w, false, &mut rng);
        assert!(signal(&t2, pure(0.0, 0.0, 1.0), 0.0) > signal(&t2, pure(1.0, 0.0, 0.0), 0.0));
    }

    #[test]
    fn skull_is_dark_and_scalp_bright_on_t1() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let t1 = TissueContrast::random(Sequence::T1w, false, &mut rng);
        let layers = [2.0, 1.5, 2.0, 1.5, 5.0];
        let at = |d: f32| {
            t1.signal(
                &TissueSample {
                    outside_mm: d,
                    ..Default::default()
                },
                0.0,
                &layers,
            )
        };
        assert!(at(2.7) < 0.15, "inner table {}", at(2.7));
        assert!(at(10.0) > 0.6, "scalp {}", at(10.0));
        assert!(at(30.0) < 0.01, "air {}", at(30.0));
    }
}
