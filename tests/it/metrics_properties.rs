//! Property tests of the agreement and classification metrics.

use cdwqc::metrics::{
    AgreementWeights, ConfusionMatrix, ContingencyTable, Level, Ratings, Weighting, cohen_kappa,
    fleiss_kappa, fleiss_kappa_generalized, krippendorff_alpha, krippendorff_alpha_inference,
    scott_pi,
};
use proptest::prelude::*;

fn ratings_pair(max_categories: usize) -> impl Strategy<Value = (usize, Vec<usize>, Vec<usize>)> {
    (2..=max_categories).prop_flat_map(|k| {
        (1usize..60).prop_flat_map(move |n| {
            (
                Just(k),
                prop::collection::vec(0..k, n),
                prop::collection::vec(0..k, n),
            )
        })
    })
}

fn table(first: &[usize], second: &[usize], k: usize) -> ContingencyTable {
    let a: Vec<Option<usize>> = first.iter().copied().map(Some).collect();
    let b: Vec<Option<usize>> = second.iter().copied().map(Some).collect();
    ContingencyTable::from_pairs(&a, &b, k).unwrap()
}

const WEIGHTINGS: [Weighting; 3] = [
    Weighting::Unweighted,
    Weighting::Linear,
    Weighting::Quadratic,
];

proptest! {
    #[test]
    fn a_rater_agrees_perfectly_with_itself((k, first, _) in ratings_pair(5)) {
        let t = table(&first, &first, k);
        for weighting in WEIGHTINGS {
            if let Ok(result) = cohen_kappa(&t, weighting) {
                prop_assert!((result.kappa - 1.0).abs() < 1e-12);
            } else {
                // Undefined only when the rater used one single category.
                prop_assert!(first.iter().all(|&c| c == first[0]));
            }
        }
    }

    #[test]
    fn swapping_raters_changes_nothing((k, first, second) in ratings_pair(5)) {
        let forward = table(&first, &second, k);
        let backward = table(&second, &first, k);
        prop_assert_eq!(&forward.transposed(), &backward);
        for weighting in WEIGHTINGS {
            match (cohen_kappa(&forward, weighting), cohen_kappa(&backward, weighting)) {
                (Ok(a), Ok(b)) => {
                    prop_assert!((a.kappa - b.kappa).abs() < 1e-12);
                    prop_assert!((a.var_kappa - b.var_kappa).abs() < 1e-12);
                    prop_assert!((a.var_kappa0 - b.var_kappa0).abs() < 1e-12);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "asymmetric definedness {:?} {:?}", a, b),
            }
        }
        match (scott_pi(&forward), scott_pi(&backward)) {
            (Ok(a), Ok(b)) => prop_assert!((a - b).abs() < 1e-12),
            (a, b) => prop_assert_eq!(a.is_err(), b.is_err()),
        }
    }

    #[test]
    fn unweighted_kappa_ignores_category_order(
        (k, first, second) in ratings_pair(5),
        seed in any::<u64>(),
    ) {
        // A permutation of the category indices from the seed.
        let mut permutation: Vec<usize> = (0..k).collect();
        let mut state = seed;
        for i in (1..k).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            permutation.swap(i, (state >> 33) as usize % (i + 1));
        }
        let relabel = |v: &[usize]| v.iter().map(|&c| permutation[c]).collect::<Vec<_>>();
        let original = cohen_kappa(&table(&first, &second, k), Weighting::Unweighted);
        let permuted = cohen_kappa(&table(&relabel(&first), &relabel(&second), k), Weighting::Unweighted);
        match (original, permuted) {
            (Ok(a), Ok(b)) => {
                prop_assert!((a.kappa - b.kappa).abs() < 1e-12);
                prop_assert!((a.std_kappa - b.std_kappa).abs() < 1e-12);
            }
            (a, b) => prop_assert_eq!(a.is_err(), b.is_err()),
        }
    }

    #[test]
    fn balanced_accuracy_stays_in_bounds((k, truth, predicted) in ratings_pair(6)) {
        let matrix = ConfusionMatrix::from_indices(&truth, &predicted, k).unwrap();
        let ba = matrix.balanced_accuracy().unwrap();
        prop_assert!((0.0..=1.0).contains(&ba));
        if let Ok(adjusted) = matrix.balanced_accuracy_adjusted() {
            let present = (0..k).filter(|c| truth.contains(c)).count() as f64;
            prop_assert!(adjusted <= 1.0 + 1e-12);
            prop_assert!(adjusted >= -1.0 / (present - 1.0) - 1e-12);
        }
        if let Ok(mcc) = matrix.mcc() {
            prop_assert!((-1.0 - 1e-12..=1.0 + 1e-12).contains(&mcc));
        }
    }

    #[test]
    fn two_rater_fleiss_equals_scott_and_alpha_is_bounded((k, first, second) in ratings_pair(4)) {
        let cells: Vec<Option<usize>> = first.iter().zip(&second).flat_map(|(&a, &b)| [Some(a), Some(b)]).collect();
        let ratings = Ratings::new(cells, 2, k).unwrap();
        let counts = ratings.subject_counts();
        let scott = scott_pi(&ratings.pair_table(0, 1).unwrap());
        match (fleiss_kappa(&counts), scott) {
            (Ok(f), Ok(s)) => prop_assert!((f.kappa - s).abs() < 1e-12),
            (f, s) => prop_assert_eq!(f.is_err(), s.is_err()),
        }
        if let Ok(alpha) = krippendorff_alpha(&counts, Level::Nominal) {
            prop_assert!(alpha <= 1.0 + 1e-12);
        }
    }

    #[test]
    fn gwet_formulations_match_the_classical_coefficients(
        (k, first, second) in ratings_pair(4),
        missing in prop::collection::vec(any::<bool>(), 60),
    ) {
        // Two raters, with some second ratings missing.
        let cells: Vec<Option<usize>> = first
            .iter()
            .zip(&second)
            .zip(&missing)
            .flat_map(|((&a, &b), &gone)| [Some(a), (!gone).then_some(b)])
            .collect();
        let ratings = Ratings::new(cells, 2, k).unwrap();
        let counts = ratings.subject_counts();
        match (
            krippendorff_alpha(&counts, Level::Nominal),
            krippendorff_alpha_inference(&counts, AgreementWeights::Identity),
        ) {
            (Ok(classic), Ok(gwet)) => prop_assert!((classic - gwet.coefficient).abs() < 1e-9),
            (classic, gwet) => prop_assert_eq!(classic.is_err(), gwet.is_err()),
        }
        let complete = ratings.complete_subjects().subject_counts();
        if let (Ok(classic), Ok(gwet)) = (
            fleiss_kappa(&complete),
            fleiss_kappa_generalized(&complete, AgreementWeights::Identity),
        ) {
            prop_assert!((classic.kappa - gwet.coefficient).abs() < 1e-9);
        }
    }
}
