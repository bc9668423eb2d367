//! Simulated raters: each perceives artefact severity with its own noise and bias and misses some rejects.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::artefacts::{Artefact, ProtocolAxis, Severities};
use super::rejects::RejectKind;

/// One rater's habits.
#[derive(Clone, Debug)]
pub struct RaterProfile {
    pub name: String,
    /// Probability of overlooking a reject (scaled by the reject's subtlety).
    pub miss_reject: f64,
    /// Probability of rejecting a usable image (higher for bad images).
    pub false_reject: f64,
    /// Standard deviation of perceived severity, in grade units.
    pub perception_sd: f64,
    /// Systematic over- (positive) or under-rating per axis (motion, contrast, noise), in grade units.
    pub bias: [f64; 3],
    pub gado_sensitivity: f64,
    pub gado_false_positive: f64,
}

/// `count` raters named rater1, rater2, ... with habits drawn from `seed`.
pub fn rater_profiles(count: usize, seed: u64) -> Vec<RaterProfile> {
    (0..count)
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed ^ 0x7261_7465_7200_0000 ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            RaterProfile {
                name: format!("rater{}", r + 1),
                miss_reject: rng.random_range(0.08..0.18),
                false_reject: rng.random_range(0.02..0.05),
                perception_sd: rng.random_range(0.35..0.5),
                bias: [
                    rng.random_range(-0.15..0.15),
                    rng.random_range(-0.15..0.15),
                    rng.random_range(-0.15..0.15),
                ],
                gado_sensitivity: rng.random_range(0.85..0.97),
                gado_false_positive: rng.random_range(0.01..0.05),
            }
        })
        .collect()
}

/// What the rater saw in an image (truth fields only).
pub struct Seen<'a> {
    pub reject: Option<RejectKind>,
    pub severities: &'a Severities,
    pub gado: bool,
}

/// One rating in protocol terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rating {
    pub usable: bool,
    pub reject_reason: String,
    pub gado: bool,
    pub motion: u8,
    pub contrast: u8,
    pub noise: u8,
}

fn axis_index(axis: ProtocolAxis) -> usize {
    match axis {
        ProtocolAxis::Motion => 0,
        ProtocolAxis::Contrast => 1,
        ProtocolAxis::Noise => 2,
    }
}

/// The rater's rating of one image; `rng` is this rater's stream.
pub fn rate(profile: &RaterProfile, seen: &Seen<'_>, rng: &mut ChaCha8Rng) -> Rating {
    let sd = if profile.perception_sd.is_finite() {
        profile.perception_sd.max(0.0)
    } else {
        0.0
    };
    let mut perceived = [0u8; 3];
    for axis in [
        ProtocolAxis::Motion,
        ProtocolAxis::Contrast,
        ProtocolAxis::Noise,
    ] {
        let units = Artefact::ALL
            .iter()
            .filter(|a| a.axis() == axis)
            .map(|&a| a.grade_units(seen.severities.get(a)))
            .fold(0.0, f64::max);
        let a = axis_index(axis);
        let value = units * (1.0 + profile.bias[a])
            + profile.bias[a] * 0.5
            + sd * rng.sample::<f64, _>(StandardNormal);
        perceived[a] = value.floor().clamp(0.0, 2.0) as u8;
    }
    let gado = if seen.gado {
        rng.random_bool(profile.gado_sensitivity)
    } else {
        rng.random_bool(profile.gado_false_positive)
    };
    let worst = perceived.iter().copied().max().unwrap_or(0);
    let rejected = match seen.reject {
        Some(kind) => !rng.random_bool((profile.miss_reject * kind.subtlety()).min(0.9)),
        None => {
            rng.random_bool((profile.false_reject * if worst == 2 { 4.0 } else { 1.0 }).min(0.9))
        }
    };
    if rejected {
        let reason = match seen.reject {
            Some(kind) if rng.random_bool(0.9) => kind.reason().to_string(),
            Some(_) => "other".to_string(),
            None => if worst == 2 { "corrupted" } else { "other" }.to_string(),
        };
        // The protocol: a rejected image takes no other key (no `k`, no grades).
        let _ = gado;
        return Rating {
            usable: false,
            reject_reason: reason,
            gado: false,
            motion: 0,
            contrast: 0,
            noise: 0,
        };
    }
    Rating {
        usable: true,
        reject_reason: String::new(),
        gado,
        motion: perceived[0],
        contrast: perceived[1],
        noise: perceived[2],
    }
}

/// The rating notebook code: r, k, a/aa, z/zz, d/dd in that key order; empty for a good usable image.
pub fn notebook_code(usable: bool, gado: bool, motion: u8, contrast: u8, noise: u8) -> String {
    let mut code = String::new();
    if !usable {
        // A reject stands alone in the protocol's codes.
        return "r".to_string();
    }
    if gado {
        code.push('k');
    }
    if usable {
        code.push_str(&"a".repeat(motion.min(2) as usize));
        code.push_str(&"z".repeat(contrast.min(2) as usize));
        code.push_str(&"d".repeat(noise.min(2) as usize));
    }
    code
}

/// Tier of the authors' notebook: 4 reject, 3 bad, 2 medium, 1 good.
pub fn tier(usable: bool, motion: u8, contrast: u8, noise: u8) -> u8 {
    if !usable {
        4
    } else {
        1 + motion.max(contrast).max(noise).min(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_key_order_and_tiers() {
        assert_eq!(notebook_code(true, false, 0, 0, 0), "");
        assert_eq!(notebook_code(true, true, 2, 1, 0), "kaaz");
        assert_eq!(notebook_code(false, true, 0, 0, 0), "r");
        assert_eq!(tier(true, 0, 2, 1), 3);
        assert_eq!(tier(false, 0, 0, 0), 4);
        assert_eq!(tier(true, 0, 0, 0), 1);
    }

    #[test]
    fn severe_artefacts_are_mostly_seen() {
        let profiles = rater_profiles(2, 1);
        let mut severities = Severities::default();
        severities.set(Artefact::Motion, 12.0);
        let seen = Seen {
            reject: None,
            severities: &severities,
            gado: false,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let severe = (0..200)
            .filter(|_| rate(&profiles[0], &seen, &mut rng).motion == 2)
            .count();
        assert!(severe > 150, "{severe}");
        let clean = Severities::default();
        let seen = Seen {
            reject: None,
            severities: &clean,
            gado: false,
        };
        let good = (0..200)
            .filter(|_| rate(&profiles[1], &seen, &mut rng).motion == 0)
            .count();
        assert!(good > 170, "{good}");
    }
}
