//! Coefficients of Gwet's framework for any number of raters with missing ratings, each with
//! its linearisation standard error: AC1/AC2, Brennan-Prediger, generalised Fleiss and
//! Krippendorff's alpha (irrCAC `raw.CAC`).

use super::distributions::student_t_quantile;
use super::ratings::SubjectCounts;
use super::undefined::{Estimate, MetricError, Undefined};

/// Agreement weights between categories (1 on the diagonal), as irrCAC defines them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AgreementWeights<'a> {
    /// 1 for identical categories, 0 otherwise (AC1).
    Identity,
    /// `1 - |v_k - v_l| / (v_max - v_min)`, one numeric value per declared category.
    Linear(&'a [f64]),
    /// `1 - (v_k - v_l)^2 / (v_max - v_min)^2`, one numeric value per declared category.
    Quadratic(&'a [f64]),
    /// Bipolar weights `1 - d_kl / max d`, with `d_kl = (v_k - v_l)^2 / ((v_k + v_l - 2 v_min)
    /// (2 v_max - v_k - v_l))` for `k != l` and `d_kk = 0`: disagreements near the middle of
    /// the scale weigh more than the same distance near an end. One value per category.
    Bipolar(&'a [f64]),
}

impl AgreementWeights<'_> {
    /// The `q x q` weight matrix, row-major.
    pub(crate) fn matrix(self, q: usize) -> Estimate<Vec<f64>> {
        let identity = |k: usize, l: usize| f64::from(u8::from(k == l));
        let values = match self {
            AgreementWeights::Identity => {
                return Ok((0..q * q).map(|i| identity(i / q, i % q)).collect());
            }
            AgreementWeights::Linear(values)
            | AgreementWeights::Quadratic(values)
            | AgreementWeights::Bipolar(values) => values,
        };
        if values.len() != q {
            return Err(MetricError::invalid(
                "weights",
                format!(
                    "{} category values for {q} declared categories",
                    values.len()
                ),
            ));
        }
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let range = high - low;
        if !(range.is_finite() && range > 0.0) {
            return Err(MetricError::invalid(
                "weights",
                "category values must be finite and not all equal",
            ));
        }
        if let AgreementWeights::Bipolar(_) = self {
            return bipolar_matrix(values, low, high);
        }
        let quadratic = matches!(self, AgreementWeights::Quadratic(_));
        Ok((0..q * q)
            .map(|i| {
                let distance = (values[i / q] - values[i % q]).abs() / range;
                if quadratic {
                    1.0 - distance * distance
                } else {
                    1.0 - distance
                }
            })
            .collect())
    }
}

/// Bipolar weights from category values spanning `[low, high]` (irrCAC `Weights.bipolar`).
fn bipolar_matrix(values: &[f64], low: f64, high: f64) -> Estimate<Vec<f64>> {
    let q = values.len();
    let disagreement: Vec<f64> = (0..q * q)
        .map(|i| {
            let (a, b) = (values[i / q], values[i % q]);
            if i / q == i % q {
                0.0
            } else {
                (a - b).powi(2) / ((a + b - 2.0 * low) * (2.0 * high - a - b))
            }
        })
        .collect();
    let largest = disagreement.iter().copied().fold(0.0, f64::max);
    if disagreement.iter().any(|d| !d.is_finite()) || largest <= 0.0 {
        return Err(MetricError::invalid(
            "weights",
            "repeated extreme category values leave a bipolar weight undefined",
        ));
    }
    Ok(disagreement.iter().map(|d| 1.0 - d / largest).collect())
}

/// A chance-corrected agreement coefficient with its inference.
#[derive(Debug, Clone, PartialEq)]
pub struct AgreementCoefficient {
    /// `(pa - pe) / (1 - pe)`.
    pub coefficient: f64,
    /// Weighted observed agreement over subjects with two or more ratings.
    pub pa: f64,
    /// Chance agreement of the coefficient.
    pub pe: f64,
    /// Linearisation standard error `sqrt(sum_i (c_i* - c)^2 / (n (n - 1)))`;
    /// undefined with a single rated subject.
    pub se: Estimate,
    /// `coefficient -/+ t(0.975; n - 1) se`, upper bound capped at 1.
    pub ci95: Estimate<(f64, f64)>,
    /// Subjects with at least one rating.
    pub n_subjects: usize,
}

/// Chance agreement model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chance {
    /// Gwet: `sum(w) / (q (q - 1)) * sum_k pi_k (1 - pi_k)`.
    Gwet,
    /// Brennan-Prediger: `sum(w) / q^2`.
    Uniform,
    /// Fleiss (Gwet's generalisation): `sum_kl w_kl pi_k pi_l`.
    Marginal,
}

