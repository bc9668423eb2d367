//! Active-learning selection: which unlabelled images people should rate next, from a
//! model's predicted probabilities.
//!
//! Rules:
//! - `round(random_share * size)` images are drawn at random (seeded), so that accuracy
//!   measured on the new labels stays unbiased; the rest are the most uncertain images
//!   by the entropy of the predicted class probabilities (ties: lower image id first).
//! - For an SSDA network, whose domain head says how target-like each image looks, an
//!   image also counts by its distance from the target domain, `-log2 P(target)` bits
//!   (0 for an image the head is sure of, 1 bit at even odds): the rank is entropy +
//!   `domain_weight` x distance, both in bits, so an uncertain image the network has
//!   not learnt to place in the warehouse's domain comes first.
//! - At most one image per subject: a second image of the same subject teaches little.
//! - Uncertain images are picked first; the random draw comes from subjects not picked.

use std::collections::HashSet;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// An unlabelled image with its predicted class probabilities (and, for SSDA
/// networks, the domain head's probability of the target domain), as the store reads
/// it for a queue.
pub use crate::store::queues::CandidateRow as Candidate;

/// Distance from the target domain in bits, `-log2 P(target)`, when measured.
pub fn domain_distance(candidate: &Candidate) -> Option<f64> {
    candidate
        .domain_target
        .filter(|p| p.is_finite())
        .map(|p| -p.clamp(DOMAIN_FLOOR, 1.0).log2())
}

/// The smallest probability of the target domain a distance is taken from (about 20
/// bits), so that one image the head is certain of cannot outweigh every entropy.
const DOMAIN_FLOOR: f64 = 1e-6;

/// Why an image was queued.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Among the most uncertain: entropy of the predicted probabilities, in bits, and
    /// the distance from the target domain, in bits, where the run measured it.
    Uncertain {
        entropy: f64,
        domain_distance: Option<f64>,
    },
    /// Drawn at random, to keep the estimate of accuracy unbiased.
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selected {
    pub image_id: i64,
    pub subject: String,
    #[serde(flatten)]
    pub reason: Reason,
}

/// Entropy in bits of a probability vector (0 log 0 = 0).
pub fn entropy_bits(p: &[f64]) -> f64 {
    p.iter()
        .filter(|v| **v > 0.0)
        .map(|v| -v * v.log2())
        .sum::<f64>()
        .max(0.0)
}

