//! Subject-level, label-stratified data splits: every image of a subject lands in the
//! same set, so no subject leaks between training, validation and test.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Which set an image belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Set {
    Train,
    Validation,
    Test,
}

impl Set {
    pub fn name(self) -> &'static str {
        match self {
            Set::Train => "train",
            Set::Validation => "validation",
            Set::Test => "test",
        }
    }
}

/// Splits labelled images `(image, subject, label)` by subject. Subjects are grouped
/// by the label of their first image (the stratum), shuffled with `seed`, and dealt
/// so each stratum keeps the `validation` and `test` shares (rounded, at least one
/// subject each when the stratum has three or more).
pub fn split_by_subject(
    images: &[(i64, String, usize)],
    validation: f64,
    test: f64,
    seed: u64,
) -> Vec<(i64, Set)> {
    let mut subjects: BTreeMap<&str, Vec<(i64, usize)>> = BTreeMap::new();
    for (image, subject, label) in images {
        subjects
            .entry(subject.as_str())
            .or_default()
            .push((*image, *label));
    }
    let mut strata: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (subject, imgs) in &subjects {
        strata.entry(imgs[0].1).or_default().push(subject);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut set_of: BTreeMap<&str, Set> = BTreeMap::new();
    for (_, mut members) in strata {
        members.shuffle(&mut rng);
        let n = members.len();
        let share = |f: f64| {
            let k = (f * n as f64).round() as usize;
            if n >= 3 && f > 0.0 { k.max(1) } else { k }
        };
        let n_test = share(test);
        let n_val = share(validation).min(n.saturating_sub(n_test + 1));
        for (i, s) in members.into_iter().enumerate() {
            let set = if i < n_test {
                Set::Test
            } else if i < n_test + n_val {
                Set::Validation
            } else {
                Set::Train
            };
            set_of.insert(s, set);
        }
    }
    images
        .iter()
        .map(|(image, subject, _)| (*image, set_of[subject.as_str()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn no_subject_in_two_sets_and_shares_hold() {
        let images: Vec<(i64, String, usize)> = (0..200)
            .map(|i| (i, format!("s{}", i / 2), usize::from(i % 10 < 3)))
            .collect();
        let split = split_by_subject(&images, 0.15, 0.15, 7);
        let mut by_subject: HashMap<String, Set> = HashMap::new();
        for ((_, subject, _), (_, set)) in images.iter().zip(&split) {
            let previous = by_subject.insert(subject.clone(), *set);
            assert!(previous.is_none_or(|p| p == *set), "{subject} in two sets");
        }
        let count = |s: Set| split.iter().filter(|(_, x)| *x == s).count();
        assert!(
            (20..=40).contains(&count(Set::Test)),
            "{}",
            count(Set::Test)
        );
        assert!((20..=40).contains(&count(Set::Validation)));
        assert_eq!(
            split,
            split_by_subject(&images, 0.15, 0.15, 7),
            "reproducible"
        );
        assert_ne!(split, split_by_subject(&images, 0.15, 0.15, 8));
    }
}