/// Gwet's AC1 (identity weights) from per-subject counts.
///
/// q is the number of DECLARED categories, so an unused declared category
/// changes AC1. Undefined with fewer than two declared categories, no rated
/// subject, or no subject with two ratings.
pub fn gwet_ac1(counts: &SubjectCounts) -> Estimate<AgreementCoefficient> {
    gwet_ac2(counts, AgreementWeights::Identity)
}

/// Gwet's AC2: AC1 with agreement weights (irrCAC weights use category VALUES).
pub fn gwet_ac2(
    counts: &SubjectCounts,
    weights: AgreementWeights<'_>,
) -> Estimate<AgreementCoefficient> {
    raw_coefficient(counts, weights, Chance::Gwet)
}

/// Brennan-Prediger coefficient (chance agreement `sum(w) / q^2`, q = declared categories).
/// Undefined with a single declared category (chance agreement 1).
pub fn brennan_prediger(
    counts: &SubjectCounts,
    weights: AgreementWeights<'_>,
) -> Estimate<AgreementCoefficient> {
    raw_coefficient(counts, weights, Chance::Uniform)
}

/// Fleiss' kappa generalised by Gwet to missing ratings and agreement weights
/// (irrCAC `raw.CAC.fleiss()`), with its linearisation standard error. With identity
/// weights and complete data the coefficient equals [`crate::metrics::fleiss_kappa`].
pub fn fleiss_kappa_generalized(
    counts: &SubjectCounts,
    weights: AgreementWeights<'_>,
) -> Estimate<AgreementCoefficient> {
    raw_coefficient(counts, weights, Chance::Marginal)
}