/// Picks up to `size` images; see the module documentation.
pub fn select_uncertain(
    candidates: &[Candidate],
    size: usize,
    random_share: f64,
    domain_weight: f64,
    seed: u64,
) -> Vec<Selected> {
    let domain_weight = if domain_weight.is_finite() {
        domain_weight.max(0.0)
    } else {
        0.0
    };
    let share = if random_share.is_finite() {
        random_share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let n_random = ((share * size as f64).round() as usize).min(size);
    let n_uncertain = size - n_random;
    let mut ranked: Vec<(f64, f64, &Candidate)> = candidates
        .iter()
        .map(|c| {
            let entropy = entropy_bits(&c.probabilities);
            let rank = entropy + domain_weight * domain_distance(c).unwrap_or(0.0);
            (rank, entropy, c)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.image_id.cmp(&b.2.image_id)));
    let mut subjects: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(size);
    for (_, entropy, c) in &ranked {
        if out.len() == n_uncertain {
            break;
        }
        if subjects.insert(c.subject.as_str()) {
            out.push(Selected {
                image_id: c.image_id,
                subject: c.subject.clone(),
                reason: Reason::Uncertain {
                    entropy: *entropy,
                    domain_distance: domain_distance(c),
                },
            });
        }
    }
    let mut rest: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !subjects.contains(c.subject.as_str()))
        .collect();
    rest.sort_by_key(|c| c.image_id);
    rest.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    for c in rest {
        if out.len() == size {
            break;
        }
        if subjects.insert(c.subject.as_str()) {
            out.push(Selected {
                image_id: c.image_id,
                subject: c.subject.clone(),
                reason: Reason::Random,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(image_id: i64, subject: &str, p_reject: f64) -> Candidate {
        Candidate {
            image_id,
            subject: subject.to_string(),
            probabilities: vec![1.0 - p_reject, p_reject],
            domain_target: None,
            not_registered: false,
        }
    }

    #[test]
    fn the_most_uncertain_come_first_one_per_subject() {
        let candidates = vec![
            candidate(1, "a", 0.5),
            candidate(2, "a", 0.45),
            candidate(3, "b", 0.4),
            candidate(4, "c", 0.01),
            candidate(5, "d", 0.99),
        ];
        let picked = select_uncertain(&candidates, 2, 0.0, 1.0, 1);
        let ids: Vec<i64> = picked.iter().map(|s| s.image_id).collect();
        assert_eq!(ids, vec![1, 3], "image 2 shares subject a with image 1");
        match picked[0].reason {
            Reason::Uncertain { entropy, .. } => assert!((entropy - 1.0).abs() < 1e-12),
            Reason::Random => panic!("uncertain expected"),
        }
    }

    #[test]
    fn a_random_share_comes_from_other_subjects_and_is_seeded() {
        let candidates: Vec<Candidate> = (0..40)
            .map(|i| candidate(i, &format!("s{i}"), (i as f64) / 80.0))
            .collect();
        let picked = select_uncertain(&candidates, 10, 0.3, 1.0, 7);
        assert_eq!(picked.len(), 10);
        let random: Vec<&Selected> = picked
            .iter()
            .filter(|s| s.reason == Reason::Random)
            .collect();
        assert_eq!(random.len(), 3);
        let subjects: HashSet<&str> = picked.iter().map(|s| s.subject.as_str()).collect();
        assert_eq!(subjects.len(), 10);
        assert_eq!(picked, select_uncertain(&candidates, 10, 0.3, 1.0, 7));
        assert_ne!(picked, select_uncertain(&candidates, 10, 0.3, 1.0, 8));
    }

    #[test]
    fn fewer_candidates_than_asked_gives_them_all() {
        let candidates = vec![candidate(1, "a", 0.3), candidate(2, "b", 0.2)];
        assert_eq!(select_uncertain(&candidates, 5, 0.2, 1.0, 0).len(), 2);
    }

    #[test]
    fn an_image_far_from_the_target_domain_moves_up_by_its_distance() {
        let with_domain = |image_id, subject: &str, p_reject, p_target| Candidate {
            domain_target: Some(p_target),
            ..candidate(image_id, subject, p_reject)
        };
        // Entropies: a 1.0 bit, b 0.881, c 0.469 bits. Distances: a 0.152, b 0.152,
        // c 3.32 bits (P(target) 0.9, 0.9, 0.1).
        let candidates = vec![
            with_domain(1, "a", 0.5, 0.9),
            with_domain(2, "b", 0.3, 0.9),
            with_domain(3, "c", 0.1, 0.1),
        ];
        let order = |weight: f64| -> Vec<i64> {
            select_uncertain(&candidates, 3, 0.0, weight, 1)
                .iter()
                .map(|s| s.image_id)
                .collect()
        };
        assert_eq!(order(0.0), vec![1, 2, 3], "entropy alone");
        assert_eq!(order(1.0), vec![3, 1, 2], "entropy + distance");
        let picked = select_uncertain(&candidates, 1, 0.0, 1.0, 1);
        match picked[0].reason {
            Reason::Uncertain {
                entropy,
                domain_distance: Some(d),
            } => {
                assert!((entropy - 0.4689955935892812).abs() < 1e-12, "{entropy}");
                assert!((d - 10f64.log2()).abs() < 1e-12, "{d}");
            }
            ref other => panic!("{other:?}"),
        }
        // A probability of 0 is floored at 1e-6: about 19.9 bits, not infinity.
        let sure = with_domain(4, "d", 0.5, 0.0);
        assert!((domain_distance(&sure).expect("measured") - 1e6f64.log2()).abs() < 1e-9);
        assert_eq!(domain_distance(&candidate(5, "e", 0.5)), None);
    }
}
