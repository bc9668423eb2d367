//! Blinded work-queue assignment: which images each rater sees, and in which order.
//!
//! Rules:
//! - `shared = round(overlap * n)` images go to every rater, where `round` is
//!   `f64::round` (halves away from zero: 2.5 -> 3). These overlap images give the
//!   inter-rater agreement figures.
//! - The other `n - shared` images go to exactly one rater each, dealt in turn so that
//!   rater loads differ by at most one image.
//! - Which images are shared and who gets which single image is drawn from the seed;
//!   each rater's order is then shuffled with its own ChaCha stream, so raters see the
//!   same images in different orders and cannot infer each other's progress.
//! - The same inputs and seed always give the same queues.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

/// Problems with queue inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueueError {
    #[error("work queue: no raters given")]
    NoRaters,
    #[error("work queue: rater '{0}' is listed twice")]
    DuplicateRater(String),
    #[error("work queue: image '{0}' is listed twice")]
    DuplicateImage(String),
    #[error("work queue: overlap {0} is not a fraction between 0 and 1")]
    InvalidOverlap(f64),
}

/// One rater's ordered list of images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaterQueue {
    pub rater: String,
    pub images: Vec<String>,
}

/// The assignment: one queue per rater (in the order the raters were given) and the
/// images shared by all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub queues: Vec<RaterQueue>,
    pub shared: Vec<String>,
}

/// Number of images every rater rates: `round(overlap * n_images)`.
pub fn shared_count(n_images: usize, overlap: f64) -> usize {
    ((overlap * n_images as f64).round() as usize).min(n_images)
}

/// Assigns `images` to `raters`; see the module documentation for the rules.
pub fn assign(
    images: &[String],
    raters: &[String],
    overlap: f64,
    seed: u64,
) -> Result<Assignment, QueueError> {
    if raters.is_empty() {
        return Err(QueueError::NoRaters);
    }
    if !(0.0..=1.0).contains(&overlap) {
        return Err(QueueError::InvalidOverlap(overlap));
    }
    let mut seen = HashSet::new();
    for rater in raters {
        if !seen.insert(rater.as_str()) {
            return Err(QueueError::DuplicateRater(rater.clone()));
        }
    }
    let mut seen = HashSet::new();
    for image in images {
        if !seen.insert(image.as_str()) {
            return Err(QueueError::DuplicateImage(image.clone()));
        }
    }

    let mut drawing = ChaCha8Rng::seed_from_u64(seed);
    let mut pool: Vec<String> = images.to_vec();
    pool.shuffle(&mut drawing);
    let n_shared = shared_count(images.len(), overlap);
    let singles = pool.split_off(n_shared);
    let shared = pool;

    let mut queues: Vec<RaterQueue> = raters
        .iter()
        .map(|rater| RaterQueue {
            rater: rater.clone(),
            images: shared.clone(),
        })
        .collect();
    // Start the deal at a drawn rater so that the first rater is not always the one
    // that gets the extra image.
    let first = (seed as usize) % raters.len();
    for (index, image) in singles.into_iter().enumerate() {
        queues[(first + index) % raters.len()].images.push(image);
    }
    for (stream, queue) in queues.iter_mut().enumerate() {
        let mut order = ChaCha8Rng::seed_from_u64(seed);
        order.set_stream(stream as u64 + 1);
        queue.images.shuffle(&mut order);
    }
    Ok(Assignment { queues, shared })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:03}")).collect()
    }

    #[test]
    fn three_raters_twenty_percent_overlap() {
        let images = names("img", 100);
        let raters = names("rater", 3);
        let assignment = assign(&images, &raters, 0.2, 7).unwrap();
        let mut times_assigned: HashMap<&str, usize> = HashMap::new();
        for queue in &assignment.queues {
            for image in &queue.images {
                *times_assigned.entry(image).or_default() += 1;
            }
        }
        assert_eq!(times_assigned.len(), 100, "every image is assigned");
        let to_all = times_assigned.values().filter(|&&n| n == 3).count();
        assert_eq!(to_all, 20);
        assert_eq!(times_assigned.values().filter(|&&n| n == 1).count(), 80);
        assert_eq!(assignment.shared.len(), 20);
        let loads: Vec<usize> = assignment.queues.iter().map(|q| q.images.len()).collect();
        assert_eq!(loads.iter().sum::<usize>(), 60 + 80);
        assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1);
        // The shared images appear in a different order for each rater.
        let shared_order = |queue: &RaterQueue| -> Vec<String> {
            queue
                .images
                .iter()
                .filter(|image| assignment.shared.contains(image))
                .cloned()
                .collect()
        };
        let orders: Vec<Vec<String>> = assignment.queues.iter().map(shared_order).collect();
        assert_ne!(orders[0], orders[1]);
        assert_ne!(orders[1], orders[2]);
        assert_ne!(orders[0], orders[2]);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let images = names("img", 50);
        let raters = names("r", 4);
        let first = assign(&images, &raters, 0.3, 42).unwrap();
        assert_eq!(first, assign(&images, &raters, 0.3, 42).unwrap());
        assert_ne!(first, assign(&images, &raters, 0.3, 43).unwrap());
    }

    #[test]
    fn rounding_is_documented_half_away_from_zero() {
        assert_eq!(shared_count(10, 0.25), 3);
        assert_eq!(shared_count(10, 0.24), 2);
        assert_eq!(shared_count(7, 1.0), 7);
        assert_eq!(shared_count(0, 0.5), 0);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let images = names("img", 3);
        assert_eq!(assign(&images, &[], 0.1, 1), Err(QueueError::NoRaters));
        let raters = vec!["a".to_string(), "a".to_string()];
        assert_eq!(
            assign(&images, &raters, 0.1, 1),
            Err(QueueError::DuplicateRater("a".into()))
        );
        let raters = names("r", 2);
        assert!(matches!(
            assign(&images, &raters, 1.5, 1),
            Err(QueueError::InvalidOverlap(_))
        ));
        assert!(matches!(
            assign(&images, &raters, f64::NAN, 1),
            Err(QueueError::InvalidOverlap(_))
        ));
        let twice = vec!["x".to_string(), "x".to_string()];
        assert_eq!(
            assign(&twice, &raters, 0.1, 1),
            Err(QueueError::DuplicateImage("x".into()))
        );
    }
}