fn raw_coefficient(
    counts: &SubjectCounts,
    weights: AgreementWeights<'_>,
    chance: Chance,
) -> Estimate<AgreementCoefficient> {
    let q = counts.n_categories();
    let weight = weights.matrix(q)?;
    if q < 2 {
        return Err(match chance {
            Chance::Gwet => Undefined::SingleValueDomain,
            Chance::Uniform | Chance::Marginal => Undefined::ChanceAgreementIsOne,
        }
        .into());
    }
    let rated: Vec<(&[u32], f64)> = counts
        .rows()
        .filter_map(|row| {
            let m: u32 = row.iter().sum();
            (m > 0).then_some((row, f64::from(m)))
        })
        .collect();
    let n = rated.len();
    if n == 0 {
        return Err(Undefined::EmptyInput.into());
    }
    let n_f = n as f64;
    let mut pa_sum = 0.0;
    let mut pairable = 0usize;
    let mut prevalence = vec![0.0; q];
    let mut weighted = vec![0.0; q];
    let subject_agreement: Vec<f64> = rated
        .iter()
        .map(|&(row, m)| {
            for (pi, &c) in prevalence.iter_mut().zip(row) {
                *pi += f64::from(c) / m;
            }
            if m < 2.0 {
                return 0.0;
            }
            for (k, slot) in weighted.iter_mut().enumerate() {
                *slot = row
                    .iter()
                    .zip(&weight[k * q..(k + 1) * q])
                    .map(|(&c, w)| w * f64::from(c))
                    .sum();
            }
            let agreeing: f64 = row
                .iter()
                .zip(&weighted)
                .map(|(&c, star)| f64::from(c) * (star - 1.0))
                .sum();
            let share = agreeing / (m * (m - 1.0));
            pa_sum += share;
            pairable += 1;
            share
        })
        .collect();
    if pairable == 0 {
        return Err(Undefined::NoPairableUnit.into());
    }
    for pi in &mut prevalence {
        *pi /= n_f;
    }
    let weight_sum: f64 = weight.iter().sum();
    let q_f = q as f64;
    let chance_scale = weight_sum / (q_f * (q_f - 1.0));
    let pa = pa_sum / pairable as f64;
    let pe = match chance {
        Chance::Gwet => chance_scale * prevalence.iter().map(|pi| pi * (1.0 - pi)).sum::<f64>(),
        Chance::Uniform => weight_sum / (q_f * q_f),
        Chance::Marginal => (0..q)
            .map(|k| {
                prevalence[k]
                    * (0..q)
                        .map(|l| weight[k * q + l] * prevalence[l])
                        .sum::<f64>()
            })
            .sum(),
    };
    if pe >= 1.0 {
        return Err(Undefined::ChanceAgreementIsOne.into());
    }
    let coefficient = (pa - pe) / (1.0 - pe);

    // Symmetrised weighted prevalences, the derivative of the Fleiss chance term.
    let weighted_prevalence: Vec<f64> = (0..q)
        .map(|k| {
            (0..q)
                .map(|l| (weight[k * q + l] + weight[l * q + k]) * prevalence[l])
                .sum::<f64>()
                / 2.0
        })
        .collect();
    let inflation = n_f / pairable as f64;
    let squares: f64 = rated
        .iter()
        .zip(&subject_agreement)
        .map(|(&(row, m), &share)| {
            let pe_if_pairable = if m >= 2.0 { pe } else { 0.0 };
            let subject_coefficient = inflation * (share - pe_if_pairable) / (1.0 - pe);
            let linearised = match chance {
                Chance::Gwet => {
                    let subject_chance = chance_scale
                        * row
                            .iter()
                            .zip(&prevalence)
                            .map(|(&c, pi)| f64::from(c) * (1.0 - pi))
                            .sum::<f64>()
                        / m;
                    subject_coefficient
                        - 2.0 * (1.0 - coefficient) * (subject_chance - pe) / (1.0 - pe)
                }
                Chance::Marginal => {
                    let subject_chance = row
                        .iter()
                        .zip(&weighted_prevalence)
                        .map(|(&c, w)| f64::from(c) * w)
                        .sum::<f64>()
                        / m;
                    subject_coefficient
                        - 2.0 * (1.0 - coefficient) * (subject_chance - pe) / (1.0 - pe)
                }
                // A fixed chance term has no sampling variability to linearise.
                Chance::Uniform => subject_coefficient,
            };
            (linearised - coefficient).powi(2)
        })
        .sum();
    let (se, ci95) = t_interval(coefficient, squares / (n as f64 * (n as f64 - 1.0)), n);
    Ok(AgreementCoefficient {
        coefficient,
        pa,
        pe,
        se,
        ci95,
        n_subjects: n,
    })
}

