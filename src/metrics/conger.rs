//! Conger's kappa for any number of raters with missing ratings, with Gwet's linearisation
//! standard error (irrCAC `raw.CAC.conger()`).

use super::gwet::{AgreementCoefficient, AgreementWeights, t_interval};
use super::ratings::Ratings;
use super::undefined::{Estimate, Undefined};

/// Conger's (1980) generalised kappa: Fleiss' weighted percent agreement against the mean
/// of all Cohen-type pairwise chance agreements, each rater keeping their own marginals.
///
/// With `p_gk` the share of rater g's ratings in category k and `p_k` its mean over the
/// r raters, the chance agreement is `sum_kl w_kl (p_k p_l - s2_kl / r)` with
/// `s2_kl = (sum_g p_gk p_gl - r p_k p_l) / (r - 1)`. The standard error is Gwet's
/// linearisation over the n subjects with at least one rating,
/// `sqrt(sum_i (c_i* - c)^2 / (n (n - 1)))`, and the interval uses t(n - 1), capped at 1.
/// Unlike Fleiss' kappa it depends on which rater gave which rating.
///
/// Undefined with no rated subject, no subject with two ratings, a rater who rated no
/// subject (no marginal distribution), or a chance agreement of 1 (every rating in one
/// category).
pub fn conger_kappa(
    ratings: &Ratings,
    weights: AgreementWeights<'_>,
) -> Estimate<AgreementCoefficient> {
    let q = ratings.n_categories();
    let weight = weights.matrix(q)?;
    let r = ratings.n_raters();
    let rated: Vec<&[Option<usize>]> = (0..ratings.n_subjects())
        .map(|subject| ratings.subject(subject))
        .filter(|row| row.iter().any(Option::is_some))
        .collect();
    let n = rated.len();
    if n == 0 {
        return Err(Undefined::EmptyInput.into());
    }

    // Per-subject category counts and weighted agreement, as in Gwet's AC1.
    let mut counts = vec![0.0; q];
    let mut pa_sum = 0.0;
    let mut pairable = 0usize;
    let mut classified = vec![0.0; r * q];
    let subjects: Vec<(f64, f64)> = rated
        .iter()
        .map(|row| {
            counts.fill(0.0);
            for (g, category) in row.iter().enumerate() {
                if let Some(k) = *category {
                    counts[k] += 1.0;
                    classified[g * q + k] += 1.0;
                }
            }
            let m: f64 = counts.iter().sum();
            if m < 2.0 {
                return (m, 0.0);
            }
            let agreeing: f64 = (0..q)
                .map(|k| {
                    let star: f64 = (0..q).map(|l| weight[k * q + l] * counts[l]).sum();
                    counts[k] * (star - 1.0)
                })
                .sum();
            let share = agreeing / (m * (m - 1.0));
            pa_sum += share;
            pairable += 1;
            (m, share)
        })
        .collect();
    if pairable == 0 || r < 2 {
        return Err(Undefined::NoPairableUnit.into());
    }
    let pa = pa_sum / pairable as f64;

    // Rater marginals p_gk over the subjects each rater rated.
    let rated_by: Vec<f64> = classified.chunks_exact(q).map(|c| c.iter().sum()).collect();
    if rated_by.contains(&0.0) {
        return Err(Undefined::RaterWithoutRatings.into());
    }
    let marginal: Vec<f64> = classified
        .iter()
        .enumerate()
        .map(|(i, &c)| c / rated_by[i / q])
        .collect();
    let r_f = r as f64;
    let mean_marginal: Vec<f64> = (0..q)
        .map(|k| (0..r).map(|g| marginal[g * q + k]).sum::<f64>() / r_f)
        .collect();
    let pe: f64 = (0..q)
        .flat_map(|k| (0..q).map(move |l| (k, l)))
        .map(|(k, l)| {
            let cross: f64 = (0..r)
                .map(|g| marginal[g * q + k] * marginal[g * q + l])
                .sum();
            let product = mean_marginal[k] * mean_marginal[l];
            let covariance = (cross - r_f * product) / (r_f - 1.0);
            weight[k * q + l] * (product - covariance / r_f)
        })
        .sum();
    if pe >= 1.0 {
        return Err(Undefined::ChanceAgreementIsOne.into());
    }
    let coefficient = (pa - pe) / (1.0 - pe);

    // Influence of rater g's rating of subject i on the chance agreement:
    // lambda_ig = (n / n_g) sum_l a_gl (delta_igl - (e_ig - n_g / n) p_gl), with
    // a_gl = sum_k w_kl (r p_k - p_gk) and e_ig = 1 when g rated i. It reduces to
    // (n / n_g) (a_g,c - (1 - n_g / n) b_g) for a rating in category c and to b_g for a
    // missing one, where b_g = sum_l a_gl p_gl.
    let n_f = n as f64;
    let influence: Vec<f64> = (0..r * q)
        .map(|i| {
            let (g, l) = (i / q, i % q);
            (0..q)
                .map(|k| weight[k * q + l] * (r_f * mean_marginal[k] - marginal[g * q + k]))
                .sum()
        })
        .collect();
    let baseline: Vec<f64> = (0..r)
        .map(|g| {
            (0..q)
                .map(|l| influence[g * q + l] * marginal[g * q + l])
                .sum()
        })
        .collect();
    let inflation = n_f / pairable as f64;
    let squares: f64 = rated
        .iter()
        .zip(&subjects)
        .map(|(row, &(m, share))| {
            let lambda: f64 = row
                .iter()
                .enumerate()
                .map(|(g, category)| match *category {
                    Some(c) => {
                        n_f / rated_by[g]
                            * (influence[g * q + c] - (1.0 - rated_by[g] / n_f) * baseline[g])
                    }
                    None => baseline[g],
                })
                .sum();
            let subject_chance = lambda / (r_f * (r_f - 1.0));
            let pe_if_pairable = if m >= 2.0 { pe } else { 0.0 };
            let subject_coefficient = inflation * (share - pe_if_pairable) / (1.0 - pe);
            let linearised = subject_coefficient
                - 2.0 * (1.0 - coefficient) * (subject_chance - pe) / (1.0 - pe);
            (linearised - coefficient).powi(2)
        })
        .sum();
    let (se, ci95) = t_interval(coefficient, squares / (n_f * (n_f - 1.0)), n);
    Ok(AgreementCoefficient {
        coefficient,
        pa,
        pe,
        se,
        ci95,
        n_subjects: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Weighting, cohen_kappa, fleiss_kappa_generalized};

    fn ratings(rows: &[[Option<usize>; 2]], q: usize) -> Ratings {
        let rows: Vec<Vec<Option<usize>>> = rows.iter().map(|r| r.to_vec()).collect();
        Ratings::from_rows(&rows, q).unwrap()
    }

    #[test]
    fn two_raters_give_cohen_kappa() {
        let pairs = [
            [Some(0), Some(0)],
            [Some(0), Some(1)],
            [Some(1), Some(1)],
            [Some(1), Some(1)],
            [Some(2), Some(1)],
            [Some(2), Some(2)],
            [Some(0), Some(0)],
        ];
        let data = ratings(&pairs, 3);
        let conger = conger_kappa(&data, AgreementWeights::Identity).unwrap();
        let table = data.pair_table(0, 1).unwrap();
        let cohen = cohen_kappa(&table, Weighting::Unweighted).unwrap();
        assert!((conger.coefficient - cohen.kappa).abs() < 1e-14);
        assert!(conger.se.unwrap() > 0.0);
        // Conger's chance agreement sits between Cohen's and Fleiss' (Scott's).
        let fleiss =
            fleiss_kappa_generalized(&data.subject_counts(), AgreementWeights::Identity).unwrap();
        assert!(conger.coefficient >= fleiss.coefficient - 1e-15);
    }

    #[test]
    fn degenerate_data_are_undefined() {
        let constant = ratings(&[[Some(0), Some(0)], [Some(0), Some(0)]], 2);
        assert_eq!(
            conger_kappa(&constant, AgreementWeights::Identity)
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::ChanceAgreementIsOne)
        );
        let silent_rater = ratings(&[[Some(0), None], [Some(1), None]], 2);
        assert_eq!(
            conger_kappa(&silent_rater, AgreementWeights::Identity)
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::NoPairableUnit)
        );
        let absent = ratings(&[[Some(0), Some(1)], [Some(1), Some(1)], [None, None]], 3);
        let partial = Ratings::from_rows(
            &[vec![Some(0), Some(1), None], vec![Some(1), Some(1), None]],
            2,
        )
        .unwrap();
        assert_eq!(
            conger_kappa(&partial, AgreementWeights::Identity)
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::RaterWithoutRatings)
        );
        // A subject nobody rated is dropped, as irrCAC does.
        let kept = ratings(&[[Some(0), Some(1)], [Some(1), Some(1)]], 3);
        assert_eq!(
            conger_kappa(&absent, AgreementWeights::Identity).unwrap(),
            conger_kappa(&kept, AgreementWeights::Identity).unwrap()
        );
    }
}