/// Krippendorff's alpha in Gwet's formulation (irrCAC `raw.CAC.krippendorff()`), with its
/// linearisation standard error and a t(n - 1) interval, n = subjects with two or more ratings.
///
/// With identity weights the coefficient equals nominal [`crate::metrics::krippendorff_alpha`].
/// Undefined when no subject has two ratings or the chance agreement is 1.
pub fn krippendorff_alpha_inference(
    counts: &SubjectCounts,
    weights: AgreementWeights<'_>,
) -> Estimate<AgreementCoefficient> {
    let q = counts.n_categories();
    let weight = weights.matrix(q)?;
    let PairableAgreement {
        pairable,
        agreement_sums,
        mean_ratings,
        pa_prime,
        pa,
    } = pairable_agreement(counts, &weight)?;
    let n = pairable.len();
    let n_f = n as f64;
    let mut prevalence = vec![0.0; q];
    for &(row, _) in &pairable {
        for (pi, &c) in prevalence.iter_mut().zip(row) {
            *pi += f64::from(c) / mean_ratings;
        }
    }
    for pi in &mut prevalence {
        *pi /= n_f;
    }
    let pe: f64 = (0..q)
        .map(|k| {
            prevalence[k]
                * (0..q)
                    .map(|l| weight[k * q + l] * prevalence[l])
                    .sum::<f64>()
        })
        .sum();
    if pe >= 1.0 {
        return Err(Undefined::ChanceAgreementIsOne.into());
    }
    let coefficient = (pa - pe) / (1.0 - pe);
    let coefficient_prime = (pa_prime - pe) / (1.0 - pe);
    let weighted_prevalence: Vec<f64> = (0..q)
        .map(|k| {
            (0..q)
                .map(|l| (weight[k * q + l] + weight[l * q + k]) * prevalence[l])
                .sum::<f64>()
                / 2.0
        })
        .collect();
    let squares: f64 = pairable
        .iter()
        .zip(&agreement_sums)
        .map(|(&(row, m), sum)| {
            let size_deviation = (m - mean_ratings) / mean_ratings;
            let subject_pa = sum / (mean_ratings * (m - 1.0)) - pa * size_deviation;
            let subject_coefficient = (subject_pa - pe) / (1.0 - pe);
            let subject_chance = row
                .iter()
                .zip(&weighted_prevalence)
                .map(|(&c, w)| f64::from(c) * w)
                .sum::<f64>()
                / mean_ratings
                - pe * size_deviation;
            let linearised = subject_coefficient
                - 2.0 * (1.0 - coefficient_prime) * (subject_chance - pe) / (1.0 - pe);
            (linearised - coefficient_prime).powi(2)
        })
        .sum();
    let (se, ci95) = t_interval(coefficient, squares / (n as f64 * (n as f64 - 1.0)), n);
    Ok(AgreementCoefficient {
        coefficient,
        pa,
        pe,
        se,
        ci95,
        n_subjects: n,
    })
}

/// Weighted observed agreement of Gwet's Krippendorff estimator,
/// `pa = (1 - e) pa' + e` with `e = 1 / (total ratings)`, over the subjects with two or more
/// ratings. It is defined even where the coefficient is not (chance agreement 1).
pub fn krippendorff_observed_agreement(
    counts: &SubjectCounts,
    weights: AgreementWeights<'_>,
) -> Estimate {
    let weight = weights.matrix(counts.n_categories())?;
    pairable_agreement(counts, &weight).map(|agreement| agreement.pa)
}

/// Per-subject weighted agreement of the subjects with two or more ratings.
struct PairableAgreement<'c> {
    /// Count rows of those subjects with their number of ratings.
    pairable: Vec<(&'c [u32], f64)>,
    /// `sum_k r_ik (r*_ik - 1)` per subject.
    agreement_sums: Vec<f64>,
    /// Mean number of ratings per pairable subject.
    mean_ratings: f64,
    /// Agreement before the small-sample correction.
    pa_prime: f64,
    /// `(1 - e) pa' + e`.
    pa: f64,
}

fn pairable_agreement<'c>(
    counts: &'c SubjectCounts,
    weight: &[f64],
) -> Estimate<PairableAgreement<'c>> {
    let q = counts.n_categories();
    let pairable: Vec<(&[u32], f64)> = counts
        .rows()
        .filter_map(|row| {
            let m: u32 = row.iter().sum();
            (m >= 2).then_some((row, f64::from(m)))
        })
        .collect();
    let n = pairable.len();
    if n == 0 {
        return Err(Undefined::NoPairableUnit.into());
    }
    let n_f = n as f64;
    let total_ratings: f64 = pairable.iter().map(|(_, m)| m).sum();
    let mean_ratings = total_ratings / n_f;
    let epsilon = 1.0 / total_ratings;
    let mut weighted = vec![0.0; q];
    let agreement_sums: Vec<f64> = pairable
        .iter()
        .map(|&(row, _)| {
            for (k, slot) in weighted.iter_mut().enumerate() {
                *slot = row
                    .iter()
                    .zip(&weight[k * q..(k + 1) * q])
                    .map(|(&c, w)| w * f64::from(c))
                    .sum();
            }
            row.iter()
                .zip(&weighted)
                .map(|(&c, star)| f64::from(c) * (star - 1.0))
                .sum()
        })
        .collect();
    let pa_prime = pairable
        .iter()
        .zip(&agreement_sums)
        .map(|(&(_, m), sum)| sum / (mean_ratings * (m - 1.0)))
        .sum::<f64>()
        / n_f;
    Ok(PairableAgreement {
        pa: (1.0 - epsilon) * pa_prime + epsilon,
        pairable,
        agreement_sums,
        mean_ratings,
        pa_prime,
    })
}

/// Standard error `sqrt(variance)` and the t(n - 1) interval capped at 1; both undefined
/// with fewer than two subjects. A variance negative by round-off counts as 0.
pub(crate) fn t_interval(
    coefficient: f64,
    variance: f64,
    n: usize,
) -> (Estimate, Estimate<(f64, f64)>) {
    if n < 2 {
        return (
            Err(Undefined::ZeroVariance.into()),
            Err(Undefined::ZeroVariance.into()),
        );
    }
    let se = variance.max(0.0).sqrt();
    let ci = student_t_quantile(0.975, n as f64 - 1.0)
        .map(|t| (coefficient - t * se, (coefficient + t * se).min(1.0)))
        .ok_or_else(|| MetricError::from(Undefined::ZeroVariance));
    (Ok(se), ci)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_agreement_gives_one() {
        let counts = SubjectCounts::from_rows(&[vec![2, 0], vec![0, 2], vec![2, 0]], 2).unwrap();
        let ac1 = gwet_ac1(&counts).unwrap();
        assert!((ac1.coefficient - 1.0).abs() < 1e-15);
        assert!((ac1.pa - 1.0).abs() < 1e-15);
        let bp = brennan_prediger(&counts, AgreementWeights::Identity).unwrap();
        assert!((bp.coefficient - 1.0).abs() < 1e-15);
        assert!((bp.pe - 0.5).abs() < 1e-15);
    }

    #[test]
    fn single_declared_category_is_undefined() {
        let counts = SubjectCounts::from_rows(&[vec![2], vec![2]], 1).unwrap();
        assert_eq!(
            gwet_ac1(&counts).unwrap_err().undefined_reason(),
            Some(Undefined::SingleValueDomain)
        );
        assert_eq!(
            brennan_prediger(&counts, AgreementWeights::Identity)
                .unwrap_err()
                .undefined_reason(),
            Some(Undefined::ChanceAgreementIsOne)
        );
        let lonely = SubjectCounts::from_rows(&[vec![1, 0], vec![0, 1]], 2).unwrap();
        assert_eq!(
            gwet_ac1(&lonely).unwrap_err().undefined_reason(),
            Some(Undefined::NoPairableUnit)
        );
    }

    #[test]
    fn weights_follow_category_values_and_reject_bad_values() {
        let matrix = AgreementWeights::Linear(&[0.0, 1.0, 3.0])
            .matrix(3)
            .unwrap();
        assert_eq!(matrix[1], 1.0 - 1.0 / 3.0);
        assert_eq!(matrix[2], 0.0);
        let quadratic = AgreementWeights::Quadratic(&[0.0, 1.0, 3.0])
            .matrix(3)
            .unwrap();
        assert_eq!(quadratic[1], 1.0 - 1.0 / 9.0);
        assert!(AgreementWeights::Linear(&[1.0, 1.0]).matrix(2).is_err());
        assert!(AgreementWeights::Linear(&[1.0]).matrix(2).is_err());
    }

    #[test]
    fn bipolar_weights_penalise_the_middle_of_the_scale() {
        // Values 1..3: d(1,2) = d(2,3) = 1 / 3, d(1,3) = 4 / 4 = 1.
        let matrix = AgreementWeights::Bipolar(&[1.0, 2.0, 3.0])
            .matrix(3)
            .unwrap();
        assert_eq!(matrix[0], 1.0);
        assert!((matrix[1] - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(matrix[2], 0.0);
        assert_eq!(matrix[1], matrix[3]);
        // Two categories: the only disagreement gets weight 0.
        assert_eq!(
            AgreementWeights::Bipolar(&[0.0, 5.0]).matrix(2).unwrap(),
            vec![1.0, 0.0, 0.0, 1.0]
        );
        assert!(
            AgreementWeights::Bipolar(&[1.0, 1.0, 2.0])
                .matrix(3)
                .is_err()
        );
    }
}
